//! The Raft log journal: what makes log writes durable, in preallocated segment files.
//!
//! Every batch the group-commit writer takes (appends, truncations, purges and votes of any
//! group) goes into RocksDB's memtables without RocksDB's WAL, and its bytes
//! (`WriteBatch::data`) are appended to this journal; one `fdatasync` of the journal covers a
//! whole group commit. Segment files have a fixed size and are written from the start again
//! when recycled, so the `fdatasync` writes data only: appending to a growing file (RocksDB's
//! WAL) also writes the inode, which on the development VM doubled the time and CPU of every
//! sync with three nodes syncing at once (BENCHMARKS.md, thirteenth round).
//!
//! Format: a segment starts with a header block (magic, generation, live/free, CRC); records
//! follow as `len u32 | crc32 u32 | generation u64 | payload`, the CRC covering generation and
//! payload. Generations grow by one per segment life and are never reused (the next one is above
//! every header on disk, and a segment's header is synced before any record of its life is
//! written), so a record left over from a segment's earlier life never passes as current. A
//! segment that is closed ends with a zero record header where one fits, so what its earlier
//! life left after the last record is never read. Replay stops at the first record that is
//! missing, torn or stale, and does not go on into later segments: a segment is synced whole,
//! with its end mark, before the next one is written, so a valid record can only follow an
//! invalid one through corruption, and skipping over it would leave a hole in a log.
//!
//! Invariants:
//! * a batch's bytes are in the journal, synced, before its callback runs (the writer's
//!   contract is unchanged);
//! * after a write or sync error the journal takes no more writes until the node restarts
//!   (fail-stop): a retried `fdatasync` could report pages it dropped as durable;
//! * a segment is released (marked free, then reused) only after a RocksDB flush that began
//!   after its last batch was written to the memtables, so what it held is in SST files; and
//!   segments are released in generation order, so a replay never applies a write whose later
//!   delete was in a segment already gone;
//! * at open, the live segments are replayed in generation order into RocksDB (writes are
//!   idempotent: puts of log rows and range deletes), flushed, and released, before any group
//!   starts. Replaying a log row over the stub an apply wrote puts back the full entry, which
//!   reads the same;
//! * only batches of the writer go through the journal: a key must not be written both here and
//!   through RocksDB's WAL, since their order across a crash is lost. The writer's keys are a
//!   group's log rows, vote and last-purged id; `Store::destroy_group` deletes those through the
//!   writer (so a replay deletes them again after the group's older batches) before it deletes
//!   the whole group through the WAL.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use rocksdb::{WriteBatch, WriteOptions, DB};

use crate::error::{Error, Result};
use crate::metrics;

/// Directory of the segment files, inside the store's directory.
pub(crate) const DIR: &str = "raft-journal";
/// Default size of a segment file.
pub(crate) const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Bytes before the first record of a segment (the header block).
const HEADER_BYTES: u64 = 4096;
/// Bytes of a record before its payload.
const RECORD_HEADER: usize = 16;
const MAGIC: &[u8; 8] = b"RNLJRNL1";
/// While syncs are skipped (the harness's durability bug), records are written out only once
/// this many bytes are pending, so a SIGKILL loses acknowledged appends as a power cut would.
const UNSYNCED_WRITE_BYTES: usize = 1 << 20;

fn io_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Io(format!("journal {what} {}: {e}", path.display()))
}

/// The header block's leading bytes: magic, generation, live flag, CRC of the 17 bytes before.
fn header_bytes(generation: u64, live: bool) -> [u8; 21] {
    let mut h = [0u8; 21];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&generation.to_le_bytes());
    h[16] = u8::from(live);
    let crc = crc32fast::hash(&h[..17]);
    h[17..21].copy_from_slice(&crc.to_le_bytes());
    h
}

