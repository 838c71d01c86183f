//! The public `runnel.v1` gRPC API. Each handler validates its input completely before anything
//! is proposed (bad input changes nothing), then works through [`Node`] which routes to leaders.
//! The operations and their checks follow Kinesis (see `docs/`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_proto::internal::v1::{ReadMode, ReadShardRequest};
use runnel_proto::v1 as pb;
use runnel_proto::v1::runnel_server::Runnel;
use runnel_raft::WireRecord;
use runnel_types::{
    parse_stream_arn, stream_arn, validate_partition_key, Error, HashKey, IteratorKey,
    IteratorToken, Position, Result, SequenceNumber, ShardId, StreamName,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::meta::{MetaCommand, MetaState, ShardMeta, StreamMeta, StreamMode, StreamStatus};
use crate::metrics;
use crate::node::{Node, TailLease, TailSlot};

/// Maps an error to a gRPC status carrying the Kinesis error name.
pub fn to_status(e: &Error) -> Status {
    let mut s = Status::new(
        tonic::Code::from_i32(e.grpc_code()),
        e.message().to_string(),
    );
    if let Ok(v) = e.wire_name().parse() {
        s.metadata_mut().insert("x-kinesis-error", v);
    }
    s
}

/// Shards of a new ON_DEMAND stream (as Kinesis: 4 MB/s, 4000 records/s of write capacity).
pub const ON_DEMAND_INITIAL_SHARDS: u32 = 4;

/// The longest a GetRecords long poll (`wait_ms`, a Runnel extension) may wait; the internal
/// read RPC that carries it to the shard leader times out after 10 s.
pub const MAX_GET_RECORDS_WAIT_MS: u32 = 5_000;

/// How long one read of a tail waits on the leader for something new; a page with no records
/// is sent after each such wait.
pub const TAIL_WAIT_MS: u32 = 1_000;

/// Pages a tail may have queued for its client before it waits for the client to take them.
const TAIL_QUEUE: usize = 4;

/// The response stream of one `TailShard`.
pub type TailPages = ReceiverStream<std::result::Result<pb::GetRecordsResponse, Status>>;

/// Paces one tail to `per_sec` bytes per second on average, allowing a burst of one second's
/// worth: each page moves a virtual clock on by its bytes' share of a second, and the tail waits
/// while that clock is ahead of real time. 0 = unpaced.
struct Pacer {
    per_sec: u64,
    /// When the bytes sent so far would have been sent at exactly `per_sec`.
    clock: Option<Instant>,
}

impl Pacer {
    fn new(per_sec: u64) -> Pacer {
        Pacer {
            per_sec,
            clock: None,
        }
    }

    /// Counts `bytes` sent at `now`; returns until when to wait before the next page, if at all.
    fn spend(&mut self, bytes: u64, now: Instant) -> Option<Instant> {
        if self.per_sec == 0 {
            return None;
        }
        // Idle time earns at most one second of credit.
        let floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        let start = self.clock.map_or(floor, |c| c.max(floor));
        let clock = start + Duration::from_secs_f64(bytes as f64 / self.per_sec as f64);
        self.clock = Some(clock);
        (clock > now).then_some(clock)
    }
}

/// An opened iterator with what a read at it needs.
struct OpenRead {
    state: Arc<MetaState>,
    stream: Arc<StreamMeta>,
    token: IteratorToken,
    shard: ShardMeta,
    limit: u32,
}

/// One page of records read at an iterator.
struct Page {
    response: pb::GetRecordsResponse,
    /// Data bytes delivered.
    bytes: u64,
    /// Iterator age: how old the last record returned is (0 when caught up).
    age_ms: u64,
    /// The iterator after the page.
    next: IteratorToken,
}

/// A stream to create.
#[derive(Clone, Debug)]
pub struct NewStream {
    /// Name.
    pub name: StreamName,
    /// Shard count; 0 = not given.
    pub shard_count: u32,
    /// Capacity mode.
    pub mode: StreamMode,
    /// Retention hours; 0 = default (24).
    pub retention_hours: u32,
    /// Max record size in KiB; 0 = the node's default.
    pub max_record_size_kib: u32,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// A shard listing filter (ListShards' `ShardFilter`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardFilter {
    /// Every shard (no filter).
    All,
    /// Shards after this index.
    AfterShardId(u64),
    /// Shards open at the trim horizon.
    AtTrimHorizon,
    /// All shards from the trim horizon on (every retained shard).
    FromTrimHorizon,
    /// Shards open now.
    AtLatest,
    /// Shards open at this time (ms).
    AtTimestamp(u64),
    /// Shards open at this time or created after it (ms).
    FromTimestamp(u64),
}

/// The public API over a node.
#[derive(Clone)]
pub struct Api {
    node: Arc<Node>,
}

impl Api {
    /// The API of `node`.
    pub fn new(node: Arc<Node>) -> Api {
        Api { node }
    }

    /// The node behind this API.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    pub(crate) fn stream_name(&self, r: Option<&pb::StreamRef>) -> Result<StreamName> {
        let r = r.ok_or_else(|| {
            Error::validation_failed("streamName", None, "Member must not be null")
        })?;
        self.resolve_stream(Some(&r.name), Some(&r.arn))
    }

    /// The stream addressed by a name and/or an ARN (empty strings count as absent). An ARN
    /// must name this node's region and account.
    pub fn resolve_stream(&self, name: Option<&str>, arn: Option<&str>) -> Result<StreamName> {
        let name = name.filter(|n| !n.is_empty());
        match arn.filter(|a| !a.is_empty()) {
            Some(arn) => {
                let (region, account, from_arn) = parse_stream_arn(arn)?;
                if region != self.node.config.region || account != self.node.config.account_id {
                    return Err(Error::ResourceNotFound(format!(
                        "Stream {from_arn} under account {account} not found."
                    )));
                }
                if name.is_some_and(|n| n != from_arn.as_str()) {
                    return Err(Error::InvalidArgument(
                        "StreamName and StreamARN name different streams".into(),
                    ));
                }
                Ok(from_arn)
            }
            None => match name {
                Some(n) => StreamName::parse(n),
                None => Err(Error::validation_failed(
                    "streamName",
                    None,
                    "Member must not be null",
                )),
            },
        }
    }

    /// The ARN of a stream of this node's account and region.
    pub fn arn(&self, name: &StreamName) -> String {
        stream_arn(&self.node.config.region, &self.node.config.account_id, name)
    }

    fn summary(&self, s: &StreamMeta) -> pb::StreamSummary {
        pb::StreamSummary {
            name: s.name.to_string(),
            arn: stream_arn(
                &self.node.config.region,
                &self.node.config.account_id,
                &s.name,
            ),
            status: status_of(s.status) as i32,
            open_shard_count: s.shards.iter().filter(|x| x.ending.is_none()).count() as u32,
            retention_hours: s.retention_hours,
            creation_ms: s.created_ms,
            max_record_size_kib: s.max_record_size_kib,
            stream_mode: s.mode.as_str().into(),
            consumer_count: 0,
            encryption_type: "NONE".into(),
        }
    }

    /// A data-plane view of a stream: it must exist and accept data operations.
    pub(crate) fn data_stream(state: &MetaState, name: &StreamName) -> Result<Arc<StreamMeta>> {
        let s = state.stream_arc(name)?;
        match s.status {
            StreamStatus::Active | StreamStatus::Updating => Ok(Arc::clone(s)),
            StreamStatus::Creating | StreamStatus::Deleting => Err(Error::ResourceNotFound(
                format!("Stream {name} under account {} not found.", state.account),
            )),
        }
    }

    /// The metadata and the data-plane view of a stream. The local copy of the metadata is used
    /// when it knows the stream as active; otherwise (this node may not have applied a recent
    /// CreateStream yet) it is first brought up to the metadata leader's read index.
    pub async fn data_view(&self, name: &StreamName) -> Result<(Arc<MetaState>, Arc<StreamMeta>)> {
        let state = self.node.state()?;
        if let Ok(s) = Self::data_stream(&state, name) {
            return Ok((state, s));
        }
        let state = self.node.fresh_state().await?;
        let s = Self::data_stream(&state, name)?;
        Ok((state, s))
    }

    pub(crate) fn key(state: &MetaState) -> Result<IteratorKey> {
        state
            .secret
            .map(IteratorKey::new)
            .ok_or_else(|| Error::Unavailable("the cluster is not initialized yet".into()))
    }

    fn max_record_bytes(&self, s: &StreamMeta) -> u64 {
        if s.max_record_size_kib == 0 {
            self.node.config.limits.max_record_bytes
        } else {
            u64::from(s.max_record_size_kib) * 1024
        }
    }

    /// Validates one record and returns its hash key.
    fn check_record(&self, s: &StreamMeta, pk: &str, data: &[u8], ehk: &str) -> Result<HashKey> {
        validate_partition_key(pk)?;
        let max = self.max_record_bytes(s);
        if data.len() as u64 > max {
            // AWS shows a blob as the Java buffer that held it.
            let n = data.len();
            return Err(Error::validation_failed(
                "data",
                Some(&format!("java.nio.HeapByteBuffer[pos=0 lim={n} cap={n}]")),
                &format!("Member must have length less than or equal to {max}"),
            ));
        }
        if ehk.is_empty() {
            Ok(HashKey::from_partition_key(pk))
        } else {
            HashKey::parse_explicit(ehk)
        }
    }

    fn route(s: &StreamMeta, key: HashKey) -> Result<&ShardMeta> {
        s.route(key)
            .ok_or_else(|| Error::Internal(format!("no open shard covers hash key {key}")))
    }

    /// Creates a stream (CREATING until every shard group has a leader).
    pub async fn create_stream(&self, req: NewStream) -> Result<()> {
        let name = req.name.clone();
        // Fails fast while the cluster is not initialized (the metadata refuses it as well).
        self.node.state()?;
        let limits = &self.node.config.limits;
        let shard_count = match (req.mode, req.shard_count) {
            (StreamMode::OnDemand, 0) => ON_DEMAND_INITIAL_SHARDS.min(limits.max_shards_per_stream),
            (StreamMode::OnDemand, n) => n,
            (StreamMode::Provisioned, 0) => {
                return Err(Error::InvalidArgument(
                    "ShardCount is required for a PROVISIONED stream.".into(),
                ))
            }
            (StreamMode::Provisioned, n) => n,
        };
        let req = NewStream { shard_count, ..req };
        if req.shard_count > limits.max_shards_per_stream {
            return Err(Error::LimitExceeded(format!(
                "This request would exceed the shard limit for the stream: {} shards requested, {} allowed.",
                req.shard_count, limits.max_shards_per_stream
            )));
        }
        let retention = if req.retention_hours == 0 {
            limits.min_retention_hours
        } else {
            limits.validate_retention_hours(req.retention_hours)?;
            req.retention_hours
        };
        let kib = match req.max_record_size_kib {
            0 => u32::try_from(limits.max_record_bytes / 1024)
                .unwrap_or(1024)
                .max(1),
            k if (1024..=10240).contains(&k) => k,
            k => {
                return Err(Error::validation_failed(
                    "maxRecordSizeInKiB",
                    Some(&k.to_string()),
                    "Member must have value between 1024 and 10240",
                ))
            }
        };
        self.node
            .propose_meta(MetaCommand::CreateStream {
                name,
                shard_count: req.shard_count,
                retention_hours: retention,
                max_record_size_kib: kib,
                now_ms: self.node.now_ms(),
                mode: req.mode,
                tags: req.tags,
            })
            .await
    }

    /// Writes records (PutRecords): all are validated first, then each shard's share is one
    /// append; a shard that fails fails only its own entries.
    pub async fn put_records_inner(
        &self,
        name: StreamName,
        entries: Vec<pb::PutRecordsEntry>,
    ) -> Result<pb::PutRecordsResponse> {
        let limits = &self.node.config.limits;
        if entries.is_empty() || entries.len() > limits.max_put_records_entries {
            return Err(Error::validation_failed(
                "records",
                None,
                &format!(
                    "Member must have length less than or equal to {} and greater than or equal to 1",
                    limits.max_put_records_entries
                ),
            ));
        }
        let total: u64 = entries
            .iter()
            .map(|e| (e.data.len() + e.partition_key.len()) as u64)
            .sum();
        if total > limits.max_put_records_bytes {
            return Err(Error::InvalidArgument(format!(
                "Records size exceeds {} bytes limit",
                limits.max_put_records_bytes
            )));
        }
        let started = Instant::now();
        let (_, stream) = self.data_view(&name).await?;
        let result = self.put_records_to(&stream, entries).await;
        metrics::put_call(
            stream.name.as_str(),
            "PutRecords",
            result.is_ok(),
            started.elapsed(),
        );
        result
    }

    async fn put_records_to(
        &self,
        stream: &StreamMeta,
        entries: Vec<pb::PutRecordsEntry>,
    ) -> Result<pb::PutRecordsResponse> {
        let enhanced = metrics::Enhanced(&stream.enhanced_metrics);
        // Validate everything first: a bad entry rejects the whole request, nothing is written.
        let mut by_shard: BTreeMap<u64, (ShardMeta, Vec<usize>)> = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            let key = self
                .check_record(stream, &e.partition_key, &e.data, &e.explicit_hash_key)
                .map_err(|err| indexed(err, i))?;
            let shard = Self::route(stream, key)?;
            by_shard
                .entry(shard.group)
                .or_insert_with(|| (shard.clone(), Vec::new()))
                .1
                .push(i);
        }
        let mut results: Vec<pb::PutRecordsResult> =
            vec![pb::PutRecordsResult::default(); entries.len()];
        let mut entries: Vec<Option<pb::PutRecordsEntry>> = entries.into_iter().map(Some).collect();
        let mut calls = Vec::new();
        for (group, (shard, idxs)) in by_shard {
            let records: Vec<WireRecord> = idxs
                .iter()
                .filter_map(|i| entries[*i].take())
                .map(|e| WireRecord {
                    partition_key: e.partition_key,
                    data: e.data,
                    encryption: bytes::Bytes::new(),
                })
                .collect();
            let bytes: u64 = records
                .iter()
                .map(|r| (r.data.len() + r.partition_key.len()) as u64)
                .sum();
            let node = self.node.clone();
            calls.push(async move { (shard, idxs, bytes, node.append(group, records).await) });
        }
        let mut failed = 0u32;
        let mut throttled = 0u64;
        let mut accepted_records = 0u64;
        for (shard, idxs, bytes, outcome) in futures::future::join_all(calls).await {
            match outcome {
                Ok(a) => {
                    metrics::incoming(
                        enhanced,
                        stream.name.as_str(),
                        shard.id(),
                        idxs.len() as u64,
                        bytes,
                    );
                    for (k, i) in idxs.iter().enumerate() {
                        let seq = SequenceNumber::new(
                            shard.id(),
                            Position {
                                log_index: a.log_index,
                                sub: a.first_sub + k as u32,
                            },
                        )?;
                        results[*i] = pb::PutRecordsResult {
                            shard_id: shard.id().to_string(),
                            sequence_number: seq.encode(),
                            ..Default::default()
                        };
                        accepted_records += 1;
                    }
                }
                Err(e) => {
                    if matches!(e, Error::ProvisionedThroughputExceeded(_)) {
                        throttled += idxs.len() as u64;
                    }
                    for i in &idxs {
                        failed += 1;
                        results[*i] = pb::PutRecordsResult {
                            error_code: e.kinesis_name().to_string(),
                            error_message: e.message().to_string(),
                            ..Default::default()
                        };
                    }
                }
            }
        }
        metrics::put_records_entries(
            stream.name.as_str(),
            accepted_records,
            u64::from(failed).saturating_sub(throttled),
            throttled,
        );
        Ok(pb::PutRecordsResponse {
            failed_record_count: failed,
            records: results,
            encryption_type: "NONE".into(),
        })
    }

    /// Issues a shard iterator.
    pub async fn get_shard_iterator_inner(
        &self,
        req: pb::GetShardIteratorRequest,
    ) -> Result<String> {
        let name = self.stream_name(req.stream.as_ref())?;
        let shard_id = ShardId::parse(&req.shard_id)?;
        let (state, stream) = self.data_view(&name).await?;
        let shard = stream.shard(shard_id).cloned().ok_or_else(|| {
            Error::ResourceNotFound(format!(
                "Shard {shard_id} in stream {name} under account {} does not exist",
                state.account
            ))
        })?;
        let ty = pb::ShardIteratorType::try_from(req.iterator_type)
            .unwrap_or(pb::ShardIteratorType::Unspecified);
        let seq_arg = || -> Result<SequenceNumber> {
            if req.starting_sequence_number.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "StartingSequenceNumber must be specified for ShardIteratorType {}",
                    ty.as_str_name()
                )));
            }
            let seq = SequenceNumber::parse(&req.starting_sequence_number).map_err(|_| {
                Error::InvalidArgument(format!(
                    "StartingSequenceNumber {} used in GetShardIterator on shard {shard_id} in stream {name} under account {} is invalid.",
                    req.starting_sequence_number, state.account
                ))
            })?;
            if seq.shard != shard_id {
                return Err(Error::InvalidArgument(format!(
                    "Invalid StartingSequenceNumber. It encodes {}, while it was used in a call to a shard with {shard_id}",
                    seq.shard
                )));
            }
            Ok(seq)
        };
        let pos = match ty {
            pb::ShardIteratorType::TrimHorizon => Position::START,
            pb::ShardIteratorType::AtSequenceNumber => seq_arg()?.pos,
            pb::ShardIteratorType::AfterSequenceNumber => seq_arg()?.pos.next(),
            pb::ShardIteratorType::Latest => {
                let r = self
                    .node
                    .read(shard.group, positions_request(shard.group, 0))
                    .await?;
                r.end
            }
            pb::ShardIteratorType::AtTimestamp => {
                if req.timestamp_ms == 0 {
                    return Err(Error::InvalidArgument(
                        "Timestamp must be specified for ShardIteratorType AT_TIMESTAMP".into(),
                    ));
                }
                let r = self
                    .node
                    .read(shard.group, positions_request(shard.group, req.timestamp_ms))
                    .await?;
                r.found.unwrap_or(r.end)
            }
            pb::ShardIteratorType::Unspecified => {
                return Err(Error::validation_failed(
                    "shardIteratorType",
                    None,
                    "Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]",
                ))
            }
        };
        let token = IteratorToken {
            stream: name,
            stream_uid: stream.uid,
            shard: shard_id,
            pos,
            issued_ms: self.node.now_ms(),
        };
        Ok(token.seal(&Self::key(&state)?))
    }

    /// Checks a read's record limit (0 = the maximum) and opens its iterator.
    async fn open_read(&self, iterator: &str, limit: u32) -> Result<OpenRead> {
        let max = self.node.config.limits.max_get_records_limit;
        let limit = match limit {
            0 => max,
            l if l <= max => l,
            l => {
                return Err(Error::validation_failed(
                    "limit",
                    Some(&l.to_string()),
                    &format!("Member must have value less than or equal to {max}"),
                ))
            }
        };
        let state = self.node.state()?;
        let token = IteratorToken::open(iterator, &Self::key(&state)?, self.node.now_ms())?;
        let (state, stream) = self.data_view(&token.stream).await?;
        if stream.uid != token.stream_uid {
            return Err(Error::ResourceNotFound(format!(
                "Stream {} under account {} not found (the iterator belongs to a deleted stream of that name).",
                token.stream, state.account
            )));
        }
        let shard = stream.shard(token.shard).cloned().ok_or_else(|| {
            Error::ResourceNotFound(format!(
                "Shard {} in stream {} does not exist",
                token.shard, token.stream
            ))
        })?;
        Ok(OpenRead {
            state,
            stream,
            token,
            shard,
            limit,
        })
    }

    /// Reads a page of records at an iterator.
    pub async fn get_records_inner(
        &self,
        req: pb::GetRecordsRequest,
    ) -> Result<pb::GetRecordsResponse> {
        let OpenRead {
            state,
            stream,
            token,
            shard,
            limit,
        } = self.open_read(&req.shard_iterator, req.limit).await?;
        let started = Instant::now();
        let enhanced = metrics::Enhanced(&stream.enhanced_metrics);
        let shard_name = token.shard.to_string();
        let wait_ms = req.wait_ms.min(MAX_GET_RECORDS_WAIT_MS);
        let result = self
            .get_records_from(&state, &token, &shard, limit, wait_ms, None)
            .await;
        metrics::get_records(
            enhanced,
            stream.name.as_str(),
            &shard_name,
            started.elapsed(),
            result
                .as_ref()
                .ok()
                .map(|p| (p.response.records.len() as u64, p.bytes, p.age_ms)),
        );
        result.map(|p| p.response)
    }

    /// Starts a tail (`TailShard`): checks the request, then a task pushes pages until the
    /// client goes away or a read fails (the error is the stream's last message).
    pub async fn tail_shard_inner(&self, req: pb::TailShardRequest) -> Result<TailPages> {
        let open = self.open_read(&req.shard_iterator, req.limit).await?;
        let slot = self.node.tail_slot(open.shard.group)?;
        let (tx, rx) = mpsc::channel(TAIL_QUEUE);
        tokio::spawn(self.clone().tail(open, slot, tx));
        Ok(ReceiverStream::new(rx))
    }

    /// The loop behind a tail: reads from the last page's end on (long polls of
    /// [`TAIL_WAIT_MS`] through [`Node::tail_read`]), sends each page, and paces itself to the
    /// shard's read byte limit per second.
    async fn tail(
        self,
        open: OpenRead,
        // Held for the tail's life: its place in the shard's count of tails on this node.
        _slot: TailSlot,
        tx: mpsc::Sender<std::result::Result<pb::GetRecordsResponse, Status>>,
    ) {
        let OpenRead {
            state,
            stream,
            mut token,
            shard,
            limit,
        } = open;
        let lease = TailLease::default();
        let enhanced = metrics::Enhanced(&stream.enhanced_metrics);
        let shard_name = token.shard.to_string();
        let mut pacer = Pacer::new(self.node.config.limits.shard_read_bytes_per_sec);
        loop {
            let page = match self
                .get_records_from(&state, &token, &shard, limit, TAIL_WAIT_MS, Some(&lease))
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(stream = %stream.name, shard = %shard_name, error = %e, "tail ends");
                    let _ = tx.send(Err(to_status(&e))).await;
                    return;
                }
            };
            metrics::outgoing(
                enhanced,
                stream.name.as_str(),
                &shard_name,
                page.response.records.len() as u64,
                page.bytes,
                page.age_ms,
            );
            let end_of_shard = page.response.next_shard_iterator.is_empty();
            token = page.next;
            if tx.send(Ok(page.response)).await.is_err() || end_of_shard {
                return;
            }
            if let Some(until) = pacer.spend(page.bytes, Instant::now()) {
                tokio::time::sleep_until(until.into()).await;
            }
        }
    }

    /// One read of records at `token` (a tail's when `tail` is given).
    async fn get_records_from(
        &self,
        state: &MetaState,
        token: &IteratorToken,
        shard: &ShardMeta,
        limit: u32,
        wait_ms: u32,
        tail: Option<&TailLease>,
    ) -> Result<Page> {
        let limits = &self.node.config.limits;
        let req = ReadShardRequest {
            group_id: shard.group,
            log_index: token.pos.log_index,
            sub: token.pos.sub,
            max_records: limit,
            max_bytes: limits.max_get_records_bytes,
            mode: ReadMode::Records as i32,
            at_timestamp_ms: 0,
            wait_ms,
            tail: tail.is_some(),
        };
        let read = match tail {
            Some(lease) => self.node.tail_read(shard.group, req, lease).await?,
            None => self.node.read(shard.group, req).await?,
        };
        let mut next = token.pos.max(read.trim);
        let mut records = Vec::with_capacity(read.records.len());
        let mut bytes = 0u64;
        let mut last_arrival = None;
        for (pos, rec) in read.records {
            next = pos.next();
            last_arrival = Some(rec.arrival_ms);
            bytes += rec.data.len() as u64;
            records.push(pb::Record {
                sequence_number: SequenceNumber::new(token.shard, pos)?.encode(),
                partition_key: rec.partition_key,
                data: rec.data,
                approximate_arrival_timestamp_ms: rec.arrival_ms,
                encryption_type: "NONE".into(),
            });
        }
        // Skip to the end of entries without records (positions are log-index based).
        if next < read.end && records.is_empty() {
            next = read.end;
        }
        let millis_behind = if next >= read.end {
            0
        } else {
            read.last_arrival_ms
                .saturating_sub(last_arrival.unwrap_or(read.last_arrival_ms))
        };
        // IteratorAgeMilliseconds: how old the last record returned is (0 when caught up).
        let now = self.node.now_ms();
        let age = match last_arrival {
            Some(t) => now.saturating_sub(t),
            None => millis_behind,
        };
        let next_token = IteratorToken {
            pos: next,
            issued_ms: now,
            ..token.clone()
        };
        Ok(Page {
            response: pb::GetRecordsResponse {
                records,
                next_shard_iterator: next_token.seal(&Self::key(state)?),
                millis_behind_latest: millis_behind,
                child_shards: Vec::new(),
            },
            bytes,
            age_ms: age,
            next: next_token,
        })
    }

    /// Increases or decreases the retention period.
    pub async fn retention(&self, req: pb::UpdateRetentionRequest, increase: bool) -> Result<()> {
        let name = self.stream_name(req.stream.as_ref())?;
        self.node
            .config
            .limits
            .validate_retention_hours(req.retention_hours)?;
        self.node
            .propose_meta(MetaCommand::SetRetention {
                name,
                hours: req.retention_hours,
                increase,
            })
            .await
    }

    /// Writes one record; returns its shard and sequence number.
    pub async fn put_record(
        &self,
        name: StreamName,
        partition_key: String,
        data: bytes::Bytes,
        explicit_hash_key: &str,
        sequence_number_for_ordering: &str,
    ) -> Result<(ShardId, SequenceNumber)> {
        if !sequence_number_for_ordering.is_empty() {
            SequenceNumber::parse(sequence_number_for_ordering).map_err(|_| {
                Error::InvalidArgument(format!(
                    "SequenceNumberForOrdering {sequence_number_for_ordering} is invalid."
                ))
            })?;
        }
        let started = Instant::now();
        let (_, stream) = self.data_view(&name).await?;
        let result = self
            .put_record_to(&stream, partition_key, data, explicit_hash_key)
            .await;
        metrics::put_call(
            stream.name.as_str(),
            "PutRecord",
            result.is_ok(),
            started.elapsed(),
        );
        result
    }

    pub(crate) async fn put_record_to(
        &self,
        stream: &StreamMeta,
        partition_key: String,
        data: bytes::Bytes,
        explicit_hash_key: &str,
    ) -> Result<(ShardId, SequenceNumber)> {
        let key = self.check_record(stream, &partition_key, &data, explicit_hash_key)?;
        let shard = Self::route(stream, key)?;
        let bytes = (data.len() + partition_key.len()) as u64;
        let a = self
            .node
            .append(
                shard.group,
                vec![WireRecord {
                    partition_key,
                    data,
                    encryption: bytes::Bytes::new(),
                }],
            )
            .await?;
        let seq = SequenceNumber::new(
            shard.id(),
            Position {
                log_index: a.log_index,
                sub: a.first_sub,
            },
        )?;
        metrics::incoming(
            metrics::Enhanced(&stream.enhanced_metrics),
            stream.name.as_str(),
            shard.id(),
            1,
            bytes,
        );
        Ok((shard.id(), seq))
    }

    /// One page of a stream's shards, in shard-id order: those passing `filter` with an index
    /// above `after`, at most `limit`; the flag tells whether more follow.
    pub fn list_shards_page(
        stream: &StreamMeta,
        filter: &ShardFilter,
        after: Option<u64>,
        limit: usize,
    ) -> (Vec<pb::Shard>, bool) {
        let parents: std::collections::BTreeSet<u64> =
            stream.shards.iter().map(|s| s.index).collect();
        let mut rest: Vec<&ShardMeta> = stream
            .shards
            .iter()
            .filter(|s| match filter {
                ShardFilter::All | ShardFilter::FromTrimHorizon => true,
                ShardFilter::AfterShardId(i) => s.index > *i,
                ShardFilter::AtLatest => s.ending.is_none(),
                // Open at the trim horizon: the oldest retained generation (no retained parent).
                ShardFilter::AtTrimHorizon => !s.parent.is_some_and(|p| parents.contains(&p)),
                ShardFilter::AtTimestamp(t) => {
                    let t = (*t).max(stream.created_ms);
                    s.created_ms <= t && s.closed_ms.is_none_or(|c| c > t)
                }
                ShardFilter::FromTimestamp(t) => s.closed_ms.is_none_or(|c| c > *t),
            })
            .filter(|s| after.is_none_or(|a| s.index > a))
            .collect();
        rest.sort_by_key(|s| s.index);
        let more = rest.len() > limit;
        (rest.into_iter().take(limit).map(shard_pb).collect(), more)
    }

    fn cluster_status(&self) -> pb::ClusterStatusResponse {
        let state = self.node.meta.get();
        let local: BTreeMap<u64, runnel_raft::GroupStatus> = self
            .node
            .registry
            .status()
            .into_iter()
            .map(|s| (s.group, s))
            .collect();
        let nodes = state
            .nodes
            .values()
            .map(|n| pb::NodeStatus {
                node_id: n.id,
                grpc_addr: n.addr.clone(),
                reachable: true,
            })
            .collect();
        let mut groups = Vec::new();
        let meta_local = local.get(&runnel_raft::META_GROUP);
        groups.push(pb::GroupStatus {
            group_id: runnel_raft::META_GROUP,
            stream: String::new(),
            shard_id: String::new(),
            leader_node: meta_local.and_then(|s| s.leader_node).unwrap_or(0),
            term: meta_local.map_or(0, |s| s.term),
            replica_nodes: state.nodes.keys().copied().collect(),
            applied_index: meta_local.map_or(0, |s| s.applied_index),
            last_log_index: meta_local.map_or(0, |s| s.last_log_index),
        });
        for s in state.streams.values() {
            for sh in &s.shards {
                let l = local.get(&sh.group);
                groups.push(pb::GroupStatus {
                    group_id: sh.group,
                    stream: s.name.to_string(),
                    shard_id: sh.id().to_string(),
                    leader_node: l.and_then(|x| x.leader_node).unwrap_or(0),
                    term: l.map_or(0, |x| x.term),
                    replica_nodes: sh.replicas.iter().map(|r| r.node).collect(),
                    applied_index: l.map_or(0, |x| x.applied_index),
                    last_log_index: l.map_or(0, |x| x.last_log_index),
                });
            }
        }
        pb::ClusterStatusResponse {
            node_id: self.node.config.node_id,
            nodes,
            groups,
        }
    }
}

