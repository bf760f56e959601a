//! The libp2p driver that runs an [`OrderNode`](crate::order::OrderNode) on the network (see `docs/CLUSTER.md`).
//!
//! One tokio task owns the [`libp2p::Swarm`] and the machine. It ticks the machine every
//! [`TICK`], feeds it what arrives, and executes what it outputs:
//!
//! * `Broadcast` → gossipsub, topic `sheepfs/<cluster>/order` (messages carry their author but
//!   no signature: noise authenticates the connections, see the comment in `driver.rs`);
//! * `Send` → a request-response stream (`/sheepfs/<cluster>/order/1`) to the peer of that node;
//! * `Deliver` → appended to `log_dir/log` and fdatasync'ed, then handed to the application
//!   ([`Delivery::Entry`]); `Reset` → the log is emptied and [`Delivery::Reset`] sent;
//! * `Acked` / `Refused` → the waiting [`Cluster::propose`] returns.
//!
//! Peers: `--peer` addresses are dialled (with backoff while not connected), mDNS finds the
//! others, and every node broadcasts its listen addresses so that all members end up connected
//! to all. Identify carries the cluster name (`/sheepfs/<cluster>/1`, peers of another name are
//! disconnected) and the node id (`sheepfs/<node id>`): libp2p keys are per start, the
//! [`NodeId`] is the stable identity.

mod driver;
pub mod log;
mod wire;
mod writer;

use crate::error::{Error, Result};
use crate::node::NodeId;
use crate::order::{
    Config, Entry, Epoch, Forced, MemberInfo, NoForce, ReqId, Seq, Status, View, Waiting,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the driver ticks the machine.
pub const TICK: Duration = Duration::from_millis(25);

/// Configuration of the driver.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Cluster name: only peers with the same name are used (letters, digits, `-`, `_`, `.`).
    pub cluster: String,
    /// libp2p TCP listen address (the daemon's default is `0.0.0.0:7000`).
    pub listen: SocketAddr,
    /// Peers to dial (`IP:PORT` or a multiaddr), retried with backoff while not connected.
    pub peers: Vec<String>,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Timing of the order machine.
    pub order: Config,
    /// Directory of the durable log (`log_dir/log`).
    pub log_dir: PathBuf,
}

/// What the application is handed, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The next entry of the log (already durable in the log file).
    Entry(Entry),
    /// Throw away the application state: the cluster's history diverged from ours; entries start
    /// again from seq 1.
    Reset,
}

/// A snapshot of the driver's state.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    /// This node.
    pub me: MemberInfo,
    /// Where the machine is.
    pub status: Status,
    /// The epoch of the current view (0 before the first).
    pub epoch: Epoch,
    /// The current view, once a member.
    pub view: Option<View>,
    /// Every view so far (one per epoch this node knows of).
    pub epoch_log: Vec<View>,
    /// Highest delivered seq.
    pub delivered: Seq,
    /// Connected nodes of this cluster (identified).
    pub peers: Vec<NodeId>,
    /// Addresses libp2p listens on.
    pub listen: Vec<SocketAddr>,
    /// Restarted with a stored log whose view has other members: what this node waits for
    /// before it resumes the cluster (`None` once a member, or when it has no such log).
    pub waiting: Option<Waiting>,
    /// The quorum gate of the data path (see [`Cluster::has_quorum`]).
    pub quorum: bool,
}

/// A handle on the running driver. Cheap to clone; when the last handle is dropped the driver
/// stops (without leaving: to the others it looks like a crash).
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    me: MemberInfo,
    cmd: tokio::sync::mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    next_req: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.cmd.send(Cmd::Stop);
    }
}

/// State the task publishes for the handles.
pub(crate) struct Shared {
    state: Mutex<SharedState>,
    cond: Condvar,
    /// The quorum gate of the data path, refreshed by the driver at every tick.
    pub(crate) quorum: AtomicBool,
}

#[derive(Clone)]
pub(crate) struct SharedState {
    status: Status,
    view: Option<View>,
    epoch_log: Vec<View>,
    delivered: Seq,
    peers: Vec<NodeId>,
    listen: Vec<SocketAddr>,
    waiting: Option<Waiting>,
    running: bool,
    fatal: Option<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state and wakes every waiter.
    pub(crate) fn update(&self, f: impl FnOnce(&mut SharedState)) {
        let mut st = self.lock();
        f(&mut st);
        drop(st);
        self.cond.notify_all();
    }

