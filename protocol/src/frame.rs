//! The frame: a fixed, checksummed header and an opaque payload.
//!
//! Every hop in Shardline (client, balancer, coordinator, storage node) exchanges frames.
//! The header is all a router needs; the payload is handed out as [`Bytes`] without a
//! copy, and deserialized only by whoever owns the message.
//!
//! ```text
//! offset  size  field          meaning
//! ------  ----  -------------  ------------------------------------------------------
//!      0     2  magic          0xB5 0x4C; 0xB5 is not ASCII, so text peers are told apart
//!      2     1  version        protocol version, currently 1
//!      3     1  kind           what the payload is (see `kind`)
//!      4     2  flags          FLAG_* bits; unknown bits are refused
//!      6     8  request id     chosen by the sender, echoed in the response
//!     14     8  route          a row key (i64 as two's complement) or a shard id
//!     22     4  payload len    bytes after the header; at most the configured maximum
//!     26     4  payload crc    CRC-32 (IEEE, crc32fast) of the payload
//!     30     4  header crc     CRC-32 of bytes 0..30
//!     34        payload
//! ```
//!
//! The route is a routing hint for routers that read headers only; the payload is the
//! authority. A node checks every key it is asked to touch against the shards it holds,
//! so a frame whose route disagrees with its payload is refused there, not misapplied.
//!
//! All integers are big-endian. The header has its own CRC so that a damaged length is
//! caught as soon as the header arrives, before the decoder waits for (or reserves room
//! for) a payload that will never come.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The two magic bytes that open every frame.
pub const MAGIC: [u8; 2] = [0xB5, 0x4C];
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 34;
/// Default maximum payload size: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 16 * 1024 * 1024;
/// Default maximum requests one connection may have in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// Offset of the magic bytes.
pub const OFF_MAGIC: usize = 0;
/// Offset of the version byte.
pub const OFF_VERSION: usize = 2;
/// Offset of the kind byte.
pub const OFF_KIND: usize = 3;
/// Offset of the flags.
pub const OFF_FLAGS: usize = 4;
/// Offset of the request id.
pub const OFF_REQUEST_ID: usize = 6;
/// Offset of the route.
pub const OFF_ROUTE: usize = 14;
/// Offset of the payload length.
pub const OFF_LEN: usize = 22;
/// Offset of the payload CRC.
pub const OFF_PAYLOAD_CRC: usize = 26;
/// Offset of the header CRC.
pub const OFF_HEADER_CRC: usize = 30;

/// `route` holds a row key.
pub const FLAG_ROUTE_KEY: u16 = 1 << 0;
/// `route` holds a shard id.
pub const FLAG_ROUTE_SHARD: u16 = 1 << 1;
/// A read that must be served by the shard's primary under its lease (linearizable).
pub const FLAG_LINEARIZABLE: u16 = 1 << 2;
/// The payload is the last of a streamed response.
pub const FLAG_END_OF_STREAM: u16 = 1 << 3;
/// Every flag bit this version knows.
pub const KNOWN_FLAGS: u16 = FLAG_ROUTE_KEY | FLAG_ROUTE_SHARD | FLAG_LINEARIZABLE | FLAG_END_OF_STREAM;

/// What a frame's `route` field means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// No routing information.
    None,
    /// A row key: route to the shard that owns it.
    Key(i64),
    /// A shard id.
    Shard(u32),
}

/// One decoded frame: header fields and the payload as shared bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is.
    pub kind: u8,
    /// FLAG_* bits, the route flags included.
    pub flags: u16,
    /// The sender's request id, echoed back in the response.
    pub request_id: u64,
    /// The raw route field; read it through [`Frame::route`].
    pub route: u64,
    /// The payload, unparsed.
    pub payload: Bytes,
}

impl Frame {
    /// A frame with no route and no flags.
    pub fn new(kind: u8, request_id: u64, payload: Bytes) -> Frame {
        Frame { kind, flags: 0, request_id, route: 0, payload }
    }

    /// Sets the route (and its flag), replacing any earlier one.
    pub fn with_route(mut self, route: Route) -> Frame {
        self.flags &= !(FLAG_ROUTE_KEY | FLAG_ROUTE_SHARD);
        match route {
            Route::None => self.route = 0,
            Route::Key(k) => {
                self.flags |= FLAG_ROUTE_KEY;
                self.route = k as u64;
            }
            Route::Shard(s) => {
                self.flags |= FLAG_ROUTE_SHARD;
                self.route = u64::from(s);
            }
        }
        self
    }

    /// Adds flag bits.
    pub fn with_flags(mut self, flags: u16) -> Frame {
        self.flags |= flags;
        self
    }

