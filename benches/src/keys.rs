//! Which key each operation uses: the bench's key set, which of its keys hold rows, and the
//! uniform, zipfian and sequential choices over them.
//!
//! The key set is a ring of positions over `order` (the keys, rows that existed first):
//! positions `[deleted, inserted)` hold rows. An insert claims position `inserted` (a fresh
//! key), a delete claims `deleted` (the oldest row), reads and updates pick inside the
//! window. Positions within `slack` (the operations that can be in flight) of either edge are
//! avoided by updates and deletes, so they do not race an insert or a delete still in flight,
//! and an insert never wraps around onto a key whose delete may still be in flight.
//!
//! ```
//! use shardline_benches::keys::{KeySpace, Rng};
//! use shardline_benches::spec::KeyDist;
//!
//! let ks = KeySpace::new(vec![10, 11], (12..20).collect(), KeyDist::Uniform, 0, 7);
//! let mut rng = Rng::new(1);
//! assert!([10, 11].contains(&ks.pick_existing(&mut rng).unwrap()));
//! let fresh = ks.claim_insert().unwrap();
//! assert!((12..20).contains(&fresh));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use crate::spec::KeyDist;

/// A small, fast, seedable generator (SplitMix64); good enough for picking keys.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// YCSB's zipfian generator: rank 0 is the most popular, P(rank i) ∝ 1 / (i+1)^theta.
#[derive(Debug, Clone)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// YCSB's constant.
    pub const THETA: f64 = 0.99;

    /// A generator over `items` ranks (at least 2) with YCSB's constant.
    pub fn new(items: u64) -> Zipfian {
        let items = items.max(2);
        let theta = Zipfian::THETA;
        let zetan: f64 = (1..=items).map(|i| 1.0 / (i as f64).powf(theta)).sum();
        let zeta2 = 1.0 + 0.5f64.powf(theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian { items, theta, alpha: 1.0 / (1.0 - theta), zetan, eta }
    }

    /// A rank in `0..items` for a uniform `u` in [0, 1).
    pub fn rank(&self, u: f64) -> u64 {
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let r = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.items - 1)
    }
}

/// FNV-1a of a u64: scatters zipfian ranks over the window (YCSB's scrambled zipfian).
fn fnv(x: u64) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in x.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// The bench's key set and which of its keys hold rows; shared by every worker.
#[derive(Debug)]
pub struct KeySpace {
    order: Vec<i64>,
    inserted: AtomicU64,
    deleted: AtomicU64,
    cursor: AtomicU64,
    slack: u64,
    dist: KeyDist,
    zipf: Option<Zipfian>,
}

impl KeySpace {
    /// A key set of `existing` keys (they hold rows) and `free` ones; `slack` is how many
    /// operations can be in flight at once; `seed` shuffles the order (sorted for
    /// [`KeyDist::Sequential`]).
    pub fn new(mut existing: Vec<i64>, mut free: Vec<i64>, dist: KeyDist, slack: u64, seed: u64) -> KeySpace {
        let mut rng = Rng::new(seed);
        if dist == KeyDist::Sequential {
            existing.sort_unstable();
            free.sort_unstable();
        } else {
            rng.shuffle(&mut existing);
            rng.shuffle(&mut free);
        }
        let present = existing.len() as u64;
        let mut order = existing;
        order.extend(free);
        let zipf = (dist == KeyDist::Zipfian).then(|| Zipfian::new((order.len() as u64).min(10_000_000)));
        KeySpace {
            order,
            inserted: AtomicU64::new(present),
            deleted: AtomicU64::new(0),
            cursor: AtomicU64::new(0),
            slack,
            dist,
            zipf,
        }
    }

    /// Keys in the set.
    pub fn len(&self) -> u64 {
        self.order.len() as u64
    }

    /// Whether the set has no keys.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Keys that hold rows (or are being inserted).
    pub fn present(&self) -> u64 {
        self.inserted.load(Ordering::Acquire) - self.deleted.load(Ordering::Acquire)
    }

    fn at(&self, pos: u64) -> i64 {
        self.order[(pos % self.len()) as usize]
    }

    /// A fresh key to insert, or `None` when every key holds a row. Positions wrap around
    /// the ring, so an insert stays `slack` behind the deletes: a key whose delete is still
    /// in flight is not inserted again.
    pub fn claim_insert(&self) -> Option<i64> {
        let mut ins = self.inserted.load(Ordering::Acquire);
        loop {
            if ins - self.deleted.load(Ordering::Acquire) + self.slack >= self.len() {
                return None;
            }
            match self.inserted.compare_exchange_weak(ins, ins + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(self.at(ins)),
                Err(now) => ins = now,
            }
        }
    }

