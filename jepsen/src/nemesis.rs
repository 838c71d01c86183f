//! Nemeses: the fault schedule of a run. A [`Scenario`] names which kinds of fault a run draws
//! from; the nemesis loop waits a random pause, plans one fault against the cluster's current
//! state (which node leads which shard), applies it, holds it for a random time, then heals it,
//! recording `fault` invoke/ok events around it in the history.
//!
//! Invariants: one fault is active at a time and every fault is healed before the next starts
//! and before the run's fault phase ends (no fault outlives the deadline); every loop is bounded
//! by the deadline; a fault that cannot be planned (no leader known) is skipped, never retried
//! in a tight loop.

use std::collections::HashSet;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;

use crate::cluster::Cluster;

/// Fault schedule of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// No faults (a baseline).
    None,
    /// SIGKILL a random node, restart it.
    Kill,
    /// SIGKILL the leader of a random shard, restart it.
    LeaderKill,
    /// SIGKILL a majority of the nodes at once, restart them.
    KillMajority,
    /// SIGKILL every node at once, restart them.
    KillAll,
    /// SIGSTOP the leader of a random shard, SIGCONT it.
    Pause,
    /// Every partition shape below, one at a time.
    Partition,
    /// Cut one node (half the time a shard leader) from every other node.
    PartitionOne,
    /// Split the nodes into a minority that holds a shard leader and a majority.
    PartitionMajority,
    /// Two halves that cannot talk, joined by one node that talks to both.
    PartitionBridge,
    /// A shard leader's packets to the other nodes are dropped; it still hears them.
    PartitionOneWay,
    /// Clients cannot reach a shard leader; the nodes still can.
    PartitionClientLeader,
    /// 20-150 ms delay plus up to 50 ms jitter on every node-to-node link (a round trip stays
    /// under the default 500 ms heartbeat, which is also openraft's AppendEntries timeout).
    Delay,
    /// Node clocks offset by up to ±10 minutes through the test hook.
    Clock,
    /// Power cuts (nodes run with `simulate_power_loss`): one node, then every node at once,
    /// alternating.
    PowerLoss,
    /// A random mix of every fault above (nodes run with `simulate_power_loss`, so kills are
    /// power cuts).
    Everything,
}

/// Scenario names as the command line spells them.
pub const SCENARIOS: &[(&str, Scenario)] = &[
    ("none", Scenario::None),
    ("kill", Scenario::Kill),
    ("leader-kill", Scenario::LeaderKill),
    ("kill-majority", Scenario::KillMajority),
    ("kill-all", Scenario::KillAll),
    ("pause", Scenario::Pause),
    ("partition", Scenario::Partition),
    ("partition-one", Scenario::PartitionOne),
    ("partition-majority", Scenario::PartitionMajority),
    ("partition-bridge", Scenario::PartitionBridge),
    ("partition-one-way", Scenario::PartitionOneWay),
    ("partition-client-leader", Scenario::PartitionClientLeader),
    ("delay", Scenario::Delay),
    ("clock", Scenario::Clock),
    ("power-loss", Scenario::PowerLoss),
    ("everything", Scenario::Everything),
];

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Scenario, String> {
        SCENARIOS
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, sc)| *sc)
            .ok_or_else(|| {
                let names: Vec<&str> = SCENARIOS.iter().map(|(n, _)| *n).collect();
                format!("unknown scenario {s:?}: one of {}", names.join(", "))
            })
    }
}

impl Scenario {
    /// Whether the nodes must run with `simulate_power_loss` (kills are power cuts).
    pub fn power_loss(self) -> bool {
        matches!(self, Scenario::PowerLoss | Scenario::Everything)
    }

