//! The metadata state machine (the controller's desired state): cluster identity, nodes, streams,
//! shards with their hash ranges, lineage fields and replica assignments.
//!
//! Invariants:
//! * every decision is made in [`MetaState::apply`], deterministically from the state and the
//!   command, so every replica of the metadata group computes the same state;
//! * group ids, stream incarnation ids and replica ids come from counters that only grow, so a
//!   re-created stream never reuses a group or a replica id of its predecessor;
//! * replica placement is computed once, when a shard is created (consistent hashing seeds it),
//!   and stored; it is never recomputed from a possibly different node list.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use runnel_raft::MetaApplier;
use runnel_types::{initial_ranges, HashKey, HashRange, Position, ShardId, StreamName};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Physical node id.
    pub id: u64,
    /// gRPC address other nodes use.
    pub addr: String,
}

/// Stream status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamStatus {
    /// Shard groups are being created.
    Creating,
    /// Serving.
    Active,
    /// A change (e.g. resharding) is in progress; data operations work.
    Updating,
    /// Being deleted.
    Deleting,
}

/// A replica of a shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// Physical node id.
    pub node: u64,
    /// Raft node id of this replica incarnation (never reused).
    pub replica_id: u64,
}

/// A shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// Index within the stream (`shardId-<index>`).
    pub index: u64,
    /// Raft group id (unique in the cluster, never reused).
    pub group: u64,
    /// Hash key range.
    pub range: HashRange,
    /// Parent after a split or merge.
    pub parent: Option<u64>,
    /// Second parent after a merge.
    pub adjacent_parent: Option<u64>,
    /// Replicas; the first one initializes the group.
    pub replicas: Vec<Replica>,
    /// Set when the shard is closed (split or merged): the first position it will never hold.
    pub ending: Option<Position>,
    /// True once the group has elected its first leader.
    pub ready: bool,
    /// When the shard was created (ms).
    pub created_ms: u64,
    /// When the shard was closed (ms), if it was.
    pub closed_ms: Option<u64>,
}

impl ShardMeta {
    /// The shard id.
    pub fn id(&self) -> ShardId {
        ShardId(self.index)
    }
}

/// Capacity mode of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamMode {
    /// Shard count managed by the user.
    Provisioned,
    /// Shard count managed by Runnel (starts at 4 shards; the autoscaler is not built yet).
    OnDemand,
}

impl StreamMode {
    /// The Kinesis name.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamMode::Provisioned => "PROVISIONED",
            StreamMode::OnDemand => "ON_DEMAND",
        }
    }
}

/// Maximum number of tags on one stream (as Kinesis).
pub const MAX_TAGS: usize = 50;

/// The shard-level metrics of enhanced monitoring, in Kinesis' order.
pub const SHARD_LEVEL_METRICS: [&str; 7] = [
    "IncomingBytes",
    "IncomingRecords",
    "OutgoingBytes",
    "OutgoingRecords",
    "WriteProvisionedThroughputExceeded",
    "ReadProvisionedThroughputExceeded",
    "IteratorAgeMilliseconds",
];

/// A stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    /// Name.
    pub name: StreamName,
    /// Incarnation id: differs between a stream and a later stream of the same name.
    pub uid: u64,
    /// Status.
    pub status: StreamStatus,
    /// Creation time (ms).
    pub created_ms: u64,
    /// Retention in hours.
    pub retention_hours: u32,
    /// Maximum record size in KiB.
    pub max_record_size_kib: u32,
    /// Shards in index order (open and closed).
    pub shards: Vec<ShardMeta>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Capacity mode.
    pub mode: StreamMode,
    /// Shard-level metrics enabled by enhanced monitoring.
    pub enhanced_metrics: BTreeSet<String>,
    /// Resource policy document (stored; enforced once access control exists).
    pub policy: Option<String>,
}