/// `(generation, live)` of a header, or `None` if it is not a valid header.
fn parse_header(h: &[u8]) -> Option<(u64, bool)> {
    if h.len() < 21 || &h[..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(h[17..21].try_into().ok()?);
    if crc32fast::hash(&h[..17]) != crc {
        return None;
    }
    let generation = u64::from_le_bytes(h[8..16].try_into().ok()?);
    Some((generation, h[16] == 1))
}

fn record_crc(generation: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn encode_record(out: &mut Vec<u8>, generation: u64, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&record_crc(generation, payload).to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The payloads of the valid records of a segment's bytes (header block included), in order,
/// and whether they ran to a clean end (a zero length, or the end of the file) rather than to
/// a torn or stale record.
fn records(bytes: &[u8], generation: u64) -> (Vec<&[u8]>, bool) {
    let mut out = Vec::new();
    let mut at = HEADER_BYTES as usize;
    loop {
        let Some(head) = bytes.get(at..at + RECORD_HEADER) else {
            return (out, true);
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len == 0 {
            // Preallocated space is zeros; a record has at least a batch header.
            return (out, true);
        }
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let gen = u64::from_le_bytes([
            head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
        ]);
        let Some(payload) = bytes.get(at + RECORD_HEADER..at + RECORD_HEADER + len) else {
            return (out, false);
        };
        if gen != generation || record_crc(gen, payload) != crc {
            return (out, false);
        }
        out.push(payload);
        at += RECORD_HEADER + len;
    }
}

/// Writes `len` bytes of zeros from offset 0 and syncs: a segment whose later writes change
/// neither its size nor its block map. Paced (a sync every 4 MiB, then a short pause), so the
/// burst does not hold up the log syncs of this node and its neighbours on a shared disk.
fn zero_fill(file: &File, len: u64) -> io::Result<()> {
    const CHUNK: u64 = 4 << 20;
    let zeros = vec![0u8; CHUNK as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK) as usize;
        file.write_all_at(&zeros[..n], at)?;
        file.sync_data()?;
        at += n as u64;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    file.sync_all()
}

/// Segment files that are not being written: free ones (to reuse) and closed ones (full,
/// waiting for a RocksDB flush before they may be freed).
struct Files {
    free: Vec<PathBuf>,
    closed: VecDeque<(u64, PathBuf)>,
    next_slot: u64,
    /// The writer asked for a spare (its segment filled past a quarter and none is free).
    want_spare: bool,
    stopped: bool,
}

/// The segment files of one store, shared by the writer and the checkpoint thread.
pub(crate) struct Pool {
    dir: PathBuf,
    segment_bytes: u64,
    files: Mutex<Files>,
    wake: Condvar,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Files> {
        // A panic while holding the lock leaves plain lists behind: keep using them.
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot_path(&self, slot: u64) -> PathBuf {
        self.dir.join(format!("{slot:06}.seg"))
    }

    /// A file to start a segment in: a free one, or a new one preallocated to `len` bytes.
    fn take(&self, len: u64) -> Result<(File, PathBuf)> {
        let (reused, path) = {
            let mut files = self.lock();
            match files.free.pop() {
                Some(path) => (true, path),
                None => {
                    let slot = files.next_slot;
                    files.next_slot += 1;
                    (false, self.slot_path(slot))
                }
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err("open", &path, e))?;
        let size = file.metadata().map_err(|e| io_err("stat", &path, e))?.len();
        if size < len {
            // A new file (or one too small for an oversized batch): reserve the blocks now.
            // Writes into them still update the block map at the first syncs; the checkpoint
            // thread zero-fills spares ahead of time, so this is the exception.
            // SAFETY: `fallocate` only reads its integer arguments; the descriptor is open for
            // the lifetime of `file`.
            let r = unsafe { libc::fallocate(fd(&file), 0, 0, len as libc::off_t) };
            if r != 0 {
                file.set_len(len).map_err(|e| io_err("extend", &path, e))?;
            }
            if reused {
                tracing::debug!(path = %path.display(), len, "journal segment grown");
            }
        }
        if !reused {
            // The new file's directory entry must survive a crash with the records synced in it.
            sync_dir(&self.dir)?;
        }
        Ok((file, path))
    }

    /// The writer finished `path` (synced): it may be freed after the next flush.
    fn close(&self, generation: u64, path: PathBuf) {
        self.lock().closed.push_back((generation, path));
        self.wake.notify_all();
    }

    fn ask_spare(&self) {
        let mut files = self.lock();
        if files.free.is_empty() && !files.want_spare {
            files.want_spare = true;
            self.wake.notify_all();
        }
    }

    /// Flushes RocksDB's memtables and frees every segment closed before the flush began.
    fn checkpoint(&self, db: &DB) -> Result<()> {
        let upto = match self.lock().closed.back() {
            Some((generation, _)) => *generation,
            None => return Ok(()),
        };
        crate::flush_all(db)?;
        loop {
            // The oldest closed segment stays first in the list until it is marked free on
            // disk: if that fails, no later one is freed before it (freeing out of order could
            // let a replay apply a write whose later delete is gone).
            let (generation, path) = match self.lock().closed.front() {
                Some((generation, path)) if *generation <= upto => (*generation, path.clone()),
                _ => break,
            };
            // Marked free on disk before it can be reused: a crash from here on does not
            // replay it (its writes are in SST files).
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_err("open", &path, e))?;
            file.write_all_at(&header_bytes(generation, false), 0)
                .and_then(|()| file.sync_data())
                .map_err(|e| io_err("free", &path, e))?;
            let mut files = self.lock();
            files.closed.pop_front();
            files.free.push(path);
        }
        metrics::JOURNAL_CHECKPOINTS.inc();
        Ok(())
    }

    /// Creates a zero-filled free segment.
    fn make_spare(&self) -> Result<()> {
        let path = {
            let mut files = self.lock();
            let slot = files.next_slot;
            files.next_slot += 1;
            self.slot_path(slot)
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_err("create", &path, e))?;
        zero_fill(&file, self.segment_bytes).map_err(|e| io_err("zero-fill", &path, e))?;
        // Generation 0 is below every real one: a free header that names no life.
        file.write_all_at(&header_bytes(0, false), 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_err("free", &path, e))?;
        sync_dir(&self.dir)?;
        self.lock().free.push(path);
        Ok(())
    }

    pub(crate) fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_all();
    }
}

fn fd(file: &File) -> libc::c_int {
    use std::os::unix::io::AsRawFd;
    file.as_raw_fd()
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync", dir, e))
}

/// The checkpoint thread: frees closed segments after a flush, and keeps a zero-filled spare
/// ready once the writer asks for one.
fn run_checkpoints(pool: Arc<Pool>, db: Weak<DB>) {
    loop {
        let (closed, spare) = {
            let mut files = pool.lock();
            while !files.stopped && files.closed.is_empty() && !files.want_spare {
                files = pool.wake.wait(files).unwrap_or_else(|p| p.into_inner());
            }
            if files.stopped {
                return;
            }
            let spare = files.want_spare;
            files.want_spare = false;
            (!files.closed.is_empty(), spare && files.free.is_empty())
        };
        if closed {
            let Some(db) = db.upgrade() else {
                return;
            };
            if let Err(e) = pool.checkpoint(&db) {
                tracing::error!(error = %e, "journal checkpoint failed; segments are kept");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        if spare {
            if let Err(e) = pool.make_spare() {
                tracing::warn!(error = %e, "cannot prepare a journal segment");
            }
        }
    }
}

/// Replays the live segments in `store_dir` into `db`, flushes, and frees them; returns the
/// pool (all segments free) and the next generation. Runs while the store opens.
pub(crate) fn recover(store_dir: &Path, db: &DB, segment_bytes: u64) -> Result<(Arc<Pool>, u64)> {
    let dir = store_dir.join(DIR);
    std::fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
    let mut segments = Vec::new();
    let mut next_slot = 0u64;
    let mut max_generation = 0u64;
    for entry in std::fs::read_dir(&dir).map_err(|e| io_err("list", &dir, e))? {
        let path = entry.map_err(|e| io_err("list", &dir, e))?.path();
        let Some(slot) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        next_slot = next_slot.max(slot + 1);
        let mut head = vec![0u8; HEADER_BYTES as usize + RECORD_HEADER];
        let read = File::open(&path).and_then(|mut f| f.read_exact(&mut head));
        let header = parse_header(&head);
        match header {
            Some((generation, _)) => max_generation = max_generation.max(generation),
            // A damaged header: the first record carries the generation of the file's latest
            // life; counting it keeps new generations above every record left in the file.
            None if read.is_ok() => {
                let at = HEADER_BYTES as usize + 8;
                let mut first = [0u8; 8];
                first.copy_from_slice(&head[at..at + 8]);
                max_generation = max_generation.max(u64::from_le_bytes(first));
            }
            None => {}
        }
        segments.push((header, path));
    }
    let mut live: Vec<(u64, &PathBuf)> = segments
        .iter()
        .filter_map(|(h, p)| match h {
            Some((generation, true)) => Some((*generation, p)),
            _ => None,
        })
        .collect();
    live.sort();
    let mut wo = WriteOptions::default();
    wo.disable_wal(true);
    let mut replayed = 0usize;
    let mut ended = false;
    for (generation, path) in &live {
        if ended {
            tracing::warn!(path = %path.display(), "journal segment after a torn record not replayed");
            continue;
        }
        let bytes = std::fs::read(path).map_err(|e| io_err("read", path, e))?;
        let (payloads, clean) = records(&bytes, *generation);
        for payload in payloads {
            db.write_opt(WriteBatch::from_data(payload), &wo)?;
            replayed += 1;
        }
        ended = !clean;
    }
    if replayed > 0 {
        crate::flush_all(db)?;
    }
    // Everything replayed is in SST files now: every segment is free.
    for (generation, path) in &live {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io_err("open", path, e))?;
        file.write_all_at(&header_bytes(*generation, false), 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_err("free", path, e))?;
    }
    if !live.is_empty() {
        tracing::info!(
            segments = live.len(),
            batches = replayed,
            "replayed the Raft log journal"
        );
    }
    let free = segments.into_iter().map(|(_, p)| p).collect();
    let pool = Arc::new(Pool {
        dir,
        segment_bytes,
        files: Mutex::new(Files {
            free,
            closed: VecDeque::new(),
            next_slot,
            want_spare: false,
            stopped: false,
        }),
        wake: Condvar::new(),
    });
    let next = max_generation
        .checked_add(1)
        .ok_or_else(|| Error::Corrupt("journal generations exhausted".into()))?;
    Ok((pool, next))
}

/// Starts the checkpoint thread of `pool`.
pub(crate) fn start_checkpoints(pool: Arc<Pool>, db: Weak<DB>) -> Result<()> {
    std::thread::Builder::new()
        .name("runnel-journal".into())
        .spawn(move || run_checkpoints(pool, db))
        .map(|_| ())
        .map_err(|e| Error::Io(format!("cannot start journal thread: {e}")))
}

/// The segment being written.
struct Current {
    file: File,
    path: PathBuf,
    generation: u64,
    /// File size.
    len: u64,
    /// Offset of the next write.
    at: u64,
    asked_spare: bool,
}

/// The writer's side: appends records and syncs them. Owned by the group-commit thread.
pub(crate) struct Journal {
    pool: Arc<Pool>,
    current: Option<Current>,
    pending: Vec<u8>,
    next_generation: u64,
    /// The first write or sync error: the journal is then done (see [`Journal::sync`]).
    failed: Option<Error>,
}

impl Journal {
    pub(crate) fn new(pool: Arc<Pool>, next_generation: u64) -> Journal {
        Journal {
            pool,
            current: None,
            pending: Vec::with_capacity(1 << 20),
            next_generation,
            failed: None,
        }
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Queues one batch's bytes; they reach the file with the next [`Journal::sync`].
    pub(crate) fn append(&mut self, payload: &[u8]) -> Result<()> {
        self.healthy()?;
        let result = self.append_unchecked(payload);
        self.note(result)
    }

    /// Writes what is pending and, with `fsync`, makes it durable.
    ///
    /// After any error the journal refuses every later append and sync until the node restarts
    /// (fail-stop). A failed `fdatasync` may have dropped the pages it could not write, and a
    /// second one then reports success for them; and a file left between writes (a header
    /// written, its sync failed) could stop a replay before later segments. Restarting replays
    /// what is durable.
    pub(crate) fn sync(&mut self, fsync: bool) -> Result<()> {
        self.healthy()?;
        let result = self.sync_unchecked(fsync);
        self.note(result)
    }

    fn healthy(&self) -> Result<()> {
        match &self.failed {
            Some(e) => Err(Error::Io(format!(
                "the Raft log journal failed earlier and takes no more writes until the node restarts: {e}"
            ))),
            None => Ok(()),
        }
    }

    fn note(&mut self, result: Result<()>) -> Result<()> {
        if let Err(e) = &result {
            tracing::error!(
                error = %e,
                "Raft log journal failed: no more log writes on this node until it restarts"
            );
            self.failed = Some(e.clone());
        }
        result
    }

    fn append_unchecked(&mut self, payload: &[u8]) -> Result<()> {
        let need = (RECORD_HEADER + payload.len()) as u64;
        let fits = self
            .current
            .as_ref()
            .is_some_and(|c| c.at + self.pending.len() as u64 + need <= c.len);
        if !fits {
            self.rotate(need)?;
        }
        let generation = self.current.as_ref().map_or(0, |c| c.generation);
        encode_record(&mut self.pending, generation, payload);
        Ok(())
    }

    fn sync_unchecked(&mut self, fsync: bool) -> Result<()> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        if !fsync && self.pending.len() < UNSYNCED_WRITE_BYTES {
            return Ok(());
        }
        if !self.pending.is_empty() {
            cur.file
                .write_all_at(&self.pending, cur.at)
                .map_err(|e| io_err("write", &cur.path, e))?;
            cur.at += self.pending.len() as u64;
            self.pending.clear();
        }
        if fsync {
            cur.file
                .sync_data()
                .map_err(|e| io_err("sync", &cur.path, e))?;
        }
        if !cur.asked_spare && cur.at > cur.len / 4 {
            cur.asked_spare = true;
            self.pool.ask_spare();
        }
        Ok(())
    }

    fn finish_current(&mut self) -> Result<()> {
        // A reused segment still holds its earlier life's bytes after the last record; replay
        // reads those as a torn record and would stop there, skipping the later segments. So a
        // segment ends with an explicit zero header (a clean end) whenever one fits, written
        // with its last records and made durable by the same sync, before the next segment is
        // written. If that write or sync fails the journal takes no more writes (`sync`), so
        // no record ever follows a mark.
        if let Some(cur) = &self.current {
            if cur.at + (self.pending.len() + RECORD_HEADER) as u64 <= cur.len {
                self.pending.extend_from_slice(&[0u8; RECORD_HEADER]);
            }
        }
        self.sync_unchecked(true)?;
        if let Some(cur) = self.current.take() {
            self.pool.close(cur.generation, cur.path);
        }
        Ok(())
    }

    /// Finishes the current segment and starts the next, with room for `need` record bytes.
    fn rotate(&mut self, need: u64) -> Result<()> {
        self.finish_current()?;
        let len = self.pool.segment_bytes.max(HEADER_BYTES + need);
        let (file, path) = self.pool.take(len)?;
        let len = file.metadata().map_err(|e| io_err("stat", &path, e))?.len();
        let generation = self.next_generation;
        self.next_generation += 1;
        // The header is durable before any record of this life is written: otherwise a power
        // cut could keep records of `generation` on disk without the header that names it, the
        // next open would hand `generation` out again, and those records could later replay
        // as current. One sync per segment.
        file.write_all_at(&header_bytes(generation, true), 0)
            .map_err(|e| io_err("write", &path, e))?;
        file.sync_data().map_err(|e| io_err("sync", &path, e))?;
        self.current = Some(Current {
            file,
            path,
            generation,
            len,
            at: HEADER_BYTES,
            asked_spare: false,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(generation: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_BYTES as usize];
        bytes[..21].copy_from_slice(&header_bytes(generation, true));
        for p in payloads {
            encode_record(&mut bytes, generation, p);
        }
        bytes
    }

    #[test]
    fn headers_round_trip_and_reject_damage() {
        assert_eq!(parse_header(&header_bytes(7, true)), Some((7, true)));
        assert_eq!(parse_header(&header_bytes(7, false)), Some((7, false)));
        let mut h = header_bytes(7, true);
        h[9] ^= 1;
        assert_eq!(parse_header(&h), None);
        assert_eq!(parse_header(&[0u8; 21]), None);
    }

    #[test]
    fn records_read_back_until_zeros_or_damage() {
        let mut bytes = segment(3, &[b"one", b"two", b"three"]);
        bytes.extend_from_slice(&[0u8; 64]);
        assert_eq!(
            records(&bytes, 3),
            (vec![&b"one"[..], b"two", b"three"], true)
        );
        // Cut inside the last record: the first two, and the end is not clean.
        let torn = &bytes[..bytes.len() - 64 - 2];
        assert_eq!(records(torn, 3), (vec![&b"one"[..], b"two"], false));
        // A flipped payload bit ends the segment at that record.
        let mut flipped = bytes.clone();
        let second = HEADER_BYTES as usize + RECORD_HEADER + 3 + RECORD_HEADER;
        flipped[second] ^= 0x20;
        assert_eq!(records(&flipped, 3), (vec![&b"one"[..]], false));
    }

    #[test]
    fn records_of_an_earlier_life_are_not_current() {
        // Generation 3 wrote three records; the file was reused for generation 9, which wrote
        // one shorter record over the start. The old records after it must not be read.
        let old = segment(3, &[b"aaaaaaaa", b"bbbbbbbb", b"cccccccc"]);
        let mut reused = old.clone();
        let new = segment(9, &[b"zz"]);
        reused[..new.len()].copy_from_slice(&new);
        let (got, clean) = records(&reused, 9);
        assert_eq!(got, vec![&b"zz"[..]]);
        assert!(!clean, "the stale record after it is not a clean end");
    }

    #[test]
    fn new_generations_stay_above_a_file_with_a_damaged_header() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(DIR)).unwrap();
        let mut bytes = segment(9, &[b"old life"]);
        bytes[..21].fill(0);
        std::fs::write(dir.path().join(DIR).join("000000.seg"), &bytes).unwrap();
        let db = DB::open_default(dir.path().join("db")).unwrap();
        let (_, next) = recover(dir.path(), &db, 1 << 20).unwrap();
        assert!(
            next > 9,
            "next generation {next} would let the old record pass as current"
        );
    }

    /// A database with the store's column families (what `flush_all` flushes).
    fn cf_db(path: &Path) -> DB {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        DB::open_cf(&opts, path, crate::ALL_CFS).unwrap()
    }

    fn put_batch(key: &str, value_len: usize) -> Vec<u8> {
        let mut b = WriteBatch::default();
        b.put(key, vec![0xAB; value_len]);
        b.data().to_vec()
    }

    #[test]
    fn a_reused_segment_closed_early_does_not_hide_the_next_one() {
        // Segments of 4 KiB of records. A first life fills two with 300-byte batches; a
        // checkpoint frees them. A second life of 700-byte batches reuses them: the batch that
        // does not fit closes a reused segment with the first life's bytes after its last
        // record, and goes to the next segment. After a crash (nothing flushed), a replay must
        // bring back every batch written, including those of the segment after.
        let dir = tempfile::tempdir().unwrap();
        let seg = HEADER_BYTES + 4096;
        let db = cf_db(&dir.path().join("db"));
        let (pool, next) = recover(dir.path(), &db, seg).unwrap();
        let mut journal = Journal::new(pool.clone(), next);
        let mut first = 0;
        while pool.lock().closed.len() < 2 {
            journal
                .append(&put_batch(&format!("first-{first}"), 300))
                .unwrap();
            journal.sync(true).unwrap();
            first += 1;
        }
        pool.checkpoint(&db).unwrap();
        assert_eq!(pool.lock().free.len(), 2);
        let mut second = 0;
        // Into the next free (reused) segment, through it, and into the one after.
        while !pool.lock().free.is_empty() || pool.lock().closed.len() < 2 {
            journal
                .append(&put_batch(&format!("second-{second}"), 700))
                .unwrap();
            journal.sync(true).unwrap();
            second += 1;
        }
        journal.append(&put_batch("last", 700)).unwrap();
        journal.sync(true).unwrap();
        drop(journal);
        drop(pool);
        drop(db);

        let replayed = cf_db(&dir.path().join("replayed"));
        recover(dir.path(), &replayed, seg).unwrap();
        for i in 0..second {
            let key = format!("second-{i}");
            assert!(replayed.get(&key).unwrap().is_some(), "{key} lost");
        }
        assert!(
            replayed.get("last").unwrap().is_some(),
            "the last batch was lost"
        );
    }

    #[test]
    fn after_an_error_the_journal_takes_no_more_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = cf_db(&dir.path().join("db"));
        let (pool, next) = recover(dir.path(), &db, HEADER_BYTES + 4096).unwrap();
        let mut journal = Journal::new(pool, next);
        journal.append(&put_batch("before", 10)).unwrap();
        journal.sync(true).unwrap();
        // As if an fdatasync had failed: a later one must not report the batches as durable.
        let failed = journal.note(Err(Error::Io("injected sync failure".into())));
        assert!(failed.is_err());
        assert!(journal.sync(true).is_err());
        assert!(journal.append(&put_batch("after", 10)).is_err());
        assert!(journal.sync(false).is_err());
    }

    fn store_with(dir: &Path, segment_bytes: u64) -> crate::Store {
        crate::Store::open(
            dir,
            crate::StoreOptions {
                journal_segment_bytes: segment_bytes,
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn append(store: &crate::Store, group: u64, index: u64, bytes: &[u8]) {
        let batch = store
            .log_append_batch(group, &[(index, bytes.to_vec())])
            .unwrap();
        store.log_writer().write_blocking(batch).unwrap();
    }

    fn segment_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(DIR)).unwrap().count()
    }

    #[test]
    fn small_segments_rotate_are_freed_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), 64 << 10);
        let row = vec![7u8; 1000];
        // ~2.5 MB through 64 KiB segments: dozens of rotations.
        for i in 1..=2_500u64 {
            append(&store, 1, i, &row);
        }
        // Checkpoints free segments behind the writer, so the files stay few.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while segment_files(dir.path()) > 20 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            segment_files(dir.path()) <= 20,
            "{} segment files",
            segment_files(dir.path())
        );
        assert!(metrics::JOURNAL_CHECKPOINTS.get() > 0);
        let rows = store.log_range(1, 1, 2_501).unwrap();
        assert_eq!(rows.len(), 2_500);
        assert!(rows.iter().all(|(_, v)| v == &row));
    }

    #[test]
    fn a_destroyed_group_is_not_brought_back_by_a_replay() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = store_with(dir.path(), DEFAULT_SEGMENT_BYTES);
            for i in 1..=10u64 {
                append(&store, 4, i, b"first life");
            }
            store.destroy_group(4).unwrap();
            // The group comes back on this node: a second life from index 1.
            for i in 1..=3u64 {
                append(&store, 4, i, b"second life");
            }
            append(&store, 5, 1, b"other group");
        }
        // Reopening replays the whole journal over what RocksDB flushed at close: the first
        // life's appends, its deletes, the second life's appends.
        let store = store_with(dir.path(), DEFAULT_SEGMENT_BYTES);
        let rows = store.log_range(4, 0, u64::MAX).unwrap();
        assert_eq!(
            rows,
            (1..=3u64)
                .map(|i| (i, b"second life".to_vec()))
                .collect::<Vec<_>>()
        );
        assert_eq!(store.log_range(5, 0, u64::MAX).unwrap().len(), 1);
    }
}
