//! One run: start a cluster, create a stream, run producers and consumers (polls and tails) while a nemesis
//! injects faults, then heal, drain every shard, collect replica digests, write the history and
//! check it.
//!
//! Invariants: every loop is bounded in time; the cluster is stopped when the run ends (the
//! [`Cluster`] is dropped, also on panic); a request that timed out or failed in an unknown way is
//! recorded as `info` and its producer continues as a new process (Jepsen's convention).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use runnel_client::Start;
use runnel_proto::internal::v1::{internal_client::InternalClient, GroupDigestRequest};
use tokio::sync::Mutex as AsyncMutex;

use crate::checker::{check, Report};
use crate::cluster::{Cluster, ClusterOptions, NetMode};
use crate::history::{to_line, Event, Type, F, UNKNOWN_SEQ};
pub use crate::nemesis::Scenario;

/// A deliberate server bug the run switches on (the checker must then report
/// [`Bug::expected`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The last node drops the first record of every 50th applied log entry
    /// (`[testing] bug_drop_applied_records`): expect `divergence` (and `lost-write` or
    /// `poll-skip` when that node serves reads).
    DropAppliedRecords,
    /// Every node stores the records of every 50th log entry one position early, so two
    /// acknowledgements name one sequence number (`[testing] bug_reuse_sequence_numbers`):
    /// expect `inconsistent-offsets`.
    ReuseSequenceNumbers,
    /// Every node acknowledges log appends without fsync (`[testing] unsafe_skip_fsync`); the
    /// nodes run in power-loss mode, so the final restart of every node is a coordinated power
    /// cut: expect `lost-write`.
    AckBeforeFsync,
    /// Every node lets a replica that led its group resume as leader of the same term after a
    /// restart (`[testing] bug_restore_leader`, openraft's default), in power-loss mode: such a
    /// leader can lack entries it acknowledged before a power cut and serves reads without
    /// them: expect `stale-read` (rare; see jepsen/README.md).
    RestoreLeader,
}

/// Bug names as the command line spells them.
pub const BUGS: &[(&str, Bug)] = &[
    ("drop-applied-records", Bug::DropAppliedRecords),
    ("reuse-sequence-numbers", Bug::ReuseSequenceNumbers),
    ("ack-before-fsync", Bug::AckBeforeFsync),
    ("restore-leader", Bug::RestoreLeader),
];

impl std::str::FromStr for Bug {
    type Err = String;
    fn from_str(s: &str) -> Result<Bug, String> {
        BUGS.iter()
            .find(|(name, _)| *name == s)
            .map(|(_, b)| *b)
            .ok_or_else(|| {
                let names: Vec<&str> = BUGS.iter().map(|(n, _)| *n).collect();
                format!("unknown bug {s:?}: one of {}", names.join(", "))
            })
    }
}

impl Bug {
    /// The anomaly the checker must report when this bug is on.
    pub fn expected(self) -> &'static str {
        match self {
            Bug::DropAppliedRecords => "divergence",
            Bug::ReuseSequenceNumbers => "inconsistent-offsets",
            Bug::AckBeforeFsync => "lost-write",
            Bug::RestoreLeader => "stale-read",
        }
    }
}

/// Options of a run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Fault schedule.
    pub scenario: Scenario,
    /// Cluster size.
    pub nodes: usize,
    /// Duration of the fault phase.
    pub time_limit: Duration,
    /// Concurrent producers.
    pub producers: usize,
    /// Shards of the stream.
    pub shards: u32,
    /// The `runnel` binary.
    pub bin: PathBuf,
    /// Run directory (history, verdict, node logs and data).
    pub dir: PathBuf,
    /// A deliberate server bug to switch on.
    pub bug: Option<Bug>,
    /// Network mode.
    pub net: NetMode,
    /// Producers write in bursts (see [`BURST`]) and idle shard groups quiesce after 1 s, so
    /// faults also hit quiet groups.
    pub bursts: bool,
    /// Shard snapshots every this many log entries, keeping 10 below (0: the server's default).
    pub snapshot_logs: u64,
}