impl StreamMeta {
    /// The open shard whose hash key range holds `key`: the same answer as
    /// [`runnel_types::route`] over the open shards' ranges sorted by start, since open shards'
    /// ranges do not overlap, found by a scan instead of an allocated and sorted table (this
    /// runs for every record put).
    pub fn route(&self, key: HashKey) -> Option<&ShardMeta> {
        self.shards
            .iter()
            .find(|s| s.ending.is_none() && s.range.contains(key))
    }

    /// The shard with this index.
    pub fn shard(&self, id: ShardId) -> Option<&ShardMeta> {
        self.shards.iter().find(|s| s.index == id.0)
    }
}

/// The whole metadata state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    /// Secret for iterator and page tokens (set once when the cluster is initialized).
    pub secret: Option<[u8; 32]>,
    /// Account id shown in ARNs and messages.
    pub account: String,
    /// Nodes of the cluster.
    pub nodes: BTreeMap<u64, NodeInfo>,
    /// Replication factor of new shards.
    pub replication_factor: usize,
    /// Streams by name.
    pub streams: BTreeMap<String, Arc<StreamMeta>>,
    /// Next group id (0 is the metadata group).
    pub next_group: u64,
    /// Next stream incarnation id.
    pub next_uid: u64,
    /// Next replica id; starts high so it never meets a physical node id.
    pub next_replica: u64,
    /// Log index of the last applied command.
    pub applied_index: u64,
}

/// First replica id handed out (physical node ids, used by the metadata group, stay below it).
pub const FIRST_REPLICA_ID: u64 = 1 << 32;

/// Commands of the metadata group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Sets identity and membership once (ignored when already set).
    InitCluster {
        /// Token secret.
        secret: [u8; 32],
        /// Account id.
        account: String,
        /// Nodes.
        nodes: Vec<NodeInfo>,
        /// Replication factor of new shards.
        replication_factor: usize,
    },
    /// Creates a stream.
    CreateStream {
        /// Name.
        name: StreamName,
        /// Shard count.
        shard_count: u32,
        /// Retention hours.
        retention_hours: u32,
        /// Max record size (KiB).
        max_record_size_kib: u32,
        /// Leader time at proposal.
        now_ms: u64,
        /// Capacity mode.
        mode: StreamMode,
        /// Initial tags.
        tags: BTreeMap<String, String>,
    },
    /// Adds (or overwrites) and removes tags of a stream.
    UpdateTags {
        /// Name.
        name: StreamName,
        /// Tags to set.
        add: BTreeMap<String, String>,
        /// Tag keys to remove.
        remove: Vec<String>,
    },
    /// Enables or disables shard-level metrics.
    SetEnhancedMonitoring {
        /// Name.
        name: StreamName,
        /// Metric names (already expanded from `ALL`).
        metrics: Vec<String>,
        /// Enable (true) or disable.
        enable: bool,
    },
    /// Sets or deletes the resource policy of a stream.
    SetPolicy {
        /// Name.
        name: StreamName,
        /// New policy, or None to delete.
        policy: Option<String>,
    },
    /// Changes the maximum record size.
    SetMaxRecordSize {
        /// Name.
        name: StreamName,
        /// New size in KiB (validated by the proposer).
        kib: u32,
    },
    /// Deletes a stream.
    DeleteStream {
        /// Name.
        name: StreamName,
    },
    /// Sets the retention period.
    SetRetention {
        /// Name.
        name: StreamName,
        /// New retention (validated by the proposer).
        hours: u32,
        /// True for Increase, false for Decrease.
        increase: bool,
    },
    /// A shard group elected its first leader.
    ShardReady {
        /// Stream incarnation.
        uid: u64,
        /// Group id.
        group: u64,
    },
}

/// Reply of a metadata command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaReply {
    /// Done.
    Ok,
    /// Refused: Kinesis error name and message.
    Err(String, String),
}

impl MetaReply {
    fn err(e: runnel_types::Error) -> MetaReply {
        MetaReply::Err(e.wire_name().to_string(), e.message().to_string())
    }

