//! Corruption tests: damaged, truncated, oversized and garbage input is refused with a
//! typed error: never a panic, never a different valid message.

mod strategies;

use bytes::BytesMut;
use proptest::prelude::*;
use shardline_protocol::frame::{self, DecodeError, HEADER_LEN, OFF_LEN};
use shardline_protocol::*;
use strategies::*;

fn wire(frame: &Frame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frame::encode(frame, &mut buf);
    buf.to_vec()
}

/// Decodes a complete buffer: a frame, "needs more", or an error.
fn decode_all(bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
    frame::decode(&mut BytesMut::from(bytes), DEFAULT_MAX_PAYLOAD)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every byte, every single-byte change: the frame is refused (never Ok, never "more").
    #[test]
    fn any_flipped_byte_of_a_frame_is_an_error(frame in frame(), mask in 1u8..=255) {
        let good = wire(&frame);
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= mask;
            let result = decode_all(&bad);
            prop_assert!(result.is_err(), "flip {:#x} at {} gave {:?}", mask, at, result);
        }
    }

    #[test]
    fn any_flipped_byte_of_a_message_frame_is_an_error(request in request(), mask in 1u8..=255) {
        let good = wire(&request.to_frame(9).unwrap());
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= mask;
            prop_assert!(decode_all(&bad).is_err(), "flip at {}", at);
        }
    }

    #[test]
    fn any_flipped_byte_of_a_log_entry_is_an_error(entry in log_entry(), mask in 1u8..=255) {
        let good = entry.encode().unwrap();
        for at in 0..good.len() {
            let mut bad = good.to_vec();
            bad[at] ^= mask;
            prop_assert!(LogEntry::decode(&bad).is_err(), "flip at {}", at);
        }
    }

    #[test]
    fn truncated_log_entries_are_errors(entry in log_entry()) {
        let good = entry.encode().unwrap();
        for cut in 0..good.len() {
            prop_assert!(LogEntry::decode(&good[..cut]).is_err());
        }
    }

    /// Arbitrary bytes never panic the decoders; whatever decodes is a real frame.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(f)) = frame::decode(&mut buf, 1024) {
            let _ = Request::from_frame(&f);
            let _ = Response::from_frame(&f);
            let _ = PeerRequest::from_frame(&f);
        }
        let _ = LogEntry::decode(&bytes);
        let _ = WriteBatch::parse(bytes::Bytes::from(bytes.clone()));
        if let Ok(line) = std::str::from_utf8(&bytes) {
            let _ = text::parse_line(line);
        }
    }

    /// Garbage with a valid-looking magic still fails: the header CRC guards it.
    #[test]
    fn garbage_behind_the_magic_is_refused(rest in proptest::collection::vec(any::<u8>(), HEADER_LEN..200)) {
        let mut bytes = frame::MAGIC.to_vec();
        bytes.extend_from_slice(&rest);
        prop_assert!(decode_all(&bytes).is_err());
    }

    /// A payload that is not the message its kind names gives a typed error.
    #[test]
    fn payload_garbage_is_a_message_error(kind_offset in 0u8..14, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let f = Frame::new(kind::REQUEST_BASE + kind_offset, 1, bytes::Bytes::from(payload));
        let mut buf = BytesMut::new();
        frame::encode(&f, &mut buf);
        let decoded = frame::decode(&mut buf, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
        // Either an error or a message that re-encodes to a frame of the same kind.
        if let Ok(request) = Request::from_frame(&decoded) {
            prop_assert_eq!(request.to_frame(1).unwrap().kind, decoded.kind);
        }
    }
}

#[test]
fn declared_length_over_the_limit_is_refused_from_the_header_alone() {
    let frame = Frame::new(kind::PING, 1, bytes::Bytes::from(vec![7u8; 5000]));
    let bytes = wire(&frame);
    let mut header_only = BytesMut::with_capacity(HEADER_LEN);
    header_only.extend_from_slice(&bytes[..HEADER_LEN]);
    let capacity = header_only.capacity();
    assert_eq!(frame::decode(&mut header_only, 4096), Err(DecodeError::TooLarge { len: 5000, max: 4096 }));
    assert_eq!(header_only.capacity(), capacity, "nothing reserved for a refused frame");
}

#[test]
fn a_forged_huge_length_is_caught_by_the_header_crc() {
    let mut bytes = wire(&Frame::new(kind::PING, 1, bytes::Bytes::new()));
    bytes[OFF_LEN..OFF_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode_all(&bytes), Err(DecodeError::HeaderChecksum { .. })));
}

#[test]
fn truncated_frames_wait_and_text_is_refused() {
    let bytes = wire(&Request::Status.to_frame(3).unwrap());
    for cut in 0..bytes.len() {
        assert_eq!(decode_all(&bytes[..cut]), Ok(None), "cut at {cut}");
    }
    assert!(matches!(decode_all(b"GET / HTTP/1.1\r\n"), Err(DecodeError::BadMagic(b'G', b'E'))));
}

#[test]
fn trailing_bytes_after_a_message_or_an_operation_are_refused() {
    let mut ping = Request::Ping.to_frame(1).unwrap();
    let mut padded = ping.payload.to_vec();
    padded.extend_from_slice(&[0xFF, 0xFF]);
    ping.payload = bytes::Bytes::from(padded);
    assert!(matches!(Request::from_frame(&ping), Err(MessageError::Payload { .. })));

    // A Noop entry with one extra byte and a CRC that covers it (found by the fuzzer).
    let record: [u8; 26] =
        [0x31, 0xd3, 0xed, 0x6b, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0xff];
    assert!(LogEntry::decode(&record).is_err());
}