/// With `bursts`: producers write for the first `BURST.0` of every `BURST.1`.
const BURST: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(6));

struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn push(&self, mut e: Event) {
        if e.ty() == Type::Invoke {
            e.t0 = self.now();
        } else {
            e.t1 = Some(self.now());
        }
        if let Ok(mut v) = self.events.lock() {
            v.push(e);
        }
    }
}

const STREAM: &str = "jepsen";
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive "no such stream" answers (200 ms apart) after which a drain gives up.
const DRAIN_GIVE_UP: usize = 50;
/// Process id of the final restart in the history.
const FINAL_PROCESS: u64 = 9001;
/// Process ids of the tail consumers (one per shard), far from those of the producers.
const TAIL_PROCESS: u64 = 1_000_000;

/// The description of an `info` outcome: the error, or a timeout when there is none.
fn unknown_outcome(error: Option<runnel_types::Error>) -> String {
    match error {
        Some(e) => format!("{}: {}", e.wire_name(), e.message()),
        None => "timeout".into(),
    }
}

/// Whether an error certainly means "nothing was written" (anything else, including every
/// unavailability, counts as unknown).
fn definite(e: &runnel_types::Error) -> bool {
    use runnel_types::Error as E;
    matches!(
        e,
        E::Validation(_)
            | E::InvalidArgument(_)
            | E::ResourceNotFound(_)
            | E::ProvisionedThroughputExceeded(_)
    )
}

