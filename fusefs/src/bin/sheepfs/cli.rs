//! The `sheepfs` command line (see docs/CONTRACTS.md).

use clap::Parser;
use sheep_fusefs::config::{
    DaemonConfig, DEFAULT_ADMIN_SOCKET, DEFAULT_CLUSTER, DEFAULT_COPIES, DEFAULT_STORE,
    DEFAULT_THREADS,
};
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

    /// Directory holding this node's objects and its node id (created if missing).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STORE)]
    pub store: PathBuf,

    /// Root-only Unix socket that `dog` talks to (its directory is created).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_ADMIN_SOCKET)]
    pub admin_socket: PathBuf,

    /// Do not discover other hosts by mDNS (multi-host discovery is not active yet).
    #[arg(long)]
    pub no_mdns: bool,

    /// Join the cluster through this peer, without multicast; repeatable (not active yet).
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<String>,

    /// Address to listen on for other hosts, e.g. 0.0.0.0:7000 (not active yet).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Copies of each object for VDIs created without their own count (1 to 31).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_COPIES,
          value_parser = clap::value_parser!(u8).range(1..=31))]
    pub copies: u8,

    /// Cluster name; sheepfs instances with different names ignore each other.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CLUSTER)]
    pub cluster: String,

    /// FUSE worker threads; they also do the disk I/O, so they bound the I/O parallelism.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_THREADS as u16,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
}

impl Cli {
    /// The daemon configuration these arguments describe.
    pub fn into_config(self) -> DaemonConfig {
        DaemonConfig {
            mountpoint: self.mountpoint,
            store: self.store,
            admin_socket: self.admin_socket,
            mdns: !self.no_mdns,
            peers: self.peers,
            listen: self.listen,
            copies: self.copies,
            cluster: self.cluster,
            threads: usize::from(self.threads),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<DaemonConfig, clap::Error> {
        Cli::try_parse_from(std::iter::once("sheepfs").chain(args.iter().copied()))
            .map(Cli::into_config)
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
        ])
        .unwrap();
        assert_eq!(c.store, PathBuf::from("/s"));
        assert_eq!(c.admin_socket, PathBuf::from("/a.sock"));
        assert!(!c.mdns);
        assert_eq!(c.peers, ["10.0.0.1:7000", "10.0.0.2:7000"]);
        assert_eq!(c.listen.as_deref(), Some("0.0.0.0:7000"));
        assert_eq!((c.copies, c.threads), (2, 8));
        assert_eq!(c.cluster, "lab");
    }

    #[test]
    fn copies_and_threads_are_range_checked() {
        for bad in [
            &["/m", "--copies", "0"][..],
            &["/m", "--copies", "32"],
            &["/m", "--threads", "0"],
            &["/m", "--threads", "x"],
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
            "MOUNTPOINT",
            "RUST_LOG",
        ] {
            assert!(help.contains(opt), "{opt} missing from --help");
        }
    }
}
