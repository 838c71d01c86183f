//! The Raft groups hosted on this node.
//!
//! The registry starts and stops groups (the reconciler in the server decides which), routes
//! incoming Raft messages to the right group and checks that a message is meant for the replica
//! incarnation that is hosted here (a message for an older incarnation is refused, so a re-created
//! replica never answers for its predecessor).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use openraft::raft::{AppendEntriesRequest, SnapshotResponse, VoteRequest};
use openraft::{Config, SnapshotPolicy};
use runnel_proto::internal::v1::{RaftKind, RaftReply, RaftRequest, SnapshotChunk};
use runnel_storage::Store;
use tokio::sync::watch;

use crate::codec::{decode, encode};
use crate::error::{Error, Result};
use crate::log_store::LogStore;
use crate::network::{NetworkFactory, PeerPool, NOT_HOSTED};
use crate::quiesce::{IdleTrack, Quiet};
use crate::state_machine::{Frontier, SmKind, StateMachine};
use crate::{Raft, ReplicaId, SnapshotMeta, TypeConfig, Vote};

/// Timing of the groups.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Heartbeat interval of the metadata group (ms).
    pub meta_heartbeat_ms: u64,
    /// Election timeout range of the metadata group (ms).
    pub meta_election_ms: (u64, u64),
    /// Heartbeat interval of shard groups (ms): coarser, because a node hosts many.
    pub shard_heartbeat_ms: u64,
    /// Election timeout range of shard groups (ms).
    pub shard_election_ms: (u64, u64),
    /// A snapshot is built after this many log entries since the last one (shard groups).
    pub shard_snapshot_logs: u64,
    /// Log entries kept after a snapshot.
    pub logs_to_keep: u64,
    /// A shard group whose leader appended nothing for this long goes quiet (ms; 0: never).
    /// See `quiesce`.
    pub quiesce_idle_ms: u64,
    /// Test only: let a replica that led its group resume as leader of the same term after a
    /// restart (openraft's default; unsafe after power loss, see `demote_restored_leader`).
    pub unsafe_restore_leaders: bool,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            meta_heartbeat_ms: 500,
            meta_election_ms: (1500, 3000),
            shard_heartbeat_ms: 500,
            shard_election_ms: (1500, 3000),
            shard_snapshot_logs: 20_000,
            logs_to_keep: 5_000,
            quiesce_idle_ms: 3_000,
            unsafe_restore_leaders: false,
        }
    }
}

/// The kind of a hosted group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// The metadata group.
    Meta,
    /// A shard replica.
    Shard,
}

/// Descriptive data of a hosted group.
#[derive(Clone, Debug, Default)]
pub struct GroupInfo {
    /// Stream name (empty for the metadata group).
    pub stream: String,
    /// Shard index within the stream.
    pub shard: u64,
}

/// A follower node silent for this long counts as not replicating (heartbeats go out every
/// heartbeat interval, 500 ms by default).
pub const FOLLOWER_SILENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// A voter this many entries behind its leader counts as not replicating.
pub const LAG_UNDER_REPLICATED: u64 = 10_000;

/// Status of a hosted group, from its Raft metrics.
#[derive(Clone, Debug)]
pub struct GroupStatus {
    /// Group id.
    pub group: u64,
    /// Descriptive info.
    pub info: GroupInfo,
    /// Metadata or shard group.
    pub kind: GroupKind,
    /// This node's replica id in the group.
    pub replica: ReplicaId,
    /// Physical node of the leader, if known.
    pub leader_node: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Last log index.
    pub last_log_index: u64,
    /// Physical node ids of the voters.
    pub voter_nodes: Vec<u64>,
    /// True if this replica leads.
    pub is_leader: bool,
    /// Leader only: the largest number of log entries a voter is behind the leader's last
    /// entry (0 on followers).
    pub replication_lag: u64,
    /// Leader only: voters (other than the leader) whose node answered no Raft RPC in the
    /// last [`FOLLOWER_SILENCE`] or that are more than [`LAG_UNDER_REPLICATED`] entries behind.
    pub lagging_voters: usize,
    /// The group is quiet on this node (idle; its Raft timer stopped, see `quiesce`).
    pub quiet: bool,
}

