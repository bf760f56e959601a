//! The `sheepfs` command line (see docs/CONTRACTS.md).

use clap::Parser;
use sheep_fusefs::config::DaemonConfig;
use std::path::PathBuf;

/// Serves every virtual disk (VDI) of the sheepfs pool as a sparse file under MOUNTPOINT.
///
/// Runs in the foreground until SIGINT or SIGTERM, which flush every VDI, unmount and exit 0.
/// Images are used directly by QEMU: `qemu-img create -f raw MOUNTPOINT/vm0 40G`, then
/// `-drive file=MOUNTPOINT/vm0,format=raw,cache=none`. Administer it with `dog`.
/// Logging: RUST_LOG (default `sheep=info`).
#[derive(Debug, Parser)]
#[command(name = "sheepfs", version, verbatim_doc_comment)]
pub struct Cli {
    /// Directory to mount the VDIs on; it must exist, be empty and not be a mount point.
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,

    /// TOML configuration file (keys as in examples/sheep.toml); flags and their
    /// environment variables win over it.
    #[arg(long, value_name = "FILE", env = "SHEEPFS_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory holding this node's objects and its node id (created if missing)
    /// [default: /var/lib/sheepfs].
    #[arg(long, value_name = "DIR", env = "SHEEPFS_STORE")]
    pub store: Option<PathBuf>,

    /// Root-only Unix socket that `dog` talks to (its directory is created)
    /// [default: /run/sheepfs/admin.sock].
    #[arg(long, value_name = "PATH", env = "SHEEPFS_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,

    /// Do not discover other hosts by mDNS (use --peer, or run alone).
    #[arg(long)]
    pub no_mdns: bool,

    /// Join the cluster through this peer (IP:PORT of its --listen), without multicast;
    /// repeatable.
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<String>,

    /// Address to listen on for other hosts (cluster protocol; object data uses an extra
    /// port on the same address) [default: 0.0.0.0:7000].
    #[arg(long, value_name = "ADDR", env = "SHEEPFS_LISTEN")]
    pub listen: Option<String>,

    /// Copies of each object for VDIs created without their own count (1 to 31) [default: 3].
    #[arg(long, value_name = "N", env = "SHEEPFS_COPIES",
          value_parser = clap::value_parser!(u8).range(1..=31))]
    pub copies: Option<u8>,

    /// Cluster name; sheepfs instances with different names ignore each other
    /// [default: sheepdog].
    #[arg(long, value_name = "NAME", env = "SHEEPFS_CLUSTER")]
    pub cluster: Option<String>,

    /// FUSE worker threads; they also do the disk I/O, so they bound the I/O parallelism
    /// [default: 32].
    #[arg(long, value_name = "N", env = "SHEEPFS_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Memory budget of the I/O buffers (64M, 1G, ...; at least 16M): the FUSE threads'
    /// receive buffers (at most three quarters: max_write, then the thread count, is lowered
    /// until they fit) and every other large I/O buffer (FUSE reads, object data between
    /// hosts), which waits for room [default: 256M].
    #[arg(long, value_name = "SIZE", env = "SHEEPFS_CACHE_SIZE", value_parser = parse_size)]
    pub cache_size: Option<u64>,

    /// Seconds without a word from a host before it is considered failed and removed
    /// [default: 3].
    #[arg(long, value_name = "SECS", env = "SHEEPFS_FAILURE_TIMEOUT")]
    pub failure_timeout: Option<u64>,

    /// Seconds an I/O (or a metadata change) waits for unreachable copies, a lagging epoch
    /// or a quorum of the cluster before it fails with EIO; a host cut off in a minority
    /// answers EIO after this long [default: 30].
    #[arg(long, value_name = "SECS", env = "SHEEPFS_IO_TIMEOUT")]
    pub io_timeout: Option<u64>,

    /// Free space below which this host's store is near full: it takes no new objects nor
    /// copies, and writes that need one get ENOSPC (4G, 500M, ... or bytes)
    /// [default: 2% of its file system, 16M to 4G].
    #[arg(long, value_name = "SIZE", env = "SHEEPFS_STORE_RESERVE", value_parser = parse_size)]
    pub store_reserve: Option<u64>,

    /// For fault-injection tests only: make the local object store fail the calls this
    /// control file names (`eio read OIDHEX|*`, `eio write OIDHEX|*`, `eio all`; re-read
    /// within 200 ms of a change; see `sheep_objects::faulty`).
    #[arg(long, value_name = "PATH", hide = true)]
    pub fault_file: Option<PathBuf>,
}

