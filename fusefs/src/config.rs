//! The daemon's configuration, as composed by the `sheepfs` binary: a flag wins over its
//! environment variable, which wins over the TOML file (`--config`), which wins over the
//! default. `examples/sheep.toml` lists every key with its default.

use crate::error::{Error, Result};
use crate::memory::{DEFAULT_CACHE_SIZE, MIN_CACHE_SIZE};
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use tracing::warn;

/// Default store directory.
pub const DEFAULT_STORE: &str = "/var/lib/sheepfs";
/// Default admin socket.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/sheepfs/admin.sock";
/// Default copies of each object.
pub const DEFAULT_COPIES: u8 = 3;
/// Default `--failure-timeout` in seconds.
pub const DEFAULT_FAILURE_TIMEOUT: u64 = 3;
/// Default `--io-timeout` in seconds.
pub const DEFAULT_IO_TIMEOUT: u64 = 30;
/// Largest number of copies a VDI may have.
pub const MAX_COPIES: u8 = 31;
/// Default cluster name.
pub const DEFAULT_CLUSTER: &str = "sheepdog";
/// Default number of FUSE worker threads.
pub const DEFAULT_THREADS: usize = 32;
/// Largest number of FUSE worker threads.
pub const MAX_THREADS: usize = 1024;

/// Everything one `sheepfs` node needs to run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DaemonConfig {
    /// Where the VDIs are mounted.
    pub mountpoint: PathBuf,
    /// Directory holding this node's objects and its node id.
    pub store: PathBuf,
    /// Unix socket that `dog` talks to (root only).
    pub admin_socket: PathBuf,
    /// Discover peers by mDNS on the local segment.
    pub mdns: bool,
    /// Peers to join without multicast (`host:port`).
    pub peers: Vec<String>,
    /// Address to listen on for peers.
    pub listen: Option<String>,
    /// Copies of each object of a VDI created without `--copies`.
    pub copies: u8,
    /// Cluster name; clusters with different names ignore each other.
    pub cluster: String,
    /// FUSE worker threads (they also do the blocking disk I/O); fewer when their receive
    /// buffers would take more than three quarters of `cache-size`.
    pub threads: usize,
    /// Memory budget of the I/O buffers in bytes (in the file, a size such as `"256M"` or a
    /// number of bytes); see [`crate::memory`].
    #[serde(deserialize_with = "size")]
    pub cache_size: u64,
    /// Seconds without a word from a host before it is considered failed.
    pub failure_timeout: u64,
    /// Seconds an I/O (or a metadata change) waits for unreachable copies, a lagging epoch or
    /// a quorum of the cluster before it fails with EIO.
    pub io_timeout: u64,
    /// Free space (bytes) below which the store is near full: it takes no new objects nor
    /// copies and says so. Unset: 2% of the store's file system, at least 16 MiB and at most
    /// 4 GiB. In the file, a size such as `"4G"` or a number of bytes.
    #[serde(deserialize_with = "opt_size")]
    pub store_reserve: Option<u64>,
    /// Fault-injection tests only: a control file naming local-store calls to fail (see
    /// `sheep_objects::faulty`); command line only, never read from the file.
    #[serde(skip)]
    pub fault_file: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            mountpoint: PathBuf::new(),
            store: PathBuf::from(DEFAULT_STORE),
            admin_socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
            mdns: true,
            peers: Vec::new(),
            listen: None,
            copies: DEFAULT_COPIES,
            failure_timeout: DEFAULT_FAILURE_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            cluster: DEFAULT_CLUSTER.to_owned(),
            threads: DEFAULT_THREADS,
            store_reserve: None,
            cache_size: DEFAULT_CACHE_SIZE,
            fault_file: None,
        }
    }
}

impl DaemonConfig {
    /// Parses a TOML configuration file; keys not given keep their defaults, unknown keys are
    /// refused.
    pub fn from_toml(text: &str) -> Result<DaemonConfig> {
        toml::from_str(text).map_err(|e| config_err("configuration file", e.to_string()))
    }

