//! The total-order state machine ([`OrderNode`]) and its wire messages ([`Msg`]).
//!
//! # Protocol
//!
//! The machine is a sequencer protocol with view-stamped replication underneath, so that a
//! partition or the death of the sequencer can never make two nodes deliver different entries
//! at the same `seq`:
//!
//! * **Ballots.** The sequencer works under a [`Ballot`] (`n`, leader). A member *promises* the
//!   highest ballot it has heard of and ignores entries of lower ones.
//! * **Pending and committed.** The sequencer appends a proposal to its log as a *pending*
//!   entry and broadcasts it ([`Msg::Entries`]). Members keep pending entries in memory and
//!   answer [`Msg::Ack`]. An entry is *committed* once a quorum of the view before it holds it
//!   (strict majority, or exactly half including the view's oldest member); then the sequencer
//!   delivers it and announces the new commit point in its heartbeat, and the others deliver it
//!   too. Only committed entries are delivered, so deliveries never diverge.
//! * **Running hash.** Every entry carries a hash of the whole history up to it: a commit
//!   notice `(seq, hash)` lets any node check that its pending entry at `seq` is the committed
//!   one, and a joiner detects a diverging stored log.
//! * **Acknowledgement.** Members report their applied seq (in acks and heartbeats); the
//!   sequencer publishes `stable`, the smallest applied seq of the view, and a proposer answers
//!   [`Output::Acked`] once `stable` reaches its entry.
//! * **View change.** When the sequencer is suspected (or has left), the oldest member that
//!   is not suspected takes a higher ballot, asks every member for its log ([`Msg::VcQuery`]),
//!   waits for a quorum, adopts the log of the reply with the highest accepted ballot (the
//!   longest among those), announces it ([`Msg::SyncReply`] with the ballot) and sequences
//!   `Fail` for every older member. A committed entry is held by a quorum, any two quorums
//!   intersect, so it is in the adopted log.
//! * **Catch-up.** Anyone serves its committed entries ([`Msg::SyncReq`]), in pages under
//!   [`MAX_BROADCAST`]; the sequencer adds its pending tail so that a member can adopt it.
//!
//! Proposals made while the node is searching or joining are queued and sent once it is a
//! member; while it has no quorum they are queued and refused with [`Refusal::NoQuorum`] after
//! `failure_timeout` if they were never handed to a sequencer. A proposal already handed to a
//! sequencer is never refused (it might be in the log): it is retried with the same id until
//! acknowledged.
//!
//! # Whole-cluster restart and forced recovery
//!
//! A node restarted on a stored log whose view has other members searches until it has heard
//! (hellos) every member of that view; the one with the longest log (then the oldest) resumes
//! as sequencer under a new ballot and says `resume` in its heartbeats. The others catch up
//! with its committed log (chain-checked, while still searching) and resume their membership
//! with their stored incarnation. [`Input::RecoverForce`] (`dog cluster recover force`) does
//! not wait for the absent members: the longest log among the members heard resumes (asked
//! with [`Msg::RecoverForce`] when it is another node), after appending `Fail` for each absent
//! member to its log without a quorum (all members wait: nobody else orders). Waiting nodes
//! report what they wait for ([`OrderNode::waiting`]).
//!
//! # Merging clusters formed apart
//!
//! Nodes that did not hear each other within the discovery window form separate clusters of
//! the same name. Each has an identity, [`ClusterId`] (founder and hash of the first entry),
//! carried in heartbeats with whether its committed log holds an application entry. A member
//! that hears a member of another cluster applies [`preferred`] (data beats no data, then the
//! lower identity): if the other one is preferred and ours holds no application entry
//! (committed or pending), it *dissolves*: [`Output::Reset`], log and ballots dropped, and it
//! joins the other cluster through its sequencer like a new node (catching up from seq 1).
//! Every member decides for itself, so a member that lags only churns. The rule's inputs are
//! immutable or monotonic, so two clusters never dissolve into each other; two clusters with
//! data never merge (an error is logged once). A dissolving node's proposals were never
//! ordered (there is no application entry to lose): they are re-sent with the same ids once
//! it is a member of the new cluster. It does not dissolve while a proposal it handed to
//! another member is unanswered (that member might still order it), unless that member was
//! heard in another cluster since.

use super::api::{
    Body, Config, Entry, Epoch, Forced, Input, MemberInfo, NoForce, Output, Refusal, ReqId, Seq,
    Status, View, Waiting, MAX_BROADCAST, MAX_COMMAND,
};
use crate::codec;
use crate::node::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Encoding limit used for hashing and sizing entries (never reached by valid entries).
const ENC_LIMIT: u64 = 1 << 30;
/// Bytes of entries per message (leaves room for the envelope of the message).
const PAGE: usize = MAX_BROADCAST - (4 << 10);
/// Bytes of uncommitted application commands the sequencer holds at most.
const WINDOW: usize = 32 << 10;
/// Most uncommitted entries the sequencer holds.
const WINDOW_ENTRIES: usize = 512;

/// A view-change round. Higher wins; equal numbers are ordered by the leader's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// Round number.
    pub n: u64,
    /// The member that leads (sequences in) this round.
    pub leader: NodeId,
}

/// The identity of a cluster: its founder and the hash of its first entry (the founder's
/// `Join`, which holds its incarnation). Every member of a cluster computes the same one from
/// its log; two clusters formed apart never share it.
///
/// The derived order (founder first) is the tie-break of the merge rule: between two clusters
/// without application data, the lower one is preferred (see [`OrderNode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId {
    /// The node whose `Join` is the first entry.
    pub founder: NodeId,
    /// The running hash of the first entry.
    pub hash: u64,
}

impl ClusterId {
    /// The identity of the cluster whose log starts with `first`.
    pub fn of(first: &Entry) -> ClusterId {
        let founder = match &first.body {
            Body::Join(info) => info.id,
            Body::Leave(id) | Body::Fail(id) => *id,
            Body::App { origin, .. } => *origin,
        };
        ClusterId {
            founder,
            hash: first.hash,
        }
    }
}

/// The merge rule: whether cluster `a` (with application data or not) is preferred to `b`.
/// A cluster with data beats one without; otherwise the lower [`ClusterId`] wins. Both inputs
/// are immutable or monotonic (a committed `App` entry is never taken back), so two clusters
/// can never each prefer the other.
pub fn preferred(a: (bool, ClusterId), b: (bool, ClusterId)) -> bool {
    (a.0 && !b.0) || (a.0 == b.0 && a.1 < b.1)
}

impl Ballot {
    /// No ballot yet.
    pub const ZERO: Ballot = Ballot {
        n: 0,
        leader: NodeId([0; 16]),
    };
}

/// What a node says of itself every `heartbeat` (and at once when its commit point moves).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The highest ballot the sender promised.
    pub ballot: Ballot,
    /// The sequencer, when the sender is a member working normally under `ballot`.
    pub sequencer: Option<NodeId>,
    /// Whether the sender is a member.
    pub member: bool,
    /// The sender's epoch (of its committed log).
    pub epoch: Epoch,
    /// The sender's last committed (delivered) entry.
    pub commit: Seq,
    /// Hash of that entry.
    pub commit_hash: u64,
    /// The last entry it holds (committed or pending).
    pub last: Seq,
    /// The last entry its application applied.
    pub applied: Seq,
    /// From the sequencer: every member of the view applied up to this.
    pub stable: Seq,
    /// From a sequencer that resumed a stopped cluster (every member restarted): the other
    /// members of its view may resume their membership instead of joining again.
    pub resume: bool,
    /// The identity of the sender's log (`None` when it holds none).
    pub cluster: Option<ClusterId>,
    /// Whether the sender's committed log holds an application entry.
    pub data: bool,
    /// The sender's heartbeat counter (of this incarnation; one more per broadcast).
    pub beat: u64,
    /// The last `beat` the sender heard from each member of its view: `(member, its
    /// incarnation, beat)`. A node learns from its own beat echoed back that the sender was
    /// at `epoch` after that beat was sent: a heartbeat delayed in a buffer (a link that comes
    /// back delivers what it queued while cut) cannot pass for a fresh one.
    pub echo: Vec<(NodeId, u64, u64)>,
}

/// A message between two order machines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// A starting node looking for a cluster.
    Hello {
        /// Who it is.
        info: MemberInfo,
        /// The last entry of its stored log (0 if none).
        last: Seq,
        /// Hash of that entry.
        last_hash: u64,
    },
    /// A node's periodic state.
    Heartbeat(Heartbeat),
    /// Asks the sequencer to add the sender.
    Join {
        /// The joiner.
        info: MemberInfo,
    },
    /// Asks the sequencer to order a command of the sender.
    Propose {
        /// The proposal id.
        req: ReqId,
        /// The command.
        cmd: Vec<u8>,
    },
    /// Asks the sequencer to sequence `Leave(sender)`.
    Leave,
    /// New pending entries from the sequencer of `ballot`.
    Entries {
        /// The sequencer's ballot.
        ballot: Ballot,
        /// Its commit point.
        commit: Seq,
        /// Hash of the entry at `commit`.
        commit_hash: u64,
        /// Consecutive entries.
        entries: Vec<Entry>,
    },
    /// A member holds the entries of `ballot` up to `last` and applied up to `applied`.
    Ack {
        /// The ballot whose entries it holds.
        ballot: Ballot,
        /// The sender's incarnation.
        incarnation: u64,
        /// Last entry held.
        last: Seq,
        /// Last entry applied.
        applied: Seq,
    },
    /// Asks for entries from `from` on; `prev_hash` is the hash of the asker's entry `from - 1`.
    SyncReq {
        /// First entry wanted.
        from: Seq,
        /// Hash of the entry before it (0 when `from` is 1).
        prev_hash: u64,
    },
    /// Entries from the `from` of a [`Msg::SyncReq`]; also the announcement of a new sequencer.
    SyncReply {
        /// The identity of the sender's log (a joiner ignores replies of another cluster).
        cluster: Option<ClusterId>,
        /// Set when the sender is the sequencer of this ballot and `entries` include its tail.
        ballot: Option<Ballot>,
        /// The sender's commit point: entries up to it are committed.
        commit: Seq,
        /// Hash of the entry at `commit`.
        commit_hash: u64,
        /// Consecutive entries.
        entries: Vec<Entry>,
        /// Whether `entries` reach the sender's last entry.
        complete: bool,
    },
    /// The asker's log differs from the sender's at `at`.
    Diverged {
        /// Seq of the entry that differs.
        at: Seq,
        /// The sender's hash of it.
        hash: u64,
    },
    /// A view change: promise `ballot` and send your log from `from`.
    VcQuery {
        /// The new ballot.
        ballot: Ballot,
        /// First entry wanted.
        from: Seq,
    },
    /// Answer to [`Msg::VcQuery`].
    VcReply {
        /// The ballot promised.
        ballot: Ballot,
        /// The ballot of the sender's pending entries.
        accepted: Ballot,
        /// Its commit point.
        commit: Seq,
        /// Hash of the entry at `commit`.
        commit_hash: u64,
        /// Its last entry.
        last: Seq,
        /// Hash of its last entry.
        last_hash: u64,
        /// Its entries from `from`.
        entries: Vec<Entry>,
        /// Whether `entries` reach `last`.
        complete: bool,
    },
    /// `dog cluster recover force` was run on the sender, which waits like the receiver for
    /// the members of the last epoch: the receiver has the longest log of those present, so
    /// it is to resume the cluster without the absent ones.
    RecoverForce {
        /// The identity of the sender's log.
        cluster: Option<ClusterId>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Searching,
    Joining,
    Member,
    Left,
}

#[derive(Clone, Debug)]
struct HelloSeen {
    last: Seq,
    last_hash: u64,
    at: Instant,
}

/// A forced recovery asked of this node (see [`Input::RecoverForce`]).
#[derive(Clone, Debug)]
struct ForceReq {
    /// When the resumer (another node) was last asked to resume, and which one.
    sent: Option<(Instant, NodeId)>,
}

#[derive(Clone, Debug)]
struct ClusterSeen {
    /// Its identity (`None` if not known).
    id: Option<ClusterId>,
    /// Whether it holds application data.
    data: bool,
    sequencer: NodeId,
    ballot: Ballot,
    commit: Seq,
    /// Its sequencer resumed it after every member restarted: a restarted member of its view
    /// catches up and resumes its membership instead of joining again.
    resume: bool,
    at: Instant,
}

#[derive(Clone, Debug)]
struct Prop {
    cmd: Vec<u8>,
    since: Instant,
    sent: Option<(Instant, NodeId)>,
    seq: Option<Seq>,
}

