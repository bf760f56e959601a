//! The client side of the data channel: a pool of idle connections per peer address.
//!
//! A call takes an idle connection to the address (or opens one, with `TCP_NODELAY`), writes
//! the request, and later reads the response; a connection that completed a call goes back to
//! the pool, one that failed is dropped together with every idle connection to that address.
//! Sending and receiving are separate steps so a caller can send one request to each holder
//! and only then collect the answers: the holders work in parallel without a thread per
//! request.
//!
//! Waiting for an answer is done in slices of [`SLICE`]: between slices, before the first byte
//! of the answer arrived, the pool's *abandon* hook (see [`Pool::set_abandon`]) may give the
//! call up — a request of an epoch that is over waits for nobody — so a caller whose holder
//! was cut off (its connection still open, no RST) does not sit out the whole timeout while
//! the cluster has already moved on without that holder.
//!
//! A response body not read into the caller's buffer is a [`Buf`] of the pool's
//! [`MemBudget`], taken once its header says how long it is. The caller may hold object locks
//! that requests holding the budget wait for, so the body waits for room at most
//! a second and is then taken anyway (counted as an overdraft).

use super::proto::{FrameError, ReqHeader, RespHeader, REQ_HEADER_LEN, RESP_HEADER_LEN};
use crate::budget::{Buf, MemBudget};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bodies up to this size are sent in the same write as their header.
const COALESCE: usize = 64 << 10;
/// Idle connections kept per address.
const MAX_IDLE: usize = 32;
/// How long a response body waits for room in the memory budget before it is taken anyway.
const BODY_PATIENCE: Duration = Duration::from_secs(1);
/// How long one wait for an answer lasts before the abandon hook is asked again.
pub const SLICE: Duration = Duration::from_millis(200);

/// Says, for a request sent at an epoch (its header's), whether to stop waiting for its answer.
pub type Abandon = Box<dyn Fn(u64) -> bool + Send + Sync>;

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
    pub body: Buf,
}

/// Idle connections per peer address.
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<TcpStream>>>,
    timeout: Duration,
    connect_timeout: Duration,
    abandon: std::sync::OnceLock<Abandon>,
    budget: Arc<MemBudget>,
}

/// A request that was sent and whose response is still to be read.
pub struct Call {
    stream: TcpStream,
    addr: SocketAddr,
    reused: bool,
    epoch: u64,
}