    /// Checks ranges; warns about legal but risky values.
    pub fn validate(&self) -> Result<()> {
        if self.mountpoint.as_os_str().is_empty() {
            return Err(config_err("mount point", "it must not be empty"));
        }
        if !(1..=MAX_COPIES).contains(&self.copies) {
            return Err(config_err("--copies", format!("must be 1..={MAX_COPIES}")));
        }
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return Err(config_err(
                "--threads",
                format!("must be 1..={MAX_THREADS}"),
            ));
        }
        if !(1..=300).contains(&self.failure_timeout) {
            return Err(config_err("--failure-timeout", "must be 1..=300 seconds"));
        }
        if !(1..=3600).contains(&self.io_timeout) {
            return Err(config_err("--io-timeout", "must be 1..=3600 seconds"));
        }
        if self.cache_size < MIN_CACHE_SIZE {
            return Err(config_err(
                "--cache-size",
                format!(
                    "must be at least {}",
                    sheep_admin::format_size(MIN_CACHE_SIZE)
                ),
            ));
        }
        if self.cluster.is_empty() || self.cluster.len() > 64 {
            return Err(config_err("--cluster", "must be 1 to 64 bytes"));
        }
        if self.copies == 1 {
            warn!("--copies 1: objects have no redundancy");
        }
        if self.threads < 4 {
            warn!(threads = self.threads, "few FUSE threads: I/O will be slow");
        }
        Ok(())
    }
}

/// A size in the file: a number of bytes, or a string such as `"256M"`.
fn size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    struct SizeVisitor;
    impl serde::de::Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a size such as \"256M\" or a number of bytes")
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("a size cannot be negative"))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<u64, E> {
            sheep_admin::parse_size(v).map_err(E::custom)
        }
    }
    d.deserialize_any(SizeVisitor)
}

/// An optional size in the file (see [`size`]).
fn opt_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    size(d).map(Some)
}

fn config_err(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Config {
        field,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> DaemonConfig {
        DaemonConfig {
            mountpoint: "/mnt/sheep".into(),
            ..DaemonConfig::default()
        }
    }

    #[test]
    fn the_example_file_parses_and_equals_the_defaults() {
        let text = include_str!("../../examples/sheep.toml");
        assert_eq!(
            DaemonConfig::from_toml(text).unwrap(),
            DaemonConfig::default()
        );
    }

    #[test]
    fn a_file_sets_what_it_names_and_refuses_unknown_keys() {
        let c = DaemonConfig::from_toml("copies = 2\nstore = \"/srv/sheep\"\n").unwrap();
        assert_eq!((c.copies, c.store), (2, PathBuf::from("/srv/sheep")));
        assert_eq!(c.threads, DEFAULT_THREADS);
        assert!(DaemonConfig::from_toml("copeis = 2\n").is_err());
        assert!(DaemonConfig::from_toml("copies = \"two\"\n").is_err());
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let c = DaemonConfig::default();
        assert_eq!(c.store, PathBuf::from("/var/lib/sheepfs"));
        assert_eq!(c.admin_socket, PathBuf::from("/run/sheepfs/admin.sock"));
        assert_eq!((c.copies, c.threads, c.mdns), (3, 32, true));
        assert_eq!(c.cluster, "sheepdog");
        assert_eq!((c.failure_timeout, c.io_timeout), (3, 30));
        assert_eq!(c.cache_size, 256 << 20);
        assert!(valid().validate().is_ok());
    }

    #[test]
    fn the_store_reserve_is_a_human_size_or_bytes_in_the_file() {
        assert_eq!(DaemonConfig::default().store_reserve, None);
        let c = DaemonConfig::from_toml("store-reserve = \"64M\"\n").unwrap();
        assert_eq!(c.store_reserve, Some(64 << 20));
        let c = DaemonConfig::from_toml("store-reserve = 33554432\n").unwrap();
        assert_eq!(c.store_reserve, Some(32 << 20));
        assert!(DaemonConfig::from_toml("store-reserve = \"lots\"\n").is_err());
        assert!(DaemonConfig::from_toml("store-reserve = -1\n").is_err());
    }

    #[test]
    fn the_cache_size_is_a_human_size_or_bytes_in_the_file() {
        let c = DaemonConfig::from_toml("cache-size = \"64M\"\n").unwrap();
        assert_eq!(c.cache_size, 64 << 20);
        let c = DaemonConfig::from_toml("cache-size = 33554432\n").unwrap();
        assert_eq!(c.cache_size, 32 << 20);
        assert!(DaemonConfig::from_toml("cache-size = \"lots\"\n").is_err());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for c in [
            DaemonConfig {
                copies: 0,
                ..valid()
            },
            DaemonConfig {
                copies: 32,
                ..valid()
            },
            DaemonConfig {
                threads: 0,
                ..valid()
            },
            DaemonConfig {
                cluster: String::new(),
                ..valid()
            },
            DaemonConfig {
                io_timeout: 0,
                ..valid()
            },
            DaemonConfig {
                cache_size: (16 << 20) - 1,
                ..valid()
            },
            DaemonConfig::default(),
        ] {
            assert!(c.validate().is_err(), "{c:?}");
        }
        assert!(DaemonConfig {
            copies: 31,
            ..valid()
        }
        .validate()
        .is_ok());
    }
}
