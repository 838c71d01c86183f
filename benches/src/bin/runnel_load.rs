//! `runnel-load`: a load generator for a Runnel cluster (gRPC API) and, with `--system nats`,
//! for a NATS JetStream cluster, so both are driven by the same code and concurrency.
//!
//! Producers write records of a fixed size, alone (PutRecord) or in PutRecords batches, either
//! closed-loop (each producer keeps `--in-flight` requests outstanding: throughput at
//! saturation) or open-loop (`--rate` records per second in total, spread over the producers;
//! latency is measured from the *scheduled* send time, so a stalled system cannot hide its
//! queueing: no coordinated omission). Optional consumers follow every shard with GetRecords
//! and measure end-to-end propagation: from the moment the record was handed to the client to
//! the moment a consumer received it (the send time travels in the record's first 8 bytes; all
//! processes share the machine's clock). The gap between the two start points, how late each
//! send began (tokio's timers tick in milliseconds, the generator shares the CPUs with the
//! system under test, and a send waits while all of its producer's slots are taken), is
//! reported as `send_lag`: it is in the ack latency and not in propagation.
//!
//! Runnel consumers tail each shard on its leader (`TailShard`, a Runnel extension: records are
//! pushed as they commit, as a NATS consumer's are), or with `--poll-consumers` long-poll
//! GetRecords (`--poll-wait-ms`, also an extension) or, with a wait of 0, poll like a Kinesis
//! consumer every 200 ms when a shard has nothing new. On NATS, `--shards`
//! streams (R3, file storage) stand for the shards: each record goes to stream `hash(key) % N`;
//! consumers are ephemeral pull consumers (deliver new, no acks), one per stream.
//!
//! Output: a progress line per second, then the results as JSON (`--json`) and one Markdown
//! table row. Latencies are HdrHistogram percentiles over the measured window (after
//! `--warmup`). This is a benchmark: it measures and reports, it asserts nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hdrhistogram::Histogram;
use rand::Rng;
use runnel_client::{Client, Start};

