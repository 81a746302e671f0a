//! One election for one shard as a sans-IO state machine.
//!
//! The driver persists the new term first, then asks [`ElectionRound::queries`], sends
//! them, feeds every answer (or failed call) to [`ElectionRound::on_answer`], and as soon
//! as [`ElectionRound::decidable`] (a majority's answers elect someone, or everyone has
//! answered) carries out [`ElectionRound::outcome`]: tell the winner to lead, then the
//! voters to follow. Waiting for the rest would only wait out a hung replica's call
//! timeout: any majority's longest log holds every committed entry.
//! [`Core`](crate::driver::Core) drives the rounds, in the coordinator and the simulator.

use std::collections::BTreeSet;

use shardline_protocol::{ControlRequest, ControlResponse, ErrorCode, ServerAddr, ShardId, Vote};

use crate::election::{decide, Decision};

/// An election under way.
#[derive(Debug, Clone)]
pub struct ElectionRound {
    shard: ShardId,
    term: u64,
    replicas: Vec<ServerAddr>,
    learners: Vec<ServerAddr>,
    needed: usize,
    votes: Vec<(String, Vote)>,
    newer: Option<u64>,
    answered: BTreeSet<String>,
    prefer: Option<String>,
}

/// What an election decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A replica knows a newer term than the round's: move the shard's term past it and
    /// elect again later.
    NewerTerm(u64),
    /// Too few usable votes: the shard stays without a primary.
    NoQuorum {
        /// Usable answers.
        votes: usize,
        /// Answers needed.
        needed: usize,
    },
    /// `primary` leads: send it `lead`; once it accepts, send each voter its `follow`.
    Lead {
        /// The winner.
        primary: ServerAddr,
        /// Its `BecomePrimary`.
        lead: ControlRequest,
        /// `BecomeFollower` for every other replica that voted.
        follow: Vec<(ServerAddr, ControlRequest)>,
    },
}

impl ElectionRound {
    /// A round at `term` (already persisted) among the voting `replicas`, needing a
    /// majority of them; `learners` vote in nothing and are told to follow the winner.
    pub fn new(shard: ShardId, term: u64, replicas: Vec<ServerAddr>, learners: Vec<ServerAddr>) -> ElectionRound {
        let needed = crate::failover::majority(replicas.len());
        let (votes, newer, answered) = (Vec::new(), None, BTreeSet::new());
        ElectionRound { shard, term, replicas, learners, needed, votes, newer, answered, prefer: None }
    }

    /// The same round, where `name` wins among the longest logs (a planned switchover).
    pub fn preferring(mut self, name: Option<String>) -> ElectionRound {
        self.prefer = name;
        self
    }

    /// The voters' names, then the learners'.
    pub fn members(&self) -> (Vec<String>, Vec<String>) {
        let names = |set: &[ServerAddr]| set.iter().map(|a| a.name.clone()).collect();
        (names(&self.replicas), names(&self.learners))
    }

    /// The round's term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The election query for every replica: answering it makes a replica adopt the term.
    pub fn queries(&self) -> Vec<(ServerAddr, ControlRequest)> {
        let query = ControlRequest::ElectionQuery { shard: self.shard, term: self.term };
        self.replicas.iter().map(|r| (r.clone(), query.clone())).collect()
    }

    /// `from` answered (`None`: the call failed or timed out).
    pub fn on_answer(&mut self, from: &str, answer: Option<ControlResponse>) {
        if !self.answered.insert(from.to_owned()) {
            return;
        }
        match answer {
            Some(ControlResponse::Vote(v)) => self.votes.push((from.to_owned(), v)),
            Some(ControlResponse::Error(ErrorCode::StaleTerm { current, .. })) => {
                self.newer = self.newer.max(Some(current));
            }
            _ => {}
        }
    }

    /// Whether every replica has answered (or failed to).
    pub fn complete(&self) -> bool {
        self.answered.len() >= self.replicas.len()
    }

    /// Whether the answers so far decide the round: everyone answered, a newer term turned
    /// up, or a majority's votes elect a primary. A planned switchover's round waits for
    /// its target's answer (or its failure) too, so the target is not passed over merely
    /// for answering last.
    pub fn decidable(&self) -> bool {
        let target_waited = self.prefer.as_ref().is_none_or(|t| self.answered.contains(t));
        self.complete()
            || self.newer.is_some()
            || (target_waited && matches!(decide(&self.votes, self.needed, None), Decision::Elect { .. }))
    }

    /// Whether `name` is a voter of this round.
    pub fn is_voter(&self, name: &str) -> bool {
        self.replicas.iter().any(|r| r.name == name)
    }

