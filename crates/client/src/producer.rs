//! A batching, leader-aware producer (what the Kinesis Producer Library does for Kinesis).
//!
//! [`Producer::send`] queues one record and resolves when the cluster acknowledged it (after a
//! majority of its shard's replicas made it durable). Records are routed on the client: the MD5
//! hash key of the partition key picks the shard (from ListShards' hash ranges), and each shard
//! has a queue whose records travel together in PutRecords calls of up to 500 records / 5 MiB,
//! sent straight to the node that leads the shard (from ClusterStatus), so no node has to forward
//! them. While a shard has `max_in_flight` calls outstanding, new records wait and join the next
//! call: the busier the shard, the larger the batches. In streaming mode
//! (`ProducerConfig::streaming`) there is no batching: each record goes on its own, at once, on
//! a [`RecordStream`] to its shard's leader (one stream per node), acknowledged on its own.
//!
//! Invariants: a record is acknowledged to its caller only with the sequence number the cluster
//! returned for it; a record the cluster refused (throttled, failed) is reported as that error
//! and never silently retried, so the caller sees every outcome exactly once. Records of one key
//! keep their order only while `max_in_flight` is 1: with more (the default is 2), two calls
//! outstanding for a shard may be appended in either order, as with the KPL. Routing is an optimisation only: every node accepts
//! any record and forwards it, so a stale shard map or leader costs a hop, never correctness; the
//! map is refreshed in the background and after failed calls.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use runnel_proto::v1 as pb;
use runnel_types::{route, Error, HashKey, HashRange, ShardId};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::{from_status, stream, Client, RecordStream};

/// Producer settings.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// Most records per PutRecords call (Kinesis allows 500).
    pub max_batch_records: usize,
    /// Most data bytes (partition keys included) per PutRecords call (Kinesis allows 5 MiB).
    pub max_batch_bytes: usize,
    /// PutRecords calls outstanding per shard.
    pub max_in_flight: usize,
    /// How often the shard map and the leaders are refreshed.
    pub refresh_every: Duration,
    /// Send each shard's calls to its leader (true) or always to the bootstrap endpoint.
    pub leader_routing: bool,
    /// Send each record on its own over a long-lived `PutRecordStream` per node (a
    /// [`RecordStream`]) instead of batching per shard into PutRecords calls: no batching delay
    /// and no call per record. `max_batch_*` and `max_in_flight` do not apply then.
    pub streaming: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            max_batch_records: 500,
            max_batch_bytes: 5 << 20,
            max_in_flight: 2,
            refresh_every: Duration::from_secs(5),
            leader_routing: true,
            streaming: false,
        }
    }
}

/// Where a record ended up: its shard and sequence number.
pub type Acked = (String, String);

struct Pending {
    key: String,
    data: Vec<u8>,
    reply: oneshot::Sender<Result<Acked, Error>>,
}

/// The routing table: open shards sorted by starting hash key, and each shard's leader client.
#[derive(Default)]
struct Routes {
    ranges: Vec<(ShardId, HashRange)>,
    leaders: HashMap<ShardId, Client>,
    /// With `streaming`: the record stream to each shard's leader.
    streams: HashMap<ShardId, RecordStream>,
}

struct Shared {
    stream: String,
    config: ProducerConfig,
    bootstrap: Client,
    routes: RwLock<Routes>,
    queues: RwLock<HashMap<ShardId, mpsc::UnboundedSender<Pending>>>,
    /// Clients per node address, reused across refreshes.
    clients: RwLock<HashMap<String, Client>>,
    /// With `streaming`: record streams per node address, reused across refreshes.
    record_streams: RwLock<HashMap<String, RecordStream>>,
    /// With `streaming` (and only then): the record stream through the bootstrap endpoint.
    bootstrap_stream: Option<RecordStream>,
    refresh: tokio::sync::Notify,
}

/// A batching, leader-aware producer for one stream. Cheap to clone; the background tasks stop
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

