//! Faults: what can go wrong, when, chosen by the seed, and what each does to the world.

use shardline_storage_node::disk::CrashTail;
use shardline_storage_node::failpoint::{Action, Point};

use crate::node::SimNode;
use crate::world::{Addr, Event, Nanos, World, MS};

/// One fault, or the end of one.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The node's process dies (unsynced writes lost, maybe a torn tail).
    Crash {
        /// The node.
        node: usize,
        /// Bytes of the unsynced tail that reach the disk anyway, if any.
        torn: Option<usize>,
    },
    /// The node starts again on its data.
    Restart {
        /// The node.
        node: usize,
    },
    /// The node stops (SIGSTOP): what arrives waits.
    Pause {
        /// The node.
        node: usize,
    },
    /// The node continues (SIGCONT) with everything that queued up.
    Wake {
        /// The node.
        node: usize,
    },
    /// The node is cut off from the other nodes and the coordinator (clients still reach
    /// it); `one_way` cuts only its outgoing (`Some(true)`) or incoming (`Some(false)`) side.
    Isolate {
        /// The node.
        node: usize,
        /// Which side only is cut, if only one.
        one_way: Option<bool>,
    },
    /// The node's links come back.
    Reconnect {
        /// The node.
        node: usize,
    },
    /// Messages from other nodes to the node take up to `extra` longer each (a congested
    /// or lossy path with retransmissions): they arrive late and out of order.
    SlowLinks {
        /// The node.
        node: usize,
        /// The most extra delay.
        extra: Nanos,
    },
    /// Every message from another node to the node also arrives a second time, up to
    /// `within` later (a connection given up on still delivers after its replacement).
    LateCopies {
        /// The node.
        node: usize,
        /// The latest a copy arrives.
        within: Nanos,
    },
    /// Clients `0..clients` can no longer reach the node (a firewall rule between their
    /// balancer and it): their open connections are reset and new ones refused; the node
    /// and the other clients run on.
    CutClients {
        /// The node.
        node: usize,
        /// How many clients (the lowest numbered) lose it.
        clients: u32,
    },
    /// Clients reach the node again.
    ReachClients {
        /// The node.
        node: usize,
    },
    /// One bit of the node's stored log bytes flips (seen when it next opens its log).
    Flip {
        /// The node.
        node: usize,
        /// Which stored byte (modulo the bytes there are).
        at: u64,
        /// Which bit of it.
        bit: u8,
    },
    /// One bit flips `back` bytes before the end of the shard's newest log segment on the
    /// node: damage to what was synced last (seen when it next opens its log).
    FlipTail {
        /// The node.
        node: usize,
        /// The shard.
        shard: u32,
        /// How far from the end.
        back: usize,
        /// Which bit.
        bit: u8,
    },
    /// The length field of the last record in the shard's newest log segment on the node
    /// gets a high bit flipped: a synced record that now looks cut short.
    FlipLastLength {
        /// The node.
        node: usize,
        /// The shard.
        shard: u32,
    },
    /// The node loses the shard's data (a wiped or replaced disk): it dies, the shard's
    /// storage is gone, and it starts again without that replica.
    Wipe {
        /// The node.
        node: usize,
        /// The shard.
        shard: u32,
    },
    /// The node's next log fsync fails.
    FailSync {
        /// The node.
        node: usize,
    },
    /// The node's next log write fails (no space).
    FailWrite {
        /// The node.
        node: usize,
    },
    /// A failpoint is armed on the node's running process, as `SHARDLINE_FAILPOINT` arms
    /// a real one: its `hit`-th sync at `point` from now kills it (`action` says whether
    /// before the sync, after it, or with part of the bytes synced), and it starts again
    /// `restart_after` later, unarmed.
    Failpoint {
        /// The node.
        node: usize,
        /// Which sync.
        point: Point,
        /// How the process dies there.
        action: Action,
        /// The hit of `point` it fires on, counted from when it is armed (1 is the next).
        hit: u64,
        /// How long the node stays down.
        restart_after: Nanos,
    },
    /// Every fault ends: links back (and no more lost or duplicated messages), paused
    /// nodes woken, crashed nodes restarted.
    HealAll,
    /// A replica joins the shard (AddServers), on a node chosen by `pick`.
    AddReplica {
        /// The shard.
        shard: u32,
        /// Picks the node among those without the shard.
        pick: u64,
    },
    /// A planned switchover of the shard (`FAILOVER`): to its `to`-th voter other than the
    /// primary (by name), or with `None` to the most caught-up one.
    Switchover {
        /// The shard.
        shard: u32,
        /// Picks the target among the followers.
        to: Option<u64>,
    },
    /// A replica leaves the shard (RemoveServers); `primary` removes its primary.
    RemoveReplica {
        /// The shard.
        shard: u32,
        /// Remove the primary rather than a follower.
        primary: bool,
        /// Picks the follower.
        pick: u64,
    },
    /// The shard's `nth` follower (a voter other than the primary, by name) when this
    /// fires gets `fault`, and `then` after `after` nanoseconds: for scripted schedules.
    OnFollower {
        /// The shard.
        shard: u32,
        /// Which follower, in name order.
        nth: usize,
        /// The fault (its node is filled in).
        fault: Box<Fault>,
        /// What ends it (its node is filled in too).
        then: Option<Box<Fault>>,
        /// How long until `then`.
        after: Nanos,
    },
    /// Whatever node is the shard's primary when this fires gets `fault` (with its
    /// `node` replaced), and `then` after `after` nanoseconds: for scripted schedules.
    OnPrimary {
        /// The shard whose primary is hit.
        shard: u32,
        /// The fault (its node is filled in).
        fault: Box<Fault>,
        /// What ends it (its node is filled in too).
        then: Option<Box<Fault>>,
        /// How long until `then`.
        after: Nanos,
    },
}

