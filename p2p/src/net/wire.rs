//! What travels between drivers: one envelope type, framed by [`crate::codec`], over gossipsub
//! (broadcasts) and over a request-response protocol (direct sends).

use crate::codec::{self, Kind, HEADER_LEN};
use crate::node::NodeId;
use crate::order::Msg;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};
use std::io;

/// Envelope of every network message.
pub(crate) const WIRE_KIND: Kind = Kind {
    magic: 0x544e_4853, // "SHNT" little-endian
    major: 1,
    minor: 0,
};

/// Largest broadcast frame (gossipsub refuses anything above its `max_transmit_size`, 64 KiB,
/// which also counts its own protobuf framing, the signature and the key).
pub(crate) const MAX_GOSSIP_FRAME: u64 = 63 << 10;

/// Largest direct frame (catch-up batches can be large).
pub(crate) const MAX_DIRECT_FRAME: u64 = 16 << 20;

/// One network message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Wire {
    /// Messages of the order machine, with their sender (the machine needs it on every
    /// `Recv`): one per broadcast, a batch of what was queued for one node on a direct stream.
    Order {
        /// The sending node.
        from: NodeId,
        /// The messages, in the order the machine sent them.
        msgs: Vec<Msg>,
    },
    /// Driver to driver, broadcast: who I am and where I listen, so that every node of the
    /// cluster can dial every other (a `--peer` cluster is otherwise a star around the first).
    Hello {
        /// The sending node.
        from: NodeId,
        /// Its listen addresses, as multiaddr bytes.
        addrs: Vec<Vec<u8>>,
    },
}

impl Wire {
    /// The node that sent it.
    pub(crate) fn from(&self) -> NodeId {
        match self {
            Wire::Order { from, .. } | Wire::Hello { from, .. } => *from,
        }
    }
}

/// Encodes `w` in the wire envelope, refusing frames over `limit` bytes.
pub(crate) fn encode(w: &Wire, limit: u64) -> crate::Result<Vec<u8>> {
    let limit = limit - HEADER_LEN as u64;
    codec::encode(WIRE_KIND, w, limit)
}

/// Decodes a frame written by [`encode`].
pub(crate) fn decode(bytes: &[u8], limit: u64) -> crate::Result<Wire> {
    codec::decode(WIRE_KIND, bytes, limit)
}

/// The request-response codec: a request is one wire frame (read by its envelope header, bounded
/// before allocating), the response a one-byte acknowledgement.
#[derive(Debug, Clone, Default)]
pub(crate) struct DirectCodec;

const ACK: u8 = 0x06;

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl libp2p::request_response::Codec for DirectCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut header = [0u8; HEADER_LEN];
        io.read_exact(&mut header).await?;
        let h = codec::decode_header(WIRE_KIND, &header, MAX_DIRECT_FRAME).map_err(invalid)?;
        let len = usize::try_from(h.len).map_err(invalid)?;
        let mut frame = vec![0u8; HEADER_LEN + len];
        frame[..HEADER_LEN].copy_from_slice(&header);
        io.read_exact(&mut frame[HEADER_LEN..]).await?;
        Ok(frame)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        if b[0] == ACK {
            Ok(())
        } else {
            Err(invalid("bad acknowledgement"))
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[ACK]).await?;
        io.close().await
    }
}
