use super::*;
use crate::client::Client;
use crate::wire::VdiInfo;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use tokio::task::JoinHandle;

/// Answers `VdiList` with one VDI, `VdiDelete` of "missing" with `NotFound`, panics on
/// `NodeInfo` and says `Done` to the rest.
struct FakeService;

impl AdminService for FakeService {
    fn handle(&self, req: Request) -> Result<Reply, WireError> {
        match req {
            Request::VdiList => Ok(Reply::VdiList(vec![vdi("vm0")])),
            Request::VdiDelete { name, .. } if name == "missing" => Err(WireError::NotFound(name)),
            Request::NodeInfo => panic!("fake handler panics"),
            _ => Ok(Reply::Done),
        }
    }
}

fn vdi(name: &str) -> VdiInfo {
    VdiInfo {
        name: name.into(),
        tag: None,
        vid: 1,
        size: 1 << 30,
        used: 0,
        shared: 0,
        copies: 1,
        created: 0,
        parent: None,
        snapshot: false,
    }
}

struct Running {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

async fn must_start(policy: PeerPolicy) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/sheepfs/admin.sock");
    let (stop, rx) = watch::channel(false);
    let service: Arc<dyn AdminService> = Arc::new(FakeService);
    let task = tokio::spawn({
        let path = path.clone();
        async move { serve_with_policy(&path, service, rx, policy).await }
    });
    for _ in 0..500 {
        let ready = std::fs::metadata(&path).is_ok_and(|m| m.mode() & 0o777 == 0o600);
        if ready {
            return Running {
                _dir: dir,
                path,
                stop,
                task,
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("admin server did not start");
}

async fn must_call(path: &Path, req: Request) -> crate::Result<Reply> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || Client::connect(&path)?.call(&req))
        .await
        .unwrap()
}

/// Sends raw bytes, returns the decoded answer and checks that the server then hangs up.
async fn must_send_raw(path: &Path, bytes: &[u8]) -> Result<Reply, WireError> {
    let mut stream = UnixStream::connect(path).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).await.unwrap();
    let len = decode_header(ADMIN_KIND, &header, MAX_FRAME).unwrap().len;
    let mut frame = header.to_vec();
    frame.resize(HEADER_LEN + usize::try_from(len).unwrap(), 0);
    stream.read_exact(&mut frame[HEADER_LEN..]).await.unwrap();
    // Unread input makes Linux report the close as a reset rather than an end of stream.
    let mut rest = [0u8; 1];
    match stream.read(&mut rest).await {
        Ok(n) => assert_eq!(n, 0, "the server kept the connection open"),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
    }
    decode(ADMIN_KIND, &frame, MAX_FRAME).unwrap()
}

fn root_policy() -> PeerPolicy {
    PeerPolicy::current()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_answered_by_the_service() {
    let srv = must_start(root_policy()).await;
    let reply = must_call(&srv.path, Request::VdiList).await.unwrap();
    assert_eq!(reply, Reply::VdiList(vec![vdi("vm0")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_several_requests() {
    let srv = must_start(root_policy()).await;
    let path = srv.path.clone();
    let replies = tokio::task::spawn_blocking(move || {
        let mut client = Client::connect(&path).unwrap();
        let a = client.call(&Request::ClusterInfo).unwrap();
        let b = client.call(&Request::VdiList).unwrap();
        (a, b)
    })
    .await
    .unwrap();
    assert_eq!(replies.0, Reply::Done);
    assert!(matches!(replies.1, Reply::VdiList(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_error_reaches_the_client_as_remote() {
    let srv = must_start(root_policy()).await;
    let req = Request::VdiDelete {
        name: "missing".into(),
        tag: None,
    };
    let err = must_call(&srv.path, req).await.unwrap_err();
    assert!(matches!(err, Error::Remote(WireError::NotFound(n)) if n == "missing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_gives_an_io_error_and_the_server_survives() {
    let srv = must_start(root_policy()).await;
    let err = must_call(&srv.path, Request::NodeInfo).await.unwrap_err();
    assert!(matches!(err, Error::Remote(WireError::Io(_))));
    assert!(must_call(&srv.path, Request::VdiList).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_frame_gets_an_error_reply_and_the_connection_closes() {
    let srv = must_start(root_policy()).await;
    let reply = must_send_raw(&srv.path, &[0xab; 40]).await;
    assert!(matches!(reply, Err(WireError::Invalid(m)) if m.contains("magic")));
    assert!(must_call(&srv.path, Request::VdiList).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_from_its_header() {
    let srv = must_start(root_policy()).await;
    let mut header = encode(ADMIN_KIND, &Request::VdiList, MAX_FRAME).unwrap();
    header.truncate(HEADER_LEN);
    let huge = u32::try_from(MAX_FRAME + 1).unwrap();
    header[8..12].copy_from_slice(&huge.to_le_bytes());
    let reply = must_send_raw(&srv.path, &header).await;
    assert!(matches!(reply, Err(WireError::Invalid(m)) if m.contains("exceeds")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_envelope_with_a_bad_payload_is_refused() {
    let srv = must_start(root_policy()).await;
    let frame = encode(ADMIN_KIND, &999u32, MAX_FRAME).unwrap();
    let reply = must_send_raw(&srv.path, &frame).await;
    assert!(matches!(reply, Err(WireError::Invalid(_))));
}

#[test]
fn the_default_policy_admits_root_and_the_daemon_user_only() {
    let policy = PeerPolicy::current();
    assert!(policy.allows(0));
    assert!(policy.allows(nix::unistd::geteuid().as_raw()));
    assert!(!policy.allows(u32::MAX));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_the_policy_is_refused() {
    let srv = must_start(PeerPolicy {
        allowed: [u32::MAX; 2],
    })
    .await;
    let err = must_call(&srv.path, Request::VdiList).await.unwrap_err();
    assert!(matches!(err, Error::Remote(WireError::Invalid(m)) if m == PERMISSION_DENIED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_server_and_removes_the_socket() {
    let srv = must_start(root_policy()).await;
    srv.stop.send(true).unwrap();
    srv.task.await.unwrap().unwrap();
    assert!(!srv.path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn({
        let path = path.clone();
        async move { serve(&path, Arc::new(FakeService), rx).await }
    });
    let mut answered = false;
    for _ in 0..200 {
        if must_call(&path, Request::VdiList).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(answered);
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_socket_or_a_regular_file_is_not_taken_over() {
    let srv = must_start(root_policy()).await;
    let (_stop, rx) = watch::channel(false);
    let err = serve(&srv.path, Arc::new(FakeService), rx)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Bind { .. }));
    let file = srv._dir.path().join("plain");
    std::fs::write(&file, b"keep me").unwrap();
    let (_stop, rx) = watch::channel(false);
    assert!(serve(&file, Arc::new(FakeService), rx).await.is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}