impl Fault {
    /// The same fault aimed at `target`.
    pub fn at(self, target: usize) -> Fault {
        match self {
            Fault::Crash { torn, .. } => Fault::Crash { node: target, torn },
            Fault::Restart { .. } => Fault::Restart { node: target },
            Fault::Pause { .. } => Fault::Pause { node: target },
            Fault::Wake { .. } => Fault::Wake { node: target },
            Fault::Isolate { one_way, .. } => Fault::Isolate { node: target, one_way },
            Fault::Reconnect { .. } => Fault::Reconnect { node: target },
            Fault::SlowLinks { extra, .. } => Fault::SlowLinks { node: target, extra },
            Fault::LateCopies { within, .. } => Fault::LateCopies { node: target, within },
            Fault::CutClients { clients, .. } => Fault::CutClients { node: target, clients },
            Fault::ReachClients { .. } => Fault::ReachClients { node: target },
            Fault::Flip { at, bit, .. } => Fault::Flip { node: target, at, bit },
            Fault::FlipTail { shard, back, bit, .. } => Fault::FlipTail { node: target, shard, back, bit },
            Fault::FlipLastLength { shard, .. } => Fault::FlipLastLength { node: target, shard },
            Fault::Wipe { shard, .. } => Fault::Wipe { node: target, shard },
            Fault::FailSync { .. } => Fault::FailSync { node: target },
            Fault::FailWrite { .. } => Fault::FailWrite { node: target },
            Fault::Failpoint { point, action, hit, restart_after, .. } => {
                Fault::Failpoint { node: target, point, action, hit, restart_after }
            }
            other => other,
        }
    }
}

/// Which kinds of fault a run draws from.
#[derive(Debug, Clone, Copy)]
pub struct FaultMix {
    /// Crashes (with restarts), torn tails included.
    pub crashes: bool,
    /// Pauses.
    pub pauses: bool,
    /// Partitions, one-way ones included.
    pub partitions: bool,
    /// Bit flips, failed fsyncs and writes, a shard's data wiped.
    pub disk: bool,
    /// Replicas added and removed (a primary too) while the other faults go on.
    pub membership: bool,
}

impl FaultMix {
    /// Every kind.
    pub fn all() -> FaultMix {
        FaultMix { crashes: true, pauses: true, partitions: true, disk: true, membership: true }
    }

    /// None: a healthy run.
    pub fn none() -> FaultMix {
        FaultMix { crashes: false, pauses: false, partitions: false, disk: false, membership: false }
    }

    /// Parses `all`, `none`, or a comma-separated list of `crashes`, `pauses`,
    /// `partitions`, `disk`.
    pub fn parse(text: &str) -> Result<FaultMix, String> {
        match text {
            "all" => return Ok(FaultMix::all()),
            "none" => return Ok(FaultMix::none()),
            _ => {}
        }
        let mut mix = FaultMix::none();
        for part in text.split(',') {
            match part.trim() {
                "crashes" => mix.crashes = true,
                "pauses" => mix.pauses = true,
                "partitions" => mix.partitions = true,
                "disk" => mix.disk = true,
                "membership" => mix.membership = true,
                other => {
                    return Err(format!(
                        "unknown fault kind `{other}`: use all, none, or crashes,pauses,partitions,disk,membership"
                    ))
                }
            }
        }
        Ok(mix)
    }

    /// Whether any fault is drawn.
    pub fn any(&self) -> bool {
        self.crashes || self.pauses || self.partitions || self.disk || self.membership
    }
}

