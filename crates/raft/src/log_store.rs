//! openraft log storage of one group, over the node's shared store.
//!
//! Appends go through the store's group-commit writer; openraft's flush callback is called from
//! the writer thread after the covering `fsync`, never before. Truncations and purges go through
//! the same writer so they stay ordered after appends that are still queued. The vote is written
//! with its own `fsync` before `save_vote` returns.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use runnel_storage::{StateKey, Store};

use crate::codec::{decode, encode};
use crate::{Entry, LogId, ReplicaId, StorageError, TypeConfig, Vote};

/// The log of one group.
#[derive(Clone, Debug)]
pub struct LogStore {
    group: u64,
    store: Store,
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
        LogStore { group, store }
    }

    /// Writes through the group-commit writer (ordered after queued appends) and waits for fsync.
    async fn write_durably(&self, batch: runnel_storage::WriteBatch) -> Result<(), StorageError> {
        self.store
            .log_writer()
            .write(batch)
            .await
            .map_err(write_err)
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
        let rows = self
            .store
            .log_range(self.group, start, end)
            .map_err(read_err)?;
        rows.into_iter()
            .map(|(_, bytes)| decode::<Entry>(&bytes).map_err(read_err))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last = match self.store.log_last(self.group).map_err(read_err)? {
            Some((_, bytes)) => Some(decode::<Entry>(&bytes).map_err(read_err)?.log_id),
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
        let bytes = encode(&committed).map_err(write_err)?;
        self.store
            .put_state(self.group, StateKey::Committed, &bytes, false)
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
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
        let mut rows = Vec::new();
        for entry in entries {
            rows.push((entry.log_id.index, encode(&entry).map_err(write_err)?));
        }
        let batch = self
            .store
            .log_append_batch(self.group, &rows)
            .map_err(write_err)?;
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
        self.write_durably(batch).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = encode(&log_id).map_err(write_err)?;
        let batch = self
            .store
            .log_purge_batch(self.group, log_id.index, &bytes)
            .map_err(write_err)?;
        self.write_durably(batch).await
    }
}