/// Runs the whole test and returns the verdict (also written to `dir/verdict.json`).
pub async fn run(opts: Options) -> Result<Report, String> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let mut copts = ClusterOptions {
        nodes: opts.nodes,
        power_loss: opts.scenario.power_loss(),
        net: opts.net,
        ..Default::default()
    };
    if opts.bursts {
        copts.raft = "quiesce_idle_ms = 1000\n".into();
    }
    if opts.snapshot_logs > 0 {
        copts.raft += &format!(
            "shard_snapshot_logs = {}\nlogs_to_keep = 10\n",
            opts.snapshot_logs
        );
    }
    match opts.bug {
        Some(Bug::DropAppliedRecords) => {
            copts.last_testing = "bug_drop_applied_records = true".into();
        }
        Some(Bug::ReuseSequenceNumbers) => {
            copts.testing = "bug_reuse_sequence_numbers = true".into();
        }
        Some(Bug::AckBeforeFsync) => {
            copts.testing = "unsafe_skip_fsync = true".into();
            copts.power_loss = true;
        }
        Some(Bug::RestoreLeader) => {
            copts.testing = "bug_restore_leader = true".into();
            copts.power_loss = true;
        }
        None => {}
    }
    let cluster = Cluster::start(&opts.bin, &opts.dir, &copts)
        .await
        .map_err(|e| format!("starting the cluster: {e}"))?;
    let cluster = Arc::new(AsyncMutex::new(cluster));
    {
        let c = cluster.lock().await;
        if !c.wait_ready(Duration::from_secs(60)).await {
            return Err("the cluster did not become ready within 60 s".into());
        }
        let admin = c.client(0).ok_or("no client")?;
        // Bounded retries: the cluster may still be initializing (ServiceUnavailable).
        let mut attempts = 0;
        loop {
            match admin.create_stream(STREAM, opts.shards, 0).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() && attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("CreateStream: {e}")),
            }
        }
        admin
            .wait_active(STREAM, Duration::from_secs(60))
            .await
            .map_err(|e| format!("stream not active: {e}"))?;
    }
    let (endpoints, admin_endpoints, shards, groups) = {
        let c = cluster.lock().await;
        let endpoints: Vec<String> = (0..opts.nodes).map(|i| c.endpoint(i)).collect();
        let admin_endpoints: Vec<String> = (0..opts.nodes).map(|i| c.admin_endpoint(i)).collect();
        let admin = c.client(0).ok_or("no client")?;
        let shards: Vec<String> = admin
            .list_shards(STREAM)
            .await
            .map_err(|e| format!("ListShards: {e}"))?
            .into_iter()
            .map(|s| s.shard_id)
            .collect();
        let status = admin
            .cluster_status()
            .await
            .map_err(|e| format!("ClusterStatus: {e}"))?;
        let groups: Vec<(String, u64)> = status
            .groups
            .iter()
            .filter(|g| g.stream == STREAM)
            .map(|g| (g.shard_id.clone(), g.group_id))
            .collect();
        (endpoints, admin_endpoints, shards, groups)
    };
    let rec = Arc::new(Recorder {
        start: Instant::now(),
        events: Mutex::new(Vec::new()),
    });
    let deadline = tokio::time::Instant::now() + opts.time_limit;
    let next_value = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for p in 0..opts.producers {
        tasks.push(tokio::spawn(producer(
            p as u64,
            opts.producers as u64,
            endpoints.clone(),
            rec.clone(),
            next_value.clone(),
            deadline,
            opts.bursts,
        )));
    }
    for (s, shard) in shards.iter().enumerate() {
        tasks.push(tokio::spawn(consumer(
            1000 + s as u64,
            shard.clone(),
            endpoints.clone(),
            rec.clone(),
            deadline,
            F::Poll,
        )));
    }
    for (s, shard) in shards.iter().enumerate() {
        tasks.push(tokio::spawn(tailer(
            TAIL_PROCESS + s as u64,
            shard.clone(),
            endpoints.clone(),
            rec.clone(),
            deadline,
        )));
    }
    let nemesis = tokio::spawn(nemesis(
        opts.scenario,
        cluster.clone(),
        groups.iter().map(|g| g.1).collect(),
        rec.clone(),
        deadline,
    ));
    for t in tasks {
        let _ = t.await;
    }
    let _ = nemesis.await;

    // Heal everything, then restart every node (SIGKILL: in power-loss mode a coordinated
    // power cut), wait for leaders, drain every shard and compare replicas.
    {
        let mut c = cluster.lock().await;
        c.heal();
        c.set_delay(Duration::ZERO, Duration::ZERO);
        for i in 0..opts.nodes {
            let _ = c.set_clock(i, 0).await;
        }
        rec.push(Event {
            process: FINAL_PROCESS,
            ty: Some(Type::Invoke),
            f: Some(F::Fault),
            error: Some("final restart of every node".into()),
            ..Default::default()
        });
        for i in 0..opts.nodes {
            c.kill(i);
        }
        for i in 0..opts.nodes {
            if let Err(e) = c.start_node(i) {
                eprintln!("warning: restarting node {}: {e}", i + 1);
            }
        }
        if !c.wait_ready(Duration::from_secs(60)).await {
            eprintln!("warning: the cluster did not become ready after healing");
        }
        rec.push(Event {
            process: FINAL_PROCESS,
            ty: Some(Type::Ok),
            f: Some(F::Fault),
            error: Some("final restart of every node".into()),
            ..Default::default()
        });
    }
    let drain_deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut drains = Vec::new();
    for (s, shard) in shards.iter().enumerate() {
        drains.push(tokio::spawn(consumer(
            2000 + s as u64,
            shard.clone(),
            admin_endpoints.clone(),
            rec.clone(),
            drain_deadline,
            F::Drain,
        )));
    }
    for d in drains {
        let _ = d.await;
    }
    digests(&admin_endpoints, &groups, &rec).await;

    let events = rec.events.lock().map(|v| v.clone()).unwrap_or_default();
    let history: String = events.iter().map(to_line).collect();
    std::fs::write(opts.dir.join("history.jsonl"), history)
        .map_err(|e| format!("writing the history: {e}"))?;
    let report = check(&events);
    let verdict = serde_json::to_string_pretty(&report).unwrap_or_default();
    std::fs::write(opts.dir.join("verdict.json"), verdict)
        .map_err(|e| format!("writing the verdict: {e}"))?;
    std::fs::write(
        opts.dir.join("report.svg"),
        crate::report::svg(&events, &report.windows),
    )
    .map_err(|e| format!("writing the picture: {e}"))?;
    drop(cluster);
    Ok(report)
}

