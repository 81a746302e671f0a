//! Serving a listener: accept, tell binary peers from people at `nc`, and serve each.
//!
//! Binary connections are pipelined and served run-to-completion ([`super::frames`]): one
//! task per connection answers what it can at once and keeps the rest as futures of its
//! own, so answers may come back out of order (request ids pair them up). A connection may
//! have `max_in_flight` requests open; past that a request is answered `Overloaded` at once
//! instead of queueing without bound. A stream that stops being frames gets one error frame
//! and is closed. Text connections are answered a line at a time, under the same frame
//! limit: an answer whose binary form would be over it is answered `ERR TooLarge`, so
//! `nc` and a binary client see the same outcome for the same request.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::{FramedRead, LinesCodec};
use tracing::{debug, info, warn};

use super::frames::serve_frames;
use crate::frame::is_binary_start;
use crate::text::{self, TextCommand};
use crate::{ErrorCode, Frame, Message, Request, Response, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PAYLOAD};

/// A server's logic: one frame in, one frame out; one text request in, one answer out.
pub trait Service: Send + Sync + 'static {
    /// Answers a binary frame (any message kind the service takes).
    fn frame(&self, frame: Frame) -> impl Future<Output = Frame> + Send;

    /// Answers a frame at once, inside the connection's own turn, when that needs no
    /// waiting (a read of local state, a ping); otherwise gives the frame back for
    /// [`Service::frame`]. The default answers nothing at once. It must not block.
    fn try_frame(&self, frame: Frame) -> Result<Frame, Frame> {
        Err(frame)
    }
    /// Answers a request typed in the text mode.
    fn text(&self, request: Request) -> impl Future<Output = Response> + Send;

    /// For a request answered by a stream of frames (e.g. topology pushes), the stream;
    /// `None` (the default) for requests answered once by [`Service::frame`].
    fn stream(&self, frame: &Frame) -> Option<mpsc::Receiver<Frame>> {
        let _ = frame;
        None
    }

    /// A connection was accepted (for an open-connections gauge); the default does nothing.
    fn connection_opened(&self) {}

    /// A connection [`Service::connection_opened`] reported has ended.
    fn connection_closed(&self) {}
}

/// The limits a server enforces on its peers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame payload accepted or sent.
    pub max_payload: usize,
    /// Requests one connection may have in flight before it gets `Overloaded`.
    pub max_in_flight: usize,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_payload: DEFAULT_MAX_PAYLOAD, max_in_flight: DEFAULT_MAX_IN_FLIGHT, max_connections: 1024 }
    }
}

/// Serves `listener` until `shutdown` completes.
pub async fn serve<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = connections.clone().try_acquire_owned() else {
                        warn!(%peer, "connection limit reached: refusing");
                        tokio::spawn(refuse(stream));
                        continue;
                    };
                    let service = service.clone();
                    service.connection_opened();
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(stream, service.clone(), limits).await {
                            debug!(%peer, %e, "connection ended");
                        }
                        service.connection_closed();
                        drop(permit);
                    });
                }
                Err(e) => warn!(%e, "accept failed"),
            },
            _ = &mut shutdown => {
                info!("shutting down");
                return;
            }
        }
    }
}

async fn refuse(mut stream: TcpStream) {
    let frame = Response::Error(ErrorCode::Overloaded("too many connections".into())).to_frame(0);
    if let Ok(frame) = frame {
        let mut buf = bytes::BytesMut::new();
        crate::frame::encode(&frame, &mut buf);
        let _ = stream.write_all(&buf).await;
    }
}

/// `response`, or a `TooLarge` error if its binary form would be over `max_payload`.
fn within_limit(response: Response, max_payload: usize) -> Response {
    match postcard::experimental::serialized_size(&response) {
        Ok(len) if len > max_payload => Response::Error(ErrorCode::too_large(len, max_payload)),
        _ => response,
    }
}

async fn serve_connection<S: Service>(stream: TcpStream, service: Arc<S>, limits: Limits) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(());
    }
    if is_binary_start(first[0]) {
        serve_frames(stream, service, limits).await
    } else {
        serve_text(stream, service, limits.max_payload).await
    }
}

async fn serve_text<S: Service>(stream: TcpStream, service: Arc<S>, max_payload: usize) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(BufReader::new(read), LinesCodec::new_with_max_length(text::MAX_LINE));
    while let Some(line) = lines.next().await {
        let answer = match line {
            Ok(line) => match text::parse_line(&line) {
                Ok(TextCommand::Empty) => continue,
                Ok(TextCommand::Quit) => break,
                Ok(TextCommand::Help) => text::HELP.to_owned(),
                Ok(TextCommand::Request(request)) => {
                    text::format_response(&within_limit(service.text(request).await, max_payload))
                }
                Err(e) => text::format_text_error(&e),
            },
            Err(e) => {
                let answer = format!("ERR BadRequest: {e}\n");
                write.write_all(answer.as_bytes()).await?;
                break;
            }
        };
        write.write_all(answer.as_bytes()).await?;
    }
    Ok(())
}
