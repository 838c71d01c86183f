//! The running node: storage, Raft groups, metadata, background loops and request routing.
//!
//! Routing (property 5: any node answers any request): a write or read for a group is executed on
//! the node whose replica leads it. If that is this node it runs locally; otherwise it is forwarded
//! over the internal gRPC API to the leader (from the local replica's view, a cached hint, or the
//! group's replicas in turn). A forwarded request is never forwarded again: a node that is not the
//! leader answers `NotLeader` with its hint, and only the original node retries. Retries happen
//! only when the request certainly did not take effect (refused before it was appended, or its
//! entry was truncated); an outcome that is unknown is reported to the client as a retryable error.
//!
//! Background loops: metadata bootstrap (the lowest node id initializes the metadata group; its
//! leader writes the cluster identity once), the reconciler (makes the local replicas match the
//! metadata: starts, initializes, reports ready, stops and destroys), retention trimming, the
//! metrics refresh, quiescing of idle groups and the runtime lag probe (`crate::lag`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_proto::internal::v1::internal_client::InternalClient;
use runnel_proto::internal::v1::{ReadMode, ReadShardRequest};
use runnel_raft::network::{PeerPool, Transport};
use runnel_raft::state_machine::SmKind;
use runnel_raft::{
    codec, Command, CommandResponse, GroupInfo, Raft, Registry, RegistryOptions, ReplicaNode,
    WireRecord, META_GROUP,
};
use runnel_storage::{Store, StoreOptions};
use runnel_types::{Clock, Error, Position, Result, SystemClock};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::forward;
use crate::meta::{MetaCommand, MetaHandle, MetaReply, MetaState, NodeInfo};
use crate::metrics;

/// Error code used between nodes for "this node does not lead the group".
pub const NOT_LEADER: &str = "NotLeader";

/// Most records in one Raft entry (positions are `(log index, 0..=0xFFFF)`).
pub(crate) const MAX_ENTRY_RECORDS: usize = 0x1_0000;
/// Most payload bytes in one Raft entry.
pub(crate) const MAX_ENTRY_BYTES: usize = 8 << 20;
/// Attempts to find a leader before giving up with a retryable error.
const ROUTE_ATTEMPTS: usize = 40;

/// How long one leadership confirmation serves a tail's reads (see [`Node::tail_read`]).
pub const TAIL_RECONFIRM: Duration = Duration::from_secs(1);

/// A tail's last leadership confirmation on this node: the term that a quorum round confirmed
/// and when the round began. Only a confirmation of the node's current term, younger than
/// [`TAIL_RECONFIRM`], stands in for a new round.
#[derive(Debug, Default)]
pub struct TailLease(Mutex<Option<(u64, Instant)>>);

impl TailLease {
    fn holds(&self, term: u64) -> bool {
        self.0
            .lock()
            .is_ok_and(|c| c.is_some_and(|(t, at)| t == term && at.elapsed() < TAIL_RECONFIRM))
    }

    fn confirm(&self, term: u64, at: Instant) {
        if let Ok(mut c) = self.0.lock() {
            *c = Some((term, at));
        }
    }
}

/// What a forwarded proposal carries.
#[derive(Serialize, Deserialize)]
pub enum Proposal {
    /// Records for a shard group.
    Records(Vec<WireRecord>),
    /// A metadata command.
    Meta(MetaCommand),
}

/// Where records were stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// Log index of the entry.
    pub log_index: u64,
    /// Arrival time of the entry.
    pub arrival_ms: u64,
    /// Offset of the first record of this request in the entry.
    pub first_sub: u32,
}

/// Reply of a forwarded proposal.
#[derive(Serialize, Deserialize)]
pub enum ProposalReply {
    /// Records stored.
    Records(Appended),
    /// Metadata reply and the log index of the command.
    Meta(MetaReply, u64),
}

/// Outcome of one attempt on one node.
pub enum Attempt<T> {
    /// Done.
    Done(T),
    /// The node does not lead the group; maybe it knows who does. Nothing happened.
    NotLeader(Option<u64>),
    /// Failed; the error goes to the client.
    Fail(Error),
}

/// A read of a shard, executed on its leader.
#[derive(Clone, Debug, Default)]
pub struct ShardRead {
    /// Records read.
    pub records: Vec<(Position, runnel_storage::StoredRecord)>,
    /// Exclusive end of applied records.
    pub end: Position,
    /// Trim horizon.
    pub trim: Position,
    /// Arrival time of the newest record.
    pub last_arrival_ms: u64,
    /// Position of the first record at or after the asked timestamp.
    pub found: Option<Position>,
}

/// An append waiting for a shard's batcher, or for a forwarder to the shard's leader.
pub(crate) struct Pending {
    pub records: Vec<WireRecord>,
    /// Payload bytes (data and partition keys) of `records`.
    pub bytes: usize,
    pub reply: oneshot::Sender<Attempt<Appended>>,
}

/// Where a gathered append's outcome goes: the offset of its first record in the entry, and
/// its reply channel.
pub(crate) type Waiter = (u32, oneshot::Sender<Attempt<Appended>>);

/// Payload bytes (data and partition keys) of some records.
fn payload_bytes(records: &[WireRecord]) -> usize {
    records
        .iter()
        .map(|r| r.data.len() + r.partition_key.len())
        .sum()
}

