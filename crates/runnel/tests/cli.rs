//! The quick start of the README, through the `runnel` binary's client subcommands against a
//! single-node server process.

mod common;

use std::process::Command;
use std::time::Duration;

use common::TestCluster;

fn runnel(endpoint: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runnel"));
    cmd.arg("--endpoint").arg(endpoint).args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn runnel");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_commands_work() {
    let cluster = TestCluster::start(1);
    cluster.wait_ready(Duration::from_secs(60)).await;
    let ep = cluster.endpoint(0);

    let (ok, out, err) = runnel(&ep, &["stream", "create", "orders", "--shards", "2"], None);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "orders ACTIVE");
    let (ok, out, _) = runnel(&ep, &["--output", "json", "stream", "list"], None);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["stream"], "orders");
    assert_eq!(v["open_shards"], 2);

    let (ok, out, err) = runnel(
        &ep,
        &[
            "put",
            "orders",
            "--partition-key",
            "user-1",
            "--data",
            "hello",
        ],
        None,
    );
    assert!(ok, "{err}");
    let mut parts = out.split_whitespace();
    let shard = parts.next().unwrap().to_string();
    let seq = parts.next().unwrap().to_string();
    let (ok, out, err) = runnel(
        &ep,
        &[
            "--output",
            "json",
            "put",
            "orders",
            "--partition-key",
            "user-1",
        ],
        Some("a\nb\nc\n"),
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3);

    let (ok, out, err) = runnel(
        &ep,
        &[
            "--output",
            "json",
            "get",
            "orders",
            "--shard",
            &shard,
            "--from",
            "trim-horizon",
        ],
        None,
    );
    assert!(ok, "{err}");
    let recs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let data: Vec<&str> = recs.iter().map(|r| r["data"].as_str().unwrap()).collect();
    assert_eq!(data, vec!["hello", "a", "b", "c"]);
    assert_eq!(recs[0]["sequence_number"], seq.as_str());
    assert_eq!(recs[0]["partition_key"], "user-1");
    assert!(
        recs[0]["approximate_arrival_timestamp_ms"]
            .as_u64()
            .unwrap()
            > 0
    );

    let (ok, out, _) = runnel(
        &ep,
        &[
            "get",
            "orders",
            "--shard",
            &shard,
            "--from",
            &format!("after:{seq}"),
            "--limit",
            "1",
        ],
        None,
    );
    assert!(ok);
    assert!(out.trim().ends_with(" a"), "{out}");

    // Errors name the problem and exit non-zero.
    let (ok, _, err) = runnel(
        &ep,
        &["put", "missing", "--partition-key", "k", "--data", "x"],
        None,
    );
    assert!(!ok);
    assert!(err.contains("ResourceNotFoundException"), "{err}");
    let (ok, _, err) = runnel(
        &ep,
        &["get", "orders", "--shard", "0", "--from", "sideways"],
        None,
    );
    assert!(!ok);
    assert!(err.contains("trim-horizon"), "{err}");

    // `runnel tail` follows every shard: the records so far, then a new one as it commits.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["--endpoint", &ep, "--output", "json", "tail", "orders"])
        .args(["--from", "trim-horizon"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn runnel tail");
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if tx
                .send(v["data"].as_str().unwrap_or("").to_string())
                .is_err()
            {
                return;
            }
        }
    });
    let mut tailed = Vec::new();
    let next = |tailed: &mut Vec<String>| {
        let d = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("tail printed nothing");
        tailed.push(d);
    };
    for _ in 0..4 {
        next(&mut tailed);
    }
    assert_eq!(tailed, vec!["hello", "a", "b", "c"]);
    let (ok, _, err) = runnel(
        &ep,
        &[
            "put",
            "orders",
            "--partition-key",
            "user-1",
            "--data",
            "later",
        ],
        None,
    );
    assert!(ok, "{err}");
    next(&mut tailed);
    assert_eq!(tailed[4], "later");
    let _ = tail.kill();
    let _ = tail.wait();

    let (ok, out, _) = runnel(&ep, &["cluster", "status"], None);
    assert!(ok);
    assert!(out.contains("orders/shardId-000000000000"), "{out}");
    let (ok, _, err) = runnel(&ep, &["stream", "delete", "orders"], None);
    assert!(ok, "{err}");
    let (ok, _, err) = runnel(&ep, &["stream", "describe", "orders"], None);
    assert!(!ok);
    assert!(err.contains("ResourceNotFoundException"), "{err}");
}