    /// Waits until `done` returns `Some`, the driver stops, or `timeout`.
    fn wait<T>(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&SharedState) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(v) = done(&st) {
                return Ok(v);
            }
            if !st.running {
                return Err(Error::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout);
            }
            st = self
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A request from a handle to the task.
pub(crate) enum Cmd {
    Propose {
        req: ReqId,
        cmd: Vec<u8>,
        reply: std::sync::mpsc::Sender<Result<Seq>>,
    },
    /// The proposer gave up waiting.
    Forget(ReqId),
    Applied(Seq),
    Leave {
        reply: std::sync::mpsc::Sender<Result<()>>,
    },
    RecoverForce {
        reply: std::sync::mpsc::Sender<std::result::Result<Forced, NoForce>>,
    },
    Stop,
}

impl Cluster {
    /// Starts the driver on `rt`. Reads the stored log first and returns its entries in the
    /// second element, so the application can rebuild its state before anything new is
    /// delivered; new entries come on the returned receiver.
    pub fn start(
        cfg: NetConfig,
        me: MemberInfo,
        rt: &tokio::runtime::Handle,
    ) -> Result<(Cluster, Vec<Entry>, std::sync::mpsc::Receiver<Delivery>)> {
        check_cluster_name(&cfg.cluster)?;
        let peers = cfg
            .peers
            .iter()
            .map(|p| parse_peer(p))
            .collect::<Result<Vec<_>>>()?;
        std::fs::create_dir_all(&cfg.log_dir)?;
        let (log, opened) = log::LogFile::<Entry>::open_checked(&cfg.log_dir.join("log"), {
            let mut prev: Option<Seq> = None;
            move |e: &Entry| {
                let ok = prev.is_none_or(|p| e.seq == p + 1);
                if ok {
                    prev = Some(e.seq);
                }
                ok
            }
        })?;
        let restored = opened.records;
        let shared = Arc::new(Shared {
            state: Mutex::new(SharedState {
                status: Status::Searching,
                view: None,
                epoch_log: Vec::new(),
                delivered: restored.last().map_or(0, |e| e.seq),
                peers: Vec::new(),
                listen: Vec::new(),
                waiting: None,
                running: true,
                fatal: None,
            }),
            cond: Condvar::new(),
            quorum: AtomicBool::new(false),
        });
        let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
        let (deliver_tx, deliver_rx) = std::sync::mpsc::channel();
        let task = driver::Driver::new(driver::Setup {
            cfg,
            peers,
            me: me.clone(),
            restored: restored.clone(),
            log,
            shared: shared.clone(),
            deliver: deliver_tx,
            rt: rt.clone(),
        })?;
        rt.spawn(task.run(cmd_rx));
        let cluster = Cluster {
            inner: Arc::new(Inner {
                me,
                cmd: cmd_tx,
                shared,
                next_req: AtomicU64::new(1),
            }),
        };
        // Wait until the listener reports its addresses (for `listen_addrs`).
        let _ = cluster.inner.shared.wait(Duration::from_secs(5), |st| {
            (!st.listen.is_empty()).then_some(())
        });
        Ok((cluster, restored, deliver_rx))
    }

    /// Proposes `cmd` (blocking: call from a non-tokio thread). Returns the seq it landed at
    /// once every member applied it, [`Error::Refused`], or [`Error::Timeout`]. After a timeout
    /// the command may still be applied later.
    pub fn propose(&self, cmd: Vec<u8>, timeout: Duration) -> Result<Seq> {
        let req = ReqId {
            incarnation: self.inner.me.incarnation,
            n: self.inner.next_req.fetch_add(1, Ordering::Relaxed),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Cmd::Propose {
            req,
            cmd,
            reply: tx,
        })?;
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.send(Cmd::Forget(req));
                Err(Error::Timeout)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(self.stopped()),
        }
    }

    /// The application has applied every delivered entry up to `seq`.
    pub fn applied(&self, seq: Seq) {
        let _ = self.send(Cmd::Applied(seq));
    }

    /// The current view, once a member.
    pub fn view(&self) -> Option<View> {
        self.inner.shared.lock().view.clone()
    }

    /// A snapshot of the driver's state.
    pub fn status(&self) -> ClusterStatus {
        let st = self.inner.shared.lock().clone();
        ClusterStatus {
            me: self.inner.me.clone(),
            status: st.status,
            epoch: st.view.as_ref().map_or(0, |v| v.epoch),
            view: st.view,
            epoch_log: st.epoch_log,
            delivered: st.delivered,
            peers: st.peers,
            listen: st.listen,
            waiting: st.waiting,
            quorum: self.has_quorum(),
        }
    }

    /// The quorum gate of the data path, cheap enough to ask before every I/O: true iff this
    /// node is a member that applied the entry of its view and, within half the failure
    /// timeout, enough members of its view to make a quorum with it (the rule of the log: a
    /// strict majority, or exactly half including the oldest member) confirmed by a heartbeat
    /// round trip that they are not at a later epoch (see
    /// [`OrderNode::heard_quorum`](crate::order::OrderNode::heard_quorum)). A node cut off in a
    /// minority sees it turn false within half a failure timeout and a tick ([`TICK`]), and
    /// true again only once it has applied its removal and joined again after the heal.
    pub fn has_quorum(&self) -> bool {
        self.inner.shared.quorum.load(Ordering::Acquire)
    }