/// Takes `first` and every append already queued in `rx` that still fits one Raft entry
/// ([`MAX_ENTRY_RECORDS`], [`MAX_ENTRY_BYTES`]); the first that does not fit is left in
/// `carry`. Returns their records concatenated in arrival order and, per append, the offset of
/// its first record with its reply channel.
pub(crate) fn gather(
    first: Pending,
    rx: &mut mpsc::Receiver<Pending>,
    carry: &mut Option<Pending>,
) -> (Vec<WireRecord>, Vec<Waiter>) {
    let mut count = first.records.len();
    let mut bytes = first.bytes;
    let mut batch = vec![first];
    while count < MAX_ENTRY_RECORDS && bytes < MAX_ENTRY_BYTES {
        match rx.try_recv() {
            Ok(p) => {
                if count + p.records.len() > MAX_ENTRY_RECORDS || bytes + p.bytes > MAX_ENTRY_BYTES
                {
                    *carry = Some(p);
                    break;
                }
                count += p.records.len();
                bytes += p.bytes;
                batch.push(p);
            }
            Err(_) => break,
        }
    }
    let mut records = Vec::with_capacity(count);
    let mut replies = Vec::with_capacity(batch.len());
    for p in batch {
        let offset = records.len() as u32;
        records.extend(p.records);
        replies.push((offset, p.reply));
    }
    (records, replies)
}

/// A running forwarder: the leader address it sends to and its queue.
type Forwarder = (String, mpsc::Sender<Pending>);