fn positions_request(group: u64, ts: u64) -> ReadShardRequest {
    ReadShardRequest {
        group_id: group,
        mode: ReadMode::Positions as i32,
        at_timestamp_ms: ts,
        ..Default::default()
    }
}

fn indexed(e: Error, i: usize) -> Error {
    match e {
        Error::Validation(m) => {
            Error::Validation(m.replacen(" at '", &format!(" at 'records.{}.member.", i + 1), 1))
        }
        other => other,
    }
}

fn status_of(s: StreamStatus) -> pb::StreamStatus {
    match s {
        StreamStatus::Creating => pb::StreamStatus::Creating,
        StreamStatus::Active => pb::StreamStatus::Active,
        StreamStatus::Updating => pb::StreamStatus::Updating,
        StreamStatus::Deleting => pb::StreamStatus::Deleting,
    }
}

/// A shard as the public API shows it.
fn shard_pb(s: &ShardMeta) -> pb::Shard {
    pb::Shard {
        shard_id: s.id().to_string(),
        parent_shard_id: s.parent.map(|p| ShardId(p).to_string()).unwrap_or_default(),
        adjacent_parent_shard_id: s
            .adjacent_parent
            .map(|p| ShardId(p).to_string())
            .unwrap_or_default(),
        starting_hash_key: s.range.start.to_string(),
        ending_hash_key: s.range.end.to_string(),
        starting_sequence_number: SequenceNumber::starting(s.id()).encode(),
        ending_sequence_number: s
            .ending
            .and_then(|p| SequenceNumber::new(s.id(), p).ok())
            .map(|q| q.encode())
            .unwrap_or_default(),
    }
}

