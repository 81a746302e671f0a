//! Reads at a consistency level, and the session token a client keeps for them.
//!
//! Every read answer names the position (term, applied index) each shard's replica served
//! it at, and every write acknowledgement names its commit's; the client keeps the
//! highest per shard ([`SessionToken`]). A `session` read sends that token, so whichever
//! replica serves it has applied at least what this client wrote or saw before
//! (read-your-writes, monotonic reads), or the router asks the primary.

use std::ops::RangeInclusive;

use shardline_protocol::{Consistency, Request, Response, Row, SessionToken, ShardPosition};

use crate::client::{unexpected, Client};
use crate::error::ClientError;

impl Client {
    /// Rows with keys in `range`, in key order, at the configured
    /// [`read_consistency`](crate::ClientConfig::read_consistency) (default `any`: any
    /// serving replica of each shard).
    pub async fn read(&self, range: RangeInclusive<i64>) -> Result<Vec<Row>, ClientError> {
        let level = self.config().read_consistency.clone();
        self.read_at(range, &level).await
    }

    /// Like [`Client::read`], but served by each shard's primary under its lease: the
    /// answer reflects every write acknowledged before the call (linearizable).
    pub async fn read_primary(&self, range: RangeInclusive<i64>) -> Result<Vec<Row>, ClientError> {
        self.read_at(range, &Consistency::Primary).await
    }

    /// Rows with keys in `range`, in key order, at consistency `level`; a `session` level
    /// sends this client's session token (the positions in `level` are ignored).
    pub async fn read_at(&self, range: RangeInclusive<i64>, level: &Consistency) -> Result<Vec<Row>, ClientError> {
        Ok(self.read_positioned(range, level).await?.0)
    }

    /// Like [`Client::read_at`], also answering the position each shard was read at.
    pub async fn read_positioned(
        &self,
        range: RangeInclusive<i64>,
        level: &Consistency,
    ) -> Result<(Vec<Row>, Vec<ShardPosition>), ClientError> {
        let (low, high) = range.into_inner();
        if low > high {
            return Err(ClientError::InvalidRequest(format!("the range's low {low} is above its high {high}")));
        }
        let consistency = match level {
            Consistency::Session { .. } => self.session().consistency(),
            other => other.clone(),
        };
        match self.request(&Request::Read { low, high, consistency }).await? {
            Response::Rows { at, rows } => {
                let mut session = self.session_lock();
                for position in &at {
                    session.observe(*position);
                }
                Ok((rows, at))
            }
            other => Err(unexpected("Rows", &other)),
        }
    }

    /// This client's session token: the highest position it saw per shard.
    pub fn session(&self) -> SessionToken {
        self.session_lock().clone()
    }

    fn session_lock(&self) -> std::sync::MutexGuard<'_, SessionToken> {
        self.inner().session.lock().expect("session lock")
    }
}
