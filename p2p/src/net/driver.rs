//! The task that owns the swarm and the order machine.

use super::log::LogFile;
use super::wire::{self, Wire, MAX_DIRECT_FRAME, MAX_GOSSIP_FRAME};
use super::writer::{self, Job};
use super::{multiaddr_to_socket, Cmd, Delivery, NetConfig, Shared, TICK};
use crate::error::{Error, Result};
use crate::node::NodeId;
use crate::order::Msg;
use crate::order::{
    Entry, Forced, Input, MemberInfo, NoForce, OrderNode, Output, ReqId, Seq, Status, Waiting,
};
use futures::StreamExt;
use libp2p::core::upgrade::Version;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::OutboundRequestId;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{identify, mdns, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First retry delay of a `--peer` that could not be reached.
const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest retry delay of a `--peer`.
const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Retry delay of a `--peer` that turned out to belong to another cluster.
const DIAL_BACKOFF_FOREIGN: Duration = Duration::from_secs(30);
/// How often a node broadcasts its listen addresses.
const HELLO_EVERY: Duration = Duration::from_secs(5);
/// How long the task keeps the network up after its `Leave` is done, so it goes out.
const LEAVE_LINGER: Duration = Duration::from_millis(500);
/// Connections stay open this long without traffic (the machine's heartbeats keep them busy).
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most direct requests in flight to one node (each is a stream; the machine copes with
/// messages overtaking each other).
const MAX_INFLIGHT: usize = 4;
/// Most messages in one direct request.
const BATCH_MAX: usize = 256;
/// Most messages queued for one node; older ones are dropped beyond (the machine retries).
const QUEUE_MAX: usize = 100_000;
/// Prefix of identify's agent version; the node id follows.
const AGENT_PREFIX: &str = "sheepfs/";

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    direct: request_response::Behaviour<wire::DirectCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// Everything [`Driver::new`] needs.
pub(crate) struct Setup {
    pub cfg: NetConfig,
    pub peers: Vec<Multiaddr>,
    pub me: MemberInfo,
    pub restored: Vec<Entry>,
    pub log: LogFile<Entry>,
    pub shared: Arc<Shared>,
    pub deliver: Sender<Delivery>,
    pub rt: tokio::runtime::Handle,
}

/// A `--peer` address and its dialling state.
struct PeerDial {
    addr: Multiaddr,
    connected: Option<PeerId>,
    dialing: bool,
    next_try: Instant,
    backoff: Duration,
    foreign: bool,
}

pub(crate) struct Driver {
    swarm: Swarm<Behaviour>,
    node: OrderNode,
    me: MemberInfo,
    topic: IdentTopic,
    proto_version: String,
    shared: Arc<Shared>,
    /// To the log writer thread (which hands entries to the application once durable).
    jobs: Option<Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    proposals: HashMap<ReqId, Sender<Result<Seq>>>,
    /// Who waits for the answer to a forced recovery.
    force_reply: Option<Sender<std::result::Result<Forced, NoForce>>>,
    /// Half the failure timeout: the window of the quorum gate.
    quorum_window: Duration,
    /// What was last published of the waiting state.
    published_waiting: Option<Waiting>,
    /// Direct messages waiting for a free request slot of their node: at most
    /// [`MAX_INFLIGHT`] requests per node, and what piles up meanwhile goes in one batch.
    outq: HashMap<NodeId, VecDeque<Msg>>,
    inflight: HashMap<NodeId, usize>,
    inflight_req: HashMap<OutboundRequestId, NodeId>,
    leave_reply: Option<Sender<Result<()>>>,
    dials: Vec<PeerDial>,
    dial_conns: HashMap<ConnectionId, usize>,
    peer_node: HashMap<PeerId, NodeId>,
    node_peer: HashMap<NodeId, PeerId>,
    /// Connected peers of our cluster, identified.
    members_connected: BTreeMap<PeerId, NodeId>,
    foreign: HashSet<PeerId>,
    listen: Vec<Multiaddr>,
    next_hello: Instant,
    initial: Vec<Output>,
    stop_at: Option<Instant>,
    fatal: Option<String>,
    published: Option<(Status, Seq, Option<u64>, usize)>,
    peers_dirty: bool,
    /// Peers heard of (mDNS, hello) with their addresses and when to dial them again while
    /// they are not connected (mDNS reports a peer once per record lifetime).
    heard: HashMap<PeerId, (Vec<Multiaddr>, Instant)>,
}

/// How often a heard-of peer that is not connected is dialled again.
const REDIAL_HEARD: Duration = Duration::from_secs(1);

fn net_err(e: impl std::fmt::Display) -> Error {
    Error::Net(e.to_string())
}

impl Driver {
    pub(crate) fn new(s: Setup) -> Result<Driver> {
        let _guard = s.rt.enter();
        let cluster = &s.cfg.cluster;
        let proto_version = format!("/sheepfs/{cluster}/1");
        let topic = IdentTopic::new(format!("sheepfs/{cluster}/order"));
        let direct_proto = StreamProtocol::try_from_owned(format!("/sheepfs/{cluster}/order/1"))
            .map_err(net_err)?;
        let agent = format!("{AGENT_PREFIX}{}", s.me.id);
        let mdns_on = s.cfg.mdns;
        let pv = proto_version.clone();
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(net_err)?
            .with_behaviour(
                |key| -> std::result::Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                    let gcfg = gossipsub::ConfigBuilder::default()
                        .heartbeat_interval(Duration::from_millis(100))
                        .heartbeat_initial_delay(Duration::from_millis(100))
                        .flood_publish(true)
                        // Messages are not signed (see `MessageAuthenticity::Author` below):
                        // the source and the sequence number are checked for form only.
                        .validation_mode(ValidationMode::Permissive)
                        .max_transmit_size(64 << 10)
                        // Messages carry their source and a random 64-bit sequence number:
                        // together they are the id, so identical payloads (a heartbeat that did
                        // not change) are never taken for duplicates.
                        .message_id_fn(|m: &gossipsub::Message| {
                            let mut id = m.source.map(|p| p.to_bytes()).unwrap_or_default();
                            id.extend_from_slice(&m.sequence_number.unwrap_or(0).to_be_bytes());
                            MessageId::from(id)
                        })
                        .build()?;
                    // Not `Signed`: a signature costs every receiver an ed25519 verification
                    // per message (~11 ms in a debug build, which made every hop of the order
                    // protocol queue behind the verifications of the heartbeats and held a
                    // 3-node propose at hundreds of milliseconds; ~50 µs in release). All it
                    // would add is that a member relaying a broadcast cannot forge another
                    // member's: every connection is authenticated by noise, and anyone who
                    // knows the cluster name may join and disturb the order anyway.
                    let gossipsub = gossipsub::Behaviour::new(
                        MessageAuthenticity::Author(key.public().to_peer_id()),
                        gcfg,
                    )?;
                    let direct = request_response::Behaviour::with_codec(
                        wire::DirectCodec,
                        [(direct_proto, ProtocolSupport::Full)],
                        request_response::Config::default()
                            .with_request_timeout(Duration::from_secs(10)),
                    );
                    let identify = identify::Behaviour::new(
                        identify::Config::new(pv, key.public()).with_agent_version(agent),
                    );
                    let ping = ping::Behaviour::new(ping::Config::new());
                    let mdns = if mdns_on {
                        let mcfg = mdns::Config {
                            query_interval: Duration::from_secs(5),
                            ..mdns::Config::default()
                        };
                        Some(mdns::tokio::Behaviour::new(
                            mcfg,
                            key.public().to_peer_id(),
                        )?)
                    } else {
                        None
                    };
                    Ok(Behaviour {
                        gossipsub,
                        direct,
                        identify,
                        ping,
                        mdns: Toggle::from(mdns),
                    })
                },
            )
            .map_err(net_err)?
            .with_swarm_config(|c| {
                c.with_idle_connection_timeout(IDLE_TIMEOUT)
                    // Send a stream's first data with the protocol proposal instead of waiting
                    // for the answer: saves a round trip per direct message (each is a new
                    // stream). Direct messages only go to peers identified as nodes of our
                    // cluster, which speak the protocol.
                    .with_substream_upgrade_protocol_override(Version::V1Lazy)
            })
            .build();
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(net_err)?;
        swarm
            .listen_on(super::socket_to_multiaddr(s.cfg.listen))
            .map_err(net_err)?;

        let (jobs, jobs_rx) = std::sync::mpsc::channel();
        let writer = writer::spawn(s.log, jobs_rx, s.deliver, s.shared.clone())?;
        let now = Instant::now();
        let alone = !s.cfg.mdns && s.peers.is_empty();
        let quorum_window = s.cfg.order.failure_timeout / 2;
        let mut node = OrderNode::new(s.me.clone(), s.cfg.order.clone(), s.restored, now);
        // `--no-mdns` without `--peer`: nobody can be found, form (or re-form) at once.
        let initial = if alone {
            node.bootstrap(now)
        } else {
            Vec::new()
        };
        let dials = s
            .peers
            .into_iter()
            .map(|addr| PeerDial {
                addr,
                connected: None,
                dialing: false,
                next_try: now,
                backoff: DIAL_BACKOFF_MIN,
                foreign: false,
            })
            .collect();
        tracing::info!(
            node = %s.me.id,
            peer = %swarm.local_peer_id(),
            cluster = %cluster,
            "cluster driver starting"
        );
        Ok(Driver {
            swarm,
            node,
            me: s.me,
            topic,
            proto_version,
            shared: s.shared,
            jobs: Some(jobs),
            writer: Some(writer),
            proposals: HashMap::new(),
            force_reply: None,
            quorum_window,
            published_waiting: None,
            outq: HashMap::new(),
            inflight: HashMap::new(),
            inflight_req: HashMap::new(),
            leave_reply: None,
            dials,
            dial_conns: HashMap::new(),
            peer_node: HashMap::new(),
            node_peer: HashMap::new(),
            members_connected: BTreeMap::new(),
            foreign: HashSet::new(),
            listen: Vec::new(),
            next_hello: now + HELLO_EVERY,
            initial,
            stop_at: None,
            fatal: None,
            published: None,
            peers_dirty: true,
            heard: HashMap::new(),
        })
    }

    pub(crate) async fn run(mut self, mut cmds: tokio::sync::mpsc::UnboundedReceiver<Cmd>) {
        let initial = std::mem::take(&mut self.initial);
        self.exec(initial);
        self.after_step();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.fatal.is_some() {
                break;
            }
            if self.writer.as_ref().is_some_and(|w| w.is_finished()) {
                // The writer died on an I/O error (recorded in `shared`).
                break;
            }
            if self.stop_at.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                cmd = cmds.recv() => match cmd {
                    None | Some(Cmd::Stop) => break,
                    Some(c) => self.on_cmd(c),
                },
                _ = tick.tick() => self.on_tick(),
            }
        }
        tracing::info!(node = %self.me.id, fatal = ?self.fatal, "cluster driver stopping");
        let shared = self.shared.clone();
        let fatal = self.fatal.take();
        let status = self.node.status();
        // Close the connections and (once what was delivered is stored) the log file before
        // saying we stopped.
        self.jobs = None;
        let writer = self.writer.take();
        drop(self);
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        shared
            .quorum
            .store(false, std::sync::atomic::Ordering::Release);
        shared.update(|st| {
            st.running = false;
            if st.fatal.is_none() {
                st.fatal = fatal;
            }
            st.status = status;
            st.peers.clear();
        });
    }

    fn on_tick(&mut self) {
        self.step(Input::Tick);
        let ok = self.node.heard_quorum(Instant::now(), self.quorum_window);
        let was = self
            .shared
            .quorum
            .swap(ok, std::sync::atomic::Ordering::AcqRel);
        if was != ok {
            let view = self.node.view();
            tracing::info!(
                node = %self.me.id,
                open = ok,
                epoch = view.map(|v| v.epoch),
                members = view.map(|v| v.members.len()),
                delivered = self.node.delivered(),
                "quorum gate of the data path {}",
                if ok { "opened" } else { "closed" }
            );
        }
        self.redial();
        self.redial_heard();
        let now = Instant::now();
        if now >= self.next_hello {
            self.next_hello = now + HELLO_EVERY;
            self.send_hello();
        }
    }

    fn on_cmd(&mut self, c: Cmd) {
        match c {
            Cmd::Propose { req, cmd, reply } => {
                self.proposals.insert(req, reply);
                self.step(Input::Propose { req, cmd });
            }
            Cmd::Forget(req) => {
                self.proposals.remove(&req);
            }
            Cmd::Applied(seq) => self.step(Input::Applied { seq }),
            Cmd::Leave { reply } => {
                if matches!(self.node.status(), Status::Member | Status::NoQuorum) {
                    self.leave_reply = Some(reply);
                    self.step(Input::Leave);
                } else {
                    let _ = reply.send(Ok(()));
                    self.stop_at.get_or_insert_with(Instant::now);
                }
            }
            Cmd::RecoverForce { reply } => {
                self.force_reply = Some(reply);
                self.step(Input::RecoverForce);
            }
            Cmd::Stop => self.stop_at = Some(Instant::now()),
        }
    }

    /// Feeds the machine one input and executes what it says.
    fn step(&mut self, input: Input) {
        let outs = self.node.handle(Instant::now(), input);
        self.exec(outs);
        self.after_step();
    }

    fn exec(&mut self, outs: Vec<Output>) {
        for o in outs {
            self.exec_one(o);
        }
        self.pump();
    }

    fn exec_one(&mut self, o: Output) {
        match o {
            Output::Broadcast(msg) => self.broadcast(&Wire::Order {
                from: self.me.id,
                msgs: vec![msg],
            }),
            Output::Send { to, msg } => {
                if to != self.me.id {
                    let q = self.outq.entry(to).or_default();
                    if q.len() >= QUEUE_MAX {
                        q.pop_front();
                    }
                    q.push_back(msg);
                }
            }
            // The application reports `Applied` only after the writer made the entry durable
            // and handed it over; the machine claims nothing about durability before that.
            Output::Deliver(e) => self.write(Job::Entry(e)),
            Output::Reset => self.write(Job::Reset),
            Output::Acked { req, seq } => {
                if let Some(r) = self.proposals.remove(&req) {
                    let _ = r.send(Ok(seq));
                }
            }
            Output::Refused { req, why } => {
                if let Some(r) = self.proposals.remove(&req) {
                    let _ = r.send(Err(Error::Refused(why)));
                }
            }
            Output::ViewChanged(v) => {
                tracing::info!(
                    node = %self.me.id,
                    epoch = v.epoch,
                    members = v.members.len(),
                    sequencer = ?v.sequencer,
                    "view changed"
                );
                // Force the epoch log to be republished.
                self.published = None;
            }
            Output::Forced(r) => {
                if let Some(reply) = self.force_reply.take() {
                    let _ = reply.send(r);
                }
            }
        }
    }

    fn write(&mut self, job: Job) {
        if let Some(j) = &self.jobs {
            if j.send(job).is_err() {
                self.fatal = Some("the log writer stopped".into());
            }
        }
    }

    fn after_step(&mut self) {
        if self.leave_reply.is_some() && self.node.status() == Status::Left {
            if let Some(r) = self.leave_reply.take() {
                let _ = r.send(Ok(()));
            }
            self.stop_at = Some(Instant::now() + LEAVE_LINGER);
        }
        self.publish();
    }

    /// Publishes the machine's state to the handles when it changed.
    fn publish(&mut self) {
        let status = self.node.status();
        let delivered = self.node.delivered();
        let epoch = self.node.view().map(|v| v.epoch);
        let key = (status, delivered, epoch, self.listen.len());
        let waiting = self.node.waiting();
        if self.published.as_ref() == Some(&key)
            && !self.peers_dirty
            && waiting == self.published_waiting
        {
            return;
        }
        self.published_waiting = waiting.clone();
        let epoch_changed = self.published.as_ref().is_none_or(|p| p.2 != epoch);
        self.published = Some(key);
        self.peers_dirty = false;
        let view = self.node.view().cloned();
        let epoch_log = epoch_changed.then(|| self.node.epoch_log());
        let peers: Vec<NodeId> = self.members_connected.values().copied().collect();
        let listen: Vec<_> = self.listen.iter().filter_map(multiaddr_to_socket).collect();
        self.shared.update(|st| {
            st.status = status;
            st.delivered = delivered;
            st.view = view;
            if let Some(l) = epoch_log {
                st.epoch_log = l;
            }
            st.peers = peers;
            st.listen = listen;
            st.waiting = waiting;
        });
    }

    fn broadcast(&mut self, w: &Wire) {
        let bytes = match wire::encode(w, MAX_GOSSIP_FRAME) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(node = %self.me.id, error = %e, "broadcast not encodable, dropped");
                return;
            }
        };
        let topic = self.topic.clone();
        tracing::trace!(node = %self.me.id, len = bytes.len(), "publish");
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            tracing::debug!(node = %self.me.id, error = %e, "gossipsub publish failed");
        }
    }

    /// Sends what is queued for every node that has no request in flight.
    fn pump(&mut self) {
        let ready: Vec<NodeId> = self
            .outq
            .iter()
            .filter(|(n, q)| {
                !q.is_empty() && self.inflight.get(*n).copied().unwrap_or(0) < MAX_INFLIGHT
            })
            .map(|(n, _)| *n)
            .collect();
        for to in ready {
            while self.outq.get(&to).is_some_and(|q| !q.is_empty())
                && self.inflight.get(&to).copied().unwrap_or(0) < MAX_INFLIGHT
            {
                self.send_batch(to);
            }
        }
        self.outq.retain(|_, q| !q.is_empty());
    }

    /// Sends the next batch queued for `to`.
    fn send_batch(&mut self, to: NodeId) {
        let Some(peer) = self.node_peer.get(&to).copied() else {
            let n = self.outq.remove(&to).map_or(0, |q| q.len());
            tracing::debug!(node = %self.me.id, %to, n, "messages to a node with no known peer dropped");
            return;
        };
        let Some(q) = self.outq.get_mut(&to) else {
            return;
        };
        let mut take = q.len().min(BATCH_MAX);
        while take > 0 {
            let msgs: Vec<Msg> = q.iter().take(take).cloned().collect();
            match wire::encode(
                &Wire::Order {
                    from: self.me.id,
                    msgs,
                },
                MAX_DIRECT_FRAME,
            ) {
                Ok(bytes) => {
                    q.drain(..take);
                    tracing::trace!(node = %self.me.id, %to, n = take, "direct send");
                    let id = self.swarm.behaviour_mut().direct.send_request(&peer, bytes);
                    *self.inflight.entry(to).or_default() += 1;
                    self.inflight_req.insert(id, to);
                    return;
                }
                Err(Error::TooLarge { .. }) if take > 1 => take /= 2,
                Err(e) => {
                    tracing::warn!(node = %self.me.id, %to, error = %e, "direct message not encodable, dropped");
                    q.pop_front();
                    return;
                }
            }
        }
    }

    /// The request to `id` was answered or failed: the next batch may go.
    fn request_done(&mut self, id: OutboundRequestId) {
        if let Some(to) = self.inflight_req.remove(&id) {
            if let Some(n) = self.inflight.get_mut(&to) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.inflight.remove(&to);
                }
            }
            self.pump();
        }
    }

    fn send_hello(&mut self) {
        let addrs = self
            .listen
            .iter()
            .chain(self.swarm.external_addresses())
            .map(|a| a.to_vec())
            .collect();
        self.broadcast(&Wire::Hello {
            from: self.me.id,
            addrs,
        });
    }

    /// Dials the `--peer` addresses that are not connected and due.
    fn redial(&mut self) {
        let now = Instant::now();
        for (i, d) in self.dials.iter_mut().enumerate() {
            if d.connected.is_some() || d.dialing || now < d.next_try {
                continue;
            }
            let opts = DialOpts::unknown_peer_id()
                .address(d.addr.clone())
                .allocate_new_port()
                .build();
            let cid = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    d.dialing = true;
                    self.dial_conns.insert(cid, i);
                }
                Err(e) => {
                    tracing::debug!(addr = %d.addr, error = %e, "dial failed");
                    d.next_try = now + d.backoff;
                    d.backoff = (d.backoff * 2).min(DIAL_BACKOFF_MAX);
                }
            }
        }
    }

    /// Dials again the peers heard of that are not connected (a dial can fail, for example when
    /// both sides dial at once).
    fn redial_heard(&mut self) {
        let now = Instant::now();
        let due: Vec<(PeerId, Vec<Multiaddr>)> = self
            .heard
            .iter()
            .filter(|(p, (_, at))| now >= *at && !self.swarm.is_connected(p))
            .map(|(p, (a, _))| (*p, a.clone()))
            .collect();
        for (peer, addrs) in due {
            self.dial_peer(peer, addrs);
        }
    }

    /// Dials a peer we heard of (mDNS, hello) unless connected or known foreign.
    fn dial_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id()
            || self.foreign.contains(&peer)
            || self.swarm.is_connected(&peer)
            || addrs.is_empty()
        {
            return;
        }
        for a in &addrs {
            self.swarm.add_peer_address(peer, a.clone());
        }
        // A fresh local port: dialling from the listening port (libp2p's default) makes two
        // hosts that dial each other at once a TCP simultaneous open — one connection on which
        // both start the noise handshake as initiator, and it fails.
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs.clone())
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .allocate_new_port()
            .build();
        self.heard
            .insert(peer, (addrs, Instant::now() + REDIAL_HEARD));
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "dial failed");
        }
    }

    /// Remembers that `peer` speaks for `node`; false when that contradicts what we know.
    fn learn(&mut self, peer: PeerId, node: NodeId) -> bool {
        match self.peer_node.get(&peer) {
            Some(n) if *n != node => {
                tracing::warn!(%peer, claimed = %node, known = %n, "peer claims another node id, message dropped");
                false
            }
            Some(_) => true,
            None => {
                self.peer_node.insert(peer, node);
                self.node_peer.insert(node, peer);
                true
            }
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.on_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::Direct(e)) => self.on_direct(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.on_identify(e),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(e)) => self.on_mdns(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(_)) => {}
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(node = %self.me.id, %address, "listening");
                self.listen.push(address);
                self.publish();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen.retain(|a| *a != address);
                self.publish();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                tracing::debug!(node = %self.me.id, peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                if let Some(i) = self.dial_conns.remove(&connection_id) {
                    let d = &mut self.dials[i];
                    d.dialing = false;
                    d.connected = Some(peer_id);
                    d.backoff = DIAL_BACKOFF_MIN;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(node = %self.me.id, peer = %peer_id, ?cause, "connection closed");
                if num_established == 0 {
                    if self.members_connected.remove(&peer_id).is_some() {
                        self.peers_dirty = true;
                        self.publish();
                    }
                    let now = Instant::now();
                    for d in &mut self.dials {
                        if d.connected == Some(peer_id) {
                            d.connected = None;
                            d.next_try = now
                                + if d.foreign {
                                    DIAL_BACKOFF_FOREIGN
                                } else {
                                    DIAL_BACKOFF_MIN
                                };
                        }
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(node = %self.me.id, peer = ?peer_id, error = %error, "outgoing connection failed");
                if let Some(i) = self.dial_conns.remove(&connection_id) {
                    let now = Instant::now();
                    let d = &mut self.dials[i];
                    d.dialing = false;
                    if matches!(error, DialError::LocalPeerId { .. }) {
                        // A --peer that is ourselves: nothing to dial.
                        d.next_try = now + Duration::from_secs(3600);
                    } else {
                        d.next_try = now + d.backoff;
                        d.backoff = (d.backoff * 2).min(DIAL_BACKOFF_MAX);
                    }
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!(node = %self.me.id, error = %error, "incoming connection failed");
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, e: gossipsub::Event) {
        match e {
            gossipsub::Event::Message { message, .. } => {
                tracing::trace!(node = %self.me.id, src = ?message.source, len = message.data.len(), "gossip received");
                let w = match wire::decode(&message.data, MAX_GOSSIP_FRAME) {
                    Ok(w) => w,
                    Err(err) => {
                        tracing::debug!(source = ?message.source, error = %err, "undecodable broadcast dropped");
                        return;
                    }
                };
                let from = w.from();
                if from == self.me.id {
                    return;
                }
                if let Some(src) = message.source {
                    if self.foreign.contains(&src) || !self.learn(src, from) {
                        return;
                    }
                }
                match w {
                    Wire::Order { from, msgs } => {
                        for msg in msgs {
                            self.step(Input::Recv { from, msg });
                        }
                    }
                    Wire::Hello { addrs, .. } => {
                        if let Some(src) = message.source {
                            let addrs = addrs
                                .into_iter()
                                .filter_map(|b| Multiaddr::try_from(b).ok())
                                .collect();
                            self.dial_peer(src, addrs);
                        }
                    }
                }
            }
            gossipsub::Event::Subscribed { topic, .. } if topic == self.topic.hash() => {
                // A newcomer: tell it (and everyone) where we are, soon.
                self.next_hello = self
                    .next_hello
                    .min(Instant::now() + Duration::from_millis(50));
            }
            _ => {}
        }
    }

    fn on_direct(&mut self, e: request_response::Event<Vec<u8>, ()>) {
        match e {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                tracing::trace!(node = %self.me.id, %peer, "direct received");
                let _ = self.swarm.behaviour_mut().direct.send_response(channel, ());
                if self.foreign.contains(&peer) {
                    return;
                }
                let w = match wire::decode(&request, MAX_DIRECT_FRAME) {
                    Ok(w) => w,
                    Err(err) => {
                        tracing::debug!(%peer, error = %err, "undecodable direct message dropped");
                        return;
                    }
                };
                if !self.learn(peer, w.from()) {
                    return;
                }
                if let Wire::Order { from, msgs } = w {
                    for msg in msgs {
                        self.step(Input::Recv { from, msg });
                    }
                }
            }
            request_response::Event::Message {
                message: request_response::Message::Response { request_id, .. },
                ..
            } => self.request_done(request_id),
            request_response::Event::OutboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                tracing::debug!(node = %self.me.id, %peer, %error, "direct send failed");
                self.request_done(request_id);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(node = %self.me.id, %peer, %error, "direct receive failed");
            }
            _ => {}
        }
    }

    fn on_identify(&mut self, e: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = e else {
            return;
        };
        let node = info
            .agent_version
            .strip_prefix(AGENT_PREFIX)
            .and_then(NodeId::parse);
        let node = match node {
            Some(n) if info.protocol_version == self.proto_version && n != self.me.id => n,
            _ => {
                tracing::debug!(
                    node = %self.me.id,
                    peer = %peer_id,
                    protocol = %info.protocol_version,
                    agent = %info.agent_version,
                    "peer of another cluster (or not sheepfs), disconnecting"
                );
                self.foreign.insert(peer_id);
                for d in &mut self.dials {
                    if d.connected == Some(peer_id) {
                        d.foreign = true;
                    }
                }
                let _ = self.swarm.disconnect_peer_id(peer_id);
                return;
            }
        };
        // A restarted node comes back with a new peer id: the newest one speaks for it.
        if let Some(old) = self.peer_node.insert(peer_id, node) {
            if old != node {
                tracing::warn!(peer = %peer_id, %old, new = %node, "peer changed its node id");
            }
        }
        self.node_peer.insert(node, peer_id);
        for a in info.listen_addrs {
            if usable(&a) {
                self.swarm.add_peer_address(peer_id, a);
            }
        }
        if self.members_connected.insert(peer_id, node) != Some(node) {
            tracing::debug!(node = %self.me.id, peer = %peer_id, other = %node, "peer identified");
            self.peers_dirty = true;
        }
        self.step(Input::Discovered { id: node });
    }

    fn on_mdns(&mut self, e: mdns::Event) {
        let mdns::Event::Discovered(list) = e else {
            return;
        };
        let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        for (peer, addr) in list {
            by_peer.entry(peer).or_default().push(addr);
        }
        for (peer, addrs) in by_peer {
            tracing::debug!(node = %self.me.id, %peer, ?addrs, "mDNS found a peer");
            self.dial_peer(peer, addrs);
        }
    }
}

/// Whether an address a peer reports is worth dialling (TCP over IP).
fn usable(a: &Multiaddr) -> bool {
    let mut it = a.iter();
    matches!(it.next(), Some(Protocol::Ip4(_) | Protocol::Ip6(_)))
        && matches!(it.next(), Some(Protocol::Tcp(_)))
}
