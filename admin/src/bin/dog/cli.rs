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
    /// Verify every copy of every object of a VDI (checksums, versions) and repair bad,
    /// stale or missing copies from the freshest good one.
    Check {
        /// VDI to check, or `NAME@TAG` for a snapshot.
        name: String,
        #[command(flatten)]
        args: CheckArgs,
    },
}

/// Options of `dog vdi check` and `dog cluster check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct CheckArgs {
    /// Print the summary as JSON instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
    /// Only verify: report what is wrong, repair nothing.
    #[arg(long)]
    pub no_repair: bool,
}

/// `dog node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Show this node's id, store, mount point, capacity and usage, and its memory: the
    /// cache size and how it is spent, the I/O buffers in use and at peak, and the
    /// daemon's resident memory (VmRSS, VmHWM).
    Info(Format),
    /// List the cluster's hosts (id, data address, capacity, which one is the sequencer).
    List(Format),
    /// Show this host's recovery progress after a membership change (objects looked at,
    /// copied, throttle), or set its throttle with `set-throttle RATE`.
    Recovery(RecoveryArgs),
}

/// `dog node recovery [--json]` or `dog node recovery set-throttle RATE`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RecoveryArgs {
    /// Change the recovery settings instead of showing the progress.
    #[command(subcommand)]
    pub action: Option<RecoveryAction>,
    #[command(flatten)]
    pub format: Format,
}

/// `dog node recovery ...`.
#[derive(Debug, Subcommand)]
pub enum RecoveryAction {
    /// Limit the bandwidth this host spends pushing objects for recovery: RATE in bytes per
    /// second per host (100M = 100 MiB/s, binary units), or `off` (or 0) for no limit.
    SetThrottle {
        /// 100M, 1G, 512K, or off.
        #[arg(value_parser = parse_rate)]
        rate: Rate,
    },
}

/// A recovery throttle: bytes per second, `None` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(pub Option<u64>);

/// `dog cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster's name, status, epoch, members and redundancy (and, on a restarted
    /// host, which members of the last epoch it waits for).
    Info(Format),
    /// Recover the cluster after failures.
    #[command(subcommand)]
    Recover(RecoverCommand),
    /// Verify every copy of every object of every VDI and repair bad, stale or missing ones.
    Check(CheckArgs),
}

/// `dog cluster recover ...`.
#[derive(Debug, Subcommand)]
pub enum RecoverCommand {
    /// After a whole-cluster restart, resume without the members of the last epoch that do
    /// not come back: the hosts up now (which wait for them) form the cluster, with the
    /// history of the longest log among them, and the absent ones are removed. Writes that
    /// only the absent hosts hold are lost; they catch up when they come back.
    Force(Format),
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
    /// Cluster details.
    Cluster(Format),
    /// The cluster's hosts.
    NodeList(Format),
    /// What `dog cluster recover force` set in motion.
    Forced(Format),
    /// Recovery progress.
    Recovery(Format),
    /// The throttle just set.
    Throttle,
}

/// What a command does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Send one request and show its reply.
    Call(Request, View),
    /// `dog node info`: the node, then its memory.
    NodeInfo(Format),
    /// Check the objects of one VDI (or of every VDI with `None`), batch by batch.
    Check {
        /// The VDI (`NAME` or `NAME@TAG`).
        vdi: Option<String>,
        /// The options.
        args: CheckArgs,
    },
}

/// A command line that parses but does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Command {
    /// What to do: the request to send and how to show its reply, or a check.
    pub fn plan(&self) -> Result<Plan, UsageError> {
        let call = |req, view| Ok(Plan::Call(req, view));
        match self {
            Command::Vdi(vdi) => vdi.plan(),
            Command::Node(NodeCommand::Info(f)) => Ok(Plan::NodeInfo(*f)),
            Command::Node(NodeCommand::List(f)) => call(Request::ClusterInfo, View::NodeList(*f)),
            Command::Node(NodeCommand::Recovery(r)) => match r.action {
                None => call(Request::NodeRecovery, View::Recovery(r.format)),
                Some(RecoveryAction::SetThrottle { rate }) => call(
                    Request::SetRecoveryThrottle {
                        bytes_per_sec: rate.0,
                    },
                    View::Throttle,
                ),
            },
            Command::Cluster(ClusterCommand::Info(f)) => {
                call(Request::ClusterInfo, View::Cluster(*f))
            }
            Command::Cluster(ClusterCommand::Recover(RecoverCommand::Force(f))) => {
                call(Request::ClusterRecoverForce, View::Forced(*f))
            }
            Command::Cluster(ClusterCommand::Check(args)) => Ok(Plan::Check {
                vdi: None,
                args: *args,
            }),
        }
    }
}

