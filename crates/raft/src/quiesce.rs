//! Quiescing idle shard groups.
//!
//! A node hosts hundreds of shard replicas and most of them are idle most of the time; awake,
//! each still costs a heartbeat per follower every heartbeat interval and a Raft timer tick on
//! every replica. A shard group goes quiet when its leader has appended nothing for
//! `quiesce_idle_ms`, has applied its whole log, every follower matches that log and every
//! follower's node answered a Raft RPC within two heartbeat intervals. The leader then stops its
//! openraft timer (no heartbeats) and instead names the group, with its term and its replica id,
//! in one `NodeBeat` call per peer node every heartbeat interval. A follower that finds its own
//! leader and term named in a beat stops its timer too (no election timeout); anything else in
//! a beat (another leader, another term, no known leader) makes it ask the sender to wake the
//! group.
//!
//! Waking, on the leader: a proposal ([`Registry::wake`] from the server's write path, checked
//! again each round in case a write raced the sleep), a peer asking for it in its beat reply
//! (the leader heartbeats at once, so that replica learns its leader, or the leader learns a
//! newer term and steps down), or finding that it no longer leads. On a follower: an
//! AppendEntries with entries, a Vote request, or no beat naming its leader and term for the
//! shard election timeout (the leader's node died, was cut off, restarted, or woke the group);
//! its timer then runs again and it campaigns as usual if the leader stays silent.
//!
//! Invariants:
//! * quiescing only switches openraft's timer on and off: votes, logs, commits and the
//!   leadership check of linearizable reads (its own heartbeat round on fresh connections) are
//!   untouched, so every safety property stays openraft's; only liveness timing changes;
//! * the metadata group never goes quiet;
//! * a group's state and its timer change together under the group's lock, so a quiet state
//!   always means a stopped timer and an awake one a running timer;
//! * a follower stays quiet only while the leader's node names the group with the leader and
//!   term the follower knows, so a dead or cut-off leader is replaced within about the election
//!   timeout plus a heartbeat interval, as without quiescing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_proto::internal::v1::{NodeBeatReply, NodeBeatRequest, QuiescedGroup};

use crate::registry::{GroupKind, Hosted, Registry};
use crate::ReplicaId;

/// Reasons a quiet group wakes (label values of `runnel_raft_quiesce_wakes_total`).
pub const WAKE_REASONS: [&str; 6] = ["write", "entries", "vote", "asked", "no_beat", "not_leader"];

const AWAKE: u8 = 0;
const QUIET_LEADER: u8 = 1;
const QUIET_FOLLOWER: u8 = 2;

/// Quiescence state of one hosted group.
#[derive(Debug, Default)]
pub(crate) struct Quiet {
    state: AtomicU8,
    /// Follower: when a beat last named this replica's leader and term (ms since the
    /// registry's epoch).
    named_at: AtomicU64,
    /// Serializes state changes with the timer switch.
    lock: Mutex<()>,
}

impl Quiet {
    /// True unless the group is quiet.
    pub(crate) fn is_awake(&self) -> bool {
        self.state.load(Ordering::Acquire) == AWAKE
    }

    /// Sets the state to `to` (quiet) from awake and stops the timer. False if it was not awake.
    fn sleep(&self, raft: &crate::Raft, to: u8) -> bool {
        let Ok(_g) = self.lock.lock() else {
            return false;
        };
        if self.state.load(Ordering::Acquire) != AWAKE {
            return false;
        }
        raft.runtime_config().tick(false);
        self.state.store(to, Ordering::Release);
        true
    }

    /// Wakes the group (timer running again). Returns the state it had, or `None` if it was
    /// already awake.
    fn wake(&self, raft: &crate::Raft) -> Option<u8> {
        if self.is_awake() {
            return None;
        }
        let _g = self.lock.lock().ok()?;
        let was = self.state.load(Ordering::Acquire);
        if was == AWAKE {
            return None;
        }
        raft.runtime_config().tick(true);
        self.state.store(AWAKE, Ordering::Release);
        Some(was)
    }
}

