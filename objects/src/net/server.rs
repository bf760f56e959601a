//! The server side of the data channel: one thread per connection, requests served in order.
//!
//! A connection that sends anything that is not a valid request (bad magic, unknown kind,
//! oversized body) is closed; other connections are not affected.
//!
//! A connection holds no buffer between requests: each request takes its body and room for
//! its response ([`ReqHeader::reply_bound`]) from the server's [`MemBudget`] at once, after its
//! header. A request that finds no room within [`PATIENCE`] is answered [`Status::Retry`] (its
//! body read and dropped) rather than wait longer: the bytes may be held by requests of this
//! host that wait for answers from the sender, and the sender retries anyway.

use super::proto::{ReqHeader, RespHeader, Status, MAX_BODY, REQ_HEADER_LEN, RESP_HEADER_LEN};
use crate::budget::MemBudget;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Responses up to this size are written in one call with their header.
const COALESCE: usize = 64 << 10;

/// How long a request waits for room in the budget before it is answered [`Status::Retry`].
pub const PATIENCE: Duration = Duration::from_secs(2);

/// The outcome of one request, as the handler reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Outcome.
    pub status: Status,
    /// The server's epoch.
    pub epoch: u64,
    /// Kind-specific value.
    pub value: u64,
}

/// What serves the requests.
pub trait Handler: Send + Sync + 'static {
    /// Serves one request; the response body (empty at the call) goes to `out`.
    fn handle(&self, req: &ReqHeader, body: &[u8], out: &mut Vec<u8>) -> Reply;
}

/// A running server.
pub struct Server {
    stop: AtomicBool,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next: AtomicU64,
    addr: SocketAddr,
}

impl Server {
    /// Serves `listener` with `handler` on background threads, with request and response
    /// bodies taken from `budget`.
    pub fn spawn<H: Handler>(
        listener: TcpListener,
        handler: Arc<H>,
        budget: Arc<MemBudget>,
    ) -> io::Result<Arc<Server>> {
        let addr = listener.local_addr()?;
        let server = Arc::new(Server {
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            addr,
        });
        let s = server.clone();
        std::thread::Builder::new()
            .name("sheep-data-accept".into())
            .spawn(move || s.accept_loop(&listener, &handler, &budget))?;
        Ok(server)
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        for (_, c) in self.conns.lock().drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn accept_loop<H: Handler>(
        self: &Arc<Self>,
        listener: &TcpListener,
        handler: &Arc<H>,
        budget: &Arc<MemBudget>,
    ) {
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) => {
                    if self.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    tracing::warn!(error = %e, "data channel: accept failed");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            match stream.try_clone() {
                Ok(c) => {
                    self.conns.lock().insert(id, c);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "data channel: cannot register a connection");
                    continue;
                }
            }
            let (s, h, b) = (self.clone(), handler.clone(), budget.clone());
            let spawned = std::thread::Builder::new()
                .name("sheep-data-conn".into())
                .spawn(move || {
                    if let Err(e) = serve_conn(stream, &*h, &b) {
                        tracing::debug!(%peer, error = %e, "data channel: connection closed");
                    }
                    s.conns.lock().remove(&id);
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "data channel: cannot spawn a connection thread");
                self.conns.lock().remove(&id);
            }
        }
    }
}

fn serve_conn<H: Handler + ?Sized>(
    mut stream: TcpStream,
    handler: &H,
    budget: &Arc<MemBudget>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_secs(120)))?;
    loop {
        let mut h = [0u8; REQ_HEADER_LEN];
        match stream.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let req = ReqHeader::decode(&h).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        let len = req.body_len as usize;
        if len > MAX_BODY {
            return Err(io::Error::new(ErrorKind::InvalidData, "body too large"));
        }
        let Some((mut body, mut out)) = budget.try_pair(len, req.reply_bound(), PATIENCE) else {
            tracing::debug!(op = ?req.op, len, "data channel: no room in the memory budget");
            io::copy(&mut (&mut stream).take(len as u64), &mut io::sink())?;
            let busy = Reply {
                status: Status::Retry,
                epoch: req.epoch,
                value: 0,
            };
            write_response(&mut stream, busy, b"memory budget of the server exhausted")?;
            continue;
        };
        stream.read_exact(&mut body)?;
        let reply = handler.handle(&req, &body, out.vec_mut());
        drop(body);
        write_response(&mut stream, reply, &out)?;
    }
}

