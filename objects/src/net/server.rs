//! The server side of the data channel: one thread per connection, requests served in order.
//!
//! A connection that sends anything that is not a valid request (bad magic, unknown kind,
//! oversized body) is closed; other connections are not affected.

use super::proto::{ReqHeader, RespHeader, Status, MAX_BODY, REQ_HEADER_LEN, RESP_HEADER_LEN};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Responses up to this size are written in one call with their header.
const COALESCE: usize = 64 << 10;

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
    /// Serves `listener` with `handler` on background threads.
    pub fn spawn<H: Handler>(listener: TcpListener, handler: Arc<H>) -> io::Result<Arc<Server>> {
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
            .spawn(move || s.accept_loop(&listener, &handler))?;
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

    fn accept_loop<H: Handler>(self: &Arc<Self>, listener: &TcpListener, handler: &Arc<H>) {
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
            let (s, h) = (self.clone(), handler.clone());
            let spawned = std::thread::Builder::new()
                .name("sheep-data-conn".into())
                .spawn(move || {
                    if let Err(e) = serve_conn(stream, &*h) {
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

fn serve_conn<H: Handler + ?Sized>(mut stream: TcpStream, handler: &H) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_secs(120)))?;
    let mut body = Vec::new();
    let mut out = Vec::new();
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
        body.resize(len, 0);
        stream.read_exact(&mut body)?;
        out.clear();
        let reply = handler.handle(&req, &body, &mut out);
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
            buf.extend_from_slice(&out);
            stream.write_all(&buf)?;
        } else {
            stream.write_all(&header)?;
            stream.write_all(&out)?;
        }
    }
}