    /// The route the header carries.
    pub fn route(&self) -> Route {
        if self.flags & FLAG_ROUTE_KEY != 0 {
            Route::Key(self.route as i64)
        } else if self.flags & FLAG_ROUTE_SHARD != 0 {
            Route::Shard(self.route as u32)
        } else {
            Route::None
        }
    }

    /// Whether a flag bit is set.
    pub fn has_flag(&self, flag: u16) -> bool {
        self.flags & flag == flag
    }

    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// Why bytes are not a frame. Every variant means the stream is corrupt and should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The first two bytes are not the magic.
    #[error("bad magic {0:#04x} {1:#04x}: not a Shardline frame")]
    BadMagic(u8, u8),
    /// The header CRC does not match: the header is damaged.
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksum {
        /// CRC carried in the header.
        stored: u32,
        /// CRC of the bytes received.
        computed: u32,
    },
    /// The payload CRC does not match: the payload is damaged.
    #[error("payload checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    PayloadChecksum {
        /// CRC carried in the header.
        stored: u32,
        /// CRC of the bytes received.
        computed: u32,
    },
    /// A version this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// Flag bits this version does not know, or both route flags at once.
    #[error("invalid flags {0:#06x}")]
    BadFlags(u16),
    /// The declared payload is larger than the limit.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared payload length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
}

/// The header fields, read and verified, before the payload has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the payload is.
    pub kind: u8,
    /// FLAG_* bits.
    pub flags: u16,
    /// The sender's request id.
    pub request_id: u64,
    /// The raw route field.
    pub route: u64,
    /// Payload length.
    pub len: usize,
    /// CRC the payload must have.
    pub payload_crc: u32,
}

