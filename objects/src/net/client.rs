//! The client side of the data channel: a pool of idle connections per peer address.
//!
//! A call takes an idle connection to the address (or opens one, with `TCP_NODELAY`), writes
//! the request, and later reads the response; a connection that completed a call goes back to
//! the pool, one that failed is dropped together with every idle connection to that address.
//! Sending and receiving are separate steps so a caller can send one request to each holder
//! and only then collect the answers: the holders work in parallel without a thread per
//! request.

use super::proto::{FrameError, ReqHeader, RespHeader, REQ_HEADER_LEN, RESP_HEADER_LEN};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Bodies up to this size are sent in the same write as their header.
const COALESCE: usize = 64 << 10;
/// Idle connections kept per address.
const MAX_IDLE: usize = 32;

/// Failures of a call.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Connecting, sending or receiving failed.
    #[error("data channel to {addr}: {source}")]
    Io {
        /// The peer.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// The peer sent something that is not a valid response.
    #[error("data channel to {addr}: {err}")]
    Frame {
        /// The peer.
        addr: SocketAddr,
        /// What was wrong.
        err: FrameError,
    },
    /// The member has no data address.
    #[error("no data address for the member")]
    NoAddress,
}

/// A response.
#[derive(Debug)]
pub struct Response {
    /// Its header.
    pub header: RespHeader,
    /// Its body, unless it was read into the caller's buffer.
    pub body: Vec<u8>,
}

/// Idle connections per peer address.
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<TcpStream>>>,
    timeout: Duration,
    connect_timeout: Duration,
}

/// A request that was sent and whose response is still to be read.
pub struct Call {
    stream: TcpStream,
    addr: SocketAddr,
    reused: bool,
}

impl Pool {
    /// A pool whose sockets time out after `timeout` of inactivity.
    pub fn new(timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            timeout,
            connect_timeout: timeout.min(Duration::from_secs(3)),
        }
    }

    /// Drops every idle connection to `addr` (after a failure: they are likely dead too).
    pub fn forget(&self, addr: SocketAddr) {
        self.idle.lock().remove(&addr);
    }

    fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let s = TcpStream::connect_timeout(&addr, self.connect_timeout)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        Ok(s)
    }

    fn checkin(&self, addr: SocketAddr, stream: TcpStream) {
        let mut idle = self.idle.lock();
        let v = idle.entry(addr).or_default();
        if v.len() < MAX_IDLE {
            v.push(stream);
        }
    }

    /// Sends `req` (its `body_len` is set from `body`) to the first address that takes it.
    /// `fresh` skips idle connections.
    pub fn send(
        &self,
        addrs: &[SocketAddr],
        req: &ReqHeader,
        body: &[u8],
        fresh: bool,
    ) -> Result<Call, NetError> {
        let mut req = *req;
        req.body_len = u32::try_from(body.len()).map_err(|_| NetError::Io {
            addr: addrs
                .first()
                .copied()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            source: io::Error::new(io::ErrorKind::InvalidInput, "body too large"),
        })?;
        let header = req.encode();
        let mut last = NetError::NoAddress;
        for &addr in addrs {
            let mut use_idle = !fresh;
            loop {
                let pooled = if use_idle {
                    self.idle.lock().get_mut(&addr).and_then(Vec::pop)
                } else {
                    None
                };
                let reused = pooled.is_some();
                let stream = match pooled {
                    Some(s) => s,
                    None => match self.connect(addr) {
                        Ok(s) => s,
                        Err(source) => {
                            last = NetError::Io { addr, source };
                            break;
                        }
                    },
                };
                let mut call = Call {
                    stream,
                    addr,
                    reused,
                };
                match call.write(&header, body) {
                    Ok(()) => return Ok(call),
                    Err(source) => {
                        self.forget(addr);
                        last = NetError::Io { addr, source };
                        if !reused {
                            break;
                        }
                        // A stale idle connection: retry this address on a new one.
                        use_idle = false;
                    }
                }
            }
        }
        Err(last)
    }

    /// Sends and receives; a failure on a reused connection is retried once on a new one.
    pub fn call(
        &self,
        addrs: &[SocketAddr],
        req: &ReqHeader,
        body: &[u8],
        mut into: Option<&mut [u8]>,
    ) -> Result<Response, NetError> {
        let c = self.send(addrs, req, body, false)?;
        let reused = c.reused;
        let addr = c.addr;
        match c.recv(self, into.as_deref_mut()) {
            Err(NetError::Io { .. }) if reused => {
                let mut order = vec![addr];
                order.extend(addrs.iter().copied().filter(|a| *a != addr));
                self.send(&order, req, body, true)?.recv(self, into)
            }
            r => r,
        }
    }
}

impl Call {
    fn write(&mut self, header: &[u8; REQ_HEADER_LEN], body: &[u8]) -> io::Result<()> {
        if body.len() <= COALESCE {
            let mut buf = Vec::with_capacity(REQ_HEADER_LEN + body.len());
            buf.extend_from_slice(header);
            buf.extend_from_slice(body);
            self.stream.write_all(&buf)
        } else {
            self.stream.write_all(header)?;
            self.stream.write_all(body)
        }
    }

    /// The peer address this call went to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reads the response. A successful body of exactly `into.len()` bytes is read straight
    /// into `into` (and `Response::body` is empty).
    pub fn recv(mut self, pool: &Pool, into: Option<&mut [u8]>) -> Result<Response, NetError> {
        let addr = self.addr;
        match self.read_response(into) {
            Ok(r) => {
                pool.checkin(addr, self.stream);
                Ok(r)
            }
            Err(e) => {
                pool.forget(addr);
                Err(e)
            }
        }
    }

    fn read_response(&mut self, into: Option<&mut [u8]>) -> Result<Response, NetError> {
        let addr = self.addr;
        let io = |source| NetError::Io { addr, source };
        let mut h = [0u8; RESP_HEADER_LEN];
        self.stream.read_exact(&mut h).map_err(io)?;
        let header = RespHeader::decode(&h).map_err(|err| NetError::Frame { addr, err })?;
        let len = header.body_len as usize;
        match into {
            Some(buf) if buf.len() == len && header.status == super::proto::Status::Ok => {
                self.stream.read_exact(buf).map_err(io)?;
                Ok(Response {
                    header,
                    body: Vec::new(),
                })
            }
            _ => {
                let mut body = vec![0u8; len];
                self.stream.read_exact(&mut body).map_err(io)?;
                Ok(Response { header, body })
            }
        }
    }
}