/// What a leader knows about its group, for the decision to go quiet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaderView {
    /// Index of the last log entry.
    pub last_log: u64,
    /// Index of the last applied entry.
    pub applied: u64,
    /// Matched index of each voter other than the leader (`None`: nothing matched yet).
    pub matched: Vec<Option<u64>>,
    /// Every follower's node answered a Raft RPC recently.
    pub followers_answered: bool,
}

/// Whether a leader whose log has not grown for `idle_for` may go quiet.
pub(crate) fn may_quiesce(view: &LeaderView, idle_for: Duration, idle: Duration) -> bool {
    !idle.is_zero()
        && idle_for >= idle
        && view.applied == view.last_log
        && view.matched.iter().all(|m| *m == Some(view.last_log))
        && view.followers_answered
}

/// What a replica does with a beat that names its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The replica follows the named leader in the named term: it may stay quiet.
    Follow,
    /// It does not: the sender must wake the group.
    Wake,
    /// The beat names this replica itself as leader (a stale beat after a restart): ignore.
    Ignore,
}

/// The verdict of replica `me`, which knows `leader` in `term`, on a beat naming `beat_leader`
/// in `beat_term`.
pub(crate) fn verdict(
    me: ReplicaId,
    leader: Option<ReplicaId>,
    term: u64,
    beat_leader: ReplicaId,
    beat_term: u64,
) -> Verdict {
    if me == beat_leader {
        Verdict::Ignore
    } else if leader == Some(beat_leader) && term == beat_term {
        Verdict::Follow
    } else {
        Verdict::Wake
    }
}

/// Leader-side bookkeeping between rounds: per led group, the last log index seen and since
/// when it has not changed.
pub(crate) type IdleTrack = HashMap<u64, (u64, Instant)>;

impl Registry {
    fn epoch_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Wakes `group` if it is quiet (`reason` is counted in `runnel_raft_quiesce_wakes_total`).
    /// Cheap when it is awake: the write path calls it for every proposal.
    pub fn wake(&self, group: u64, reason: &'static str) {
        let quiet = {
            let Ok(groups) = self.groups.read() else {
                return;
            };
            match groups.get(&group) {
                Some(h) if !h.quiet.is_awake() => Some(h.clone()),
                _ => None,
            }
        };
        if let Some(h) = quiet {
            self.wake_hosted(group, &h, reason);
        }
    }

    pub(crate) fn wake_hosted(&self, group: u64, h: &Hosted, reason: &'static str) {
        let Some(was) = h.quiet.wake(&h.raft) else {
            return;
        };
        crate::metrics::QUIESCE_WAKES
            .with_label_values(&[reason])
            .inc();
        if let Ok(mut track) = self.idle_track.lock() {
            track.remove(&group);
        }
        if matches!(reason, "write" | "entries") {
            tracing::debug!(group, node = self.node_id, reason, "quiet group woke");
        } else {
            // Rare, and worth seeing: a peer's view differs, a leader vanished or lost its lead.
            tracing::info!(group, node = self.node_id, reason, "quiet group woke");
        }
        if was == QUIET_LEADER && reason != "write" {
            // Heartbeat at once: whoever asked learns its leader (or we a newer term) before
            // its election timeout.
            let raft = h.raft.clone();
            tokio::spawn(async move {
                let _ = raft.trigger().heartbeat().await;
            });
        }
    }

