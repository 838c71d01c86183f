//! The AWS SDK for Rust (`aws-sdk-kinesis`, configured through `aws-config` as an application
//! would) against a 3-node cluster with SigV4 keys: create, wait, put, list shards, read back,
//! requests spread over the nodes; a wrong secret is refused.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use common::TestCluster;

const KEYS: &str =
    "[auth]\naccess_keys = [ { id = \"AKIDSDKTEST\", secret = \"sdk-test-secret\" } ]\n";

async fn sdk(endpoint: String, secret: &str) -> aws_sdk_kinesis::Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDSDKTEST", secret, None, None, "test"))
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_kinesis::Client::new(&config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sdk_for_rust_works_unchanged() {
    let cluster = TestCluster::start_with(3, KEYS);
    cluster.wait_ready(Duration::from_secs(60)).await;
    let mut clients = Vec::new();
    for n in &cluster.nodes {
        clients.push(sdk(format!("http://127.0.0.1:{}", n.http), "sdk-test-secret").await);
    }

    clients[0]
        .create_stream()
        .stream_name("sdk")
        .shard_count(2)
        .send()
        .await
        .expect("create");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = clients[1]
            .describe_stream_summary()
            .stream_name("sdk")
            .send()
            .await
            .expect("describe")
            .stream_description_summary
            .map(|s| s.stream_status);
        if status == Some(StreamStatus::Active) {
            break;
        }
        assert!(Instant::now() < deadline, "stream not ACTIVE: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let one = clients[2]
        .put_record()
        .stream_name("sdk")
        .partition_key("k")
        .data(Blob::new(b"first".to_vec()))
        .send()
        .await
        .expect("put_record");
    let entries: Vec<PutRecordsRequestEntry> = (0..20)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{i}"))
                .data(Blob::new(format!("batch-{i}").into_bytes()))
                .build()
                .expect("entry")
        })
        .collect();
    let batch = clients[0]
        .put_records()
        .stream_name("sdk")
        .set_records(Some(entries))
        .send()
        .await
        .expect("put_records");
    assert_eq!(batch.failed_record_count, Some(0));
    assert_eq!(batch.records.len(), 20);

    let shards = clients[1]
        .list_shards()
        .stream_name("sdk")
        .send()
        .await
        .expect("list_shards")
        .shards
        .unwrap_or_default();
    assert_eq!(shards.len(), 2);

    let mut data = Vec::new();
    for shard in &shards {
        let it = clients[2]
            .get_shard_iterator()
            .stream_name("sdk")
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("iterator")
            .shard_iterator
            .expect("iterator string");
        let page = clients[0]
            .get_records()
            .shard_iterator(it)
            .send()
            .await
            .expect("get_records");
        assert!(page.next_shard_iterator.is_some());
        for r in page.records {
            if r.sequence_number == one.sequence_number {
                assert_eq!(r.data.as_ref(), b"first");
            }
            data.push(String::from_utf8(r.data.into_inner()).expect("utf8"));
        }
    }
    data.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("batch-{i}")).collect();
    expected.push("first".into());
    expected.sort();
    assert_eq!(data, expected);

    let bad = sdk(
        format!("http://127.0.0.1:{}", cluster.nodes[0].http),
        "wrong",
    )
    .await;
    let err = bad.list_streams().send().await.expect_err("bad signature");
    let code = err.as_service_error().and_then(|e| {
        use aws_sdk_kinesis::error::ProvideErrorMetadata;
        e.code().map(str::to_string)
    });
    assert_eq!(
        code.as_deref(),
        Some("InvalidSignatureException"),
        "{err:?}"
    );
}
