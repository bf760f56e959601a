//! Several hosts on one machine: each [`Host`] is a `sheepfs` daemon in a network namespace of
//! its own, and a [`Net`] joins the namespaces with veth pairs on one Linux bridge.
//!
//! The daemons keep the root *mount* namespace (they run under `nsenter --net=…` only), so their
//! FUSE mounts, stores and admin sockets are plain paths for the test and for `dog`. Multicast
//! (mDNS) flows between the namespaces of one `Net` and nowhere else: the bridge has no address in
//! the root namespace and every `Net` has its own bridge.
//!
//! # Names and addresses
//! Each `Net` claims a free *slot* `S`, a 16-bit number written as 4 hex digits, by binding the
//! abstract Unix socket `@sheep-tests-net-S` for as long as it lives (the kernel releases it when
//! the process dies, however it dies). The first slot tried is derived from the PID and a
//! per-process counter. Everything of the `Net` is named after its slot:
//!
//! | what | name |
//! |---|---|
//! | subnet | `10.A.B.0/24` with `A.B` = the two bytes of `S`; host `i` is `10.A.B.(i+1)` |
//! | namespace of host `i` | `sheepnet-S-i` (`/run/netns/sheepnet-S-i`) |
//! | bridge, and the second bridge of [`Net::split`] | `sbrS`, `sbrSb` |
//! | veth of host `i`: in its namespace, on the bridge | `svS-i`, `spS-i` |
//!
//! # Cleanup
//! [`Net`]'s drop (also during a panic) SIGKILLs, by PID, every process left in its namespaces
//! (`ip netns pids`), deletes its veths, bridges and namespaces, and only then releases its slot.
//! [`Host`]'s drop SIGKILLs its daemon by PID, lazily unmounts its mount and removes its temporary
//! directory. A test process killed outright leaves its network objects behind: the next
//! [`Net::new`] on the machine removes those of every slot that no live process holds.

use std::ffi::OsStr;
use std::fs::File;
use std::net::Ipv4Addr;
use std::ops::Deref;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use crate::cmd::{command, command_line, describe, run};
use crate::daemon::{must_tempdir, poll_until, Daemon};
use crate::env::{bin, which};

/// Prefix of the namespaces of every `Net`.
const NS_PREFIX: &str = "sheepnet-";

/// Prefix of the abstract Unix socket that claims a slot.
const CLAIM_PREFIX: &str = "sheep-tests-net-";

/// How many hosts one `Net` can hold (addresses `.1` to `.254`).
const MAX_HOSTS: usize = 254;

/// How long [`Host::wait_members`] waits by default.
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts the `Net`s of this process, to vary the first slot tried.
static NETS: AtomicU32 = AtomicU32::new(0);

/// Calls `f` every 50 ms until it returns true; panics with "timed out … waiting until `what`"
/// if it has not after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, f: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, f),
        "timed out after {timeout:?} waiting until {what}"
    );
}

/// A bridge and a network namespace per host, joined by veth pairs; see the [module
/// documentation](self) for the names and what its drop removes.
#[derive(Debug)]
pub struct Net {
    slot: u16,
    /// The namespace of each host.
    names: Vec<String>,
    /// Holds the slot; dropped last, after everything named after the slot is gone.
    _claim: UnixListener,
}

impl Net {
    /// Creates a bridge and `hosts` namespaces on it, each with its address, `lo` up and a
    /// multicast route (224.0.0.0/4) on its veth.
    pub fn new(hosts: usize) -> Net {
        remove_abandoned();
        let seed = std::process::id() ^ (NETS.fetch_add(1, Ordering::Relaxed) << 22);
        let first = seed.wrapping_mul(0x9E37_79B1) >> 16;
        let (slot, claim) = (0..=u32::from(u16::MAX))
            .find_map(|k| {
                let slot = u16::try_from((first + k) & 0xFFFF).expect("masked to 16 bits");
                claim(slot).map(|c| (slot, c))
            })
            .expect("every slot of 10.0.0.0/8 is taken");
        // A slot nobody holds may still have the leftovers of a process that was killed.
        remove_slot(slot);
        let mut net = Net {
            slot,
            names: Vec::new(),
            _claim: claim,
        };
        for bridge in [net.bridge(), net.side_bridge()] {
            must_ip(&[
                "link",
                "add",
                &bridge,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]);
            quiet_ipv6(&bridge);
            must_ip(&["link", "set", &bridge, "up"]);
        }
        for _ in 0..hosts {
            net.add_host();
        }
        net
    }

