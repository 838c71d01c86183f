//! openraft state machines: one per group.
//!
//! * Shard groups store each committed entry's records at positions `(log index, 0..)` with one
//!   arrival time per entry, `max(previous arrival, leader's stamp)`, so arrival times never go
//!   back even across leader changes. Records, the time index, the entry's log stub (see
//!   `log_store`: the log row then no longer carries the records) and the applied state go into
//!   one atomic write batch, written without RocksDB's WAL: a crash loses a suffix of applies as
//!   a whole (atomic flush) and openraft applies those entries again from the durable log. A
//!   snapshot flushes the applied data before it is recorded, because openraft may purge the
//!   log up to a snapshot.
//! * The metadata group hands commands to a [`MetaApplier`] and persists the applier's whole state
//!   together with the applied log id after each apply call.
//!
//! After every apply the group's [`Frontier`] watch is updated; readers (GetRecords, LATEST
//! iterators, subscriptions) use it as the exclusive end of what exists.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageIOError,
};
use runnel_storage::{StateKey, Store, WriteBatch};
use runnel_types::Position;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::codec::{decode, encode};
use crate::{
    Command, CommandResponse, Entry, LogId, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig, WireRecord,
};

/// The metadata state machine's logic, provided by the server.
pub trait MetaApplier: Send + Sync + 'static {
    /// Applies one committed command found at `log_index`; returns the reply.
    fn apply(&self, log_index: u64, command: &[u8]) -> Vec<u8>;
    /// The whole state, serialized (persisted after applies and used for snapshots).
    fn save(&self) -> Vec<u8>;
    /// Replaces the whole state from [`MetaApplier::save`] output.
    fn restore(&self, data: &[u8]) -> Result<(), String>;
}

/// What kind of state a group holds.
#[derive(Clone)]
pub enum SmKind {
    /// A shard replica.
    Shard,
    /// The metadata group.
    Meta(Arc<dyn MetaApplier>),
}

/// The exclusive end of a shard's applied records and the newest arrival time.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    /// First position not applied yet.
    pub end: Position,
    /// Arrival time of the newest applied entry with records (0 if none).
    pub last_arrival_ms: u64,
    /// Index of the last applied entry (0 if none).
    pub applied_index: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    last_arrival_ms: u64,
}

/// What is persisted under `StateKey::SnapshotMeta`.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    /// The data for the metadata group; `None` for shards (rebuilt from the records).
    data: Option<Vec<u8>>,
    /// Arrival time of the last entry covered by the snapshot.
    last_arrival_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct SnapEntry {
    log_index: u64,
    arrival_ms: u64,
    records: Vec<WireRecord>,
}

#[derive(Serialize, Deserialize)]
struct ShardSnapshot {
    trim: Position,
    last_arrival_ms: u64,
    entries: Vec<SnapEntry>,
}

/// The state machine of one group.
pub struct StateMachine {
    group: u64,
    kind: SmKind,
    store: Store,
    applied: AppliedState,
    frontier: watch::Sender<Frontier>,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::error(e.to_string()),
    )
    .into()
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        openraft::AnyError::error(e.to_string()),
    )
    .into()
}

impl StateMachine {
    /// Loads the state machine of `group` from `store`.
    pub fn open(
        group: u64,
        kind: SmKind,
        store: Store,
    ) -> crate::Result<(StateMachine, watch::Receiver<Frontier>)> {
        let applied: AppliedState = match store.get_state(group, StateKey::Applied)? {
            Some(v) => decode(&v)?,
            None => AppliedState::default(),
        };
        if let SmKind::Meta(applier) = &kind {
            if let Some(blob) = store.get_state(group, StateKey::MetaState)? {
                applier.restore(&blob).map_err(crate::Error::Codec)?;
            }
        }
        let (tx, rx) = watch::channel(frontier_of(&applied));
        Ok((
            StateMachine {
                group,
                kind,
                store,
                applied,
                frontier: tx,
            },
            rx,
        ))
    }

    fn publish(&self) {
        self.frontier.send_replace(frontier_of(&self.applied));
    }