    /// One round of quiescence, run every shard heartbeat interval by the server: puts idle led
    /// groups to sleep, wakes quiet ones that must wake, and sends this round's beats (in the
    /// background; replies asking for a wake are applied when they arrive).
    pub fn quiesce_round(self: &Arc<Self>) {
        let idle = Duration::from_millis(self.options.quiesce_idle_ms);
        if idle.is_zero() {
            return;
        }
        let beat = Duration::from_millis(self.options.shard_heartbeat_ms);
        let grace = self.options.shard_election_ms.0;
        let now = Instant::now();
        let now_ms = self.epoch_ms();
        let hosted: Vec<(u64, Hosted)> = self
            .groups
            .read()
            .map(|g| {
                g.iter()
                    .filter(|(_, h)| h.kind == GroupKind::Shard)
                    .map(|(k, h)| (*k, h.clone()))
                    .collect()
            })
            .unwrap_or_default();
        // Per peer node: its address and the quiet groups it follows.
        let mut beats: HashMap<u64, (String, Vec<QuiescedGroup>)> = HashMap::new();
        let mut to_wake: Vec<(u64, &Hosted, &'static str)> = Vec::new();
        let mut to_sleep: Vec<(u64, &Hosted)> = Vec::new();
        {
            let Ok(mut track) = self.idle_track.lock() else {
                return;
            };
            let ids: std::collections::HashSet<u64> = hosted.iter().map(|(k, _)| *k).collect();
            track.retain(|g, _| ids.contains(g));
            for (group, h) in &hosted {
                let state = h.quiet.state.load(Ordering::Acquire);
                if state == QUIET_FOLLOWER {
                    let named = h.quiet.named_at.load(Ordering::Acquire);
                    if now_ms.saturating_sub(named) > grace {
                        to_wake.push((*group, h, "no_beat"));
                    }
                    continue;
                }
                let m = h.raft.metrics();
                let m = m.borrow();
                let is_leader = m.current_leader == Some(h.replica);
                let last_log = m.last_log_index.unwrap_or(0);
                if !is_leader {
                    track.remove(group);
                    if state == QUIET_LEADER {
                        to_wake.push((*group, h, "not_leader"));
                    }
                    continue;
                }
                let membership = m.membership_config.membership();
                let followers: Vec<(ReplicaId, Option<crate::ReplicaNode>)> = membership
                    .voter_ids()
                    .filter(|id| *id != h.replica)
                    .map(|id| (id, membership.get_node(&id).cloned()))
                    .collect();
                if state == QUIET_LEADER {
                    if track.get(group).map(|t| t.0) != Some(last_log) {
                        // A write raced the sleep.
                        to_wake.push((*group, h, "write"));
                        continue;
                    }
                    for (_, node) in followers.iter() {
                        let Some(node) = node else { continue };
                        beats
                            .entry(node.node)
                            .or_insert_with(|| (node.addr.clone(), Vec::new()))
                            .1
                            .push(QuiescedGroup {
                                group_id: *group,
                                term: m.current_term,
                                leader: h.replica,
                            });
                    }
                    continue;
                }
                let since = match track.get(group) {
                    Some((index, since)) if *index == last_log => *since,
                    _ => {
                        track.insert(*group, (last_log, now));
                        continue;
                    }
                };
                let view = LeaderView {
                    last_log,
                    applied: m.last_applied.map_or(0, |l| l.index),
                    matched: followers
                        .iter()
                        .map(|(id, _)| {
                            m.replication
                                .as_ref()
                                .and_then(|r| r.get(id))
                                .and_then(|l| l.as_ref())
                                .map(|l| l.index)
                        })
                        .collect(),
                    followers_answered: followers.iter().all(|(_, n)| {
                        n.as_ref()
                            .is_some_and(|n| self.pool.answered_within(n.node, beat * 2))
                    }),
                };
                if may_quiesce(&view, now.duration_since(since), idle) {
                    to_sleep.push((*group, h));
                }
            }
        }
        for (group, h) in to_sleep {
            if h.quiet.sleep(&h.raft, QUIET_LEADER) {
                crate::metrics::QUIESCED.inc();
                tracing::debug!(group, node = self.node_id, "group quiet (leader)");
            }
        }
        for (group, h, reason) in to_wake {
            self.wake_hosted(group, h, reason);
        }
        for (node, (addr, groups)) in beats {
            let registry = self.clone();
            tokio::spawn(async move { registry.send_beat(node, addr, groups, beat).await });
        }
    }

    async fn send_beat(&self, node: u64, addr: String, groups: Vec<QuiescedGroup>, ttl: Duration) {
        let ch = match self.pool.channel(node, &addr, false) {
            Ok(ch) => ch,
            Err(e) => {
                tracing::debug!(peer = node, error = %e, "node beat: no channel");
                return;
            }
        };
        let mut client = crate::network::internal_client(ch);
        let req = NodeBeatRequest {
            from_node: self.node_id,
            groups,
        };
        match tokio::time::timeout(ttl, client.node_beat(req)).await {
            Ok(Ok(reply)) => {
                self.pool.mark_ok(node);
                for group in reply.into_inner().wake {
                    self.wake(group, "asked");
                }
            }
            Ok(Err(status)) => {
                tracing::debug!(peer = node, error = %status, "node beat failed")
            }
            Err(_) => tracing::debug!(peer = node, "node beat timed out"),
        }
    }

    /// Handles a peer's beat: quiet followers of the named leaders stay (or go) quiet; groups
    /// whose replica here follows someone else are returned for the sender to wake.
    pub fn handle_node_beat(&self, req: NodeBeatRequest) -> NodeBeatReply {
        let now_ms = self.epoch_ms();
        let mut wake = Vec::new();
        for q in req.groups {
            let Some(h) = self.hosted(q.group_id) else {
                continue;
            };
            if h.kind != GroupKind::Shard {
                continue;
            }
            let v = {
                let m = h.raft.metrics();
                let m = m.borrow();
                verdict(
                    h.replica,
                    m.current_leader,
                    m.current_term,
                    q.leader,
                    q.term,
                )
            };
            match v {
                Verdict::Follow => {
                    h.quiet.named_at.store(now_ms, Ordering::Release);
                    if h.quiet.sleep(&h.raft, QUIET_FOLLOWER) {
                        crate::metrics::QUIESCED.inc();
                        tracing::debug!(
                            group = q.group_id,
                            node = self.node_id,
                            leader_node = req.from_node,
                            "group quiet (follower)"
                        );
                    }
                }
                Verdict::Wake => wake.push(q.group_id),
                Verdict::Ignore => {}
            }
        }
        NodeBeatReply { wake }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(last: u64, applied: u64, matched: &[Option<u64>], answered: bool) -> LeaderView {
        LeaderView {
            last_log: last,
            applied,
            matched: matched.to_vec(),
            followers_answered: answered,
        }
    }

    #[test]
    fn a_leader_quiesces_only_when_idle_applied_matched_and_answered() {
        let idle = Duration::from_secs(3);
        let ok = view(10, 10, &[Some(10), Some(10)], true);
        assert!(may_quiesce(&ok, Duration::from_secs(3), idle));
        assert!(!may_quiesce(&ok, Duration::from_millis(2999), idle));
        assert!(!may_quiesce(&ok, Duration::from_secs(60), Duration::ZERO));
        assert!(!may_quiesce(
            &view(10, 9, &[Some(10), Some(10)], true),
            Duration::from_secs(9),
            idle
        ));
        assert!(!may_quiesce(
            &view(10, 10, &[Some(10), Some(9)], true),
            Duration::from_secs(9),
            idle
        ));
        assert!(!may_quiesce(
            &view(10, 10, &[Some(10), None], true),
            Duration::from_secs(9),
            idle
        ));
        assert!(!may_quiesce(
            &view(10, 10, &[Some(10), Some(10)], false),
            Duration::from_secs(9),
            idle
        ));
        // A single-replica group has no follower to wait for.
        assert!(may_quiesce(
            &view(3, 3, &[], true),
            Duration::from_secs(3),
            idle
        ));
    }

    #[test]
    fn a_replica_follows_only_its_own_leader_and_term() {
        assert_eq!(verdict(2, Some(1), 5, 1, 5), Verdict::Follow);
        assert_eq!(verdict(2, Some(1), 6, 1, 5), Verdict::Wake);
        assert_eq!(verdict(2, Some(1), 4, 1, 5), Verdict::Wake);
        assert_eq!(verdict(2, Some(3), 5, 1, 5), Verdict::Wake);
        assert_eq!(verdict(2, None, 5, 1, 5), Verdict::Wake);
        assert_eq!(verdict(1, Some(1), 5, 1, 5), Verdict::Ignore);
    }
}
