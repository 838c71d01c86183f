//! openraft log storage of one group, over the node's shared store.
//!
//! Appends go through the store's group-commit writer; openraft's flush callback is called from
//! the writer thread after the covering `fsync`, never before. Truncations and purges go through
//! the same writer so they stay ordered after appends that are still queued. The vote is written
//! with its own `fsync` before `save_vote` returns.
//!
//! Recent entries stay in a small per-group memory cache ([`LogCache`]): replication reads the
//! entries it just appended, and reading them back from RocksDB (and decoding them) cost about a
//! tenth of a busy node's CPU. The cache only ever holds a contiguous run of entries that are in
//! the log: truncation and purge remove the same indexes from it, and an append that does not
//! continue the run restarts it.
//!
//! Applied record entries keep only a stub in the log ([`stub_row`]): the state machine writes
//! it over the entry's row in the same batch as the entry block, so the records reach RocksDB's
//! WAL once (with the append) and its flushed and compacted files once (as the block), instead
//! of twice. Reading a stub rebuilds the entry from the block, with the block's arrival time
//! (the stamp as applied: `max(previous, leader's stamp)`), which applies to the same result
//! on any replica. Invariant: a stub is written only for an applied entry, and an applied
//! entry is never truncated; a purge removes stubs like any row. The stub replaces the row
//! without the WAL: after a crash the log's durable copy (the storage journal, or RocksDB's WAL)
//! brings the full row back together with the applied index from before the apply (atomic
//! flush), so the row and the block never both go missing.
//!
//! The committed log id is an optimisation for restarts (openraft re-applies up to it without a
//! leader), so it is persisted only every [`COMMITTED_PERSIST_EVERY`] entries and without fsync;
//! a stale value is a lower bound, which is all openraft needs.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use runnel_storage::{StateKey, Store};

use crate::codec::{decode, encode};
use crate::{Entry, LogId, ReplicaId, StorageError, TypeConfig, Vote, WireRecord};

/// Most bytes (encoded) of entries one group keeps in its cache.
const CACHE_MAX_BYTES: usize = 512 << 10;
/// Most entries one group keeps in its cache.
const CACHE_MAX_ENTRIES: usize = 256;
/// The committed log id is written when it moved this many entries since the last write.
pub const COMMITTED_PERSIST_EVERY: u64 = 64;

/// Leading bytes of a stub row. No postcard-encoded entry starts with them: the first three
/// are below 0x80, so as an entry they would be one-byte varints (term, node, index), making
/// the fourth byte the payload's variant, and `S` (83) is none.
const STUB_MAGIC: &[u8; 8] = b"RNLSTUB1";

/// The stub that replaces the log row of an applied record entry.
pub(crate) fn stub_row(log_id: &LogId) -> Result<Vec<u8>, crate::error::Error> {
    let mut row = STUB_MAGIC.to_vec();
    row.extend_from_slice(&encode(log_id)?);
    Ok(row)
}

/// A log row as an entry: a stub is rebuilt from the group's entry block (no block: the entry
/// had no records, or retention removed them; it is then rebuilt without records).
fn decode_row(store: &Store, group: u64, row: &[u8]) -> Result<Entry, StorageError> {
    let Some(stub) = row.strip_prefix(STUB_MAGIC.as_slice()) else {
        return decode::<Entry>(row).map_err(read_err);
    };
    let log_id = decode::<LogId>(stub).map_err(read_err)?;
    let (arrival_ms, records) = store
        .entry_block(group, log_id.index)
        .map_err(read_err)?
        .unwrap_or_default();
    Ok(Entry {
        log_id,
        payload: openraft::EntryPayload::Normal(crate::Command::Records {
            arrival_ms,
            records: Arc::new(
                records
                    .into_iter()
                    .map(WireRecord::from_record_in)
                    .collect(),
            ),
        }),
    })
}

/// The log id of a row, without reading a stub's block.
fn row_log_id(row: &[u8]) -> Result<LogId, StorageError> {
    match row.strip_prefix(STUB_MAGIC.as_slice()) {
        Some(stub) => decode::<LogId>(stub).map_err(read_err),
        None => Ok(decode::<Entry>(row).map_err(read_err)?.log_id),
    }
}

/// The most recent entries of one group's log, contiguous, bounded by
/// [`CACHE_MAX_BYTES`] and [`CACHE_MAX_ENTRIES`].
#[derive(Debug, Default)]
struct LogCache {
    /// Entries with their encoded size, in index order without gaps.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl LogCache {
    fn pop_back(&mut self) {
        if let Some((_, size)) = self.entries.pop_back() {
            self.bytes -= size;
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    /// Removes the entries at `index` and after.
    fn truncate_from(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|(e, _)| e.log_id.index >= index)
        {
            self.pop_back();
        }
    }

    /// Removes the entries up to and including `index`.
    fn purge_upto(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(e, _)| e.log_id.index <= index)
        {
            self.pop_front();
        }
    }