/// Wraps a handler: metrics, and error → status.
async fn observe<T, F>(op: &'static str, f: F) -> std::result::Result<Response<T>, Status>
where
    F: std::future::Future<Output = Result<T>>,
{
    let started = Instant::now();
    let result = f.await;
    metrics::LATENCY
        .with_label_values(&[op, "grpc"])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(v) => {
            metrics::REQUESTS
                .with_label_values(&[op, "grpc", "ok"])
                .inc();
            Ok(Response::new(v))
        }
        Err(e) => {
            metrics::REQUESTS
                .with_label_values(&[op, "grpc", e.kinesis_name()])
                .inc();
            Err(to_status(&e))
        }
    }
}

#[tonic::async_trait]
impl Runnel for Api {
    async fn create_stream(
        &self,
        request: Request<pb::CreateStreamRequest>,
    ) -> std::result::Result<Response<pb::CreateStreamResponse>, Status> {
        observe("CreateStream", async {
            let req = request.into_inner();
            if req.shard_count == 0 {
                return Err(Error::validation_failed(
                    "shardCount",
                    Some("0"),
                    "Member must have value greater than or equal to 1",
                ));
            }
            self.create_stream(NewStream {
                name: StreamName::parse(&req.name)?,
                shard_count: req.shard_count,
                mode: StreamMode::Provisioned,
                retention_hours: req.retention_hours,
                max_record_size_kib: req.max_record_size_kib,
                tags: BTreeMap::new(),
            })
            .await?;
            Ok(pb::CreateStreamResponse {})
        })
        .await
    }

