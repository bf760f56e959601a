//! The command line of `dog`, as clap derive types, and the request each command sends.

use clap::{Args, Parser, Subcommand};
use sheep_admin::Request;
use std::path::PathBuf;

/// Where `sheepfs` listens by default.
pub const DEFAULT_SOCKET: &str = "/run/sheepfs/admin.sock";

const LONG_ABOUT: &str = "\
Administer a sheepfs storage pool: create, snapshot, clone and delete VDIs (virtual disk
images, each a file under the sheepfs mount that QEMU opens with format=raw), and look at the
node and the cluster. dog talks to the local `sheepfs` daemon over its root-only admin socket.";

const AFTER_HELP: &str = "\
Sizes are binary: 10G = 10 GiB, 512M, 4096 (bytes), 1T.
Exit codes: 0 ok, 1 other error, 2 usage error, 3 not found, 4 already exists,
5 cannot reach the daemon, 6 invalid argument, 7 busy/in use, 8 no space.";

/// Administer a sheepfs storage pool.
#[derive(Debug, Parser)]
#[command(name = "dog", version, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// Admin socket of the local sheepfs daemon.
    #[arg(
        long,
        global = true,
        env = "SHEEPFS_SOCKET",
        default_value = DEFAULT_SOCKET,
        value_name = "PATH"
    )]
    pub socket: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The nouns of `dog <noun> <verb>`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage VDIs: list, create, delete, snapshot, clone, roll back, resize, tree.
    #[command(subcommand)]
    Vdi(VdiCommand),
    /// Look at the node that serves the admin socket.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Look at the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// The `--json` switch of listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct Format {
    /// Print JSON instead of a table, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// A snapshot tag given with `-s`.
#[derive(Debug, Clone, Args)]
pub struct TagArg {
    /// Snapshot tag (`NAME@TAG` works too).
    #[arg(short = 's', long = "snapshot", value_name = "TAG")]
    pub tag: Option<String>,
}

/// `dog vdi ...`.
#[derive(Debug, Subcommand)]
pub enum VdiCommand {
    /// List every VDI and snapshot with its size, usage and copies.
    List(Format),
    /// Create a VDI (a sparse virtual disk; space is used as it is written).
    Create {
        /// Name of the new VDI, also its file name under the mount.
        name: String,
        /// Virtual size: 10G, 512M, 4096 (bytes), 1T (binary units).
        #[arg(value_parser = parse_size_arg)]
        size: u64,
        /// Number of replicas of each object (the cluster default when omitted).
        #[arg(short, long, value_parser = clap::value_parser!(u8).range(1..))]
        copies: Option<u8>,
    },
    /// Delete a VDI, or one snapshot of it with `-s TAG` or `NAME@TAG`.
    Delete {
        /// VDI to delete, or `NAME@TAG` for a snapshot.
        name: String,
        #[command(flatten)]
        tag: TagArg,
    },
    /// Take a read-only snapshot of a VDI: `dog vdi snapshot NAME -s TAG`.
    Snapshot {
        /// VDI to snapshot (or `NAME@TAG`).
        name: String,
        #[command(flatten)]
        tag: TagArg,
    },
    /// Create a writable copy-on-write clone DST of SRC or of its snapshot.
    Clone {
        #[command(flatten)]
        tag: TagArg,
        /// Source VDI, or `NAME@TAG` for one of its snapshots.
        src: String,
        /// Name of the new VDI.
        dst: String,
    },
    /// Roll a VDI back to one of its snapshots; writes since the snapshot are lost.
    Rollback {
        /// VDI to roll back (or `NAME@TAG`).
        name: String,
        #[command(flatten)]
        tag: TagArg,
    },
    /// Change the virtual size of a VDI.
    Resize {
        /// VDI to resize.
        name: String,
        /// New virtual size: 10G, 512M, 4096 (bytes), 1T (binary units).
        #[arg(value_parser = parse_size_arg)]
        size: u64,
    },
    /// Show VDIs as a tree of snapshots and clones, parents above their children.
    Tree(Format),
}

/// `dog node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Show this node's id, store, mount point, capacity and usage.
    Info(Format),
    /// List the cluster's hosts (id, data address, capacity, which one is the sequencer).
    List(Format),
}

/// `dog cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster's name, status, epoch, members and redundancy.
    Info(Format),
}

/// How to show a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Print nothing on success.
    Quiet,
    /// A table of VDIs.
    List(Format),
    /// A tree of VDIs.
    Tree(Format),
    /// Node details.
    Node(Format),
    /// Cluster details.
    Cluster(Format),
    /// The cluster's hosts.
    NodeList(Format),
}