#[derive(Clone, Debug, Default)]
struct Sequencer {
    /// Last entry of our ballot each member holds.
    acks: HashMap<NodeId, Seq>,
    /// We sequenced our own `Leave`: order nothing more.
    retiring: bool,
}

#[derive(Clone, Debug)]
struct VcRep {
    accepted: Ballot,
    commit: Seq,
    commit_hash: u64,
    last: Seq,
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct ViewChange {
    ballot: Ballot,
    started: Instant,
    sent: Instant,
    replies: BTreeMap<NodeId, VcRep>,
    best: Option<NodeId>,
}

#[derive(Default)]
struct Out {
    v: Vec<Output>,
    new_entries: Vec<Entry>,
    hb_now: bool,
}

/// The total-order state machine of one node (see the module documentation).
pub struct OrderNode {
    me: MemberInfo,
    cfg: Config,
    started: Instant,
    phase: Phase,
    /// Delivered (committed) entries, `log[i].seq == i + 1`.
    log: Vec<Entry>,
    /// The view after every membership entry of `log`.
    views: Vec<View>,
    seen: HashMap<(NodeId, ReqId), Seq>,
    applied: Seq,
    promised: Ballot,
    accepted: Ballot,
    max_n: u64,
    /// Entries after `log`, all from the sequencer of `accepted`.
    pending: Vec<Entry>,
    seq: Option<Sequencer>,
    vc: Option<ViewChange>,
    last_heard: HashMap<NodeId, Instant>,
    reports: HashMap<NodeId, (u64, Seq)>,
    hellos: BTreeMap<NodeId, HelloSeen>,
    cluster: Option<ClusterSeen>,
    stable: Seq,
    outstanding: BTreeMap<ReqId, Prop>,
    leaving: Option<Option<Instant>>,
    sync_due: bool,
    sync_sent: Option<Instant>,
    join_sent: Option<Instant>,
    last_hb: Option<Instant>,
    no_quorum: bool,
    resume_epoch: Option<Epoch>,
    /// The highest commit point heard of, and who has it (served by anyone).
    known_commit: Option<(Seq, NodeId)>,
    /// When the leader of `promised` was last heard acting as the sequencer (or the ballot
    /// was first heard of).
    leader_heard: Option<(Ballot, Instant)>,
    /// Whether `log` holds an application entry (then this cluster never dissolves).
    has_app: bool,
    /// Nodes heard as members of another cluster than ours (see [`OrderNode::dissolve`]).
    moved: HashMap<NodeId, ClusterId>,
    /// The other cluster with data we already warned about.
    warned: Option<ClusterId>,
    /// A forced recovery under way (searching with a stored log only).
    force: Option<ForceReq>,
    /// Our stored log was found to be a prefix of the committed log of the cluster we catch
    /// up with (entries of it chained onto ours) while not a member.
    verified: bool,
    /// Heartbeats broadcast by this incarnation so far.
    beat: u64,
    /// When each recent beat was broadcast, oldest first (pruned after a failure timeout).
    beats_sent: VecDeque<(u64, Instant)>,
    /// The last beat heard from each node, with its incarnation (echoed in our heartbeats).
    beats_heard: HashMap<NodeId, (u64, u64)>,
    /// Per member: the latest of our beats it echoed, with its incarnation and its epoch when
    /// it did: the quorum gate of the data path.
    confirmed: HashMap<NodeId, Confirmed>,
    /// Position of the membership entry that made the current view (0: none yet).
    view_seq: Seq,
}

/// What a member's heartbeat confirmed of it (see [`OrderNode::heard_quorum`]).
#[derive(Clone, Copy, Debug)]
struct Confirmed {
    incarnation: u64,
    echo: u64,
    epoch: Epoch,
}

impl std::fmt::Debug for OrderNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderNode")
            .field("id", &self.me.id)
            .field("phase", &self.phase)
            .field("no_quorum", &self.no_quorum)
            .field("delivered", &self.delivered())
            .field("last", &self.tip().0)
            .field("epoch", &self.epoch())
            .field("promised", &self.promised)
            .field("accepted", &self.accepted)
            .field("sequencer", &self.is_seq())
            .field("view_change", &self.vc.as_ref().map(|v| v.ballot))
            .field("sync_due", &self.sync_due)
            .field("stable", &self.stable)
            .field("outstanding", &self.outstanding.len())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Pure helpers.

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The running hash of an entry: FNV-1a over the previous hash, seq, epoch and encoded body.
pub(crate) fn entry_hash(prev: u64, seq: Seq, epoch: Epoch, body: &Body) -> u64 {
    let mut h = fnv(0xcbf2_9ce4_8422_2325, &prev.to_le_bytes());
    h = fnv(h, &seq.to_le_bytes());
    h = fnv(h, &epoch.to_le_bytes());
    match codec::to_bytes(body, ENC_LIMIT) {
        Ok(b) => fnv(h, &b),
        Err(_) => h ^ 0x9e37_79b9_7f4a_7c15,
    }
}

fn is_membership(body: &Body) -> bool {
    !matches!(body, Body::App { .. })
}

/// (seq, epoch, hash) of the entry a new entry follows.
type Tip = (Seq, Epoch, u64);

fn tip_of(e: Option<&Entry>) -> Tip {
    e.map_or((0, 0, 0), |e| (e.seq, e.epoch, e.hash))
}

fn make_entry(prev: Tip, body: Body) -> Entry {
    let seq = prev.0 + 1;
    let epoch = prev.1 + u64::from(is_membership(&body));
    let hash = entry_hash(prev.2, seq, epoch, &body);
    Entry {
        seq,
        epoch,
        hash,
        body,
    }
}

/// Whether `e` is a well-formed successor of `prev`.
fn follows(prev: Tip, e: &Entry) -> bool {
    e.seq == prev.0.wrapping_add(1)
        && e.epoch == prev.1.wrapping_add(u64::from(is_membership(&e.body)))
        && e.hash == entry_hash(prev.2, e.seq, e.epoch, &e.body)
}

fn apply_membership(members: &mut Vec<MemberInfo>, body: &Body) {
    match body {
        Body::Join(info) => {
            if let Some(m) = members.iter_mut().find(|m| m.id == info.id) {
                *m = info.clone();
            } else {
                members.push(info.clone());
            }
        }
        Body::Leave(id) | Body::Fail(id) => members.retain(|m| m.id != *id),
        Body::App { .. } => {}
    }
}

/// The quorum rule of the log: a strict majority of `members`, or exactly half including the
/// oldest (the sequencer). `has` tells which members count.
pub fn quorum(members: &[MemberInfo], has: impl Fn(NodeId) -> bool) -> bool {
    let n = members.len();
    let c = members.iter().filter(|m| has(m.id)).count();
    2 * c > n || (n > 0 && 2 * c == n && has(members[0].id))
}

fn encoded_len<T: Serialize>(v: &T) -> usize {
    codec::to_bytes(v, ENC_LIMIT).map_or(usize::MAX / 4, |b| b.len())
}

/// Splits `entries` into runs whose encoded size stays under `limit` (one entry at least).
fn pages(entries: &[Entry], limit: usize) -> Vec<Vec<Entry>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for e in entries {
        let l = encoded_len(e);
        if !cur.is_empty() && size + l > limit {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += l;
        cur.push(e.clone());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The longest prefix of `entries` under `limit` bytes (at least one entry).
fn first_page(entries: &[Entry], limit: usize) -> Vec<Entry> {
    let mut size = 0;
    let mut out = Vec::new();
    for e in entries {
        let l = encoded_len(e);
        if !out.is_empty() && size + l > limit {
            break;
        }
        size += l;
        out.push(e.clone());
    }
    out
}

fn idx(seq: Seq) -> Option<usize> {
    usize::try_from(seq.checked_sub(1)?).ok()
}

impl OrderNode {
    /// A machine for `me`. `restored`: entries this node durably stored before a restart
    /// (already applied by the application; they are not delivered again).
    pub fn new(me: MemberInfo, cfg: Config, restored: Vec<Entry>, now: Instant) -> OrderNode {
        let mut n = OrderNode {
            me,
            cfg,
            started: now,
            phase: Phase::Searching,
            log: Vec::new(),
            views: Vec::new(),
            seen: HashMap::new(),
            applied: 0,
            promised: Ballot::ZERO,
            accepted: Ballot::ZERO,
            max_n: 0,
            pending: Vec::new(),
            seq: None,
            vc: None,
            last_heard: HashMap::new(),
            reports: HashMap::new(),
            hellos: BTreeMap::new(),
            cluster: None,
            stable: 0,
            outstanding: BTreeMap::new(),
            leaving: None,
            sync_due: false,
            sync_sent: None,
            join_sent: None,
            last_hb: None,
            no_quorum: false,
            resume_epoch: None,
            known_commit: None,
            leader_heard: None,
            has_app: false,
            moved: HashMap::new(),
            warned: None,
            force: None,
            verified: false,
            beat: 0,
            beats_sent: VecDeque::new(),
            beats_heard: HashMap::new(),
            confirmed: HashMap::new(),
            view_seq: 0,
        };
        for e in restored {
            if e.seq != n.delivered() + 1 {
                tracing::warn!(
                    seq = e.seq,
                    "restored log is not consecutive; ignoring the rest"
                );
                break;
            }
            n.record(&e);
            n.log.push(e);
        }
        n.applied = n.delivered();
        n
    }

    /// No cluster anywhere to join (e.g. `--no-mdns` and no `--peer`): form a new cluster now.
    ///
    /// A node with a stored log resumes its cluster only if it was its only member; otherwise
    /// it keeps searching (forcing a recovery is future work).
    pub fn bootstrap(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Out::default();
        if matches!(self.phase, Phase::Searching | Phase::Joining) {
            if self.log.is_empty() {
                self.form(now, &mut out);
            } else if self.members().iter().all(|m| m.id == self.me.id)
                && self.members().iter().any(|m| m.id == self.me.id)
            {
                self.resume(now, &mut out);
            } else {
                tracing::warn!("cannot form a cluster alone: the stored view has other members");
            }
        }
        self.flush(now, &mut out);
        out.v
    }

    /// Feeds one input; returns what to do.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Out::default();
        match input {
            Input::Tick => {}
            Input::Recv { from, msg } => self.on_msg(now, from, msg, &mut out),
            Input::Propose { req, cmd } => self.on_propose(now, req, cmd, &mut out),
            Input::Applied { seq } => self.on_applied(now, seq, &mut out),
            Input::Discovered { id } => self.on_discovered(id, &mut out),
            Input::Leave => self.on_leave(now, &mut out),
            Input::RecoverForce => self.on_recover_force(&mut out),
        }
        self.timers(now, &mut out);
        self.flush(now, &mut out);
        out.v
    }

    /// The current view; `None` until this node is a member.
    pub fn view(&self) -> Option<&View> {
        if self.phase == Phase::Member {
            self.views.last()
        } else {
            None
        }
    }

    /// Whether this node is a member of the cluster.
    pub fn is_member(&self) -> bool {
        self.phase == Phase::Member
    }

    /// The highest entry delivered (including the restored ones).
    pub fn delivered(&self) -> Seq {
        self.log.last().map_or(0, |e| e.seq)
    }

    /// The identity of the cluster of our log (`None` while it is empty).
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.log.first().map(ClusterId::of)
    }

    /// Every view in the history, oldest first.
    pub fn epoch_log(&self) -> Vec<View> {
        self.views.clone()
    }

    /// Where this node stands.
    pub fn status(&self) -> Status {
        match self.phase {
            Phase::Searching => Status::Searching,
            Phase::Joining => Status::Joining,
            Phase::Left => Status::Left,
            Phase::Member if self.no_quorum => Status::NoQuorum,
            Phase::Member => Status::Member,
        }
    }

    /// The node that orders proposals, as far as this node knows.
    pub fn sequencer(&self) -> Option<NodeId> {
        match self.phase {
            Phase::Member => {
                if self.promised.n > 0 && self.in_view(self.promised.leader) {
                    Some(self.promised.leader)
                } else {
                    self.members().first().map(|m| m.id)
                }
            }
            Phase::Joining | Phase::Searching => self.cluster.as_ref().map(|c| c.sequencer),
            Phase::Left => None,
        }
    }

    /// What this node waits for, when it restarted with a stored log whose view has other
    /// members and has not resumed yet: the members of that view it has not heard from.
    /// `None` otherwise (a member, a node joining a running cluster, a node without a log).
    pub fn waiting(&self) -> Option<Waiting> {
        if self.phase != Phase::Searching || self.log.is_empty() || !self.in_view(self.me.id) {
            return None;
        }
        let members: Vec<NodeId> = self.members().iter().map(|m| m.id).collect();
        let missing = members
            .iter()
            .filter(|id| **id != self.me.id && !self.hellos.contains_key(id))
            .copied()
            .collect();
        Some(Waiting {
            epoch: self.epoch(),
            members,
            missing,
            forced: self.force.is_some(),
        })
    }

    /// The quorum gate of the data path: whether this node is a member whose application has
    /// applied the entry that made its view, and enough members of that view to form a quorum
    /// with it (by the rule of the log: a strict majority, or exactly half including the
    /// oldest member) have confirmed, within `window`, that they are not ahead of it.
    ///
    /// A member confirms by a heartbeat that echoes one of our heartbeats sent within
    /// `window` and says its epoch is not later than ours: a round trip, so a heartbeat that
    /// waited in a buffer while the link was cut does not count. A node cut off in a minority
    /// sees the gate close about `window` after the last round trip, well before the log's
    /// failure timeout removes anyone. When the network heals, the others are at a later
    /// epoch (the one that removed this node), so the gate stays closed until this node has
    /// caught up, applied its removal (which marks its copies unverified) and joined again:
    /// hearing the majority never reopens it alone.
    pub fn heard_quorum(&self, now: Instant, window: Duration) -> bool {
        if self.status() != Status::Member || self.applied < self.view_seq {
            return false;
        }
        let epoch = self.epoch();
        let fresh = |beat: u64| {
            let i = self.beats_sent.partition_point(|(b, _)| *b < beat);
            self.beats_sent
                .get(i)
                .is_some_and(|(b, t)| *b == beat && now.saturating_duration_since(*t) <= window)
        };
        let confirmed: Vec<NodeId> = self
            .members()
            .iter()
            .filter(|m| {
                m.id == self.me.id
                    || self.confirmed.get(&m.id).is_some_and(|c| {
                        c.incarnation == m.incarnation && c.epoch <= epoch && fresh(c.echo)
                    })
            })
            .map(|m| m.id)
            .collect();
        quorum(self.members(), |id| confirmed.contains(&id))
    }

    // -----------------------------------------------------------------------------------------
    // Small accessors.

    fn members(&self) -> &[MemberInfo] {
        self.views.last().map_or(&[], |v| &v.members)
    }

    fn in_view(&self, id: NodeId) -> bool {
        self.members().iter().any(|m| m.id == id)
    }

    fn dtip(&self) -> Tip {
        tip_of(self.log.last())
    }

    fn tip(&self) -> Tip {
        tip_of(self.pending.last().or(self.log.last()))
    }

    fn entry(&self, seq: Seq) -> Option<&Entry> {
        let i = idx(seq)?;
        if i < self.log.len() {
            self.log.get(i)
        } else {
            self.pending.get(i - self.log.len())
        }
    }

    fn epoch(&self) -> Epoch {
        self.dtip().1
    }

    fn suspected(&self, id: NodeId, now: Instant) -> bool {
        if id == self.me.id {
            return false;
        }
        self.last_heard
            .get(&id)
            .is_none_or(|t| now.saturating_duration_since(*t) > self.cfg.failure_timeout)
    }

    fn alive(&mut self, from: NodeId, incarnation: Option<u64>, now: Instant) {
        let same = incarnation.is_none_or(|inc| {
            self.members()
                .iter()
                .find(|m| m.id == from)
                .is_none_or(|m| m.incarnation == inc)
        });
        if same {
            self.last_heard.insert(from, now);
        }
    }

    /// Notes a member's heartbeat for the quorum gate (see [`OrderNode::heard_quorum`]).
    fn confirm(&mut self, from: NodeId, hb: &Heartbeat) {
        let beat = self.beats_heard.entry(from).or_insert((hb.incarnation, 0));
        if beat.0 != hb.incarnation || beat.1 < hb.beat {
            *beat = (hb.incarnation, hb.beat);
        }
        let me = (self.me.id, self.me.incarnation);
        let Some(&(_, _, echo)) = hb.echo.iter().find(|(id, inc, _)| (*id, *inc) == me) else {
            return;
        };
        let newer = self.confirmed.get(&from).is_none_or(|c| {
            c.incarnation != hb.incarnation || (echo, hb.epoch) > (c.echo, c.epoch)
        });
        if newer {
            let c = Confirmed {
                incarnation: hb.incarnation,
                echo,
                epoch: hb.epoch,
            };
            self.confirmed.insert(from, c);
        }
    }

    fn has_quorum(&self, now: Instant) -> bool {
        quorum(self.members(), |id| !self.suspected(id, now))
    }

    fn is_seq(&self) -> bool {
        self.seq.is_some()
    }

    fn retry(&self) -> Duration {
        self.cfg.heartbeat * 2
    }

    fn prop_retry(&self) -> Duration {
        self.cfg.heartbeat * 6
    }

    fn heartbeat_msg(&self) -> Msg {
        let (commit, _, commit_hash) = self.dtip();
        let member = self.phase == Phase::Member;
        Msg::Heartbeat(Heartbeat {
            incarnation: self.me.incarnation,
            ballot: self.promised,
            sequencer: (member && self.accepted == self.promised && self.promised.n > 0)
                .then_some(self.promised.leader),
            member,
            epoch: self.epoch(),
            commit,
            commit_hash,
            last: self.tip().0,
            applied: self.applied,
            stable: if self.is_seq() { self.stable } else { 0 },
            resume: self.is_seq() && self.resume_epoch == Some(self.epoch()),
            cluster: self.cluster_id(),
            data: self.has_app,
            beat: self.beat,
            echo: self
                .members()
                .iter()
                .filter_map(|m| {
                    let (inc, beat) = *self.beats_heard.get(&m.id)?;
                    (inc == m.incarnation).then_some((m.id, inc, beat))
                })
                .collect(),
        })
    }

    /// Notes what an entry about to join `log` says (views, dedup).
    fn record(&mut self, e: &Entry) {
        match &e.body {
            Body::App { origin, req, .. } => {
                self.seen.insert((*origin, *req), e.seq);
                self.has_app = true;
            }
            body => {
                let mut members = self.members().to_vec();
                apply_membership(&mut members, body);
                let sequencer = members.first().map(|m| m.id);
                self.view_seq = e.seq;
                self.views.push(View {
                    epoch: e.epoch,
                    members,
                    sequencer,
                });
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Delivery.

    /// Delivers `e`, which must follow the committed log.
    fn deliver(&mut self, e: Entry, now: Instant, out: &mut Out) {
        let was_member = self.phase == Phase::Member;
        self.record(&e);
        self.log.push(e.clone());
        out.v.push(Output::Deliver(e.clone()));
        match &e.body {
            Body::App { origin, req, .. } => {
                if *origin == self.me.id {
                    if let Some(p) = self.outstanding.get_mut(req) {
                        p.seq = Some(e.seq);
                    }
                }
            }
            Body::Join(info) => {
                self.last_heard.insert(info.id, now);
                self.reports.insert(info.id, (info.incarnation, 0));
                if info.id == self.me.id
                    && info.incarnation == self.me.incarnation
                    && self.phase != Phase::Member
                    && self.phase != Phase::Left
                {
                    self.become_member(now);
                }
            }
            Body::Leave(id) | Body::Fail(id) => {
                if let Some(sq) = self.seq.as_mut() {
                    sq.acks.remove(id);
                }
                self.reports.remove(id);
                if *id == self.me.id && self.phase == Phase::Member {
                    let left = matches!(e.body, Body::Leave(_)) || self.leaving.is_some();
                    self.lose_membership(left, now, out);
                }
            }
        }
        if is_membership(&e.body) && (was_member || self.phase == Phase::Member) {
            if let Some(v) = self.views.last() {
                out.v.push(Output::ViewChanged(v.clone()));
            }
        }
    }

    fn become_member(&mut self, now: Instant) {
        self.phase = Phase::Member;
        self.no_quorum = false;
        self.verified = false;
        self.force = None;
        let ids: Vec<NodeId> = self.members().iter().map(|m| m.id).collect();
        for id in ids {
            self.last_heard.insert(id, now);
        }
        if let Some(c) = &self.cluster {
            if c.ballot > self.promised {
                self.promised = c.ballot;
            }
        }
        self.leader_heard = Some((self.promised, now));
        self.sync_due = true;
        self.sync_sent = None;
        self.join_sent = None;
    }

    fn lose_membership(&mut self, left: bool, now: Instant, out: &mut Out) {
        let sequencer = self.sequencer();
        self.seq = None;
        self.vc = None;
        self.pending.clear();
        self.no_quorum = false;
        self.promised = Ballot::ZERO;
        self.accepted = Ballot::ZERO;
        if left {
            self.phase = Phase::Left;
            let reqs: Vec<ReqId> = self
                .outstanding
                .iter()
                .filter(|(_, p)| p.seq.is_none())
                .map(|(r, _)| *r)
                .collect();
            for req in reqs {
                self.outstanding.remove(&req);
                out.v.push(Output::Refused {
                    req,
                    why: Refusal::NotMember,
                });
            }
        } else {
            // Removed while alive (partition or false suspicion): join again.
            self.phase = Phase::Joining;
            if let Some(s) = sequencer.filter(|s| *s != self.me.id) {
                self.cluster = Some(ClusterSeen {
                    id: self.cluster_id(),
                    data: self.has_app,
                    sequencer: s,
                    ballot: self.promised,
                    commit: self.delivered(),
                    resume: false,
                    at: now,
                });
            }
            self.join_sent = None;
            for p in self.outstanding.values_mut() {
                if p.seq.is_none() {
                    p.sent = None;
                }
            }
        }
    }

    /// Delivers the committed entry `e` received from someone (chain-checked).
    fn push_committed(&mut self, e: &Entry, now: Instant, out: &mut Out) -> bool {
        if e.seq <= self.delivered() {
            return true;
        }
        if !follows(self.dtip(), e) {
            return false;
        }
        match self.pending.first() {
            Some(p) if p.hash == e.hash => {
                self.pending.remove(0);
            }
            Some(_) => {
                // Our pending entries were not the committed ones: drop them.
                self.pending.clear();
                if self.seq.is_some() {
                    tracing::warn!("sequencer's pending entries conflict with a committed entry");
                    self.seq = None;
                }
            }
            None => {}
        }
        self.deliver(e.clone(), now, out);
        true
    }

    /// A commit notice `(c, h)`: deliver our pending entries up to `c` if ours is the
    /// committed history.
    fn commit_notice(&mut self, c: Seq, h: u64, now: Instant, out: &mut Out) {
        if c <= self.delivered() {
            return;
        }
        if self.entry(c).is_some_and(|e| e.hash == h) {
            while self.delivered() < c && !self.pending.is_empty() {
                let e = self.pending.remove(0);
                self.deliver(e, now, out);
            }
        } else {
            self.sync_due = true;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Formation.

    fn form(&mut self, now: Instant, out: &mut Out) {
        let ballot = Ballot {
            n: self.max_n.saturating_add(1),
            leader: self.me.id,
        };
        self.phase = Phase::Member;
        self.become_sequencer(ballot, now, out);
        self.sequence(Body::Join(self.me.clone()), now, out);
    }

    /// Resumes the cluster of the stored log as its sequencer (every member restarted).
    fn resume(&mut self, now: Instant, out: &mut Out) {
        if let Some(m) = self.members().iter().find(|m| m.id == self.me.id) {
            self.me.incarnation = m.incarnation;
        }
        self.phase = Phase::Member;
        let ids: Vec<NodeId> = self.members().iter().map(|m| m.id).collect();
        for id in ids {
            self.last_heard.insert(id, now);
        }
        self.resume_epoch = Some(self.epoch());
        let ballot = Ballot {
            n: self.max_n.saturating_add(1),
            leader: self.me.id,
        };
        self.become_sequencer(ballot, now, out);
        tracing::info!(
            seq = self.delivered(),
            "resumed the stored cluster as its sequencer"
        );
    }

    fn resume_member(&mut self, ballot: Ballot, from: NodeId, now: Instant, out: &mut Out) {
        if let Some(m) = self.members().iter().find(|m| m.id == self.me.id) {
            self.me.incarnation = m.incarnation;
        }
        self.cluster = Some(ClusterSeen {
            id: self.cluster_id(),
            data: self.has_app,
            sequencer: from,
            ballot,
            commit: 0,
            resume: true,
            at: now,
        });
        self.become_member(now);
        self.see_ballot(ballot, now);
        if let Some(v) = self.views.last() {
            out.v.push(Output::ViewChanged(v.clone()));
        }
    }

    fn searching_timers(&mut self, now: Instant, out: &mut Out) {
        let fresh = self
            .last_hb
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.heartbeat);
        if fresh {
            let (last, _, last_hash) = self.dtip();
            out.v.push(Output::Broadcast(Msg::Hello {
                info: self.me.clone(),
                last,
                last_hash,
            }));
            self.last_hb = Some(now);
        }
        let expiry = self.cfg.failure_timeout.max(self.cfg.discovery_window);
        self.hellos
            .retain(|_, h| now.saturating_duration_since(h.at) <= expiry);
        if self
            .cluster
            .as_ref()
            .is_some_and(|c| now.saturating_duration_since(c.at) > self.cfg.failure_timeout * 3)
        {
            // The cluster we heard went silent.
            self.cluster = None;
        }
        if now.saturating_duration_since(self.started) < self.cfg.discovery_window {
            return;
        }
        if let Some(c) = &self.cluster {
            if !self.resuming_into(c) {
                self.phase = Phase::Joining;
                self.join_sent = None;
                self.force = None;
            }
            // Else: it resumed our stopped cluster; we catch up with it (sync) and resume our
            // membership when its heartbeat says we can.
            return;
        }
        if !self.log.is_empty() {
            // A stored log: resume when every member of the stored view is here.
            let members = self.members().to_vec();
            if !members.iter().any(|m| m.id == self.me.id) {
                return;
            }
            if self.force.is_some() {
                self.force_timers(now, out);
                return;
            }
            let mut best: Option<(Seq, usize, NodeId)> = None;
            for (pos, m) in members.iter().enumerate() {
                let last = if m.id == self.me.id {
                    self.delivered()
                } else if let Some(h) = self.hellos.get(&m.id) {
                    h.last
                } else {
                    return;
                };
                // Longest log first, then the oldest member.
                let key = (last, usize::MAX - pos, m.id);
                if best.is_none_or(|b| (key.0, key.1) > (b.0, b.1)) {
                    best = Some(key);
                }
            }
            if best.is_some_and(|b| b.2 == self.me.id) {
                self.resume(now, out);
            }
            return;
        }
        if self.hellos.values().any(|h| h.last > 0) {
            // Stored clusters are being resumed around us: wait to join them.
            return;
        }
        let lowest = self.hellos.keys().next().is_none_or(|id| *id > self.me.id);
        let waited = now.saturating_duration_since(self.started) >= self.cfg.discovery_window * 3;
        if lowest || waited {
            self.form(now, out);
        }
    }

    /// Whether `c` is our stopped cluster resumed by a member of our stored view, which we
    /// are to resume our membership in once we have caught up with it.
    fn resuming_into(&self, c: &ClusterSeen) -> bool {
        c.resume
            && !self.log.is_empty()
            && c.id.is_some()
            && c.id == self.cluster_id()
            && c.commit >= self.delivered()
            && self.in_view(self.me.id)
            && self.in_view(c.sequencer)
    }

    /// The members of the stored view that a forced recovery resumes with (this node and
    /// those heard with a stored log that agrees with ours), the absent ones, and the one
    /// that resumes: the longest log, then the oldest member (as the normal resume).
    fn force_plan(&self) -> (Vec<NodeId>, Vec<NodeId>, NodeId) {
        let mut present = Vec::new();
        let mut absent = Vec::new();
        let mut best: Option<((Seq, usize), NodeId)> = None;
        let d = self.delivered();
        for (pos, m) in self.members().iter().enumerate() {
            let last = if m.id == self.me.id {
                Some(d)
            } else {
                self.hellos
                    .get(&m.id)
                    .filter(|h| {
                        h.last > 0
                            && (h.last > d
                                || self.entry(h.last).is_some_and(|e| e.hash == h.last_hash))
                    })
                    .map(|h| h.last)
            };
            match last {
                Some(last) => {
                    present.push(m.id);
                    let key = (last, usize::MAX - pos);
                    if best.is_none_or(|(b, _)| key > b) {
                        best = Some((key, m.id));
                    }
                }
                None => absent.push(m.id),
            }
        }
        (present, absent, best.map_or(self.me.id, |(_, id)| id))
    }

    fn on_recover_force(&mut self, out: &mut Out) {
        let r = match self.phase {
            Phase::Member => Err(NoForce::Member),
            Phase::Left => Err(NoForce::Left),
            Phase::Joining => Err(NoForce::Joining),
            Phase::Searching if self.log.is_empty() => Err(NoForce::NoLog),
            Phase::Searching if !self.in_view(self.me.id) => Err(NoForce::NotInView),
            Phase::Searching if self.cluster.is_some() => Err(NoForce::Joining),
            Phase::Searching => {
                if self.force.is_none() {
                    self.force = Some(ForceReq { sent: None });
                }
                let (present, removed, resumer) = self.force_plan();
                tracing::warn!(
                    epoch = self.epoch(),
                    ?present,
                    ?removed,
                    %resumer,
                    "forced recovery asked for: the cluster resumes without the absent members"
                );
                Ok(Forced {
                    epoch: self.epoch(),
                    resumer,
                    present,
                    removed,
                })
            }
        };
        out.v.push(Output::Forced(r));
    }

    /// Another waiting member was forced and found our log the longest: we resume.
    fn on_force_msg(&mut self, from: NodeId, cluster: Option<ClusterId>) {
        let waiting = self.phase == Phase::Searching
            && !self.log.is_empty()
            && self.cluster.is_none()
            && cluster.is_some()
            && cluster == self.cluster_id()
            && self.in_view(self.me.id)
            && self.in_view(from);
        if waiting && self.force.is_none() {
            tracing::warn!(%from, "a forced recovery was asked for on another member");
            self.force = Some(ForceReq { sent: None });
        }
    }

    /// A forced recovery: resume now with the members heard, or ask the one that has the
    /// longest log to.
    fn force_timers(&mut self, now: Instant, out: &mut Out) {
        let (present, absent, best) = self.force_plan();
        if best == self.me.id {
            self.force = None;
            tracing::warn!(
                epoch = self.epoch(),
                ?present,
                removed = ?absent,
                "forced recovery: resuming the cluster without its absent members"
            );
            // Nobody else orders this cluster (its members all wait for each other): the
            // removals are committed here, as the stored log they extend.
            for id in absent {
                let e = make_entry(self.dtip(), Body::Fail(id));
                self.deliver(e, now, out);
            }
            self.resume(now, out);
            return;
        }
        let retry = self.prop_retry();
        let Some(f) = self.force.as_mut() else { return };
        let due = f
            .sent
            .is_none_or(|(t, to)| to != best || now.saturating_duration_since(t) >= retry);
        if due {
            f.sent = Some((now, best));
            out.v.push(Output::Send {
                to: best,
                msg: Msg::RecoverForce {
                    cluster: self.cluster_id(),
                },
            });
        }
    }

    fn joining_timers(&mut self, now: Instant, out: &mut Out) {
        let Some(c) = self.cluster.clone() else {
            self.phase = Phase::Searching;
            self.started = now;
            return;
        };
        if now.saturating_duration_since(c.at) > self.cfg.failure_timeout * 3 {
            // The cluster went silent: look again.
            self.cluster = None;
            self.phase = Phase::Searching;
            self.started = now;
            return;
        }
        if self
            .join_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= self.prop_retry())
        {
            out.v.push(Output::Send {
                to: c.sequencer,
                msg: Msg::Join {
                    info: self.me.clone(),
                },
            });
            self.join_sent = Some(now);
            self.sync_due = true;
        }
        if c.commit > self.delivered() {
            self.sync_due = true;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Inputs.

    fn on_discovered(&mut self, id: NodeId, out: &mut Out) {
        if id == self.me.id {
            return;
        }
        match self.phase {
            Phase::Searching | Phase::Joining => {
                let (last, _, last_hash) = self.dtip();
                out.v.push(Output::Send {
                    to: id,
                    msg: Msg::Hello {
                        info: self.me.clone(),
                        last,
                        last_hash,
                    },
                });
            }
            Phase::Member => out.v.push(Output::Send {
                to: id,
                msg: self.heartbeat_msg(),
            }),
            Phase::Left => {}
        }
    }

    fn on_propose(&mut self, now: Instant, req: ReqId, cmd: Vec<u8>, out: &mut Out) {
        if cmd.len() > MAX_COMMAND {
            out.v.push(Output::Refused {
                req,
                why: Refusal::TooLarge,
            });
            return;
        }
        if self.phase == Phase::Left || self.leaving.is_some() {
            out.v.push(Output::Refused {
                req,
                why: Refusal::NotMember,
            });
            return;
        }
        if self.outstanding.contains_key(&req) {
            return;
        }
        self.outstanding.insert(
            req,
            Prop {
                cmd,
                since: now,
                sent: None,
                seq: None,
            },
        );
        self.send_proposals(now, out);
    }

    fn on_applied(&mut self, now: Instant, seq: Seq, out: &mut Out) {
        let seq = seq.min(self.delivered());
        if seq <= self.applied {
            return;
        }
        self.applied = seq;
        if self.phase != Phase::Member {
            return;
        }
        if self.is_seq() {
            self.update_stable(now, out);
        } else {
            self.send_ack(out);
        }
    }

    fn on_leave(&mut self, now: Instant, out: &mut Out) {
        match self.phase {
            Phase::Member => {
                if self.leaving.is_none() {
                    self.leaving = Some(None);
                }
                self.leave_timers(now, out);
            }
            Phase::Left => {}
            Phase::Searching | Phase::Joining => {
                self.leaving = Some(None);
                self.lose_membership(true, now, out);
            }
        }
    }

    fn leave_timers(&mut self, now: Instant, out: &mut Out) {
        let Some(sent) = self.leaving else { return };
        if self.phase != Phase::Member || self.no_quorum {
            return;
        }
        if sent.is_some_and(|t| now.saturating_duration_since(t) < self.prop_retry()) {
            return;
        }
        if self.is_seq() {
            let me = self.me.id;
            if !self.seq.as_ref().is_some_and(|s| s.retiring) {
                self.sequence(Body::Leave(me), now, out);
                if let Some(sq) = self.seq.as_mut() {
                    sq.retiring = true;
                }
            }
        } else if let Some(s) = self.sequencer() {
            out.v.push(Output::Send {
                to: s,
                msg: Msg::Leave,
            });
        }
        self.leaving = Some(Some(now));
    }

    // -----------------------------------------------------------------------------------------
    // Messages.

    fn on_msg(&mut self, now: Instant, from: NodeId, msg: Msg, out: &mut Out) {
        if from == self.me.id {
            return;
        }
        // After a stopped cluster was resumed (by us or by its sequencer), its members restart
        // with their stored logs and resume their membership: their hellos do not make them
        // dead (they are removed if they do not resume in time).
        let resuming = matches!(&msg, Msg::Hello { last, .. } if *last > 0)
            && self.phase == Phase::Member
            && ((self.is_seq() && self.resume_epoch == Some(self.epoch()))
                || self.cluster.as_ref().is_some_and(|c| {
                    c.resume && !self.is_seq() && Some(c.sequencer) == self.sequencer()
                }));
        // Liveness: only what a member sends counts (a restarted node has the same id but
        // is not the member any more).
        match &msg {
            Msg::Heartbeat(hb) if hb.member && !self.is_foreign(hb) => {
                self.alive(from, Some(hb.incarnation), now);
                self.confirm(from, hb);
            }
            Msg::Ack { incarnation, .. } => self.alive(from, Some(*incarnation), now),
            Msg::Entries { .. }
            | Msg::VcQuery { .. }
            | Msg::VcReply { .. }
            | Msg::Propose { .. }
            | Msg::SyncReply {
                ballot: Some(_), ..
            } => self.alive(from, None, now),
            Msg::Hello { info, .. } | Msg::Join { info }
                if !resuming
                    && self
                        .members()
                        .iter()
                        .any(|m| m.id == info.id && m.incarnation != info.incarnation) =>
            {
                // The member restarted: its old instance is dead.
                self.last_heard.remove(&info.id);
            }
            _ => {}
        }
        match msg {
            Msg::Hello {
                info,
                last,
                last_hash,
            } => self.on_hello(now, from, info, last, last_hash, out),
            Msg::Heartbeat(hb) => self.on_heartbeat(now, from, hb, out),
            Msg::Join { info } => self.on_join(now, from, info, out),
            Msg::Propose { req, cmd } => self.on_remote_propose(now, from, req, cmd, out),
            Msg::Leave => self.on_remote_leave(now, from, out),
            Msg::Entries {
                ballot,
                commit,
                commit_hash,
                entries,
            } => self.on_entries(now, from, ballot, commit, commit_hash, entries, out),
            Msg::Ack {
                ballot,
                incarnation,
                last,
                applied,
            } => self.on_ack(now, from, ballot, incarnation, last, applied, out),
            Msg::SyncReq { from: f, prev_hash } => self.on_sync_req(from, f, prev_hash, out),
            Msg::SyncReply {
                cluster,
                ballot,
                commit,
                commit_hash,
                entries,
                complete,
            } => self.on_sync_reply(
                now,
                from,
                cluster,
                ballot,
                commit,
                commit_hash,
                entries,
                complete,
                out,
            ),
            Msg::Diverged { at, hash } => self.on_diverged(from, at, hash, out),
            Msg::VcQuery { ballot, from: f } => self.on_vc_query(now, from, ballot, f, out),
            Msg::VcReply {
                ballot,
                accepted,
                commit,
                commit_hash,
                last,
                entries,
                ..
            } => {
                let rep = VcRep {
                    accepted,
                    commit,
                    commit_hash,
                    last,
                    entries,
                };
                self.on_vc_reply(now, from, ballot, rep, out);
            }
            Msg::RecoverForce { cluster } => self.on_force_msg(from, cluster),
        }
    }

    fn on_hello(
        &mut self,
        now: Instant,
        from: NodeId,
        info: MemberInfo,
        last: Seq,
        last_hash: u64,
        out: &mut Out,
    ) {
        if info.id != from {
            tracing::debug!(%from, "hello with another id; ignored");
            return;
        }
        let known = self.hellos.contains_key(&from);
        self.hellos.insert(
            from,
            HelloSeen {
                last,
                last_hash,
                at: now,
            },
        );
        match self.phase {
            Phase::Member => out.v.push(Output::Send {
                to: from,
                msg: self.heartbeat_msg(),
            }),
            Phase::Searching if !known => {
                let (last, _, last_hash) = self.dtip();
                out.v.push(Output::Send {
                    to: from,
                    msg: Msg::Hello {
                        info: self.me.clone(),
                        last,
                        last_hash,
                    },
                });
            }
            _ => {}
        }
    }

    /// A higher ballot exists: promise it, stop sequencing or leading a lower one.
    fn see_ballot(&mut self, b: Ballot, now: Instant) {
        self.max_n = self.max_n.max(b.n);
        if b > self.promised {
            self.promised = b;
            // Give its leader a full timeout before suspecting it: we may have heard of the
            // ballot from someone else.
            let t = self.last_heard.entry(b.leader).or_insert(now);
            *t = (*t).max(now);
            self.leader_heard = Some((b, now));
            if self.seq.is_some() {
                tracing::info!(
                    ballot = b.n,
                    "a higher ballot exists; no longer the sequencer"
                );
            }
            self.seq = None;
            if self.vc.as_ref().is_some_and(|v| v.ballot < b) {
                self.vc = None;
            }
        }
        if self.accepted != self.promised {
            self.sync_due = true;
        }
    }

    /// Whether `hb` comes from a member of another cluster than ours (we being a member).
    fn is_foreign(&self, hb: &Heartbeat) -> bool {
        self.phase == Phase::Member
            && hb.member
            && hb.cluster.is_some()
            && hb.cluster != self.cluster_id()
    }

    fn on_heartbeat(&mut self, now: Instant, from: NodeId, hb: Heartbeat, out: &mut Out) {
        if self.is_foreign(&hb) {
            self.on_foreign(now, from, &hb, out);
            return;
        }
        if hb.member {
            self.moved.remove(&from);
        }
        self.max_n = self.max_n.max(hb.ballot.n);
        if hb.member && hb.sequencer.is_some_and(|s| s != self.me.id) {
            let sequencer = hb.sequencer.unwrap_or(from);
            let newer = self.cluster.as_ref().is_none_or(|c| {
                let stale = now.saturating_duration_since(c.at) > self.cfg.failure_timeout;
                match (c.id, hb.cluster) {
                    (Some(seen), Some(theirs)) if seen != theirs => {
                        // Two clusters of our name: the preferred one (see `preferred`).
                        stale || preferred((hb.data, theirs), (c.data, seen))
                    }
                    _ => hb.ballot >= c.ballot || stale,
                }
            });
            if newer {
                let commit = if sequencer == from { hb.commit } else { 0 };
                let commit = self
                    .cluster
                    .as_ref()
                    .filter(|c| c.sequencer == sequencer && c.id == hb.cluster)
                    .map_or(commit, |c| c.commit.max(commit));
                if self
                    .cluster
                    .as_ref()
                    .is_some_and(|c| c.sequencer != sequencer)
                {
                    self.join_sent = None;
                }
                // Only the sequencer says whether it resumed a stopped cluster.
                let resume = if sequencer == from {
                    hb.resume
                } else {
                    self.cluster
                        .as_ref()
                        .filter(|c| c.sequencer == sequencer && c.id == hb.cluster)
                        .is_some_and(|c| c.resume && c.ballot == hb.ballot)
                };
                self.cluster = Some(ClusterSeen {
                    id: hb.cluster,
                    data: hb.data,
                    sequencer,
                    ballot: hb.ballot,
                    commit,
                    resume,
                    at: now,
                });
            }
        }
        // Committed entries we lack, from our cluster (or the one we join) only.
        let ours = if self.phase == Phase::Member {
            self.cluster_id()
        } else {
            self.cluster.as_ref().and_then(|c| c.id)
        };
        if hb.commit > self.delivered()
            && self.known_commit.is_none_or(|(c, _)| hb.commit > c)
            && self.phase != Phase::Left
            && (ours.is_none() || hb.cluster == ours)
        {
            self.known_commit = Some((hb.commit, from));
        }
        match self.phase {
            Phase::Searching | Phase::Joining => {
                // A sequencer that resumed our stopped cluster: resume our membership once
                // our log is a prefix of its committed log at the same epoch (only
                // application entries missing), else catch up first.
                let (d, _, h) = self.dtip();
                let caught_up =
                    (hb.commit == d && hb.commit_hash == h) || (hb.commit > d && self.verified);
                let resumable = hb.resume
                    && hb.member
                    && hb.sequencer == Some(from)
                    && !self.log.is_empty()
                    && hb.cluster.is_some()
                    && hb.cluster == self.cluster_id()
                    && hb.epoch == self.epoch()
                    && caught_up
                    && self.in_view(self.me.id)
                    && self.in_view(from);
                if resumable {
                    self.resume_member(hb.ballot, from, now, out);
                } else if hb.commit > d
                    && (self.phase == Phase::Joining
                        || self.cluster.as_ref().is_some_and(|c| self.resuming_into(c)))
                {
                    self.sync_due = true;
                }
            }
            Phase::Member => {
                if !self.in_view(from) {
                    // Still useful: its committed entries are committed.
                    self.commit_notice(hb.commit, hb.commit_hash, now, out);
                    return;
                }
                if hb.ballot > self.promised && hb.member {
                    self.see_ballot(hb.ballot, now);
                }
                self.commit_notice(hb.commit, hb.commit_hash, now, out);
                if hb.sequencer == Some(from) && hb.ballot == self.promised {
                    self.leader_heard = Some((hb.ballot, now));
                    if hb.stable > self.stable {
                        self.stable = hb.stable;
                        self.ack_outstanding(out);
                    }
                    if hb.last > self.tip().0 || self.accepted != self.promised {
                        self.sync_due = true;
                    }
                }
                if self.is_seq() {
                    if hb.sequencer == Some(self.me.id) && hb.ballot == self.accepted {
                        // Heartbeats repeat the acks (which may have been lost).
                        let tip = self.tip().0;
                        if let Some(sq) = self.seq.as_mut() {
                            let a = sq.acks.entry(from).or_insert(0);
                            *a = (*a).max(hb.last.min(tip));
                        }
                    }
                    self.note_report(from, hb.incarnation, hb.applied);
                    self.advance_commit(now, out);
                }
            }
            Phase::Left => {}
        }
    }

    /// A member of another cluster of our name: apply the merge rule.
    ///
    /// Ours dissolves into theirs when theirs is [`preferred`] and ours holds no application
    /// entry, committed or pending, so nothing but membership entries is thrown away. Two
    /// clusters with data stay apart (recovering that is the business of an operator).
    fn on_foreign(&mut self, now: Instant, from: NodeId, hb: &Heartbeat, out: &mut Out) {
        let (Some(theirs), Some(mine)) = (hb.cluster, self.cluster_id()) else {
            return;
        };
        self.moved.insert(from, theirs);
        if hb.data && self.has_app {
            if self.warned != Some(theirs) {
                tracing::error!(
                    ours = ?mine,
                    theirs = ?theirs,
                    "another cluster of the same name holds data too: they cannot merge"
                );
                self.warned = Some(theirs);
            }
            return;
        }
        if !preferred((hb.data, theirs), (self.has_app, mine)) {
            // Theirs dissolves into ours (it hears our heartbeats).
            return;
        }
        // Join it through its sequencer, once that works normally.
        let Some(sequencer) = hb.sequencer.filter(|s| *s != self.me.id) else {
            return;
        };
        if self.leaving.is_some() || self.vc.is_some() {
            return;
        }
        if self.pending.iter().any(|e| !is_membership(&e.body)) {
            // Data is about to be committed here: ours will be the preferred one.
            return;
        }
        // A proposal handed to another member may still be ordered by it (then ours holds
        // data): wait for its fate, unless that member moved to another cluster, which it only
        // does without ordering any (its log was empty) and dropping our history.
        let me = self.me.id;
        let handed = self.outstanding.values().any(|p| {
            p.seq.is_none()
                && p.sent
                    .is_some_and(|(_, to)| to != me && !self.moved.contains_key(&to))
        });
        if handed {
            return;
        }
        self.dissolve(now, from, sequencer, hb, theirs, out);
    }

    /// Throws away our (empty) cluster and joins `theirs` through its `sequencer`, from seq 1.
    /// Our proposals were not ordered: they are sent again, with the same ids, to the new
    /// cluster once we are its member.
    fn dissolve(
        &mut self,
        now: Instant,
        from: NodeId,
        sequencer: NodeId,
        hb: &Heartbeat,
        theirs: ClusterId,
        out: &mut Out,
    ) {
        tracing::warn!(
            ours = ?self.cluster_id(),
            theirs = ?theirs,
            "another cluster of the same name is preferred and ours holds no data: joining it"
        );
        self.forget_history(out);
        self.seq = None;
        self.vc = None;
        self.promised = Ballot::ZERO;
        self.accepted = Ballot::ZERO;
        self.stable = 0;
        self.reports.clear();
        self.last_heard.clear();
        self.hellos.clear();
        self.known_commit = None;
        self.leader_heard = None;
        self.resume_epoch = None;
        self.no_quorum = false;
        self.verified = false;
        self.phase = Phase::Joining;
        self.started = now;
        self.cluster = Some(ClusterSeen {
            id: Some(theirs),
            data: hb.data,
            sequencer,
            ballot: hb.ballot,
            commit: if sequencer == from { hb.commit } else { 0 },
            resume: false,
            at: now,
        });
        self.join_sent = None;
        self.sync_due = true;
        self.sync_sent = None;
        for p in self.outstanding.values_mut() {
            p.sent = None;
        }
    }

    fn on_join(&mut self, now: Instant, from: NodeId, info: MemberInfo, out: &mut Out) {
        if info.id != from || !self.can_sequence() {
            return;
        }
        let spec = self.spec_members();
        let pending_join = self
            .pending
            .iter()
            .any(|e| matches!(&e.body, Body::Join(i) if *i == info));
        if pending_join {
            return;
        }
        match spec.iter().find(|m| m.id == info.id) {
            Some(m) if m.incarnation == info.incarnation => {}
            Some(_) => {
                // It restarted: the old instance is gone.
                self.sequence(Body::Fail(info.id), now, out);
                self.last_heard.insert(info.id, now);
                self.sequence(Body::Join(info), now, out);
            }
            None => {
                self.last_heard.insert(info.id, now);
                self.sequence(Body::Join(info), now, out);
            }
        }
    }

    fn can_sequence(&self) -> bool {
        self.seq.as_ref().is_some_and(|s| !s.retiring) && !self.no_quorum
    }

    fn spec_members(&self) -> Vec<MemberInfo> {
        let mut m = self.members().to_vec();
        for e in &self.pending {
            apply_membership(&mut m, &e.body);
        }
        m
    }

    fn window_full(&self) -> bool {
        let bytes: usize = self
            .pending
            .iter()
            .map(|e| match &e.body {
                Body::App { cmd, .. } => cmd.len() + 64,
                _ => 64,
            })
            .sum();
        bytes > WINDOW || self.pending.len() >= WINDOW_ENTRIES
    }

    fn is_dup(&self, origin: NodeId, req: ReqId) -> bool {
        self.seen.contains_key(&(origin, req))
            || self.pending.iter().any(|e| {
                matches!(&e.body, Body::App { origin: o, req: r, .. } if *o == origin && *r == req)
            })
    }

    fn on_remote_propose(
        &mut self,
        now: Instant,
        from: NodeId,
        req: ReqId,
        cmd: Vec<u8>,
        out: &mut Out,
    ) {
        if !self.can_sequence() || cmd.len() > MAX_COMMAND || self.window_full() {
            return;
        }
        if !self.spec_members().iter().any(|m| m.id == from) || self.is_dup(from, req) {
            return;
        }
        self.sequence(
            Body::App {
                origin: from,
                req,
                cmd,
            },
            now,
            out,
        );
    }

    fn on_remote_leave(&mut self, now: Instant, from: NodeId, out: &mut Out) {
        if !self.can_sequence() {
            return;
        }
        if self.spec_members().iter().any(|m| m.id == from) {
            self.sequence(Body::Leave(from), now, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_entries(
        &mut self,
        now: Instant,
        from: NodeId,
        ballot: Ballot,
        commit: Seq,
        commit_hash: u64,
        entries: Vec<Entry>,
        out: &mut Out,
    ) {
        if self.phase != Phase::Member {
            if self.phase == Phase::Joining && commit > self.delivered() {
                if let Some(c) = self.cluster.as_mut().filter(|c| c.sequencer == from) {
                    c.commit = c.commit.max(commit);
                }
                self.sync_due = true;
            }
            return;
        }
        if from != ballot.leader || !self.in_view(from) || ballot < self.promised {
            return;
        }
        if ballot > self.promised {
            self.see_ballot(ballot, now);
        }
        if self.is_seq() {
            return;
        }
        if self.accepted == ballot {
            let mut added = false;
            for e in entries {
                let tip = self.tip();
                if e.seq <= tip.0 {
                    continue;
                }
                if e.seq == tip.0 + 1 && follows(tip, &e) {
                    self.pending.push(e);
                    added = true;
                } else {
                    self.sync_due = true;
                    break;
                }
            }
            if added {
                self.send_ack(out);
            }
        } else {
            self.sync_due = true;
        }
        self.commit_notice(commit, commit_hash, now, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_ack(
        &mut self,
        now: Instant,
        from: NodeId,
        ballot: Ballot,
        incarnation: u64,
        last: Seq,
        applied: Seq,
        out: &mut Out,
    ) {
        if !self.is_seq() || ballot != self.accepted || !self.in_view(from) {
            return;
        }
        let tip = self.tip().0;
        if let Some(sq) = self.seq.as_mut() {
            let a = sq.acks.entry(from).or_insert(0);
            *a = (*a).max(last.min(tip));
        }
        self.note_report(from, incarnation, applied);
        self.advance_commit(now, out);
    }

    fn note_report(&mut self, from: NodeId, incarnation: u64, applied: Seq) {
        let Some(m) = self.members().iter().find(|m| m.id == from) else {
            return;
        };
        if m.incarnation != incarnation {
            return;
        }
        let r = self.reports.entry(from).or_insert((incarnation, 0));
        if r.0 != incarnation {
            *r = (incarnation, 0);
        }
        r.1 = r.1.max(applied);
    }

    fn on_sync_req(&mut self, from: NodeId, f: Seq, prev_hash: u64, out: &mut Out) {
        let f = f.max(1);
        let prev = f - 1;
        let d = self.delivered();
        let serve_pending = self.is_seq();
        let top = if serve_pending { self.tip().0 } else { d };
        if prev > top {
            if d > 0 && prev > d && !self.in_view(from) {
                // A node outside the view holds more than we committed: its log went on
                // where ours did not (a forced recovery went on without it). Show it our
                // last committed entry, so that it resets if its own differs.
                if let Some(e) = self.entry(d) {
                    out.v.push(Output::Send {
                        to: from,
                        msg: Msg::Diverged {
                            at: d,
                            hash: e.hash,
                        },
                    });
                }
            }
            return;
        }
        if prev > 0 {
            let Some(e) = self.entry(prev) else { return };
            if e.hash != prev_hash {
                if prev <= d {
                    out.v.push(Output::Send {
                        to: from,
                        msg: Msg::Diverged {
                            at: prev,
                            hash: e.hash,
                        },
                    });
                }
                return;
            }
        }
        let Some(start) = idx(f) else { return };
        let mut all: Vec<Entry> = Vec::new();
        if start < self.log.len() {
            all.extend_from_slice(&self.log[start..]);
            if serve_pending {
                all.extend_from_slice(&self.pending);
            }
        } else if serve_pending {
            let ps = start - self.log.len();
            if let Some(p) = self.pending.get(ps..) {
                all.extend_from_slice(p);
            }
        }
        let entries = first_page(&all, PAGE);
        let complete = entries.len() == all.len();
        let (commit, _, commit_hash) = self.dtip();
        out.v.push(Output::Send {
            to: from,
            msg: Msg::SyncReply {
                cluster: self.cluster_id(),
                ballot: serve_pending.then_some(self.accepted),
                commit,
                commit_hash,
                entries,
                complete,
            },
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn on_sync_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        cluster: Option<ClusterId>,
        ballot: Option<Ballot>,
        commit: Seq,
        commit_hash: u64,
        entries: Vec<Entry>,
        complete: bool,
        out: &mut Out,
    ) {
        if self.phase == Phase::Left {
            return;
        }
        if self.phase != Phase::Member
            && self
                .cluster
                .as_ref()
                .and_then(|c| c.id)
                .is_some_and(|id| cluster != Some(id))
        {
            // A (late) reply of another cluster than the one we are joining.
            return;
        }
        let before = self.delivered();
        // The committed part.
        for e in entries.iter().filter(|e| e.seq <= commit) {
            if !self.push_committed(e, now, out) {
                break;
            }
        }
        if self.phase != Phase::Member && self.delivered() > before {
            // Its entries chained onto ours: our log is a prefix of its committed log.
            self.verified = true;
        }
        if let Some(b) = ballot {
            if self.phase == Phase::Member && from == b.leader && self.in_view(from) {
                self.max_n = self.max_n.max(b.n);
                if b >= self.promised && !self.is_seq() {
                    if b > self.promised {
                        self.see_ballot(b, now);
                    }
                    if b == self.accepted {
                        // Same sequencer: its entries only extend ours (a late reply must
                        // not take back entries we already acknowledged).
                        self.extend(&entries);
                        if complete {
                            self.sync_due = false;
                            self.sync_sent = None;
                        }
                        self.send_ack(out);
                    } else if complete && self.delivered() >= commit && self.adopt(&entries, commit)
                    {
                        self.accepted = b;
                        self.sync_due = false;
                        self.sync_sent = None;
                        self.send_ack(out);
                    }
                }
            }
        }
        if self.phase == Phase::Member {
            self.commit_notice(commit, commit_hash, now, out);
        }
        let more = commit > self.delivered()
            || (self.phase == Phase::Member && self.accepted != self.promised);
        if more {
            self.sync_due = true;
            if self.delivered() > before {
                // Progress: ask for the next page at once.
                self.sync_sent = None;
            }
        } else if self.phase != Phase::Member {
            self.sync_due = false;
        }
    }

    /// Appends the entries that follow our last one.
    fn extend(&mut self, entries: &[Entry]) {
        for e in entries {
            let tip = self.tip();
            if e.seq <= tip.0 {
                continue;
            }
            if !follows(tip, e) {
                break;
            }
            self.pending.push(e.clone());
        }
    }

    /// Takes the entries after `commit` as our pending tail; false if they do not chain.
    fn adopt(&mut self, entries: &[Entry], commit: Seq) -> bool {
        let d = self.delivered();
        let mut tail = Vec::new();
        let mut prev = self.dtip();
        for e in entries.iter().filter(|e| e.seq > commit) {
            if e.seq <= d {
                if self.entry(e.seq).is_some_and(|m| m.hash == e.hash) {
                    continue;
                }
                return false;
            }
            if !follows(prev, e) {
                return false;
            }
            prev = (e.seq, e.epoch, e.hash);
            tail.push(e.clone());
        }
        if let Some(first) = entries.iter().find(|e| e.seq > d) {
            if first.seq != d + 1 {
                return false;
            }
        }
        self.pending = tail;
        true
    }

    fn on_diverged(&mut self, from: NodeId, at: Seq, hash: u64, out: &mut Out) {
        if self.phase == Phase::Member || self.phase == Phase::Left {
            tracing::warn!(%from, at, "a member's log diverges from ours; ignored");
            return;
        }
        let Some(e) = self.entry(at) else { return };
        if e.hash == hash || at > self.delivered() {
            return;
        }
        tracing::warn!(at, "our stored log diverges from the cluster's: resetting");
        self.verified = false;
        self.forget_history(out);
        self.sync_due = true;
        self.sync_sent = None;
    }

    /// Throws away the history (log, views, dedup, pending entries) and tells the application
    /// to do the same; deliveries start again from seq 1.
    fn forget_history(&mut self, out: &mut Out) {
        out.v.push(Output::Reset);
        self.log.clear();
        self.views.clear();
        self.view_seq = 0;
        self.confirmed.clear();
        self.seen.clear();
        self.pending.clear();
        self.has_app = false;
        self.applied = 0;
    }

    fn on_vc_query(&mut self, now: Instant, from: NodeId, ballot: Ballot, f: Seq, out: &mut Out) {
        if self.phase != Phase::Member || from != ballot.leader {
            return;
        }
        if !self.in_view(from) {
            // It is not a member any more: our heartbeat shows it the newer history.
            out.v.push(Output::Send {
                to: from,
                msg: self.heartbeat_msg(),
            });
            return;
        }
        if ballot < self.promised {
            // Tell it about the higher ballot.
            out.v.push(Output::Send {
                to: from,
                msg: self.heartbeat_msg(),
            });
            return;
        }
        self.see_ballot(ballot, now);
        let Some(start) = idx(f.max(1)) else { return };
        let mut all: Vec<Entry> = Vec::new();
        if start < self.log.len() {
            all.extend_from_slice(&self.log[start..]);
            all.extend_from_slice(&self.pending);
        } else if let Some(p) = self.pending.get(start - self.log.len()..) {
            all.extend_from_slice(p);
        }
        let entries = first_page(&all, PAGE);
        let complete = entries.len() == all.len();
        let (commit, _, commit_hash) = self.dtip();
        let (last, _, last_hash) = self.tip();
        out.v.push(Output::Send {
            to: from,
            msg: Msg::VcReply {
                ballot,
                accepted: self.accepted,
                commit,
                commit_hash,
                last,
                last_hash,
                entries,
                complete,
            },
        });
    }

    fn on_vc_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        ballot: Ballot,
        rep: VcRep,
        out: &mut Out,
    ) {
        if !self.in_view(from) {
            return;
        }
        let Some(vc) = self.vc.as_mut() else { return };
        if vc.ballot != ballot {
            return;
        }
        match vc.replies.get_mut(&from) {
            None => {
                vc.replies.insert(from, rep);
            }
            Some(old) => {
                // A further page (from the best reply).
                for e in rep.entries {
                    let next = old.entries.last().map(|l| l.seq.saturating_add(1));
                    if next.is_none_or(|n| n == e.seq) {
                        old.entries.push(e);
                    }
                }
            }
        }
        self.vc_progress(now, out);
    }

    // -----------------------------------------------------------------------------------------
    // Sequencer.

    fn become_sequencer(&mut self, ballot: Ballot, _now: Instant, out: &mut Out) {
        self.promised = ballot;
        self.accepted = ballot;
        self.max_n = self.max_n.max(ballot.n);
        self.seq = Some(Sequencer::default());
        self.vc = None;
        self.sync_due = false;
        self.no_quorum = false;
        out.hb_now = true;
        // Announce the new ballot with our tail so that the members can adopt it.
        if !self.members().is_empty() {
            let (commit, _, commit_hash) = self.dtip();
            let entries = first_page(&self.pending, PAGE);
            let complete = entries.len() == self.pending.len();
            let msg = Msg::SyncReply {
                cluster: self.cluster_id(),
                ballot: Some(ballot),
                commit,
                commit_hash,
                entries,
                complete,
            };
            for m in self.members() {
                if m.id != self.me.id {
                    out.v.push(Output::Send {
                        to: m.id,
                        msg: msg.clone(),
                    });
                }
            }
        }
    }

    fn sequence(&mut self, body: Body, now: Instant, out: &mut Out) {
        if is_membership(&body) && self.resume_epoch.is_some() {
            self.resume_epoch = None;
        }
        let e = make_entry(self.tip(), body);
        self.pending.push(e.clone());
        out.new_entries.push(e);
        self.advance_commit(now, out);
    }

    fn advance_commit(&mut self, now: Instant, out: &mut Out) {
        while let (Some(sq), Some(e)) = (self.seq.as_ref(), self.pending.first()) {
            let me = self.me.id;
            let members = self.members();
            let ok = members.is_empty()
                || quorum(members, |id| {
                    id == me || sq.acks.get(&id).is_some_and(|a| *a >= e.seq)
                });
            if !ok {
                break;
            }
            let e = self.pending.remove(0);
            self.deliver(e, now, out);
            out.hb_now = true;
        }
        self.update_stable(now, out);
    }

    fn update_stable(&mut self, _now: Instant, out: &mut Out) {
        if !self.is_seq() {
            return;
        }
        let mut s = Seq::MAX;
        for m in self.members() {
            let a = if m.id == self.me.id {
                self.applied
            } else {
                self.reports
                    .get(&m.id)
                    .filter(|r| r.0 == m.incarnation)
                    .map_or(0, |r| r.1)
            };
            s = s.min(a);
        }
        if s != Seq::MAX && s > self.stable {
            self.stable = s;
            out.hb_now = true;
            self.ack_outstanding(out);
        }
    }

    fn ack_outstanding(&mut self, out: &mut Out) {
        let d = self.delivered();
        let stable = self.stable;
        let done: Vec<(ReqId, Seq)> = self
            .outstanding
            .iter()
            .filter_map(|(r, p)| p.seq.filter(|s| *s <= stable && *s <= d).map(|s| (*r, s)))
            .collect();
        for (req, seq) in done {
            self.outstanding.remove(&req);
            out.v.push(Output::Acked { req, seq });
        }
    }

    fn send_ack(&mut self, out: &mut Out) {
        if self.phase != Phase::Member || self.is_seq() || self.accepted != self.promised {
            return;
        }
        if self.accepted.n == 0 {
            return;
        }
        out.v.push(Output::Send {
            to: self.accepted.leader,
            msg: Msg::Ack {
                ballot: self.accepted,
                incarnation: self.me.incarnation,
                last: self.tip().0,
                applied: self.applied,
            },
        });
    }

    fn send_proposals(&mut self, now: Instant, out: &mut Out) {
        if self.phase != Phase::Member || self.no_quorum {
            return;
        }
        let Some(target) = self.sequencer() else {
            return;
        };
        let retry = self.prop_retry();
        let due: Vec<ReqId> = self
            .outstanding
            .iter()
            .filter(|(_, p)| {
                p.seq.is_none()
                    && p.sent.is_none_or(|(t, to)| {
                        to != target || now.saturating_duration_since(t) >= retry
                    })
            })
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            let Some(p) = self.outstanding.get_mut(&req) else {
                continue;
            };
            p.sent = Some((now, target));
            let cmd = p.cmd.clone();
            if target == self.me.id {
                let me = self.me.id;
                if self.can_sequence() && !self.window_full() && !self.is_dup(me, req) {
                    self.sequence(
                        Body::App {
                            origin: me,
                            req,
                            cmd,
                        },
                        now,
                        out,
                    );
                }
            } else {
                out.v.push(Output::Send {
                    to: target,
                    msg: Msg::Propose { req, cmd },
                });
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // View change.

    fn start_vc(&mut self, now: Instant, out: &mut Out) {
        let n = self
            .max_n
            .max(self.promised.n)
            .max(self.accepted.n)
            .saturating_add(1);
        let ballot = Ballot {
            n,
            leader: self.me.id,
        };
        tracing::info!(ballot = n, "starting a view change");
        self.promised = ballot;
        self.max_n = n;
        self.seq = None;
        let (commit, _, commit_hash) = self.dtip();
        let (last, _, _) = self.tip();
        let mut replies = BTreeMap::new();
        replies.insert(
            self.me.id,
            VcRep {
                accepted: self.accepted,
                commit,
                commit_hash,
                last,
                entries: self.pending.clone(),
            },
        );
        self.vc = Some(ViewChange {
            ballot,
            started: now,
            sent: now,
            replies,
            best: None,
        });
        let from = self.delivered() + 1;
        for m in self.members() {
            if m.id != self.me.id {
                out.v.push(Output::Send {
                    to: m.id,
                    msg: Msg::VcQuery { ballot, from },
                });
            }
        }
        self.vc_progress(now, out);
    }

    fn vc_progress(&mut self, now: Instant, out: &mut Out) {
        let Some(vc) = self.vc.as_ref() else { return };
        let ballot = vc.ballot;
        let resend = now.saturating_duration_since(vc.sent) >= self.cfg.heartbeat;
        if now.saturating_duration_since(vc.started) > self.cfg.failure_timeout {
            tracing::info!(ballot = ballot.n, "view change timed out");
            self.vc = None;
            return;
        }
        let best = match vc.best {
            Some(b) => b,
            None => {
                let members = self.members().to_vec();
                let replied = |id: NodeId| vc.replies.contains_key(&id);
                let enough = quorum(&members, replied);
                let all = members
                    .iter()
                    .all(|m| replied(m.id) || self.suspected(m.id, now));
                let waited = now.saturating_duration_since(vc.started) >= self.cfg.heartbeat * 4;
                if !enough || (!all && !waited) {
                    if resend {
                        let from = self.delivered() + 1;
                        for m in &members {
                            if !replied(m.id) {
                                out.v.push(Output::Send {
                                    to: m.id,
                                    msg: Msg::VcQuery { ballot, from },
                                });
                            }
                        }
                        if let Some(vc) = self.vc.as_mut() {
                            vc.sent = now;
                        }
                    }
                    return;
                }
                let me = self.me.id;
                let Some(best) = vc
                    .replies
                    .iter()
                    .max_by_key(|(id, r)| (r.accepted, r.last, **id == me, std::cmp::Reverse(**id)))
                    .map(|(id, _)| *id)
                else {
                    return;
                };
                if let Some(vc) = self.vc.as_mut() {
                    vc.best = Some(best);
                }
                best
            }
        };
        let Some(vc) = self.vc.as_ref() else { return };
        let Some(rep) = vc.replies.get(&best) else {
            return;
        };
        // Build our tail from the best log.
        let d = self.delivered();
        let mut prev = self.dtip();
        let mut tail = Vec::new();
        let mut broken = false;
        for e in &rep.entries {
            if e.seq <= d {
                continue;
            }
            if !follows(prev, e) {
                broken = true;
                break;
            }
            prev = (e.seq, e.epoch, e.hash);
            tail.push(e.clone());
        }
        if broken {
            tracing::warn!(%best, "view change: the best log does not follow ours");
            self.vc = None;
            return;
        }
        if prev.0 >= rep.last {
            let commits: Vec<(Seq, u64)> = vc
                .replies
                .values()
                .map(|r| (r.commit, r.commit_hash))
                .collect();
            self.install(ballot, tail, &commits, now, out);
        } else if resend || rep.entries.last().is_some_and(|e| e.seq < prev.0) {
            out.v.push(Output::Send {
                to: best,
                msg: Msg::VcQuery {
                    ballot,
                    from: prev.0 + 1,
                },
            });
            if let Some(vc) = self.vc.as_mut() {
                vc.sent = now;
            }
        }
    }

    fn install(
        &mut self,
        ballot: Ballot,
        tail: Vec<Entry>,
        commits: &[(Seq, u64)],
        now: Instant,
        out: &mut Out,
    ) {
        tracing::info!(
            ballot = ballot.n,
            last = tail.last().map_or(self.delivered(), |e| e.seq),
            "view change done; now the sequencer"
        );
        self.pending = tail;
        self.vc = None;
        for (c, h) in commits {
            self.commit_notice(*c, *h, now, out);
        }
        if self.phase != Phase::Member {
            return;
        }
        self.become_sequencer(ballot, now, out);
        // The sequencer is the oldest member: remove the older ones.
        let spec = self.spec_members();
        let older: Vec<NodeId> = if spec.iter().any(|m| m.id == self.me.id) {
            spec.iter()
                .take_while(|m| m.id != self.me.id)
                .map(|m| m.id)
                .collect()
        } else {
            // The adopted log removes us: only commit it.
            if let Some(sq) = self.seq.as_mut() {
                sq.retiring = true;
            }
            Vec::new()
        };
        for id in older {
            self.sequence(Body::Fail(id), now, out);
        }
        // Whatever the new members hold is re-acked under the new ballot.
        out.new_entries.extend(self.pending.iter().cloned());
    }

    // -----------------------------------------------------------------------------------------
    // Timers and output.

    fn timers(&mut self, now: Instant, out: &mut Out) {
        match self.phase {
            Phase::Searching => self.searching_timers(now, out),
            Phase::Joining => self.joining_timers(now, out),
            Phase::Member => self.member_timers(now, out),
            Phase::Left => {}
        }
        if self.phase != Phase::Searching {
            self.force = None;
        }
        let catching_up = self.phase == Phase::Searching
            && self.cluster.as_ref().is_some_and(|c| self.resuming_into(c));
        if self.phase == Phase::Member || self.phase == Phase::Joining || catching_up {
            self.sync_timers(now, out);
        }
        // Queued proposals while without quorum.
        if self.no_quorum {
            let ft = self.cfg.failure_timeout;
            let refuse: Vec<ReqId> = self
                .outstanding
                .iter()
                .filter(|(_, p)| {
                    p.sent.is_none()
                        && p.seq.is_none()
                        && now.saturating_duration_since(p.since) >= ft
                })
                .map(|(r, _)| *r)
                .collect();
            for req in refuse {
                self.outstanding.remove(&req);
                out.v.push(Output::Refused {
                    req,
                    why: Refusal::NoQuorum,
                });
            }
        }
    }

    fn member_timers(&mut self, now: Instant, out: &mut Out) {
        let had = !self.no_quorum;
        self.no_quorum = !self.has_quorum(now);
        if had && self.no_quorum {
            tracing::warn!("no quorum: ordering stops");
        }
        if self
            .last_hb
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.heartbeat)
        {
            out.hb_now = true;
        }
        if self.is_seq() {
            if self.can_sequence() {
                let suspects: Vec<NodeId> = self
                    .spec_members()
                    .iter()
                    .filter(|m| self.suspected(m.id, now))
                    .map(|m| m.id)
                    .collect();
                for id in suspects {
                    tracing::info!(%id, "member suspected; sequencing its failure");
                    self.sequence(Body::Fail(id), now, out);
                }
            }
        } else if self.vc.is_some() {
            self.vc_progress(now, out);
        } else if !self.no_quorum {
            let leader = if self.promised.n > 0 {
                self.promised.leader
            } else {
                self.members().first().map_or(self.me.id, |m| m.id)
            };
            let acting = self.leader_heard.is_some_and(|(b, t)| {
                b == self.promised && now.saturating_duration_since(t) <= self.cfg.failure_timeout
            });
            let gone = leader == self.me.id
                || !self.in_view(leader)
                || self.suspected(leader, now)
                || (self.promised.n > 0 && !acting);
            if gone {
                let candidate = self
                    .members()
                    .iter()
                    .find(|m| m.id == self.me.id || (m.id != leader && !self.suspected(m.id, now)))
                    .map(|m| m.id);
                if candidate == Some(self.me.id) {
                    self.start_vc(now, out);
                }
            }
        }
        self.leave_timers(now, out);
        self.send_proposals(now, out);
    }

    fn sync_timers(&mut self, now: Instant, out: &mut Out) {
        if self
            .known_commit
            .is_some_and(|(c, _)| c <= self.delivered())
        {
            self.known_commit = None;
        }
        if self
            .sync_sent
            .is_some_and(|t| now.saturating_duration_since(t) < self.retry())
        {
            return;
        }
        let to = if let Some((_, who)) = self.known_commit {
            // Committed entries we lack: anyone who has them serves them.
            who
        } else {
            if !self.sync_due || self.is_seq() || self.vc.is_some() {
                return;
            }
            let Some(to) = self.sequencer().filter(|s| *s != self.me.id) else {
                return;
            };
            to
        };
        let (d, _, h) = self.dtip();
        out.v.push(Output::Send {
            to,
            msg: Msg::SyncReq {
                from: d + 1,
                prev_hash: h,
            },
        });
        self.sync_sent = Some(now);
    }

    fn flush(&mut self, now: Instant, out: &mut Out) {
        if !out.new_entries.is_empty() {
            if self.is_seq() {
                let (commit, _, commit_hash) = self.dtip();
                let fresh: Vec<Entry> = out
                    .new_entries
                    .drain(..)
                    .filter(|e| e.seq > commit)
                    .collect();
                for page in pages(&fresh, PAGE) {
                    let msg = Msg::Entries {
                        ballot: self.accepted,
                        commit,
                        commit_hash,
                        entries: page,
                    };
                    debug_assert!(codec::to_bytes(&msg, MAX_BROADCAST as u64).is_ok());
                    out.v.push(Output::Broadcast(msg));
                }
            }
            out.new_entries.clear();
        }
        if out.hb_now && self.phase != Phase::Searching {
            self.beat += 1;
            let keep = self.cfg.failure_timeout * 2;
            while self
                .beats_sent
                .front()
                .is_some_and(|(_, t)| now.saturating_duration_since(*t) > keep)
            {
                self.beats_sent.pop_front();
            }
            self.beats_sent.push_back((self.beat, now));
            out.v.push(Output::Broadcast(self.heartbeat_msg()));
            self.last_hb = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(b: u8) -> MemberInfo {
        MemberInfo {
            id: NodeId([b; 16]),
            data_addrs: vec![],
            capacity: 1,
            incarnation: u64::from(b) * 1000,
        }
    }

    fn app(n: u64, len: usize) -> Body {
        Body::App {
            origin: NodeId([1; 16]),
            req: ReqId { incarnation: 1, n },
            cmd: vec![7; len],
        }
    }

    #[test]
    fn entries_chain_and_hash_is_deterministic() {
        let a = make_entry((0, 0, 0), Body::Join(info(1)));
        let b = make_entry(tip_of(Some(&a)), app(1, 3));
        assert_eq!((a.seq, a.epoch, b.seq, b.epoch), (1, 1, 2, 1));
        assert!(follows((0, 0, 0), &a));
        assert!(follows(tip_of(Some(&a)), &b));
        assert!(!follows((0, 0, 0), &b));
        let mut bad = b.clone();
        bad.body = app(2, 3);
        assert!(!follows(tip_of(Some(&a)), &bad));
        assert_eq!(
            entry_hash(5, 1, 1, &app(1, 3)),
            entry_hash(5, 1, 1, &app(1, 3))
        );
        assert_ne!(
            entry_hash(5, 1, 1, &app(1, 3)),
            entry_hash(6, 1, 1, &app(1, 3))
        );
    }

    #[test]
    fn quorum_is_majority_or_half_with_the_oldest() {
        let m: Vec<MemberInfo> = (1..=4).map(info).collect();
        let ids = |s: &[u8]| s.iter().map(|b| NodeId([*b; 16])).collect::<Vec<_>>();
        let q = |s: &[u8]| {
            let s = ids(s);
            quorum(&m, |id| s.contains(&id))
        };
        assert!(q(&[1, 2, 3]));
        assert!(q(&[1, 2]));
        assert!(!q(&[3, 4]));
        assert!(!q(&[1]));
        assert!(!quorum(&[], |_| true));
        let three: Vec<MemberInfo> = (1..=3).map(info).collect();
        assert!(quorum(&three, |id| id != NodeId([1; 16])));
        assert!(!quorum(&three, |id| id == NodeId([1; 16])));
    }

    #[test]
    fn the_merge_rule_never_prefers_both_ways() {
        let ids: Vec<ClusterId> = [(1u8, 9u64), (1, 3), (2, 1), (3, 0)]
            .iter()
            .map(|(f, h)| ClusterId {
                founder: NodeId([*f; 16]),
                hash: *h,
            })
            .collect();
        for a in &ids {
            for b in &ids {
                for da in [false, true] {
                    for db in [false, true] {
                        let ab = preferred((da, *a), (db, *b));
                        let ba = preferred((db, *b), (da, *a));
                        assert!(!(ab && ba));
                        if a != b && da == db {
                            assert!(ab || ba, "distinct clusters are ordered");
                        }
                    }
                }
            }
        }
        // Data wins over a lower founder.
        assert!(preferred((true, ids[3]), (false, ids[0])));
        let first = make_entry((0, 0, 0), Body::Join(info(7)));
        assert_eq!(ClusterId::of(&first).founder, NodeId([7; 16]));
    }

    #[test]
    fn pages_stay_under_the_broadcast_limit() {
        let mut prev = (0, 0, 0);
        let mut es = Vec::new();
        for n in 0..40 {
            let e = make_entry(prev, app(n, 10_000));
            prev = tip_of(Some(&e));
            es.push(e);
        }
        let ps = pages(&es, PAGE);
        assert!(ps.len() > 1);
        assert_eq!(ps.iter().map(Vec::len).sum::<usize>(), 40);
        for p in ps {
            let msg = Msg::Entries {
                ballot: Ballot::ZERO,
                commit: 0,
                commit_hash: 0,
                entries: p,
            };
            assert!(codec::to_bytes(&msg, MAX_BROADCAST as u64).is_ok());
        }
        assert_eq!(first_page(&es, PAGE).len(), pages(&es, PAGE)[0].len());
    }

    #[test]
    fn membership_views_follow_the_log() {
        let mut m = vec![];
        apply_membership(&mut m, &Body::Join(info(1)));
        apply_membership(&mut m, &Body::Join(info(2)));
        apply_membership(&mut m, &Body::Fail(NodeId([1; 16])));
        assert_eq!(m, vec![info(2)]);
        apply_membership(&mut m, &Body::Leave(NodeId([9; 16])));
        assert_eq!(m.len(), 1);
    }

    fn cfg() -> Config {
        Config {
            heartbeat: Duration::from_millis(50),
            failure_timeout: Duration::from_millis(500),
            discovery_window: Duration::from_millis(300),
        }
    }

    #[test]
    fn a_single_node_orders_and_acks_its_proposals() {
        let t0 = Instant::now();
        let mut n = OrderNode::new(info(1), cfg(), vec![], t0);
        assert_eq!(n.status(), Status::Searching);
        let out = n.bootstrap(t0);
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::ViewChanged(v) if v.members.len() == 1)));
        assert_eq!(n.status(), Status::Member);
        assert_eq!(n.delivered(), 1);
        let req = ReqId {
            incarnation: 1000,
            n: 1,
        };
        let out = n.handle(
            t0,
            Input::Propose {
                req,
                cmd: b"x".to_vec(),
            },
        );
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Deliver(e) if e.seq == 2)));
        assert!(!out.iter().any(|o| matches!(o, Output::Acked { .. })));
        let out = n.handle(t0, Input::Applied { seq: 2 });
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Acked { req: r, seq: 2 } if *r == req)));
        // A duplicate of the same id is not ordered again.
        let out = n.handle(
            t0,
            Input::Propose {
                req,
                cmd: b"x".to_vec(),
            },
        );
        assert!(!out.iter().any(|o| matches!(o, Output::Deliver(_))));
        let big = n.handle(
            t0,
            Input::Propose {
                req: ReqId {
                    incarnation: 1000,
                    n: 2,
                },
                cmd: vec![0; MAX_COMMAND + 1],
            },
        );
        assert!(big.iter().any(|o| matches!(
            o,
            Output::Refused {
                why: Refusal::TooLarge,
                ..
            }
        )));
        assert_eq!(n.epoch_log().len(), 1);
    }

    #[test]
    fn a_lone_searching_node_forms_a_cluster_after_the_window() {
        let t0 = Instant::now();
        let mut n = OrderNode::new(info(1), cfg(), vec![], t0);
        let out = n.handle(t0, Input::Tick);
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Broadcast(Msg::Hello { .. }))));
        assert_eq!(n.status(), Status::Searching);
        n.handle(t0 + Duration::from_millis(310), Input::Tick);
        assert_eq!(n.status(), Status::Member);
        assert_eq!(n.view().map(|v| v.epoch), Some(1));
    }

    #[test]
    fn the_lowest_searching_node_waits_for_nobody_and_others_wait_for_it() {
        let t0 = Instant::now();
        let mut hi = OrderNode::new(info(9), cfg(), vec![], t0);
        let hello = Msg::Hello {
            info: info(2),
            last: 0,
            last_hash: 0,
        };
        hi.handle(
            t0,
            Input::Recv {
                from: NodeId([2; 16]),
                msg: hello,
            },
        );
        hi.handle(t0 + Duration::from_millis(310), Input::Tick);
        assert_eq!(hi.status(), Status::Searching);
    }

    #[test]
    fn hostile_messages_are_ignored() {
        let t0 = Instant::now();
        let mut n = OrderNode::new(info(1), cfg(), vec![], t0);
        n.bootstrap(t0);
        let other = NodeId([5; 16]);
        let bogus = make_entry((7, 3, 99), app(1, 4));
        let msgs = vec![
            Msg::Entries {
                ballot: Ballot {
                    n: 99,
                    leader: other,
                },
                commit: 1000,
                commit_hash: 1,
                entries: vec![bogus.clone()],
            },
            Msg::SyncReply {
                cluster: None,
                ballot: Some(Ballot {
                    n: 99,
                    leader: other,
                }),
                commit: 9,
                commit_hash: 3,
                entries: vec![bogus.clone()],
                complete: true,
            },
            Msg::SyncReq {
                from: u64::MAX,
                prev_hash: 0,
            },
            Msg::SyncReq {
                from: 0,
                prev_hash: 0,
            },
            Msg::VcQuery {
                ballot: Ballot {
                    n: u64::MAX,
                    leader: other,
                },
                from: 0,
            },
            Msg::Diverged { at: 1, hash: 0 },
            Msg::Ack {
                ballot: Ballot::ZERO,
                incarnation: 0,
                last: u64::MAX,
                applied: u64::MAX,
            },
            Msg::Propose {
                req: ReqId {
                    incarnation: 0,
                    n: 0,
                },
                cmd: vec![],
            },
        ];
        for msg in msgs {
            n.handle(t0, Input::Recv { from: other, msg });
        }
        assert_eq!(n.delivered(), 1);
        assert_eq!(n.status(), Status::Member);
        assert!(n.seq.is_some());

        // Extreme numbers do not overflow.
        let mut fresh = OrderNode::new(info(2), cfg(), vec![], t0);
        let hb = Heartbeat {
            incarnation: 0,
            ballot: Ballot {
                n: u64::MAX,
                leader: other,
            },
            sequencer: None,
            member: false,
            epoch: u64::MAX,
            commit: u64::MAX,
            commit_hash: 0,
            last: u64::MAX,
            applied: u64::MAX,
            stable: u64::MAX,
            resume: true,
            cluster: None,
            data: false,
            beat: u64::MAX,
            echo: vec![(NodeId([2; 16]), 0, u64::MAX)],
        };
        fresh.handle(
            t0,
            Input::Recv {
                from: other,
                msg: Msg::Heartbeat(hb),
            },
        );
        fresh.handle(t0 + Duration::from_secs(5), Input::Tick);
        assert_eq!(fresh.status(), Status::Member);
    }

    #[test]
    fn messages_round_trip_through_the_codec() {
        let m = Msg::Heartbeat(Heartbeat {
            incarnation: 1,
            ballot: Ballot {
                n: 3,
                leader: NodeId([4; 16]),
            },
            sequencer: Some(NodeId([4; 16])),
            member: true,
            epoch: 2,
            commit: 9,
            commit_hash: 77,
            last: 10,
            applied: 8,
            stable: 7,
            resume: false,
            cluster: Some(ClusterId {
                founder: NodeId([4; 16]),
                hash: 5,
            }),
            data: true,
            beat: 12,
            echo: vec![(NodeId([5; 16]), 3, 11)],
        });
        let b = codec::to_bytes(&m, 1 << 16).unwrap();
        assert_eq!(codec::from_bytes::<Msg>(&b, 1 << 16).unwrap(), m);
        for len in 0..b.len() {
            assert!(codec::from_bytes::<Msg>(&b[..len], 1 << 16).is_err());
        }
    }
}