    async fn delete_stream(
        &self,
        request: Request<pb::DeleteStreamRequest>,
    ) -> std::result::Result<Response<pb::DeleteStreamResponse>, Status> {
        observe("DeleteStream", async {
            let name = self.stream_name(request.get_ref().stream.as_ref())?;
            self.node
                .propose_meta(MetaCommand::DeleteStream { name })
                .await?;
            Ok(pb::DeleteStreamResponse {})
        })
        .await
    }

    async fn describe_stream_summary(
        &self,
        request: Request<pb::DescribeStreamSummaryRequest>,
    ) -> std::result::Result<Response<pb::DescribeStreamSummaryResponse>, Status> {
        observe("DescribeStreamSummary", async {
            let name = self.stream_name(request.get_ref().stream.as_ref())?;
            let state = self.node.fresh_state().await?;
            let s = state.stream(&name)?;
            Ok(pb::DescribeStreamSummaryResponse {
                summary: Some(self.summary(s)),
            })
        })
        .await
    }

    async fn describe_stream(
        &self,
        request: Request<pb::DescribeStreamRequest>,
    ) -> std::result::Result<Response<pb::DescribeStreamResponse>, Status> {
        observe("DescribeStream", async {
            let req = request.into_inner();
            let name = self.stream_name(req.stream.as_ref())?;
            let limit = match req.limit {
                0 => 100,
                l if l <= 10_000 => l as usize,
                l => {
                    return Err(Error::validation_failed(
                        "limit",
                        Some(&l.to_string()),
                        "Member must have value less than or equal to 10000",
                    ))
                }
            };
            let state = self.node.fresh_state().await?;
            let s = state.stream(&name)?;
            let after = if req.exclusive_start_shard_id.is_empty() {
                None
            } else {
                Some(ShardId::parse(&req.exclusive_start_shard_id)?.0)
            };
            let rest: Vec<pb::Shard> = s
                .shards
                .iter()
                .filter(|x| after.is_none_or(|a| x.index > a))
                .map(shard_pb)
                .collect();
            let more = rest.len() > limit;
            let shards = rest.into_iter().take(limit).collect();
            Ok(pb::DescribeStreamResponse {
                summary: Some(self.summary(s)),
                shards,
                has_more_shards: more,
            })
        })
        .await
    }

