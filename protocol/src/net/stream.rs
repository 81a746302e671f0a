//! One connection type for every framed hop: a TCP stream in the clear, or the same stream
//! under TLS. [`super::serve_with`], [`super::Conn`] and [`super::MuxConn`] all run over a
//! [`Stream`], so TLS changes nothing above this module.
//!
//! An enum rather than a generic: the plain path costs one branch per poll, and the types
//! that hold a stream keep no type parameter. The halves of a plain stream are tokio's
//! owned halves (no lock between reader and writer, as before TLS); a TLS stream's are
//! [`tokio::io::split`]'s, since one TLS session carries both directions.
//!
//! A TLS write may leave encrypted bytes inside the session when the socket is full, so a
//! writer flushes once its buffer is out (a no-op in the clear).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// A connection, in the clear or under TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (either side of the handshake).
    Tls(Box<TlsStream<TcpStream>>),
}

/// The read half of a [`Stream`].
#[derive(Debug)]
pub enum ReadHalf {
    /// Of a plain stream.
    Plain(OwnedReadHalf),
    /// Of a TLS stream.
    Tls(tokio::io::ReadHalf<Box<TlsStream<TcpStream>>>),
}

/// The write half of a [`Stream`].
#[derive(Debug)]
pub enum WriteHalf {
    /// Of a plain stream.
    Plain(OwnedWriteHalf),
    /// Of a TLS stream.
    Tls(tokio::io::WriteHalf<Box<TlsStream<TcpStream>>>),
}

impl Stream {
    /// Whether the stream is under TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Splits the stream for a reader task and a writer task.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(stream: TcpStream) -> Stream {
        Stream::Plain(stream)
    }
}

/// Implements `AsyncRead` for an enum whose variants all do.
macro_rules! delegate_read {
    ($type:ident) => {
        impl AsyncRead for $type {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $type::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    $type::Tls(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

/// Implements `AsyncWrite` for an enum whose variants all do.
macro_rules! delegate_write {
    ($type:ident) => {
        impl AsyncWrite for $type {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $type::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    $type::Tls(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $type::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    $type::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $type::Plain(s) => s.is_write_vectored(),
                    $type::Tls(s) => s.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $type::Plain(s) => Pin::new(s).poll_flush(cx),
                    $type::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $type::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    $type::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

delegate_read!(Stream);
delegate_write!(Stream);
delegate_read!(ReadHalf);
delegate_write!(WriteHalf);