impl Cli {
    /// The daemon configuration: these arguments (and their environment variables) over
    /// `file` (the parsed `--config`), over the defaults.
    pub fn into_config(self, file: Option<DaemonConfig>) -> DaemonConfig {
        let base = file.unwrap_or_default();
        DaemonConfig {
            mountpoint: self.mountpoint,
            store: self.store.unwrap_or(base.store),
            admin_socket: self.admin_socket.unwrap_or(base.admin_socket),
            mdns: base.mdns && !self.no_mdns,
            peers: if self.peers.is_empty() {
                base.peers
            } else {
                self.peers
            },
            listen: self.listen.or(base.listen),
            copies: self.copies.unwrap_or(base.copies),
            cluster: self.cluster.unwrap_or(base.cluster),
            threads: self.threads.map_or(base.threads, usize::from),
            cache_size: self.cache_size.unwrap_or(base.cache_size),
            failure_timeout: self.failure_timeout.unwrap_or(base.failure_timeout),
            io_timeout: self.io_timeout.unwrap_or(base.io_timeout),
            store_reserve: self.store_reserve.or(base.store_reserve),
            fault_file: self.fault_file.or(base.fault_file),
        }
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    sheep_admin::parse_size(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<DaemonConfig, clap::Error> {
        Cli::try_parse_from(std::iter::once("sheepfs").chain(args.iter().copied()))
            .map(|c| c.into_config(None))
    }

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn only_the_mountpoint_is_required_and_defaults_match_the_config() {
        let c = parse(&["/mnt/sheep"]).unwrap();
        assert_eq!(
            c,
            DaemonConfig {
                mountpoint: "/mnt/sheep".into(),
                ..DaemonConfig::default()
            }
        );
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn every_option_is_parsed() {
        let c = parse(&[
            "/m",
            "--store",
            "/s",
            "--admin-socket",
            "/a.sock",
            "--no-mdns",
            "--peer",
            "10.0.0.1:7000",
            "--peer",
            "10.0.0.2:7000",
            "--listen",
            "0.0.0.0:7000",
            "--copies",
            "2",
            "--cluster",
            "lab",
            "--threads",
            "8",
            "--io-timeout",
            "12",
            "--store-reserve",
            "64M",
            "--cache-size",
            "64M",
        ])
        .unwrap();
        assert_eq!(c.store_reserve, Some(64 << 20));
        assert_eq!(c.cache_size, 64 << 20);
        assert_eq!(c.store, PathBuf::from("/s"));
        assert_eq!(c.admin_socket, PathBuf::from("/a.sock"));
        assert!(!c.mdns);
        assert_eq!(c.peers, ["10.0.0.1:7000", "10.0.0.2:7000"]);
        assert_eq!(c.listen.as_deref(), Some("0.0.0.0:7000"));
        assert_eq!((c.copies, c.threads), (2, 8));
        assert_eq!(c.cluster, "lab");
        assert_eq!(c.io_timeout, 12);
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file =
            DaemonConfig::from_toml("copies = 2\ncluster = \"lab\"\nmdns = false\n").unwrap();
        let cli = Cli::try_parse_from(["sheepfs", "/m", "--copies", "1"]).unwrap();
        let c = cli.into_config(Some(file));
        assert_eq!((c.copies, c.cluster.as_str(), c.mdns), (1, "lab", false));
        assert_eq!(c.store, DaemonConfig::default().store);
    }

    #[test]
    fn copies_and_threads_are_range_checked() {
        for bad in [
            &["/m", "--copies", "0"][..],
            &["/m", "--copies", "32"],
            &["/m", "--threads", "0"],
            &["/m", "--threads", "x"],
            &["/m", "--store-reserve", "lots"],
            &["/m", "--cache-size", "lots"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&["/m", "--copies", "31"]).unwrap().copies, 31);
    }

    #[test]
    fn help_documents_every_option() {
        let help = Cli::command().render_long_help().to_string();
        for opt in [
            "--store",
            "--admin-socket",
            "--no-mdns",
            "--peer",
            "--listen",
            "--copies",
            "--cluster",
            "--threads",
            "--io-timeout",
            "--store-reserve",
            "SHEEPFS_STORE_RESERVE",
            "--cache-size",
            "SHEEPFS_CACHE_SIZE",
            "EIO",
            "MOUNTPOINT",
            "RUST_LOG",
        ] {
            assert!(help.contains(opt), "{opt} missing from --help");
        }
    }
}