    async fn list_streams(
        &self,
        request: Request<pb::ListStreamsRequest>,
    ) -> std::result::Result<Response<pb::ListStreamsResponse>, Status> {
        observe("ListStreams", async {
            let req = request.into_inner();
            let limit = match req.limit {
                0 => 100,
                l if l <= 10_000 => l as usize,
                l => {
                    return Err(Error::validation_failed(
                        "limit",
                        Some(&l.to_string()),
                        "Member must have value less than or equal to 10000",
                    ))
                }
            };
            let state = self.node.state()?;
            let all: Vec<&StreamMeta> = state
                .streams
                .values()
                .map(|s| &**s)
                .filter(|s| {
                    req.exclusive_start_stream_name.is_empty()
                        || s.name.as_str() > req.exclusive_start_stream_name.as_str()
                })
                .collect();
            let more = all.len() > limit;
            Ok(pb::ListStreamsResponse {
                streams: all
                    .into_iter()
                    .take(limit)
                    .map(|s| self.summary(s))
                    .collect(),
                has_more_streams: more,
            })
        })
        .await
    }

    async fn list_shards(
        &self,
        request: Request<pb::ListShardsRequest>,
    ) -> std::result::Result<Response<pb::ListShardsResponse>, Status> {
        observe("ListShards", async {
            let req = request.into_inner();
            let name = self.stream_name(req.stream.as_ref())?;
            let state = self.node.fresh_state().await?;
            let s = state.stream(&name)?;
            let limit = match req.max_results {
                0 => 1000,
                l if l <= 10_000 => l as usize,
                l => {
                    return Err(Error::validation_failed(
                        "maxResults",
                        Some(&l.to_string()),
                        "Member must have value less than or equal to 10000",
                    ))
                }
            };
            let after = if req.exclusive_start_shard_id.is_empty() {
                None
            } else {
                Some(ShardId::parse(&req.exclusive_start_shard_id)?.0)
            };
            let (shards, _) = Self::list_shards_page(s, &ShardFilter::All, after, limit);
            Ok(pb::ListShardsResponse { shards })
        })
        .await
    }

