//! Multi-process tests: real `runnel` nodes on loopback.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestCluster;
use runnel_client::{v1 as pb, Client, Start};

#[derive(Clone, Debug)]
struct Acked {
    writer: usize,
    key: String,
    step: usize,
    value: String,
    shard: String,
    seq: String,
}

/// Every record of every shard as seen through one endpoint: shard → records in read order.
async fn read_all(client: &Client, stream: &str) -> BTreeMap<String, Vec<pb::Record>> {
    let mut out = BTreeMap::new();
    for sh in client.list_shards(stream).await.expect("list shards") {
        let mut it = client
            .shard_iterator(stream, &sh.shard_id, &Start::TrimHorizon)
            .await
            .expect("iterator");
        let mut recs = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = client.get_records(&it, 1000).await.expect("get records");
            let empty = r.records.is_empty();
            recs.extend(r.records);
            it = r.next_shard_iterator;
            if empty && r.millis_behind_latest == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "reading {} never caught up",
                sh.shard_id
            );
        }
        out.insert(sh.shard_id, recs);
    }
    out
}

/// Creates `name` and waits until it is active.
async fn create_active(client: &Client, name: &str, shards: u32, retention_hours: u32) {
    client
        .create_stream(name, shards, retention_hours)
        .await
        .unwrap();
    client
        .wait_active(name, Duration::from_secs(60))
        .await
        .unwrap();
}

/// Every record of `stream` as data (UTF-8) → (shard, sequence number), the shape writers
/// record what was acknowledged in.
async fn read_back(client: &Client, stream: &str) -> BTreeMap<String, (String, String)> {
    let mut got = BTreeMap::new();
    for (shard, recs) in read_all(client, stream).await {
        for r in recs {
            got.insert(
                String::from_utf8(r.data.to_vec()).expect("UTF-8 record data"),
                (shard.clone(), r.sequence_number),
            );
        }
    }
    got
}

/// Physical id of the node leading shard 0 of `stream`, as `client`'s node sees it.
async fn shard0_leader(client: &Client, stream: &str) -> u64 {
    let status = client.cluster_status().await.unwrap();
    let leader = status
        .groups
        .iter()
        .find(|g| g.stream == stream && g.shard_id == "shardId-000000000000")
        .map(|g| g.leader_node)
        .unwrap();
    assert_ne!(leader, 0, "shard 0 has no known leader");
    leader
}

