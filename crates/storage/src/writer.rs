//! Group commit for Raft log writes.
//!
//! One OS thread owns every durable log write of the node. Callers submit prepared write batches
//! (appends, truncations, purges and votes of any group) with a completion callback; the thread
//! takes all jobs that queued up while it was busy, writes them in submission order, makes them
//! durable with a single `fsync`, and only then runs their callbacks. With the journal
//! ([`crate::journal`], the default) a batch goes to the memtables without RocksDB's WAL and its
//! bytes to the journal, whose `fdatasync` makes it durable; without it, to RocksDB with its WAL,
//! which is then synced. So:
//!
//! * a callback never runs before the `fsync` that covers its batch (the Raft flush contract);
//! * jobs of one group are applied in the order they were submitted (truncate after append is
//!   never reordered);
//! * many groups share each `fsync` (group commit), which is where throughput comes from.

use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rocksdb::{WriteBatch, WriteOptions, DB};

use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::metrics;

/// A round (writes and sync) slower than this is logged: it holds up every group of the node.
const SLOW_ROUND: Duration = Duration::from_millis(100);

/// Completion callback of a submitted job.
pub type Done = Box<dyn FnOnce(Result<()>) + Send + 'static>;

struct Job {
    batch: WriteBatch,
    done: Done,
    submitted: Instant,
}

/// Handle to the group-commit thread. Dropping the last handle stops the thread after it
/// finished the jobs already queued.
pub struct LogWriter {
    tx: mpsc::Sender<Job>,
}

/// Most jobs written under one fsync.
const MAX_JOBS_PER_SYNC: usize = 4096;

impl LogWriter {
    pub(crate) fn start(
        db: Arc<DB>,
        skip_fsync: bool,
        journal: Option<Journal>,
    ) -> Result<LogWriter> {
        let (tx, rx) = mpsc::channel::<Job>();
        // The threads hold the DB weakly: the DB closes as soon as the last `Store` is dropped
        // (RocksDB must be closed before the process exits).
        if let Some(journal) = &journal {
            crate::journal::start_checkpoints(journal.pool().clone(), Arc::downgrade(&db))?;
        }
        let db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("runnel-log-writer".into())
            .spawn(move || run(db, rx, skip_fsync, journal))
            .map_err(|e| Error::Io(format!("cannot start log writer thread: {e}")))?;
        Ok(LogWriter { tx })
    }

    /// Queues `batch`; `done` runs after it is durable (or with the error that prevented it).
    pub fn submit(&self, batch: WriteBatch, done: Done) {
        if let Err(mpsc::SendError(job)) = self.tx.send(Job {
            batch,
            done,
            submitted: Instant::now(),
        }) {
            (job.done)(Err(Error::Closed));
        }
    }

    /// Queues `batch` and blocks the calling thread until it is durable.
    pub(crate) fn write_blocking(&self, batch: WriteBatch) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        self.submit(
            batch,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Queues `batch` and waits until it is durable.
    pub async fn write(&self, batch: WriteBatch) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            batch,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await.map_err(|_| Error::Closed)?
    }
}

fn run(db: Weak<DB>, rx: mpsc::Receiver<Job>, skip_fsync: bool, mut journal: Option<Journal>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(64);
    let mut wo = WriteOptions::default();
    wo.set_sync(false);
    // With the journal, the journal is the log's durability: RocksDB's WAL is skipped.
    wo.disable_wal(journal.is_some());
    while let Ok(first) = rx.recv() {
        jobs.push(first);
        while jobs.len() < MAX_JOBS_PER_SYNC {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let Some(db) = db.upgrade() else {
            for job in jobs.drain(..) {
                (job.done)(Err(Error::Closed));
            }
            continue;
        };
        let round_started = Instant::now();
        let mut sync_took = Duration::ZERO;
        let mut entries = 0usize;
        let mut failed: Option<Error> = None;
        let mut results: Vec<Result<()>> = Vec::with_capacity(jobs.len());
        for job in jobs.iter_mut() {
            // Once a write failed, later jobs are not written (their order relative to the failed
            // one must be kept), and all of them fail.
            if let Some(err) = &failed {
                results.push(Err(err.clone()));
                continue;
            }
            entries += job.batch.len();
            let batch = std::mem::take(&mut job.batch);
            let written = match journal.as_mut() {
                Some(j) => j.append(batch.data()),
                None => Ok(()),
            }
            .and_then(|()| db.write_opt(batch, &wo).map_err(Error::from));
            match written {
                Ok(()) => results.push(Ok(())),
                Err(err) => {
                    failed = Some(err.clone());
                    results.push(Err(err));
                }
            }
        }
        if results.iter().any(|r| r.is_ok()) {
            let started = Instant::now();
            let synced = match journal.as_mut() {
                Some(j) => j.sync(!skip_fsync),
                None if skip_fsync => Ok(()),
                None => db.flush_wal(true).map_err(Error::from),
            };
            if let Err(err) = synced {
                for r in results.iter_mut() {
                    if r.is_ok() {
                        *r = Err(err.clone());
                    }
                }
            }
            sync_took = started.elapsed();
            if !skip_fsync {
                metrics::FSYNC_SECONDS.observe(sync_took.as_secs_f64());
            }
        }
        let round_took = round_started.elapsed();
        if round_took > SLOW_ROUND {
            tracing::warn!(
                write_ms = (round_took - sync_took).as_millis() as u64,
                sync_ms = sync_took.as_millis() as u64,
                jobs = jobs.len(),
                entries,
                "slow log write round: every group of the node waited for it"
            );
        }
        metrics::SYNC_BATCH_JOBS.observe(jobs.len() as f64);
        metrics::SYNC_BATCH_ENTRIES.observe(entries as f64);
        // Let go of the database before waking the waiters: one of them may drop the last
        // `Store`, and the database must then close on that thread, not on this one after the
        // process began to exit (RocksDB aborts with "pthread lock: Invalid argument" when it
        // closes during static destruction).
        drop(db);
        for (job, result) in jobs.drain(..).zip(results) {
            metrics::LOG_WRITE_SECONDS.observe(job.submitted.elapsed().as_secs_f64());
            (job.done)(result);
        }
    }
    // Every `LogWriter` handle is gone: the checkpoint thread stops too.
    if let Some(journal) = &journal {
        journal.pool().stop();
    }
}