    async fn put_record(
        &self,
        request: Request<pb::PutRecordRequest>,
    ) -> std::result::Result<Response<pb::PutRecordResponse>, Status> {
        observe("PutRecord", async {
            let req = request.into_inner();
            let name = self.stream_name(req.stream.as_ref())?;
            let (shard, seq) = self
                .put_record(
                    name,
                    req.partition_key,
                    req.data,
                    &req.explicit_hash_key,
                    &req.sequence_number_for_ordering,
                )
                .await?;
            Ok(pb::PutRecordResponse {
                shard_id: shard.to_string(),
                sequence_number: seq.encode(),
                encryption_type: "NONE".into(),
            })
        })
        .await
    }

    async fn put_records(
        &self,
        request: Request<pb::PutRecordsRequest>,
    ) -> std::result::Result<Response<pb::PutRecordsResponse>, Status> {
        observe("PutRecords", async {
            let req = request.into_inner();
            let name = self.stream_name(req.stream.as_ref())?;
            self.put_records_inner(name, req.records).await
        })
        .await
    }

    type PutRecordStreamStream = crate::put_stream::Acks;

    async fn put_record_stream(
        &self,
        request: Request<tonic::Streaming<pb::PutRecordStreamRequest>>,
    ) -> std::result::Result<Response<Self::PutRecordStreamStream>, Status> {
        Ok(Response::new(crate::put_stream::serve(
            self.clone(),
            request.into_inner(),
        )))
    }

