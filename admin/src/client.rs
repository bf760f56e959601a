//! Blocking client of the admin socket, used by `dog`.

use crate::error::{Error, Result};
use crate::wire::{Reply, Request, WireError, ADMIN_KIND, MAX_FRAME};
use sheep_p2p::codec::{decode, decode_header, encode, HEADER_LEN};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A connection to the daemon's admin socket. Requests are answered one at a time, in order.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    path: PathBuf,
}

impl Client {
    /// How long [`Client::call`] waits for an answer by default (long operations included).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

    /// Connects to the admin socket at `path` with [`Client::DEFAULT_TIMEOUT`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Client> {
        Client::connect_with_timeout(path, Some(Client::DEFAULT_TIMEOUT))
    }

    /// Connects to the admin socket at `path`; `timeout` bounds each wait for an answer
    /// (`None` waits forever).
    pub fn connect_with_timeout(
        path: impl AsRef<Path>,
        timeout: Option<Duration>,
    ) -> Result<Client> {
        let path = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path).map_err(|source| Error::Connect {
            path: path.clone(),
            source,
        })?;
        let mut client = Client { stream, path };
        client.set_timeout(timeout)?;
        Ok(client)
    }

    /// Changes how long each call waits for an answer (`None` waits forever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.stream.set_read_timeout(timeout)?;
        self.stream.set_write_timeout(timeout)?;
        Ok(())
    }

    /// The socket path this client is connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `req` and waits for its answer. A refusal of the daemon is [`Error::Remote`].
    pub fn call(&mut self, req: &Request) -> Result<Reply> {
        tracing::debug!(socket = %self.path.display(), ?req, "admin call");
        let frame = encode(ADMIN_KIND, req, MAX_FRAME)?;
        self.stream.write_all(&frame).map_err(io_error)?;
        let answer = read_frame(&mut self.stream)?;
        let reply: Result<Reply, WireError> = decode(ADMIN_KIND, &answer, MAX_FRAME)?;
        reply.map_err(Error::Remote)
    }
}

/// Reads one whole frame: the header first, then a payload bounded by [`MAX_FRAME`].
fn read_frame(stream: &mut impl Read) -> Result<Vec<u8>> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).map_err(io_error)?;
    let h = decode_header(ADMIN_KIND, &header, MAX_FRAME)?;
    let len = usize::try_from(h.len).map_err(|_| sheep_p2p::Error::TooLarge {
        len: u64::from(h.len),
        limit: MAX_FRAME,
    })?;
    let mut frame = Vec::with_capacity(HEADER_LEN + len);
    frame.extend_from_slice(&header);
    frame.resize(HEADER_LEN + len, 0);
    stream
        .read_exact(&mut frame[HEADER_LEN..])
        .map_err(io_error)?;
    Ok(frame)
}

/// Names the errors a caller wants to tell apart: end of stream and timeouts.
fn io_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset => Error::Closed,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
        _ => Error::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::os::unix::net::UnixListener;

    #[test]
    fn read_frame_returns_a_whole_frame() {
        let frame = encode(ADMIN_KIND, &Request::VdiList, MAX_FRAME).unwrap();
        let mut input = Cursor::new(frame.clone());
        assert_eq!(read_frame(&mut input).unwrap(), frame);
    }

    #[test]
    fn read_frame_refuses_an_oversized_header_before_reading_the_payload() {
        let mut header = encode(ADMIN_KIND, &Request::VdiList, MAX_FRAME).unwrap();
        let huge = u32::try_from(MAX_FRAME + 1).unwrap();
        header[8..12].copy_from_slice(&huge.to_le_bytes());
        header.truncate(HEADER_LEN);
        let err = read_frame(&mut Cursor::new(header)).unwrap_err();
        assert!(matches!(
            err,
            Error::Codec(sheep_p2p::Error::TooLarge { .. })
        ));
    }

    #[test]
    fn a_truncated_answer_is_reported_as_closed() {
        let frame = encode(ADMIN_KIND, &Request::VdiList, MAX_FRAME).unwrap();
        let err = read_frame(&mut Cursor::new(&frame[..frame.len() - 1])).unwrap_err();
        assert!(matches!(err, Error::Closed));
    }

    #[test]
    fn connecting_to_a_missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Client::connect(dir.path().join("none.sock")).unwrap_err();
        assert!(matches!(err, Error::Connect { .. }));
    }

    #[test]
    fn a_silent_daemon_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let timeout = Some(Duration::from_millis(50));
        let mut client = Client::connect_with_timeout(&path, timeout).unwrap();
        assert!(matches!(
            client.call(&Request::VdiList),
            Err(Error::Timeout)
        ));
    }
}