/// Follows `shard` of "orders" with TailShard from its first record, appending every record
/// received to `out`, until `stop` is set. After an error it resumes after the last page: on
/// the shard's leader (as the first answering node sees it) with `follow_leader`, otherwise
/// always through `clients[via]` (a relay when that node does not lead the shard).
async fn tail(
    clients: Vec<Client>,
    via: usize,
    follow_leader: bool,
    shard: String,
    out: Arc<Mutex<Vec<pb::Record>>>,
    stop: Arc<AtomicBool>,
) {
    let mut it = loop {
        match clients[via]
            .shard_iterator("orders", &shard, &Start::TrimHorizon)
            .await
        {
            Ok(it) => break it,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut attempt = 0;
    while !stop.load(Ordering::SeqCst) {
        attempt += 1;
        let mut node = clients[via].clone();
        if follow_leader {
            let asked = &clients[attempt % clients.len()];
            if let Ok(Some(leader)) = asked.shard_leader("orders", &shard).await {
                node = leader;
            }
        }
        if let Ok(mut pages) = node.tail_shard(&it, 0).await {
            loop {
                tokio::select! {
                    page = pages.message() => match page {
                        Ok(Some(p)) => {
                            out.lock().unwrap().extend(p.records);
                            it = p.next_shard_iterator;
                        }
                        _ => break,
                    },
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn seq_key(s: &str) -> (usize, String) {
    (s.len(), s.to_string())
}

#[allow(clippy::too_many_arguments)]
async fn writer(
    w: usize,
    endpoints: Vec<String>,
    keys: usize,
    records: usize,
    acked: Arc<Mutex<Vec<Acked>>>,
    deadline: Instant,
) {
    let clients: Vec<Client> = endpoints
        .iter()
        .map(|e| Client::connect_lazy(e).unwrap())
        .collect();
    let streams: Vec<runnel_client::RecordStream> =
        clients.iter().map(|c| c.record_stream("orders")).collect();
    let mut ep = w % clients.len();
    let mut step = 0usize;
    let mut attempt = 0usize;
    while step < records {
        assert!(
            Instant::now() < deadline,
            "writer {w} did not finish in time"
        );
        let client = &clients[ep];
        let mode = (step / 20) % 3;
        if mode != 1 {
            // One record at a time: with PutRecord, or on the endpoint's PutRecordStream (a
            // stream broken by the fault reports the record as unknown, and it is retried).
            let key = format!("w{w}-k{}", step % keys);
            let value = format!("w{w}-s{step}-a{attempt}");
            let result = if mode == 0 {
                client
                    .put_record("orders", &key, value.clone().into_bytes())
                    .await
            } else {
                streams[ep]
                    .send(key.clone(), value.clone().into_bytes())
                    .await
            };
            match result {
                Ok((shard, seq)) => {
                    acked.lock().unwrap().push(Acked {
                        writer: w,
                        key,
                        step,
                        value,
                        shard,
                        seq,
                    });
                    step += 1;
                    attempt = 0;
                }
                Err(_) => {
                    attempt += 1;
                    ep = (ep + 1) % clients.len();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        } else {
            // A PutRecords batch of up to 10 consecutive steps (distinct keys); failed entries are
            // retried with new values before the writer moves on.
            let n = 10.min(records - step).min(keys);
            let mut pending: Vec<usize> = (step..step + n).collect();
            while !pending.is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "writer {w} did not finish in time"
                );
                let entries: Vec<(String, Vec<u8>)> = pending
                    .iter()
                    .map(|s| {
                        (
                            format!("w{w}-k{}", s % keys),
                            format!("w{w}-s{s}-a{attempt}").into_bytes(),
                        )
                    })
                    .collect();
                match clients[ep].put_records("orders", entries.clone()).await {
                    Ok(resp) => {
                        let mut still = Vec::new();
                        for ((s, (key, value)), r) in pending.iter().zip(entries).zip(resp.records)
                        {
                            if r.error_code.is_empty() {
                                acked.lock().unwrap().push(Acked {
                                    writer: w,
                                    key,
                                    step: *s,
                                    value: String::from_utf8(value).unwrap(),
                                    shard: r.shard_id,
                                    seq: r.sequence_number,
                                });
                            } else {
                                still.push(*s);
                            }
                        }
                        pending = still;
                    }
                    Err(_) => {
                        ep = (ep + 1) % clients.len();
                    }
                }
                if !pending.is_empty() {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            attempt = 0;
            step += n;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_keep_every_acknowledged_record_through_a_leader_kill() {
    const WRITERS: usize = 8;
    const KEYS_PER_WRITER: usize = 13;
    const RECORDS_PER_WRITER: usize = 1300;

    let mut cluster = TestCluster::start(3);
    cluster.wait_ready(Duration::from_secs(60)).await;
    let c0 = cluster.client(0);
    c0.create_stream("orders", 4, 0).await.unwrap();
    c0.wait_active("orders", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(c0.list_shards("orders").await.unwrap().len(), 4);

    // Two tails: shard 0 (whose leader is killed) followed on its leader, and shard 1 always
    // through a node that does not lead it (relayed). Each must see exactly the shard's log.
    let clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    let status = c0.cluster_status().await.unwrap();
    let shard1_leader = status
        .groups
        .iter()
        .find(|g| g.stream == "orders" && g.shard_id == "shardId-000000000001")
        .map(|g| g.leader_node)
        .unwrap();
    let relay = (cluster.index_of(shard1_leader) + 1) % 3;
    let stop_tails = Arc::new(AtomicBool::new(false));
    let tails: Vec<(String, Arc<Mutex<Vec<pb::Record>>>)> = ["000000000000", "000000000001"]
        .iter()
        .map(|n| (format!("shardId-{n}"), Arc::new(Mutex::new(Vec::new()))))
        .collect();
    let mut tail_tasks = Vec::new();
    for (i, (shard, out)) in tails.iter().enumerate() {
        tail_tasks.push(tokio::spawn(tail(
            clients.clone(),
            relay,
            i == 0,
            shard.clone(),
            out.clone(),
            stop_tails.clone(),
        )));
    }

    let endpoints: Vec<String> = (0..3).map(|i| cluster.endpoint(i)).collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        tasks.push(tokio::spawn(writer(
            w,
            endpoints.clone(),
            KEYS_PER_WRITER,
            RECORDS_PER_WRITER,
            acked.clone(),
            deadline,
        )));
    }

    // In the middle of the writes, SIGKILL the leader of shard 0, keep writing, restart it.
    while acked.lock().unwrap().len() < 3000 {
        assert!(Instant::now() < deadline, "writes stalled before the kill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = shard0_leader(&c0, "orders").await;
    let victim = cluster.index_of(leader);
    let before_kill = acked.lock().unwrap().len();
    cluster.kill(victim);
    eprintln!("killed node {leader} (leader of shard 0) after {before_kill} acknowledged records");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = acked.lock().unwrap().len() - before_kill;
    cluster.spawn(victim);
    eprintln!("restarted node {leader}; {during} records were acknowledged while it was down");
    for t in tasks {
        t.await.unwrap();
    }
    cluster.wait_ready(Duration::from_secs(60)).await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= WRITERS * RECORDS_PER_WRITER);
    let keys: std::collections::HashSet<&str> = acked.iter().map(|a| a.key.as_str()).collect();
    assert!(keys.len() >= 100);
    assert!(during > 0, "no write succeeded while a node was down");

    // Every acknowledged record is readable from every node exactly once at its sequence number.
    let mut reads = Vec::new();
    for i in 0..3 {
        let all = read_all(&cluster.client(i), "orders").await;
        let mut seen: HashMap<String, (String, String, u64)> = HashMap::new();
        for (shard, recs) in &all {
            let mut last: Option<(usize, String)> = None;
            for r in recs {
                let value = String::from_utf8(r.data.to_vec()).unwrap();
                let k = seq_key(&r.sequence_number);
                if let Some(prev) = &last {
                    assert!(k > *prev, "sequence numbers not increasing in {shard}");
                }
                last = Some(k);
                let dup = seen.insert(
                    value.clone(),
                    (
                        shard.clone(),
                        r.sequence_number.clone(),
                        r.approximate_arrival_timestamp_ms,
                    ),
                );
                assert!(dup.is_none(), "node {} returned {value} twice", i + 1);
            }
        }
        for a in &acked {
            let (shard, seq, _) = seen
                .get(&a.value)
                .unwrap_or_else(|| panic!("node {}: acknowledged {} missing", i + 1, a.value));
            assert_eq!(
                (shard, seq),
                (&a.shard, &a.seq),
                "node {}: {} at the wrong place",
                i + 1,
                a.value
            );
        }
        reads.push(all);
    }

    // The tails received each shard's log exactly: same records, same order, nothing twice,
    // across the leader's kill (shard 0) and through a relay (shard 1).
    for (shard, out) in &tails {
        let log = &reads[0][shard];
        let tail_deadline = Instant::now() + Duration::from_secs(60);
        while out.lock().unwrap().len() < log.len() && Instant::now() < tail_deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got: Vec<(String, Vec<u8>)> = out
            .lock()
            .unwrap()
            .iter()
            .map(|r| (r.sequence_number.clone(), r.data.to_vec()))
            .collect();
        let want: Vec<(String, Vec<u8>)> = log
            .iter()
            .map(|r| (r.sequence_number.clone(), r.data.to_vec()))
            .collect();
        assert_eq!(got.len(), want.len(), "tail of {shard}: record count");
        assert!(got == want, "tail of {shard} differs from the shard's log");
    }
    stop_tails.store(true, Ordering::SeqCst);
    for t in tail_tasks {
        t.await.unwrap();
    }

    // Per writer and key, the read order equals the write order.
    let mut by_key: HashMap<(usize, String), Vec<&Acked>> = HashMap::new();
    for a in &acked {
        by_key.entry((a.writer, a.key.clone())).or_default().push(a);
    }
    for ((w, key), mut list) in by_key {
        list.sort_by_key(|a| seq_key(&a.seq));
        let steps: Vec<usize> = list.iter().map(|a| a.step).collect();
        let mut sorted = steps.clone();
        sorted.sort();
        assert_eq!(
            steps, sorted,
            "writer {w} key {key}: read order differs from write order"
        );
    }

    // Iterator types, on a shard with data, through node 2's endpoint.
    let c1 = cluster.client(1);
    let (shard, recs) = reads[0].iter().find(|(_, r)| r.len() > 10).unwrap();
    let first = |r: &pb::GetRecordsResponse| r.records.first().map(|x| x.sequence_number.clone());
    let it = c1
        .shard_iterator("orders", shard, &Start::TrimHorizon)
        .await
        .unwrap();
    assert_eq!(
        first(&c1.get_records(&it, 1).await.unwrap()),
        Some(recs[0].sequence_number.clone())
    );
    let mid = &recs[recs.len() / 2];
    let it = c1
        .shard_iterator("orders", shard, &Start::At(mid.sequence_number.clone()))
        .await
        .unwrap();
    assert_eq!(
        first(&c1.get_records(&it, 1).await.unwrap()),
        Some(mid.sequence_number.clone())
    );
    let it = c1
        .shard_iterator("orders", shard, &Start::After(mid.sequence_number.clone()))
        .await
        .unwrap();
    let after = &recs[recs.len() / 2 + 1];
    assert_eq!(
        first(&c1.get_records(&it, 1).await.unwrap()),
        Some(after.sequence_number.clone())
    );
    // AT_TIMESTAMP: the first record that arrived at or after t.
    let t = mid.approximate_arrival_timestamp_ms;
    let expect = recs
        .iter()
        .find(|r| r.approximate_arrival_timestamp_ms >= t)
        .unwrap();
    let it = c1
        .shard_iterator("orders", shard, &Start::Timestamp(t))
        .await
        .unwrap();
    assert_eq!(
        first(&c1.get_records(&it, 1).await.unwrap()),
        Some(expect.sequence_number.clone())
    );
    let it = c1
        .shard_iterator("orders", shard, &Start::Timestamp(1))
        .await
        .unwrap();
    assert_eq!(
        first(&c1.get_records(&it, 1).await.unwrap()),
        Some(recs[0].sequence_number.clone())
    );
    // LATEST: nothing until a new record arrives, then exactly that record.
    let it = c1
        .shard_iterator("orders", shard, &Start::Latest)
        .await
        .unwrap();
    let r = c1.get_records(&it, 100).await.unwrap();
    assert!(r.records.is_empty());
    let key = recs.last().unwrap().partition_key.clone();
    let (s2, seq2) = c0
        .put_record("orders", &key, b"after-latest".to_vec())
        .await
        .unwrap();
    assert_eq!(&s2, shard);
    let r = c1.get_records(&r.next_shard_iterator, 100).await.unwrap();
    assert_eq!(r.records.len(), 1);
    assert_eq!(r.records[0].sequence_number, seq2);
    assert_eq!(&r.records[0].data[..], b"after-latest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_cluster_restart_keeps_all_data() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_ready(Duration::from_secs(60)).await;
    let c = cluster.client(2);
    create_active(&c, "keep", 2, 48).await;
    let mut written = BTreeMap::new();
    for i in 0..200 {
        let entries: Vec<(String, Vec<u8>)> = (0..5)
            .map(|j| {
                (
                    format!("k{}", (i * 5 + j) % 37),
                    format!("v{i}-{j}").into_bytes(),
                )
            })
            .collect();
        let r = c.put_records("keep", entries.clone()).await.unwrap();
        assert_eq!(r.failed_record_count, 0);
        for ((_, v), res) in entries.into_iter().zip(r.records) {
            written.insert(
                String::from_utf8(v).unwrap(),
                (res.shard_id, res.sequence_number),
            );
        }
    }
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.wait_ready(Duration::from_secs(60)).await;
    let c = cluster.client(0);
    let summary = c
        .wait_active("keep", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(summary.retention_hours, 48);
    assert_eq!(read_back(&c, "keep").await, written);
    // And the cluster still takes writes.
    c.put_record("keep", "after", b"restart".to_vec())
        .await
        .unwrap();
}

/// A plain HTTP GET on loopback; returns the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Digest of a group's records on one node (internal API).
async fn digest(endpoint: &str, group: u64) -> Option<(u64, Vec<u8>, u64)> {
    use runnel_proto::internal::v1::{internal_client::InternalClient, GroupDigestRequest};
    let mut c = InternalClient::connect(endpoint.to_string()).await.ok()?;
    let r = c
        .group_digest(GroupDigestRequest { group_id: group })
        .await
        .ok()?
        .into_inner();
    Some((r.applied_index, r.digest.to_vec(), r.record_count))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_replica_catches_up_from_a_snapshot() {
    // Snapshots every 50 entries, keeping 10: a follower that misses 300 entries can only catch up
    // by installing a snapshot.
    let mut cluster =
        TestCluster::start_with(3, "[raft]\nshard_snapshot_logs = 50\nlogs_to_keep = 10\n");
    cluster.wait_ready(Duration::from_secs(60)).await;
    let c = cluster.client(0);
    create_active(&c, "snap", 1, 0).await;
    let status = c.cluster_status().await.unwrap();
    let g = status
        .groups
        .iter()
        .find(|g| g.stream == "snap")
        .unwrap()
        .clone();
    let follower = *g
        .replica_nodes
        .iter()
        .find(|n| **n != g.leader_node)
        .unwrap();
    let fi = cluster.index_of(follower);
    cluster.kill(fi);
    let live = (0..3).find(|i| *i != fi).unwrap();
    let c = cluster.client(live);
    let mut values = Vec::new();
    for i in 0..300 {
        let v = format!("snap-{i}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c
                .put_record("snap", &format!("k{}", i % 7), v.clone().into_bytes())
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "write failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        values.push(v);
    }
    cluster.spawn(fi);
    // Every replica converges to the same records.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut digests = Vec::new();
        for i in 0..3 {
            digests.push(digest(&cluster.endpoint(i), g.group_id).await);
        }
        let all_same = digests.iter().all(|d| {
            d.is_some()
                && d.as_ref().map(|x| (&x.1, x.2)) == digests[0].as_ref().map(|x| (&x.1, x.2))
        });
        if all_same && digests[0].as_ref().is_some_and(|d| d.2 == 300) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not converge: {digests:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The follower caught up by installing a snapshot (its log was purged on the leader).
    let metrics = http_get(cluster.nodes[fi].http, "/metrics");
    let installed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("runnel_raft_snapshots_installed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        installed >= 1,
        "no snapshot was installed on the restarted follower"
    );
    let all = read_all(&cluster.client(fi), "snap").await;
    let got: Vec<String> = all
        .values()
        .flatten()
        .map(|r| String::from_utf8(r.data.to_vec()).unwrap())
        .collect();
    assert_eq!(got, values);
}

/// Sum of the samples of `series` (a metric name, optionally with its label set, e.g.
/// `name{reason="write"}`) in a node's /metrics output.
fn metric_sum(port: u16, series: &str) -> f64 {
    http_get(port, "/metrics")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let matches = name == series
                || (!series.contains('{')
                    && name
                        .strip_prefix(series)
                        .is_some_and(|r| r.starts_with('{')));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Per running node: how many times its replicas went quiet so far.
fn quiesced_counts(cluster: &TestCluster) -> Vec<f64> {
    cluster
        .nodes
        .iter()
        .filter(|n| n.child.is_some())
        .map(|n| metric_sum(n.http, "runnel_raft_quiesced_total"))
        .collect()
}

/// Waits until every running node reports `want` quiet groups and has quiesced at least
/// `want` more times than in `before` (from [`quiesced_counts`]; the gauge is refreshed once a
/// second, so on its own it could still show an earlier quiet period).
async fn wait_quiet(cluster: &TestCluster, want: f64, before: &[f64], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let quiet: Vec<f64> = cluster
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| metric_sum(n.http, "runnel_raft_groups_quiet"))
            .collect();
        let counts = quiesced_counts(cluster);
        let again = counts
            .iter()
            .zip(before.iter().chain(std::iter::repeat(&0.0)))
            .all(|(now, was)| *now >= was + want);
        if again && quiet.iter().all(|q| *q == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "groups not quiet after {timeout:?}: {quiet:?} quiet, quiesced {counts:?} times (before: {before:?}; want {want} on every node)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Puts `n` records with distinct keys (so every shard gets some), retrying each until
/// `deadline`; returns data → (shard, sequence number).
async fn put_spread(
    c: &Client,
    stream: &str,
    tag: &str,
    n: usize,
    deadline: Instant,
) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let data = format!("{tag}-{i}");
        loop {
            match c
                .put_record(stream, &format!("key-{i}"), data.clone().into_bytes())
                .await
            {
                Ok((shard, seq)) => {
                    out.insert(data, (shard, seq));
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "put {data} kept failing: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    out
}

/// Every node accepts Raft messages on all three transports (TCP connections, gRPC streams, a
/// gRPC call each), so a cluster whose nodes send on different ones replicates. Each node leads
/// at least one group, so each sending path carries entries; then the writes go on through the
/// loss of the TCP sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_on_different_raft_transports_replicate_and_fail_over() {
    let transports = ["tcp", "grpc-stream", "grpc-call"];
    let mut cluster = TestCluster::start_each(3, |i| {
        format!("[raft]\npeer_transport = \"{}\"\n", transports[i])
    });
    cluster.wait_ready(Duration::from_secs(60)).await;
    let c = cluster.client(1);
    create_active(&c, "mixed", 6, 0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut written = put_spread(&c, "mixed", "first", 60, deadline).await;
    // The Raft gauges are refreshed once a second, so a node that just won its elections may
    // not show them yet: poll until every node shows a led group and sent appends.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let led: Vec<f64> = cluster
            .nodes
            .iter()
            .map(|n| metric_sum(n.http, "runnel_raft_groups_led"))
            .collect();
        let sent: Vec<f64> = cluster
            .nodes
            .iter()
            .map(|n| metric_sum(n.http, "runnel_raft_rpc_seconds_count{kind=\"append\"}"))
            .collect();
        if led.iter().all(|l| *l >= 1.0) && sent.iter().all(|s| *s >= 1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every node should lead a group and send entries: led {led:?}, appends sent {sent:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cluster.kill(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    written.extend(put_spread(&c, "mixed", "second", 60, deadline).await);
    assert_eq!(read_back(&c, "mixed").await, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_groups_go_quiet_wake_for_writes_and_fail_over() {
    let mut cluster = TestCluster::start_with(3, "[raft]\nquiesce_idle_ms = 1000\n");
    cluster.wait_ready(Duration::from_secs(60)).await;
    let c = cluster.client(0);
    create_active(&c, "quiet", 3, 0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut written = put_spread(&c, "quiet", "first", 30, deadline).await;

    // Three nodes, replication factor 3: every node hosts a replica of each of the 3 shards,
    // and all of them go quiet once the writes stop.
    wait_quiet(&cluster, 3.0, &[0.0; 3], Duration::from_secs(30)).await;
    let writes_woken = |cluster: &TestCluster| -> f64 {
        cluster
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| metric_sum(n.http, "runnel_raft_quiesce_wakes_total{reason=\"write\"}"))
            .sum()
    };
    let before = writes_woken(&cluster);

    // A write to a quiet group is acknowledged at once, and wakes its leader.
    let counts = quiesced_counts(&cluster);
    let deadline = Instant::now() + Duration::from_secs(30);
    written.extend(put_spread(&c, "quiet", "second", 30, deadline).await);
    assert!(
        writes_woken(&cluster) >= before + 3.0,
        "writes did not wake the 3 quiet leaders"
    );
    wait_quiet(&cluster, 3.0, &counts, Duration::from_secs(30)).await;

    // Kill the node leading shard 0 while everything is quiet: the followers miss the beats of
    // its node, wake, elect, and the shard takes writes again.
    let leader = shard0_leader(&c, "quiet").await;
    let victim = cluster.index_of(leader);
    cluster.kill(victim);
    let survivor = (victim + 1) % 3;
    let c = cluster.client(survivor);
    let deadline = Instant::now() + Duration::from_secs(60);
    written.extend(put_spread(&c, "quiet", "third", 30, deadline).await);
    let no_beat: f64 = cluster
        .nodes
        .iter()
        .filter(|n| n.child.is_some())
        .map(|n| {
            metric_sum(
                n.http,
                "runnel_raft_quiesce_wakes_total{reason=\"no_beat\"}",
            )
        })
        .sum();
    if no_beat < 1.0 {
        for n in cluster.nodes.iter().filter(|n| n.child.is_some()) {
            for l in http_get(n.http, "/metrics").lines() {
                if l.starts_with("runnel_raft_quiesce") || l.starts_with("runnel_raft_groups") {
                    eprintln!("node {}: {l}", n.id);
                }
            }
        }
    }
    assert!(no_beat >= 1.0, "no follower woke for missing beats");

    // Every acknowledged record is there, with the sequence number it was acknowledged with.
    assert_eq!(read_back(&c, "quiet").await, written);

    // The killed node comes back, learns the new leaders and the groups go quiet again.
    let mut counts = quiesced_counts(&cluster);
    cluster.spawn(victim);
    counts.insert(victim, 0.0);
    cluster.wait_ready(Duration::from_secs(60)).await;
    wait_quiet(&cluster, 3.0, &counts, Duration::from_secs(60)).await;
}
