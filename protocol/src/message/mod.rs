//! Typed messages, grouped by audience, and how they map onto frames.
//!
//! | enum | from → to | kind bytes |
//! |---|---|---|
//! | [`Request`] / [`Response`] | client → balancer → node or coordinator | `0x10..` / `0x40..` |
//! | [`ControlRequest`] / [`ControlResponse`] | coordinator → storage node | `0x70..` / `0x90..` |
//! | [`PeerRequest`] / [`PeerResponse`] | primary → secondary | `0xA0..` / `0xB0..` |
//!
//! A frame's kind is its enum's base plus the variant's index, which is also the first byte
//! of the variant's postcard encoding (postcard writes an enum's variant index as a varint,
//! one byte below 128). So the header names the operation for routers, and a decoder checks
//! that the payload agrees with the header. One exception: a [`Request::Write`] payload is
//! the raw [`WriteBatch`](crate::batch::WriteBatch) layout, so a router can split it by key.

mod client;
mod control;
mod error;
mod peer;
mod status;

pub use client::{kind, AddServersRequest, InitRequest, Request, Response, Secret, ShardCommit, ShardRows};
pub use control::{ControlRequest, ControlResponse, LeaseGrant, Vote};
pub use error::ErrorCode;
pub use peer::{ClientSeqMark, ContactStamp, PeerRequest, PeerResponse};
pub use status::{
    CopyDirection, CopyProgress, CopySize, NodeStatus, ReplicaRole, ServerInfo, ShardCopy, ShardState, ShardTopology,
    Topology,
};

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use crate::frame::{Frame, Route};

/// Why a frame does not hold the message its kind names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The kind byte belongs to another enum (or none).
    #[error("frame kind {kind:#04x} is not a {expected}")]
    WrongKind {
        /// The frame's kind.
        kind: u8,
        /// The enum that was expected.
        expected: &'static str,
    },
    /// The payload does not decode.
    #[error("{expected} payload does not decode: {reason}")]
    Payload {
        /// The enum that was expected.
        expected: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The payload decoded to another variant than the header's kind names.
    #[error("payload variant {payload} disagrees with header kind {kind:#04x}")]
    KindMismatch {
        /// The frame's kind.
        kind: u8,
        /// The payload's variant index.
        payload: u8,
    },
    /// A value too large to encode.
    #[error("message too large to encode: {0}")]
    Encode(String),
}

/// An error frame answering (or replacing) a frame of `kind`, in the message enum the peer
/// expects back: a control or peer request (or answer) gets its own enum's `Error`, so the
/// caller decodes a typed error instead of a frame of the wrong kind.
pub fn error_frame(kind: u8, request_id: u64, code: ErrorCode) -> Frame {
    let encoded = if ControlRequest::owns_kind(kind) || ControlResponse::owns_kind(kind) {
        ControlResponse::Error(code).to_frame(request_id)
    } else if PeerRequest::owns_kind(kind) || PeerResponse::owns_kind(kind) {
        PeerResponse::Error(code).to_frame(request_id)
    } else {
        Response::Error(code).to_frame(request_id)
    };
    // An error is a variant index, a few integers and a short message: it always encodes.
    encoded.expect("an error frame encodes")
}

/// Decodes a postcard value that must fill `bytes` exactly: trailing bytes are refused, so
/// a damaged length cannot hide behind a message that still decodes.
pub(crate) fn decode_exact<T: DeserializeOwned>(expected: &'static str, bytes: &[u8]) -> Result<T, MessageError> {
    let payload_err = |reason: String| MessageError::Payload { expected, reason };
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| payload_err(e.to_string()))?;
    if !rest.is_empty() {
        return Err(payload_err(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

/// A message enum that travels in frames: a kind range and a postcard body.
pub trait Message: Serialize + DeserializeOwned + Sized {
    /// The kind byte of variant 0.
    const BASE: u8;
    /// How many kinds the enum may use, from `BASE`.
    const SPAN: u8;
    /// The enum's name, for errors.
    const NAME: &'static str;

    /// The route a frame carrying this message should have.
    fn route(&self) -> Route {
        Route::None
    }

    /// Extra header flags this message implies.
    fn flags(&self) -> u16 {
        0
    }

    /// Encodes the payload and names the variant index it carries.
    fn encode_payload(&self) -> Result<(u8, Bytes), MessageError> {
        let payload = postcard::to_allocvec(self).map_err(|e| MessageError::Encode(e.to_string()))?;
        Ok((payload[0], Bytes::from(payload)))
    }

    /// Decodes a payload whose header named `kind`, already checked to be in range.
    fn decode_payload(kind: u8, payload: &Bytes) -> Result<Self, MessageError> {
        let message: Self = decode_exact(Self::NAME, payload)?;
        let variant = payload[0];
        if kind - Self::BASE != variant {
            return Err(MessageError::KindMismatch { kind, payload: variant });
        }
        Ok(message)
    }

    /// Whether `kind` belongs to this enum.
    fn owns_kind(kind: u8) -> bool {
        kind >= Self::BASE && kind - Self::BASE < Self::SPAN
    }

    /// Builds a frame for this message.
    fn to_frame(&self, request_id: u64) -> Result<Frame, MessageError> {
        let (variant, payload) = self.encode_payload()?;
        let kind = Self::BASE + variant;
        Ok(Frame::new(kind, request_id, payload).with_route(self.route()).with_flags(self.flags()))
    }

    /// Reads this message out of a frame.
    fn from_frame(frame: &Frame) -> Result<Self, MessageError> {
        if !Self::owns_kind(frame.kind) {
            return Err(MessageError::WrongKind { kind: frame.kind, expected: Self::NAME });
        }
        if frame.payload.is_empty() {
            return Err(MessageError::Payload { expected: Self::NAME, reason: "empty payload".into() });
        }
        Self::decode_payload(frame.kind, &frame.payload)
    }
}