    /// Adds an entry just appended to the log.
    fn push(&mut self, entry: &Entry, size: usize) {
        let index = entry.log_id.index;
        self.truncate_from(index);
        let continues = self
            .entries
            .back()
            .is_none_or(|(e, _)| e.log_id.index + 1 == index);
        if !continues || size > CACHE_MAX_BYTES {
            // Keep the run contiguous: start over (from the next entry if this one is too big).
            self.entries.clear();
            self.bytes = 0;
            if size > CACHE_MAX_BYTES {
                return;
            }
        }
        self.entries.push_back((entry.clone(), size));
        self.bytes += size;
        while self.bytes > CACHE_MAX_BYTES || self.entries.len() > CACHE_MAX_ENTRIES {
            self.pop_front();
        }
    }

    /// The entries `start..end` if the cache holds all of them.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.0.log_id.index;
        let last = self.entries.back()?.0.log_id.index;
        if start >= end || start < first || end > last + 1 {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(
            self.entries
                .range(from..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

/// The committed log id as openraft last reported it, and the index last written to disk.
#[derive(Debug, Default)]
struct Committed {
    latest: Option<LogId>,
    persisted: Option<u64>,
}

/// The log of one group.
#[derive(Clone, Debug)]
pub struct LogStore {
    group: u64,
    store: Store,
    /// Shared with this log's readers.
    cache: Arc<Mutex<LogCache>>,
    committed: Arc<Mutex<Committed>>,
}

fn io_err(
    subject: ErrorSubject<ReplicaId>,
    verb: ErrorVerb,
    e: impl std::fmt::Display,
) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

fn read_err(e: impl std::fmt::Display) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::fmt::Display) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl LogStore {
    /// The log of `group` in `store`.
    pub fn new(group: u64, store: Store) -> LogStore {
        LogStore {
            group,
            store,
            cache: Arc::new(Mutex::new(LogCache::default())),
            committed: Arc::new(Mutex::new(Committed::default())),
        }
    }

    /// Writes through the group-commit writer (ordered after queued appends) and waits for fsync.
    async fn write_durably(&self, batch: runnel_storage::WriteBatch) -> Result<(), StorageError> {
        self.store
            .log_writer()
            .write(batch)
            .await
            .map_err(write_err)
    }

    /// Runs `f` on the cache (a poisoned lock only disables the cache).
    fn with_cache<T>(&self, f: impl FnOnce(&mut LogCache) -> T) -> Option<T> {
        self.cache.lock().ok().map(|mut c| f(&mut c))
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        match self
            .store
            .get_state(self.group, StateKey::LastPurged)
            .map_err(read_err)?
        {
            Some(v) => Ok(Some(decode::<LogId>(&v).map_err(read_err)?)),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e.saturating_add(1),
            Bound::Excluded(e) => *e,
            Bound::Unbounded => u64::MAX,
        };
        if let Some(Some(entries)) = self.with_cache(|c| c.get(start, end)) {
            return Ok(entries);
        }
        // Not in the cache (a lagging follower's range, entries too large for it, a restart):
        // the rows, and the entry blocks of applied entries, come from RocksDB and may wait for
        // the disk, so they are read off the runtime's threads (openraft's replication and
        // apply tasks call this on them).
        let (store, group) = (self.store.clone(), self.group);
        tokio::task::spawn_blocking(move || {
            let rows = store.log_range(group, start, end).map_err(read_err)?;
            rows.into_iter()
                .map(|(_, bytes)| decode_row(&store, group, &bytes))
                .collect()
        })
        .await
        .map_err(read_err)?
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last = match self.store.log_last(self.group).map_err(read_err)? {
            Some((_, bytes)) => Some(row_log_id(&bytes)?),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        let mut batch = runnel_storage::WriteBatch::default();
        self.store
            .batch_put_state(&mut batch, self.group, StateKey::Vote, &bytes)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        // Through the writer: durable, and ordered with the group's queued appends.
        self.store
            .log_writer()
            .write(batch)
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        match self
            .store
            .get_state(self.group, StateKey::Vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))?
        {
            Some(v) => {
                Ok(Some(decode(&v).map_err(|e| {
                    io_err(ErrorSubject::Vote, ErrorVerb::Read, e)
                })?))
            }
            None => Ok(None),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let persist = {
            let mut c = self
                .committed
                .lock()
                .map_err(|_| write_err("committed lock poisoned"))?;
            c.latest = committed;
            let index = committed.map(|l| l.index);
            let due = match (c.persisted, index) {
                (Some(p), Some(i)) => i >= p + COMMITTED_PERSIST_EVERY || i < p,
                _ => true,
            };
            if due {
                c.persisted = index;
            }
            due
        };
        if !persist {
            return Ok(());
        }
        let bytes = encode(&committed).map_err(write_err)?;
        self.store
            .put_state(self.group, StateKey::Committed, &bytes, false)
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        if let Ok(c) = self.committed.lock() {
            if c.latest.is_some() {
                return Ok(c.latest);
            }
        }
        match self
            .store
            .get_state(self.group, StateKey::Committed)
            .map_err(read_err)?
        {
            Some(v) => Ok(decode(&v).map_err(read_err)?),
            None => Ok(None),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut rows = Vec::with_capacity(entries.len());
        for entry in &entries {
            rows.push((entry.log_id.index, encode(entry).map_err(write_err)?));
        }
        let batch = self
            .store
            .log_append_batch(self.group, &rows)
            .map_err(write_err)?;
        // Cached only once the write is certain to be submitted.
        self.with_cache(|c| {
            for (entry, (_, bytes)) in entries.iter().zip(&rows) {
                c.push(entry, bytes.len());
            }
        });
        self.store.log_writer().submit(
            batch,
            Box::new(move |result| {
                callback.log_io_completed(result.map_err(|e| std::io::Error::other(e.to_string())));
            }),
        );
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let batch = self
            .store
            .log_truncate_batch(self.group, log_id.index)
            .map_err(write_err)?;
        self.with_cache(|c| c.truncate_from(log_id.index));
        self.write_durably(batch).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = encode(&log_id).map_err(write_err)?;
        let batch = self
            .store
            .log_purge_batch(self.group, log_id.index, &bytes)
            .map_err(write_err)?;
        self.with_cache(|c| c.purge_upto(log_id.index));
        self.write_durably(batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    fn records_entry(index: u64, arrival_ms: u64, keys: &[&str]) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
            payload: EntryPayload::Normal(crate::Command::Records {
                arrival_ms,
                records: Arc::new(
                    keys.iter()
                        .map(|k| WireRecord {
                            partition_key: (*k).into(),
                            data: bytes::Bytes::from(format!("data of {k}")),
                            encryption: bytes::Bytes::new(),
                        })
                        .collect(),
                ),
            }),
        }
    }

    /// A fresh store in a temporary directory with a shard state machine for `group` on it.
    fn shard_replica(group: u64) -> (tempfile::TempDir, Store, crate::state_machine::StateMachine) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), runnel_storage::StoreOptions::default()).unwrap();
        let (sm, _frontier) = crate::state_machine::StateMachine::open(
            group,
            crate::state_machine::SmKind::Shard,
            store.clone(),
        )
        .unwrap();
        (dir, store, sm)
    }

    #[tokio::test]
    async fn applied_record_entries_leave_a_stub_and_read_back_whole() {
        use openraft::storage::RaftStateMachine;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), runnel_storage::StoreOptions::default()).unwrap();
        let group = 9;
        let entries = vec![
            records_entry(1, 100, &["a", "b"]),
            // A stamp behind the previous one: applied (and rebuilt) as 100.
            records_entry(2, 50, &["c"]),
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(2, 1), 3),
                payload: EntryPayload::Blank,
            },
            records_entry(4, 300, &["d", "e", "f"]),
        ];
        let rows: Vec<(u64, Vec<u8>)> = entries
            .iter()
            .map(|e| (e.log_id.index, encode(e).unwrap()))
            .collect();
        store
            .write_sync(store.log_append_batch(group, &rows).unwrap())
            .unwrap();
        let (mut sm, _frontier) = crate::state_machine::StateMachine::open(
            group,
            crate::state_machine::SmKind::Shard,
            store.clone(),
        )
        .unwrap();
        sm.apply(entries.clone()).await.unwrap();

        // Record entries are stubs now; the blank entry keeps its row.
        let stored = store.log_range(group, 1, 5).unwrap();
        let stubs: Vec<bool> = stored
            .iter()
            .map(|(_, r)| r.starts_with(STUB_MAGIC))
            .collect();
        assert_eq!(stubs, vec![true, true, false, true]);
        assert!(
            stored.iter().all(|(_, r)| r.len() < 40),
            "a stub holds no records"
        );

        // A fresh reader (no cache) rebuilds every entry from its block.
        let mut log = LogStore::new(group, store.clone());
        let got = log.try_get_log_entries(1..5).await.unwrap();
        let mut want = entries.clone();
        want[1] = records_entry(2, 100, &["c"]);
        assert_eq!(got, want);
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(4));

        // Applying the rebuilt entries on another replica gives the same records and arrivals.
        let (_other_dir, other, mut sm2) = shard_replica(group);
        sm2.apply(got).await.unwrap();
        let end = runnel_types::Position {
            log_index: 5,
            sub: 0,
        };
        assert_eq!(
            store
                .read_records(group, runnel_types::Position::START, end, 100, u64::MAX)
                .unwrap(),
            other
                .read_records(group, runnel_types::Position::START, end, 100, u64::MAX)
                .unwrap(),
        );
    }

    /// A shard snapshot is built without its records (openraft keeps only the metadata of a
    /// built snapshot), and the snapshot sent later carries them: installed on another replica
    /// it gives the same records.
    #[tokio::test]
    async fn shard_snapshots_are_built_without_records_and_sent_with_them() {
        use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
        let group = 11;
        let (_dir, store, mut sm) = shard_replica(group);
        sm.apply(vec![
            records_entry(1, 100, &["a", "b"]),
            records_entry(2, 200, &["c"]),
        ])
        .await
        .unwrap();
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(2));
        assert!(
            built.snapshot.get_ref().is_empty(),
            "built with its records"
        );

        let sent = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(sent.meta, built.meta);
        assert!(!sent.snapshot.get_ref().is_empty());
        let (_other_dir, other, mut sm2) = shard_replica(group);
        sm2.install_snapshot(&sent.meta, sent.snapshot)
            .await
            .unwrap();
        let end = runnel_types::Position {
            log_index: 3,
            sub: 0,
        };
        let read = |s: &Store| {
            s.read_records(group, runnel_types::Position::START, end, 100, u64::MAX)
                .unwrap()
        };
        assert_eq!(read(&store).len(), 3);
        assert_eq!(read(&store), read(&other));
    }

    #[test]
    fn no_encoded_entry_reads_as_a_stub() {
        for e in [entry(1), records_entry(u32::MAX as u64, 7, &["k"])] {
            assert!(!encode(&e).unwrap().starts_with(STUB_MAGIC));
        }
        // The stub's magic is not an entry: the payload variant byte is out of range.
        assert!(decode::<Entry>(b"RNLSTUB1\x00\x00").is_err());
        let id = LogId::new(CommittedLeaderId::new(1 << 40, 3), 1 << 50);
        assert_eq!(row_log_id(&stub_row(&id).unwrap()).unwrap(), id);
    }

    #[test]
    fn cache_serves_only_ranges_it_holds_whole() {
        let mut c = LogCache::default();
        for i in 5..10 {
            c.push(&entry(i), 10);
        }
        assert_eq!(indexes(c.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(c.get(7, 9)), Some(vec![7, 8]));
        assert_eq!(c.get(4, 6), None, "starts before the cache");
        assert_eq!(c.get(8, 11), None, "ends after the cache");
        assert_eq!(c.get(7, 7), None, "empty ranges go to the store");
    }

    #[test]
    fn cache_follows_truncate_purge_and_gaps() {
        let mut c = LogCache::default();
        for i in 1..=6 {
            c.push(&entry(i), 10);
        }
        c.truncate_from(5);
        assert_eq!(c.get(4, 6), None);
        assert_eq!(indexes(c.get(1, 5)), Some(vec![1, 2, 3, 4]));
        c.purge_upto(2);
        assert_eq!(c.get(2, 4), None);
        assert_eq!(indexes(c.get(3, 5)), Some(vec![3, 4]));
        // Re-appending over an index replaces the tail from there.
        c.push(&entry(4), 10);
        assert_eq!(indexes(c.get(3, 5)), Some(vec![3, 4]));
        assert_eq!(c.bytes, 20);
        // A gap restarts the run.
        c.push(&entry(9), 10);
        assert_eq!(c.get(3, 5), None);
        assert_eq!(indexes(c.get(9, 10)), Some(vec![9]));
        assert_eq!(c.bytes, 10);
    }

    #[test]
    fn cache_stays_within_its_bounds() {
        let mut c = LogCache::default();
        for i in 0..(CACHE_MAX_ENTRIES as u64 + 10) {
            c.push(&entry(i), 1);
        }
        assert_eq!(c.entries.len(), CACHE_MAX_ENTRIES);
        let big = CACHE_MAX_BYTES / 4 + 1;
        for i in 1000..1010 {
            c.push(&entry(i), big);
        }
        assert!(c.bytes <= CACHE_MAX_BYTES);
        assert_eq!(indexes(c.get(1007, 1010)), Some(vec![1007, 1008, 1009]));
        // An entry larger than the whole cache is not kept, and the run starts after it.
        c.push(&entry(1010), CACHE_MAX_BYTES + 1);
        assert_eq!(c.entries.len(), 0);
        c.push(&entry(1011), 1);
        assert_eq!(indexes(c.get(1011, 1012)), Some(vec![1011]));
    }
}