impl Producer {
    /// Creates a producer for `stream`, learning its shards and their leaders through
    /// `bootstrap` (any node).
    pub async fn new(
        bootstrap: Client,
        stream_name: &str,
        config: ProducerConfig,
    ) -> Result<Producer, Error> {
        let shared = Arc::new(Shared {
            stream: stream_name.to_string(),
            bootstrap_stream: config
                .streaming
                .then(|| RecordStream::new(bootstrap.clone(), stream_name)),
            config,
            bootstrap,
            record_streams: RwLock::new(HashMap::new()),
            routes: RwLock::new(Routes::default()),
            queues: RwLock::new(HashMap::new()),
            clients: RwLock::new(HashMap::new()),
            refresh: tokio::sync::Notify::new(),
        });
        refresh(&shared).await?;
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            // Holds the producer only while waiting (at most `refresh_every`), so dropping the
            // last handle ends this task.
            loop {
                let Some(s) = weak.upgrade() else { return };
                let _ = tokio::time::timeout(s.config.refresh_every, s.refresh.notified()).await;
                if let Err(e) = refresh(&s).await {
                    tracing::debug!(stream = %s.stream, error = %e, "producer: refresh failed");
                }
            }
        });
        Ok(Producer { shared })
    }

    /// Queues one record; resolves with its shard and sequence number once acknowledged, or
    /// with the error the cluster gave for it.
    pub async fn send(&self, partition_key: String, data: Vec<u8>) -> Result<Acked, Error> {
        let (shard, record_stream) = {
            let routes = self
                .shared
                .routes
                .read()
                .map_err(|_| Error::Internal("producer routes poisoned".into()))?;
            runnel_types::validate_partition_key(&partition_key)?;
            let shard = route(&routes.ranges, HashKey::from_partition_key(&partition_key))
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "no open shard of {} holds the key",
                        self.shared.stream
                    ))
                })?;
            let record_stream = routes
                .streams
                .get(&shard)
                .or(self.shared.bootstrap_stream.as_ref())
                .cloned();
            (shard, record_stream)
        };
        if let Some(rs) = record_stream {
            let result = rs.send(partition_key, data).await;
            if result.is_err() {
                self.shared.refresh.notify_one();
            }
            return result;
        }
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            key: partition_key,
            data,
            reply,
        };
        self.queue(shard)?
            .send(pending)
            .map_err(|_| Error::Internal("producer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("producer stopped; the outcome is unknown".into()))?
    }

    /// The queue of `shard`, starting its sender task on first use.
    fn queue(&self, shard: ShardId) -> Result<mpsc::UnboundedSender<Pending>, Error> {
        let poisoned = || Error::Internal("producer queues poisoned".into());
        if let Some(q) = self
            .shared
            .queues
            .read()
            .map_err(|_| poisoned())?
            .get(&shard)
        {
            return Ok(q.clone());
        }
        let mut queues = self.shared.queues.write().map_err(|_| poisoned())?;
        if let Some(q) = queues.get(&shard) {
            return Ok(q.clone());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(shard_sender(Arc::downgrade(&self.shared), shard, rx));
        queues.insert(shard, tx.clone());
        Ok(tx)
    }
}

/// Reloads the shard ranges and leaders.
async fn refresh(shared: &Shared) -> Result<(), Error> {
    let shards = shared.bootstrap.list_shards(&shared.stream).await?;
    let mut ranges = Vec::new();
    for s in shards
        .iter()
        .filter(|s| s.ending_sequence_number.is_empty())
    {
        let id = ShardId::parse(&s.shard_id)?;
        let parse = |v: &str| {
            v.parse::<u128>()
                .map_err(|_| Error::Internal(format!("bad hash key {v:?} in ListShards")))
        };
        ranges.push((
            id,
            HashRange {
                start: parse(&s.starting_hash_key)?,
                end: parse(&s.ending_hash_key)?,
            },
        ));
    }
    ranges.sort_by_key(|(_, r)| r.start);
    let mut leaders = HashMap::new();
    let mut streams = HashMap::new();
    if shared.config.leader_routing {
        let status = shared.bootstrap.cluster_status().await?;
        let addrs: HashMap<u64, String> = status
            .nodes
            .iter()
            .filter(|n| !n.grpc_addr.is_empty())
            .map(|n| (n.node_id, n.grpc_addr.clone()))
            .collect();
        for g in status.groups.iter().filter(|g| g.stream == shared.stream) {
            let (Ok(id), Some(addr)) = (ShardId::parse(&g.shard_id), addrs.get(&g.leader_node))
            else {
                continue;
            };
            if let Some(c) = client_for(shared, addr) {
                if shared.config.streaming {
                    if let Some(rs) = record_stream_for(shared, addr, &c) {
                        streams.insert(id, rs);
                    }
                }
                leaders.insert(id, c);
            }
        }
    }
    let mut routes = shared
        .routes
        .write()
        .map_err(|_| Error::Internal("producer routes poisoned".into()))?;
    *routes = Routes {
        ranges,
        leaders,
        streams,
    };
    Ok(())
}

fn record_stream_for(shared: &Shared, addr: &str, client: &Client) -> Option<RecordStream> {
    if let Some(rs) = shared.record_streams.read().ok()?.get(addr) {
        return Some(rs.clone());
    }
    let rs = RecordStream::new(client.clone(), &shared.stream);
    shared
        .record_streams
        .write()
        .ok()?
        .insert(addr.to_string(), rs.clone());
    Some(rs)
}

fn client_for(shared: &Shared, addr: &str) -> Option<Client> {
    if let Some(c) = shared.clients.read().ok()?.get(addr) {
        return Some(c.clone());
    }
    let c = Client::connect_node(addr).ok()?;
    shared
        .clients
        .write()
        .ok()?
        .insert(addr.to_string(), c.clone());
    Some(c)
}

/// Sends one shard's queued records: takes what is queued (up to a call's limits) whenever an
/// in-flight slot is free.
async fn shard_sender(
    shared: std::sync::Weak<Shared>,
    shard: ShardId,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let Some(s) = shared.upgrade() else { return };
    let (max_records, max_bytes, in_flight) = (
        s.config.max_batch_records.clamp(1, 500),
        s.config.max_batch_bytes.max(1),
        s.config.max_in_flight.max(1),
    );
    drop(s);
    let slots = Arc::new(Semaphore::new(in_flight));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.key.len() + first.data.len();
        let mut batch = vec![first];
        while batch.len() < max_records {
            match rx.try_recv() {
                Ok(p) => {
                    let b = p.key.len() + p.data.len();
                    if bytes + b > max_bytes {
                        carry = Some(p);
                        break;
                    }
                    bytes += b;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let Some(s) = shared.upgrade() else { return };
        let client = s
            .routes
            .read()
            .ok()
            .and_then(|r| r.leaders.get(&shard).cloned())
            .unwrap_or_else(|| s.bootstrap.clone());
        tokio::spawn(async move {
            put_batch(&s, client, batch).await;
            drop(permit);
        });
    }
}

async fn put_batch(shared: &Shared, client: Client, batch: Vec<Pending>) {
    let mut replies = Vec::with_capacity(batch.len());
    let records = batch
        .into_iter()
        .map(|p| {
            replies.push(p.reply);
            pb::PutRecordsEntry {
                partition_key: p.key,
                data: p.data.into(),
                explicit_hash_key: String::new(),
            }
        })
        .collect();
    let result = client
        .raw()
        .put_records(pb::PutRecordsRequest {
            stream: stream(&shared.stream),
            records,
        })
        .await;
    match result {
        Ok(r) => {
            let r = r.into_inner();
            if r.failed_record_count > 0 {
                shared.refresh.notify_one();
            }
            for (reply, res) in replies.into_iter().zip(r.records) {
                let outcome = if res.error_code.is_empty() {
                    Ok((res.shard_id, res.sequence_number))
                } else {
                    Err(Error::from_kinesis_name(&res.error_code, res.error_message))
                };
                let _ = reply.send(outcome);
            }
        }
        Err(status) => {
            shared.refresh.notify_one();
            let e = from_status(&status);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