    /// Converts into a result.
    pub fn into_result(self) -> runnel_types::Result<()> {
        match self {
            MetaReply::Ok => Ok(()),
            MetaReply::Err(name, msg) => Err(runnel_types::Error::from_kinesis_name(&name, msg)),
        }
    }
}

impl MetaState {
    /// Applies a command; deterministic.
    pub fn apply(&mut self, log_index: u64, cmd: MetaCommand) -> MetaReply {
        self.applied_index = log_index;
        if self.next_group == 0 {
            self.next_group = 1;
        }
        if self.next_replica < FIRST_REPLICA_ID {
            self.next_replica = FIRST_REPLICA_ID;
        }
        match cmd {
            MetaCommand::InitCluster {
                secret,
                account,
                nodes,
                replication_factor,
            } => {
                if self.secret.is_none() {
                    self.secret = Some(secret);
                    self.account = account;
                    self.nodes = nodes.into_iter().map(|n| (n.id, n)).collect();
                    self.replication_factor = replication_factor.max(1);
                }
                MetaReply::Ok
            }
            MetaCommand::CreateStream {
                name,
                shard_count,
                retention_hours,
                max_record_size_kib,
                now_ms,
                mode,
                tags,
            } => {
                if self.secret.is_none() || self.nodes.is_empty() {
                    // Placement needs the node list: a stream created before the cluster is
                    // initialized would get no replicas and never become ACTIVE.
                    return MetaReply::err(runnel_types::Error::Unavailable(
                        "the cluster is not initialized yet".into(),
                    ));
                }
                if self.streams.contains_key(name.as_str()) {
                    return MetaReply::err(runnel_types::Error::ResourceInUse(format!(
                        "Stream {name} under account {} already exists.",
                        self.account
                    )));
                }
                if shard_count == 0 {
                    return MetaReply::err(runnel_types::Error::InvalidArgument(
                        "ShardCount must be at least 1".into(),
                    ));
                }
                let uid = self.next_uid.max(1);
                self.next_uid = uid + 1;
                let node_ids: Vec<u64> = self.nodes.keys().copied().collect();
                let rf = self.replication_factor.max(1);
                let mut leads = self.preferred_leader_counts();
                let mut shards = Vec::with_capacity(shard_count as usize);
                for (i, range) in initial_ranges(shard_count).into_iter().enumerate() {
                    let group = self.next_group;
                    self.next_group += 1;
                    let key = format!("{uid}/{i}");
                    // Replica ids are handed out in ring order, then the replica that leads
                    // the fewest open shards moves to the front (see `prefer_least_leading`).
                    let mut replicas: Vec<Replica> =
                        runnel_placement::place_replicas(&key, &node_ids, rf)
                            .into_iter()
                            .map(|node| {
                                let replica_id = self.next_replica;
                                self.next_replica += 1;
                                Replica { node, replica_id }
                            })
                            .collect();
                    prefer_least_leading(&mut replicas, &leads);
                    if let Some(first) = replicas.first() {
                        *leads.entry(first.node).or_default() += 1;
                    }
                    shards.push(ShardMeta {
                        index: i as u64,
                        group,
                        range,
                        parent: None,
                        adjacent_parent: None,
                        replicas,
                        ending: None,
                        ready: false,
                        created_ms: now_ms,
                        closed_ms: None,
                    });
                }
                self.streams.insert(
                    name.as_str().to_string(),
                    Arc::new(StreamMeta {
                        name,
                        uid,
                        status: StreamStatus::Creating,
                        created_ms: now_ms,
                        retention_hours,
                        max_record_size_kib,
                        shards,
                        tags,
                        mode,
                        enhanced_metrics: BTreeSet::new(),
                        policy: None,
                    }),
                );
                MetaReply::Ok
            }
            MetaCommand::DeleteStream { name } => match self.streams.remove(name.as_str()) {
                Some(_) => MetaReply::Ok,
                None => MetaReply::err(self.not_found(&name)),
            },
            MetaCommand::SetRetention {
                name,
                hours,
                increase,
            } => {
                let Some(s) = self.streams.get_mut(name.as_str()).map(Arc::make_mut) else {
                    return MetaReply::err(self.not_found(&name));
                };
                if increase && hours < s.retention_hours {
                    return MetaReply::err(runnel_types::Error::InvalidArgument(format!(
                        "Requested retention period ({hours} hours) for stream {name} can not be shorter than existing retention period ({} hours). Use DecreaseRetentionPeriod API.",
                        s.retention_hours
                    )));
                }
                if !increase && hours > s.retention_hours {
                    return MetaReply::err(runnel_types::Error::InvalidArgument(format!(
                        "Requested retention period ({hours} hours) for stream {name} can not be longer than existing retention period ({} hours). Use IncreaseRetentionPeriod API.",
                        s.retention_hours
                    )));
                }
                s.retention_hours = hours;
                MetaReply::Ok
            }
            MetaCommand::UpdateTags { name, add, remove } => {
                let account = self.account.clone();
                let Some(s) = self.streams.get_mut(name.as_str()).map(Arc::make_mut) else {
                    return MetaReply::err(self.not_found(&name));
                };
                let mut tags = s.tags.clone();
                for k in &remove {
                    tags.remove(k);
                }
                tags.extend(add);
                if tags.len() > MAX_TAGS {
                    return MetaReply::err(runnel_types::Error::InvalidArgument(format!(
                        "Failed to update tags of stream {name} under account {account}: a stream cannot have more than {MAX_TAGS} tags."
                    )));
                }
                s.tags = tags;
                MetaReply::Ok
            }
            MetaCommand::SetEnhancedMonitoring {
                name,
                metrics,
                enable,
            } => {
                let Some(s) = self.streams.get_mut(name.as_str()).map(Arc::make_mut) else {
                    return MetaReply::err(self.not_found(&name));
                };
                for m in metrics {
                    if enable {
                        s.enhanced_metrics.insert(m);
                    } else {
                        s.enhanced_metrics.remove(&m);
                    }
                }
                MetaReply::Ok
            }
            MetaCommand::SetPolicy { name, policy } => {
                let Some(s) = self.streams.get_mut(name.as_str()).map(Arc::make_mut) else {
                    return MetaReply::err(self.not_found(&name));
                };
                s.policy = policy;
                MetaReply::Ok
            }
            MetaCommand::SetMaxRecordSize { name, kib } => {
                let Some(s) = self.streams.get_mut(name.as_str()).map(Arc::make_mut) else {
                    return MetaReply::err(self.not_found(&name));
                };
                s.max_record_size_kib = kib;
                MetaReply::Ok
            }
            MetaCommand::ShardReady { uid, group } => {
                if let Some(s) = self
                    .streams
                    .values_mut()
                    .find(|s| s.uid == uid)
                    .map(Arc::make_mut)
                {
                    if let Some(sh) = s.shards.iter_mut().find(|sh| sh.group == group) {
                        sh.ready = true;
                    }
                    if s.status == StreamStatus::Creating && s.shards.iter().all(|sh| sh.ready) {
                        s.status = StreamStatus::Active;
                    }
                }
                MetaReply::Ok
            }
        }
    }

