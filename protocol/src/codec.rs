//! The thin `tokio_util::codec` wrapper around [`frame::decode`] and [`frame::encode`].

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{self, DecodeError, Frame, DEFAULT_MAX_PAYLOAD};

/// Errors on a framed connection: the socket's, or a corrupt stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a frame.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A frame to send is larger than the limit.
    #[error("refusing to send a {len}-byte payload (limit {max})")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Limit.
        max: usize,
    },
}

/// Frames over a byte stream, with a payload size limit in both directions.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_payload: usize,
}

impl FrameCodec {
    /// A codec with the given payload limit.
    pub fn new(max_payload: usize) -> FrameCodec {
        FrameCodec { max_payload }
    }

    /// The payload limit.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }
}

impl Default for FrameCodec {
    fn default() -> FrameCodec {
        FrameCodec::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(frame::decode(src, self.max_payload)?)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&item, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        if item.payload.len() > self.max_payload {
            return Err(CodecError::TooLarge { len: item.payload.len(), max: self.max_payload });
        }
        frame::encode(item, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::{SinkExt, StreamExt};
    use tokio_util::codec::{FramedRead, FramedWrite};

    #[tokio::test]
    async fn frames_cross_a_pipe() {
        let (a, b) = tokio::io::duplex(64);
        let mut tx = FramedWrite::new(a, FrameCodec::default());
        let mut rx = FramedRead::new(b, FrameCodec::default());
        let frames: Vec<Frame> =
            (0..20).map(|i| Frame::new(1, i, Bytes::from(vec![i as u8; i as usize * 10]))).collect();
        let sent = frames.clone();
        let writer = tokio::spawn(async move {
            for f in sent {
                tx.send(f).await.unwrap();
            }
        });
        for want in frames {
            assert_eq!(rx.next().await.unwrap().unwrap(), want);
        }
        writer.await.unwrap();
    }

    #[test]
    fn refuses_to_send_oversized() {
        let mut codec = FrameCodec::new(4);
        let mut buf = BytesMut::new();
        let big = Frame::new(1, 1, Bytes::from_static(b"12345"));
        assert!(matches!(codec.encode(&big, &mut buf), Err(CodecError::TooLarge { len: 5, max: 4 })));
        assert!(buf.is_empty());
    }
}
