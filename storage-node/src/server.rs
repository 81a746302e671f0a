//! The TCP layer: accept, tell binary peers from people at `nc`, and serve each.
//!
//! Binary connections are pipelined: every frame is handled in its own task and answered
//! when ready, so answers may come back out of order (request ids pair them up). A
//! connection may have `max_in_flight` requests open; past that a request is answered
//! `Overloaded` at once instead of queueing without bound. A stream that stops being
//! frames gets one error frame and is closed. Text connections are answered a line at a
//! time.

use std::future::Future;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use shardline_protocol::frame::is_binary_start;
use shardline_protocol::text::{self, TextCommand};
use shardline_protocol::{ErrorCode, Frame, FrameCodec, Message, Response, Route};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec};
use tracing::{debug, info, warn};

use crate::node::Node;

/// Serves `listener` until `shutdown` completes.
pub async fn run(listener: TcpListener, node: Arc<Node>, shutdown: impl Future<Output = ()>) {
    let connections = Arc::new(Semaphore::new(node.config().max_connections));
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
                    let node = node.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream, node).await {
                            debug!(%peer, %e, "connection ended");
                        }
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
        shardline_protocol::frame::encode(&frame, &mut buf);
        let _ = stream.write_all(&buf).await;
    }
}

async fn serve(stream: TcpStream, node: Arc<Node>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(());
    }
    if is_binary_start(first[0]) {
        serve_frames(stream, node).await
    } else {
        serve_text(stream, node).await
    }
}

async fn serve_frames(stream: TcpStream, node: Arc<Node>) -> std::io::Result<()> {
    let (read, write) = stream.into_split();
    let codec = FrameCodec::new(node.config().max_payload);
    let mut frames = FramedRead::new(read, codec);
    let mut sink = FramedWrite::new(write, codec);
    let (tx, mut rx) = mpsc::channel::<Frame>(256);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.send(&frame).await.is_err() {
                break;
            }
        }
    });
    let in_flight = Arc::new(Semaphore::new(node.config().max_in_flight));
    while let Some(frame) = frames.next().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                warn!(%e, "corrupt stream: closing");
                let answer = Response::Error(ErrorCode::BadRequest(e.to_string())).to_frame(0);
                if let Ok(answer) = answer {
                    let _ = tx.send(answer).await;
                }
                break;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            let limit = node.config().max_in_flight;
            let busy = Response::Error(ErrorCode::Overloaded(format!(
                "over {limit} requests in flight"
            )));
            if let Ok(answer) = busy.to_frame(frame.request_id) {
                let _ = tx.send(answer).await;
            }
            continue;
        };
        let node = node.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let answer = node.handle_frame(frame).await;
            let _ = tx.send(answer).await;
            drop(permit);
        });
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

async fn serve_text(stream: TcpStream, node: Arc<Node>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(
        BufReader::new(read),
        LinesCodec::new_with_max_length(text::MAX_LINE),
    );
    while let Some(line) = lines.next().await {
        let answer = match line {
            Ok(line) => match text::parse_line(&line) {
                Ok(TextCommand::Empty) => continue,
                Ok(TextCommand::Quit) => break,
                Ok(TextCommand::Help) => text::HELP.to_owned(),
                Ok(TextCommand::Request(request)) => {
                    text::format_response(&node.request(request, Route::None, false).await)
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
