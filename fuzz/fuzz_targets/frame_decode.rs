//! Fuzzes `frame::decode` and the typed message decoders.
//!
//! The input is decoded as a stream of frames twice: as given (which exercises bad magic,
//! damaged checksums, partial frames and oversized lengths), and re-framed, with every
//! 34-byte header given the magic, the version, a payload length that fits and correct
//! CRCs, so that almost every input reaches the message decoders. Each stream is decoded
//! with the default payload limit and with a 1 KiB one. Checks:
//!
//! - `decode` consumes nothing when it asks for more bytes;
//! - every frame re-encodes (`frame::encode`) to exactly the bytes it was decoded from;
//! - whichever message enum (`Request`, `Response`, `ControlRequest`, `ControlResponse`,
//!   `PeerRequest`, `PeerResponse`) decodes from a frame keeps the frame's kind and
//!   survives `to_frame` → `from_frame`: the second round's frame equals the first's, byte
//!   for byte, and the message itself compares equal unless it holds a NaN.

#![no_main]

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use shardline_protocol::frame::{
    self, HEADER_LEN, OFF_FLAGS, OFF_KIND, OFF_LEN, OFF_REQUEST_ID, OFF_ROUTE,
};
use shardline_protocol::{
    ControlRequest, ControlResponse, Frame, Message, PeerRequest, PeerResponse, Request, Response,
    DEFAULT_MAX_PAYLOAD,
};

fuzz_target!(|data: &[u8]| {
    let reframed = reframe(data);
    for stream in [data, &reframed[..]] {
        for max_payload in [DEFAULT_MAX_PAYLOAD, 1024] {
            check_stream(stream, max_payload);
        }
    }
});

/// Decodes frames off `stream` until it needs more bytes or finds it corrupt.
fn check_stream(stream: &[u8], max_payload: usize) {
    let mut buf = BytesMut::from(stream);
    loop {
        let at = stream.len() - buf.len();
        match frame::decode(&mut buf, max_payload) {
            Ok(Some(frame)) => {
                let end = stream.len() - buf.len();
                let mut wire = BytesMut::new();
                frame::encode(&frame, &mut wire);
                assert_eq!(
                    &wire[..],
                    &stream[at..end],
                    "frame at {at} re-encodes differently"
                );
                check_message::<Request>(&frame);
                check_message::<Response>(&frame);
                check_message::<ControlRequest>(&frame);
                check_message::<ControlResponse>(&frame);
                check_message::<PeerRequest>(&frame);
                check_message::<PeerResponse>(&frame);
            }
            Ok(None) => {
                assert_eq!(
                    buf.len(),
                    stream.len() - at,
                    "decode consumed bytes but gave no frame"
                );
                return;
            }
            Err(_) => return,
        }
    }
}

/// If `frame` holds an `M`, checks that it re-encodes stably.
fn check_message<M: Message + PartialEq + Debug>(frame: &Frame) {
    let Ok(message) = M::from_frame(frame) else {
        return;
    };
    let first = message
        .to_frame(frame.request_id)
        .expect("a decoded message re-encodes");
    assert_eq!(
        first.kind, frame.kind,
        "{message:?} re-encodes under another kind"
    );
    let back =
        M::from_frame(&first).unwrap_or_else(|e| panic!("{message:?} does not decode back: {e}"));
    let second = back
        .to_frame(frame.request_id)
        .expect("a decoded message re-encodes");
    assert_eq!(
        second, first,
        "{message:?} is not stable through a round trip"
    );
    if !format!("{message:?}").contains("NaN") {
        assert_eq!(back, message);
    }
}

/// Cuts `data` into frames with valid headers: each 34-byte header keeps its kind, flags,
/// request id and route, and is followed by as many payload bytes as its length field
/// names, modulo what is left. A tail shorter than a header is kept as it is.
fn reframe(data: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(data.len());
    let mut rest = data;
    while rest.len() >= HEADER_LEN {
        let (header, tail) = rest.split_at(HEADER_LEN);
        let field = |at: usize, size: usize| {
            header[at..at + size]
                .iter()
                .fold(0u64, |n, &b| n << 8 | u64::from(b))
        };
        let len = field(OFF_LEN, 4) as usize % (tail.len() + 1);
        let frame = Frame {
            kind: header[OFF_KIND],
            flags: field(OFF_FLAGS, 2) as u16,
            request_id: field(OFF_REQUEST_ID, 8),
            route: field(OFF_ROUTE, 8),
            payload: Bytes::copy_from_slice(&tail[..len]),
        };
        frame::encode(&frame, &mut out);
        rest = &tail[len..];
    }
    out.extend_from_slice(rest);
    out
}
