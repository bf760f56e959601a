//! The public face of the total-order state machine (see `docs/CLUSTER.md`).
//!
//! The machine is pure: inputs in, outputs out, time passed in. The network driver
//! (`crate::net`) and the simulated network of the tests feed it the same way.

use crate::node::NodeId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// Position of an entry in the cluster's log; the first entry is 1.
pub type Seq = u64;

/// Count of membership entries (join, leave, fail) in the log up to some point.
pub type Epoch = u64;

/// What a member tells the others about itself when it joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's identity (stable across restarts: it is kept in the store).
    pub id: NodeId,
    /// Where its object-data channel listens (one per local address; tried in order).
    pub data_addrs: Vec<SocketAddr>,
    /// Raw capacity of its store in bytes (placement weight).
    pub capacity: u64,
    /// A random number chosen at every start, so a restarted member is told apart from the
    /// instance the cluster remembers.
    pub incarnation: u64,
}

/// The body of one log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A member joined (also the first entry of a new cluster).
    Join(MemberInfo),
    /// A member left cleanly.
    Leave(NodeId),
    /// A member was found dead or unreachable and removed.
    Fail(NodeId),
    /// An application command, opaque to the order layer.
    App {
        /// The member that proposed it.
        origin: NodeId,
        /// The proposer's incarnation and request number: unique, used to drop duplicates.
        req: ReqId,
        /// The command bytes.
        cmd: Vec<u8>,
    },
}

/// Identifies one proposal: retried proposals keep their id and are applied at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReqId {
    /// The proposer's incarnation (see [`MemberInfo::incarnation`]).
    pub incarnation: u64,
    /// Increases by one per proposal of that incarnation.
    pub n: u64,
}

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its position.
    pub seq: Seq,
    /// The epoch after this entry (membership entries increment it).
    pub epoch: Epoch,
    /// Running hash of every entry up to this one, to detect diverging histories.
    pub hash: u64,
    /// What it says.
    pub body: Body,
}

/// The membership as of some epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The epoch.
    pub epoch: Epoch,
    /// Members, oldest first (order of their join entries).
    pub members: Vec<MemberInfo>,
    /// The member that orders proposals (the oldest one).
    pub sequencer: Option<NodeId>,
}

/// Timing of the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How often a member tells the others it is alive.
    pub heartbeat: Duration,
    /// A member not heard from for this long is considered failed.
    pub failure_timeout: Duration,
    /// How long a starting node listens for an existing cluster before forming one.
    pub discovery_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat: Duration::from_millis(250),
            failure_timeout: Duration::from_secs(3),
            discovery_window: Duration::from_millis(3000),
        }
    }
}

/// Why a proposal was not applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// This node is not (or no longer) a member.
    NotMember,
    /// This node is on the minority side of a partition.
    NoQuorum,
    /// The command is larger than [`MAX_COMMAND`].
    TooLarge,
}

/// Where a node stands (see [`super::OrderNode::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Listening for an established cluster or for other starting nodes.
    Searching,
    /// Asked an established cluster to add it; catching up on its log.
    Joining,
    /// A member of the cluster, which holds a quorum.
    Member,
    /// A member that cannot reach a quorum of the view: ordering is stopped.
    NoQuorum,
    /// Left the cluster cleanly; done.
    Left,
}

/// Something the machine is told.
#[derive(Clone, Debug)]
pub enum Input {
    /// Time passed (the driver ticks every few tens of milliseconds).
    Tick,
    /// A message from another node (possibly late, duplicated or out of order).
    Recv {
        /// Sender.
        from: NodeId,
        /// The message.
        msg: super::Msg,
    },
    /// The application wants `cmd` in the log. Answered by [`Output::Acked`] or
    /// [`Output::Refused`] with the same `req`.
    Propose {
        /// Id of the proposal (see [`ReqId`]); the caller picks it.
        req: ReqId,
        /// The command.
        cmd: Vec<u8>,
    },
    /// The application has durably stored and applied every delivered entry up to `seq`.
    Applied {
        /// The highest applied entry.
        seq: Seq,
    },
    /// A node of the same cluster name was discovered (mDNS or `--peer`), with what it said
    /// of itself in its last message if any.
    Discovered {
        /// The node.
        id: NodeId,
    },
    /// Leave the cluster cleanly (SIGTERM).
    Leave,
    /// `dog cluster recover force`: a node restarted with a stored log that waits for the
    /// members of its last epoch resumes the cluster with the members it hears now (the one
    /// with the longest log resumes it; it may be another node, which is asked to) and removes
    /// the absent ones with `Fail` entries. Answered by [`Output::Forced`].
    RecoverForce,
}