    /// Finds a stream by name.
    pub fn stream(&self, name: &StreamName) -> runnel_types::Result<&StreamMeta> {
        self.stream_arc(name).map(|s| &**s)
    }

    /// Finds a stream by name; the handle is shared with this state (no copy of the stream).
    pub fn stream_arc(&self, name: &StreamName) -> runnel_types::Result<&Arc<StreamMeta>> {
        self.streams
            .get(name.as_str())
            .ok_or_else(|| self.not_found(name))
    }

    /// The Kinesis "not found" error for a stream.
    pub fn not_found(&self, name: &StreamName) -> runnel_types::Error {
        runnel_types::Error::ResourceNotFound(format!(
            "Stream {name} under account {} not found.",
            self.account
        ))
    }

    /// Finds the stream and shard that own `group`.
    pub fn shard_of_group(&self, group: u64) -> Option<(&StreamMeta, &ShardMeta)> {
        self.streams.values().find_map(|s| {
            s.shards
                .iter()
                .find(|sh| sh.group == group)
                .map(|sh| (&**s, sh))
        })
    }

    /// How many open shards each node is the preferred leader (first replica) of.
    fn preferred_leader_counts(&self) -> BTreeMap<u64, usize> {
        let mut leads = BTreeMap::new();
        for shard in self.streams.values().flat_map(|s| &s.shards) {
            if shard.closed_ms.is_some() {
                continue;
            }
            if let Some(first) = shard.replicas.first() {
                *leads.entry(first.node).or_default() += 1;
            }
        }
        leads
    }
}

