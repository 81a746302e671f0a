//! The nc debug mode: one request a line in, readable lines out.
//!
//! Every server answers this on its binary port: the first byte a connection sends tells
//! the two apart ([`crate::frame::is_binary_start`]). Lines parse into the same
//! [`Request`](crate::message::Request) values the binary protocol carries, so a person at
//! `nc` exercises exactly the code paths a client does. Every answer ends with one line
//! that starts `OK` or `ERR`, so scripts know where it stops.

mod format;
mod parse;

pub use format::{format_response, format_text_error, HELP};
pub use parse::{parse_line, TextCommand, TextError, MAX_LINE};