    async fn get_shard_iterator(
        &self,
        request: Request<pb::GetShardIteratorRequest>,
    ) -> std::result::Result<Response<pb::GetShardIteratorResponse>, Status> {
        observe("GetShardIterator", async {
            let shard_iterator = self.get_shard_iterator_inner(request.into_inner()).await?;
            Ok(pb::GetShardIteratorResponse { shard_iterator })
        })
        .await
    }

    async fn get_records(
        &self,
        request: Request<pb::GetRecordsRequest>,
    ) -> std::result::Result<Response<pb::GetRecordsResponse>, Status> {
        observe("GetRecords", self.get_records_inner(request.into_inner())).await
    }

    type TailShardStream = TailPages;

    async fn tail_shard(
        &self,
        request: Request<pb::TailShardRequest>,
    ) -> std::result::Result<Response<Self::TailShardStream>, Status> {
        observe("TailShard", self.tail_shard_inner(request.into_inner())).await
    }

    async fn increase_stream_retention_period(
        &self,
        request: Request<pb::UpdateRetentionRequest>,
    ) -> std::result::Result<Response<pb::UpdateRetentionResponse>, Status> {
        observe("IncreaseStreamRetentionPeriod", async {
            self.retention(request.into_inner(), true).await?;
            Ok(pb::UpdateRetentionResponse {})
        })
        .await
    }