    /// The votes received so far.
    pub fn votes(&self) -> &[(String, Vote)] {
        &self.votes
    }

    /// What the answers so far decide; a primary is told to lead with a `lease_ms` lease.
    pub fn outcome(&self, lease_ms: u64) -> Outcome {
        if let Some(current) = self.newer {
            return Outcome::NewerTerm(current);
        }
        match decide(&self.votes, self.needed, self.prefer.as_deref()) {
            Decision::NoQuorum { votes, needed } => Outcome::NoQuorum { votes, needed },
            Decision::Elect { primary, .. } => {
                let leader = self.replicas.iter().find(|r| r.name == primary).expect("the winner voted").clone();
                let followers: Vec<ServerAddr> = self.replicas.iter().filter(|r| r.name != primary).cloned().collect();
                let lead = ControlRequest::BecomePrimary {
                    shard: self.shard,
                    term: self.term,
                    followers: followers.clone(),
                    learners: self.learners.clone(),
                    lease_ms,
                };
                let follow_request =
                    ControlRequest::BecomeFollower { shard: self.shard, term: self.term, primary: leader.clone() };
                let voted = followers.into_iter().filter(|f| self.votes.iter().any(|(name, _)| *name == f.name));
                let follow = voted.chain(self.learners.iter().cloned()).map(|f| (f, follow_request.clone())).collect();
                Outcome::Lead { primary: leader, lead, follow }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_protocol::LogPosition;

    fn addr(name: &str) -> ServerAddr {
        ServerAddr { name: name.into(), addr: format!("{name}:1") }
    }

    fn vote(index: u64) -> Option<ControlResponse> {
        let last = LogPosition { term: 1, index };
        Some(ControlResponse::Vote(Vote { shard: ShardId(1), term: 2, last, electable: true, whole: true }))
    }

    #[test]
    fn the_longest_log_of_a_majority_leads_and_only_voters_follow() {
        let mut round = ElectionRound::new(ShardId(1), 2, vec![addr("a"), addr("b"), addr("c")], vec![addr("d")]);
        assert_eq!(round.queries().len(), 3, "learners are not asked to vote");
        round.on_answer("a", vote(5));
        assert!(matches!(round.outcome(300), Outcome::NoQuorum { votes: 1, needed: 2 }));
        round.on_answer("b", vote(7));
        round.on_answer("c", None);
        assert!(round.complete());
        let Outcome::Lead { primary, lead, follow } = round.outcome(300) else { panic!("a leader") };
        assert_eq!(primary.name, "b");
        assert!(matches!(lead, ControlRequest::BecomePrimary { term: 2, ref followers, .. } if followers.len() == 2));
        assert!(matches!(lead, ControlRequest::BecomePrimary { ref learners, .. } if learners.len() == 1));
        // Voters that answered, and the learner; never the silent voter.
        assert_eq!(follow.iter().map(|(f, _)| f.name.as_str()).collect::<Vec<_>>(), ["a", "d"]);
    }

    #[test]
    fn a_majority_of_votes_decides_without_waiting_for_the_rest() {
        let mut round = ElectionRound::new(ShardId(1), 2, vec![addr("a"), addr("b"), addr("c")], vec![]);
        round.on_answer("a", vote(5));
        assert!(!round.decidable(), "one vote of three elects nobody");
        round.on_answer("b", vote(4));
        assert!(round.decidable() && !round.complete(), "two of three decide; c may be hung");
        assert!(matches!(round.outcome(300), Outcome::Lead { ref primary, .. } if primary.name == "a"));
    }

    #[test]
    fn a_switchover_round_waits_for_its_target() {
        let round = ElectionRound::new(ShardId(1), 2, vec![addr("a"), addr("b"), addr("c")], vec![]);
        let mut round = round.preferring(Some("c".into()));
        round.on_answer("a", vote(5));
        round.on_answer("b", vote(5));
        assert!(!round.decidable(), "the target has not answered yet");
        round.on_answer("c", vote(5));
        assert!(matches!(round.outcome(300), Outcome::Lead { ref primary, .. } if primary.name == "c"));
    }

    #[test]
    fn a_newer_term_anywhere_stops_the_round() {
        let mut round = ElectionRound::new(ShardId(1), 2, vec![addr("a"), addr("b")], vec![]);
        round.on_answer("a", vote(5));
        round.on_answer("b", Some(ControlResponse::Error(ErrorCode::StaleTerm { current: 9, got: 2 })));
        assert_eq!(round.outcome(300), Outcome::NewerTerm(9));
    }
}