/// Schedules random faults between `from` and `until`, and the heal at `until`.
pub fn schedule(world: &mut World, nodes: usize, mix: FaultMix, from: Nanos, until: Nanos) {
    let mut kinds = Vec::new();
    if mix.crashes {
        kinds.extend([0, 0]);
    }
    if mix.pauses {
        kinds.extend([1, 1]);
    }
    if mix.partitions {
        kinds.extend([2, 2]);
    }
    if mix.disk {
        kinds.extend([3, 4]);
    }
    if mix.membership {
        kinds.extend([5]);
    }
    let mut at = from;
    while !kinds.is_empty() {
        at += world.rng.range(100 * MS, 700 * MS);
        if at >= until {
            break;
        }
        let node = world.rng.range(0, nodes as u64) as usize;
        let length = world.rng.range(100 * MS, 2500 * MS);
        let now = world.now;
        let at_offset = |world: &mut World, offset: Nanos, fault: Fault| {
            world.after(at + offset - now, Event::Fault(fault));
        };
        match *world.rng.pick(&kinds) {
            0 => {
                let torn = if world.rng.chance(0.3) { Some(world.rng.range(1, 200) as usize) } else { None };
                at_offset(world, 0, Fault::Crash { node, torn });
                at_offset(world, length.min(1500 * MS), Fault::Restart { node });
            }
            1 => {
                at_offset(world, 0, Fault::Pause { node });
                at_offset(world, length, Fault::Wake { node });
            }
            2 => {
                let one_way = match world.rng.range(0, 3) {
                    0 => Some(true),
                    1 => Some(false),
                    _ => None,
                };
                at_offset(world, 0, Fault::Isolate { node, one_way });
                at_offset(world, length, Fault::Reconnect { node });
            }
            3 if world.rng.chance(0.2) => {
                let shard = world.rng.range(1, 3) as u32;
                at_offset(world, 0, Fault::Wipe { node, shard });
            }
            3 => {
                let (pos, bit) = (world.rng.next_u64(), world.rng.range(0, 8) as u8);
                at_offset(world, 0, Fault::Flip { node, at: pos, bit });
                at_offset(world, 1, Fault::Crash { node, torn: None });
                at_offset(world, 200 * MS, Fault::Restart { node });
            }
            4 => {
                let fault = if world.rng.chance(0.5) { Fault::FailSync { node } } else { Fault::FailWrite { node } };
                at_offset(world, 0, fault);
            }
            _ => {
                let shard = world.rng.range(1, 3) as u32;
                let pick = world.rng.next_u64();
                let fault = match world.rng.range(0, 4) {
                    0 => Fault::AddReplica { shard, pick },
                    1 => Fault::RemoveReplica { shard, primary: false, pick },
                    2 => Fault::Switchover { shard, to: (!pick.is_multiple_of(3)).then_some(pick) },
                    _ => Fault::RemoveReplica { shard, primary: true, pick },
                };
                at_offset(world, 0, fault);
            }
        }
    }
    world.after(until - world.now, Event::Fault(Fault::HealAll));
}

/// Carries out a fault.
pub fn apply(world: &mut World, nodes: &mut [SimNode], fault: Fault) {
    match fault {
        f @ (Fault::Crash { .. }
        | Fault::Failpoint { .. }
        | Fault::Pause { .. }
        | Fault::Restart { .. }
        | Fault::Wake { .. }
        | Fault::Wipe { .. }) => apply_to_process(world, nodes, f),
        f @ (Fault::FailSync { .. }
        | Fault::FailWrite { .. }
        | Fault::Flip { .. }
        | Fault::FlipLastLength { .. }
        | Fault::FlipTail { .. }) => apply_to_disk(nodes, f),
        Fault::OnPrimary { .. }
        | Fault::OnFollower { .. }
        | Fault::AddReplica { .. }
        | Fault::RemoveReplica { .. }
        | Fault::Switchover { .. } => {
            unreachable!("carried out by the cluster, which knows the coordinator")
        }
        f => apply_to_network(world, nodes, f),
    }
}

/// Carries out a fault of a node's process: a crash, a restart, a pause, a wipe, a failpoint.
fn apply_to_process(world: &mut World, nodes: &mut [SimNode], fault: Fault) {
    match fault {
        Fault::Crash { node, torn } => {
            let tail = torn.map_or(CrashTail::Drop, CrashTail::Keep);
            if nodes[node].up {
                nodes[node].crash(world, tail);
            }
        }
        Fault::Restart { node } => {
            if !nodes[node].up {
                nodes[node].restart();
            }
        }
        Fault::Pause { node } => {
            if nodes[node].up {
                nodes[node].paused = true;
            }
        }
        Fault::Wake { node } => {
            if nodes[node].paused {
                nodes[node].wake(world);
            }
        }
        Fault::Wipe { node, shard } => {
            if nodes[node].up {
                nodes[node].crash(world, CrashTail::Drop);
            }
            nodes[node].storage.remove(&shardline_protocol::ShardId(shard));
            nodes[node].restart();
        }
        Fault::Failpoint { node, point, action, hit, restart_after } => {
            if nodes[node].up {
                nodes[node].arm(point, action, hit, restart_after);
            }
        }
        other => unreachable!("not a process fault: {other:?}"),
    }
}