    /// Adds a namespace on the bridge and returns its index.
    pub fn add_host(&mut self) -> usize {
        let i = self.names.len();
        assert!(i < MAX_HOSTS, "a Net holds at most {MAX_HOSTS} hosts");
        let ns = format!("{NS_PREFIX}{}-{i}", self.id());
        let (inner, outer) = (self.veth(i), self.port(i));
        self.names.push(ns.clone());
        must_ip(&["netns", "add", &ns]);
        must_ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns,
        ]);
        quiet_ipv6(&outer);
        must_ip(&["link", "set", &outer, "master", &self.bridge(), "up"]);
        let cidr = format!("{}/24", self.ip(i));
        must_ip(&["-n", &ns, "addr", "add", &cidr, "dev", &inner]);
        must_ip(&["-n", &ns, "link", "set", &inner, "up"]);
        must_ip(&["-n", &ns, "link", "set", "lo", "up"]);
        must_ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", &inner]);
        i
    }

    /// Returns how many hosts (namespaces) the net has.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Returns true when the net has no host.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Returns the slot as 4 hex digits: the part of every name that is this net's own.
    pub fn id(&self) -> String {
        format!("{:04x}", self.slot)
    }

    /// Returns the name of host `i`'s namespace (`sheepnet-S-i`).
    pub fn ns(&self, i: usize) -> &str {
        self.names
            .get(i)
            .unwrap_or_else(|| panic!("no host {i} in a net of {}", self.names.len()))
    }

    /// Returns the path of host `i`'s namespace, for `nsenter --net=` and `setns`.
    pub fn ns_path(&self, i: usize) -> String {
        format!("/run/netns/{}", self.ns(i))
    }

    /// Returns host `i`'s address, `10.A.B.(i+1)`.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        let [a, b] = self.slot.to_be_bytes();
        let host = u8::try_from(i + 1).expect("at most 254 hosts");
        Ipv4Addr::new(10, a, b, host)
    }

    fn bridge(&self) -> String {
        format!("sbr{}", self.id())
    }

    fn side_bridge(&self) -> String {
        format!("sbr{}b", self.id())
    }

    /// The veth end inside host `i`'s namespace.
    fn veth(&self, i: usize) -> String {
        format!("sv{}-{i}", self.id())
    }

    /// The veth end on the bridge, in the root namespace.
    fn port(&self, i: usize) -> String {
        format!("sp{}-{i}", self.id())
    }

    /// Cuts host `i` off: its port leaves the bridge (`nomaster`). Its own link stays up, so the
    /// host sees no carrier change, only silence, as behind a failed switch.
    pub fn cut(&self, i: usize) {
        must_ip(&["link", "set", &self.port(i), "nomaster"]);
    }

    /// Puts host `i` back on the main bridge, after [`Net::cut`] or [`Net::split`].
    pub fn heal(&self, i: usize) {
        must_ip(&["link", "set", &self.port(i), "master", &self.bridge()]);
    }

    /// Puts every host back on the main bridge.
    pub fn heal_all(&self) {
        for i in 0..self.len() {
            self.heal(i);
        }
    }

    /// Partitions the net in two: the hosts in `side` move to a second bridge, where they reach
    /// each other but none of the rest. [`Net::heal`] or [`Net::heal_all`] undoes it.
    pub fn split(&self, side: &[usize]) {
        for &i in side {
            must_ip(&["link", "set", &self.port(i), "master", &self.side_bridge()]);
        }
    }

    /// Makes hosts `a` and `b` deaf to each other, whatever bridge they are on: nftables in
    /// `a`'s namespace drops every IP packet from and to `b` (table `inet sheep`). The rest of
    /// the net still reaches both. [`Net::unblock`] undoes it.
    pub fn block(&self, a: usize, b: usize) {
        let ip = self.ip(b);
        let script = format!(
            "add table inet sheep; \
             add chain inet sheep in {{ type filter hook input priority 0; }}; \
             add chain inet sheep out {{ type filter hook output priority 0; }}; \
             add rule inet sheep in ip saddr {ip} drop; \
             add rule inet sheep out ip daddr {ip} drop"
        );
        self.must_exec(a, "nft", &[&script]);
    }

    /// Removes every [`Net::block`] that host `a`'s namespace holds.
    pub fn unblock(&self, a: usize) {
        self.must_exec(a, "nft", &["add table inet sheep; delete table inet sheep"]);
    }

    /// Returns a command that runs `prog` in host `i`'s namespace (`nsenter --net=… -- prog`),
    /// for the caller to add arguments to and spawn.
    pub fn command(&self, i: usize, prog: &str) -> Command {
        match which(prog) {
            Some(path) => nsenter(&self.ns_path(i), path),
            None => nsenter(&self.ns_path(i), prog),
        }
    }

    /// Runs `prog args…` to completion in host `i`'s namespace and returns its output.
    pub fn exec(&self, i: usize, prog: &str, args: &[&str]) -> Output {
        self.command(i, prog)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"))
    }

    /// Like [`Net::exec`], but returns stdout and panics with the output unless it exits 0.
    pub fn must_exec(&self, i: usize, prog: &str, args: &[&str]) -> String {
        let out = self.exec(i, prog, args);
        let line = format!("[{}] {}", self.ns(i), command_line(prog, args));
        assert!(out.status.success(), "{}", describe(&line, &out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Returns true when host `from` gets an answer to one ping of host `to` within 1 s.
    pub fn ping(&self, from: usize, to: usize) -> bool {
        let to = self.ip(to).to_string();
        let out = self.exec(from, "ping", &["-c1", "-W1", "-q", &to]);
        out.status.success()
    }

    /// Runs `f` on a new thread that has entered host `i`'s network namespace (`setns`), and
    /// returns what it returns. Sockets `f` opens belong to that namespace for their whole life,
    /// whichever thread uses them afterwards. Panics in `f` reach the caller.
    pub fn in_ns<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> T {
        let path = self.ns_path(i);
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            });
            thread
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        remove_slot(self.slot);
    }
}