#[derive(Parser, Clone, Debug)]
#[command(name = "runnel-load", about = "Load generator for Runnel (gRPC)")]
struct Args {
    /// The system under test: `runnel` (gRPC endpoints) or `nats` (NATS URLs).
    #[arg(long, default_value = "runnel", value_parser = ["runnel", "nats"])]
    system: String,
    /// Endpoints, comma-separated; producers and consumers rotate over them (Runnel: gRPC
    /// URLs such as http://127.0.0.1:4600; NATS: nats://127.0.0.1:4222).
    #[arg(long, default_value = "http://127.0.0.1:4600")]
    endpoints: String,
    /// Stream to write.
    #[arg(long, default_value = "bench")]
    stream: String,
    /// Create the stream with this many shards first (0: it must exist). On NATS: create this
    /// many JetStream streams (R3, file storage) named `<stream>0..`.
    #[arg(long, default_value_t = 0)]
    create_shards: u32,
    /// NATS only: how many streams `<stream>0..` to write when they already exist.
    #[arg(long, default_value_t = 1)]
    nats_streams: u32,
    /// Concurrent producers.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Outstanding requests per producer (closed loop), or the cap of outstanding requests
    /// per producer in open loop (a send that finds the cap reached waits for a slot and is
    /// counted as `late`; its latency still counts from its scheduled time).
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Records per second in total (open loop); 0 = closed loop (saturation).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Bytes of data per record (at least 16).
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records per request: 1 = PutRecord, more = PutRecords.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Runnel: send records through the client's batching, leader-aware `Producer` (one per
    /// load producer; `--in-flight` records outstanding each) instead of one call per request.
    #[arg(long)]
    client_batching: bool,
    /// Runnel: send every record on its own over a long-lived PutRecordStream through the
    /// producer's endpoint (one stream per load producer; no call per record, no batching).
    #[arg(long, conflicts_with_all = ["client_batching", "client_streaming"])]
    record_stream: bool,
    /// Runnel: the client's leader-aware `Producer` in streaming mode: every record on its own
    /// over a PutRecordStream to its shard's leader (no batching, no call per record).
    #[arg(long, conflicts_with = "client_batching")]
    client_streaming: bool,
    /// With `--client-batching`: PutRecords calls outstanding per shard in each producer.
    #[arg(long, default_value_t = 2)]
    producer_calls_per_shard: usize,
    /// Follow every shard with GetRecords and measure propagation.
    #[arg(long)]
    consumers: bool,
    /// Runnel consumers poll with GetRecords instead of tailing shards with TailShard.
    #[arg(long)]
    poll_consumers: bool,
    /// Runnel consumers with --poll-consumers: long-poll wait per GetRecords in ms (0 = poll every 200 ms when
    /// nothing is new, as a Kinesis consumer does).
    #[arg(long, default_value_t = 1000)]
    poll_wait_ms: u64,
    /// Fill record data with random (incompressible) bytes instead of `x` bytes.
    #[arg(long)]
    random_data: bool,
    /// Delete the stream (NATS: the streams) after the run.
    #[arg(long)]
    delete_after: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// A label for the results (the table row's first column; default: the system).
    #[arg(long)]
    label: Option<String>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn histogram() -> Result<Histogram<u64>, String> {
    // Microseconds, 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| format!("hdrhistogram: {e}"))
}

#[derive(Default)]
struct Stats {
    measuring: AtomicBool,
    acked: AtomicU64,
    bytes: AtomicU64,
    throttled: AtomicU64,
    errors: AtomicU64,
    late: AtomicU64,
    delivered: AtomicU64,
    ack: Mutex<Option<Histogram<u64>>>,
    propagation: Mutex<Option<Histogram<u64>>>,
    /// Open loop: how late each send started (scheduled time → record built; timer ticks,
    /// CPU contention, waiting for a slot). Part of the ack latency (measured from the
    /// scheduled time), not of propagation.
    send_lag: Mutex<Option<Histogram<u64>>>,
    /// Ack latencies of the current second only (the progress line's last column).
    ack_second: Mutex<Option<Histogram<u64>>>,
}

impl Stats {
    fn record(h: &Mutex<Option<Histogram<u64>>>, micros: u64) {
        if let Ok(mut g) = h.lock() {
            if let Some(h) = g.as_mut() {
                let _ = h.record(micros.max(1));
            }
        }
    }
}

/// Random bytes record data is cut from with `--random-data` (large enough that two records in
/// one compression block rarely share bytes).
static RANDOM_FILL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
const RANDOM_FILL_BYTES: usize = 16 << 20;

/// A record's data: send time, producer and sequence, then `x` bytes, or with `--random-data`
/// incompressible bytes from a random place of [`RANDOM_FILL`].
fn payload(size: usize, producer: u32, seq: u32) -> Vec<u8> {
    let size = size.max(16);
    let mut d = match RANDOM_FILL.get() {
        Some(fill) if size <= fill.len() => {
            let spot =
                ((u64::from(seq) << 32) | u64::from(producer)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let at = (spot % (fill.len() - size + 1) as u64) as usize;
            fill[at..at + size].to_vec()
        }
        _ => vec![b'x'; size],
    };
    d[..8].copy_from_slice(&now_ns().to_le_bytes());
    d[8..12].copy_from_slice(&producer.to_le_bytes());
    d[12..16].copy_from_slice(&seq.to_le_bytes());
    d
}

/// Where producers and consumers send their calls.
#[derive(Clone)]
enum Target {
    Runnel(Client),
    /// Runnel through the client's batching, leader-aware producer (one per load producer).
    Producer(runnel_client::Producer),
    /// Runnel: single records pipelined on one PutRecordStream (one per load producer).
    Stream(runnel_client::RecordStream),
    /// A JetStream context and the number of streams standing for shards.
    Nats(async_nats::jetstream::Context, u32),
}

/// The NATS stream a key goes to: FNV-1a of the key modulo the stream count.
fn nats_stream_of(key: &str, streams: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % streams.max(1)
}

/// Publishes `entries` to JetStream and waits for every acknowledgement; returns (ok, failed).
async fn nats_send(
    js: &async_nats::jetstream::Context,
    stream: &str,
    streams: u32,
    entries: Vec<(String, Vec<u8>)>,
) -> Result<(u64, u64), String> {
    let mut acks = Vec::with_capacity(entries.len());
    for (key, data) in entries {
        let subject = format!("{stream}{}.{key}", nats_stream_of(&key, streams));
        let ack = js
            .publish(subject, bytes::Bytes::from(data))
            .await
            .map_err(|e| e.to_string())?;
        acks.push(ack);
    }
    let mut ok = 0;
    let mut failed = 0;
    for ack in acks {
        match ack.await {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    Ok((ok, failed))
}

/// Sends one request of `batch` records; `started` is when it was due (open loop) or sent.
async fn send(
    target: Target,
    args: Arc<Args>,
    stats: Arc<Stats>,
    producer: u32,
    seq: u32,
    started: Instant,
) {
    if stats.measuring.load(Ordering::Relaxed) {
        Stats::record(&stats.send_lag, started.elapsed().as_micros() as u64);
    }
    // Keys are drawn before any await (the thread-local generator is not Send).
    let keys: Vec<String> = {
        let mut rng = rand::rng();
        (0..args.batch.max(1))
            .map(|_| format!("k{}", rng.random_range(0..1024)))
            .collect()
    };
    let entries: Vec<(String, Vec<u8>)> = keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            (
                k,
                payload(args.record_size, producer, seq.wrapping_add(i as u32)),
            )
        })
        .collect();
    let n = entries.len() as u64;
    // Ok((acknowledged, refused)), Err(throttled?)
    let result: Result<(u64, u64), bool> = match &target {
        Target::Runnel(client) if n == 1 => {
            let (key, data) = entries.into_iter().next().unwrap_or_default();
            match client.put_record(&args.stream, &key, data).await {
                Ok(_) => Ok((1, 0)),
                Err(runnel_types::Error::ProvisionedThroughputExceeded(_)) => Err(true),
                Err(_) => Err(false),
            }
        }
        Target::Runnel(client) => match client.put_records(&args.stream, entries).await {
            Ok(r) => {
                let failed = u64::from(r.failed_record_count);
                Ok((n - failed, failed))
            }
            Err(runnel_types::Error::ProvisionedThroughputExceeded(_)) => Err(true),
            Err(_) => Err(false),
        },
        Target::Producer(_) | Target::Stream(_) => {
            let sends = entries.into_iter().map(|(k, d)| async {
                match &target {
                    Target::Producer(p) => p.send(k, d).await,
                    Target::Stream(rs) => rs.send(k, d).await,
                    _ => Err(runnel_types::Error::Internal("unreachable".into())),
                }
            });
            let mut ok = 0;
            let mut failed = 0;
            let mut throttled = false;
            for r in futures::future::join_all(sends).await {
                match r {
                    Ok(_) => ok += 1,
                    Err(runnel_types::Error::ProvisionedThroughputExceeded(_)) => {
                        throttled = true;
                        failed += 1
                    }
                    Err(_) => failed += 1,
                }
            }
            if ok == 0 {
                Err(throttled)
            } else {
                Ok((ok, failed))
            }
        }
        Target::Nats(js, streams) => nats_send(js, &args.stream, *streams, entries)
            .await
            .map_err(|_| false),
    };
    if !stats.measuring.load(Ordering::Relaxed) {
        return;
    }
    match result {
        Ok((ok, failed)) => {
            stats.acked.fetch_add(ok, Ordering::Relaxed);
            stats
                .bytes
                .fetch_add(ok * args.record_size as u64, Ordering::Relaxed);
            stats.throttled.fetch_add(failed, Ordering::Relaxed);
            let micros = started.elapsed().as_micros() as u64;
            Stats::record(&stats.ack, micros);
            Stats::record(&stats.ack_second, micros);
        }
        Err(true) => {
            stats.throttled.fetch_add(n, Ordering::Relaxed);
        }
        Err(false) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn producer(id: u32, target: Target, args: Arc<Args>, stats: Arc<Stats>, stop: Instant) {
    let slots = Arc::new(tokio::sync::Semaphore::new(args.in_flight.max(1)));
    let mut seq = 0u32;
    if args.rate == 0 {
        while Instant::now() < stop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (t, a, s) = (target.clone(), args.clone(), stats.clone());
            tokio::spawn(async move {
                send(t, a, s, id, seq, Instant::now()).await;
                drop(permit);
            });
            seq = seq.wrapping_add(args.batch as u32);
        }
    } else {
        // Requests per second of this producer.
        let per_sec = args.rate as f64 / args.batch.max(1) as f64 / args.producers.max(1) as f64;
        let interval = Duration::from_secs_f64(1.0 / per_sec.max(0.001));
        // Producers are spread evenly over one interval: started in phase, P producers would
        // send P records at the same instant every interval, and at low rates those bursts,
        // not the system, would set the latency.
        let phase = f64::from(id) / args.producers.max(1) as f64;
        let start = Instant::now();
        let mut n = 0u64;
        while Instant::now() < stop {
            let due = start + interval.mul_f64(n as f64 + phase);
            n += 1;
            tokio::time::sleep_until(due.into()).await;
            // A send that finds every slot taken waits for one, and later sends queue behind
            // it: all of them are measured from their scheduled times. Skipping it instead
            // would leave the slowest moments out of the latency (coordinated omission).
            let permit = match slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if stats.measuring.load(Ordering::Relaxed) {
                        stats.late.fetch_add(1, Ordering::Relaxed);
                    }
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    permit
                }
            };
            let (t, a, s) = (target.clone(), args.clone(), stats.clone());
            tokio::spawn(async move {
                send(t, a, s, id, seq, due).await;
                drop(permit);
            });
            seq = seq.wrapping_add(args.batch as u32);
        }
    }
    // Let outstanding requests finish (bounded).
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        slots.acquire_many(args.in_flight.max(1) as u32),
    )
    .await;
}