#[derive(Clone)]
pub(crate) struct Hosted {
    pub(crate) raft: Raft,
    pub(crate) replica: ReplicaId,
    pub(crate) kind: GroupKind,
    /// Shared, so that a clone of the handle does not copy the stream name.
    info: Arc<GroupInfo>,
    frontier: watch::Receiver<Frontier>,
    pub(crate) quiet: Arc<Quiet>,
}

/// The groups of one node.
pub struct Registry {
    pub(crate) node_id: u64,
    store: Store,
    pub(crate) pool: Arc<PeerPool>,
    pub(crate) options: RegistryOptions,
    pub(crate) groups: RwLock<HashMap<u64, Hosted>>,
    /// Zero of the quiescence clock (`quiesce`).
    pub(crate) epoch: std::time::Instant,
    /// Leader-side idle tracking of `quiesce`.
    pub(crate) idle_track: Mutex<IdleTrack>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new(
        node_id: u64,
        store: Store,
        pool: Arc<PeerPool>,
        options: RegistryOptions,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            node_id,
            store,
            pool,
            options,
            groups: RwLock::new(HashMap::new()),
            epoch: std::time::Instant::now(),
            idle_track: Mutex::new(IdleTrack::new()),
        })
    }

    /// Physical id of this node.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn config(&self, group: u64, kind: GroupKind) -> Result<Arc<Config>> {
        let o = &self.options;
        let (hb, (emin, emax), snap) = match kind {
            GroupKind::Meta => (o.meta_heartbeat_ms, o.meta_election_ms, 1000),
            GroupKind::Shard => (
                o.shard_heartbeat_ms,
                o.shard_election_ms,
                o.shard_snapshot_logs,
            ),
        };
        let config = Config {
            cluster_name: format!("runnel-group-{group}"),
            heartbeat_interval: hb,
            election_timeout_min: emin,
            election_timeout_max: emax,
            install_snapshot_timeout: 60_000,
            max_payload_entries: 256,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(snap),
            max_in_snapshot_log_to_keep: o.logs_to_keep,
            ..Default::default()
        };
        config
            .validate()
            .map(Arc::new)
            .map_err(|e| Error::Raft(e.to_string()))
    }

    /// Starts hosting `group` as replica `replica`. Idempotent for the same replica id; a different
    /// replica id of a hosted group is an error (stop and destroy the old one first).
    pub async fn start_group(
        &self,
        group: u64,
        replica: ReplicaId,
        kind: SmKind,
        info: GroupInfo,
    ) -> Result<Raft> {
        if let Some(h) = self.hosted(group) {
            if h.replica == replica {
                return Ok(h.raft);
            }
            return Err(Error::Raft(format!(
                "group {group} is hosted as replica {} (asked for {replica})",
                h.replica
            )));
        }
        let gkind = match kind {
            SmKind::Meta(_) => GroupKind::Meta,
            SmKind::Shard => GroupKind::Shard,
        };
        let config = self.config(group, gkind)?;
        let (sm, frontier) = StateMachine::open(group, kind, self.store.clone())?;
        let mut log = LogStore::new(group, self.store.clone());
        if !self.options.unsafe_restore_leaders {
            demote_restored_leader(&mut log, replica).await?;
        }
        let net = NetworkFactory::new(group, self.pool.clone());
        let raft = Raft::new(replica, config, net, log, sm)
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        let hosted = Hosted {
            raft: raft.clone(),
            replica,
            kind: gkind,
            info: Arc::new(info),
            frontier,
            quiet: Arc::new(Quiet::default()),
        };
        let raced = {
            let mut groups = self
                .groups
                .write()
                .map_err(|_| Error::Raft("registry lock poisoned".into()))?;
            match groups.get(&group) {
                Some(existing) => Some(existing.raft.clone()),
                None => {
                    groups.insert(group, hosted);
                    None
                }
            }
        };
        if let Some(existing) = raced {
            // Lost a race with a concurrent start of the same group.
            let _ = raft.shutdown().await;
            return Ok(existing);
        }
        tracing::info!(group, replica, node = self.node_id, kind = ?gkind, "started raft group");
        Ok(raft)
    }

    /// Stops hosting `group`; with `destroy`, also deletes its data.
    pub async fn stop_group(&self, group: u64, destroy: bool) -> Result<()> {
        let removed = self
            .groups
            .write()
            .map_err(|_| Error::Raft("registry lock poisoned".into()))?
            .remove(&group);
        if let Some(h) = removed {
            let _ = h.raft.shutdown().await;
            tracing::info!(
                group,
                replica = h.replica,
                node = self.node_id,
                destroy,
                "stopped raft group"
            );
        }
        if destroy {
            // Deleting waits for a journal sync and a WAL sync: off the async workers (with one
            // worker per node, blocking it would stop every group on the node meanwhile).
            self.store
                .off_runtime(move |s| s.destroy_group(group))
                .await?;
        }
        Ok(())
    }

    pub(crate) fn hosted(&self, group: u64) -> Option<Hosted> {
        self.with_hosted(group, Hosted::clone)
    }

    /// Runs `f` on a hosted group under the read lock, without cloning its handle (this runs
    /// for every write). `f` must not block or call back into the registry.
    fn with_hosted<T>(&self, group: u64, f: impl FnOnce(&Hosted) -> T) -> Option<T> {
        self.groups.read().ok().and_then(|g| g.get(&group).map(f))
    }

    /// The Raft handle of a hosted group.
    pub fn raft(&self, group: u64) -> Option<Raft> {
        self.with_hosted(group, |h| h.raft.clone())
    }

    /// The applied frontier of a hosted group.
    pub fn frontier(&self, group: u64) -> Option<watch::Receiver<Frontier>> {
        self.with_hosted(group, |h| h.frontier.clone())
    }

    /// Ids of the hosted groups with their replica ids.
    pub fn hosted_groups(&self) -> Vec<(u64, ReplicaId)> {
        self.groups
            .read()
            .map(|g| g.iter().map(|(k, h)| (*k, h.replica)).collect())
            .unwrap_or_default()
    }

    /// Status of every hosted group.
    pub fn status(&self) -> Vec<GroupStatus> {
        let hosted: Vec<(u64, Hosted)> = self
            .groups
            .read()
            .map(|g| g.iter().map(|(k, h)| (*k, h.clone())).collect())
            .unwrap_or_default();
        let mut out: Vec<GroupStatus> = hosted
            .into_iter()
            .map(|(group, h)| {
                let m = h.raft.metrics().borrow().clone();
                let membership = m.membership_config.membership();
                let node_of = |id: &ReplicaId| membership.get_node(id).map(|n| n.node);
                let voter_nodes = membership
                    .voter_ids()
                    .filter_map(|id| node_of(&id))
                    .collect();
                let is_leader = m.current_leader == Some(h.replica);
                let last = m.last_log_index.unwrap_or(0);
                let mut replication_lag = 0;
                let mut lagging_voters = 0;
                if let (true, Some(repl)) = (is_leader, m.replication.as_ref()) {
                    for id in membership.voter_ids().filter(|id| *id != h.replica) {
                        let matched = repl
                            .get(&id)
                            .and_then(|l| l.as_ref())
                            .map_or(0, |l| l.index);
                        let lag = last.saturating_sub(matched);
                        replication_lag = replication_lag.max(lag);
                        let silent = node_of(&id)
                            .is_none_or(|n| !self.pool.answered_within(n, FOLLOWER_SILENCE));
                        if silent || lag > LAG_UNDER_REPLICATED {
                            lagging_voters += 1;
                        }
                    }
                }
                GroupStatus {
                    group,
                    info: (*h.info).clone(),
                    kind: h.kind,
                    replica: h.replica,
                    leader_node: m.current_leader.as_ref().and_then(node_of),
                    term: m.current_term,
                    applied_index: m.last_applied.map_or(0, |l| l.index),
                    last_log_index: m.last_log_index.unwrap_or(0),
                    voter_nodes,
                    is_leader,
                    replication_lag,
                    lagging_voters,
                    quiet: !h.quiet.is_awake(),
                }
            })
            .collect();
        out.sort_by_key(|s| s.group);
        out
    }

    /// Physical node id of the current leader of `group` as this node sees it.
    pub fn leader_node(&self, group: u64) -> Option<u64> {
        self.with_hosted(group, |h| {
            // Borrowed, not cloned: this runs for every write (a clone of the metrics allocates).
            let metrics = h.raft.metrics();
            let m = metrics.borrow();
            let leader = m.current_leader?;
            m.membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.node)
        })
        .flatten()
    }

    /// True if the replica of `group` on this node is the leader.
    pub fn is_leader(&self, group: u64) -> bool {
        self.leader_term(group).is_some()
    }

    /// The current term of `group` if this node leads it (as its local Raft sees it).
    pub fn leader_term(&self, group: u64) -> Option<u64> {
        self.with_hosted(group, |h| {
            let m = h.raft.metrics();
            let m = m.borrow();
            (m.current_leader == Some(h.replica)).then_some(m.current_term)
        })
        .flatten()
    }

    /// Handles an incoming Raft message (AppendEntries or Vote) for any group.
    pub async fn handle_raft(&self, req: RaftRequest) -> RaftReply {
        let Some(h) = self.hosted(req.group_id) else {
            return unavailable(format!("{NOT_HOSTED}: {}", req.group_id));
        };
        if h.replica != req.target {
            return unavailable(format!(
                "{NOT_HOSTED}: group {} replica {} (hosted: {})",
                req.group_id, req.target, h.replica
            ));
        }
        let payload = match RaftKind::try_from(req.kind) {
            Ok(RaftKind::AppendEntries) => {
                match decode::<AppendEntriesRequest<TypeConfig>>(&req.payload) {
                    Ok(rpc) => {
                        if !rpc.entries.is_empty() {
                            self.wake_hosted(req.group_id, &h, "entries");
                        }
                        let started = (!rpc.entries.is_empty()).then(std::time::Instant::now);
                        let reply = h.raft.append_entries(rpc).await;
                        if let Some(t) = started {
                            crate::metrics::APPEND_HANDLE_SECONDS
                                .observe(t.elapsed().as_secs_f64());
                        }
                        encode(&reply)
                    }
                    Err(e) => return unavailable(format!("bad append-entries payload: {e}")),
                }
            }
            Ok(RaftKind::Vote) => match decode::<VoteRequest<ReplicaId>>(&req.payload) {
                Ok(rpc) => {
                    self.wake_hosted(req.group_id, &h, "vote");
                    encode(&h.raft.vote(rpc).await)
                }
                Err(e) => return unavailable(format!("bad vote payload: {e}")),
            },
            _ => return unavailable(format!("unknown raft message kind {}", req.kind)),
        };
        match payload {
            Ok(p) => RaftReply {
                payload: p.into(),
                unavailable: String::new(),
            },
            Err(e) => unavailable(format!("cannot encode reply: {e}")),
        }
    }

    /// Handles an incoming snapshot stream.
    pub async fn handle_snapshot<S>(&self, mut chunks: S) -> RaftReply
    where
        S: futures::Stream<Item = std::result::Result<SnapshotChunk, tonic::Status>> + Unpin,
    {
        let mut header: Option<(Vote, SnapshotMeta)> = None;
        let mut group = None;
        let mut target = 0;
        let mut data = Vec::new();
        let mut complete = false;
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(status) => return unavailable(format!("snapshot stream failed: {status}")),
            };
            if header.is_none() {
                match decode::<(Vote, SnapshotMeta)>(&chunk.header) {
                    Ok(h) => header = Some(h),
                    Err(e) => return unavailable(format!("bad snapshot header: {e}")),
                }
                group = Some(chunk.group_id);
                target = chunk.target;
            }
            data.extend_from_slice(&chunk.data);
            if chunk.last {
                complete = true;
                break;
            }
        }
        let (Some((vote, meta)), Some(group), true) = (header, group, complete) else {
            return unavailable("incomplete snapshot stream".into());
        };
        let Some(h) = self.hosted(group) else {
            return unavailable(format!("{NOT_HOSTED}: {group}"));
        };
        if h.replica != target {
            return unavailable(format!("{NOT_HOSTED}: group {group} replica {target}"));
        }
        let snapshot = openraft::Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        };
        let last = snapshot.meta.last_log_id;
        let result: std::result::Result<SnapshotResponse<ReplicaId>, String> = h
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| e.to_string());
        if result.is_ok() {
            crate::metrics::SNAPSHOTS_INSTALLED.inc();
            tracing::info!(
                group,
                replica = target,
                node = self.node_id,
                ?last,
                "installed snapshot"
            );
        }
        match encode(&result) {
            Ok(p) => RaftReply {
                payload: p.into(),
                unavailable: String::new(),
            },
            Err(e) => unavailable(format!("cannot encode reply: {e}")),
        }
    }

    /// Shuts every group down.
    pub async fn shutdown(&self) {
        let all: Vec<Hosted> = match self.groups.write() {
            Ok(mut g) => g.drain().map(|(_, h)| h).collect(),
            Err(_) => return,
        };
        for h in all {
            let _ = h.raft.shutdown().await;
        }
    }
}

