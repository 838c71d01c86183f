//! The Kinesis endpoint against the node's clock (in-process, test clock offset): NextToken and
//! shard iterators expire after 300 s with AWS's exception names, and SigV4 signatures older
//! than 15 minutes by the node's clock are refused.

use std::time::Duration;

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use runnel_server::config::{AccessKey, NodeConfig};

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

fn code<E: ProvideErrorMetadata>(e: &aws_sdk_kinesis::error::SdkError<E>) -> Option<String> {
    e.as_service_error()
        .and_then(|s| s.code().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_iterators_and_signatures_follow_the_node_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc_port, http_port) = free_ports();
    let mut config = NodeConfig {
        data_dir: dir.path().to_path_buf(),
        grpc_listen: format!("127.0.0.1:{grpc_port}").parse().unwrap(),
        http_listen: format!("127.0.0.1:{http_port}").parse().unwrap(),
        ..Default::default()
    };
    config.auth.access_keys = vec![AccessKey {
        id: "AKIDCLOCK".into(),
        secret: "clock-secret".into(),
    }];
    let server = runnel_server::start(config).await.unwrap();
    let sdk_config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDCLOCK",
            "clock-secret",
            None,
            None,
            "t",
        ))
        .endpoint_url(format!("http://{}", server.http_addr()))
        .load()
        .await;
    let k = aws_sdk_kinesis::Client::new(&sdk_config);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while k.list_streams().send().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "node not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    k.create_stream()
        .stream_name("clock")
        .shard_count(3)
        .send()
        .await
        .unwrap();
    loop {
        let s = k
            .describe_stream_summary()
            .stream_name("clock")
            .send()
            .await
            .unwrap();
        if s.stream_description_summary.map(|d| d.stream_status) == Some(StreamStatus::Active) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "stream not active");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = k
        .list_shards()
        .stream_name("clock")
        .max_results(1)
        .send()
        .await
        .unwrap();
    let token = page.next_token.expect("a NextToken");
    let it = k
        .get_shard_iterator()
        .stream_name("clock")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();

    // 301 s later the token and the iterator have expired.
    server.node().clock.set_offset_ms(301_000);
    let signed_now = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(&sdk_config)
            .time_source(OffsetClock(301))
            .build(),
    );
    let e = signed_now
        .list_shards()
        .next_token(&token)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(&e).as_deref(),
        Some("ExpiredNextTokenException"),
        "{e:?}"
    );
    let e = signed_now
        .get_records()
        .shard_iterator(&it)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(&e).as_deref(),
        Some("ExpiredIteratorException"),
        "{e:?}"
    );

    // 20 minutes later by the node's clock, a request signed with the real time is stale.
    server.node().clock.set_offset_ms(20 * 60 * 1000);
    let e = k.list_streams().send().await.unwrap_err();
    assert_eq!(
        code(&e).as_deref(),
        Some("InvalidSignatureException"),
        "{e:?}"
    );
    assert!(
        e.as_service_error()
            .and_then(|s| s.message())
            .is_some_and(|m| m.starts_with("Signature expired")),
        "{e:?}"
    );
    server.node().clock.set_offset_ms(0);
    k.list_streams().send().await.unwrap();
    server.shutdown().await;
}

/// The system time shifted forward, so the SDK signs as the shifted node clock expects.
#[derive(Debug)]
struct OffsetClock(u64);

impl aws_smithy_async::time::TimeSource for OffsetClock {
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now() + Duration::from_secs(self.0)
    }
}