impl VdiCommand {
    fn plan(&self) -> Result<Plan, UsageError> {
        let quiet = |req| Ok(Plan::Call(req, View::Quiet));
        match self {
            VdiCommand::List(f) => Ok(Plan::Call(Request::VdiList, View::List(*f))),
            VdiCommand::Tree(f) => Ok(Plan::Call(Request::VdiTree, View::Tree(*f))),
            VdiCommand::Check { name, args } => {
                let (name, tag) = split_tag(name, &TagArg { tag: None })?;
                let vdi = match tag {
                    Some(t) => format!("{name}@{t}"),
                    None => name,
                };
                Ok(Plan::Check {
                    vdi: Some(vdi),
                    args: *args,
                })
            }
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

/// A throttle: `off`, `none`, `unlimited` or `0` for no limit, else a size per second
/// (`100M`, `100M/s`, `1G`).
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let t = text.trim();
    if ["off", "none", "unlimited", "unthrottled"]
        .iter()
        .any(|w| t.eq_ignore_ascii_case(w))
    {
        return Ok(Rate(None));
    }
    let t = t.strip_suffix("/s").unwrap_or(t);
    match sheep_admin::parse_size(t).map_err(|e| e.to_string())? {
        0 => Ok(Rate(None)),
        n => Ok(Rate(Some(n))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn plan(args: &[&str]) -> Result<(Request, View), UsageError> {
        match any_plan(args)? {
            Plan::Call(req, view) => Ok((req, view)),
            Plan::Check { .. } => panic!("a check"),
            Plan::NodeInfo(_) => panic!("node info"),
        }
    }

    fn any_plan(args: &[&str]) -> Result<Plan, UsageError> {
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

    #[test]
    fn node_info_asks_for_the_node_and_its_memory() {
        assert_eq!(
            any_plan(&["node", "info", "--json"]).unwrap(),
            Plan::NodeInfo(Format { json: true })
        );
    }

    #[test]
    fn recover_force_and_recovery_send_their_requests() {
        let json = Format { json: true };
        assert_eq!(
            plan(&["cluster", "recover", "force"]).unwrap(),
            (
                Request::ClusterRecoverForce,
                View::Forced(Format { json: false })
            )
        );
        assert_eq!(
            plan(&["node", "recovery", "--json"]).unwrap(),
            (Request::NodeRecovery, View::Recovery(json))
        );
        assert_eq!(
            plan(&["node", "recovery", "set-throttle", "100M"]).unwrap(),
            (
                Request::SetRecoveryThrottle {
                    bytes_per_sec: Some(100 << 20)
                },
                View::Throttle
            )
        );
        for off in ["off", "0", "none"] {
            assert_eq!(
                plan(&["node", "recovery", "set-throttle", off]).unwrap().0,
                Request::SetRecoveryThrottle {
                    bytes_per_sec: None
                }
            );
        }
        let argv = ["dog", "node", "recovery", "set-throttle", "fast"];
        assert!(Cli::try_parse_from(argv).is_err());
        let argv = ["dog", "cluster", "recover"];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn rates_parse_with_units_and_per_second() {
        assert_eq!(parse_rate("100M").unwrap(), Rate(Some(100 << 20)));
        assert_eq!(parse_rate("1G/s").unwrap(), Rate(Some(1 << 30)));
        assert_eq!(parse_rate("OFF").unwrap(), Rate(None));
        assert!(parse_rate("-1").is_err());
    }

    #[test]
    fn checks_name_a_vdi_or_the_whole_cluster() {
        assert_eq!(
            any_plan(&["vdi", "check", "vm0"]).unwrap(),
            Plan::Check {
                vdi: Some("vm0".into()),
                args: CheckArgs {
                    json: false,
                    no_repair: false
                }
            }
        );
        assert_eq!(
            any_plan(&["vdi", "check", "vm0@t", "--json"]).unwrap(),
            Plan::Check {
                vdi: Some("vm0@t".into()),
                args: CheckArgs {
                    json: true,
                    no_repair: false
                }
            }
        );
        assert_eq!(
            any_plan(&["cluster", "check", "--no-repair"]).unwrap(),
            Plan::Check {
                vdi: None,
                args: CheckArgs {
                    json: false,
                    no_repair: true
                }
            }
        );
        assert!(any_plan(&["vdi", "check", "@t"]).is_err());
    }
}
