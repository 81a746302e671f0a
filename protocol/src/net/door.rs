//! Both sides of the authentication handshake on a binary connection.
//!
//! A client's first frame is `Request::Auth`; the server answers `Authenticated` (then
//! serves the connection with the user's grants) or `Unauthenticated`. Before that, the
//! server answers `Ping` with `Pong` and anything else with `Unauthenticated`, and closes
//! the connection after [`MAX_ATTEMPTS`] refused credentials or [`MAX_EARLY_FRAMES`]
//! frames. The caller bounds the whole exchange with the handshake timeout.
//!
//! [`open`] dials a peer: TCP, then TLS if the [`Outgoing`] says so, then the credential.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::auth::{Credential, Gate};
use super::tls::ClientTls;
use super::{CallError, Stream};
use crate::access::Grants;
use crate::{error_frame, frame, kind, ErrorCode, Frame, Message, Request, Response};

/// Refused credentials a connection may present before it is closed.
pub const MAX_ATTEMPTS: u32 = 3;
/// Frames an unauthenticated connection may send before it is closed.
pub const MAX_EARLY_FRAMES: u32 = 64;
/// The largest frame payload taken before authentication (an `Auth` is a name and a
/// secret): a stranger can make the server hold no more than this.
pub const MAX_EARLY_PAYLOAD: usize = 8 * 1024;

/// What an outgoing connection presents: TLS (verifying the peer) and a credential.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// Verify the peer against these CAs and encrypt; `None`: in the clear.
    pub tls: Option<ClientTls>,
    /// The credential to present once connected, if any.
    pub credential: Option<Credential>,
}

impl Outgoing {
    /// This process's own: [`super::tls::set_outgoing`] and [`super::auth::set_outgoing`].
    pub fn process() -> Outgoing {
        Outgoing { tls: super::tls::outgoing(), credential: super::auth::outgoing() }
    }

    /// This process's TLS with `credential` (none if `None`) instead of its credential.
    pub fn presenting(credential: Option<Credential>) -> Outgoing {
        Outgoing { tls: super::tls::outgoing(), credential }
    }
}

/// Runs the server's side on `stream`, `input` holding what was read from it already: the
/// grants won and the bytes read past the `Auth` frame, or `None` if the connection ended
/// or was closed without authenticating.
pub(super) async fn accept(
    stream: &mut Stream,
    mut input: BytesMut,
    gate: &Gate,
    peer: IpAddr,
    max_payload: usize,
) -> io::Result<Option<(Grants, BytesMut)>> {
    let (mut attempts, mut frames) = (0, 0);
    let max_payload = max_payload.min(MAX_EARLY_PAYLOAD);
    loop {
        let frame = match frame::decode(&mut input, max_payload) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                if stream.read_buf(&mut input).await? == 0 {
                    return Ok(None);
                }
                continue;
            }
            Err(e) => {
                debug!(%peer, %e, "corrupt stream before authentication: closing");
                send(stream, &error_frame(0, 0, ErrorCode::BadRequest(e.to_string()))).await?;
                return Ok(None);
            }
        };
        frames += 1;
        let answer = match frame.kind {
            kind::PING => Response::Pong,
            kind::AUTH => match Request::from_frame(&frame) {
                Ok(Request::Auth { user, secret }) => match gate.check(peer, &user, &secret).await {
                    Ok(grants) => {
                        let answer = Response::Authenticated { user, grants: grants.names() };
                        send(stream, &to_frame(&answer, frame.request_id)).await?;
                        return Ok(Some((grants, input)));
                    }
                    Err(e) => {
                        attempts += 1;
                        Response::Error(ErrorCode::Unauthenticated(e.to_string()))
                    }
                },
                _ => Response::Error(ErrorCode::BadRequest("an Auth frame that does not decode".into())),
            },
            other => {
                let code = ErrorCode::Unauthenticated("authenticate first (Auth)".into());
                send(stream, &error_frame(other, frame.request_id, code)).await?;
                if frames >= MAX_EARLY_FRAMES {
                    return Ok(None);
                }
                continue;
            }
        };
        send(stream, &to_frame(&answer, frame.request_id)).await?;
        if attempts >= MAX_ATTEMPTS || frames >= MAX_EARLY_FRAMES {
            debug!(%peer, attempts, frames, "closing an unauthenticated connection");
            return Ok(None);
        }
    }
}

/// Runs the client's side on a fresh connection to `addr`: presents `credential` and
/// waits for the answer.
pub(super) async fn present(
    stream: &mut Stream,
    addr: &str,
    credential: &Credential,
    max_payload: usize,
) -> Result<(), CallError> {
    let closed = || CallError::Closed { addr: addr.to_owned() };
    let request = Request::Auth { user: credential.user.clone(), secret: credential.secret.clone() };
    let frame = request.to_frame(0).map_err(|e| CallError::Protocol(e.to_string()))?;
    send(stream, &frame).await.map_err(|_| closed())?;
    let mut input = BytesMut::with_capacity(1024);
    let reply = loop {
        match frame::decode(&mut input, max_payload) {
            Ok(Some(reply)) => break reply,
            Ok(None) => {
                if stream.read_buf(&mut input).await.map_err(|_| closed())? == 0 {
                    return Err(closed());
                }
            }
            Err(e) => return Err(CallError::Protocol(e.to_string())),
        }
    };
    match Response::from_frame(&reply) {
        Ok(Response::Authenticated { .. }) => Ok(()),
        Ok(Response::Error(code)) => Err(CallError::Refused { addr: addr.to_owned(), reason: code.to_string() }),
        Ok(other) => Err(CallError::Protocol(format!("answer to Auth: {other:?}"))),
        Err(e) => Err(CallError::Protocol(e.to_string())),
    }
}

/// Connects to `addr` within `timeout` (Nagle off), runs the TLS handshake and presents
/// the credential that `outgoing` names, within the same timeout: a stream ready for frames.
pub async fn open(addr: &str, timeout: Duration, max_payload: usize, outgoing: &Outgoing) -> Result<Stream, CallError> {
    let connect_err = |reason: String| CallError::Connect { addr: addr.to_owned(), reason };
    let opening = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| connect_err(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| connect_err(e.to_string()))?;
        let mut stream = match &outgoing.tls {
            Some(tls) => tls.connect(addr, tcp).await.map_err(|e| tls_error(addr, e))?,
            None => Stream::Plain(tcp),
        };
        if let Some(credential) = &outgoing.credential {
            present(&mut stream, addr, credential, max_payload).await?;
        }
        Ok(stream)
    };
    tokio::time::timeout(timeout, opening).await.map_err(|_| connect_err("timed out".into()))?
}

/// A failed client handshake: a certificate refused, or a peer that does not speak TLS.
fn tls_error(addr: &str, e: io::Error) -> CallError {
    let reason = match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
            format!("{e} (does the server speak TLS on this port?)")
        }
        _ => e.to_string(),
    };
    CallError::Tls { addr: addr.to_owned(), reason }
}

fn to_frame(response: &Response, id: u64) -> Frame {
    response.to_frame(id).unwrap_or_else(|_| error_frame(kind::AUTH, id, ErrorCode::Internal("encode".into())))
}

async fn send(stream: &mut Stream, frame: &Frame) -> io::Result<()> {
    let mut buf = BytesMut::new();
    frame::encode(frame, &mut buf);
    stream.write_all(&buf).await?;
    stream.flush().await
}