/// The node.
pub struct Node {
    /// Configuration.
    pub config: NodeConfig,
    /// Groups hosted here.
    pub registry: Arc<Registry>,
    /// Metadata (desired state).
    pub meta: MetaHandle,
    /// The node's clock (test hook: offset).
    pub clock: Arc<SystemClock>,
    pool: Arc<PeerPool>,
    batchers: Mutex<HashMap<u64, mpsc::Sender<Pending>>>,
    /// Forwarders of appends to other nodes' leaders, per (group, leader node), with the
    /// address they send to.
    forwarders: Mutex<HashMap<(u64, u64), Forwarder>>,
    throttle: crate::throttle::WriteThrottle,
    read_throttle: crate::throttle::ReadThrottle,
    /// Monotonic origin of the throttles' clock (never moved by the test clock hook).
    started: std::time::Instant,
    hints: Mutex<HashMap<u64, u64>>,
    /// Tails served here, per shard group (`[limits] max_tails_per_shard`).
    tails: Mutex<HashMap<u64, u32>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A tail's place in its shard's count on this node; dropping it frees the place.
#[derive(Debug)]
pub struct TailSlot {
    node: Arc<Node>,
    group: u64,
}

impl Drop for TailSlot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.node.tails.lock() {
            if let Some(n) = t.get_mut(&self.group) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    t.remove(&self.group);
                }
            }
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Opens storage, starts the metadata group and the background loops.
    pub async fn start(config: NodeConfig) -> std::result::Result<Arc<Node>, crate::StartError> {
        config.validate()?;
        let throttle = crate::throttle::WriteThrottle::new(
            config.limits.shard_write_bytes_per_sec,
            config.limits.shard_write_records_per_sec,
        );
        let read_throttle = crate::throttle::ReadThrottle::new(
            config.limits.shard_read_bytes_per_sec,
            u64::from(config.limits.shard_reads_per_sec),
        );
        metrics::set_max_shard_series(config.metrics.max_shard_series);
        metrics::init();
        let store = Store::open(
            &config.data_dir,
            StoreOptions {
                unsafe_skip_fsync: config.testing.unsafe_skip_fsync,
                unsafe_drop_applied_records: config.testing.bug_drop_applied_records,
                unsafe_reuse_sequence_numbers: config.testing.bug_reuse_sequence_numbers,
                simulate_power_loss: config.testing.simulate_power_loss,
                recent_blocks_bytes: config.recent_blocks_mib << 20,
                raft_journal: config.raft.log_durability == crate::config::LogDurability::Journal,
                ..Default::default()
            },
        )
        .map_err(|e| crate::StartError::Storage(e.to_string()))?;
        let pool = Arc::new(
            PeerPool::new(None)
                .with_overrides(
                    config
                        .testing
                        .peer_overrides
                        .iter()
                        .map(|p| (p.id, p.addr.clone()))
                        .collect(),
                )
                .with_transport(match config.raft.peer_transport {
                    crate::config::PeerTransport::Tcp => Transport::Tcp,
                    crate::config::PeerTransport::GrpcStream => Transport::GrpcStream,
                    crate::config::PeerTransport::GrpcCall => Transport::GrpcCall,
                }),
        );
        let r = &config.raft;
        let registry = Registry::new(
            config.node_id,
            store,
            pool.clone(),
            RegistryOptions {
                meta_heartbeat_ms: r.meta_heartbeat_ms,
                meta_election_ms: (r.meta_election_min_ms, r.meta_election_max_ms),
                shard_heartbeat_ms: r.shard_heartbeat_ms,
                shard_election_ms: (r.shard_election_min_ms, r.shard_election_max_ms),
                shard_snapshot_logs: r.shard_snapshot_logs,
                logs_to_keep: r.logs_to_keep,
                quiesce_idle_ms: r.quiesce_idle_ms,
                unsafe_restore_leaders: config.testing.bug_restore_leader,
            },
        );
        let meta = MetaHandle::default();
        let (shutdown, _) = watch::channel(false);
        let node = Arc::new(Node {
            config,
            registry,
            meta,
            clock: Arc::new(SystemClock::default()),
            pool,
            batchers: Mutex::new(HashMap::new()),
            forwarders: Mutex::new(HashMap::new()),
            throttle,
            read_throttle,
            started: std::time::Instant::now(),
            hints: Mutex::new(HashMap::new()),
            tails: Mutex::new(HashMap::new()),
            shutdown,
            tasks: Mutex::new(Vec::new()),
        });
        let raft = node
            .registry
            .start_group(
                META_GROUP,
                node.config.node_id,
                SmKind::Meta(Arc::new(node.meta.clone())),
                GroupInfo::default(),
            )
            .await
            .map_err(|e| crate::StartError::Raft(e.to_string()))?;
        let lowest = node
            .config
            .cluster()
            .iter()
            .map(|p| p.id)
            .min()
            .unwrap_or(node.config.node_id);
        if lowest == node.config.node_id {
            let initialized = raft
                .is_initialized()
                .await
                .map_err(|e| crate::StartError::Raft(e.to_string()))?;
            if !initialized {
                let members: BTreeMap<u64, ReplicaNode> = node
                    .config
                    .cluster()
                    .into_iter()
                    .map(|p| {
                        (
                            p.id,
                            ReplicaNode {
                                node: p.id,
                                addr: p.addr,
                            },
                        )
                    })
                    .collect();
                if let Err(e) = raft.initialize(members).await {
                    tracing::warn!(node = node.config.node_id, error = %e, "metadata group initialize");
                }
            }
        }
        node.spawn(Node::bootstrap_loop(node.clone()));
        node.spawn(Node::reconcile_loop(node.clone()));
        node.spawn(Node::retention_loop(node.clone()));
        node.spawn(Node::metrics_loop(node.clone()));
        node.spawn(Node::quiesce_loop(node.clone()));
        node.spawn(crate::lag::run(node.config.node_id, node.shutdown_signal()));
        Ok(node)
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        let handle = tokio::spawn(f);
        if let Ok(mut t) = self.tasks.lock() {
            t.push(handle);
        }
    }

    /// Stops background loops and every group.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for t in tasks {
            t.abort();
        }
        self.registry.shutdown().await;
    }

    /// A receiver that turns true at shutdown.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Current time of this node (ms).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Milliseconds since this node started, from a monotonic clock (for rate limits).
    fn mono_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The metadata state, with the cluster initialized.
    /// The metadata as of now: the local copy after it has applied everything the metadata
    /// leader had committed when asked (a linearizable read of the metadata, one round trip to
    /// the leader). Control-plane reads use it so that a change made through one node is seen
    /// through every other node.
    pub async fn fresh_state(&self) -> Result<Arc<MetaState>> {
        let r = self
            .read(
                META_GROUP,
                ReadShardRequest {
                    group_id: META_GROUP,
                    mode: ReadMode::Positions as i32,
                    ..Default::default()
                },
            )
            .await?;
        let index = r.end.log_index;
        let mut applied = self.meta.subscribe();
        if tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|i| *i >= index))
            .await
            .is_err()
        {
            return Err(Error::Unavailable(format!(
                "the local metadata did not reach index {index} within 5 s"
            )));
        }
        self.state()
    }

    pub fn state(&self) -> Result<Arc<MetaState>> {
        let s = self.meta.get();
        if s.secret.is_none() {
            return Err(Error::Unavailable(
                "the cluster is not initialized yet".into(),
            ));
        }
        Ok(s)
    }

    // ------------------------------------------------------------- background loops

    async fn bootstrap_loop(node: Arc<Node>) {
        let mut stop = node.shutdown_signal();
        loop {
            if node.meta.get().secret.is_some() {
                return;
            }
            if node.registry.is_leader(META_GROUP) {
                let mut secret = [0u8; 32];
                rand::fill(&mut secret);
                let cmd = MetaCommand::InitCluster {
                    secret,
                    account: node.config.account_id.clone(),
                    nodes: node
                        .config
                        .cluster()
                        .into_iter()
                        .map(|p| NodeInfo {
                            id: p.id,
                            addr: p.addr,
                        })
                        .collect(),
                    replication_factor: node.config.effective_replication_factor(),
                };
                if let Err(e) = node.propose_meta(cmd).await {
                    tracing::warn!(node = node.config.node_id, error = %e, "cluster init");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn reconcile_loop(node: Arc<Node>) {
        let mut changes = node.meta.subscribe();
        let mut stop = node.shutdown_signal();
        loop {
            if let Err(e) = node.reconcile().await {
                tracing::warn!(node = node.config.node_id, error = %e, "reconcile");
            }
            tokio::select! {
                _ = changes.changed() => {}
                // Also re-check periodically: readiness depends on elections, not only on metadata.
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Makes the local replicas match the metadata. Idempotent.
    pub async fn reconcile(&self) -> Result<()> {
        let state = self.meta.get();
        let me = self.config.node_id;
        let mut desired: HashMap<u64, u64> = HashMap::new();
        for stream in state.streams.values() {
            for shard in &stream.shards {
                let Some(mine) = shard.replicas.iter().find(|r| r.node == me) else {
                    continue;
                };
                desired.insert(shard.group, mine.replica_id);
                let raft = match self.registry.raft(shard.group) {
                    Some(r) => r,
                    None => self
                        .registry
                        .start_group(
                            shard.group,
                            mine.replica_id,
                            SmKind::Shard,
                            GroupInfo {
                                stream: stream.name.to_string(),
                                shard: shard.index,
                            },
                        )
                        .await
                        .map_err(|e| Error::Internal(e.to_string()))?,
                };
                let first = shard.replicas.first().map(|r| r.node) == Some(me);
                if first && !shard.ready {
                    let initialized = raft
                        .is_initialized()
                        .await
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    if !initialized {
                        let members: BTreeMap<u64, ReplicaNode> = shard
                            .replicas
                            .iter()
                            .filter_map(|r| {
                                state.nodes.get(&r.node).map(|n| {
                                    (
                                        r.replica_id,
                                        ReplicaNode {
                                            node: r.node,
                                            addr: n.addr.clone(),
                                        },
                                    )
                                })
                            })
                            .collect();
                        if let Err(e) = raft.initialize(members).await {
                            tracing::debug!(group = shard.group, error = %e, "shard initialize");
                        }
                    }
                }
                if !shard.ready && self.registry.is_leader(shard.group) {
                    let cmd = MetaCommand::ShardReady {
                        uid: stream.uid,
                        group: shard.group,
                    };
                    if let Err(e) = self.propose_meta(cmd).await {
                        tracing::debug!(group = shard.group, error = %e, "shard ready");
                    }
                }
            }
        }
        for (group, replica) in self.registry.hosted_groups() {
            if group == META_GROUP {
                continue;
            }
            if desired.get(&group) != Some(&replica) {
                self.drop_batcher(group);
                self.registry
                    .stop_group(group, true)
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?;
            }
        }
        Ok(())
    }

    async fn retention_loop(node: Arc<Node>) {
        let mut stop = node.shutdown_signal();
        let every = Duration::from_secs(node.config.retention_check_secs);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            node.trim_expired();
        }
    }

    /// Removes records older than their stream's retention from every local replica.
    pub fn trim_expired(&self) {
        let state = self.meta.get();
        let now = self.now_ms();
        for stream in state.streams.values() {
            let cutoff = now.saturating_sub(u64::from(stream.retention_hours) * 3_600_000);
            for shard in &stream.shards {
                if self.registry.raft(shard.group).is_none() {
                    continue;
                }
                match self.registry.store().trim_before(shard.group, cutoff) {
                    Ok((_, 0)) => {}
                    Ok((horizon, n)) => {
                        tracing::info!(group = shard.group, stream = %stream.name, shard = shard.index, entries = n, ?horizon, "retention trimmed");
                    }
                    Err(e) => {
                        tracing::warn!(group = shard.group, error = %e, "retention trim failed")
                    }
                }
            }
        }
    }

    /// Quiesces idle shard groups and keeps quiet ones alive (`runnel_raft::quiesce`), once per
    /// shard heartbeat interval.
    async fn quiesce_loop(node: Arc<Node>) {
        if node.config.raft.quiesce_idle_ms == 0 {
            return;
        }
        let mut stop = node.shutdown_signal();
        let every = Duration::from_millis(node.config.raft.shard_heartbeat_ms);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            node.registry.quiesce_round();
        }
    }

    /// Refreshes the Raft and storage gauges every second and counts leader changes.
    async fn metrics_loop(node: Arc<Node>) {
        let mut stop = node.shutdown_signal();
        let mut leaders: HashMap<u64, Option<u64>> = HashMap::new();
        let mut streams = std::collections::HashSet::new();
        let mut tick = 0u64;
        loop {
            let status = node.registry.status();
            metrics::GROUPS_HOSTED.set(status.len() as i64);
            metrics::GROUPS_LED.set(status.iter().filter(|s| s.is_leader).count() as i64);
            metrics::GROUPS_LEADERLESS
                .set(status.iter().filter(|s| s.leader_node.is_none()).count() as i64);
            metrics::GROUPS_QUIET.set(status.iter().filter(|s| s.quiet).count() as i64);
            metrics::GROUPS_UNDER_REPLICATED.set(
                status
                    .iter()
                    .filter(|s| s.is_leader && s.lagging_voters > 0)
                    .count() as i64,
            );
            let lag = status.iter().map(|s| s.replication_lag).max().unwrap_or(0);
            metrics::REPLICATION_LAG.set(i64::try_from(lag).unwrap_or(i64::MAX));
            let term = |meta: bool| {
                status
                    .iter()
                    .filter(|s| (s.group == META_GROUP) == meta)
                    .map(|s| s.term)
                    .max()
                    .unwrap_or(0)
            };
            metrics::TERM
                .with_label_values(&["meta"])
                .set(i64::try_from(term(true)).unwrap_or(i64::MAX));
            metrics::TERM
                .with_label_values(&["shard_max"])
                .set(i64::try_from(term(false)).unwrap_or(i64::MAX));
            let mut seen = HashMap::with_capacity(status.len());
            for s in &status {
                if let Some(Some(before)) = leaders.get(&s.group) {
                    if s.leader_node.is_some_and(|l| l != *before) {
                        metrics::LEADER_CHANGES.inc();
                    }
                }
                // Remember the last known leader through leaderless intervals.
                let known = s
                    .leader_node
                    .or_else(|| leaders.get(&s.group).copied().flatten());
                seen.insert(s.group, known);
            }
            leaders = seen;
            // Disk figures are cheaper but not free: every 5 s.
            if tick.is_multiple_of(5) {
                // RocksDB property and size calls block: off the async workers.
                let n = node.clone();
                let mut s = std::mem::take(&mut streams);
                streams = tokio::task::spawn_blocking(move || {
                    n.refresh_storage_metrics(&mut s);
                    s
                })
                .await
                .unwrap_or_default();
            }
            metrics::expire_iterator_ages();
            tick += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Refreshes the storage gauges: engine figures and bytes per stream on this node.
    /// `known` holds the streams with series; deleted ones lose theirs.
    fn refresh_storage_metrics(&self, known: &mut std::collections::HashSet<String>) {
        let store = self.registry.store();
        metrics::set_engine(&store.engine_stats());
        let state = self.meta.get();
        known.retain(|name| {
            let exists = state.streams.contains_key(name.as_str());
            if !exists {
                metrics::remove_stream(name);
            }
            exists
        });
        for stream in state.streams.values() {
            known.insert(stream.name.to_string());
            metrics::init_stream(stream.name.as_str());
            let hosted: Vec<u64> = stream
                .shards
                .iter()
                .filter(|sh| self.registry.raft(sh.group).is_some())
                .map(|sh| sh.group)
                .collect();
            let bytes = store.groups_disk_bytes(&hosted);
            metrics::STREAM_DISK_BYTES
                .with_label_values(&[stream.name.as_str()])
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    // ------------------------------------------------------------------ routing

    fn hint(&self, group: u64) -> Option<u64> {
        self.registry
            .leader_node(group)
            .or_else(|| self.hints.lock().ok().and_then(|h| h.get(&group).copied()))
    }

    fn set_hint(&self, group: u64, node: Option<u64>) {
        if let Ok(mut h) = self.hints.lock() {
            match node {
                Some(n) => {
                    h.insert(group, n);
                }
                None => {
                    h.remove(&group);
                }
            }
        }
    }

    /// Candidate nodes for a group, hint first.
    fn candidates(&self, group: u64) -> Vec<u64> {
        let state = self.meta.get();
        let mut nodes: Vec<u64> = if group == META_GROUP {
            self.config.cluster().iter().map(|p| p.id).collect()
        } else {
            state
                .shard_of_group(group)
                .map(|(_, sh)| sh.replicas.iter().map(|r| r.node).collect())
                .unwrap_or_default()
        };
        if let Some(h) = self.hint(group) {
            nodes.retain(|n| *n != h);
            nodes.insert(0, h);
        }
        nodes
    }

    fn addr_of(&self, node: u64) -> Option<String> {
        self.meta
            .get()
            .nodes
            .get(&node)
            .map(|n| n.addr.clone())
            .or_else(|| {
                self.config
                    .cluster()
                    .into_iter()
                    .find(|p| p.id == node)
                    .map(|p| p.addr)
            })
    }

    /// A client for the internal API of `node`.
    pub fn internal_client(&self, node: u64) -> Result<InternalClient<tonic::transport::Channel>> {
        let addr = self
            .addr_of(node)
            .ok_or_else(|| Error::Internal(format!("unknown node {node}")))?;
        let ch = self
            .pool
            .channel(node, &addr, false)
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(InternalClient::new(ch)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// Runs `local` here if this node leads `group`, else `remote` on the leader; retries only
    /// when an attempt certainly had no effect.
    async fn route<T, L, LF, R, RF>(&self, group: u64, local: L, remote: R) -> Result<T>
    where
        L: Fn() -> LF,
        LF: std::future::Future<Output = Attempt<T>>,
        R: Fn(u64) -> RF,
        RF: std::future::Future<Output = Attempt<T>>,
    {
        let me = self.config.node_id;
        let mut last_err = None;
        for attempt in 0..ROUTE_ATTEMPTS {
            // The common case first: this node leads the group (leader-aware clients send there),
            // so the replica list is not built and the hints are not read.
            let leads_now = attempt == 0 && self.registry.is_leader(group);
            let target = if leads_now {
                me
            } else {
                let candidates = self.candidates(group);
                if candidates.is_empty() {
                    return Err(Error::ResourceNotFound(format!(
                        "group {group} has no replicas"
                    )));
                }
                let target = candidates[attempt % candidates.len()];
                self.hint(group).unwrap_or(target)
            };
            let outcome = if target == me && (leads_now || self.registry.is_leader(group)) {
                local().await
            } else if target == me {
                Attempt::NotLeader(None)
            } else {
                remote(target).await
            };
            match outcome {
                Attempt::Done(v) => {
                    // Kept on the fast path too: it replaces a hint stored before this node
                    // led, which would otherwise be tried first once the leadership moves.
                    self.set_hint(group, Some(target));
                    return Ok(v);
                }
                Attempt::Fail(e) => return Err(e),
                Attempt::NotLeader(hint) => {
                    let hint = hint.filter(|h| *h != target);
                    self.set_hint(group, hint);
                    last_err = Some(target);
                    if hint.is_none() {
                        // An election may be running; give it a moment.
                        tokio::time::sleep(Duration::from_millis(50 + 25 * attempt as u64)).await;
                    }
                }
            }
        }
        Err(Error::Unavailable(format!(
            "no leader found for group {group} (last tried node {})",
            last_err.unwrap_or(0)
        )))
    }

    /// Proposes a metadata command on the metadata leader.
    pub async fn propose_meta(&self, cmd: MetaCommand) -> Result<()> {
        let proposal = Proposal::Meta(cmd);
        let bytes = codec::encode(&proposal).map_err(|e| Error::Internal(e.to_string()))?;
        let reply = self
            .route(
                META_GROUP,
                || self.propose_local(META_GROUP, &proposal),
                |n| self.propose_remote(n, META_GROUP, bytes.clone()),
            )
            .await?;
        match reply {
            ProposalReply::Meta(r, index) => {
                // Read-your-writes through this node: wait until the local copy of the metadata
                // has applied the command (followers apply after the leader).
                let mut applied = self.meta.subscribe();
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|i| *i >= index))
                        .await;
                r.into_result()
            }
            ProposalReply::Records(_) => Err(Error::Internal("unexpected reply".into())),
        }
    }

    /// Appends records to a shard group: through its leader's batcher here, or through this
    /// node's forwarder to the leader (see [`crate::forward`]).
    pub async fn append(&self, group: u64, records: Vec<WireRecord>) -> Result<Appended> {
        let proposal = Proposal::Records(records);
        let reply = self
            .route(
                group,
                || self.propose_local(group, &proposal),
                |n| self.forward_append(n, group, &proposal),
            )
            .await?;
        match reply {
            ProposalReply::Records(a) => Ok(a),
            ProposalReply::Meta(..) => Err(Error::Internal("unexpected reply".into())),
        }
    }

    /// Hands an append to the forwarder of (`group`, `node`), starting one if needed.
    async fn forward_append(
        &self,
        node: u64,
        group: u64,
        proposal: &Proposal,
    ) -> Attempt<ProposalReply> {
        let Proposal::Records(records) = proposal else {
            return Attempt::Fail(Error::Internal("only appends are forwarded".into()));
        };
        let (reply, rx) = oneshot::channel();
        let mut item = Pending {
            records: records.clone(),
            bytes: payload_bytes(records),
            reply,
        };
        // A forwarder that just ended on idleness refuses the item: start a new one, once.
        for _ in 0..2 {
            let tx = match self.forwarder(node, group) {
                Ok(tx) => tx,
                Err(e) => return Attempt::Fail(e),
            };
            match tx.send(item).await {
                Ok(()) => {
                    return match rx.await {
                        Ok(Attempt::Done(a)) => Attempt::Done(ProposalReply::Records(a)),
                        Ok(Attempt::NotLeader(h)) => Attempt::NotLeader(h),
                        Ok(Attempt::Fail(e)) => Attempt::Fail(e),
                        Err(_) => Attempt::Fail(Error::Unavailable(
                            "the forwarder stopped; the outcome is unknown".into(),
                        )),
                    };
                }
                Err(mpsc::error::SendError(back)) => item = back,
            }
        }
        Attempt::NotLeader(None)
    }

    /// The live forwarder of (`group`, `node`).
    fn forwarder(&self, node: u64, group: u64) -> Result<mpsc::Sender<Pending>> {
        let mut map = self
            .forwarders
            .lock()
            .map_err(|_| Error::Internal("forwarder lock poisoned".into()))?;
        let addr = self
            .addr_of(node)
            .ok_or_else(|| Error::Internal(format!("unknown node {node}")))?;
        // A node that came back at another address gets a new forwarder (the old one drains
        // and ends once its queue's sender is dropped here).
        if let Some((known, tx)) = map.get(&(group, node)) {
            if *known == addr && !tx.is_closed() {
                return Ok(tx.clone());
            }
        }
        let client = self.internal_client(node)?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(forward::forward_loop(node, group, client, rx));
        // Forget forwarders that ended (idle, or their group is gone).
        map.retain(|_, (_, tx)| !tx.is_closed());
        map.insert((group, node), (addr, tx.clone()));
        Ok(tx)
    }

    async fn propose_remote(
        &self,
        node: u64,
        group: u64,
        bytes: Vec<u8>,
    ) -> Attempt<ProposalReply> {
        match self.internal_client(node) {
            Ok(client) => forward::propose_call(client, node, group, bytes).await,
            Err(e) => Attempt::Fail(e),
        }
    }

    /// Executes a proposal on this node, which must lead the group (used for forwarded proposals).
    pub async fn propose_local(&self, group: u64, proposal: &Proposal) -> Attempt<ProposalReply> {
        let Some(raft) = self.registry.raft(group) else {
            return Attempt::NotLeader(None);
        };
        match proposal {
            Proposal::Meta(cmd) => {
                if group != META_GROUP {
                    return Attempt::Fail(Error::Internal(
                        "metadata command for a shard group".into(),
                    ));
                }
                let bytes = match codec::encode(cmd) {
                    Ok(b) => b,
                    Err(e) => return Attempt::Fail(Error::Internal(e.to_string())),
                };
                match write_classified(&raft, Command::Meta(bytes)).await {
                    Attempt::Done((CommandResponse::Meta(reply), index)) => {
                        match codec::decode::<MetaReply>(&reply) {
                            Ok(r) => Attempt::Done(ProposalReply::Meta(r, index)),
                            Err(e) => Attempt::Fail(Error::Internal(e.to_string())),
                        }
                    }
                    Attempt::Done((other, _)) => {
                        Attempt::Fail(Error::Internal(format!("unexpected reply {other:?}")))
                    }
                    Attempt::NotLeader(h) => Attempt::NotLeader(h),
                    Attempt::Fail(e) => Attempt::Fail(e),
                }
            }
            Proposal::Records(records) => {
                if group == META_GROUP {
                    return Attempt::Fail(Error::Internal("records for the metadata group".into()));
                }
                // A quiet group's leader resumes its timer before it proposes.
                self.registry.wake(group, "write");
                let tx = match self.batcher(group, raft) {
                    Ok(tx) => tx,
                    Err(e) => return Attempt::Fail(e),
                };
                let (reply, rx) = oneshot::channel();
                let bytes = payload_bytes(records);
                if !self
                    .throttle
                    .admit(group, records.len(), bytes, self.mono_ms())
                {
                    let state = self.meta.get();
                    let (stream, shard) = state
                        .shard_of_group(group)
                        .map(|(s, sh)| {
                            metrics::write_throttled(
                                metrics::Enhanced(&s.enhanced_metrics),
                                s.name.as_str(),
                                &sh.id().to_string(),
                                records.len() as u64,
                            );
                            (s.name.to_string(), sh.id().to_string())
                        })
                        .unwrap_or_default();
                    return Attempt::Fail(Error::ProvisionedThroughputExceeded(format!(
                        "Rate exceeded for shard {shard} in stream {stream} under account {}.",
                        state.account
                    )));
                }
                let pending = Pending {
                    records: records.clone(),
                    bytes,
                    reply,
                };
                if tx.send(pending).await.is_err() {
                    self.drop_batcher(group);
                    return Attempt::NotLeader(None);
                }
                match rx.await {
                    Ok(Attempt::Done(a)) => Attempt::Done(ProposalReply::Records(a)),
                    Ok(Attempt::NotLeader(h)) => Attempt::NotLeader(h),
                    Ok(Attempt::Fail(e)) => Attempt::Fail(e),
                    Err(_) => Attempt::Fail(Error::Unavailable(
                        "the shard leader stopped; the outcome is unknown".into(),
                    )),
                }
            }
        }
    }

    fn drop_batcher(&self, group: u64) {
        if let Ok(mut b) = self.batchers.lock() {
            b.remove(&group);
        }
    }

    fn batcher(&self, group: u64, raft: Raft) -> Result<mpsc::Sender<Pending>> {
        let mut map = self
            .batchers
            .lock()
            .map_err(|_| Error::Internal("batcher lock poisoned".into()))?;
        if let Some(tx) = map.get(&group) {
            if !tx.is_closed() {
                return Ok(tx.clone());
            }
        }
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(batch_loop(
            group,
            raft,
            rx,
            self.clock.clone(),
            self.config.raft.shard_inflight_entries,
        ));
        map.insert(group, tx.clone());
        Ok(tx)
    }

    // -------------------------------------------------------------------- reads

    /// Reads from a shard on its leader.
    pub async fn read(&self, group: u64, req: ReadShardRequest) -> Result<ShardRead> {
        self.route(
            group,
            || self.read_local(group, &req),
            |n| self.read_remote(n, req),
        )
        .await
    }

    async fn read_remote(&self, node: u64, req: ReadShardRequest) -> Attempt<ShardRead> {
        let mut client = match self.internal_client(node) {
            Ok(c) => c,
            Err(e) => return Attempt::Fail(e),
        };
        match tokio::time::timeout(Duration::from_secs(10), client.read_shard(req)).await {
            Err(_) => Attempt::NotLeader(None),
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                Attempt::NotLeader(None)
            }
            Ok(Err(status)) => Attempt::Fail(Error::Unavailable(format!(
                "node {node}: {}",
                status.message()
            ))),
            Ok(Ok(r)) => {
                let r = r.into_inner();
                if r.error_code == NOT_LEADER {
                    return Attempt::NotLeader((r.leader_hint != 0).then_some(r.leader_hint));
                }
                if !r.error_code.is_empty() {
                    return Attempt::Fail(Error::from_kinesis_name(&r.error_code, r.error_message));
                }
                Attempt::Done(crate::internal::shard_read_from_proto(r))
            }
        }
    }

    /// Takes a place for a new tail of `group` on this node, or refuses with
    /// `LimitExceededException` when `[limits] max_tails_per_shard` tails are already served.
    pub fn tail_slot(self: &Arc<Self>, group: u64) -> Result<TailSlot> {
        let cap = self.config.limits.max_tails_per_shard;
        let mut t = self
            .tails
            .lock()
            .map_err(|_| Error::Internal("tail count lock poisoned".into()))?;
        let n = t.entry(group).or_insert(0);
        if cap > 0 && *n >= cap {
            return Err(Error::LimitExceeded(format!(
                "This node already serves {cap} tails of this shard (limits.max_tails_per_shard)."
            )));
        }
        *n += 1;
        Ok(TailSlot {
            node: self.clone(),
            group,
        })
    }

    /// One read of a tail (`TailShard`): as [`Node::read`], except that on the leader the
    /// leadership check is skipped while `lease` holds a confirmation of this node's current
    /// term younger than [`TAIL_RECONFIRM`]. Whatever it returns was applied, hence committed,
    /// and the tail reads on from its own last position, so it never skips or repeats a record;
    /// what it gives up is only the promise that a batch is the newest a read could see (a
    /// leader deposed without knowing it can serve an older end for at most [`TAIL_RECONFIRM`],
    /// until its next check fails).
    pub async fn tail_read(
        &self,
        group: u64,
        req: ReadShardRequest,
        lease: &TailLease,
    ) -> Result<ShardRead> {
        self.route(
            group,
            || self.read_local_with(group, &req, Some(lease)),
            |n| self.read_remote(n, req),
        )
        .await
    }

    /// Executes a read on this node, which must lead the group. Linearizable: it first confirms
    /// leadership with a quorum and waits until everything committed before is applied.
    pub async fn read_local(&self, group: u64, req: &ReadShardRequest) -> Attempt<ShardRead> {
        self.read_local_with(group, req, None).await
    }

    /// [`Node::read_local`], whose leadership check a tail's `lease` can stand in for.
    async fn read_local_with(
        &self,
        group: u64,
        req: &ReadShardRequest,
        lease: Option<&TailLease>,
    ) -> Attempt<ShardRead> {
        let Some(raft) = self.registry.raft(group) else {
            return Attempt::NotLeader(None);
        };
        let term = self.registry.leader_term(group);
        let confirmed = match (lease, term) {
            (Some(l), Some(t)) => l.holds(t),
            _ => false,
        };
        if !confirmed {
            let started = Instant::now();
            if let Err(e) = raft.ensure_linearizable().await {
                use openraft::error::{CheckIsLeaderError, RaftError};
                return match e {
                    RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
                        Attempt::NotLeader(f.leader_node.map(|n| n.node))
                    }
                    other => {
                        tracing::debug!(group, error = %other, "read: leadership check failed");
                        Attempt::NotLeader(None)
                    }
                };
            }
            if let (Some(l), Some(t)) = (lease, term) {
                // Leadership in term `t` was confirmed by a round that began at `started`.
                l.confirm(t, started);
            }
        }
        if group == META_GROUP {
            // The metadata read index: everything committed before this read is applied here.
            return Attempt::Done(ShardRead {
                end: Position {
                    log_index: self.meta.get().applied_index,
                    sub: 0,
                },
                ..Default::default()
            });
        }
        let Some(mut frontier) = self.registry.frontier(group) else {
            return Attempt::NotLeader(None);
        };
        let f = *frontier.borrow_and_update();
        let store = self.registry.store();
        let trim = match store.trim_horizon(group) {
            Ok(t) => t,
            Err(e) => return Attempt::Fail(Error::Internal(e.to_string())),
        };
        let mut out = ShardRead {
            end: f.end,
            trim,
            last_arrival_ms: f.last_arrival_ms,
            ..Default::default()
        };
        match ReadMode::try_from(req.mode).unwrap_or(ReadMode::Records) {
            ReadMode::Records => {
                if !req.tail && !self.read_throttle.admit(group, self.mono_ms()) {
                    let state = self.meta.get();
                    let (stream, shard) = state
                        .shard_of_group(group)
                        .map(|(s, sh)| {
                            metrics::read_throttled(
                                metrics::Enhanced(&s.enhanced_metrics),
                                s.name.as_str(),
                                &sh.id().to_string(),
                            );
                            (s.name.to_string(), sh.id().to_string())
                        })
                        .unwrap_or_default();
                    return Attempt::Fail(Error::ProvisionedThroughputExceeded(format!(
                        "Rate exceeded for Shard - {} in stream {stream} under account {}.",
                        shard, state.account
                    )));
                }
                let from = Position {
                    log_index: req.log_index,
                    sub: req.sub,
                }
                .max(trim);
                let wait = Duration::from_millis(u64::from(req.wait_ms));
                let deadline = tokio::time::Instant::now() + wait;
                let mut f = f;
                loop {
                    let (max_records, max_bytes) = (req.max_records as usize, req.max_bytes);
                    // Recent blocks come from memory; older ones from RocksDB, which may wait for
                    // the disk: off the runtime's threads (a consumer far behind would otherwise
                    // stop every other task of this worker meanwhile).
                    let end = f.end;
                    let read =
                        match store.read_recent_records(group, from, end, max_records, max_bytes) {
                            Some(read) => read,
                            None => {
                                store
                                    .off_runtime(move |s| {
                                        s.read_records(group, from, end, max_records, max_bytes)
                                    })
                                    .await
                            }
                        };
                    match read {
                        Ok(r) => out.records = r,
                        Err(e) => return Attempt::Fail(Error::Internal(e.to_string())),
                    }
                    // Long poll: nothing to return yet, so wait for the shard to apply more
                    // (everything applied is committed, so reading it stays linearizable).
                    if !out.records.is_empty() || wait.is_zero() {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, frontier.changed()).await {
                        Ok(Ok(())) => {
                            f = *frontier.borrow_and_update();
                            out.end = f.end;
                            out.last_arrival_ms = f.last_arrival_ms;
                        }
                        // Deadline passed, or the group was closed here.
                        _ => break,
                    }
                }
                let bytes: u64 = out
                    .records
                    .iter()
                    .map(|(_, r)| (r.data.len() + r.partition_key.len()) as u64)
                    .sum();
                if !req.tail {
                    self.read_throttle.consume(group, bytes, self.mono_ms());
                }
            }
            ReadMode::Positions => {
                if req.at_timestamp_ms != 0 {
                    match store.first_position_at_or_after(group, req.at_timestamp_ms) {
                        Ok(p) => out.found = p.filter(|p| *p < f.end),
                        Err(e) => return Attempt::Fail(Error::Internal(e.to_string())),
                    }
                }
            }
        }
        Attempt::Done(out)
    }
}

/// True if a call failed while connecting, so the request was never sent.
pub(crate) fn connect_failed(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    [
        "tcp connect error",
        "Connection refused",
        "error trying to connect",
        "dns error",
    ]
    .iter()
    .any(|m| text.contains(m))
}

/// Proposes a command and classifies the outcome: `NotLeader` only when the entry certainly was
/// not committed (refused up front, or truncated by a new leader).
async fn write_classified(raft: &Raft, cmd: Command) -> Attempt<(CommandResponse, u64)> {
    use openraft::error::{ClientWriteError, RaftError};
    match raft.client_write(cmd).await {
        Ok(resp) => Attempt::Done((resp.data, resp.log_id.index)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Attempt::NotLeader(f.leader_node.map(|n| n.node))
        }
        Err(e) => Attempt::Fail(Error::Unavailable(format!(
            "raft: {e}; the outcome is unknown"
        ))),
    }
}

/// Groups concurrent appends of one shard into few Raft entries. Entries are proposed in arrival
/// order (so concurrent requests keep their relative order) and up to `[raft]
/// shard_inflight_entries` are replicated at once.
async fn batch_loop(
    group: u64,
    raft: Raft,
    mut rx: mpsc::Receiver<Pending>,
    clock: Arc<SystemClock>,
    max_inflight: usize,
) {
    use openraft::error::ClientWriteError;
    let inflight = Arc::new(Semaphore::new(max_inflight.max(1)));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Wait for an in-flight slot before gathering: requests that arrive meanwhile join
        // this entry instead of queueing behind it.
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let (records, replies) = gather(first, &mut rx, &mut carry);
        metrics::ENTRY_RECORDS.observe(records.len() as f64);
        let proposed = std::time::Instant::now();
        metrics::PROPOSALS_PENDING.inc();
        let cmd = Command::Records {
            arrival_ms: clock.now_ms(),
            records: Arc::new(records),
        };
        let rx_resp = match raft.client_write_ff(cmd).await {
            Ok(rx) => rx,
            Err(e) => {
                metrics::PROPOSALS_PENDING.dec();
                for (_, reply) in replies {
                    let _ = reply.send(Attempt::NotLeader(None));
                }
                tracing::debug!(group, error = %e, "batcher: raft stopped");
                return;
            }
        };
        tokio::spawn(async move {
            let outcome = rx_resp.await;
            metrics::PROPOSALS_PENDING.dec();
            if matches!(outcome, Ok(Ok(_))) {
                metrics::COMMIT_SECONDS.observe(proposed.elapsed().as_secs_f64());
            }
            drop(permit);
            for (offset, reply) in replies {
                let a = match &outcome {
                    Ok(Ok(resp)) => match resp.data {
                        CommandResponse::Records {
                            log_index,
                            arrival_ms,
                            ..
                        } => Attempt::Done(Appended {
                            log_index,
                            arrival_ms,
                            first_sub: offset,
                        }),
                        ref other => Attempt::Fail(Error::Internal(format!(
                            "unexpected apply reply {other:?}"
                        ))),
                    },
                    Ok(Err(ClientWriteError::ForwardToLeader(f))) => {
                        Attempt::NotLeader(f.leader_node.as_ref().map(|n| n.node))
                    }
                    Ok(Err(e)) => Attempt::Fail(Error::Internal(e.to_string())),
                    Err(_) => Attempt::Fail(Error::Unavailable(
                        "the shard leader stepped down; the outcome is unknown".into(),
                    )),
                };
                let _ = reply.send(a);
            }
        });
    }
}