/// Moves to the front the replica whose node is the preferred leader of the fewest open shards
/// (`leads`), the earliest in ring order among equals; the others keep their order.
///
/// The ring alone makes a node the first replica of a shard by chance: four shards on three
/// nodes put all four first replicas on one node for one stream in ten. The first replica
/// initializes the group and so is its leader until a failover, and a shard's leader does most
/// of its work (client calls, replication, pushing to consumers), so a node that led most
/// shards carried most of the cluster's work. Only the order changes: the set of nodes is the
/// ring's, and each node keeps the replica id it was given in ring order.
fn prefer_least_leading(replicas: &mut [Replica], leads: &BTreeMap<u64, usize>) {
    let count = |r: &Replica| leads.get(&r.node).copied().unwrap_or(0);
    let best = replicas
        .iter()
        .enumerate()
        .min_by_key(|(i, r)| (count(r), *i))
        .map(|(i, _)| i);
    if let Some(i) = best {
        replicas[..=i].rotate_right(1);
    }
}

/// Shared, observable metadata state: the applier of the metadata group writes it, everything
/// else reads snapshots of it and can wait for changes.
#[derive(Clone)]
pub struct MetaHandle {
    state: Arc<RwLock<Arc<MetaState>>>,
    changed: watch::Sender<u64>,
}

impl Default for MetaHandle {
    fn default() -> Self {
        let (tx, _) = watch::channel(0);
        MetaHandle {
            state: Arc::new(RwLock::new(Arc::new(MetaState::default()))),
            changed: tx,
        }
    }
}

impl MetaHandle {
    /// The current state (a cheap snapshot).
    pub fn get(&self) -> Arc<MetaState> {
        match self.state.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A receiver that changes whenever the state does (value: applied index).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn update(&self, f: impl FnOnce(&mut MetaState) -> MetaReply) -> MetaReply {
        let (reply, index) = {
            let mut g = match self.state.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let mut next = (**g).clone();
            let reply = f(&mut next);
            let index = next.applied_index;
            *g = Arc::new(next);
            (reply, index)
        };
        self.changed.send_replace(index);
        reply
    }
}

impl MetaApplier for MetaHandle {
    fn apply(&self, log_index: u64, command: &[u8]) -> Vec<u8> {
        let reply = match runnel_raft::codec::decode::<MetaCommand>(command) {
            Ok(cmd) => self.update(|s| s.apply(log_index, cmd)),
            Err(e) => {
                // Still advance the applied index so every replica stays identical.
                self.update(|s| {
                    s.applied_index = log_index;
                    MetaReply::Err(
                        "InternalFailure".into(),
                        format!("undecodable metadata command: {e}"),
                    )
                })
            }
        };
        runnel_raft::codec::encode(&reply).unwrap_or_default()
    }

    fn save(&self) -> Vec<u8> {
        runnel_raft::codec::encode(&*self.get()).unwrap_or_default()
    }