/// Reads and verifies a header from the first [`HEADER_LEN`] bytes of `buf`.
///
/// Returns `Ok(None)` if fewer bytes have arrived. Checks the magic first (so garbage and
/// text are named as such), then the header CRC, then version, flags and length.
pub fn decode_header(buf: &[u8], max_payload: usize) -> Result<Option<Header>, DecodeError> {
    if buf.len() >= 2 && buf[..2] != MAGIC {
        return Err(DecodeError::BadMagic(buf[0], buf[1]));
    }
    if buf.len() == 1 && buf[0] != MAGIC[0] {
        return Err(DecodeError::BadMagic(buf[0], 0));
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let mut h = &buf[..HEADER_LEN];
    let stored = u32::from_be_bytes(h[OFF_HEADER_CRC..HEADER_LEN].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&h[..OFF_HEADER_CRC]);
    if stored != computed {
        return Err(DecodeError::HeaderChecksum { stored, computed });
    }
    h.advance(OFF_VERSION);
    let version = h.get_u8();
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let kind = h.get_u8();
    let flags = h.get_u16();
    let both_routes = FLAG_ROUTE_KEY | FLAG_ROUTE_SHARD;
    if flags & !KNOWN_FLAGS != 0 || flags & both_routes == both_routes {
        return Err(DecodeError::BadFlags(flags));
    }
    let request_id = h.get_u64();
    let route = h.get_u64();
    let len = h.get_u32() as usize;
    if len > max_payload {
        return Err(DecodeError::TooLarge { len, max: max_payload });
    }
    let payload_crc = h.get_u32();
    Ok(Some(Header { kind, flags, request_id, route, len, payload_crc }))
}

/// Takes one whole frame off the front of `buf`.
///
/// `Ok(None)` means more bytes are needed (and room has been reserved for exactly the
/// declared frame, which is already known to be within `max_payload`); `Err` means the
/// stream is corrupt. The payload is split off without copying.
pub fn decode(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Frame>, DecodeError> {
    let Some(header) = decode_header(buf, max_payload)? else {
        return Ok(None);
    };
    let total = HEADER_LEN + header.len;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let computed = crc32fast::hash(&buf[HEADER_LEN..total]);
    if computed != header.payload_crc {
        return Err(DecodeError::PayloadChecksum { stored: header.payload_crc, computed });
    }
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(header.len).freeze();
    Ok(Some(Frame {
        kind: header.kind,
        flags: header.flags,
        request_id: header.request_id,
        route: header.route,
        payload,
    }))
}

/// Appends `frame`, header and payload, to `dst`.
///
/// Panics only if the payload is over 4 GiB, which no limit allows; senders check their
/// payloads against the peer's maximum before encoding.
pub fn encode(frame: &Frame, dst: &mut BytesMut) {
    dst.reserve(frame.encoded_len());
    put_header(frame, dst);
    dst.extend_from_slice(&frame.payload);
}

/// Appends only the header of `frame` to `dst`, for senders that write the payload
/// separately (vectored writes that forward a payload without copying it).
pub fn put_header(frame: &Frame, dst: &mut BytesMut) {
    let len = u32::try_from(frame.payload.len()).expect("payload over 4 GiB");
    let start = dst.len();
    dst.put_slice(&MAGIC);
    dst.put_u8(VERSION);
    dst.put_u8(frame.kind);
    dst.put_u16(frame.flags);
    dst.put_u64(frame.request_id);
    dst.put_u64(frame.route);
    dst.put_u32(len);
    dst.put_u32(crc32fast::hash(&frame.payload));
    let header_crc = crc32fast::hash(&dst[start..start + OFF_HEADER_CRC]);
    dst.put_u32(header_crc);
}

/// Whether the first byte a connection sent opens a binary frame (otherwise: a person at `nc`).
pub fn is_binary_start(first: u8) -> bool {
    first == MAGIC[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Frame {
        Frame::new(0x17, 42, Bytes::from_static(b"hello payload"))
            .with_route(Route::Key(-5))
            .with_flags(FLAG_LINEARIZABLE)
    }

    fn encoded(frame: &Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        encode(frame, &mut buf);
        buf
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let frame = sample();
        let mut buf = encoded(&frame);
        assert_eq!(buf.len(), frame.encoded_len());
        let back = decode(&mut buf, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
        assert_eq!(back, frame);
        assert_eq!(back.route(), Route::Key(-5));
        assert!(back.has_flag(FLAG_LINEARIZABLE));
        assert!(buf.is_empty());
    }

    #[test]
    fn offsets_match_the_byte_table() {
        let buf = encoded(&sample());
        assert_eq!(&buf[OFF_MAGIC..OFF_MAGIC + 2], &MAGIC);
        assert_eq!(buf[OFF_VERSION], VERSION);
        assert_eq!(buf[OFF_KIND], 0x17);
        assert_eq!(u64::from_be_bytes(buf[OFF_REQUEST_ID..OFF_ROUTE].try_into().unwrap()), 42);
        assert_eq!(u32::from_be_bytes(buf[OFF_LEN..OFF_PAYLOAD_CRC].try_into().unwrap()), 13);
        assert_eq!(&buf[HEADER_LEN..], b"hello payload");
    }

    #[test]
    fn partial_input_asks_for_more() {
        let full = encoded(&sample());
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut part, DEFAULT_MAX_PAYLOAD), Ok(None), "cut at {cut}");
            assert_eq!(part.len(), cut, "nothing consumed at {cut}");
        }
    }

    #[test]
    fn oversized_length_is_refused_before_reserving() {
        let frame = Frame::new(1, 1, Bytes::from(vec![0u8; 100]));
        let full = encoded(&frame);
        let mut header_only = BytesMut::from(&full[..HEADER_LEN]);
        let cap = header_only.capacity();
        assert_eq!(decode(&mut header_only, 99), Err(DecodeError::TooLarge { len: 100, max: 99 }));
        assert_eq!(header_only.capacity(), cap, "no memory reserved for a refused frame");
    }

    #[test]
    fn text_and_garbage_are_bad_magic() {
        let mut text = BytesMut::from(&b"PING\r\n"[..]);
        assert!(matches!(decode(&mut text, 1024), Err(DecodeError::BadMagic(b'P', b'I'))));
        let mut one = BytesMut::from(&b"P"[..]);
        assert!(matches!(decode(&mut one, 1024), Err(DecodeError::BadMagic(b'P', 0))));
        assert!(!is_binary_start(b'P') && is_binary_start(MAGIC[0]));
    }

    #[test]
    fn unknown_flags_and_versions_are_refused() {
        let mut bad_flags = sample();
        bad_flags.flags = 0x8000;
        let mut buf = encoded(&bad_flags);
        assert_eq!(decode(&mut buf, 1024), Err(DecodeError::BadFlags(0x8000)));

        let mut buf = encoded(&sample());
        buf[OFF_VERSION] = 9;
        let crc = crc32fast::hash(&buf[..OFF_HEADER_CRC]);
        buf[OFF_HEADER_CRC..HEADER_LEN].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(decode(&mut buf, 1024), Err(DecodeError::UnsupportedVersion(9)));
    }

    #[test]
    fn two_frames_back_to_back() {
        let a = sample();
        let b = Frame::new(2, 7, Bytes::new());
        let mut buf = encoded(&a);
        encode(&b, &mut buf);
        assert_eq!(decode(&mut buf, 1024).unwrap(), Some(a));
        assert_eq!(decode(&mut buf, 1024).unwrap(), Some(b));
        assert_eq!(decode(&mut buf, 1024).unwrap(), None);
    }
}