/// Returns `nsenter --net=NS_PATH -- PROG`: `prog` in that network namespace, in this mount
/// namespace.
fn nsenter(ns_path: &str, prog: impl AsRef<OsStr>) -> Command {
    let mut cmd = command("nsenter");
    cmd.arg(format!("--net={ns_path}")).arg("--").arg(prog);
    cmd
}

/// Claims `slot` for this process (until the listener is dropped), or returns None if another
/// live process holds it.
fn claim(slot: u16) -> Option<UnixListener> {
    let name = format!("{CLAIM_PREFIX}{slot:04x}");
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
    UnixListener::bind_addr(&addr).ok()
}

/// Removes what processes that died without dropping their `Net` left behind: the namespaces
/// and links of every slot that no live process holds.
fn remove_abandoned() {
    let mut slots: Vec<u16> = list_namespaces()
        .iter()
        .chain(&list_links())
        .filter_map(|name| slot_of(name))
        .collect();
    slots.sort_unstable();
    slots.dedup();
    for slot in slots {
        if let Some(_held) = claim(slot) {
            remove_slot(slot);
        }
    }
}

/// Returns the slot in one of our names (`sheepnet-S-i`, `sbrS`, `sbrSb`, `spS-i`, `svS-i`).
fn slot_of(name: &str) -> Option<u16> {
    let rest = ["sheepnet-", "sbr", "sp", "sv"]
        .iter()
        .find_map(|p| name.strip_prefix(p))?;
    let hex = rest.get(..4)?;
    let tail = &rest[4..];
    let ours = tail.is_empty() || tail == "b" || tail.strip_prefix('-').is_some_and(is_number);
    if !ours || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(hex, 16).ok()
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Removes everything named after `slot`: kills (SIGKILL, by PID) the processes left in its
/// namespaces, deletes its veths, bridges and namespaces. Reports failures and goes on.
fn remove_slot(slot: u16) {
    let ns: Vec<String> = list_namespaces()
        .into_iter()
        .filter(|n| slot_of(n) == Some(slot))
        .collect();
    let me = std::process::id();
    for name in &ns {
        let pids = run("ip", &["netns", "pids", name]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            match pid.parse::<i32>() {
                Ok(pid) if u32::try_from(pid).ok() != Some(me) => {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                _ => {}
            }
        }
    }
    for link in list_links().iter().filter(|l| slot_of(l) == Some(slot)) {
        try_ip(&["link", "del", link]);
    }
    for name in &ns {
        try_ip(&["netns", "del", name]);
    }
}

/// Returns the names of the network namespaces that `ip netns` knows.
pub fn list_namespaces() -> Vec<String> {
    let out = run("ip", &["netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Returns the names of the links of the root network namespace (without `@peer`).
pub fn list_links() -> Vec<String> {
    let out = run("ip", &["-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// Stops the kernel from giving a root-namespace link an IPv6 address, so that the root
/// namespace sends nothing onto the bridge (best effort).
fn quiet_ipv6(link: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6"), "1");
}

fn must_ip(args: &[&str]) {
    let out = run("ip", args);
    assert!(
        out.status.success(),
        "{}",
        describe(&command_line("ip", args), &out)
    );
}

fn try_ip(args: &[&str]) {
    let out = run("ip", args);
    if !out.status.success() {
        eprintln!("{}", describe(&command_line("ip", args), &out));
    }
}

/// How [`Host::start_all_custom`] starts one host.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Arguments after `MOUNT --store … --admin-socket …`.
    pub extra: Vec<String>,
    /// The store directory; None for `store` in the host's temporary directory. One elsewhere
    /// (for example on a [`LoopFs`](crate::LoopFs)) must outlive the host.
    pub store: Option<PathBuf>,
}

impl Setup {
    /// A host with these arguments and its store in its temporary directory.
    pub fn args(extra: &[&str]) -> Setup {
        Setup {
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            store: None,
        }
    }

    /// Puts the store at `store`.
    pub fn store(mut self, store: &Path) -> Setup {
        self.store = Some(store.to_path_buf());
        self
    }

    /// Adds arguments.
    pub fn arg(mut self, extra: &[&str]) -> Setup {
        self.extra.extend(extra.iter().map(|a| (*a).to_owned()));
        self
    }
}

/// One `sheepfs` daemon in a namespace of a [`Net`], with its own store, admin socket, mount and
/// log in a temporary directory. It dereferences to its [`Daemon`]: `host.mount`, `host.store`,
/// `host.socket`, `host.path(…)`, `host.dog(…)`, `host.must_dog(…)`, `host.pid()`, `host.log()`.
///
/// On drop it kills the daemon (SIGKILL, by PID) if it still runs, lazily unmounts the mount if
/// it is still mounted and removes the temporary directory (store included).
#[derive(Debug)]
pub struct Host {
    daemon: Daemon,
    index: usize,
    ns_path: String,
    ip: Ipv4Addr,
    _tmp: TempDir,
}

impl Deref for Host {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl Host {
    /// Every thread's stack of the daemon (for the failure message of a hang).
    pub fn stacks(&self) -> String {
        self.daemon.stacks()
    }

    /// The daemon's log (for failure messages).
    pub fn daemon_log(&self) -> String {
        self.daemon.log()
    }

    /// Starts `sheepfs MOUNT --store … --admin-socket … extra…` in host `i`'s namespace of `net`
    /// and waits until it is mounted and its admin socket answers. Nothing is added to `extra`:
    /// without `--no-mdns` the daemon discovers the other hosts of `net`.
    pub fn start(net: &Net, i: usize, extra: &[&str]) -> Host {
        let mut host = Host::spawn(net, i, extra);
        host.daemon.must_wait_ready();
        host
    }

    /// Starts a daemon in every namespace of `net` at once (so that they discover each other in
    /// the same window), then waits until each is ready.
    pub fn start_all(net: &Net, extra: &[&str]) -> Vec<Host> {
        let mut hosts: Vec<Host> = (0..net.len()).map(|i| Host::spawn(net, i, extra)).collect();
        for host in &mut hosts {
            host.daemon.must_wait_ready();
        }
        hosts
    }

    /// Like [`Host::start_all`], with arguments and a store of each host's own: `setups[i]` is
    /// host `i`'s (one per namespace of `net`).
    pub fn start_all_custom(net: &Net, setups: &[Setup]) -> Vec<Host> {
        assert_eq!(setups.len(), net.len(), "one setup per host");
        let mut hosts: Vec<Host> = setups
            .iter()
            .enumerate()
            .map(|(i, setup)| {
                let tmp = must_tempdir();
                let store = setup
                    .store
                    .clone()
                    .unwrap_or_else(|| tmp.path().join("store"));
                let mut host = Host::with_dirs(net, i, tmp, store);
                let extra: Vec<&str> = setup.extra.iter().map(String::as_str).collect();
                host.launch(&extra);
                host
            })
            .collect();
        for host in &mut hosts {
            host.daemon.must_wait_ready();
        }
        hosts
    }

    fn spawn(net: &Net, i: usize, extra: &[&str]) -> Host {
        let tmp = must_tempdir();
        let store = tmp.path().join("store");
        let mut host = Host::with_dirs(net, i, tmp, store);
        host.launch(extra);
        host
    }

    fn with_dirs(net: &Net, i: usize, tmp: TempDir, store: PathBuf) -> Host {
        Host {
            daemon: Daemon::new(tmp.path(), store),
            index: i,
            ns_path: net.ns_path(i),
            ip: net.ip(i),
            _tmp: tmp,
        }
    }

    fn launch(&mut self, extra: &[&str]) {
        let launcher = nsenter(&self.ns_path, bin("sheepfs"));
        self.daemon.spawn(launcher, extra);
    }

    /// Starts the daemon again on the same store, mount point and socket, with `extra`
    /// arguments, and waits until it is ready. A daemon that still runs is stopped first
    /// ([`Host::stop`]).
    pub fn restart(&mut self, extra: &[&str]) {
        if self.daemon.running() {
            self.stop();
        }
        self.launch(extra);
        self.daemon.must_wait_ready();
    }

    /// Starts the daemon again on the same store, mount point and socket, with `extra`
    /// arguments, and returns at once: a host restarted after the whole cluster stopped mounts
    /// only once the cluster resumes, so the caller relaunches every host first, then calls
    /// [`Host::wait_ready`] on each. The daemon must not be running.
    pub fn relaunch(&mut self, extra: &[&str]) {
        assert!(!self.daemon.running(), "relaunch of a running host");
        self.launch(extra);
    }

    /// Waits until the daemon is mounted and its admin socket answers (see [`Host::relaunch`]);
    /// panics with the log if it exits first or takes longer than 30 s.
    pub fn wait_ready(&mut self) {
        self.daemon.must_wait_ready();
    }

    /// Returns true when the mount is up (`fuse.sheepfs` in the mount table).
    pub fn mounted(&self) -> bool {
        crate::daemon::is_mounted(&self.daemon.mount, Some("fuse.sheepfs"))
    }

    /// Returns `dog node recovery --json` of this host, None when `dog` fails or prints no
    /// JSON.
    pub fn recovery(&self) -> Option<Value> {
        let out = self.dog(&["node", "recovery", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Kills the daemon with SIGKILL (a crash) and lazily unmounts its dead mount.
    pub fn kill9(&mut self) {
        self.daemon.kill();
    }

    /// Stops the daemon with SIGTERM; asserts that it exits 0 within 30 s and unmounts. Every
    /// file the test opened on the mount must be closed.
    pub fn stop(&mut self) {
        self.daemon.must_stop("Host::stop()");
    }

    /// Returns true while the daemon runs.
    pub fn running(&mut self) -> bool {
        self.daemon.running()
    }

    /// Returns the index of this host in its [`Net`].
    pub fn index(&self) -> usize {
        self.index
    }

    /// Returns this host's address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Returns the members this host reports (`dog node list --json`, through
    /// [`members_of`]); empty when `dog` fails.
    pub fn members(&self) -> Vec<Value> {
        let out = self.dog(&["node", "list", "--json"]);
        if !out.status.success() {
            return Vec::new();
        }
        members_of(&String::from_utf8_lossy(&out.stdout)).unwrap_or_default()
    }

    /// Returns the epoch this host reports (`dog cluster info --json`, through [`epoch_of`]).
    pub fn epoch(&self) -> Option<u64> {
        let out = self.dog(&["cluster", "info", "--json"]);
        if !out.status.success() {
            return None;
        }
        epoch_of(&String::from_utf8_lossy(&out.stdout))
    }

    /// Waits up to [`CLUSTER_TIMEOUT`] until this host reports exactly `n` live members; panics
    /// with the last `dog node list --json` output and the log otherwise.
    pub fn wait_members(&self, n: usize) {
        if poll_until(CLUSTER_TIMEOUT, || self.members().len() == n) {
            return;
        }
        let out = self.dog(&["node", "list", "--json"]);
        panic!(
            "host {} ({}) does not report {n} members after {CLUSTER_TIMEOUT:?}\n{}\n{}",
            self.index,
            self.ip,
            describe("dog node list --json", &out),
            self.log()
        );
    }
}

/// The one place that knows the shape of `dog node list --json`: returns its live members.
///
/// Accepts a top-level array or an object holding one under `nodes`, `members` or `hosts`. A
/// member with a `status` or `state` naming a dead or departed host (`failed`, `left`, `down`,
/// `dead`, `gone`, `leaving`) is not counted. None when the text is not such JSON.
pub fn members_of(json: &str) -> Option<Vec<Value>> {
    let value: Value = serde_json::from_str(json).ok()?;
    let list = match &value {
        Value::Array(list) => list,
        Value::Object(map) => ["nodes", "members", "hosts"]
            .iter()
            .find_map(|key| map.get(*key)?.as_array())?,
        _ => return None,
    };
    let dead = ["failed", "left", "down", "dead", "gone", "leaving"];
    let live = |member: &&Value| {
        let status = ["status", "state"]
            .iter()
            .find_map(|key| member.get(*key)?.as_str());
        !status.is_some_and(|s| dead.iter().any(|d| s.eq_ignore_ascii_case(d)))
    };
    Some(list.iter().filter(live).cloned().collect())
}

/// The one place that knows the shape of `dog cluster info --json`: returns its epoch, found
/// under `epoch` at the top or in a `cluster` object, as a number or a numeric string.
pub fn epoch_of(json: &str) -> Option<u64> {
    let value: Value = serde_json::from_str(json).ok()?;
    let epoch = value
        .get("epoch")
        .or_else(|| value.get("cluster")?.get("epoch"))?;
    epoch
        .as_u64()
        .or_else(|| epoch.as_str()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_names_give_their_slot_and_others_none() {
        assert_eq!(slot_of("sheepnet-1a2b-0"), Some(0x1a2b));
        assert_eq!(slot_of("sbr1a2b"), Some(0x1a2b));
        assert_eq!(slot_of("sbr1a2bb"), Some(0x1a2b));
        assert_eq!(slot_of("sp00ff-12"), Some(0xff));
        assert_eq!(slot_of("sv00ff-3"), Some(0xff));
        for other in [
            "eth0",
            "sbr1a2",
            "sp1a2b0",
            "sv1a2b-",
            "svc0",
            "sp1a2b-x",
            "sheepnet-zzzz-1",
        ] {
            assert_eq!(slot_of(other), None, "{other}");
        }
    }

    #[test]
    fn members_are_found_in_an_array_or_under_a_key_and_dead_ones_dropped() {
        let two = r#"[{"id":"a"},{"id":"b","status":"up"}]"#;
        assert_eq!(members_of(two).map(|m| m.len()), Some(2));
        let keyed = r#"{"epoch":3,"nodes":[{"id":"a"},{"id":"b","state":"Failed"}]}"#;
        assert_eq!(members_of(keyed).map(|m| m.len()), Some(1));
        assert_eq!(members_of(r#"{"members":[]}"#).map(|m| m.len()), Some(0));
        assert_eq!(members_of("not json"), None);
        assert_eq!(members_of(r#"{"other":1}"#), None);
    }

    #[test]
    fn epoch_is_found_at_the_top_or_under_cluster() {
        assert_eq!(epoch_of(r#"{"epoch":7}"#), Some(7));
        assert_eq!(epoch_of(r#"{"cluster":{"epoch":"8"}}"#), Some(8));
        assert_eq!(epoch_of(r#"{"members":[]}"#), None);
    }
}
