//! Shardline's wire protocol, with no I/O in it.
//!
//! Every Shardline process speaks this crate: clients, the balancer, the coordinator and
//! the storage nodes exchange [`Frame`]s over TCP, and a person can talk to any of them with
//! `nc` in the text mode ([`text`]).
//!
//! - [`frame`]: the checksummed header and `decode` / `encode` (sans-IO), the byte table.
//! - [`codec`]: the `tokio_util::codec` wrapper used on sockets.
//! - [`message`]: typed requests and responses by audience, and how they map onto frames.
//! - [`consistency`]: read consistency levels and the session positions clients carry.
//! - [`access`]: who may send what: the permission each frame kind needs (sans-IO).
//! - [`batch`]: the write batch layout a router splits by key without decoding rows.
//! - [`log_entry`]: the replicated log entry and its CRC.
//! - [`model`]: schema, values, rows, shards.
//! - [`quorum`]: the majority a commit or an election needs; client ids for retries.
//! - [`rows`]: read answers built and merged as bytes (a node's stored rows, shards' parts).
//! - [`text`]: the nc text mode's parser and formatter.
//! - `net` (feature `net`): the thin tokio layer: serving a listener, calling a peer.
//!
//! ```
//! use bytes::BytesMut;
//! use shardline_protocol::{frame, Consistency, Message, Request, DEFAULT_MAX_PAYLOAD};
//!
//! let request = Request::Read { low: 100, high: 200, consistency: Consistency::Any };
//! let mut wire = BytesMut::new();
//! frame::encode(&request.to_frame(1).unwrap(), &mut wire);
//!
//! let frame = frame::decode(&mut wire, DEFAULT_MAX_PAYLOAD).unwrap().expect("whole frame");
//! assert_eq!(Request::from_frame(&frame).unwrap(), request);
//! ```

pub mod access;
pub mod batch;
pub mod codec;
pub mod consistency;
pub mod frame;
pub mod log_entry;
pub mod message;
pub mod model;
#[cfg(feature = "net")]
pub mod net;
pub mod quorum;
pub mod rows;
pub mod text;

pub use batch::{BatchError, WriteBatch};
pub use codec::{CodecError, FrameCodec};
pub use consistency::{Consistency, SessionToken, ShardPosition};
pub use frame::{DecodeError, Frame, Route, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PAYLOAD};
pub use log_entry::{EntryError, LogEntry, LogLine, Operation};
pub use message::{
    error_frame, kind, AddServersRequest, ClientSeqMark, ContactStamp, ControlRequest, ControlResponse, CopyDirection,
    CopyProgress, CopySize, ErrorCode, InitRequest, LeaseGrant, Message, MessageError, NodeStatus, PeerRequest,
    PeerResponse, ReplicaRole, Request, Response, Secret, ServerInfo, ShardCommit, ShardCopy, ShardRows, ShardState,
    ShardTopology, Topology, Vote,
};
pub use model::{Column, ColumnType, LogPosition, Row, Schema, SchemaError, ServerAddr, ShardId, ShardSpec, Value};