    /// The oldest row's key, to delete; `None` when no row is clear of in-flight inserts.
    pub fn claim_delete(&self) -> Option<i64> {
        let mut del = self.deleted.load(Ordering::Acquire);
        loop {
            if self.inserted.load(Ordering::Acquire) - del <= self.slack {
                return None;
            }
            match self.deleted.compare_exchange_weak(del, del + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(self.at(del)),
                Err(now) => del = now,
            }
        }
    }

    /// A position in `0..len` by the distribution.
    fn offset(&self, len: u64, rng: &mut Rng) -> u64 {
        match (self.dist, &self.zipf) {
            (KeyDist::Sequential, _) => self.cursor.fetch_add(1, Ordering::Relaxed) % len,
            (KeyDist::Zipfian, Some(z)) => fnv(z.rank(rng.next_f64())) % len,
            _ => rng.below(len),
        }
    }

    /// A key that holds a row, clear of in-flight inserts and deletes when possible; `None`
    /// when there is no row.
    pub fn pick_existing(&self, rng: &mut Rng) -> Option<i64> {
        let del = self.deleted.load(Ordering::Acquire);
        let ins = self.inserted.load(Ordering::Acquire);
        let (low, high) = if ins - del > 2 * self.slack { (del + self.slack, ins - self.slack) } else { (del, ins) };
        (high > low).then(|| self.at(low + self.offset(high - low, rng)))
    }

    /// A key for a read: an existing one if there is any, else any key of the set.
    pub fn pick_for_read(&self, rng: &mut Rng) -> i64 {
        match self.pick_existing(rng) {
            Some(k) => k,
            None if self.is_empty() => 0,
            None => self.at(self.offset(self.len(), rng)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let z = Zipfian::new(1000);
        let mut rng = Rng::new(3);
        let mut counts = vec![0u64; 1000];
        for _ in 0..200_000 {
            counts[z.rank(rng.next_f64()) as usize] += 1;
        }
        let top10: u64 = counts[..10].iter().sum();
        // With theta 0.99 over 1000 items, the top 1% of ranks draw about 39% of picks.
        assert!(top10 > 60_000 && top10 < 100_000, "top10 = {top10}");
        assert!(counts[0] > counts[1] && counts[1] > counts[5] && counts[5] > counts[500]);
        assert!(counts[999] < 200);
    }

    #[test]
    fn uniform_is_flat() {
        let ks = KeySpace::new((0..100).collect(), vec![], KeyDist::Uniform, 0, 1);
        let mut rng = Rng::new(9);
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[ks.pick_existing(&mut rng).unwrap() as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn sequential_walks_in_key_order() {
        let ks = KeySpace::new(vec![5, 1, 3], vec![], KeyDist::Sequential, 0, 1);
        let mut rng = Rng::new(1);
        let keys: Vec<i64> = (0..4).map(|_| ks.pick_existing(&mut rng).unwrap()).collect();
        assert_eq!(keys, vec![1, 3, 5, 1]);
    }

    #[test]
    fn an_insert_never_reuses_a_key_whose_delete_may_be_in_flight() {
        let ks = KeySpace::new(vec![], (0..4).collect(), KeyDist::Uniform, 1, 3);
        let inserted: Vec<i64> = (0..3).map(|_| ks.claim_insert().unwrap()).collect();
        assert_eq!(ks.claim_insert(), None, "one slot kept free for in-flight work");
        let deleted = ks.claim_delete().unwrap();
        assert_eq!(deleted, inserted[0]);
        let next = ks.claim_insert().unwrap();
        assert_ne!(next, deleted);
        assert_eq!(ks.claim_insert(), None, "the deleted key is not reused while its delete may be in flight");
    }

    #[test]
    fn inserts_fill_and_deletes_free_the_ring() {
        let ks = KeySpace::new(vec![1], vec![2, 3], KeyDist::Uniform, 0, 5);
        let mut fresh = vec![ks.claim_insert().unwrap(), ks.claim_insert().unwrap()];
        fresh.sort();
        assert_eq!(fresh, vec![2, 3]);
        assert_eq!(ks.claim_insert(), None, "every key holds a row");
        assert_eq!(ks.claim_delete(), Some(1), "the oldest row goes first");
        assert_eq!(ks.claim_insert(), Some(1), "its key is fresh again");
        assert_eq!(ks.present(), 3);
    }

    #[test]
    fn slack_keeps_updates_off_in_flight_edges() {
        let ks = KeySpace::new((0..10).collect(), (10..20).collect(), KeyDist::Uniform, 2, 5);
        let mut rng = Rng::new(2);
        let edge: Vec<i64> = ks.order[..2].iter().chain(&ks.order[8..10]).copied().collect();
        for _ in 0..1000 {
            assert!(!edge.contains(&ks.pick_existing(&mut rng).unwrap()));
        }
        let empty = KeySpace::new(vec![], vec![7], KeyDist::Uniform, 4, 1);
        assert_eq!(empty.pick_existing(&mut rng), None);
        assert_eq!(empty.claim_delete(), None);
        assert_eq!(empty.pick_for_read(&mut rng), 7);
    }
}