    fn applied_bytes(&self) -> Result<Vec<u8>, StorageError> {
        encode(&self.applied).map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        let id = match &self.applied.last_applied {
            Some(l) => format!(
                "{}-{}-{}",
                l.leader_id, l.index, self.applied.last_arrival_ms
            ),
            None => "empty".to_string(),
        };
        SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.membership.clone(),
            snapshot_id: id,
        }
    }

    async fn current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(v) = self
            .store
            .get_state(self.group, StateKey::SnapshotMeta)
            .map_err(|e| snap_err(ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        let stored: StoredSnapshot = decode(&v).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let meta = stored.meta.clone();
        // Shard snapshots keep only their metadata: records at or below the snapshot index never
        // change, so the data is read from the records when the snapshot is needed.
        let data = match stored.data {
            Some(d) => d,
            None => shard_snapshot_data(&self.store, self.group, &meta, stored.last_arrival_ms)?,
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

fn frontier_of(a: &AppliedState) -> Frontier {
    let applied_index = a.last_applied.map_or(0, |l| l.index);
    Frontier {
        end: Position {
            log_index: applied_index.saturating_add(1),
            sub: 0,
        },
        last_arrival_ms: a.last_arrival_ms,
        applied_index,
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilderHandle;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let _timer = crate::metrics::APPLY_SECONDS.start_timer();
        let mut replies = Vec::new();
        let mut batch = WriteBatch::default();
        for entry in entries {
            let index = entry.log_id.index;
            self.applied.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => CommandResponse::None,
                EntryPayload::Membership(m) => {
                    self.applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResponse::None
                }
                EntryPayload::Normal(Command::Records {
                    arrival_ms,
                    records,
                }) => match &self.kind {
                    SmKind::Shard => {
                        let arrival = arrival_ms.max(self.applied.last_arrival_ms);
                        let count = u32::try_from(records.len()).unwrap_or(u32::MAX);
                        let recs = records.as_slice();
                        self.store
                            .add_records_to_batch(&mut batch, self.group, index, arrival, recs)
                            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                        // The block now holds the records: the log keeps a stub (log_store.rs).
                        let stub = crate::log_store::stub_row(&entry.log_id)
                            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                        self.store
                            .add_log_row_to_batch(&mut batch, self.group, index, &stub)
                            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                        if !recs.is_empty() {
                            self.applied.last_arrival_ms = arrival;
                        }
                        CommandResponse::Records {
                            log_index: index,
                            arrival_ms: arrival,
                            count,
                        }
                    }
                    SmKind::Meta(_) => {
                        CommandResponse::Rejected("records sent to the metadata group".into())
                    }
                },
                EntryPayload::Normal(Command::Meta(cmd)) => match &self.kind {
                    SmKind::Meta(applier) => CommandResponse::Meta(applier.apply(index, &cmd)),
                    SmKind::Shard => {
                        CommandResponse::Rejected("metadata command sent to a shard group".into())
                    }
                },
            };
            replies.push(reply);
        }
        let applied = self.applied_bytes()?;
        self.store
            .batch_put_state(&mut batch, self.group, StateKey::Applied, &applied)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        if let SmKind::Meta(applier) = &self.kind {
            self.store
                .batch_put_state(&mut batch, self.group, StateKey::MetaState, &applier.save())
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        // A shard's applied data skips the WAL: its entries stay in the durable Raft log until a
        // snapshot has flushed it (see `build_snapshot`), so a crash only means applying them
        // again. The metadata group's small state keeps the WAL.
        let written = match self.kind {
            SmKind::Shard => self.store.write_applied(batch),
            SmKind::Meta(_) => self.store.write_nosync(batch),
        };
        written.map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.publish();
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // A consistent cut taken on the state machine task, between applies. The metadata state is
        // serialized now; a shard's records up to the cut never change, so they are read later.
        SnapshotBuilderHandle {
            group: self.group,
            store: self.store.clone(),
            meta: self.snapshot_meta(),
            meta_data: match &self.kind {
                SmKind::Meta(applier) => Some(applier.save()),
                SmKind::Shard => None,
            },
            last_arrival_ms: self.applied.last_arrival_ms,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut batch = WriteBatch::default();
        let mut applied = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            last_arrival_ms: self.applied.last_arrival_ms,
        };
        match &self.kind {
            SmKind::Meta(applier) => {
                applier
                    .restore(&data)
                    .map_err(|e| snap_err(ErrorVerb::Read, e))?;
                self.store
                    .batch_put_state(&mut batch, self.group, StateKey::MetaState, &data)
                    .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            }
            SmKind::Shard => {
                let snap: ShardSnapshot =
                    decode(&data).map_err(|e| snap_err(ErrorVerb::Read, e))?;
                batch = self
                    .store
                    .clear_records(self.group)
                    .map_err(|e| snap_err(ErrorVerb::Write, e))?;
                for e in snap.entries {
                    self.store
                        .add_records_to_batch(
                            &mut batch,
                            self.group,
                            e.log_index,
                            e.arrival_ms,
                            &e.records,
                        )
                        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
                }
                self.store
                    .batch_put_state(
                        &mut batch,
                        self.group,
                        StateKey::TrimHorizon,
                        &position_bytes(snap.trim),
                    )
                    .map_err(|e| snap_err(ErrorVerb::Write, e))?;
                applied.last_arrival_ms = snap.last_arrival_ms;
            }
        }
        let applied_bytes = encode(&applied).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.store
            .batch_put_state(&mut batch, self.group, StateKey::Applied, &applied_bytes)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: match self.kind {
                SmKind::Meta(_) => Some(data),
                SmKind::Shard => None,
            },
            last_arrival_ms: applied.last_arrival_ms,
        };
        let stored = encode(&stored).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.store
            .batch_put_state(&mut batch, self.group, StateKey::SnapshotMeta, &stored)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        // The batch holds every record of the snapshot and waits for a WAL sync: written off
        // the runtime's threads.
        self.store
            .off_runtime(move |s| s.write_sync(batch))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.applied = applied;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.current_snapshot().await
    }
}

/// Reads a shard's records up to the snapshot index into snapshot data.
fn shard_snapshot_data(
    store: &Store,
    group: u64,
    meta: &SnapshotMeta,
    last_arrival_ms: u64,
) -> Result<Vec<u8>, StorageError> {
    let upto = meta.last_log_id.map_or(0, |l| l.index);
    let trim = store
        .trim_horizon(group)
        .map_err(|e| snap_err(ErrorVerb::Read, e))?;
    let end = Position {
        log_index: upto.saturating_add(1),
        sub: 0,
    };
    let mut entries: Vec<SnapEntry> = Vec::new();
    let mut from = trim;
    loop {
        let batch = store
            .read_records(group, from, end, 10_000, 64 << 20)
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let Some((last, _)) = batch.last() else { break };
        from = last.next();
        for (pos, rec) in batch {
            let wire = WireRecord {
                partition_key: rec.partition_key,
                data: rec.data,
                encryption: rec.encryption,
            };
            match entries.last_mut() {
                Some(e) if e.log_index == pos.log_index => e.records.push(wire),
                _ => entries.push(SnapEntry {
                    log_index: pos.log_index,
                    arrival_ms: rec.arrival_ms,
                    records: vec![wire],
                }),
            }
        }
    }
    encode(&ShardSnapshot {
        trim,
        last_arrival_ms,
        entries,
    })
    .map_err(|e| snap_err(ErrorVerb::Read, e))
}

fn position_bytes(p: Position) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(&p.log_index.to_be_bytes());
    v.extend_from_slice(&p.sub.to_be_bytes());
    v
}

/// A snapshot of a consistent cut of the state machine, persisted when openraft builds it.
pub struct SnapshotBuilderHandle {
    group: u64,
    store: Store,
    meta: SnapshotMeta,
    meta_data: Option<Vec<u8>>,
    last_arrival_ms: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilderHandle {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let stored = StoredSnapshot {
            meta: self.meta.clone(),
            data: self.meta_data.clone(),
            last_arrival_ms: self.last_arrival_ms,
        };
        let bytes = encode(&stored).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        // Shard applies skip the WAL. Once this snapshot exists openraft may purge the log up
        // to it, so what was applied up to the cut must be on disk first. The flush waits for
        // RocksDB's background flush and the metadata write for a WAL sync: both off the
        // runtime's threads, where they held up every group of the node meanwhile. (The
        // metadata goes through the WAL, as `install_snapshot` writes it: a key is written
        // through one log only; docs/design.md, "Durability and group commit".)
        let (group, flush) = (self.group, stored.data.is_none());
        self.store
            .off_runtime(move |s| {
                if flush {
                    s.flush_applied()?;
                }
                s.put_state(group, StateKey::SnapshotMeta, &bytes, true)
            })
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        // openraft keeps only the metadata of a snapshot it had built (the data is dropped), so
        // a shard's is left empty here: reading every retained record of the shard into memory
        // at each snapshot (every `shard_snapshot_logs` entries, on every replica) only to drop
        // it cost a whole pass over the shard and its size in memory. The records are read
        // when a snapshot is sent ([`StateMachine::current_snapshot`]).
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.unwrap_or_default())),
        })
    }
}