/// Writes one response: its header, then `out`.
fn write_response(stream: &mut TcpStream, reply: Reply, out: &[u8]) -> io::Result<()> {
    let Ok(body_len) = u32::try_from(out.len()) else {
        return Err(io::Error::new(ErrorKind::InvalidData, "response too large"));
    };
    let header = RespHeader {
        status: reply.status,
        epoch: reply.epoch,
        value: reply.value,
        body_len,
    }
    .encode();
    if out.len() <= COALESCE {
        let mut buf = Vec::with_capacity(RESP_HEADER_LEN + out.len());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(out);
        stream.write_all(&buf)
    } else {
        stream.write_all(&header)?;
        stream.write_all(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemBudget;
    use crate::net::client::Pool;
    use crate::net::proto::Op;
    use crate::Oid;
    use sheep_p2p::NodeId;
    use std::time::Instant;

    /// Answers a request with its body, reversed.
    struct Echo;

    impl Handler for Echo {
        fn handle(&self, req: &ReqHeader, body: &[u8], out: &mut Vec<u8>) -> Reply {
            out.extend(body.iter().rev());
            Reply {
                status: Status::Ok,
                epoch: req.epoch,
                value: body.len() as u64,
            }
        }
    }

    fn must_serve(budget: &Arc<MemBudget>) -> Arc<Server> {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        Server::spawn(l, Arc::new(Echo), budget.clone()).expect("spawn")
    }

    fn req(len: usize) -> ReqHeader {
        let mut r = ReqHeader::new(Op::Put, NodeId([3; 16]), Oid(9));
        r.body_len = u32::try_from(len).expect("len");
        r
    }

    #[test]
    fn a_connection_holds_no_buffer_between_requests() {
        let budget = MemBudget::new(4 << 20);
        let server = must_serve(&budget);
        let pool = Pool::new(Duration::from_secs(10), MemBudget::new(4 << 20));
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for _ in 0..3 {
            let r = pool
                .call(&[server.local_addr()], &req(body.len()), &body, None)
                .expect("call");
            assert_eq!(r.header.status, Status::Ok);
            assert!(r.body.iter().eq(body.iter().rev()));
        }
        let s = budget.stats();
        assert_eq!(s.in_use, 0, "{s:?}");
        // The body was taken from the budget (its class is 256 KiB), and reused.
        assert_eq!(s.peak, 256 << 10, "{s:?}");
        server.shutdown();
    }

    #[test]
    fn a_request_that_finds_no_room_is_answered_retry_and_the_connection_goes_on() {
        let budget = MemBudget::new(1 << 20);
        let server = must_serve(&budget);
        let pool = Pool::new(Duration::from_secs(10), MemBudget::new(4 << 20));
        let full = budget.buf(1 << 20);
        let body = vec![7u8; 128 << 10];
        let t0 = Instant::now();
        let r = pool
            .call(&[server.local_addr()], &req(body.len()), &body, None)
            .expect("call");
        assert_eq!(r.header.status, Status::Retry);
        assert!(
            t0.elapsed() >= PATIENCE,
            "answered after {:?}",
            t0.elapsed()
        );
        assert_eq!(budget.stats().timeouts, 1);
        drop(full);
        // The refused body was read off the connection: the next request is served.
        let r = pool
            .call(&[server.local_addr()], &req(body.len()), &body, None)
            .expect("call");
        assert_eq!((r.header.status, r.body.len()), (Status::Ok, body.len()));
        server.shutdown();
    }
}