    fn restore(&self, data: &[u8]) -> Result<(), String> {
        let state: MetaState = runnel_raft::codec::decode(data).map_err(|e| e.to_string())?;
        self.update(|s| {
            *s = state;
            MetaReply::Ok
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(nodes: u64) -> MetaState {
        let mut s = MetaState::default();
        s.apply(
            1,
            MetaCommand::InitCluster {
                secret: [7; 32],
                account: "000000000000".into(),
                nodes: (1..=nodes)
                    .map(|id| NodeInfo {
                        id,
                        addr: format!("127.0.0.1:{}", 4600 + id),
                    })
                    .collect(),
                replication_factor: 3,
            },
        );
        s
    }

    #[test]
    fn route_agrees_with_the_sorted_range_table() {
        let mut s = init(3);
        assert_eq!(create(&mut s, 2, "r", 7), MetaReply::Ok);
        let mut stream = (*s.streams["r"]).clone();
        // Close shard 2 and put two children over its range, listed out of key order, as a
        // split leaves them.
        let parent = stream.shards[2].clone();
        let mid = parent.range.start + (parent.range.end - parent.range.start) / 2;
        stream.shards[2].ending = Some(Position {
            log_index: 9,
            sub: 0,
        });
        for (index, range) in [
            (
                8,
                HashRange {
                    start: mid + 1,
                    end: parent.range.end,
                },
            ),
            (
                7,
                HashRange {
                    start: parent.range.start,
                    end: mid,
                },
            ),
        ] {
            stream.shards.push(ShardMeta {
                index,
                group: 100 + index,
                range,
                parent: Some(parent.index),
                ending: None,
                ..parent.clone()
            });
        }
        // The table the client's producer routes with: open shards sorted by range start.
        let mut table: Vec<(ShardId, HashRange)> = stream
            .shards
            .iter()
            .filter(|s| s.ending.is_none())
            .map(|s| (s.id(), s.range))
            .collect();
        table.sort_by_key(|(_, r)| r.start);
        let mut keys: Vec<u128> = vec![0, u128::MAX, mid, mid + 1];
        for sh in &stream.shards {
            keys.extend([
                sh.range.start,
                sh.range.end,
                sh.range.start.saturating_sub(1),
            ]);
        }
        let mut x: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(0x2545_f491_4f6c_dd1d)
                .wrapping_add(0x1405_7b7e_f767_814f);
            keys.push(x);
        }
        for k in keys {
            let key = HashKey(k);
            assert_eq!(
                stream.route(key).map(ShardMeta::id),
                runnel_types::route(&table, key),
                "key {k:#x}"
            );
        }
        // The closed parent is never chosen.
        assert_ne!(stream.route(HashKey(mid)).map(|sh| sh.index), Some(2));
    }

    fn create(s: &mut MetaState, idx: u64, name: &str, shards: u32) -> MetaReply {
        s.apply(
            idx,
            MetaCommand::CreateStream {
                name: StreamName::parse(name).unwrap(),
                shard_count: shards,
                retention_hours: 24,
                max_record_size_kib: 1024,
                now_ms: 5,
                mode: StreamMode::Provisioned,
                tags: BTreeMap::new(),
            },
        )
    }

    #[test]
    fn create_before_cluster_init_is_refused_and_changes_nothing() {
        let mut s = MetaState::default();
        let r = create(&mut s, 1, "early", 2);
        assert_eq!(
            r.clone().into_result().unwrap_err().wire_name(),
            "ServiceUnavailable",
            "{r:?}"
        );
        assert!(s.streams.is_empty());
        assert_eq!(s.next_group, 1);
    }

    #[test]
    fn tags_monitoring_policy_and_record_size() {
        let mut s = init(3);
        assert_eq!(create(&mut s, 2, "t", 1), MetaReply::Ok);
        let name = StreamName::parse("t").unwrap();
        let tags = |n: usize| (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect();
        let r = s.apply(
            3,
            MetaCommand::UpdateTags {
                name: name.clone(),
                add: tags(50),
                remove: vec![],
            },
        );
        assert_eq!(r, MetaReply::Ok);
        // One more than 50 is refused and changes nothing.
        let r = s.apply(
            4,
            MetaCommand::UpdateTags {
                name: name.clone(),
                add: BTreeMap::from([("x".to_string(), String::new())]),
                remove: vec![],
            },
        );
        assert!(matches!(r, MetaReply::Err(ref n, _) if n == "InvalidArgumentException"));
        assert_eq!(s.streams["t"].tags.len(), 50);
        // Removing and adding in one command is judged on the result.
        let r = s.apply(
            5,
            MetaCommand::UpdateTags {
                name: name.clone(),
                add: BTreeMap::from([("x".to_string(), String::new())]),
                remove: vec!["k0".into()],
            },
        );
        assert_eq!(r, MetaReply::Ok);
        assert!(s.streams["t"].tags.contains_key("x") && !s.streams["t"].tags.contains_key("k0"));
        s.apply(
            6,
            MetaCommand::SetEnhancedMonitoring {
                name: name.clone(),
                metrics: vec!["IncomingBytes".into(), "OutgoingBytes".into()],
                enable: true,
            },
        );
        s.apply(
            7,
            MetaCommand::SetEnhancedMonitoring {
                name: name.clone(),
                metrics: vec!["IncomingBytes".into()],
                enable: false,
            },
        );
        assert_eq!(
            s.streams["t"].enhanced_metrics.iter().collect::<Vec<_>>(),
            vec!["OutgoingBytes"]
        );
        s.apply(
            8,
            MetaCommand::SetPolicy {
                name: name.clone(),
                policy: Some("{}".into()),
            },
        );
        assert_eq!(s.streams["t"].policy.as_deref(), Some("{}"));
        s.apply(
            9,
            MetaCommand::SetMaxRecordSize {
                name: name.clone(),
                kib: 2048,
            },
        );
        assert_eq!(s.streams["t"].max_record_size_kib, 2048);
        let missing = StreamName::parse("nope").unwrap();
        let r = s.apply(
            10,
            MetaCommand::SetPolicy {
                name: missing,
                policy: None,
            },
        );
        assert!(matches!(r, MetaReply::Err(ref n, _) if n == "ResourceNotFoundException"));
    }

    #[test]
    fn create_places_replicas_on_distinct_nodes_and_ids_are_never_reused() {
        let mut s = init(5);
        assert_eq!(create(&mut s, 2, "a", 4), MetaReply::Ok);
        let first: Vec<ShardMeta> = s.streams["a"].shards.clone();
        for sh in &first {
            let mut nodes: Vec<u64> = sh.replicas.iter().map(|r| r.node).collect();
            nodes.sort();
            nodes.dedup();
            assert_eq!(nodes.len(), 3);
        }
        assert!(
            matches!(create(&mut s, 3, "a", 1), MetaReply::Err(ref n, _) if n == "ResourceInUseException")
        );
        assert_eq!(
            s.apply(
                4,
                MetaCommand::DeleteStream {
                    name: StreamName::parse("a").unwrap()
                }
            ),
            MetaReply::Ok
        );
        assert_eq!(create(&mut s, 5, "a", 4), MetaReply::Ok);
        let second = &s.streams["a"];
        assert_ne!(second.uid, 1);
        for (old, new) in first.iter().zip(&second.shards) {
            assert_ne!(old.group, new.group);
            for r in &new.replicas {
                assert!(first
                    .iter()
                    .flat_map(|o| &o.replicas)
                    .all(|o| o.replica_id != r.replica_id));
                assert!(r.replica_id >= FIRST_REPLICA_ID);
            }
        }
    }

    #[test]
    fn preferred_leaders_are_spread_evenly_and_replica_sets_follow_the_ring() {
        let mut s = init(3);
        for k in 0..10u64 {
            assert_eq!(create(&mut s, 2 + k, &format!("s{k}"), 4), MetaReply::Ok);
            // After every stream, no node is first for more than one shard above another.
            let counts = s.preferred_leader_counts();
            let (lo, hi) = (
                counts.values().min().copied().unwrap_or(0),
                counts.values().max().copied().unwrap_or(0),
            );
            assert_eq!(counts.len(), 3, "{counts:?}");
            assert!(hi - lo <= 1, "after stream {k}: {counts:?}");
        }
        for st in s.streams.values() {
            for sh in &st.shards {
                // The set of nodes is the ring's, and replica ids were handed out in ring order.
                let key = format!("{}/{}", st.uid, sh.index);
                let ring = runnel_placement::place_replicas(&key, &[1, 2, 3], 3);
                let mut by_id = sh.replicas.clone();
                by_id.sort_by_key(|r| r.replica_id);
                let nodes: Vec<u64> = by_id.iter().map(|r| r.node).collect();
                assert_eq!(nodes, ring, "shard {key}");
            }
        }
        // Deleted streams' shards no longer count.
        for k in 0..10u64 {
            s.apply(
                20 + k,
                MetaCommand::DeleteStream {
                    name: StreamName::parse(&format!("s{k}")).unwrap(),
                },
            );
        }
        assert!(s.preferred_leader_counts().is_empty());
        assert_eq!(create(&mut s, 40, "again", 3), MetaReply::Ok);
        assert_eq!(
            s.preferred_leader_counts()
                .values()
                .copied()
                .collect::<Vec<_>>(),
            [1, 1, 1]
        );
    }

    #[test]
    fn prefer_least_leading_moves_only_the_chosen_replica() {
        let r = |node| Replica {
            node,
            replica_id: 100 + node,
        };
        let mut v = vec![r(3), r(1), r(2)];
        let leads = BTreeMap::from([(3, 2), (1, 2), (2, 1)]);
        prefer_least_leading(&mut v, &leads);
        assert_eq!(v, [r(2), r(3), r(1)]);
        // Ties go to the earliest in ring order: nothing moves.
        let mut v = vec![r(3), r(1), r(2)];
        prefer_least_leading(&mut v, &BTreeMap::new());
        assert_eq!(v, [r(3), r(1), r(2)]);
        prefer_least_leading(&mut [], &leads);
    }

    #[test]
    fn stream_becomes_active_when_every_shard_is_ready() {
        let mut s = init(3);
        create(&mut s, 2, "b", 2);
        let uid = s.streams["b"].uid;
        let groups: Vec<u64> = s.streams["b"].shards.iter().map(|x| x.group).collect();
        s.apply(
            3,
            MetaCommand::ShardReady {
                uid,
                group: groups[0],
            },
        );
        assert_eq!(s.streams["b"].status, StreamStatus::Creating);
        s.apply(
            4,
            MetaCommand::ShardReady {
                uid,
                group: groups[1],
            },
        );
        assert_eq!(s.streams["b"].status, StreamStatus::Active);
    }

    #[test]
    fn retention_direction_is_checked() {
        let mut s = init(1);
        create(&mut s, 2, "c", 1);
        let name = StreamName::parse("c").unwrap();
        let r = s.apply(
            3,
            MetaCommand::SetRetention {
                name: name.clone(),
                hours: 12,
                increase: true,
            },
        );
        assert!(matches!(r, MetaReply::Err(ref n, _) if n == "InvalidArgumentException"));
        assert_eq!(
            s.apply(
                4,
                MetaCommand::SetRetention {
                    name,
                    hours: 48,
                    increase: true
                }
            ),
            MetaReply::Ok
        );
        assert_eq!(s.streams["c"].retention_hours, 48);
    }

    #[test]
    fn applier_round_trips_state() {
        let h = MetaHandle::default();
        let cmd = runnel_raft::codec::encode(&MetaCommand::InitCluster {
            secret: [1; 32],
            account: "000000000000".into(),
            nodes: vec![NodeInfo {
                id: 1,
                addr: "x".into(),
            }],
            replication_factor: 1,
        })
        .unwrap();
        h.apply(1, &cmd);
        let saved = h.save();
        let other = MetaHandle::default();
        other.restore(&saved).unwrap();
        assert_eq!(*other.get(), *h.get());
        assert!(other.restore(&[1, 2, 3]).is_err());
    }
}
