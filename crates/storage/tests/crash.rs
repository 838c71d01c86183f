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

fn child(dir: &str) {
    let store = Store::open(std::path::Path::new(dir), StoreOptions::default()).expect("open");
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

#[test]
fn acknowledged_appends_survive_sigkill() {
    if let Ok(dir) = std::env::var("RUNNEL_CRASH_CHILD") {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_appends_survive_sigkill",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RUNNEL_CRASH_CHILD", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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

    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
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