/// Carries out a fault of a node's disk: flipped bits, failing writes and syncs.
fn apply_to_disk(nodes: &mut [SimNode], fault: Fault) {
    match fault {
        Fault::Flip { node, at, bit } => {
            let storage: Vec<_> = nodes[node].storage.values().cloned().collect();
            if !storage.is_empty() {
                let s = &storage[(at % storage.len() as u64) as usize];
                s.disk.flip(at / storage.len() as u64, bit);
            }
        }
        Fault::FlipTail { node, shard, back, bit } => {
            if let Some(s) = nodes[node].storage.get(&shardline_protocol::ShardId(shard)) {
                s.disk.flip_tail(".seg", back, bit);
            }
        }
        Fault::FlipLastLength { node, shard } => {
            if let Some(s) = nodes[node].storage.get(&shardline_protocol::ShardId(shard)) {
                if let Some(back) = last_length_field(&s.disk) {
                    // The length's high byte: the record now claims more bytes than there are.
                    s.disk.flip_tail(".seg", back, 4);
                }
            }
        }
        Fault::FailSync { node } => {
            for s in nodes[node].storage.values() {
                s.disk.fail_syncs(1);
            }
        }
        Fault::FailWrite { node } => {
            for s in nodes[node].storage.values() {
                s.disk.fail_appends(1);
            }
        }
        other => unreachable!("not a disk fault: {other:?}"),
    }
}

/// Carries out a fault of the network: cuts, delays, late copies, and healing them all.
fn apply_to_network(world: &mut World, nodes: &mut [SimNode], fault: Fault) {
    match fault {
        Fault::Isolate { node, one_way } => {
            let me = Addr::Node(node);
            let others = (0..nodes.len()).filter(|&n| n != node).map(Addr::Node).chain([Addr::Coord]);
            for other in others.collect::<Vec<_>>() {
                if one_way != Some(false) {
                    world.cut.insert((me, other));
                }
                if one_way != Some(true) {
                    world.cut.insert((other, me));
                }
            }
        }
        Fault::Reconnect { node } => {
            let me = Addr::Node(node);
            world.cut.retain(|(a, b)| *a != me && *b != me);
            world.slow.remove(&me);
            world.late.remove(&me);
        }
        Fault::LateCopies { node, within } => {
            world.late.insert(Addr::Node(node), within);
        }
        Fault::SlowLinks { node, extra } => {
            world.slow.insert(Addr::Node(node), extra);
        }
        Fault::CutClients { node, clients } => nodes[node].cut_clients(world, clients),
        Fault::ReachClients { node } => nodes[node].clients_cut = 0,
        Fault::HealAll => {
            // Lost and duplicated messages are faults too: liveness is judged on a network
            // that only delays (as TCP would look to the program).
            world.cut.clear();
            world.slow.clear();
            world.late.clear();
            world.net.loss = 0.0;
            world.net.duplicate = 0.0;
            for n in nodes.iter_mut() {
                n.clients_cut = 0;
                for s in n.storage.values() {
                    s.disk.disarm();
                }
                if n.paused {
                    n.wake(world);
                }
                if !n.up {
                    n.restart();
                }
            }
        }

        other => unreachable!("not a network fault: {other:?}"),
    }
}

/// How far from the end of the newest non-empty log segment the last record's length field
/// starts, if there is a record.
fn last_length_field(disk: &shardline_storage_node::disk::SimDisk) -> Option<usize> {
    use shardline_protocol::log_entry::{ENTRY_HEADER_LEN, ENTRY_OFF_LEN};
    use shardline_storage_node::disk::Disk;
    let mut names: Vec<String> = disk.list().ok()?.into_iter().filter(|n| n.ends_with(".seg")).collect();
    names.sort();
    let data = names.iter().rev().find_map(|n| disk.read(n).ok().flatten().filter(|d| !d.is_empty()))?;
    let (mut at, mut last) = (0usize, None);
    while at + ENTRY_HEADER_LEN <= data.len() {
        let len = u32::from_be_bytes(data[at + ENTRY_OFF_LEN..at + ENTRY_OFF_LEN + 4].try_into().ok()?) as usize;
        last = Some(at);
        at += ENTRY_HEADER_LEN + len;
    }
    last.map(|start| data.len() - (start + ENTRY_OFF_LEN))
}
