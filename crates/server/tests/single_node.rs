//! In-process single-node tests: bad input is rejected with a clear error and changes nothing;
//! retention trimming removes expired records (driven by the node's test clock); the GetRecords
//! long poll answers when a record commits; the client's batching producer; PutRecordStream.

use std::time::Duration;

use runnel_client::{v1 as pb, Client, Start};
use runnel_server::config::NodeConfig;
use runnel_types::Error;

/// Two distinct free loopback ports (gRPC, HTTP): both listeners are held until both are
/// picked, since a port released can be handed out again at once.
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

async fn start(dir: &std::path::Path) -> (runnel_server::Server, Client) {
    start_with(dir, runnel_types::Limits::default()).await
}

async fn start_with(
    dir: &std::path::Path,
    limits: runnel_types::Limits,
) -> (runnel_server::Server, Client) {
    let (grpc_port, http_port) = free_ports();
    let config = NodeConfig {
        data_dir: dir.to_path_buf(),
        grpc_listen: format!("127.0.0.1:{grpc_port}").parse().unwrap(),
        http_listen: format!("127.0.0.1:{http_port}").parse().unwrap(),
        limits,
        ..Default::default()
    };
    let server = runnel_server::start(config).await.unwrap();
    let client = Client::connect_lazy(&format!("http://{}", server.grpc_addr())).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client.list_streams().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "node not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (server, client)
}

fn kind(e: &Error) -> &'static str {
    e.kinesis_name()
}

async fn count_records(c: &Client, stream: &str) -> usize {
    let mut n = 0;
    for sh in c.list_shards(stream).await.unwrap() {
        let it = c
            .shard_iterator(stream, &sh.shard_id, &Start::TrimHorizon)
            .await
            .unwrap();
        n += c.get_records(&it, 10_000).await.unwrap().records.len();
    }
    n
}