/// Records the propagation time of delivered records (send time in their first 8 bytes).
fn delivered<'a>(stats: &Stats, data: impl Iterator<Item = &'a [u8]>) {
    let now = now_ns();
    if !stats.measuring.load(Ordering::Relaxed) {
        return;
    }
    let mut n = 0;
    for d in data {
        n += 1;
        if d.len() >= 8 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&d[..8]);
            let sent = u64::from_le_bytes(b);
            Stats::record(&stats.propagation, now.saturating_sub(sent) / 1000);
        }
    }
    stats.delivered.fetch_add(n, Ordering::Relaxed);
}

async fn runnel_consumer(
    client: Client,
    args: Arc<Args>,
    shard: String,
    stats: Arc<Stats>,
    stop: Instant,
) {
    let Ok(mut it) = client
        .shard_iterator(&args.stream, &shard, &Start::Latest)
        .await
    else {
        eprintln!("consumer {shard}: no iterator");
        return;
    };
    if !args.poll_consumers {
        return runnel_tail(client, &args, &shard, it, &stats, stop).await;
    }
    let wait = Duration::from_millis(args.poll_wait_ms);
    while Instant::now() < stop {
        match client.get_records_wait(&it, 10_000, wait).await {
            Ok(r) => {
                delivered(&stats, r.records.iter().map(|r| &r.data[..]));
                if !r.next_shard_iterator.is_empty() {
                    it = r.next_shard_iterator;
                }
                if r.records.is_empty() && wait.is_zero() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Err(e) => {
                eprintln!("consumer {shard}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Follows one shard with TailShard on its leader, resuming after breaks.
async fn runnel_tail(
    client: Client,
    args: &Args,
    shard: &str,
    it: String,
    stats: &Stats,
    stop: Instant,
) {
    let mut follower = runnel_client::ShardFollower::new(client, &args.stream, shard, it);
    while Instant::now() < stop {
        match follower.next_page().await {
            Ok(p) => delivered(stats, p.records.iter().map(|r| &r.data[..])),
            Err(e) => {
                eprintln!("consumer {shard}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn nats_consumer(
    js: async_nats::jetstream::Context,
    stream: String,
    stats: Arc<Stats>,
    stop: Instant,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    use futures::StreamExt;
    let consumer = match js.get_stream(&stream).await {
        Ok(s) => {
            s.create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::New,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
        }
        Err(e) => {
            eprintln!("consumer {stream}: {e}");
            return;
        }
    };
    let mut messages = match consumer {
        Ok(c) => match c.messages().await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("consumer {stream}: {e}");
                return;
            }
        },
        Err(e) => {
            eprintln!("consumer {stream}: {e}");
            return;
        }
    };
    let _ = ready.send(());
    loop {
        let left = stop.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, messages.next()).await {
            Ok(Some(Ok(m))) => delivered(&stats, std::iter::once(m.payload.as_ref())),
            Ok(Some(Err(e))) => eprintln!("consumer {stream}: {e}"),
            Ok(None) | Err(_) => return,
        }
    }
}

fn percentiles(h: &Option<Histogram<u64>>) -> serde_json::Value {
    match h {
        Some(h) if !h.is_empty() => serde_json::json!({
            "count": h.len(),
            "p50_ms": h.value_at_quantile(0.50) as f64 / 1000.0,
            "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0,
            "p999_ms": h.value_at_quantile(0.999) as f64 / 1000.0,
            "max_ms": h.max() as f64 / 1000.0,
        }),
        _ => serde_json::Value::Null,
    }
}

fn main() -> std::process::ExitCode {
    let args = Arc::new(Args::parse());
    if args.random_data {
        let mut fill = vec![0u8; RANDOM_FILL_BYTES];
        rand::rng().fill(&mut fill[..]);
        let _ = RANDOM_FILL.set(fill);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Arc<Args>) -> Result<(), String> {
    let endpoints: Vec<String> = args
        .endpoints
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err("no endpoints".into());
    }
    let stats = Arc::new(Stats::default());
    let total = Duration::from_secs(args.warmup + args.duration);
    let mut tasks = Vec::new();
    let (targets, shards) = if args.system == "nats" {
        setup_nats(&args, &endpoints).await?
    } else {
        setup_runnel(&args, &endpoints).await?
    };
    // Consumers run until the end of the run; they are aborted once it is measured.
    let consumers_stop = Instant::now() + total + Duration::from_secs(60);
    let mut consumer_tasks = Vec::new();
    if args.consumers {
        let mut ready = Vec::new();
        for (i, shard) in shards.iter().enumerate() {
            match &targets[i % targets.len()] {
                Target::Runnel(client) => consumer_tasks.push(tokio::spawn(runnel_consumer(
                    client.clone(),
                    args.clone(),
                    shard.clone(),
                    stats.clone(),
                    consumers_stop,
                ))),
                Target::Producer(_) | Target::Stream(_) => {}
                Target::Nats(js, _) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    ready.push(rx);
                    consumer_tasks.push(tokio::spawn(nats_consumer(
                        js.clone(),
                        shard.clone(),
                        stats.clone(),
                        consumers_stop,
                        tx,
                    )));
                }
            }
        }
        for r in ready {
            let _ = tokio::time::timeout(Duration::from_secs(10), r).await;
        }
        // Consumers start at LATEST: give them their iterators before the load starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut producer_targets = Vec::new();
    for p in 0..args.producers {
        let t = targets[p % targets.len()].clone();
        producer_targets.push(match &t {
            Target::Runnel(client) if args.client_batching || args.client_streaming => {
                Target::Producer(
                    runnel_client::Producer::new(
                        client.clone(),
                        &args.stream,
                        runnel_client::ProducerConfig {
                            max_in_flight: args.producer_calls_per_shard,
                            streaming: args.client_streaming,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| format!("producer: {e}"))?,
                )
            }
            Target::Runnel(client) if args.record_stream => {
                Target::Stream(client.record_stream(&args.stream))
            }
            _ => t,
        });
    }
    let stop = Instant::now() + total;
    for (p, target) in producer_targets.into_iter().enumerate() {
        tasks.push(tokio::spawn(producer(
            p as u32,
            target,
            args.clone(),
            stats.clone(),
            stop,
        )));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    *stats.ack.lock().map_err(|_| "lock")? = Some(histogram()?);
    *stats.propagation.lock().map_err(|_| "lock")? = Some(histogram()?);
    *stats.send_lag.lock().map_err(|_| "lock")? = Some(histogram()?);
    *stats.ack_second.lock().map_err(|_| "lock")? = Some(histogram()?);
    stats.measuring.store(true, Ordering::Relaxed);
    let measured_from = Instant::now();
    let mut last = 0u64;
    for sec in 1..=args.duration {
        tokio::time::sleep_until((measured_from + Duration::from_secs(sec)).into()).await;
        let acked = stats.acked.load(Ordering::Relaxed);
        let (p50, p99) = stats
            .ack
            .lock()
            .ok()
            .and_then(|g| {
                g.as_ref()
                    .map(|h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99)))
            })
            .unwrap_or((0, 0));
        // This second's p99, then a fresh histogram for the next one.
        let p99_second = stats
            .ack_second
            .lock()
            .ok()
            .and_then(|mut g| {
                g.as_mut().map(|h| {
                    let v = h.value_at_quantile(0.99);
                    h.reset();
                    v
                })
            })
            .unwrap_or(0);
        eprintln!(
            "t={sec:>3}s  {:>8} rec/s  {:>7.1} MB/s  ack p50 {:>7.2} ms  p99 {:>7.2} ms (this second {:>7.2})  throttled {}  errors {}  late {}",
            acked - last,
            (acked - last) as f64 * args.record_size as f64 / 1e6,
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
            p99_second as f64 / 1000.0,
            stats.throttled.load(Ordering::Relaxed),
            stats.errors.load(Ordering::Relaxed),
            stats.late.load(Ordering::Relaxed),
        );
        last = acked;
    }
    let elapsed = measured_from.elapsed().as_secs_f64();
    stats.measuring.store(false, Ordering::Relaxed);
    let acked = stats.acked.load(Ordering::Relaxed);
    let ack = stats.ack.lock().map_err(|_| "lock")?.clone();
    let propagation = stats.propagation.lock().map_err(|_| "lock")?.clone();
    let send_lag = stats.send_lag.lock().map_err(|_| "lock")?.clone();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    for t in consumer_tasks {
        t.abort();
    }
    if args.delete_after {
        match targets.first() {
            Some(Target::Runnel(client)) => {
                if let Err(e) = client.delete_stream(&args.stream).await {
                    eprintln!("DeleteStream {}: {e}", args.stream);
                }
            }
            Some(Target::Producer(_) | Target::Stream(_)) => {}
            Some(Target::Nats(js, _)) => {
                for name in &shards {
                    if let Err(e) = js.delete_stream(name).await {
                        eprintln!("deleting NATS stream {name}: {e}");
                    }
                }
            }
            None => {}
        }
    }
    let result = serde_json::json!({
        "label": args.label.clone().unwrap_or_else(|| args.system.clone()),
        "system": args.system,
        "client_batching": args.client_batching,
        "client_streaming": args.client_streaming,
        "record_stream": args.record_stream,
        "mode": if args.rate == 0 { "closed-loop" } else { "open-loop" },
        "rate": args.rate,
        "producers": args.producers,
        "in_flight": args.in_flight,
        "record_size": args.record_size,
        "batch": args.batch,
        "shards": shards.len(),
        "seconds": elapsed,
        "records_per_sec": acked as f64 / elapsed,
        "mb_per_sec": acked as f64 * args.record_size as f64 / elapsed / 1e6,
        "acked": acked,
        "throttled": stats.throttled.load(Ordering::Relaxed),
        "errors": stats.errors.load(Ordering::Relaxed),
        "late": stats.late.load(Ordering::Relaxed),
        "delivered": stats.delivered.load(Ordering::Relaxed),
        "ack_latency": percentiles(&ack),
        "propagation": percentiles(&propagation),
        "send_lag": percentiles(&send_lag),
    });
    let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
    if let Some(path) = &args.json {
        std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!("{text}");
    let ms = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|x| x.as_f64())
            .map_or("-".to_string(), |x| format!("{x:.2}"))
    };
    println!(
        "| {} | {} | {:.0} | {:.1} | {} | {} | {} | {} |",
        result["label"].as_str().unwrap_or(""),
        result["mode"].as_str().unwrap_or(""),
        result["records_per_sec"].as_f64().unwrap_or(0.0),
        result["mb_per_sec"].as_f64().unwrap_or(0.0),
        ms(&result["ack_latency"], "p50_ms"),
        ms(&result["ack_latency"], "p99_ms"),
        ms(&result["propagation"], "p50_ms"),
        ms(&result["propagation"], "p99_ms"),
    );
    Ok(())
}

/// Connects to Runnel, creates the stream if asked; returns one target per endpoint and the
/// shard ids.
async fn setup_runnel(
    args: &Args,
    endpoints: &[String],
) -> Result<(Vec<Target>, Vec<String>), String> {
    let clients: Vec<Client> = endpoints
        .iter()
        .map(|e| Client::connect_lazy(e).map_err(|err| format!("{e}: {err}")))
        .collect::<Result<_, _>>()?;
    if args.create_shards > 0 {
        match clients[0]
            .create_stream(&args.stream, args.create_shards, 0)
            .await
        {
            Ok(()) => {}
            Err(runnel_types::Error::ResourceInUse(_)) => {}
            Err(e) => return Err(format!("CreateStream: {e}")),
        }
        clients[0]
            .wait_active(&args.stream, Duration::from_secs(60))
            .await
            .map_err(|e| format!("stream not active: {e}"))?;
    }
    let shards: Vec<String> = clients[0]
        .list_shards(&args.stream)
        .await
        .map_err(|e| format!("ListShards: {e}"))?
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    Ok((clients.into_iter().map(Target::Runnel).collect(), shards))
}

/// Connects one NATS client per producer (rotating over the URLs), creates the streams if
/// asked; returns the targets and the stream names.
async fn setup_nats(
    args: &Args,
    endpoints: &[String],
) -> Result<(Vec<Target>, Vec<String>), String> {
    use async_nats::jetstream::stream::{Config, StorageType};
    let streams = if args.create_shards > 0 {
        args.create_shards
    } else {
        args.nats_streams.max(1)
    };
    let mut contexts = Vec::new();
    for i in 0..args.producers.max(1) {
        let url = &endpoints[i % endpoints.len()];
        let client = async_nats::ConnectOptions::new()
            .connect(url.as_str())
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        contexts.push(async_nats::jetstream::new(client));
    }
    let names: Vec<String> = (0..streams)
        .map(|i| format!("{}{i}", args.stream))
        .collect();
    if args.create_shards > 0 {
        for name in &names {
            // A fresh cluster may not have elected its JetStream meta leader yet: retry.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let created = contexts[0]
                    .get_or_create_stream(Config {
                        name: name.clone(),
                        subjects: vec![format!("{name}.>")],
                        storage: StorageType::File,
                        num_replicas: 3,
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(_) => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("creating NATS stream {name}: {e}"))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }
    }
    Ok((
        contexts
            .into_iter()
            .map(|c| Target::Nats(c, streams))
            .collect(),
        names,
    ))
}