/// A command line that parses but does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Command {
    /// The request to send and how to show its reply.
    pub fn plan(&self) -> Result<(Request, View), UsageError> {
        match self {
            Command::Vdi(vdi) => vdi.plan(),
            Command::Node(NodeCommand::Info(f)) => Ok((Request::NodeInfo, View::Node(*f))),
            Command::Node(NodeCommand::List(f)) => Ok((Request::ClusterInfo, View::NodeList(*f))),
            Command::Cluster(ClusterCommand::Info(f)) => {
                Ok((Request::ClusterInfo, View::Cluster(*f)))
            }
        }
    }
}

impl VdiCommand {
    fn plan(&self) -> Result<(Request, View), UsageError> {
        let quiet = |req| Ok((req, View::Quiet));
        match self {
            VdiCommand::List(f) => Ok((Request::VdiList, View::List(*f))),
            VdiCommand::Tree(f) => Ok((Request::VdiTree, View::Tree(*f))),
            VdiCommand::Create { name, size, copies } => quiet(Request::VdiCreate {
                name: name.clone(),
                size: *size,
                copies: *copies,
            }),
            VdiCommand::Delete { name, tag } => {
                let (name, tag) = split_tag(name, tag)?;
                quiet(Request::VdiDelete { name, tag })
            }
            VdiCommand::Snapshot { name, tag } => {
                let (name, tag) = require_tag(name, tag)?;
                quiet(Request::VdiSnapshot { name, tag })
            }
            VdiCommand::Clone { tag, src, dst } => {
                let (src, tag) = split_tag(src, tag)?;
                let dst = dst.clone();
                quiet(Request::VdiClone { src, tag, dst })
            }
            VdiCommand::Rollback { name, tag } => {
                let (name, tag) = require_tag(name, tag)?;
                quiet(Request::VdiRollback { name, tag })
            }
            VdiCommand::Resize { name, size } => quiet(Request::VdiResize {
                name: name.clone(),
                size: *size,
            }),
        }
    }
}

/// Splits `NAME@TAG`, or takes the tag from `-s`; giving both is an error.
pub fn split_tag(name: &str, tag: &TagArg) -> Result<(String, Option<String>), UsageError> {
    let (base, inline) = match name.split_once('@') {
        Some((base, inline)) => (base, Some(inline)),
        None => (name, None),
    };
    if base.is_empty() || inline.is_some_and(str::is_empty) {
        return Err(UsageError(format!("{name:?} is not NAME or NAME@TAG")));
    }
    match (inline, &tag.tag) {
        (Some(_), Some(_)) => Err(UsageError(format!(
            "{name:?} already names a snapshot: drop -s or the @TAG"
        ))),
        (Some(t), None) => Ok((base.to_owned(), Some(t.to_owned()))),
        (None, t) => Ok((base.to_owned(), t.clone())),
    }
}

fn require_tag(name: &str, tag: &TagArg) -> Result<(String, String), UsageError> {
    match split_tag(name, tag)? {
        (name, Some(tag)) => Ok((name, tag)),
        (_, None) => Err(UsageError(
            "a snapshot tag is needed: add -s TAG (or write NAME@TAG)".into(),
        )),
    }
}

fn parse_size_arg(text: &str) -> Result<u64, String> {
    sheep_admin::parse_size(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn plan(args: &[&str]) -> Result<(Request, View), UsageError> {
        let argv = std::iter::once("dog").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap().command.plan()
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn delete_accepts_name_at_tag_and_dash_s() {
        let want = Request::VdiDelete {
            name: "vm0".into(),
            tag: Some("base".into()),
        };
        assert_eq!(plan(&["vdi", "delete", "vm0@base"]).unwrap().0, want);
        assert_eq!(
            plan(&["vdi", "delete", "vm0", "-s", "base"]).unwrap().0,
            want
        );
        assert!(plan(&["vdi", "delete", "vm0@a", "-s", "b"]).is_err());
    }

    #[test]
    fn clone_takes_the_tag_from_either_place() {
        let want = Request::VdiClone {
            src: "vm0".into(),
            tag: Some("t".into()),
            dst: "vm1".into(),
        };
        assert_eq!(
            plan(&["vdi", "clone", "-s", "t", "vm0", "vm1"]).unwrap().0,
            want
        );
        assert_eq!(plan(&["vdi", "clone", "vm0@t", "vm1"]).unwrap().0, want);
    }

    #[test]
    fn snapshot_without_a_tag_is_a_usage_error() {
        assert!(plan(&["vdi", "snapshot", "vm0"]).is_err());
        assert!(plan(&["vdi", "snapshot", "@x"]).is_err());
    }

    #[test]
    fn create_parses_human_sizes_and_copies() {
        let (req, view) = plan(&["vdi", "create", "vm0", "10G", "--copies", "2"]).unwrap();
        let want = Request::VdiCreate {
            name: "vm0".into(),
            size: 10 << 30,
            copies: Some(2),
        };
        assert_eq!((req, view), (want, View::Quiet));
        let argv = ["dog", "vdi", "create", "vm0", "10Q"];
        assert!(Cli::try_parse_from(argv).is_err());
    }
}
