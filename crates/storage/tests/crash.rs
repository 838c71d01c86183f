//! Crash test: a child process appends Raft log entries through the group-commit writer and prints
//! each acknowledgement; the parent SIGKILLs it mid-stream, reopens the store and checks that every
//! acknowledged entry is there with its exact bytes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runnel_storage::{Store, StoreOptions};

const GROUPS: u64 = 3;

fn payload(group: u64, index: u64) -> Vec<u8> {
    format!(
        "group {group} entry {index} {}",
        "x".repeat((index % 200) as usize)
    )
    .into_bytes()
}

/// The store options of a crash test's mode: the journal with default or tiny segments (tiny:
/// segments rotate, are checkpointed and reused while the child appends), or RocksDB's WAL.
fn options(mode: &str) -> StoreOptions {
    match mode {
        "journal" => StoreOptions::default(),
        "journal-small" => StoreOptions {
            journal_segment_bytes: 64 << 10,
            ..Default::default()
        },
        "wal" => StoreOptions {
            raft_journal: false,
            ..Default::default()
        },
        other => panic!("unknown crash test mode {other}"),
    }
}

fn child(dir: &str, mode: &str) {
    let store = Store::open(std::path::Path::new(dir), options(mode)).expect("open");
    let started = Instant::now();
    let mut handles = Vec::new();
    // Several groups append concurrently so their entries share fsyncs.
    for group in 0..GROUPS {
        let store = store.clone();
        handles.push(std::thread::spawn(move || {
            for index in 1..1_000_000u64 {
                if started.elapsed() > Duration::from_secs(60) {
                    return;
                }
                let batch = store
                    .log_append_batch(group, &[(index, payload(group, index))])
                    .expect("batch");
                let (tx, rx) = std::sync::mpsc::channel();
                store.log_writer().submit(
                    batch,
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                );
                if rx.recv().expect("callback").is_ok() {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ACK {group} {index}");
                    let _ = out.flush();
                }
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
}

/// Runs this test binary again as the child of `test`, with `env` naming the store directory;
/// its stdout is piped to the parent.
fn spawn_child(test: &str, env: &str, dir: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Appends in a child, SIGKILLs it, reopens (in the same mode) and checks every acknowledged
/// entry. `test` is the calling test's name (the child runs it again).
/// Reads the child's `<prefix>n` lines until one reports `n >= enough` (or 60 s passed);
/// returns the last `n` reported (0 if none).
fn last_report(proc: &mut std::process::Child, prefix: &str, enough: u64) -> u64 {
    let stdout = proc.stdout.take().unwrap();
    let mut last = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix(prefix) {
            last = rest.parse().unwrap();
        }
        if last >= enough || Instant::now() > deadline {
            break;
        }
    }
    last
}

fn appends_survive_sigkill(test: &str, mode: &str) {
    if let Ok(dir) = std::env::var("RUNNEL_CRASH_CHILD") {
        child(&dir, mode);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn_child(test, "RUNNEL_CRASH_CHILD", dir.path());
    let stdout = proc.stdout.take().unwrap();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("ACK ") {
            let mut it = rest.split(' ').map(|x| x.parse::<u64>().unwrap());
            acked.push((it.next().unwrap(), it.next().unwrap()));
        }
        if acked.len() >= 1500 || Instant::now() > deadline {
            break;
        }
    }
    // SIGKILL while the child is still appending.
    proc.kill().unwrap();
    proc.wait().unwrap();
    assert!(
        acked.len() >= 1500,
        "child acknowledged only {} entries",
        acked.len()
    );

    let store = Store::open(dir.path(), options(mode)).unwrap();
    for (group, index) in &acked {
        let rows = store.log_range(*group, *index, index + 1).unwrap();
        assert_eq!(
            rows.len(),
            1,
            "acknowledged entry {group}/{index} is missing after the crash"
        );
        assert_eq!(rows[0].1, payload(*group, *index));
    }
    // Entries of each group are contiguous from 1 (no holes before the last durable one).
    for group in 0..GROUPS {
        let (last, _) = store.log_last(group).unwrap().unwrap();
        let all = store.log_range(group, 1, last + 1).unwrap();
        assert_eq!(all.len() as u64, last, "group {group} has holes");
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    appends_survive_sigkill("acknowledged_appends_survive_sigkill", "journal");
}

#[test]
fn acknowledged_appends_survive_sigkill_across_journal_segments() {
    appends_survive_sigkill(
        "acknowledged_appends_survive_sigkill_across_journal_segments",
        "journal-small",
    );
}

#[test]
fn acknowledged_appends_survive_sigkill_with_the_rocksdb_wal() {
    appends_survive_sigkill(
        "acknowledged_appends_survive_sigkill_with_the_rocksdb_wal",
        "wal",
    );
}

/// Child of `applied_records_and_applied_index_stay_together_through_sigkill`: applies entries of
/// two records each to one group without the WAL (as shard state machines do), with the applied
/// index (its decimal text) in the same batch, and flushes every 500 entries (as a snapshot does),
/// printing `FLUSHED i` once a flush covering entry i returned.
fn applying_child(dir: &str) {
    let store = Store::open(std::path::Path::new(dir), StoreOptions::default()).expect("open");
    let started = Instant::now();
    for index in 1..10_000_000u64 {
        if started.elapsed() > Duration::from_secs(60) {
            return;
        }
        let records = [record(index, 0), record(index, 1)];
        store
            .apply_records(7, index, index, &records, index.to_string().as_bytes())
            .expect("apply");
        if index % 500 == 0 {
            store.flush_applied().expect("flush");
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "FLUSHED {index}");
            let _ = out.flush();
        }
    }
}

fn record(index: u64, sub: u32) -> runnel_storage::RecordIn {
    runnel_storage::RecordIn {
        partition_key: format!("k{index}-{sub}"),
        data: bytes::Bytes::from(format!("{index}/{sub} {}", "d".repeat(900))),
        encryption: bytes::Bytes::new(),
    }
}

#[test]
fn applied_records_and_applied_index_stay_together_through_sigkill() {
    if let Ok(dir) = std::env::var("RUNNEL_APPLY_CRASH_CHILD") {
        applying_child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn_child(
        "applied_records_and_applied_index_stay_together_through_sigkill",
        "RUNNEL_APPLY_CRASH_CHILD",
        dir.path(),
    );
    // Several flushes, then a kill between two of them (applies after the last flush are in
    // memtables only).
    let flushed = last_report(&mut proc, "FLUSHED ", 3_000);
    std::thread::sleep(Duration::from_millis(150));
    proc.kill().unwrap();
    proc.wait().unwrap();
    assert!(flushed >= 3_000, "child flushed only up to entry {flushed}");

    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let applied: u64 = String::from_utf8(
        store
            .get_state(7, runnel_storage::StateKey::Applied)
            .unwrap()
            .expect("an applied index after flushes"),
    )
    .unwrap()
    .parse()
    .unwrap();
    assert!(
        applied >= flushed,
        "applied index {applied} is behind the last completed flush ({flushed})"
    );
    // Every entry up to the applied index has both its records, with their exact bytes...
    let from = runnel_types::Position::START;
    let end = runnel_types::Position {
        log_index: applied + 1,
        sub: 0,
    };
    let mut next = from;
    let mut seen = 0u64;
    loop {
        let batch = store.read_records(7, next, end, 10_000, 64 << 20).unwrap();
        let Some((last, _)) = batch.last() else { break };
        next = last.next();
        for (pos, rec) in batch {
            let want = record(pos.log_index, pos.sub);
            assert_eq!(rec.partition_key, want.partition_key, "at {pos:?}");
            assert_eq!(rec.data, want.data, "at {pos:?}");
            seen += 1;
        }
    }
    assert_eq!(
        seen,
        2 * applied,
        "records missing below the applied index {applied}"
    );
    // ... and nothing beyond it survived without the applied index that covers it.
    let beyond = store
        .read_records(
            7,
            end,
            runnel_types::Position {
                log_index: u64::MAX,
                sub: 0,
            },
            10,
            1 << 20,
        )
        .unwrap();
    assert!(
        beyond.is_empty(),
        "records after the applied index {applied} survived the crash: {:?}",
        beyond.first().map(|(p, _)| p)
    );
}

/// Child of `synced_state_writes_survive_sigkill`: overwrites one state value with growing
/// numbers through `put_state(.., sync = true)`, with RocksDB keeping unsynced WAL bytes in
/// the process (`simulate_power_loss`), and prints `SYNCED n` after each returns.
fn syncing_child(dir: &str) {
    let options = StoreOptions {
        simulate_power_loss: true,
        ..Default::default()
    };
    let store = Store::open(std::path::Path::new(dir), options).expect("open");
    let started = Instant::now();
    for n in 1..10_000_000u64 {
        if started.elapsed() > Duration::from_secs(60) {
            return;
        }
        store
            .put_state(
                9,
                runnel_storage::StateKey::SnapshotMeta,
                n.to_string().as_bytes(),
                true,
            )
            .expect("put");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "SYNCED {n}");
        let _ = out.flush();
    }
}

/// A synced state write (snapshot metadata, installed snapshots) is durable when it returns,
/// though its WAL sync runs outside RocksDB's write queue (`Store::write_sync`).
#[test]
fn synced_state_writes_survive_sigkill() {
    if let Ok(dir) = std::env::var("RUNNEL_SYNC_CRASH_CHILD") {
        syncing_child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn_child(
        "synced_state_writes_survive_sigkill",
        "RUNNEL_SYNC_CRASH_CHILD",
        dir.path(),
    );
    let synced = last_report(&mut proc, "SYNCED ", 300);
    proc.kill().unwrap();
    proc.wait().unwrap();
    assert!(synced >= 300, "child synced only {synced} writes");
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let kept: u64 = store
        .get_state(9, runnel_storage::StateKey::SnapshotMeta)
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap().parse().unwrap())
        .unwrap_or(0);
    assert!(
        kept >= synced,
        "the state holds {kept} after the crash, but write {synced} had been synced"
    );
}
