//! The coordinator's election, played by the test.

use shardline_protocol::{ControlRequest, ControlResponse, Vote};

use super::cluster::{Cluster, LEASE_MS, SHARD};

/// What an election did.
#[derive(Debug, Clone)]
pub(crate) struct Election {
    /// The node told to lead.
    pub winner: usize,
    /// Every answer to the election query: node, and its vote or why there was none.
    pub votes: Vec<(usize, Result<Vote, String>)>,
}

impl Election {
    /// Node `i`'s vote, if it voted.
    pub(crate) fn vote(&self, i: usize) -> Option<&Vote> {
        self.votes.iter().find(|(n, _)| *n == i).and_then(|(_, v)| v.as_ref().ok())
    }
}

impl Cluster {
    /// The coordinator's election at `term` among the nodes `live`: every one is asked
    /// (adopting `term`), a majority of all replicas must answer, the electable voter with
    /// the highest (last term, last index) is told to lead and the other voters to follow.
    pub(crate) async fn elect(&self, term: u64, live: &[usize]) -> Result<Election, String> {
        let mut votes = Vec::new();
        for &i in live {
            let vote = match self.control(i, ControlRequest::ElectionQuery { shard: SHARD, term }).await {
                Ok(ControlResponse::Vote(v)) if v.term == term => Ok(v),
                Ok(ControlResponse::Vote(v)) => Err(format!("voted at term {} instead of {term}: {v:?}", v.term)),
                Ok(other) => Err(format!("answered {other:?}")),
                Err(e) => Err(e.to_string()),
            };
            votes.push((i, vote));
        }
        let majority = self.nodes.len() / 2 + 1;
        let voters: Vec<(usize, &Vote)> = votes.iter().filter_map(|(i, v)| v.as_ref().ok().map(|v| (*i, v))).collect();
        if voters.len() < majority {
            return Err(format!("only {} of {majority} votes needed: {votes:?}", voters.len()));
        }
        let winner = voters
            .iter()
            .filter(|(_, v)| v.electable)
            .max_by_key(|(i, v)| (v.last.term, v.last.index, std::cmp::Reverse(*i)))
            .map(|(i, _)| *i)
            .ok_or_else(|| format!("no electable voter: {votes:?}"))?;
        match self.become_primary(winner, term, LEASE_MS).await {
            Ok(ControlResponse::Ok) => {}
            other => return Err(format!("BecomePrimary at {term} on node {winner}: {other:?}")),
        }
        for &(i, _) in voters.iter().filter(|(i, _)| *i != winner) {
            match self.become_follower(i, term, winner).await {
                Ok(ControlResponse::Ok) => {}
                other => return Err(format!("BecomeFollower at {term} on node {i}: {other:?}")),
            }
        }
        Ok(Election { winner, votes })
    }
}