    /// `dog cluster recover force`: when this node restarted with a stored log and waits for
    /// members of the last epoch that do not come back, resume the cluster with the members
    /// it hears now and remove the absent ones. The node with the longest log resumes it (this
    /// one or another present member, which is asked to); the others follow. Refused
    /// ([`Error::NoForce`]) when this node does not wait (it is a member, or joins a running
    /// cluster, or has no stored log). Returns the plan as it stands; the cluster resumes once
    /// the discovery window has passed.
    pub fn recover_force(&self) -> Result<Forced> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Cmd::RecoverForce { reply: tx })?;
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(r) => r.map_err(Error::NoForce),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(self.stopped()),
        }
    }

    /// Leaves the cluster cleanly (blocking, at most `timeout`), then stops the driver. The
    /// driver is stopped even when leaving timed out.
    pub fn leave(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        let r = match self.send(Cmd::Leave { reply: tx }) {
            Ok(()) => match rx.recv_timeout(timeout) {
                Ok(r) => r,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(self.stopped()),
            },
            Err(e) => Err(e),
        };
        let _ = self.send(Cmd::Stop);
        let rest = timeout.saturating_sub(start.elapsed()) + Duration::from_secs(2);
        self.wait_stopped(rest)?;
        r
    }

    /// Stops the driver without leaving (the others see this node fail), and waits until it has
    /// closed its connections and its log file.
    pub fn shutdown(&self, timeout: Duration) -> Result<()> {
        let _ = self.send(Cmd::Stop);
        self.wait_stopped(timeout)
    }

    fn wait_stopped(&self, timeout: Duration) -> Result<()> {
        match self
            .inner
            .shared
            .wait(timeout, |st| (!st.running).then_some(()))
        {
            Ok(()) | Err(Error::Stopped) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits (blocking) until this node is a member, and returns the view.
    pub fn wait_member(&self, timeout: Duration) -> Result<View> {
        self.inner.shared.wait(timeout, |st| {
            if st.status == Status::Member {
                st.view.clone()
            } else {
                None
            }
        })
    }

    /// Waits (blocking) until `seq` is delivered.
    pub fn wait_delivered(&self, seq: Seq, timeout: Duration) -> Result<()> {
        self.inner
            .shared
            .wait(timeout, |st| (st.delivered >= seq).then_some(()))
    }

    /// The addresses libp2p listens on.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.inner.shared.lock().listen.clone()
    }

    /// This node.
    pub fn me(&self) -> &MemberInfo {
        &self.inner.me
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        self.inner.cmd.send(cmd).map_err(|_| self.stopped())
    }

    fn stopped(&self) -> Error {
        match &self.inner.shared.lock().fatal {
            Some(f) => Error::Net(f.clone()),
            None => Error::Stopped,
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("me", &self.inner.me.id)
            .finish_non_exhaustive()
    }
}

fn check_cluster_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Net(format!(
            "bad cluster name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Parses a `--peer`: `IP:PORT` or a multiaddr.
pub(crate) fn parse_peer(s: &str) -> Result<libp2p::Multiaddr> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(socket_to_multiaddr(sa));
    }
    s.parse::<libp2p::Multiaddr>()
        .map_err(|_| Error::BadPeer(s.to_string()))
}

pub(crate) fn socket_to_multiaddr(sa: SocketAddr) -> libp2p::Multiaddr {
    use libp2p::multiaddr::Protocol;
    let ip = match sa.ip() {
        std::net::IpAddr::V4(ip) => Protocol::Ip4(ip),
        std::net::IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    libp2p::Multiaddr::empty()
        .with(ip)
        .with(Protocol::Tcp(sa.port()))
}

pub(crate) fn multiaddr_to_socket(a: &libp2p::Multiaddr) -> Option<SocketAddr> {
    use libp2p::multiaddr::Protocol;
    let mut it = a.iter();
    let ip: std::net::IpAddr = match it.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    match it.next()? {
        Protocol::Tcp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_as_socket_addresses_or_multiaddrs() {
        let a = parse_peer("127.0.0.1:7000").unwrap();
        assert_eq!(a.to_string(), "/ip4/127.0.0.1/tcp/7000");
        assert_eq!(
            multiaddr_to_socket(&a),
            Some("127.0.0.1:7000".parse().unwrap())
        );
        let b = parse_peer("[::1]:7001").unwrap();
        assert_eq!(b.to_string(), "/ip6/::1/tcp/7001");
        let c = parse_peer("/ip4/10.0.0.1/tcp/7000").unwrap();
        assert_eq!(c.to_string(), "/ip4/10.0.0.1/tcp/7000");
        assert!(parse_peer("not an address").is_err());
    }

    #[test]
    fn cluster_names_are_checked() {
        assert!(check_cluster_name("prod-1.a_b").is_ok());
        assert!(check_cluster_name("").is_err());
        assert!(check_cluster_name("a/b").is_err());
        assert!(check_cluster_name(&"x".repeat(65)).is_err());
    }
}