    /// The kinds of fault the scenario draws from.
    fn kinds(self) -> &'static [Kind] {
        use Kind::*;
        match self {
            Scenario::None => &[],
            Scenario::Kill => &[KillOne],
            Scenario::LeaderKill => &[KillLeader],
            Scenario::KillMajority => &[KillMajority],
            Scenario::KillAll => &[KillAll],
            Scenario::Pause => &[PauseLeader],
            Scenario::Partition => &[IsolateOne, MajorityMinority, Bridge, OneWay, ClientLeader],
            Scenario::PartitionOne => &[IsolateOne],
            Scenario::PartitionMajority => &[MajorityMinority],
            Scenario::PartitionBridge => &[Bridge],
            Scenario::PartitionOneWay => &[OneWay],
            Scenario::PartitionClientLeader => &[ClientLeader],
            Scenario::Delay => &[Delay],
            Scenario::Clock => &[Clock],
            Scenario::PowerLoss => &[KillOne, KillAll],
            Scenario::Everything => &[
                KillOne,
                KillLeader,
                KillMajority,
                KillAll,
                PauseLeader,
                IsolateOne,
                MajorityMinority,
                Bridge,
                OneWay,
                ClientLeader,
                Delay,
                Clock,
            ],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    KillOne,
    KillLeader,
    KillMajority,
    KillAll,
    PauseLeader,
    IsolateOne,
    MajorityMinority,
    Bridge,
    OneWay,
    ClientLeader,
    Delay,
    Clock,
}

/// What a planned fault does (and what healing undoes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL these nodes (a power cut in power-loss mode); heal: restart them.
    Kill(Vec<usize>),
    /// SIGSTOP these nodes; heal: SIGCONT.
    Pause(Vec<usize>),
    /// Block these (from, to) directions; heal: unblock everything.
    Block(Vec<(usize, usize)>),
    /// Delay node-to-node traffic (ms, jitter ms); heal: no delay.
    Delay(u64, u64),
    /// Offset node clocks (node, ms); heal: offsets back to 0.
    Clock(Vec<(usize, i64)>),
}

/// A fault with its description and the node it mainly targets (for the history).
#[derive(Clone, Debug)]
pub struct Planned {
    /// Human-readable description ("kill node 2", "partition [1] | [2, 3]", ...).
    pub name: String,
    /// Main target node index (0 when it concerns several).
    pub node: usize,
    /// The fault.
    pub fault: Fault,
}

fn list(nodes: &[usize]) -> String {
    let ids: Vec<String> = nodes.iter().map(|i| (i + 1).to_string()).collect();
    format!("[{}]", ids.join(", "))
}

/// Every direction between the two sides, both ways.
fn cut(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for &x in a {
        for &y in b {
            out.push((x, y));
            out.push((y, x));
        }
    }
    out
}

