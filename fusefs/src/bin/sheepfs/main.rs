//! `sheepfs MOUNTPOINT`: one sheepfs node — its object store, its VDI pool, the FUSE mount and
//! the admin socket.
//!
//! Start-up: validate the options, open the store (creating it and the node id the first time),
//! open the pool, check the mount point, start the cluster node and the admin socket, become a
//! member of the cluster, then mount. A host restarted on a stored log whose last epoch had
//! other members waits for them (as long as it takes; `dog cluster info` says for whom, and
//! `dog cluster recover force` resumes without them). The node is ready when the mount shows in
//! `/proc/self/mountinfo` as `fuse.sheepfs`.
//!
//! Threads: the FUSE session runs on this thread and `--threads` fuser workers, which call the
//! pool directly; a 2-worker tokio runtime serves only the admin socket and the signals.
//!
//! Memory: `--cache-size` is split between the FUSE workers' receive buffers (their count and
//! `max_write` are lowered until those fit) and one budget that every other large I/O buffer is
//! taken from (see `sheep_fusefs::memory`). glibc's malloc is told to map every allocation of
//! [`MMAP_THRESHOLD`] or more on its own, so that what is freed goes back to the system at once
//! instead of staying in a thread's arena.
//!
//! Shutdown: SIGINT/SIGTERM flush every VDI and unmount. If files are still open the mount is
//! detached lazily and the session ends when the last one closes; a second signal stops at once.
//! When the session ends, for a signal or an external `umount`, the pool is flushed again, the
//! admin socket removed and the process exits 0.

mod cli;

use anyhow::{bail, Context};
use clap::Parser;
use parking_lot::Mutex;
use sheep_admin::AdminService;
use sheep_fusefs::admin::ClusterInfoSource;
use sheep_fusefs::admin::{NodeIdentity, NodeService};
use sheep_fusefs::cluster::{self, ClusterLog, Membership, PoolCopies};
use sheep_fusefs::config::DaemonConfig;
use sheep_fusefs::fuse::{
    max_write_allowed, mount_config, FsOptions, QuorumGate, SheepFs, MAX_WRITE,
};
use sheep_fusefs::identity::{load_or_create_node_id, lock_store, StoreLock};
use sheep_fusefs::memory::{self, MemoryPlan, MemorySource};
use sheep_fusefs::mountpoint::check_mountpoint;
use sheep_objects::replicated::{ReplicaConfig, ReplicatedStore};
use sheep_objects::{DiskStore, FaultyStore, MemBudget, ObjectStore};
use sheep_p2p::net::{Cluster, NetConfig};
use sheep_p2p::order::{Config as OrderConfig, MemberInfo, View};
use sheep_vdi::{Pool, PoolConfig, Reclaimer};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// Log filter when `RUST_LOG` is not set.
const DEFAULT_LOG: &str = "sheep=info,fuser=warn";

/// How long start-up waits for the admin socket to accept connections.
const ADMIN_READY_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    tune_malloc();
    let args = cli::Cli::parse();
    init_logging();
    let file = match args.config.as_deref().map(load_config).transpose() {
        Ok(file) => file,
        Err(e) => {
            error!(error = %format!("{e:#}"), "cannot use the configuration file");
            return ExitCode::FAILURE;
        }
    };
    let config = args.into_config(file);
    install_panic_hook();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %format!("{e:#}"), "sheepfs stopped on an error");
            ExitCode::FAILURE
        }
    }
}

