//! The one place where sheepfs calls bincode.
//!
//! bincode 1.3.3 is pinned (every version is flagged unmaintained, RUSTSEC-2025-0141) and used
//! with explicit options: fixed-width little-endian integers, a size limit, and trailing bytes
//! rejected. Keeping every call here lets us swap the format without touching callers.
//!
//! Records and frames use one envelope:
//!
//! ```text
//! 0       4       6       8          12         16
//! +-------+-------+-------+----------+----------+----------------+
//! | magic | major | minor | len: u32 | crc32c   | payload (len)  |
//! +-------+-------+-------+----------+----------+----------------+
//! ```
//!
//! Decoding checks the magic, accepts the same major with a minor no newer than ours, bounds
//! `len` by the caller's limit before allocating, and verifies the checksum.

use crate::error::{Error, Result};
use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Size of the envelope header in bytes.
pub const HEADER_LEN: usize = 16;

/// Identifies one record or frame kind and the version we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// Magic number that starts every record of this kind.
    pub magic: u32,
    /// Major version: decoders refuse another major.
    pub major: u16,
    /// Minor version: decoders accept older minors of the same major.
    pub minor: u16,
}

fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(limit)
}

/// Encodes `value` with bincode, without an envelope, refusing outputs over `limit` bytes.
pub fn to_bytes<T: Serialize>(value: &T, limit: u64) -> Result<Vec<u8>> {
    options(limit)
        .serialize(value)
        .map_err(|e| Error::Codec(e.to_string()))
}

/// Decodes a bincode payload without an envelope; never allocates more than `limit` bytes.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8], limit: u64) -> Result<T> {
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge {
            len: bytes.len() as u64,
            limit,
        });
    }
    options(limit)
        .deserialize(bytes)
        .map_err(|e| Error::Codec(e.to_string()))
}

/// Encodes `value` inside the envelope of `kind`.
pub fn encode<T: Serialize>(kind: Kind, value: &T, limit: u64) -> Result<Vec<u8>> {
    let payload = to_bytes(value, limit)?;
    let len = u32::try_from(payload.len()).map_err(|_| Error::TooLarge {
        len: payload.len() as u64,
        limit,
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&kind.magic.to_le_bytes());
    out.extend_from_slice(&kind.major.to_le_bytes());
    out.extend_from_slice(&kind.minor.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Parsed envelope header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length.
    pub len: u32,
    /// crc32c of the payload.
    pub crc: u32,
}

/// Checks the envelope header of `kind` and the announced length against `limit`.
pub fn decode_header(kind: Kind, bytes: &[u8], limit: u64) -> Result<Header> {
    let h: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::Truncated)?;
    let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    if magic != kind.magic {
        return Err(Error::BadMagic {
            expected: kind.magic,
            found: magic,
        });
    }
    let major = u16::from_le_bytes([h[4], h[5]]);
    let minor = u16::from_le_bytes([h[6], h[7]]);
    if major != kind.major || minor > kind.minor {
        return Err(Error::Version {
            major,
            minor,
            our_major: kind.major,
            our_minor: kind.minor,
        });
    }
    let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if u64::from(len) > limit {
        return Err(Error::TooLarge {
            len: u64::from(len),
            limit,
        });
    }
    let crc = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    Ok(Header { len, crc })
}

/// Decodes a value written by [`encode`] with the same `kind`.
pub fn decode<T: DeserializeOwned>(kind: Kind, bytes: &[u8], limit: u64) -> Result<T> {
    let header = decode_header(kind, bytes, limit)?;
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != header.len as usize {
        return Err(Error::Truncated);
    }
    if crc32c::crc32c(payload) != header.crc {
        return Err(Error::Checksum);
    }
    from_bytes(payload, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    const KIND: Kind = Kind {
        magic: 0x5348_4545,
        major: 1,
        minor: 2,
    };

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        name: String,
        sizes: Vec<u64>,
    }

    #[test]
    fn encode_then_decode_returns_the_value() {
        let r = Rec {
            name: "vm0".into(),
            sizes: vec![1, 2, 3],
        };
        let bytes = encode(KIND, &r, 1 << 20).unwrap();
        assert_eq!(decode::<Rec>(KIND, &bytes, 1 << 20).unwrap(), r);
    }

    #[test]
    fn decode_rejects_newer_minor_and_other_major() {
        let r = Rec {
            name: "x".into(),
            sizes: vec![],
        };
        let newer = Kind { minor: 3, ..KIND };
        let bytes = encode(newer, &r, 1024).unwrap();
        assert!(matches!(
            decode::<Rec>(KIND, &bytes, 1024),
            Err(Error::Version { .. })
        ));
        let older = Kind { minor: 1, ..KIND };
        let bytes = encode(older, &r, 1024).unwrap();
        assert!(decode::<Rec>(KIND, &bytes, 1024).is_ok());
        let other = Kind { major: 2, ..KIND };
        let bytes = encode(other, &r, 1024).unwrap();
        assert!(decode::<Rec>(KIND, &bytes, 1024).is_err());
    }

    #[test]
    fn decode_detects_a_flipped_byte() {
        let r = Rec {
            name: "abc".into(),
            sizes: vec![7],
        };
        let mut bytes = encode(KIND, &r, 1024).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            decode::<Rec>(KIND, &bytes, 1024),
            Err(Error::Checksum)
        ));
    }

    #[test]
    fn a_huge_announced_length_is_refused_before_allocating() {
        // A vector length of u64::MAX inside a valid envelope.
        let payload = u64::MAX.to_le_bytes();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&KIND.magic.to_le_bytes());
        bytes.extend_from_slice(&KIND.major.to_le_bytes());
        bytes.extend_from_slice(&KIND.minor.to_le_bytes());
        bytes.extend_from_slice(&8u32.to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert!(decode::<Vec<u64>>(KIND, &bytes, 1024).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_give_err_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Rec>(KIND, &bytes, 4096);
            let _ = from_bytes::<Rec>(&bytes, 4096);
        }

        #[test]
        fn round_trip_of_arbitrary_records(name in ".{0,40}", sizes in proptest::collection::vec(any::<u64>(), 0..20)) {
            let r = Rec { name, sizes };
            let bytes = encode(KIND, &r, 1 << 16).unwrap();
            prop_assert_eq!(decode::<Rec>(KIND, &bytes, 1 << 16).unwrap(), r);
        }
    }
}
