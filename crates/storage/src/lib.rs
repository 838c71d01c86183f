//! The one RocksDB per node.
//!
//! This crate is the only one that links RocksDB. It stores, for every Raft group hosted on the node
//! (the metadata group and one group per shard replica):
//!
//! * the Raft log (`log` column family, key = group ‖ index), written through the [`LogWriter`]
//!   group-commit thread: appends of many groups share one `fsync`, and an append's completion
//!   callback runs only after the `fsync` that covers it (property 3: acknowledge only what is
//!   durable). What is synced is the node's own journal of preallocated segments (module `journal`;
//!   the log rows go into RocksDB without its WAL), or RocksDB's WAL when the journal is off;
//! * small per-group state values (`state`: vote, committed log id, last purged log id, applied state,
//!   snapshot metadata, the metadata state machine blob);
//! * shard records (`entries`, key = group ‖ log index: the records of one Raft entry as one entry
//!   block, see [`record`]) and a time index (`time`, key = group ‖ arrival ms ‖ log index) used
//!   for `AT_TIMESTAMP` and retention trimming. A store written before entry blocks (a `records`
//!   column family, one key per record) is converted when it opens.
//!
//! Invariants kept here:
//! * [`Store::apply_records`] writes the records, their time-index entry and the group's applied state
//!   in one atomic `WriteBatch`, so a crash never leaves records without the applied index that covers
//!   them (or the reverse); shard applies skip the WAL ([`Store::write_applied`]) and the column
//!   families are flushed atomically, so that holds across a crash too (what is lost is re-applied
//!   from the Raft log, which [`Store::flush_applied`] protects before a snapshot lets it go);
//! * retention trimming only ever moves a group's trim horizon forward and uses range deletes, so it
//!   never blocks writers;
//! * keys contain only group ids and numbers, never user data (encryption at rest can wrap values);
//! * reads answered from the recently applied blocks kept in memory ([`recent`]) return exactly
//!   what RocksDB would: a block enters that cache with the bytes written for it, and a group's
//!   cache answers only from where it holds every block applied since.
//!
//! The byte formats of Raft entries and state values belong to the caller (`runnel-raft`); this crate
//! stores them opaquely. Record values are encoded here ([`StoredRecord`]).

mod error;
mod journal;
mod keys;
mod metrics;
pub use metrics::init as init_metrics;
mod recent;
mod record;
mod writer;

pub use error::{Error, Result};
pub use record::{RecordIn, RecordView, StoredRecord};
pub use rocksdb::WriteBatch;
pub use writer::LogWriter;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, WriteOptions, DB,
};
use runnel_types::Position;

use keys::{entry_key, group_prefix, group_upper, log_key, state_key, time_key};

const CF_LOG: &str = "log";
const CF_STATE: &str = "state";
const CF_ENTRIES: &str = "entries";
const CF_TIME: &str = "time";
/// Every column family, in the order the store opens them.
const ALL_CFS: [&str; 4] = [CF_LOG, CF_STATE, CF_ENTRIES, CF_TIME];
/// The column family of stores written before entry blocks: one key (group ‖ log index ‖
/// offset) per record. Converted into `entries` and dropped when such a store opens.
const CF_RECORDS_V1: &str = "records";

/// Entry blocks at least this large are stored in blob files (see `Store::open`).
const BLOB_MIN_BYTES: u64 = 1024;

/// Bytes a WriteBatch spends on one put besides the value: tag, column family id, key and
/// their length varints (keys here are at most 32 bytes). Used to size batches up front.
const PUT_OVERHEAD: usize = 48;

/// Keys of the per-group `state` values.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StateKey {
    /// The last vote (opaque bytes owned by the Raft layer).
    Vote = 1,
    /// The committed log id.
    Committed = 2,
    /// The last purged log id.
    LastPurged = 3,
    /// Applied state of the state machine (applied log id, membership, last arrival time).
    Applied = 4,
    /// Metadata of the current snapshot.
    SnapshotMeta = 5,
    /// The metadata group's whole state machine.
    MetaState = 6,
    /// Trim horizon of a shard: the first position that retention has not removed.
    TrimHorizon = 7,
}

/// Tuning knobs of the store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Size of the RocksDB block cache in bytes.
    pub block_cache_bytes: usize,
    /// When false, log appends are not fsynced. Only for tests of the harness that must catch
    /// exactly this bug; never set it in production.
    pub unsafe_skip_fsync: bool,
    /// When true, the first record of every applied entry whose log index is a multiple of 50
    /// is silently not stored on this replica (a deliberate divergence bug for the harness);
    /// never set it in production.
    pub unsafe_drop_applied_records: bool,
    /// When true, the records of every applied entry whose log index is a multiple of 50 are
    /// stored one position early, so the second record overwrites the first and two
    /// acknowledgements name one sequence number (a deliberate bug for the harness); never set
    /// it in production.
    pub unsafe_reuse_sequence_numbers: bool,
    /// When true, RocksDB keeps write-ahead-log bytes in the process until a sync
    /// (`manual_wal_flush`): a SIGKILL then loses every unsynced write, as a power cut loses
    /// the page cache. For fault-injection tests; synced writes stay durable either way.
    pub simulate_power_loss: bool,
    /// Write flushed and compacted files with O_DIRECT (bypassing the page cache) when the
    /// store's file system supports it; without support the store silently uses buffered I/O.
    pub direct_io: bool,
    /// Bytes of recently applied entry blocks kept in memory to serve tails without a RocksDB
    /// read ([`recent`]); 0 turns that off.
    pub recent_blocks_bytes: usize,
    /// Make Raft log writes durable in the node's own journal (module `journal`) instead of
    /// RocksDB's WAL.
    pub raft_journal: bool,
    /// Size of a journal segment file.
    pub journal_segment_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            block_cache_bytes: 64 << 20,
            unsafe_skip_fsync: false,
            unsafe_drop_applied_records: false,
            unsafe_reuse_sequence_numbers: false,
            simulate_power_loss: false,
            direct_io: true,
            recent_blocks_bytes: 64 << 20,
            raft_journal: true,
            journal_segment_bytes: journal::DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// Engine figures for the metrics ([`Store::engine_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Bytes in SST files (all column families).
    pub sst_bytes: u64,
    /// Bytes in blob files (entry blocks; all column families).
    pub blob_bytes: u64,
    /// Bytes in memtables (all column families).
    pub memtable_bytes: u64,
    /// Bytes compaction still has to rewrite (RocksDB's estimate).
    pub pending_compaction_bytes: u64,
    /// Compactions running now.
    pub running_compactions: u64,
    /// Memtable flushes running now.
    pub running_flushes: u64,
    /// RocksDB stopped writes (too many memtables, L0 files or pending compaction bytes).
    pub write_stopped: bool,
    /// RocksDB's current write rate limit when it delays writes (0 = not delayed).
    pub delayed_write_rate: u64,
    /// Microseconds writers spent stalled, since the store opened.
    pub stall_micros: u64,
    /// Bytes written by compactions, since the store opened.
    pub compaction_write_bytes: u64,
    /// Bytes written by memtable flushes, since the store opened.
    pub flush_write_bytes: u64,
    /// Free bytes (for unprivileged users) on the file system of the data directory.
    pub disk_free_bytes: u64,
    /// Size of that file system.
    pub disk_total_bytes: u64,
}