fn unavailable(msg: String) -> RaftReply {
    RaftReply {
        payload: Default::default(),
        unavailable: msg,
    }
}

/// Makes a replica that led its group when it stopped start as a follower.
///
/// openraft restores such a replica as leader of the same term, without an election. That is
/// unsafe here: a leader acknowledges an entry once a quorum of *followers* has it durably, even
/// before its own fsync, so after a power cut the restored leader can lack entries it
/// acknowledged; it then served reads without them (stale reads found by the fault-injection
/// harness) and would propose new entries under the same (term, index) as the lost ones. Its
/// committed vote is stored again as a plain vote for itself in the same term: it still refuses
/// any other leader of that term, and leadership needs a new election, whose leader appends a
/// fresh entry first (openraft's read index then covers everything committed before).
async fn demote_restored_leader(log: &mut LogStore, replica: ReplicaId) -> Result<()> {
    use openraft::storage::RaftLogStorage;
    let vote = log
        .read_vote()
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    if let Some(v) = vote {
        if v.is_committed() && v.leader_id().voted_for() == Some(replica) {
            let plain = Vote::new(v.leader_id().term, replica);
            log.save_vote(&plain)
                .await
                .map_err(|e| Error::Raft(e.to_string()))?;
            tracing::info!(
                replica,
                term = v.leader_id().term,
                "restarting as a follower of the term it led"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorage;

    use super::*;

    #[tokio::test]
    async fn a_restarting_leader_comes_back_as_a_follower_of_its_term() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), runnel_storage::StoreOptions::default()).unwrap();
        let mut log = LogStore::new(9, store.clone());
        log.save_vote(&Vote::new_committed(3, 7)).await.unwrap();
        demote_restored_leader(&mut log, 7).await.unwrap();
        let v = log.read_vote().await.unwrap().unwrap();
        assert!(!v.is_committed());
        assert_eq!(
            (v.leader_id().term, v.leader_id().voted_for()),
            (3, Some(7))
        );

        // Another replica's committed vote (this one followed) is left alone.
        let mut other = LogStore::new(10, store);
        other.save_vote(&Vote::new_committed(4, 8)).await.unwrap();
        demote_restored_leader(&mut other, 7).await.unwrap();
        assert!(other.read_vote().await.unwrap().unwrap().is_committed());
    }
}