/// Allocations from this size up are mapped on their own by glibc (and unmapped when freed).
const MMAP_THRESHOLD: i32 = 128 << 10;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`]. By default it grows up to 32 MiB after
/// a large block is freed, and from then on 4 MiB buffers come from the per-thread arenas and
/// stay resident there once freed (what made the resident memory grow with the threads that
/// ever did large I/O).
#[allow(unsafe_code)]
fn tune_malloc() {
    // SAFETY: mallopt only sets a tunable of glibc's allocator; it takes plain integers and is
    // called first thing in main, before any other thread exists.
    let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    if set != 1 {
        eprintln!(
            "sheepfs: could not set malloc's mmap threshold; freed buffers may stay resident"
        );
    }
}

/// Splits `--cache-size` (see `sheep_fusefs::memory`) and creates the I/O buffer budget.
fn plan_memory(config: &DaemonConfig) -> (MemoryPlan, Arc<MemBudget>) {
    let plan = memory::plan(
        config.cache_size,
        config.threads,
        max_write_allowed(MAX_WRITE),
    );
    if plan.threads < config.threads {
        warn!(
            threads = config.threads,
            fit = plan.threads,
            "the FUSE threads' buffers do not fit in three quarters of --cache-size: fewer threads"
        );
    }
    info!(
        cache_size = plan.cache_size,
        threads = plan.threads,
        max_write = plan.max_write,
        fuse_buffers = plan.fuse_buffers,
        io_budget = plan.io_budget,
        "memory plan"
    );
    let limit = usize::try_from(plan.io_budget).unwrap_or(usize::MAX);
    (plan, MemBudget::new(limit))
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Logs panics through `tracing`, so they land in the daemon's log with everything else.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        error!(panic = %msg, %location, %thread, "panic");
    }));
}

/// Everything the signal handler needs to stop the node.
struct Stopper {
    pool: Arc<Pool>,
    mountpoint: PathBuf,
    socket: PathBuf,
    requested: AtomicBool,
    unmounter: Mutex<Option<fuser::SessionUnmounter>>,
}

impl Stopper {
    /// First signal: flush, then unmount (lazily when files are still open).
    fn stop(&self) {
        self.requested.store(true, Ordering::SeqCst);
        flush(&self.pool);
        let mut slot = self.unmounter.lock();
        if let Some(unmounter) = slot.as_mut() {
            self.unmount(unmounter);
        }
    }

    fn unmount(&self, unmounter: &mut fuser::SessionUnmounter) {
        info!(mountpoint = %self.mountpoint.display(), "unmounting");
        if let Err(e) = unmounter.unmount() {
            warn!(error = %e, "unmount failed (files still open?); detaching the mount lazily");
            let detach = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
            if let Err(e) = detach {
                error!(error = %e, "lazy unmount failed; send the signal again to force a stop");
            }
        }
    }

    /// Second signal: flush and exit without waiting for open files to close.
    fn force(&self) -> ! {
        warn!("second signal: exiting without waiting for open files");
        flush(&self.pool);
        let _ = std::fs::remove_file(&self.socket);
        std::process::exit(1);
    }
}

/// Reads and parses the `--config` file.
fn load_config(path: &std::path::Path) -> anyhow::Result<DaemonConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    DaemonConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))
}

/// How often the reclaimer looks for objects to delete.
const RECLAIM_INTERVAL: Duration = Duration::from_secs(2);
/// How often writes no fsync covered are made durable in the background.
const WRITEBACK_INTERVAL: Duration = Duration::from_secs(30);

fn flush(pool: &Pool) {
    match pool.flush_all() {
        Ok(()) => info!("every VDI flushed"),
        Err(e) => error!(error = %e, "flushing the pool failed"),
    }
}

fn run(config: DaemonConfig) -> anyhow::Result<()> {
    config.validate()?;
    let mountpoint = check_mountpoint(&config.mountpoint)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sheep-net")
        .on_thread_start(raise_priority)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let (plan, budget) = plan_memory(&config);
    let started = start_node(&config, &rt, &budget)?;
    let (_store_lock, pool, node) = (started.lock, started.pool.clone(), started.node.clone());
    let node = NodeIdentity {
        mount: mountpoint.clone(),
        ..node
    };

    let stopper = Arc::new(Stopper {
        pool: Arc::clone(&pool),
        mountpoint: mountpoint.clone(),
        socket: config.admin_socket.clone(),
        requested: AtomicBool::new(false),
        unmounter: Mutex::new(None),
    });
    watch_signals(&rt, Arc::clone(&stopper))?;

    let service = Arc::new(NodeService::new(Arc::clone(&pool), node));
    service.set_cluster(Arc::new(started.info.clone()));
    service.set_memory(MemorySource {
        plan,
        budget: budget.clone(),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let admin: Arc<dyn AdminService> = service.clone();
    let socket = config.admin_socket.clone();
    let admin_task =
        rt.spawn(async move { sheep_admin::server::serve(&socket, admin, shutdown_rx).await });
    let admin_task = wait_for_admin_socket(&rt, admin_task, &config.admin_socket)?;

    let Some(view) = join_cluster(&started.cluster, &stopper)? else {
        info!("stopped before joining a cluster");
        let _ = shutdown_tx.send(true);
        stop_admin(&rt, admin_task, &config.admin_socket);
        if let Err(e) = started.cluster.shutdown(Duration::from_secs(5)) {
            warn!(error = %e, "stopping the cluster node failed");
        }
        started.store.shutdown();
        rt.shutdown_timeout(Duration::from_secs(1));
        return Ok(());
    };
    pool.restarted()
        .context("cannot release what the previous run held")?;
    info!(
        epoch = view.epoch,
        members = view.members.len(),
        vdis = pool.stats().map_or(0, |s| s.vdis),
        "cluster joined"
    );
    // Deletes what nothing references within seconds, bounds what a crash can lose of writes
    // no fsync covered, and hands VDIs over to hosts that want to write them.
    let reclaimer = Reclaimer::spawn(
        Arc::clone(&pool),
        RECLAIM_INTERVAL,
        Some(WRITEBACK_INTERVAL),
    )
    .context("cannot start the reclaimer thread")?;

    // A host cut off in a minority of the cluster answers EIO after --io-timeout (at the
    // mount, and in the replicated store for requests that start inside the daemon).
    {
        let cluster = started.cluster.clone();
        started
            .store
            .set_quorum_check(Arc::new(move || cluster.has_quorum()));
    }
    let gate = {
        let cluster = started.cluster.clone();
        QuorumGate::new(
            move || cluster.has_quorum(),
            Duration::from_secs(config.io_timeout),
        )
    };
    let options = FsOptions {
        quorum: Some(gate),
        max_write: plan.max_write,
        budget,
        ..FsOptions::default()
    };
    let fs = SheepFs::new(Arc::clone(&pool), options);
    let mut session = fuser::Session::new(fs, &mountpoint, &mount_config(plan.threads))
        .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    service.set_notifier(session.notifier());
    {
        let mut slot = stopper.unmounter.lock();
        let mut unmounter = session.unmount_callable();
        if stopper.requested.load(Ordering::SeqCst) {
            stopper.unmount(&mut unmounter);
        }
        *slot = Some(unmounter);
    }
    info!(
        mountpoint = %mountpoint.display(),
        store = %config.store.display(),
        socket = %config.admin_socket.display(),
        threads = plan.threads,
        "sheepfs mounted"
    );

    // After a lazy unmount the kernel ends the connection with ECONNABORTED (or ENODEV) once
    // the last open file closes: that is the normal end of a detached session.
    let served = match session.run() {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ECONNABORTED) | Some(libc::ENODEV)
            ) =>
        {
            info!(error = %e, "FUSE connection closed by the kernel");
            Ok(())
        }
        other => other,
    };
    info!("FUSE session ended");
    let _ = shutdown_tx.send(true);
    stop_admin(&rt, admin_task, &config.admin_socket);
    drop(reclaimer);
    let flushed = pool.flush_all().and_then(|()| pool.reclaim().map(|_| ()));
    // Others stop waiting for a host that says goodbye. The last member stays in its own
    // view, so that it resumes the cluster's history when it starts again.
    let alone = started.cluster.view().is_none_or(|v| v.members.len() <= 1);
    let stopped = if alone {
        started.cluster.shutdown(Duration::from_secs(5))
    } else {
        started.cluster.leave(Duration::from_secs(5))
    };
    if let Err(e) = stopped {
        warn!(error = %e, "leaving the cluster cleanly failed");
    }
    started.store.shutdown();
    if let Err(e) = started.disk.close() {
        warn!(error = %e, "closing the object store failed: the next start re-checks it");
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    served.context("the FUSE session failed")?;
    flushed.context("flushing the pool at shutdown failed")?;
    info!("sheepfs stopped");
    Ok(())
}

/// A started node: the store lock, the pool, and its place in the cluster.
struct Started {
    lock: StoreLock,
    pool: Arc<Pool>,
    node: NodeIdentity,
    cluster: Cluster,
    store: Arc<ReplicatedStore>,
    info: ClusterInfoSource,
    /// The local object store, closed (marked clean) at the very end.
    disk: Arc<DiskStore>,
}

/// Binds the data channel's listener on the port of the previous run (kept in `STORE/data-port`),
/// else on a free port that is then kept: after a whole-cluster restart the members resume with
/// the data addresses their stored log holds, so those must stay valid.
fn bind_data(dir: &std::path::Path, ip: IpAddr) -> anyhow::Result<TcpListener> {
    let file = dir.join("data-port");
    if let Some(port) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
    {
        match TcpListener::bind(SocketAddr::new(ip, port)) {
            Ok(l) => return Ok(l),
            Err(e) => {
                warn!(port, error = %e, "cannot listen for object data on the port of the previous run: taking another")
            }
        }
    }
    let l = TcpListener::bind(SocketAddr::new(ip, 0))?;
    let port = l.local_addr()?.port();
    let tmp = dir.join("data-port.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{port}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &file)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(l)
}

/// Nice value of the cluster runtime's threads.
const NET_NICE: i32 = -10;

/// Runs the calling thread at [`NET_NICE`]. The cluster runtime carries the heartbeats that
/// failure detection and the quorum gate rely on; a host saturated with I/O (32 FUSE threads,
/// the data channel) must not be taken for dead because these threads wait for a core, so
/// they run ahead of the I/O threads (corosync runs real-time for the same reason). Without the
/// privilege the thread keeps the default priority.
fn raise_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), NET_NICE) {
        tracing::debug!(error = %e, "cluster thread keeps the default priority");
    }
}

/// Locks and opens (or creates) the store and its node id, joins or forms the cluster, and
/// rebuilds the pool from the metadata log.
fn start_node(
    config: &DaemonConfig,
    rt: &Runtime,
    budget: &Arc<MemBudget>,
) -> anyhow::Result<Started> {
    let dir = &config.store;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the store directory {}", dir.display()))?;
    let lock = lock_store(dir)?;
    let node_id = load_or_create_node_id(dir)?;
    let disk = Arc::new(
        DiskStore::open(dir)
            .with_context(|| format!("cannot open the object store in {}", dir.display()))?,
    );
    disk.set_budget(budget.clone());
    let local: Arc<dyn ObjectStore> = match &config.fault_file {
        Some(path) => {
            warn!(path = %path.display(), "fault injection enabled on the local store");
            Arc::new(FaultyStore::with_control_file(disk.clone(), path))
        }
        None => disk.clone(),
    };
    let capacity = local.stats().map(|s| s.capacity).unwrap_or(1 << 40);

    let listen: SocketAddr = config
        .listen
        .as_deref()
        .unwrap_or(DEFAULT_LISTEN)
        .parse()
        .context("--listen must be IP:PORT")?;
    let data = bind_data(dir, listen.ip())
        .with_context(|| format!("cannot listen for object data on {}", listen.ip()))?;
    let data_port = data.local_addr()?.port();
    let data_addrs = advertised(listen.ip(), data_port);
    let copies = Arc::new(PoolCopies::new(config.copies));
    // The replicated store's tuning grows with recovery: keep its other defaults.
    #[allow(clippy::needless_update)]
    let replica = ReplicaConfig {
        io_timeout: Duration::from_secs(config.io_timeout),
        reserve: config.store_reserve,
        budget: budget.clone(),
        ..ReplicaConfig::default()
    };
    let store = ReplicatedStore::new(node_id, local.clone(), copies.clone(), replica);
    store.serve(data).context("cannot serve object data")?;

    let me = MemberInfo {
        id: node_id,
        data_addrs: data_addrs.clone(),
        capacity,
        incarnation: rand_u64(),
    };
    let net = NetConfig {
        cluster: config.cluster.clone(),
        listen,
        peers: config.peers.clone(),
        mdns: config.mdns,
        order: OrderConfig {
            failure_timeout: Duration::from_secs(config.failure_timeout),
            ..OrderConfig::default()
        },
        log_dir: dir.join("cluster"),
    };
    if !config.mdns && config.peers.is_empty() {
        info!("no mDNS and no --peer: this host forms its own cluster");
    }
    let (cluster, restored, rx) =
        Cluster::start(net, me.clone(), rt.handle()).context("cannot start the cluster node")?;
    let pool_config = PoolConfig {
        default_copies: config.copies,
    };
    let pool = Arc::new(Pool::new(
        store.clone() as Arc<dyn ObjectStore>,
        local,
        pool_config,
        node_id,
        Arc::new(ClusterLog::new(
            cluster.clone(),
            Duration::from_secs(config.io_timeout),
        )),
    ));
    copies.attach(&pool);
    {
        // A failing store takes this host out of the data placement (through the log).
        let weak = Arc::downgrade(&pool);
        store.on_store_failed(Box::new(move || {
            let spawned = std::thread::Builder::new()
                .name("sheep-store-out".into())
                .spawn(move || {
                    if let Some(pool) = weak.upgrade() {
                        if let Err(e) = pool.store_out() {
                            tracing::error!(error = %e, "cannot take this host out of the data placement");
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the store-out thread");
            }
        }));
    }
    let members = Arc::new(Mutex::new(Membership::new(me)));
    for e in &restored {
        cluster::apply(e, false, &pool, &store, &members);
    }
    // (Counted without `Pool::list`, whose usage figures may ask other hosts for their
    // copies: that would hold the admin socket back while the cluster is not up.)
    info!(
        entries = restored.len(),
        vdis = pool.stats().map_or(0, |s| s.vdis),
        "metadata log replayed"
    );
    cluster::spawn_apply_loop(rx, cluster.clone(), pool.clone(), store.clone(), members)
        .context("cannot start the apply thread")?;
    info!(node_id = %node_id, listen = %listen, data = ?data_addrs, "waiting to join a cluster");
    let node = NodeIdentity {
        node_id,
        store: dir.clone(),
        mount: PathBuf::new(),
        cluster: config.cluster.clone(),
    };
    let info = ClusterInfoSource {
        cluster: cluster.clone(),
        store: store.clone(),
        pool: pool.clone(),
    };
    Ok(Started {
        lock,
        pool,
        node,
        cluster,
        store,
        info,
        disk,
    })
}

/// Default `--listen`.
const DEFAULT_LISTEN: &str = "0.0.0.0:7000";

/// How long start-up waits to become a member, unless it waits for the members of the last
/// epoch of its stored log (then it waits as long as it takes).
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// How often a host that waits for the members of its last epoch says so in its log.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(30);

/// Waits until this host is a member of the cluster and returns the view; `None` when a
/// signal asked to stop meanwhile. A host restarted on a stored log whose last epoch had other
/// members waits for them as long as it takes (or for `dog cluster recover force`), and says
/// so every [`WAITING_LOG_EVERY`]; another gives up after [`JOIN_TIMEOUT`].
fn join_cluster(cluster: &Cluster, stopper: &Stopper) -> anyhow::Result<Option<View>> {
    let start = Instant::now();
    let mut next_log = start + Duration::from_secs(5);
    loop {
        if stopper.requested.load(Ordering::SeqCst) {
            return Ok(None);
        }
        match cluster.wait_member(Duration::from_millis(500)) {
            Ok(v) => return Ok(Some(v)),
            Err(sheep_p2p::Error::Timeout) => {}
            Err(e) => return Err(e).context("the cluster node stopped"),
        }
        let now = Instant::now();
        match cluster.status().waiting {
            Some(w) if now >= next_log => {
                let missing: Vec<String> = w.missing.iter().map(ToString::to_string).collect();
                warn!(
                    epoch = w.epoch,
                    missing = %missing.join(" "),
                    forced = w.forced,
                    "waiting for the members of the last epoch; `dog cluster recover force` resumes without them"
                );
                next_log = now + WAITING_LOG_EVERY;
            }
            Some(_) => {}
            None if now.duration_since(start) > JOIN_TIMEOUT => {
                bail!("did not become a member of a cluster within {JOIN_TIMEOUT:?}")
            }
            None => {}
        }
    }
}

/// The addresses other hosts can reach the data channel at.
fn advertised(ip: IpAddr, port: u16) -> Vec<SocketAddr> {
    if !ip.is_unspecified() {
        return vec![SocketAddr::new(ip, port)];
    }
    let mut out: Vec<SocketAddr> = nix::ifaddrs::getifaddrs()
        .map(|it| {
            it.filter_map(|i| i.address)
                .filter_map(|a| a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())))
                .filter(|ip| !ip.is_loopback())
                .map(|ip| SocketAddr::new(ip, port))
                .collect()
        })
        .unwrap_or_default();
    out.push(SocketAddr::new(
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        port,
    ));
    out
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    u64::from_le_bytes(b) ^ u64::from(std::process::id())
}

/// Installs the SIGINT/SIGTERM handlers; the first signal stops, the second forces.
fn watch_signals(rt: &Runtime, stopper: Arc<Stopper>) -> anyhow::Result<()> {
    let _guard = rt.enter();
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    rt.spawn(async move {
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            seen += 1;
            info!(signal = name, "stopping");
            let stopper = Arc::clone(&stopper);
            let first = seen == 1;
            // Flushing and unmounting block: keep them off the runtime's workers.
            drop(tokio::task::spawn_blocking(move || match first {
                true => stopper.stop(),
                false => stopper.force(),
            }));
        }
    });
    Ok(())
}

type AdminTask = JoinHandle<sheep_admin::Result<()>>;

/// Waits until the admin socket accepts connections, or the server failed to start.
fn wait_for_admin_socket(rt: &Runtime, task: AdminTask, path: &Path) -> anyhow::Result<AdminTask> {
    let deadline = Instant::now() + ADMIN_READY_TIMEOUT;
    loop {
        if task.is_finished() {
            return match rt.block_on(task) {
                Ok(Ok(())) => bail!("the admin server stopped at start-up"),
                Ok(Err(e)) => Err(e).context("cannot start the admin socket"),
                Err(e) => Err(e).context("the admin server crashed"),
            };
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Ok(task);
        }
        if Instant::now() > deadline {
            bail!("the admin socket {} did not come up", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the admin server and makes sure its socket file is gone.
fn stop_admin(rt: &Runtime, task: AdminTask, path: &Path) {
    // The timer must be created inside the runtime.
    match rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await }) {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "admin server failed"),
        Ok(Err(e)) => warn!(error = %e, "admin server crashed"),
        Err(_) => warn!("admin server did not stop in time"),
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(socket = %path.display(), error = %e, "cannot remove the admin socket"),
    }
}