/// Every record of `stream`: sequence number → (shard, partition key, data).
async fn stored_records(
    c: &Client,
    stream: &str,
) -> std::collections::HashMap<String, (String, String, Vec<u8>)> {
    let mut stored = std::collections::HashMap::new();
    for sh in c.list_shards(stream).await.unwrap() {
        let it = c
            .shard_iterator(stream, &sh.shard_id, &Start::TrimHorizon)
            .await
            .unwrap();
        for r in c.get_records(&it, 10_000).await.unwrap().records {
            stored.insert(
                r.sequence_number.clone(),
                (sh.shard_id.clone(), r.partition_key, r.data.to_vec()),
            );
        }
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    c.create_stream("s", 2, 0).await.unwrap();
    c.wait_active("s", Duration::from_secs(30)).await.unwrap();

    let e = c.create_stream("s", 1, 0).await.unwrap_err();
    assert_eq!(kind(&e), "ResourceInUseException");
    assert!(e.message().contains("already exists"), "{e}");
    for bad in ["", "has space", "slash/name", &"x".repeat(129)] {
        let e = c.create_stream(bad, 1, 0).await.unwrap_err();
        assert_eq!(kind(&e), "ValidationException", "{bad:?}: {e}");
        assert!(e.message().contains("streamName"), "{e}");
    }
    let e = c.create_stream("r", 1, 23).await.unwrap_err();
    assert_eq!(kind(&e), "InvalidArgumentException");
    assert!(e.message().contains("24"), "{e}");
    let e = c.create_stream("r", 1, 8761).await.unwrap_err();
    assert_eq!(kind(&e), "InvalidArgumentException");
    let e = c.create_stream("r", 0, 0).await.unwrap_err();
    assert_eq!(kind(&e), "ValidationException");

    let e = c.put_record("s", "", b"x".to_vec()).await.unwrap_err();
    assert_eq!(kind(&e), "ValidationException");
    assert!(e.message().contains("partitionKey"), "{e}");
    let e = c
        .put_record("s", &"k".repeat(257), b"x".to_vec())
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "ValidationException");
    let e = c
        .put_record("s", "k", vec![0u8; 1024 * 1024 + 1])
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "ValidationException");
    assert!(e.message().contains("data"), "{e}");
    let e = c.put_record("nope", "k", b"x".to_vec()).await.unwrap_err();
    assert_eq!(kind(&e), "ResourceNotFoundException");
    assert!(e.message().contains("nope"), "{e}");

    let too_many: Vec<(String, Vec<u8>)> =
        (0..501).map(|i| (format!("k{i}"), b"x".to_vec())).collect();
    let e = c.put_records("s", too_many).await.unwrap_err();
    assert_eq!(kind(&e), "ValidationException");
    // One bad entry rejects the whole request: the good entries are not written either.
    let mixed = vec![
        ("good".to_string(), b"1".to_vec()),
        (String::new(), b"2".to_vec()),
    ];
    let e = c.put_records("s", mixed).await.unwrap_err();
    assert_eq!(kind(&e), "ValidationException");
    assert!(e.message().contains("records.2.member.partitionKey"), "{e}");

    let mut raw = c.raw();
    let e = raw
        .put_record(pb::PutRecordRequest {
            stream: runnel_client::stream("s"),
            partition_key: "k".into(),
            data: b"x".to_vec().into(),
            explicit_hash_key: "340282366920938463463374607431768211456".into(),
            sequence_number_for_ordering: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        runnel_client::from_status(&e).kinesis_name(),
        "InvalidArgumentException"
    );

    assert_eq!(
        count_records(&c, "s").await,
        0,
        "a rejected request wrote something"
    );

    // Iterators: unknown shard, bad sequence numbers, forged and malformed tokens, expiry.
    let e = c
        .shard_iterator("s", "shardId-000000000009", &Start::TrimHorizon)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "ResourceNotFoundException");
    let e = c
        .shard_iterator("s", "shardId-000000000000", &Start::At("12x".into()))
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "InvalidArgumentException");
    let (shard, seq) = c.put_record("s", "k", b"v".to_vec()).await.unwrap();
    let other = if shard.ends_with('0') {
        "shardId-000000000001"
    } else {
        "shardId-000000000000"
    };
    let e = c
        .shard_iterator("s", other, &Start::At(seq.clone()))
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "InvalidArgumentException");
    let it = c
        .shard_iterator("s", &shard, &Start::At(seq.clone()))
        .await
        .unwrap();
    let e = c.get_records("garbage!", 10).await.unwrap_err();
    assert_eq!(kind(&e), "InvalidArgumentException");
    let mut forged = it.clone().into_bytes();
    let mid = forged.len() / 2;
    forged[mid] = if forged[mid] == b'A' { b'B' } else { b'A' };
    let e = c
        .get_records(&String::from_utf8(forged).unwrap(), 10)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "InvalidArgumentException");
    let e = c.get_records(&it, 10_001).await.unwrap_err();
    assert_eq!(kind(&e), "ValidationException");
    assert_eq!(
        c.get_records(&it, 10).await.unwrap().records[0].sequence_number,
        seq
    );
    server.node().clock.set_offset_ms(301_000);
    let e = c.get_records(&it, 10).await.unwrap_err();
    assert_eq!(kind(&e), "ExpiredIteratorException");
    server.node().clock.set_offset_ms(0);

    let e = c.delete_stream("nope").await.unwrap_err();
    assert_eq!(kind(&e), "ResourceNotFoundException");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_expired_records_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    c.create_stream("t", 1, 24).await.unwrap();
    c.wait_active("t", Duration::from_secs(30)).await.unwrap();
    for i in 0..50 {
        c.put_record("t", "k", format!("old{i}").into_bytes())
            .await
            .unwrap();
    }
    // Twenty hours later, more records arrive.
    server.node().clock.set_offset_ms(20 * 3_600_000);
    for i in 0..10 {
        c.put_record("t", "k", format!("new{i}").into_bytes())
            .await
            .unwrap();
    }
    server.node().trim_expired();
    assert_eq!(
        count_records(&c, "t").await,
        60,
        "nothing is older than 24 h yet"
    );
    // Five more hours: the first batch is 25 h old, the second 5 h.
    server.node().clock.set_offset_ms(25 * 3_600_000);
    server.node().trim_expired();
    let it = c
        .shard_iterator("t", "shardId-000000000000", &Start::TrimHorizon)
        .await
        .unwrap();
    let recs = c.get_records(&it, 1000).await.unwrap().records;
    let data: Vec<String> = recs
        .iter()
        .map(|r| String::from_utf8(r.data.to_vec()).unwrap())
        .collect();
    assert_eq!(data, (0..10).map(|i| format!("new{i}")).collect::<Vec<_>>());
    // Writes and reads go on after trimming.
    c.put_record("t", "k", b"later".to_vec()).await.unwrap();
    assert_eq!(count_records(&c, "t").await, 11);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_records_to_one_shard_is_one_raft_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    c.create_stream("batch", 1, 0).await.unwrap();
    c.wait_active("batch", Duration::from_secs(30))
        .await
        .unwrap();
    let entries: Vec<(String, Vec<u8>)> = (0..500)
        .map(|i| (format!("k{i}"), vec![b'x'; 100]))
        .collect();
    let r = c.put_records("batch", entries).await.unwrap();
    assert_eq!(r.failed_record_count, 0);
    let seqs: Vec<runnel_types::SequenceNumber> = r
        .records
        .iter()
        .map(|x| runnel_types::SequenceNumber::parse(&x.sequence_number).unwrap())
        .collect();
    // All 500 records travelled in one Raft entry, at consecutive offsets in request order.
    assert!(seqs
        .iter()
        .all(|s| s.pos.log_index == seqs[0].pos.log_index));
    let subs: Vec<u32> = seqs.iter().map(|s| s.pos.sub).collect();
    assert_eq!(subs, (0..500).collect::<Vec<u32>>());
    // Concurrent single-record writes to the same shard share entries too (fewer entries than
    // records) and still get distinct, increasing sequence numbers.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.put_record("batch", &format!("c{i}"), b"y".to_vec())
                .await
                .unwrap()
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(runnel_types::SequenceNumber::parse(&t.await.unwrap().1).unwrap());
    }
    let mut entries_used: Vec<u64> = got.iter().map(|s| s.pos.log_index).collect();
    entries_used.sort();
    entries_used.dedup();
    eprintln!(
        "200 concurrent writes used {} Raft entries",
        entries_used.len()
    );
    assert!(
        entries_used.len() < 200,
        "every concurrent write took its own Raft entry"
    );
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_records_long_poll_answers_when_a_record_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    c.create_stream("lp", 1, 0).await.unwrap();
    c.wait_active("lp", Duration::from_secs(30)).await.unwrap();
    let shard = c.list_shards("lp").await.unwrap()[0].shard_id.clone();
    let it = c
        .shard_iterator("lp", &shard, &Start::Latest)
        .await
        .unwrap();

    // Nothing arrives: the call waits (about) the time asked for and returns no records, with
    // an iterator that still points at the same place.
    let t = std::time::Instant::now();
    let empty = c
        .get_records_wait(&it, 100, Duration::from_millis(400))
        .await
        .unwrap();
    assert!(empty.records.is_empty());
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "the call did not wait: {:?}",
        t.elapsed()
    );

    // A record written while the call waits is returned by that call.
    let waiting = {
        let c = c.clone();
        let it = empty.next_shard_iterator.clone();
        tokio::spawn(async move {
            c.get_records_wait(&it, 100, Duration::from_secs(5))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the long poll answered before any write"
    );
    let (_, seq) = c.put_record("lp", "k", b"hello".to_vec()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the long poll did not answer")
        .unwrap();
    assert_eq!(got.records.len(), 1, "{got:?}");
    assert_eq!(got.records[0].sequence_number, seq);
    assert_eq!(&got.records[0].data[..], b"hello");

    // Without a wait, GetRecords answers at once (Kinesis behaviour).
    let t = std::time::Instant::now();
    let r = c.get_records(&got.next_shard_iterator, 100).await.unwrap();
    assert!(r.records.is_empty());
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_batches_records_and_acknowledges_each_with_its_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    c.create_stream("prod", 4, 0).await.unwrap();
    c.wait_active("prod", Duration::from_secs(30))
        .await
        .unwrap();
    let producer = runnel_client::Producer::new(
        c.clone(),
        "prod",
        runnel_client::ProducerConfig {
            max_in_flight: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // 400 records over 20 keys, all queued at once.
    let sends: Vec<_> = (0..400)
        .map(|i| {
            let p = producer.clone();
            let key = format!("key-{}", i % 20);
            let data = format!("{key}:{i}").into_bytes();
            tokio::spawn(async move {
                let r = p.send(key.clone(), data.clone()).await;
                (key, data, r)
            })
        })
        .collect();
    let mut acked = Vec::new();
    for s in sends {
        let (key, data, r) = s.await.unwrap();
        let (shard, seq) = r.unwrap();
        acked.push((key, data, shard, seq));
    }
    // Every record is where its acknowledgement says, and batching happened: fewer Raft entries
    // (distinct log indexes) than records.
    let stored = stored_records(&c, "prod").await;
    let mut entries = std::collections::BTreeSet::new();
    for (key, data, shard, seq) in &acked {
        let (s_shard, s_key, s_data) = stored.get(seq).expect("acknowledged record not stored");
        assert_eq!((s_shard, s_key, s_data), (shard, key, data));
        let parsed = runnel_types::SequenceNumber::parse(seq).unwrap();
        entries.insert((shard.clone(), parsed.pos.log_index));
    }
    assert_eq!(stored.len(), 400);
    assert!(
        entries.len() < 400,
        "no batching: {} entries",
        entries.len()
    );
    // A bad key is refused before anything is sent.
    let e = producer
        .send(String::new(), b"x".to_vec())
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "ValidationException");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_stream_acknowledges_each_record_and_reports_failures_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    c.create_stream("rs", 4, 0).await.unwrap();
    c.wait_active("rs", Duration::from_secs(30)).await.unwrap();
    let rs = c.record_stream("rs");
    // 300 records over 30 keys, all outstanding at once, with bad records among them: an empty
    // partition key and a record above the 1 MiB limit fail on their own.
    let sends: Vec<_> = (0..300)
        .map(|i| {
            let rs = rs.clone();
            let (key, data) = match i {
                100 => (String::new(), b"no key".to_vec()),
                200 => ("big".to_string(), vec![0u8; (1 << 20) + 1]),
                _ => (format!("key-{}", i % 30), format!("v{i}").into_bytes()),
            };
            tokio::spawn(async move {
                let r = rs.send(key.clone(), data.clone()).await;
                (i, key, data, r)
            })
        })
        .collect();
    let mut acked = Vec::new();
    for s in sends {
        let (i, key, data, r) = s.await.unwrap();
        match i {
            100 | 200 => assert_eq!(kind(&r.unwrap_err()), "ValidationException", "record {i}"),
            _ => {
                let (shard, seq) = r.unwrap();
                acked.push((key, data, shard, seq));
            }
        }
    }
    // The stream stays usable after failures, and records of one key sent one after the other
    // get increasing sequence numbers.
    let mut last = None;
    for i in 0..5 {
        let (shard, seq) = rs.send("ordered".into(), vec![i]).await.unwrap();
        let n = runnel_types::SequenceNumber::parse(&seq).unwrap();
        if let Some(prev) = last {
            assert!(n > prev, "sequence numbers not increasing");
        }
        last = Some(n);
        acked.push(("ordered".into(), vec![i], shard, seq));
    }
    // A stream that does not exist fails each record with ResourceNotFoundException.
    let missing = c.record_stream("no-such-stream");
    let e = missing.send("k".into(), b"x".to_vec()).await.unwrap_err();
    assert_eq!(kind(&e), "ResourceNotFoundException");

    // Every acknowledged record is stored under its sequence number, and nothing else is.
    let stored = stored_records(&c, "rs").await;
    assert_eq!(stored.len(), acked.len());
    for (key, data, shard, seq) in &acked {
        let (s_shard, s_key, s_data) = stored.get(seq).expect("acknowledged record not stored");
        assert_eq!((s_shard, s_key, s_data), (shard, key, data));
    }

    // The producer's streaming mode: each record on its own over the leader's stream.
    let producer = runnel_client::Producer::new(
        c.clone(),
        "rs",
        runnel_client::ProducerConfig {
            streaming: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let sends: Vec<_> = (0..100)
        .map(|i| {
            let p = producer.clone();
            tokio::spawn(async move { p.send(format!("p{}", i % 7), vec![i as u8]).await })
        })
        .collect();
    for s in sends {
        let (_, seq) = s.await.unwrap().unwrap();
        assert!(runnel_types::SequenceNumber::parse(&seq).is_ok());
    }
    assert_eq!(count_records(&c, "rs").await, acked.len() + 100);
    server.shutdown().await;
}

/// Reads pages from a tail until `n` records arrived; returns them and the last page's
/// iterator.
async fn take_tail(
    pages: &mut tonic::Streaming<pb::GetRecordsResponse>,
    n: usize,
) -> (Vec<pb::Record>, String) {
    let mut got = Vec::new();
    let mut it = String::new();
    while got.len() < n {
        let page = tokio::time::timeout(Duration::from_secs(10), pages.message())
            .await
            .expect("tail stalled")
            .expect("tail failed")
            .expect("tail ended");
        got.extend(page.records);
        it = page.next_shard_iterator;
    }
    (got, it)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_pushes_every_record_in_order_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    c.create_stream("t", 1, 0).await.unwrap();
    c.wait_active("t", Duration::from_secs(30)).await.unwrap();
    let shard = c.list_shards("t").await.unwrap()[0].shard_id.clone();
    let mut acked = Vec::new();
    for i in 0..50 {
        let data = format!("early-{i}").into_bytes();
        let (_, seq) = c
            .put_record("t", &format!("k{}", i % 5), data.clone())
            .await
            .unwrap();
        acked.push((seq, data));
    }
    let from_start = c
        .shard_iterator("t", &shard, &Start::TrimHorizon)
        .await
        .unwrap();
    let from_latest = c.shard_iterator("t", &shard, &Start::Latest).await.unwrap();
    let mut all = c.tail_shard(&from_start, 7).await.unwrap();
    let mut new = c.tail_shard(&from_latest, 0).await.unwrap();
    // Writes while both tails run, from several tasks at once.
    let writes: Vec<_> = (0..4)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..50 {
                    let data = format!("late-{w}-{i}").into_bytes();
                    let (_, seq) = c
                        .put_record("t", &format!("w{w}"), data.clone())
                        .await
                        .unwrap();
                    out.push((seq, data));
                }
                out
            })
        })
        .collect();
    for w in writes {
        acked.extend(w.await.unwrap());
    }
    acked.sort_by_key(|(seq, _)| runnel_types::SequenceNumber::parse(seq).unwrap());
    let pairs = |recs: &[pb::Record]| -> Vec<(String, Vec<u8>)> {
        recs.iter()
            .map(|r| (r.sequence_number.clone(), r.data.to_vec()))
            .collect()
    };
    // From TRIM_HORIZON: every record, in sequence order, none twice, at most 7 per page.
    let (got, it) = take_tail(&mut all, acked.len()).await;
    assert_eq!(pairs(&got), acked);
    // From LATEST: exactly the records written after the iterator was taken.
    let (got_new, _) = take_tail(&mut new, 200).await;
    assert_eq!(pairs(&got_new), acked[50..].to_vec());

    // With nothing new, a page without records comes after about a second.
    let idle = tokio::time::timeout(Duration::from_secs(5), all.message())
        .await
        .expect("no idle page")
        .unwrap()
        .unwrap();
    assert!(idle.records.is_empty());
    assert_eq!(idle.millis_behind_latest, 0);

    // Tails do not use up the shard's shared read limit (5 GetRecords calls per second).
    for _ in 0..5 {
        c.raw()
            .get_records(pb::GetRecordsRequest {
                shard_iterator: from_start.clone(),
                limit: 1,
                wait_ms: 0,
            })
            .await
            .expect("a GetRecords call was throttled although only tails had read");
    }

    // A new tail from the last page's iterator resumes exactly after it.
    drop(all);
    let mut resumed = c.tail_shard(&it, 0).await.unwrap();
    let mut more = Vec::new();
    for i in 0..10 {
        let data = format!("after-{i}").into_bytes();
        let (_, seq) = c.put_record("t", "k0", data.clone()).await.unwrap();
        more.push((seq, data));
    }
    let (got_more, _) = take_tail(&mut resumed, 10).await;
    assert_eq!(pairs(&got_more), more);

    // Bad input: a malformed iterator, a limit above the maximum.
    let e = c.tail_shard("not-an-iterator", 0).await.unwrap_err();
    assert_eq!(kind(&e), "InvalidArgumentException");
    let e = c.tail_shard(&it, 10_001).await.unwrap_err();
    assert_eq!(kind(&e), "ValidationException");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_per_shard_are_capped_and_a_closed_tail_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let limits = runnel_types::Limits {
        max_tails_per_shard: 3,
        ..Default::default()
    };
    let (server, c) = start_with(dir.path(), limits).await;
    c.create_stream("cap", 2, 0).await.unwrap();
    c.wait_active("cap", Duration::from_secs(30)).await.unwrap();
    let shards = c.list_shards("cap").await.unwrap();
    let it = |shard: usize| {
        let c = c.clone();
        let id = shards[shard].shard_id.clone();
        async move { c.shard_iterator("cap", &id, &Start::Latest).await.unwrap() }
    };
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(c.tail_shard(&it(0).await, 0).await.unwrap());
    }
    let e = c.tail_shard(&it(0).await, 0).await.unwrap_err();
    assert_eq!(kind(&e), "LimitExceededException");
    // The cap is per shard: the other shard still takes tails.
    let other = c.tail_shard(&it(1).await, 0).await.unwrap();
    // A closed tail gives its place back once the server notices (at its next page, <= 1 s).
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reopened = loop {
        match c.tail_shard(&it(0).await, 0).await {
            Ok(t) => break t,
            Err(e) => {
                assert_eq!(kind(&e), "LimitExceededException");
                assert!(tokio::time::Instant::now() < deadline, "place not freed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    drop((open, other, reopened));
    server.shutdown().await;
}
