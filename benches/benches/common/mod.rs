//! Shared fixture of the storage benchmarks (`records.rs`, `storage.rs`): a [`Store`] in a fresh
//! temporary directory that is closed and deleted when the fixture drops, and payload helpers.

use std::path::Path;
use std::time::Duration;

use runnel_storage::{RecordIn, Store, StoreOptions};
use tempfile::TempDir;

/// A store in its own temporary directory (`runnel-bench-*` under the system temp dir).
pub struct TempStore {
    store: Option<Store>,
    dir: Option<TempDir>,
}

impl TempStore {
    /// Creates the directory and opens a store with the production defaults (fsync on).
    pub fn open() -> TempStore {
        let dir = tempfile::Builder::new()
            .prefix("runnel-bench-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let store = open_when_closed(dir.path());
        TempStore {
            store: Some(store),
            dir: Some(dir),
        }
    }

    /// The open store.
    pub fn store(&self) -> &Store {
        self.store.as_ref().expect("the store is open")
    }

    /// Closes and reopens the store. RocksDB replays the write-ahead log on open and flushes the
    /// recovered memtables to SST files, so what was written before is read from SSTs afterwards.
    // Each benchmark binary compiles this module on its own; only `storage.rs` reopens.
    #[allow(dead_code)]
    pub fn reopen(&mut self) {
        drop(self.store.take());
        let dir = self.dir.as_ref().expect("the directory exists");
        self.store = Some(open_when_closed(dir.path()));
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        drop(self.store.take());
        if let Some(dir) = self.dir.take() {
            // The group-commit thread may hold the DB for a moment after the last callback ran;
            // a successful reopen proves the previous instance released it, so the directory is
            // not deleted under an open DB.
            drop(open_when_closed(dir.path()));
            if let Err(e) = dir.close() {
                eprintln!("cannot remove the benchmark's temporary directory: {e}");
            }
        }
    }
}

/// Opens the store at `path`, retrying while a previous instance still holds RocksDB's lock.
fn open_when_closed(path: &Path) -> Store {
    let mut last = None;
    for _ in 0..1000 {
        match Store::open(path, StoreOptions::default()) {
            Ok(store) => return store,
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    panic!(
        "cannot open the benchmark store at {}: {last:?}",
        path.display()
    );
}

/// `len` pseudo-random (incompressible) bytes; `seed` varies the content.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    // xorshift64*: cheap, deterministic, and defeats the LZ4 compression of the records and
    // log column families (producer data is often compressed or encrypted already).
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `n` plaintext records of `len` data bytes each, with distinct partition keys.
pub fn records(n: usize, len: usize) -> Vec<RecordIn> {
    (0..n)
        .map(|i| RecordIn {
            partition_key: format!("user-{i:08}"),
            data: payload(len, i as u64).into(),
            encryption: Default::default(),
        })
        .collect()
}