/// Plans fault number `k` of `scenario` against the cluster's current state; `None` when it
/// cannot be planned now (no leader known).
pub async fn plan(
    scenario: Scenario,
    k: usize,
    cluster: &Cluster,
    groups: &[u64],
) -> Option<Planned> {
    let kinds = scenario.kinds();
    if kinds.is_empty() {
        return None;
    }
    let kind = if scenario == Scenario::PowerLoss {
        // Alternate: one node, then a coordinated cut of every node.
        kinds[k % kinds.len()]
    } else {
        kinds[rand::rng().random_range(0..kinds.len())]
    };
    let n = cluster.nodes.len();
    let verb = if cluster.power_loss {
        "power-cut"
    } else {
        "kill"
    };
    let mut all: Vec<usize> = (0..n).collect();
    all.shuffle(&mut rand::rng());
    let leader = async {
        if groups.is_empty() {
            return None;
        }
        let g = groups[rand::rng().random_range(0..groups.len())];
        cluster.leader_of(g).await
    };
    let planned = match kind {
        Kind::KillOne => Planned {
            name: format!("{verb} node {}", all[0] + 1),
            node: all[0],
            fault: Fault::Kill(vec![all[0]]),
        },
        Kind::KillLeader => {
            let l = leader.await?;
            Planned {
                name: format!("{verb} leader node {}", l + 1),
                node: l,
                fault: Fault::Kill(vec![l]),
            }
        }
        Kind::KillMajority => {
            let m: Vec<usize> = all[..n / 2 + 1].to_vec();
            Planned {
                name: format!("{verb} majority {}", list(&m)),
                node: m[0],
                fault: Fault::Kill(m),
            }
        }
        Kind::KillAll => Planned {
            name: format!("{verb} every node"),
            node: 0,
            fault: Fault::Kill((0..n).collect()),
        },
        Kind::PauseLeader => {
            let l = leader.await?;
            Planned {
                name: format!("pause leader node {}", l + 1),
                node: l,
                fault: Fault::Pause(vec![l]),
            }
        }
        Kind::IsolateOne => {
            let target = if rand::rng().random_bool(0.5) {
                leader.await.unwrap_or(all[0])
            } else {
                all[0]
            };
            let rest: Vec<usize> = (0..n).filter(|&i| i != target).collect();
            Planned {
                name: format!("partition {} | {}", list(&[target]), list(&rest)),
                node: target,
                fault: Fault::Block(cut(&[target], &rest)),
            }
        }
        Kind::MajorityMinority => {
            // The minority holds a shard leader, so that leader is stranded.
            let l = leader.await.unwrap_or(all[0]);
            let mut others: Vec<usize> = (0..n).filter(|&i| i != l).collect();
            others.shuffle(&mut rand::rng());
            // A minority has (n - 1) / 2 nodes: 1 of 3, 2 of 5.
            let mut minority = vec![l];
            minority.extend(others.drain(..((n - 1) / 2).saturating_sub(1)));
            minority.sort_unstable();
            let mut majority = others;
            majority.sort_unstable();
            Planned {
                name: format!(
                    "partition minority {} | majority {}",
                    list(&minority),
                    list(&majority)
                ),
                node: l,
                fault: Fault::Block(cut(&minority, &majority)),
            }
        }
        Kind::Bridge => {
            if n < 3 {
                return None;
            }
            let bridge = all[0];
            let rest = &all[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            Planned {
                name: format!(
                    "bridge: {} | {} joined by node {}",
                    list(a),
                    list(b),
                    bridge + 1
                ),
                node: bridge,
                fault: Fault::Block(cut(a, b)),
            }
        }
        Kind::OneWay => {
            let l = leader.await?;
            let rest: Vec<usize> = (0..n).filter(|&i| i != l).collect();
            Planned {
                name: format!(
                    "one-way: node {} -> {} dropped, replies pass",
                    l + 1,
                    list(&rest)
                ),
                node: l,
                fault: Fault::Block(rest.iter().map(|&j| (l, j)).collect()),
            }
        }
        Kind::ClientLeader => {
            let l = leader.await?;
            let c = cluster.clients_party();
            Planned {
                name: format!("clients cut from leader node {}", l + 1),
                node: l,
                fault: Fault::Block(vec![(c, l), (l, c)]),
            }
        }
        Kind::Delay => {
            if !cluster.can_delay() {
                return None;
            }
            let (d, j) = {
                let mut r = rand::rng();
                (r.random_range(20..=150), r.random_range(0..=50))
            };
            Planned {
                name: format!("delay {d} ms + jitter {j} ms on node links"),
                node: 0,
                fault: Fault::Delay(d, j),
            }
        }
        Kind::Clock => {
            let offsets: Vec<(usize, i64)> = (0..n)
                .map(|i| (i, rand::rng().random_range(-600_000..=600_000)))
                .collect();
            let text: Vec<String> = offsets
                .iter()
                .map(|(i, o)| format!("{}:{:+}s", i + 1, o / 1000))
                .collect();
            Planned {
                name: format!("clock offsets {}", text.join(" ")),
                node: 0,
                fault: Fault::Clock(offsets),
            }
        }
    };
    Some(planned)
}

/// Applies a fault.
pub async fn apply(cluster: &mut Cluster, fault: &Fault) {
    match fault {
        Fault::Kill(nodes) => {
            for &i in nodes {
                cluster.kill(i);
            }
        }
        Fault::Pause(nodes) => {
            for &i in nodes {
                cluster.pause(i);
            }
        }
        Fault::Block(dirs) => {
            let set: HashSet<(usize, usize)> = dirs.iter().copied().collect();
            cluster.block(set);
        }
        Fault::Delay(d, j) => {
            cluster.set_delay(Duration::from_millis(*d), Duration::from_millis(*j));
        }
        Fault::Clock(offsets) => {
            for &(i, o) in offsets {
                if let Err(e) = cluster.set_clock(i, o).await {
                    eprintln!("warning: clock of node {}: {e}", i + 1);
                }
            }
        }
    }
}

/// Undoes a fault.
pub async fn heal(cluster: &mut Cluster, fault: &Fault) {
    match fault {
        Fault::Kill(nodes) => {
            for &i in nodes {
                if let Err(e) = cluster.start_node(i) {
                    eprintln!("warning: restarting node {}: {e}", i + 1);
                }
            }
        }
        Fault::Pause(nodes) => {
            for &i in nodes {
                cluster.resume(i);
            }
        }
        Fault::Block(_) => cluster.heal(),
        Fault::Delay(..) => cluster.set_delay(Duration::ZERO, Duration::ZERO),
        Fault::Clock(offsets) => {
            for &(i, _) in offsets {
                if let Err(e) = cluster.set_clock(i, 0).await {
                    eprintln!("warning: clock of node {}: {e}", i + 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_round_trip() {
        for (name, sc) in SCENARIOS {
            assert_eq!(name.parse::<Scenario>().unwrap(), *sc);
        }
        let err = "nope".parse::<Scenario>().unwrap_err();
        assert!(err.contains("partition-one-way"), "{err}");
        assert!(Scenario::PowerLoss.power_loss() && Scenario::Everything.power_loss());
        assert!(!Scenario::Kill.power_loss());
    }

    #[test]
    fn cuts_are_symmetric() {
        let c = cut(&[0], &[1, 2]);
        assert_eq!(c.len(), 4);
        for (a, b) in &c {
            assert!(c.contains(&(*b, *a)));
        }
    }
}