/// RocksDB option string: SST files split where the first 8 key bytes (the group id) change.
const SST_PARTITIONER_BY_GROUP: &str =
    "sst_partitioner_factory={id=SstPartitionerFixedPrefixFactory;length=8}";

/// Whether files in `dir` can be opened with O_DIRECT (not on tmpfs, for one).
fn direct_io_supported(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join(".direct-io-probe");
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    if !ok {
        tracing::info!(dir = %dir.display(), "O_DIRECT not supported here: flushes and compactions use the page cache");
    }
    ok
}

/// (available, total) bytes of the file system holding `path`; zeros when unknown.
fn disk_space(path: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return (0, 0);
    };
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs(3) only writes into it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return (0, 0);
    }
    // SAFETY: statvfs returned 0, so it initialized the struct.
    let st = unsafe { st.assume_init() };
    // statvfs's fields are u64 on the 64-bit Linux targets Runnel builds for.
    let frsize = st.f_frsize;
    (
        st.f_bavail.saturating_mul(frsize),
        st.f_blocks.saturating_mul(frsize),
    )
}

/// Log indexes at which [`StoreOptions::unsafe_drop_applied_records`] drops a record.
pub const BUG_DROP_EVERY: u64 = 50;

/// The node's store. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<DB>,
    /// The options the DB was opened with (they hold RocksDB's statistics object).
    opts: Options,
    path: std::path::PathBuf,
    writer: LogWriter,
    drop_applied_records: bool,
    reuse_sequence_numbers: bool,
    recent: recent::Recent,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store> {
        std::fs::create_dir_all(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_bytes_per_sync(1 << 20);
        // Flushes and compactions write their files with O_DIRECT where the file system
        // allows it: copying those bytes through the page cache was ~18% of the machine's CPU
        // at saturation on the development VM (docs/design.md, "Storage layout").
        let direct_io = options.direct_io && direct_io_supported(path);
        db_opts.set_use_direct_io_for_flush_and_compaction(direct_io);
        // Shard applies skip the WAL (`write_applied`): memtables of all column families are
        // then flushed together, so a crash leaves records, time index and applied state from
        // one and the same moment.
        db_opts.set_atomic_flush(true);
        if options.simulate_power_loss {
            db_opts.set_manual_wal_flush(true);
        }
        // Tickers for the stall and compaction metrics (counters only: cheap).
        db_opts.enable_statistics();
        db_opts.set_statistics_level(rocksdb::statistics::StatsLevel::ExceptHistogramOrTimers);
        let mut block = rocksdb::BlockBasedOptions::default();
        let cache = rocksdb::Cache::new_lru_cache(options.block_cache_bytes);
        block.set_block_cache(&cache);
        let cf = |name: &str| -> Result<ColumnFamilyDescriptor> {
            let append_only = name == CF_ENTRIES || name == CF_LOG;
            let mut o = if append_only {
                // Compactions cut their output files where the group id (the keys' first 8
                // bytes) changes, so a file below level 0 holds one group's run of log indexes
                // and moves down a level without being rewritten (a group only appends).
                Options::default().get_options_from_string(SST_PARTITIONER_BY_GROUP)?
            } else {
                Options::default()
            };
            o.set_block_based_table_factory(&block);
            // 16 MiB memtables (RocksDB's default is 64): with atomic flush every flush writes
            // all column families at once, and smaller, more frequent flushes keep those bursts
            // from holding up the log's fsyncs on the same disk.
            o.set_write_buffer_size(16 << 20);
            if append_only || name == CF_RECORDS_V1 {
                o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            }
            if append_only {
                // Every flushed file spans all groups' key ranges, so each level-0 compaction
                // rewrites the files of the groups in between on the level it compacts into:
                // wait for 8 files instead of 4 and keep that base level small (64 MiB instead
                // of 256; with RocksDB's dynamic level sizes it is level 5 or 6 here), so less
                // is rewritten and the rest moves down whole.
                o.set_level_zero_file_num_compaction_trigger(8);
                o.set_level_zero_slowdown_writes_trigger(24);
                o.set_level_zero_stop_writes_trigger(32);
                o.set_max_bytes_for_level_base(64 << 20);
            }
            if name == CF_ENTRIES {
                // Entry blocks go to blob files when flushed, and the SST files keep only
                // their keys and a pointer: compactions then rewrite a few bytes per entry
                // instead of the records. With incompressible records the plain layout
                // rewrote each byte again in compactions that stalled writers on the shared
                // disk (saturation 26k records/s, ack p99 34-37 ms, against 30-32k and 18-22 ms
                // with blob files; docs/design.md, "Storage layout"). Blocks below 1 KiB (a
                // lone small record) stay inline. Retention's range deletes leave whole blob
                // files unreferenced, and RocksDB deletes those; garbage collection moves the
                // few live blocks out of the oldest files when compactions reach them.
                o.set_enable_blob_files(true);
                o.set_min_blob_size(BLOB_MIN_BYTES);
                o.set_blob_file_size(64 << 20);
                o.set_blob_compression_type(rocksdb::DBCompressionType::Lz4);
                o.set_enable_blob_gc(true);
                o.set_blob_cache(&cache);
            }
            Ok(ColumnFamilyDescriptor::new(name, o))
        };
        // A store from before entry blocks still has its per-record column family: it must be
        // opened (RocksDB refuses to open a store without all of them) and is converted below.
        let legacy = DB::list_cf(&db_opts, path)
            .map(|names| names.iter().any(|n| n == CF_RECORDS_V1))
            .unwrap_or(false);
        let mut cfs = ALL_CFS
            .iter()
            .map(|name| cf(name))
            .collect::<Result<Vec<_>>>()?;
        if legacy {
            cfs.push(cf(CF_RECORDS_V1)?);
        }
        let mut db = DB::open_cf_descriptors(&db_opts, path, cfs)?;
        if legacy {
            convert_v1_records(&mut db)?;
        }
        // A journal left by an earlier run is replayed even when the journal is now off, so a
        // node can switch either way.
        let journal = if options.raft_journal || path.join(journal::DIR).exists() {
            let (pool, next) = journal::recover(path, &db, options.journal_segment_bytes)?;
            options
                .raft_journal
                .then(|| journal::Journal::new(pool, next))
        } else {
            None
        };
        let db = Arc::new(db);
        let writer = LogWriter::start(db.clone(), options.unsafe_skip_fsync, journal)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                opts: db_opts,
                path: path.to_path_buf(),
                writer,
                drop_applied_records: options.unsafe_drop_applied_records,
                reuse_sequence_numbers: options.unsafe_reuse_sequence_numbers,
                recent: recent::Recent::new(options.recent_blocks_bytes),
            }),
        })
    }

    pub(crate) fn db(&self) -> &DB {
        &self.inner.db
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.inner
            .db
            .cf_handle(name)
            .ok_or_else(|| Error::Corrupt(format!("missing column family {name}")))
    }

    /// Approximate bytes the `groups` occupy on disk together: their logs, entry indexes and
    /// time indexes in SST files as RocksDB estimates them, plus their share of the entry
    /// blocks in blob files. RocksDB's range estimates do not see blob files, so their live
    /// bytes are apportioned by the groups' share of the entries' SST bytes (one small index
    /// row per entry): exact when entries hold alike amounts of data, skewed toward groups
    /// with many small entries otherwise. Memtables are not counted. One call per stream
    /// asks RocksDB once per column family, however many shards the stream has.
    pub fn groups_disk_bytes(&self, groups: &[u64]) -> u64 {
        if groups.is_empty() {
            return 0;
        }
        let bounds: Vec<([u8; 8], Vec<u8>)> = groups
            .iter()
            .map(|g| (keys::group_prefix(*g), keys::group_upper(*g)))
            .collect();
        let ranges: Vec<rocksdb::Range> = bounds
            .iter()
            .map(|(lo, hi)| rocksdb::Range::new(lo, hi))
            .collect();
        let estimate = |cf: &rocksdb::ColumnFamily, ranges: &[rocksdb::Range]| -> u64 {
            self.db()
                .get_approximate_sizes_cf(&cf, ranges)
                .iter()
                .sum::<u64>()
        };
        let mut total = 0u64;
        for name in [CF_LOG, CF_TIME] {
            if let Ok(cf) = self.cf(name) {
                total += estimate(cf, &ranges);
            }
        }
        if let Ok(cf) = self.cf(CF_ENTRIES) {
            let own = estimate(cf, &ranges);
            total += own;
            let prop = |name: &str| {
                self.db()
                    .property_int_value_cf(&cf, name)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            };
            let blobs = prop("rocksdb.live-blob-file-size")
                .saturating_sub(prop("rocksdb.live-blob-file-garbage-size"));
            let all = estimate(cf, &[rocksdb::Range::new(&[0u8; 8], &[0xffu8; 9])]);
            if own > 0 && all > 0 && blobs > 0 {
                let share = u128::from(blobs) * u128::from(own.min(all)) / u128::from(all);
                total += u64::try_from(share).unwrap_or(u64::MAX);
            }
        }
        total
    }

    /// Engine figures for the metrics: RocksDB properties and tickers, and the file system
    /// holding the data directory.
    pub fn engine_stats(&self) -> EngineStats {
        use rocksdb::statistics::Ticker;
        let prop = |name: &str| {
            self.db()
                .property_int_value(name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        // Size properties belong to a column family (asked of the DB they describe only the
        // default one, which holds nothing here): summed over the store's.
        let sum = |name: &str| -> u64 {
            ALL_CFS
                .iter()
                .filter_map(|cf| self.cf(cf).ok())
                .filter_map(|cf| self.db().property_int_value_cf(&cf, name).ok().flatten())
                .fold(0u64, u64::saturating_add)
        };
        let (disk_free_bytes, disk_total_bytes) = disk_space(&self.inner.path);
        EngineStats {
            sst_bytes: sum("rocksdb.total-sst-files-size"),
            blob_bytes: sum("rocksdb.total-blob-file-size"),
            memtable_bytes: sum("rocksdb.cur-size-all-mem-tables"),
            pending_compaction_bytes: sum("rocksdb.estimate-pending-compaction-bytes"),
            running_compactions: prop("rocksdb.num-running-compactions"),
            running_flushes: prop("rocksdb.num-running-flushes"),
            write_stopped: prop("rocksdb.is-write-stopped") != 0,
            delayed_write_rate: prop("rocksdb.actual-delayed-write-rate"),
            stall_micros: self.inner.opts.get_ticker_count(Ticker::StallMicros),
            compaction_write_bytes: self.inner.opts.get_ticker_count(Ticker::CompactWriteBytes),
            flush_write_bytes: self.inner.opts.get_ticker_count(Ticker::FlushWriteBytes),
            disk_free_bytes,
            disk_total_bytes,
        }
    }

    /// The group-commit writer for Raft log appends.
    pub fn log_writer(&self) -> &LogWriter {
        &self.inner.writer
    }

    // ---------------------------------------------------------------- Raft log

    /// Builds the batch for appending `entries` (index, bytes) of `group`; hand it to
    /// [`LogWriter::submit`] to make it durable.
    pub fn log_append_batch(&self, group: u64, entries: &[(u64, Vec<u8>)]) -> Result<WriteBatch> {
        let cf = self.cf(CF_LOG)?;
        let size: usize = entries.iter().map(|(_, b)| b.len() + PUT_OVERHEAD).sum();
        let mut batch = WriteBatch::with_capacity_bytes(size + PUT_OVERHEAD);
        for (index, bytes) in entries {
            batch.put_cf(cf, log_key(group, *index), bytes);
        }
        Ok(batch)
    }

    /// Reads log entries of `group` with `start <= index < end`, in order.
    pub fn log_range(&self, group: u64, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let cf = self.cf(CF_LOG)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(log_key(group, end).to_vec());
        let from = log_key(group, start);
        let iter = self
            .db()
            .iterator_cf_opt(cf, ro, IteratorMode::From(&from, Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            let index = keys::decode_log_key(&k, group)?;
            out.push((index, v.to_vec()));
        }
        Ok(out)
    }

    /// The last log entry of `group`, if any.
    pub fn log_last(&self, group: u64) -> Result<Option<(u64, Vec<u8>)>> {
        let cf = self.cf(CF_LOG)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(log_key(group, 0).to_vec());
        let upper = log_key(group, u64::MAX);
        let mut iter =
            self.db()
                .iterator_cf_opt(cf, ro, IteratorMode::From(&upper, Direction::Reverse));
        match iter.next() {
            Some(item) => {
                let (k, v) = item?;
                if k.len() < 8 || k[..8] != group.to_be_bytes() {
                    return Ok(None);
                }
                let index = keys::decode_log_key(&k, group)?;
                Ok(Some((index, v.to_vec())))
            }
            None => Ok(None),
        }
    }

    /// Builds the batch that removes log entries of `group` with index >= `from` (a conflicting
    /// suffix). Submit it through the [`LogWriter`] so it is ordered with queued appends.
    pub fn log_truncate_batch(&self, group: u64, from: u64) -> Result<WriteBatch> {
        let cf = self.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, &log_key(group, from)[..], &group_upper(group)[..]);
        Ok(batch)
    }

    /// Builds the batch that removes log entries of `group` with index <= `upto` and records
    /// `purged` (opaque bytes of the last purged log id). Submit it through the [`LogWriter`].
    pub fn log_purge_batch(&self, group: u64, upto: u64, purged: &[u8]) -> Result<WriteBatch> {
        let cf = self.cf(CF_LOG)?;
        let state = self.cf(CF_STATE)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf,
            &log_key(group, 0)[..],
            &log_key(group, upto.saturating_add(1))[..],
        );
        batch.put_cf(state, state_key(group, StateKey::LastPurged), purged);
        Ok(batch)
    }

    // ------------------------------------------------------------- state values

    /// Reads a state value.
    pub fn get_state(&self, group: u64, key: StateKey) -> Result<Option<Vec<u8>>> {
        let cf = self.cf(CF_STATE)?;
        Ok(self.db().get_cf(cf, state_key(group, key))?)
    }

    /// Writes a state value; `sync` makes it durable before returning.
    pub fn put_state(&self, group: u64, key: StateKey, value: &[u8], sync: bool) -> Result<()> {
        let cf = self.cf(CF_STATE)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, state_key(group, key), value);
        if sync {
            self.write_sync(batch)
        } else {
            self.write_nosync(batch)
        }
    }

    /// Writes several state values of one group atomically.
    pub fn put_states(&self, group: u64, values: &[(StateKey, &[u8])], sync: bool) -> Result<()> {
        let cf = self.cf(CF_STATE)?;
        let mut batch = WriteBatch::default();
        for (key, value) in values {
            batch.put_cf(cf, state_key(group, *key), value);
        }
        if sync {
            self.write_sync(batch)
        } else {
            self.write_nosync(batch)
        }
    }

    // ------------------------------------------------------------------ records

    /// Applies records of one Raft entry to a shard group: the records (at positions
    /// `(log_index, 0..)`), the time index entry and the applied state, in one atomic batch.
    /// An entry with no records still updates the applied state.
    pub fn apply_records(
        &self,
        group: u64,
        log_index: u64,
        arrival_ms: u64,
        records: &[RecordIn],
        applied: &[u8],
    ) -> Result<()> {
        // Sized up front: growing the batch's buffer copied it repeatedly.
        let bytes = record::block_len(records.iter()) + 3 * PUT_OVERHEAD;
        let mut batch = WriteBatch::with_capacity_bytes(bytes);
        self.add_records_to_batch(&mut batch, group, log_index, arrival_ms, records)?;
        batch.put_cf(
            self.cf(CF_STATE)?,
            state_key(group, StateKey::Applied),
            applied,
        );
        self.write_applied(batch)
    }

    /// Puts `value` as the log row of `(group, index)` into `batch`. The Raft crate uses it to
    /// replace an applied entry's row by a stub in the apply batch, so that flushes and
    /// compactions of the log carry the records no more (the entry block holds them).
    pub fn add_log_row_to_batch(
        &self,
        batch: &mut WriteBatch,
        group: u64,
        index: u64,
        value: &[u8],
    ) -> Result<()> {
        batch.put_cf(self.cf(CF_LOG)?, log_key(group, index), value);
        Ok(())
    }

    /// The records of the entry block at `(group, log_index)` in offset order, with the block's
    /// arrival time; `None` when there is no block (an entry without records, or one that
    /// retention removed).
    pub fn entry_block(&self, group: u64, log_index: u64) -> Result<Option<(u64, Vec<RecordIn>)>> {
        let Some(v) = self
            .db()
            .get_cf(self.cf(CF_ENTRIES)?, entry_key(group, log_index))?
        else {
            return Ok(None);
        };
        let records = record::decode_block(bytes::Bytes::from(v))?;
        let arrival_ms = records.first().map_or(0, |(_, r)| r.arrival_ms);
        let records = records.into_iter().map(|(_, r)| r.into()).collect();
        Ok(Some((arrival_ms, records)))
    }

    /// Adds the records of one entry to `batch` (used by [`Store::apply_records`] and snapshot
    /// installation).
    pub fn add_records_to_batch<R: RecordView>(
        &self,
        batch: &mut WriteBatch,
        group: u64,
        log_index: u64,
        arrival_ms: u64,
        records: &[R],
    ) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let entries_cf = self.cf(CF_ENTRIES)?;
        let time_cf = self.cf(CF_TIME)?;
        let bug = log_index.is_multiple_of(BUG_DROP_EVERY);
        let mut subs: Vec<(u32, &R)> = Vec::with_capacity(records.len());
        for (sub, rec) in records.iter().enumerate() {
            let sub = u32::try_from(sub)
                .map_err(|_| Error::Invalid("too many records in one entry".into()))?;
            if sub == 0 && self.inner.drop_applied_records && bug {
                // The deliberate bug: this replica loses the entry's first record.
                continue;
            }
            let reuse = self.inner.reuse_sequence_numbers && bug;
            // The deliberate bug: record k lands at k - 1 (two records, one number; the later
            // one wins, as a second put of one key would).
            let sub = if reuse { sub.saturating_sub(1) } else { sub };
            if reuse && subs.last().is_some_and(|(s, _)| *s == sub) {
                subs.pop();
            }
            subs.push((sub, rec));
        }
        if !subs.is_empty() {
            let mut value = Vec::new();
            record::encode_block(&mut value, arrival_ms, &subs);
            batch.put_cf(entries_cf, entry_key(group, log_index), &value);
            self.inner
                .recent
                .add(group, log_index, bytes::Bytes::from(value));
        }
        batch.put_cf(time_cf, time_key(group, arrival_ms, log_index), []);
        Ok(())
    }

    /// Writes a prepared batch without fsync (state machine data is rebuilt from the durable log).
    pub fn write_nosync(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        Ok(self.db().write_opt(batch, &wo)?)
    }

    /// Writes a shard's applied records without RocksDB's WAL. What a crash loses of them is
    /// lost together with the applied index that covers it (atomic flush), and the Raft log,
    /// which is durable, still holds those entries, so openraft applies them again on restart.
    /// [`Store::flush_applied`] must run before the log below an applied index is given up.
    pub fn write_applied(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        wo.disable_wal(true);
        Ok(self.db().write_opt(batch, &wo)?)
    }

    /// Runs `f` on this store in tokio's blocking pool, for calls that wait for the disk (syncs,
    /// flushes, reads RocksDB may serve from disk): on an async runtime's thread they would stop
    /// every other task of that thread meanwhile. Needs a tokio runtime.
    pub async fn off_runtime<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Error::Io(format!("blocking store call: {e}")))?
    }

    /// Makes everything written with [`Store::write_applied`] durable: flushes the memtables of
    /// all column families (atomically) and waits for it.
    pub fn flush_applied(&self) -> Result<()> {
        flush_all(self.db())
    }

    /// Writes a prepared batch and makes it durable: written through RocksDB's write queue
    /// without a sync, then the WAL is synced outside that queue. (A write with `sync` set holds
    /// the queue for its fsync, so every other writer of the node, the log writer's memtable
    /// inserts and the applies, would wait for it.) Blocks for an fsync: call it off the async
    /// runtime's threads.
    pub fn write_sync(&self, batch: WriteBatch) -> Result<()> {
        let db = self.db();
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        db.write_opt(batch, &wo)?;
        Ok(db.flush_wal(true)?)
    }

    /// Reads up to `max_records` records of `group` starting at `from` and strictly before
    /// `end` (the applied frontier), stopping once `max_bytes` of data would be exceeded (at least
    /// one record is returned if any exists, as Kinesis does for records below the limit).
    pub fn read_records(
        &self,
        group: u64,
        from: Position,
        end: Position,
        max_records: usize,
        max_bytes: u64,
    ) -> Result<Vec<(Position, StoredRecord)>> {
        if let Some(read) = self.read_recent_records(group, from, end, max_records, max_bytes) {
            return read;
        }
        metrics::recent_read(false);
        let last = last_entry(end);
        let cf = self.cf(CF_ENTRIES)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(entry_key(group, last).to_vec());
        let start = entry_key(group, from.log_index);
        let iter = self
            .db()
            .iterator_cf_opt(cf, ro, IteratorMode::From(&start, Direction::Forward))
            .map(|item| {
                let (k, v) = item?;
                let log_index = keys::decode_entry_key(&k, group)?;
                Ok((log_index, bytes::Bytes::from(v.into_vec())))
            });
        collect_records(iter, from, end, max_records, max_bytes)
    }

    /// [`Store::read_records`] answered from the recently applied blocks in memory only: `None`
    /// when they do not cover the range, which must then be read from RocksDB, a read that may
    /// wait for the disk (so not on an async runtime's threads). Never blocks.
    pub fn read_recent_records(
        &self,
        group: u64,
        from: Position,
        end: Position,
        max_records: usize,
        max_bytes: u64,
    ) -> Option<Result<Vec<(Position, StoredRecord)>>> {
        if from >= end || max_records == 0 {
            return Some(Ok(Vec::new()));
        }
        let hit = self
            .inner
            .recent
            .read(group, from.log_index, last_entry(end))?;
        metrics::recent_read(true);
        Some(collect_records(
            hit.into_iter().map(Ok),
            from,
            end,
            max_records,
            max_bytes,
        ))
    }

    /// The position of the first record whose arrival time is >= `ts_ms`, or `None` if no record
    /// arrived at or after it.
    pub fn first_position_at_or_after(&self, group: u64, ts_ms: u64) -> Result<Option<Position>> {
        let cf = self.cf(CF_TIME)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(group_upper(group).to_vec());
        let start = time_key(group, ts_ms, 0);
        let mut iter =
            self.db()
                .iterator_cf_opt(cf, ro, IteratorMode::From(&start, Direction::Forward));
        match iter.next() {
            Some(item) => {
                let (k, _) = item?;
                let (_, log_index) = keys::decode_time_key(&k, group)?;
                Ok(Some(Position { log_index, sub: 0 }))
            }
            None => Ok(None),
        }
    }

    /// The trim horizon of `group`: the first position retention has not removed.
    pub fn trim_horizon(&self, group: u64) -> Result<Position> {
        match self.get_state(group, StateKey::TrimHorizon)? {
            Some(v) => keys::decode_position(&v),
            None => Ok(Position::START),
        }
    }

    /// Removes records of `group` that arrived before `cutoff_ms`. Returns the new trim horizon
    /// and how many entries (time-index rows) were removed. The horizon only moves forward.
    pub fn trim_before(&self, group: u64, cutoff_ms: u64) -> Result<(Position, u64)> {
        let time_cf = self.cf(CF_TIME)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(time_key(group, cutoff_ms, 0).to_vec());
        let start = group_prefix(group);
        let iter =
            self.db()
                .iterator_cf_opt(time_cf, ro, IteratorMode::From(&start, Direction::Forward));
        let mut last_index = None;
        let mut removed = 0u64;
        for item in iter {
            let (k, _) = item?;
            let (_, log_index) = keys::decode_time_key(&k, group)?;
            last_index = Some(last_index.map_or(log_index, |l: u64| l.max(log_index)));
            removed += 1;
        }
        let old = self.trim_horizon(group)?;
        let Some(last) = last_index else {
            return Ok((old, 0));
        };
        let horizon = Position {
            log_index: last.saturating_add(1),
            sub: 0,
        }
        .max(old);
        let mut batch = WriteBatch::default();
        // The horizon is the start of an entry (offset 0), so whole entry blocks go.
        batch.delete_range_cf(
            self.cf(CF_ENTRIES)?,
            &entry_key(group, 0)[..],
            &entry_key(group, horizon.log_index)[..],
        );
        batch.delete_range_cf(
            time_cf,
            &group_prefix(group)[..],
            &time_key(group, cutoff_ms, 0)[..],
        );
        batch.put_cf(
            self.cf(CF_STATE)?,
            state_key(group, StateKey::TrimHorizon),
            keys::encode_position(horizon),
        );
        self.write_nosync(batch)?;
        self.inner.recent.trim(group, horizon.log_index);
        metrics::RETENTION_TRIMMED.inc_by(removed);
        Ok((horizon, removed))
    }

    /// Removes every record and time-index row of `group` (before installing a snapshot).
    pub fn clear_records(&self, group: u64) -> Result<WriteBatch> {
        self.inner.recent.forget(group);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(CF_ENTRIES)?,
            &group_prefix(group)[..],
            &group_upper(group)[..],
        );
        batch.delete_range_cf(
            self.cf(CF_TIME)?,
            &group_prefix(group)[..],
            &group_upper(group)[..],
        );
        batch.delete_cf(self.cf(CF_STATE)?, state_key(group, StateKey::TrimHorizon));
        Ok(batch)
    }

    /// Puts a state value into a batch.
    pub fn batch_put_state(
        &self,
        batch: &mut WriteBatch,
        group: u64,
        key: StateKey,
        value: &[u8],
    ) -> Result<()> {
        batch.put_cf(self.cf(CF_STATE)?, state_key(group, key), value);
        Ok(())
    }

    /// Removes everything stored for `group` (its replica was removed from this node). The
    /// group must be stopped. Its log rows, vote and last-purged id are written only through
    /// the log writer (the journal), so they are deleted through it first: a replay after a
    /// crash then deletes them again after the group's older batches. Then everything of the
    /// group goes, through the WAL.
    pub fn destroy_group(&self, group: u64) -> Result<()> {
        let mut logged = WriteBatch::default();
        logged.delete_range_cf(
            self.cf(CF_LOG)?,
            &group_prefix(group)[..],
            &group_upper(group)[..],
        );
        for key in [StateKey::Vote, StateKey::LastPurged] {
            logged.delete_cf(self.cf(CF_STATE)?, state_key(group, key));
        }
        self.inner.writer.write_blocking(logged)?;
        let mut batch = WriteBatch::default();
        for name in ALL_CFS {
            batch.delete_range_cf(
                self.cf(name)?,
                &group_prefix(group)[..],
                &group_upper(group)[..],
            );
        }
        self.inner.recent.forget(group);
        self.write_sync(batch)
    }
}