    async fn decrease_stream_retention_period(
        &self,
        request: Request<pb::UpdateRetentionRequest>,
    ) -> std::result::Result<Response<pb::UpdateRetentionResponse>, Status> {
        observe("DecreaseStreamRetentionPeriod", async {
            self.retention(request.into_inner(), false).await?;
            Ok(pb::UpdateRetentionResponse {})
        })
        .await
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> std::result::Result<Response<pb::ClusterStatusResponse>, Status> {
        observe("ClusterStatus", async { Ok(self.cluster_status()) }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_keeps_a_tail_to_its_bytes_per_second_with_one_second_of_burst() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let ms = |n: u64| Duration::from_millis(n);
        assert_eq!(Pacer::new(0).spend(u64::MAX, t0), None);
        let mut p = Pacer::new(1000);
        // One second of credit: 500 bytes, then 500 more, go at once.
        assert_eq!(p.spend(500, t0), None);
        assert_eq!(p.spend(500, t0), None);
        // Beyond it, each byte costs a millisecond.
        assert_eq!(p.spend(500, t0), Some(t0 + ms(500)));
        assert_eq!(p.spend(2000, t0 + ms(500)), Some(t0 + ms(2500)));
        // A page larger than a second's worth is paid for afterwards, not forgiven.
        assert_eq!(p.spend(10_000, t0 + ms(2500)), Some(t0 + ms(12_500)));
        // A long pause earns one second of credit, no more.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(p.spend(1000, later), None);
        assert_eq!(p.spend(1, later), Some(later + ms(1)));
    }
}
