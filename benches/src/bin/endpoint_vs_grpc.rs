//! PutRecords throughput through the Kinesis HTTP endpoint (the AWS SDK for Rust: SigV4, JSON,
//! base64) versus the native gRPC API, same records and concurrency: each of `--clients` tasks
//! sends PutRecords of `--batch` records of `--size` bytes back to back for `--secs` seconds,
//! both transports in every one of `--rounds` rounds (which goes first alternates). Prints one line per round and a JSON summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// gRPC endpoint of a node.
    #[arg(long, default_value = "http://127.0.0.1:4601")]
    grpc: String,
    /// Kinesis HTTP endpoints (comma-separated; clients are spread over them).
    #[arg(long, default_value = "http://127.0.0.1:4567")]
    http: String,
    /// gRPC endpoints (comma-separated; clients are spread over them). Defaults to --grpc.
    #[arg(long)]
    grpc_all: Option<String>,
    /// Stream to create (or reuse).
    #[arg(long, default_value = "bench-endpoint")]
    stream: String,
    /// Shards of the stream.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Concurrent clients per transport.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Records per PutRecords.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Record size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Rounds (each runs gRPC then HTTP).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Run both transports at the same time (each with --clients clients) instead of one after
    /// the other: both then see the same store state, which removes the drift a filling store
    /// causes between back-to-back runs.
    #[arg(long)]
    together: bool,
}

#[derive(Default)]
struct Counts {
    records: AtomicU64,
    calls: AtomicU64,
    errors: AtomicU64,
}

/// Waits for the client tasks; returns (acknowledged records per second, failed calls).
async fn finish(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    counts: &Counts,
    started: Instant,
) -> (f64, u64) {
    for t in tasks {
        let _ = t.await;
    }
    let rate = counts.records.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    (rate, counts.errors.load(Ordering::Relaxed))
}

fn entries(batch: usize, size: usize, salt: usize) -> Vec<(String, Vec<u8>)> {
    (0..batch)
        .map(|i| (format!("key-{salt}-{i}"), vec![b'x'; size]))
        .collect()
}

async fn run_grpc(args: &Args, endpoints: &[String]) -> (f64, u64) {
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.secs);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let client = runnel_client::Client::connect_lazy(&endpoints[c % endpoints.len()])
            .expect("gRPC endpoint");
        let counts = counts.clone();
        let (stream, batch, size) = (args.stream.clone(), args.batch, args.size);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match client.put_records(&stream, entries(batch, size, c)).await {
                    Ok(r) => {
                        let ok = r.records.len() as u64 - u64::from(r.failed_record_count);
                        counts.records.fetch_add(ok, Ordering::Relaxed);
                        counts.calls.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    finish(tasks, &counts, started).await
}

async fn sdk(endpoint: &str) -> aws_sdk_kinesis::Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("bench", "bench", None, None, "bench"))
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_kinesis::Client::new(&config)
}

async fn run_http(args: &Args, endpoints: &[String]) -> (f64, u64) {
    let counts = Arc::new(Counts::default());
    let mut clients = Vec::new();
    for c in 0..args.clients {
        clients.push(sdk(&endpoints[c % endpoints.len()]).await);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.secs);
    let mut tasks = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        let counts = counts.clone();
        let (stream, batch, size) = (args.stream.clone(), args.batch, args.size);
        tasks.push(tokio::spawn(async move {
            let records: Vec<PutRecordsRequestEntry> = entries(batch, size, c)
                .into_iter()
                .map(|(k, d)| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(k)
                        .data(Blob::new(d))
                        .build()
                        .expect("entry")
                })
                .collect();
            while Instant::now() < deadline {
                let r = client
                    .put_records()
                    .stream_name(&stream)
                    .set_records(Some(records.clone()))
                    .send()
                    .await;
                match r {
                    Ok(r) => {
                        let failed = r.failed_record_count.unwrap_or(0).max(0) as u64;
                        counts
                            .records
                            .fetch_add(r.records.len() as u64 - failed, Ordering::Relaxed);
                        counts.calls.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    finish(tasks, &counts, started).await
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let http: Vec<String> = args.http.split(',').map(str::to_string).collect();
    let grpc: Vec<String> = args
        .grpc_all
        .as_deref()
        .unwrap_or(&args.grpc)
        .split(',')
        .map(str::to_string)
        .collect();
    let admin = runnel_client::Client::connect_lazy(&grpc[0]).expect("gRPC endpoint");
    if admin.describe_stream_summary(&args.stream).await.is_err() {
        admin
            .create_stream(&args.stream, args.shards, 0)
            .await
            .expect("create stream");
    }
    admin
        .wait_active(&args.stream, Duration::from_secs(60))
        .await
        .expect("stream active");
    let mb = |rate: f64| rate * args.size as f64 / 1e6;
    let (mut g, mut h, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        // Alternate which transport goes first: the store slows down as it fills (compaction),
        // so a fixed order would favour the first.
        let ((gr, ge), (hr, he)) = if args.together {
            tokio::join!(run_grpc(&args, &grpc), run_http(&args, &http))
        } else if round % 2 == 1 {
            let g = run_grpc(&args, &grpc).await;
            (g, run_http(&args, &http).await)
        } else {
            let h = run_http(&args, &http).await;
            (run_grpc(&args, &grpc).await, h)
        };
        println!(
            "round {round}: gRPC {gr:>9.0} records/s ({:.1} MB/s, {ge} errors) | HTTP endpoint {hr:>9.0} records/s ({:.1} MB/s, {he} errors) | endpoint/gRPC {:.2}",
            mb(gr),
            mb(hr),
            hr / gr.max(1.0)
        );
        g.push(gr);
        h.push(hr);
        ratios.push(hr / gr.max(1.0));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (gm, hm, rm) = (median(&mut g), median(&mut h), median(&mut ratios));
    println!(
        "{}",
        serde_json::json!({
            "clients": args.clients, "batch": args.batch, "record_bytes": args.size,
            "shards": args.shards, "secs_per_run": args.secs, "rounds": args.rounds,
            "together": args.together,
            "grpc_records_per_sec_median": gm.round(),
            "http_records_per_sec_median": hm.round(),
            "endpoint_over_grpc_median_of_rounds": (rm * 1000.0).round() / 1000.0,
        })
    );
}