/// Something the machine wants done.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send to every node of the cluster (gossipsub; may be lost or reordered; must be at
    /// most [`MAX_BROADCAST`] bytes encoded).
    Broadcast(super::Msg),
    /// Send to one node (a direct stream; may fail).
    Send {
        /// Destination.
        to: NodeId,
        /// The message.
        msg: super::Msg,
    },
    /// Durably store and then apply this entry. Entries come in `seq` order, each once
    /// (after a restart, the entries given to [`super::OrderNode::new`] are not delivered again).
    Deliver(Entry),
    /// The application must throw away its state and the stored log: the cluster's history
    /// diverged from ours (see `docs/CLUSTER.md`). Deliveries start again from seq 1.
    Reset,
    /// Every member of the view applied the entry holding proposal `req`: tell the caller.
    Acked {
        /// The proposal.
        req: ReqId,
        /// Where it landed.
        seq: Seq,
    },
    /// The proposal will not be applied.
    Refused {
        /// The proposal.
        req: ReqId,
        /// Why.
        why: Refusal,
    },
    /// The membership changed (also when this node becomes a member).
    ViewChanged(View),
    /// The answer to [`Input::RecoverForce`].
    Forced(Result<Forced, NoForce>),
}

/// What a node restarted with a stored log waits for before it resumes the cluster (see
/// [`super::OrderNode::waiting`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// The epoch of its stored log (the last epoch it knows).
    pub epoch: Epoch,
    /// The members of that epoch, oldest first (this node included).
    pub members: Vec<NodeId>,
    /// Those it has not heard from: it resumes once it has heard them all, or when forced.
    pub missing: Vec<NodeId>,
    /// A forced recovery was asked for and is under way.
    pub forced: bool,
}

/// A forced recovery that was accepted (see [`Input::RecoverForce`]): what the node will do
/// with what it hears now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forced {
    /// The epoch of the stored log that is resumed.
    pub epoch: Epoch,
    /// The node that resumes the cluster as its sequencer (the longest log among the present
    /// members, then the oldest); when it is another node, that node is asked to.
    pub resumer: NodeId,
    /// The members that resume the cluster (heard now, with a stored log).
    pub present: Vec<NodeId>,
    /// The members removed (`Fail`) because they are not heard.
    pub removed: Vec<NodeId>,
}

/// Why a forced recovery was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum NoForce {
    /// This node is already a member of a running cluster: there is nothing to recover.
    #[error("this host is already a member of a running cluster: nothing to recover")]
    Member,
    /// This node has no stored log: it forms or joins a cluster by itself.
    #[error("this host has no stored cluster log: it forms or joins a cluster by itself")]
    NoLog,
    /// The stored log removed this node: it waits to join a running cluster.
    #[error("this host is not a member of its stored view: it waits to join a running cluster")]
    NotInView,
    /// A running cluster was heard: this node is joining (or resuming into) it.
    #[error("a running cluster was heard: this host is joining it")]
    Joining,
    /// This node left the cluster.
    #[error("this host left the cluster")]
    Left,
}

/// Largest encoded message the driver may broadcast (gossipsub refuses > 64 KiB).
pub const MAX_BROADCAST: usize = 60 << 10;

/// Largest command a proposal may carry; larger ones are refused with [`Refusal::TooLarge`].
pub const MAX_COMMAND: usize = 16 << 10;