impl Pool {
    /// A pool whose sockets time out after `timeout` of inactivity and whose response
    /// bodies are taken from `budget`.
    pub fn new(timeout: Duration, budget: Arc<MemBudget>) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            timeout,
            connect_timeout: timeout.min(Duration::from_secs(3)),
            abandon: std::sync::OnceLock::new(),
            budget,
        }
    }

    /// Sets the hook asked, while a call waits for its answer and none of it arrived yet,
    /// whether to give the call up (an I/O error `TimedOut`); it gets the request's epoch.
    /// Set once; later calls are ignored.
    pub fn set_abandon(&self, abandon: Abandon) {
        let _ = self.abandon.set(abandon);
    }

    /// Drops every idle connection to `addr` (after a failure: they are likely dead too).
    pub fn forget(&self, addr: SocketAddr) {
        self.idle.lock().remove(&addr);
    }

    fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let s = TcpStream::connect_timeout(&addr, self.connect_timeout)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(SLICE.min(self.timeout)))?;
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
                    epoch: req.epoch,
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
            // A stale idle connection (closed by the peer meanwhile), not a peer that is
            // silent or a call given up.
            Err(NetError::Io { source, .. })
                if reused && source.kind() != io::ErrorKind::TimedOut =>
            {
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
        match self.read_response(pool, into) {
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

    fn read_response(
        &mut self,
        pool: &Pool,
        into: Option<&mut [u8]>,
    ) -> Result<Response, NetError> {
        let addr = self.addr;
        let io = |source| NetError::Io { addr, source };
        // Cut to the deadline of the operation this thread serves, if any.
        let deadline = crate::deadline::within(pool.timeout);
        let epoch = self.epoch;
        let abandon = || pool.abandon.get().is_some_and(|a| a(epoch));
        let mut h = [0u8; RESP_HEADER_LEN];
        read_patient(&mut self.stream, &mut h, deadline, Some(&abandon)).map_err(io)?;
        let header = RespHeader::decode(&h).map_err(|err| NetError::Frame { addr, err })?;
        let len = header.body_len as usize;
        match into {
            Some(buf) if buf.len() == len && header.status == super::proto::Status::Ok => {
                read_patient(&mut self.stream, buf, deadline, None).map_err(io)?;
                Ok(Response {
                    header,
                    body: Buf::empty(),
                })
            }
            _ => {
                // The caller may hold object locks: wait for room a while, not for ever.
                let mut body = pool.budget.buf_within(len, BODY_PATIENCE);
                read_patient(&mut self.stream, &mut body, deadline, None).map_err(io)?;
                Ok(Response { header, body })
            }
        }
    }
}

/// Reads exactly `buf` from a stream whose read timeout is a slice: a slice that passes with
/// nothing read is retried until `deadline`; while nothing of `buf` arrived yet, `abandon`
/// (if any) is asked after each slice and may give up. Once bytes arrive the read goes on (a
/// frame is never left half read on a connection that is kept).
fn read_patient(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    abandon: Option<&dyn Fn() -> bool>,
) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
                }
                if got == 0 && abandon.is_some_and(|a| a()) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer, and the request's epoch is over",
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::proto::{Op, ReqHeader};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A peer that takes connections and never answers (a host cut off without an RST).
    fn silent_peer() -> (SocketAddr, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            std::thread::sleep(Duration::from_secs(3));
            drop(s);
        });
        (addr, t)
    }

    fn req(epoch: u64) -> ReqHeader {
        let mut r = ReqHeader::new(Op::Exists, sheep_p2p::NodeId([1; 16]), crate::Oid(7));
        r.epoch = epoch;
        r
    }

    #[test]
    fn a_call_whose_epoch_is_over_stops_waiting_for_a_silent_peer() {
        let (addr, t) = silent_peer();
        let pool = Pool::new(Duration::from_secs(20), MemBudget::new(1 << 20));
        let over = Arc::new(AtomicBool::new(false));
        let o = over.clone();
        pool.set_abandon(Box::new(move |epoch| {
            epoch == 5 && o.load(Ordering::SeqCst)
        }));
        let call = pool.send(&[addr], &req(5), &[], false).expect("send");
        let t0 = Instant::now();
        let flip = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            over.store(true, Ordering::SeqCst);
        });
        let err = call.recv(&pool, None).expect_err("no answer");
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(2),
            "gave up after {waited:?}: {err}"
        );
        flip.join().expect("flip");
        t.join().expect("peer");
    }

    #[test]
    fn a_response_body_is_charged_to_the_budget_while_it_is_held() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let peer = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut h = [0u8; crate::net::proto::REQ_HEADER_LEN];
            s.read_exact(&mut h).expect("request");
            let header = crate::net::proto::RespHeader {
                status: crate::net::proto::Status::Ok,
                epoch: 5,
                value: 0,
                body_len: 300_000,
            };
            s.write_all(&header.encode()).expect("header");
            s.write_all(&vec![1u8; 300_000]).expect("body");
            // Waits until the client hangs up.
            let _ = s.read(&mut h);
        });
        let budget = MemBudget::new(4 << 20);
        let pool = Pool::new(Duration::from_secs(10), budget.clone());
        let r = pool.call(&[addr], &req(5), &[], None).expect("call");
        assert_eq!(r.body.len(), 300_000);
        assert_eq!(budget.stats().in_use, 512 << 10);
        drop(r);
        assert_eq!(budget.stats().in_use, 0);
        drop(pool);
        peer.join().expect("peer");
    }

    #[test]
    fn a_silent_peer_is_waited_for_until_the_timeout() {
        let (addr, t) = silent_peer();
        let pool = Pool::new(Duration::from_millis(900), MemBudget::new(1 << 20));
        pool.set_abandon(Box::new(|_| false));
        let call = pool.send(&[addr], &req(5), &[], false).expect("send");
        let t0 = Instant::now();
        call.recv(&pool, None).expect_err("no answer");
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(850) && waited < Duration::from_secs(3),
            "waited {waited:?}"
        );
        t.join().expect("peer");
    }
}