async fn producer(
    first: u64,
    stride: u64,
    endpoints: Vec<String>,
    rec: Arc<Recorder>,
    next_value: Arc<AtomicU64>,
    deadline: tokio::time::Instant,
    bursts: bool,
) {
    let mut process = first;
    let mut n = 0usize;
    // Half the producers chain SequenceNumberForOrdering per key on their PutRecords.
    let ordered = first.is_multiple_of(2);
    let mut last_seq: std::collections::HashMap<String, String> = Default::default();
    while tokio::time::Instant::now() < deadline {
        if bursts {
            // Silent for the rest of the cycle once its burst is over.
            let cycle = BURST.1.as_millis() as u64;
            let into = rec.now() % cycle;
            if into >= BURST.0.as_millis() as u64 {
                tokio::time::sleep(Duration::from_millis(cycle - into)).await;
                continue;
            }
        }
        // Every other operation is a PutRecords of 2-8 values (spanning shards).
        let batch = if n % 2 == 1 {
            rand::rng().random_range(2..=8)
        } else {
            1
        };
        let values: Vec<u64> = (0..batch)
            .map(|_| next_value.fetch_add(1, Ordering::Relaxed))
            .collect();
        let node = (first as usize + n) % endpoints.len();
        n += 1;
        let Ok(client) = runnel_client::Client::connect_lazy(&endpoints[node]) else {
            continue;
        };
        rec.push(Event {
            process,
            ty: Some(Type::Invoke),
            f: Some(F::Send),
            node: node as u64 + 1,
            values: values.clone(),
            ..Default::default()
        });
        let entries: Vec<(String, Vec<u8>)> = values
            .iter()
            .map(|v| (format!("key-{}", v % 64), v.to_string().into_bytes()))
            .collect();
        let outcome = tokio::time::timeout(OP_TIMEOUT, async {
            if entries.len() == 1 {
                let (key, data) = entries[0].clone();
                let snfo = if ordered {
                    last_seq.get(&key).cloned().unwrap_or_default()
                } else {
                    String::new()
                };
                let r = client.put_record_ordered(STREAM, &key, data, &snfo).await;
                if let Ok((_, seq)) = &r {
                    if ordered {
                        last_seq.insert(key, seq.clone());
                    }
                }
                r.map(|(shard, seq)| vec![(Some(shard), Some(seq))])
            } else {
                client.put_records(STREAM, entries).await.map(|r| {
                    r.records
                        .into_iter()
                        .map(|x| {
                            if x.error_code.is_empty() {
                                (Some(x.shard_id), Some(x.sequence_number))
                            } else if definite(&runnel_types::Error::from_kinesis_name(
                                &x.error_code,
                                x.error_message,
                            )) {
                                (None, None)
                            } else {
                                (None, Some(UNKNOWN_SEQ.to_string()))
                            }
                        })
                        .collect()
                })
            }
        })
        .await;
        let mut done = Event {
            process,
            f: Some(F::Send),
            node: node as u64 + 1,
            values: values.clone(),
            ..Default::default()
        };
        match outcome {
            Ok(Ok(results)) => {
                done.ty = Some(Type::Ok);
                done.shards = results.iter().map(|r| r.0.clone()).collect();
                done.seqs = results.into_iter().map(|r| r.1).collect();
                rec.push(done);
            }
            Ok(Err(e)) if definite(&e) => {
                done.ty = Some(Type::Fail);
                done.error = Some(e.kinesis_name().to_string());
                rec.push(done);
            }
            other => {
                done.ty = Some(Type::Info);
                done.error = Some(unknown_outcome(other.ok().and_then(Result::err)));
                rec.push(done);
                // The request may still be in flight: continue as a new process.
                process += stride;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn consumer(
    process: u64,
    shard: String,
    endpoints: Vec<String>,
    rec: Arc<Recorder>,
    deadline: tokio::time::Instant,
    f: F,
) {
    let mut last: Option<String> = None;
    let mut iterator: Option<String> = None;
    let mut n = 0usize;
    let mut missing = 0usize;
    while tokio::time::Instant::now() < deadline {
        let node = n % endpoints.len();
        n += 1;
        let Ok(client) = runnel_client::Client::connect_lazy(&endpoints[node]) else {
            continue;
        };
        // The invocation of this read (completions copy it and set their type and result).
        let read_event = || Event {
            process,
            ty: Some(Type::Invoke),
            f: Some(f),
            node: node as u64 + 1,
            shard: Some(shard.clone()),
            from: last.clone(),
            ..Default::default()
        };
        let it = match iterator.take() {
            Some(it) => it,
            None => {
                match resume_iterator(&client, &shard, &last).await {
                    Ok(it) => it,
                    Err(err) => {
                        // Recorded: a drain that ends on "no such stream" means data is gone.
                        let mut e = read_event();
                        rec.push(e.clone());
                        // A drain stops once the stream has been missing for 10 s on every
                        // node it asked (the checker then counts its values as lost).
                        if matches!(err, Some(runnel_types::Error::ResourceNotFound(_))) {
                            missing += 1;
                        } else {
                            missing = 0;
                        }
                        e.ty = Some(Type::Info);
                        e.error = Some(format!("GetShardIterator: {}", unknown_outcome(err)));
                        rec.push(e);
                        if f == F::Drain && missing >= DRAIN_GIVE_UP {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
        };
        rec.push(read_event());
        let outcome = tokio::time::timeout(OP_TIMEOUT, client.get_records(&it, 1000)).await;
        let mut done = read_event();
        match outcome {
            Ok(Ok(r)) => {
                done.ty = Some(Type::Ok);
                done.reads = read_values(&r.records);
                done.caught_up = r.millis_behind_latest == 0 && r.records.len() < 1000;
                let caught_up = done.caught_up;
                if let Some(x) = r.records.last() {
                    last = Some(x.sequence_number.clone());
                }
                rec.push(done);
                if !r.next_shard_iterator.is_empty() {
                    iterator = Some(r.next_shard_iterator);
                }
                if caught_up {
                    if f == F::Drain {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            other => {
                done.ty = Some(Type::Info);
                done.error = Some(unknown_outcome(other.ok().and_then(Result::err)));
                rec.push(done);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// An iterator after `last` (the start of the shard if none), within [`OP_TIMEOUT`]; the error
/// is `None` when the call timed out.
async fn resume_iterator(
    client: &runnel_client::Client,
    shard: &str,
    last: &Option<String>,
) -> Result<String, Option<runnel_types::Error>> {
    let start = last.clone().map_or(Start::TrimHorizon, Start::After);
    match tokio::time::timeout(OP_TIMEOUT, client.shard_iterator(STREAM, shard, &start)).await {
        Ok(Ok(it)) => Ok(it),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    }
}

/// (sequence number, value) of records read; a record that is not a value reads as `u64::MAX`,
/// which no client writes (the checker reports it as unexpected).
fn read_values(records: &[runnel_client::v1::Record]) -> Vec<(String, u64)> {
    records
        .iter()
        .map(|x| {
            let v = std::str::from_utf8(&x.data)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            (x.sequence_number.clone(), v)
        })
        .collect()
}

/// Follows one shard with TailShard through the nodes in turn (a node that does not lead the
/// shard relays it), resuming after the last record received whenever a tail ends. Each page with
/// records is recorded as a poll from the last position before it, so the checker holds tails to
/// the same order and no-skip rules as polls; a tail never claims to be caught up (it does not
/// promise a linearizable read), so it is not checked for stale reads.
async fn tailer(
    process: u64,
    shard: String,
    endpoints: Vec<String>,
    rec: Arc<Recorder>,
    deadline: tokio::time::Instant,
) {
    let mut last: Option<String> = None;
    let mut iterator: Option<String> = None;
    let mut n = 0usize;
    while tokio::time::Instant::now() < deadline {
        let node = n % endpoints.len();
        n += 1;
        let Ok(client) = runnel_client::Client::connect_lazy(&endpoints[node]) else {
            continue;
        };
        let it = match iterator.take() {
            Some(it) => it,
            None => match resume_iterator(&client, &shard, &last).await {
                Ok(it) => it,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let mut pages = match tokio::time::timeout(OP_TIMEOUT, client.tail_shard(&it, 1000)).await {
            Ok(Ok(p)) => p,
            _ => {
                // The iterator stays good: a tail that did not start read nothing.
                iterator = Some(it);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while tokio::time::Instant::now() < deadline {
            // A page comes at least once a second; a longer silence counts as a broken tail.
            let Ok(Ok(Some(page))) = tokio::time::timeout(OP_TIMEOUT, pages.message()).await else {
                break;
            };
            if !page.records.is_empty() {
                let invoke = Event {
                    process,
                    ty: Some(Type::Invoke),
                    f: Some(F::Poll),
                    node: node as u64 + 1,
                    shard: Some(shard.clone()),
                    from: last.clone(),
                    ..Default::default()
                };
                rec.push(invoke.clone());
                let mut done = invoke;
                done.ty = Some(Type::Ok);
                done.reads = read_values(&page.records);
                last = page.records.last().map(|x| x.sequence_number.clone());
                rec.push(done);
            }
            if page.next_shard_iterator.is_empty() {
                break;
            }
            iterator = Some(page.next_shard_iterator);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn nemesis(
    scenario: Scenario,
    cluster: Arc<AsyncMutex<Cluster>>,
    groups: Vec<u64>,
    rec: Arc<Recorder>,
    deadline: tokio::time::Instant,
) {
    if scenario == Scenario::None {
        return;
    }
    let process = 9000;
    let everything = scenario == Scenario::Everything;
    let mut k = 0usize;
    loop {
        let (wait, hold) = {
            let mut r = rand::rng();
            if everything {
                (r.random_range(2_000..8_000), r.random_range(3_000..12_000))
            } else {
                (r.random_range(2_000..5_000), r.random_range(3_000..6_000))
            }
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if tokio::time::Instant::now() + Duration::from_millis(hold) > deadline {
            return;
        }
        let mut c = cluster.lock().await;
        let Some(planned) = crate::nemesis::plan(scenario, k, &c, &groups).await else {
            continue;
        };
        k += 1;
        rec.push(Event {
            process,
            ty: Some(Type::Invoke),
            f: Some(F::Fault),
            node: planned.node as u64 + 1,
            error: Some(planned.name.clone()),
            ..Default::default()
        });
        eprintln!("nemesis: {} for {} ms", planned.name, hold);
        crate::nemesis::apply(&mut c, &planned.fault).await;
        drop(c);
        tokio::time::sleep(Duration::from_millis(hold)).await;
        let mut c = cluster.lock().await;
        crate::nemesis::heal(&mut c, &planned.fault).await;
        drop(c);
        rec.push(Event {
            process,
            ty: Some(Type::Ok),
            f: Some(F::Fault),
            node: planned.node as u64 + 1,
            error: Some(planned.name),
            ..Default::default()
        });
    }
}

/// Records every replica's digest once all replicas of a group report the same applied index
/// (bounded wait); a group that does not converge is recorded as reported.
async fn digests(endpoints: &[String], groups: &[(String, u64)], rec: &Recorder) {
    for (shard, group) in groups {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut replies = Vec::new();
            for (i, e) in endpoints.iter().enumerate() {
                let Ok(mut c) = InternalClient::connect(e.clone()).await else {
                    continue;
                };
                if let Ok(r) = c
                    .group_digest(GroupDigestRequest { group_id: *group })
                    .await
                {
                    replies.push((i, r.into_inner()));
                }
            }
            let same = replies
                .windows(2)
                .all(|w| w[0].1.applied_index == w[1].1.applied_index);
            if (same && replies.len() == endpoints.len()) || tokio::time::Instant::now() > deadline
            {
                for (i, r) in replies {
                    rec.push(Event {
                        process: 3000 + i as u64,
                        ty: Some(Type::Ok),
                        f: Some(F::Digest),
                        node: i as u64 + 1,
                        shard: Some(shard.clone()),
                        applied: r.applied_index,
                        digest: Some(r.digest.iter().map(|b| format!("{b:02x}")).collect()),
                        ..Default::default()
                    });
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