/// Flushes the memtables of all column families (atomically) and waits for it.
pub(crate) fn flush_all(db: &DB) -> Result<()> {
    let cfs = ALL_CFS
        .iter()
        .map(|name| {
            db.cf_handle(name)
                .ok_or_else(|| Error::Corrupt(format!("missing column family {name}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut fo = rocksdb::FlushOptions::default();
    fo.set_wait(true);
    Ok(db.flush_cfs_opt(&cfs, &fo)?)
}

/// The last entry a read ending at `end` (exclusive) must look at: its own entry when records
/// of it lie before it.
fn last_entry(end: Position) -> u64 {
    if end.sub == 0 {
        end.log_index
    } else {
        end.log_index.saturating_add(1)
    }
}

/// The records of entry blocks (`(log index, block)`, increasing index) from `from` and before
/// `end`: at most `max_records`, and no more than `max_bytes` of data once there is one.
fn collect_records(
    blocks: impl Iterator<Item = Result<(u64, bytes::Bytes)>>,
    from: Position,
    end: Position,
    max_records: usize,
    max_bytes: u64,
) -> Result<Vec<(Position, StoredRecord)>> {
    let mut out = Vec::new();
    let mut bytes = 0u64;
    'entries: for item in blocks {
        let (log_index, block) = item?;
        for (sub, rec) in record::decode_block(block)? {
            let pos = Position { log_index, sub };
            if pos < from {
                continue;
            }
            if pos >= end {
                break 'entries;
            }
            let size = rec.data.len() as u64 + rec.partition_key.len() as u64;
            if !out.is_empty() && bytes + size > max_bytes {
                break 'entries;
            }
            bytes += size;
            out.push((pos, rec));
            if out.len() >= max_records {
                break 'entries;
            }
        }
    }
    Ok(out)
}

/// Converts a store from before entry blocks: the records of each entry, one key each in the
/// `records` column family, become one entry block in `entries` (same positions, same arrival
/// time), then the old column family is dropped. Runs while the store opens, before any group
/// starts. Re-running after a crash in the middle writes the same blocks again, so it is safe;
/// the old column family goes only after the new blocks are durable.
fn convert_v1_records(db: &mut DB) -> Result<()> {
    let cf_err = |n: &str| Error::Corrupt(format!("missing column family {n}"));
    let old = db
        .cf_handle(CF_RECORDS_V1)
        .ok_or_else(|| cf_err(CF_RECORDS_V1))?;
    let new = db.cf_handle(CF_ENTRIES).ok_or_else(|| cf_err(CF_ENTRIES))?;
    // The records of the entry being gathered: (group, log index, arrival, (offset, record)).
    type Pending = (u64, u64, u64, Vec<(u32, RecordIn)>);
    fn put(batch: &mut WriteBatch, cf: &rocksdb::ColumnFamily, p: &Pending) {
        let recs: Vec<(u32, &RecordIn)> = p.3.iter().map(|(s, r)| (*s, r)).collect();
        let mut value = Vec::new();
        record::encode_block(&mut value, p.2, &recs);
        batch.put_cf(cf, entry_key(p.0, p.1), value);
    }
    let mut batch = WriteBatch::default();
    let mut pending: Option<Pending> = None;
    let (mut records, mut blocks) = (0u64, 0u64);
    for item in db.iterator_cf(old, IteratorMode::Start) {
        let (k, v) = item?;
        let (group, pos) = keys::decode_v1_record_key(&k)?;
        let rec = record::decode(&v)?;
        let arrival_ms = rec.arrival_ms;
        let input = RecordIn::from(rec);
        records += 1;
        match &mut pending {
            Some(p) if p.0 == group && p.1 == pos.log_index => p.3.push((pos.sub, input)),
            _ => {
                if let Some(p) = pending.take() {
                    put(&mut batch, new, &p);
                    blocks += 1;
                }
                pending = Some((group, pos.log_index, arrival_ms, vec![(pos.sub, input)]));
            }
        }
        if batch.size_in_bytes() >= 16 << 20 {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    if let Some(p) = pending.take() {
        put(&mut batch, new, &p);
        blocks += 1;
    }
    db.write(batch)?;
    let mut fo = rocksdb::FlushOptions::default();
    fo.set_wait(true);
    db.flush_cf_opt(new, &fo)?;
    db.flush_wal(true)?;
    db.drop_cf(CF_RECORDS_V1)?;
    tracing::info!(
        records,
        blocks,
        "converted the store's records to entry blocks"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pk: &str, data: &str) -> RecordIn {
        RecordIn {
            partition_key: pk.into(),
            data: bytes::Bytes::copy_from_slice(data.as_bytes()),
            encryption: bytes::Bytes::new(),
        }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        (dir, store)
    }

    #[test]
    fn the_drop_bug_flag_loses_a_record_only_at_its_log_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            unsafe_drop_applied_records: true,
            ..Default::default()
        };
        let s = Store::open(dir.path(), options).unwrap();
        s.apply_records(1, BUG_DROP_EVERY - 1, 1, &[rec("a", "1")], b"x")
            .unwrap();
        s.apply_records(1, BUG_DROP_EVERY, 2, &[rec("b", "2")], b"y")
            .unwrap();
        let end = Position {
            log_index: BUG_DROP_EVERY + 1,
            sub: 0,
        };
        let got = s
            .read_records(1, Position::START, end, 10, u64::MAX)
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.partition_key, "a");
    }

    #[test]
    fn the_reuse_bug_flag_stores_two_records_at_one_position() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            unsafe_reuse_sequence_numbers: true,
            ..Default::default()
        };
        let s = Store::open(dir.path(), options).unwrap();
        let pair = [rec("a", "1"), rec("b", "2")];
        s.apply_records(1, BUG_DROP_EVERY - 1, 1, &pair, b"x")
            .unwrap();
        s.apply_records(1, BUG_DROP_EVERY, 2, &pair, b"y").unwrap();
        let end = Position {
            log_index: BUG_DROP_EVERY + 1,
            sub: 0,
        };
        let got: Vec<(u64, u32, String)> = s
            .read_records(1, Position::START, end, 10, u64::MAX)
            .unwrap()
            .into_iter()
            .map(|(p, r)| (p.log_index, p.sub, r.partition_key))
            .collect();
        let e = BUG_DROP_EVERY;
        assert_eq!(
            got,
            vec![
                (e - 1, 0, "a".to_string()),
                (e - 1, 1, "b".to_string()),
                (e, 0, "b".to_string())
            ]
        );
    }

    #[test]
    fn power_loss_mode_opens_and_keeps_synced_writes_across_a_clean_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            simulate_power_loss: true,
            ..Default::default()
        };
        let s = Store::open(dir.path(), options.clone()).unwrap();
        s.put_state(3, StateKey::Vote, b"v", true).unwrap();
        drop(s);
        let s = Store::open(dir.path(), options).unwrap();
        assert_eq!(s.get_state(3, StateKey::Vote).unwrap().unwrap(), b"v");
    }

    #[test]
    fn compacted_files_hold_one_group_each_and_lose_no_record() {
        let (dir, s) = open();
        let groups = [3u64, 4, 5];
        let data = "d".repeat(1000);
        // Ten flushes, each holding entries of every group: level-0 files spanning all groups.
        for round in 0..10u64 {
            for g in groups {
                for i in 0..20 {
                    let index = round * 20 + i + 1;
                    let recs: Vec<RecordIn> = (0..3)
                        .map(|k| rec(&format!("{g}-{index}-{k}"), &data))
                        .collect();
                    s.apply_records(g, index, index, &recs, b"a").unwrap();
                }
            }
            s.flush_applied().unwrap();
        }
        let entries = s.cf(CF_ENTRIES).unwrap();
        s.db()
            .compact_range_cf(entries, None::<&[u8]>, None::<&[u8]>);
        let files: Vec<_> = s
            .db()
            .live_files()
            .unwrap()
            .into_iter()
            .filter(|f| f.column_family_name == CF_ENTRIES && f.level > 0)
            .collect();
        assert!(files.len() >= groups.len(), "{files:?}");
        for f in &files {
            let (a, b) = (
                f.start_key.as_deref().unwrap(),
                f.end_key.as_deref().unwrap(),
            );
            assert_eq!(a[..8], b[..8], "a compacted file spans groups: {f:?}");
        }
        let end = Position {
            log_index: 1000,
            sub: 0,
        };
        for g in groups {
            let all = s
                .read_records(g, Position::START, end, 10_000, u64::MAX)
                .unwrap();
            assert_eq!(all.len(), 600);
            for (n, (p, r)) in all.iter().enumerate() {
                let (index, k) = (n as u64 / 3 + 1, n as u32 % 3);
                assert_eq!((p.log_index, p.sub), (index, k));
                assert_eq!(r.partition_key, format!("{g}-{index}-{k}"));
                assert_eq!(r.data.len(), 1000);
            }
        }
        // The options took effect as the store's options file records them.
        let options = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("OPTIONS-"))
            .max_by_key(|e| e.file_name())
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .unwrap();
        let direct = format!(
            "use_direct_io_for_flush_and_compaction={}",
            direct_io_supported(dir.path())
        );
        assert!(options.contains(&direct), "{direct} missing");
        assert!(options.contains("SstPartitionerFixedPrefixFactory"));
    }

    #[test]
    fn records_read_back_in_order_within_bounds() {
        let (_d, s) = open();
        s.apply_records(5, 3, 1000, &[rec("a", "1"), rec("b", "2")], b"applied3")
            .unwrap();
        s.apply_records(5, 4, 1001, &[], b"applied4").unwrap();
        s.apply_records(5, 6, 1002, &[rec("c", "3")], b"applied6")
            .unwrap();
        s.apply_records(6, 1, 1000, &[rec("other", "x")], b"g6")
            .unwrap();
        assert_eq!(
            s.get_state(5, StateKey::Applied).unwrap().unwrap(),
            b"applied6"
        );
        let end = Position {
            log_index: 7,
            sub: 0,
        };
        let all = s
            .read_records(5, Position::START, end, 100, u64::MAX)
            .unwrap();
        let got: Vec<(u64, u32, &str)> = all
            .iter()
            .map(|(p, r)| (p.log_index, p.sub, r.partition_key.as_str()))
            .collect();
        assert_eq!(got, vec![(3, 0, "a"), (3, 1, "b"), (6, 0, "c")]);
        assert_eq!(all[2].1.arrival_ms, 1002);
        // Bounded by the end position, by count and by bytes (at least one record).
        assert_eq!(
            s.read_records(
                5,
                Position::START,
                Position {
                    log_index: 6,
                    sub: 0
                },
                100,
                u64::MAX
            )
            .unwrap()
            .len(),
            2
        );
        assert_eq!(
            s.read_records(
                5,
                Position {
                    log_index: 3,
                    sub: 1
                },
                end,
                1,
                u64::MAX
            )
            .unwrap()[0]
                .0
                .sub,
            1
        );
        assert_eq!(
            s.read_records(5, Position::START, end, 100, 0)
                .unwrap()
                .len(),
            1
        );
    }

    /// Every read of a window of a shard gives the same records from the recent blocks as from
    /// RocksDB alone, and the ones that start where the cache is complete are answered by it.
    #[test]
    fn reads_from_memory_equal_reads_from_disk() {
        let (_d1, cached) = open();
        let d2 = tempfile::tempdir().unwrap();
        let disk = Store::open(
            d2.path(),
            StoreOptions {
                recent_blocks_bytes: 0,
                ..Default::default()
            },
        )
        .unwrap();
        // Entries 1..=12 of group 4, some without records (blank or other entries), one to
        // four records each; group 5 interleaved.
        for i in 1..=12u64 {
            let n = if i % 4 == 0 { 0 } else { (i % 4) as usize + 1 };
            let recs: Vec<RecordIn> = (0..n)
                .map(|j| rec(&format!("k{i}"), &format!("{i}.{j}")))
                .collect();
            for s in [&cached, &disk] {
                s.apply_records(4, i, 100 * i, &recs, b"a").unwrap();
                s.apply_records(5, i, 100 * i, &[rec("g5", "x")], b"a")
                    .unwrap();
            }
        }
        let show = |v: Vec<(Position, StoredRecord)>| -> Vec<(u64, u32, String, u64)> {
            v.into_iter()
                .map(|(p, r)| {
                    let data = String::from_utf8(r.data.to_vec()).unwrap();
                    (p.log_index, p.sub, data, r.arrival_ms)
                })
                .collect()
        };
        let mut answered = 0;
        for from_index in 0..=13u64 {
            for from_sub in 0..3u32 {
                for end_index in from_index..=13 {
                    for (max, max_bytes) in [(100, u64::MAX), (2, u64::MAX), (100, 5)] {
                        let from = Position {
                            log_index: from_index,
                            sub: from_sub,
                        };
                        let end = Position {
                            log_index: end_index,
                            sub: 1,
                        };
                        let want = show(disk.read_records(4, from, end, max, max_bytes).unwrap());
                        let got = show(cached.read_records(4, from, end, max, max_bytes).unwrap());
                        assert_eq!(got, want, "from {from:?} end {end:?} max {max}/{max_bytes}");
                        if cached
                            .inner
                            .recent
                            .read(4, from_index, end_index + 1)
                            .is_some()
                        {
                            answered += 1;
                        }
                    }
                }
            }
        }
        // The cache saw the group from entry 1 on, so every window from 1 on came from it.
        assert!(answered > 300, "{answered}");
        assert!(disk.inner.recent.read(4, 1, 13).is_none());
    }

    fn blob_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "blob"))
            })
            .count()
    }

    /// Entry blocks of 1 KiB and more are flushed to blob files, read back intact (also after
    /// a reopen), and retention trimming frees those files once compaction drops the trimmed
    /// keys.
    #[test]
    fn large_blocks_live_in_blob_files_that_retention_frees() {
        let dir = tempfile::tempdir().unwrap();
        let data = |i: u64| -> String {
            // 4 KiB that LZ4 cannot shrink much: a different pseudo-random text per entry.
            let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            (0..4096)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'!' + (x % 90) as u8)
                })
                .collect()
        };
        {
            let s = Store::open(dir.path(), StoreOptions::default()).unwrap();
            for i in 1..=100u64 {
                s.apply_records(7, i, 1000 * i, &[rec("k", &data(i))], b"a")
                    .unwrap();
            }
            // A small block stays inline.
            s.apply_records(7, 101, 101_000, &[rec("k", "small")], b"a")
                .unwrap();
            s.flush_applied().unwrap();
            assert!(blob_files(dir.path()) > 0);
        }
        let s = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let end = Position {
            log_index: 102,
            sub: 0,
        };
        let all = s
            .read_records(7, Position::START, end, 1000, u64::MAX)
            .unwrap();
        assert_eq!(all.len(), 101);
        for (p, r) in &all[..100] {
            assert_eq!(
                r.data,
                data(p.log_index).as_bytes(),
                "entry {}",
                p.log_index
            );
        }
        assert_eq!(all[100].1.data, "small".as_bytes());
        // The group's disk bytes (the per-stream metric) count the blocks in blob files.
        let on_disk = s.groups_disk_bytes(&[7]);
        assert!(on_disk > 100 * 2048, "{on_disk}");
        assert_eq!(s.groups_disk_bytes(&[8]), 0);
        let engine = s.engine_stats();
        assert!(engine.blob_bytes > 100 * 2048, "{engine:?}");
        assert!(engine.sst_bytes > 0, "{engine:?}");
        let (h, n) = s.trim_before(7, 101_000).unwrap();
        assert_eq!((h.log_index, n), (101, 100));
        s.flush_applied().unwrap();
        let cf = s.cf(CF_ENTRIES).unwrap();
        s.db().compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        assert_eq!(blob_files(dir.path()), 0);
        let left = s
            .read_records(7, Position::START, end, 1000, u64::MAX)
            .unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.data, "small".as_bytes());
    }

    /// Replacing a group's records (a snapshot install) or removing them leaves nothing of the
    /// old blocks to be read from memory.
    #[test]
    fn replaced_or_removed_records_are_not_read_from_memory() {
        let (_d, s) = open();
        for i in 1..=5u64 {
            s.apply_records(3, i, i, &[rec("old", &format!("old{i}"))], b"a")
                .unwrap();
        }
        let end = Position {
            log_index: 8,
            sub: 0,
        };
        let from = Position {
            log_index: 1,
            sub: 0,
        };
        let data = |s: &Store, from| -> Vec<String> {
            s.read_records(3, from, end, 100, u64::MAX)
                .unwrap()
                .into_iter()
                .map(|(_, r)| String::from_utf8(r.data.to_vec()).unwrap())
                .collect()
        };
        assert_eq!(data(&s, from).len(), 5);
        // A snapshot install: clear, then the snapshot's entries 6 and 7 only.
        let mut batch = s.clear_records(3).unwrap();
        for i in 6..=7u64 {
            s.add_records_to_batch(&mut batch, 3, i, i, &[rec("new", &format!("new{i}"))])
                .unwrap();
        }
        s.write_sync(batch).unwrap();
        assert_eq!(data(&s, from), vec!["new6", "new7"]);
        assert_eq!(
            data(
                &s,
                Position {
                    log_index: 6,
                    sub: 0
                }
            ),
            vec!["new6", "new7"]
        );
        s.destroy_group(3).unwrap();
        assert!(data(&s, from).is_empty());
        assert!(s.inner.recent.read(3, 6, 8).is_none());
    }

    #[test]
    fn reads_start_and_end_inside_an_entry() {
        let (_d, s) = open();
        let five: Vec<RecordIn> = (0..5).map(|i| rec("k", &i.to_string())).collect();
        s.apply_records(2, 7, 70, &five, b"a7").unwrap();
        s.apply_records(2, 8, 80, &five, b"a8").unwrap();
        let at = |log_index, sub| Position { log_index, sub };
        let got = |from, end, max| -> Vec<(u64, u32, String)> {
            s.read_records(2, from, end, max, u64::MAX)
                .unwrap()
                .into_iter()
                .map(|(p, r)| {
                    (
                        p.log_index,
                        p.sub,
                        String::from_utf8(r.data.to_vec()).unwrap(),
                    )
                })
                .collect()
        };
        let want = |v: &[(u64, u32)]| -> Vec<(u64, u32, String)> {
            v.iter().map(|&(i, s)| (i, s, s.to_string())).collect()
        };
        assert_eq!(
            got(at(7, 3), at(8, 2), 100),
            want(&[(7, 3), (7, 4), (8, 0), (8, 1)])
        );
        assert_eq!(got(at(7, 4), at(9, 0), 2), want(&[(7, 4), (8, 0)]));
        assert_eq!(got(at(8, 4), at(9, 0), 100), want(&[(8, 4)]));
        assert!(got(at(8, 5), at(9, 0), 100).is_empty());
        assert!(got(at(7, 1), at(7, 1), 100).is_empty());
        assert_eq!(got(at(0, 0), at(7, 1), 100), want(&[(7, 0)]));
    }

    #[test]
    fn a_store_with_one_key_per_record_is_converted_to_entry_blocks() {
        let dir = tempfile::tempdir().unwrap();
        // Write a store as versions before entry blocks did: a `records` column family with one
        // version 1 value per record.
        {
            let mut o = Options::default();
            o.create_if_missing(true);
            o.create_missing_column_families(true);
            let names = [CF_LOG, CF_STATE, CF_RECORDS_V1, CF_TIME];
            let db = DB::open_cf(&o, dir.path(), names).unwrap();
            let cf = db.cf_handle(CF_RECORDS_V1).unwrap();
            for (group, index, n, arrival) in [
                (4u64, 10u64, 3u32, 1000u64),
                (4, 11, 1, 1001),
                (5, 2, 2, 999),
            ] {
                for sub in 0..n {
                    let r = rec(
                        &format!("k{index}.{sub}"),
                        &format!("{group}/{index}/{sub}"),
                    );
                    db.put_cf(
                        cf,
                        keys::v1_record_key(
                            group,
                            Position {
                                log_index: index,
                                sub,
                            },
                        ),
                        record::encode(&r, arrival),
                    )
                    .unwrap();
                }
            }
        }
        let s = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let end = Position {
            log_index: 100,
            sub: 0,
        };
        let read = |g| -> Vec<(u64, u32, u64, String, String)> {
            s.read_records(g, Position::START, end, 100, u64::MAX)
                .unwrap()
                .into_iter()
                .map(|(p, r)| {
                    (
                        p.log_index,
                        p.sub,
                        r.arrival_ms,
                        r.partition_key,
                        String::from_utf8(r.data.to_vec()).unwrap(),
                    )
                })
                .collect()
        };
        let row = |i: u64, sub: u32, a: u64, g: u64| {
            (i, sub, a, format!("k{i}.{sub}"), format!("{g}/{i}/{sub}"))
        };
        assert_eq!(
            read(4),
            vec![
                row(10, 0, 1000, 4),
                row(10, 1, 1000, 4),
                row(10, 2, 1000, 4),
                row(11, 0, 1001, 4)
            ]
        );
        assert_eq!(read(5), vec![row(2, 0, 999, 5), row(2, 1, 999, 5)]);
        drop(s);
        // The old column family is gone, and the store opens again as it is.
        let names = DB::list_cf(&Options::default(), dir.path()).unwrap();
        assert!(!names.iter().any(|n| n == CF_RECORDS_V1), "{names:?}");
        let s = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(
            s.read_records(4, Position::START, end, 100, u64::MAX)
                .unwrap()
                .len(),
            4
        );
    }

    #[test]
    fn time_index_and_retention_trim() {
        let (_d, s) = open();
        for i in 1..=10u64 {
            s.apply_records(9, i, 1000 * i, &[rec("k", &i.to_string())], b"a")
                .unwrap();
        }
        assert_eq!(
            s.first_position_at_or_after(9, 2500).unwrap(),
            Some(Position {
                log_index: 3,
                sub: 0
            })
        );
        assert_eq!(
            s.first_position_at_or_after(9, 3000).unwrap(),
            Some(Position {
                log_index: 3,
                sub: 0
            })
        );
        assert_eq!(s.first_position_at_or_after(9, 10_001).unwrap(), None);
        let (h, n) = s.trim_before(9, 4000).unwrap();
        assert_eq!(
            (h, n),
            (
                Position {
                    log_index: 4,
                    sub: 0
                },
                3
            )
        );
        assert_eq!(s.trim_horizon(9).unwrap(), h);
        let left = s
            .read_records(
                9,
                Position::START,
                Position {
                    log_index: 11,
                    sub: 0,
                },
                100,
                u64::MAX,
            )
            .unwrap();
        assert_eq!(left.first().unwrap().0.log_index, 4);
        assert_eq!(left.len(), 7);
        // The horizon never moves back.
        let (h2, n2) = s.trim_before(9, 10).unwrap();
        assert_eq!((h2, n2), (h, 0));
    }

    #[tokio::test]
    async fn log_append_truncate_purge_through_writer() {
        let (_d, s) = open();
        let batch = s
            .log_append_batch(
                1,
                &[
                    (1, b"e1".to_vec()),
                    (2, b"e2".to_vec()),
                    (3, b"e3".to_vec()),
                ],
            )
            .unwrap();
        s.log_writer().write(batch).await.unwrap();
        assert_eq!(s.log_last(1).unwrap().unwrap().0, 3);
        assert_eq!(s.log_last(2).unwrap(), None);
        s.log_writer()
            .write(s.log_truncate_batch(1, 3).unwrap())
            .await
            .unwrap();
        assert_eq!(s.log_last(1).unwrap().unwrap().0, 2);
        s.log_writer()
            .write(s.log_purge_batch(1, 1, b"p").unwrap())
            .await
            .unwrap();
        let rows = s.log_range(1, 0, 10).unwrap();
        assert_eq!(rows, vec![(2, b"e2".to_vec())]);
        assert_eq!(s.get_state(1, StateKey::LastPurged).unwrap().unwrap(), b"p");
        s.destroy_group(1).unwrap();
        assert_eq!(s.log_last(1).unwrap(), None);
    }
}
