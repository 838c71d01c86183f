//! Rust SDK for the `runnel.v1` gRPC API: a thin typed layer over the generated client that turns
//! gRPC statuses back into [`runnel_types::Error`] (by the `x-kinesis-error` name the server sends)
//! and retries only what is safe to retry.

use std::time::Duration;

use runnel_proto::v1 as pb;
use runnel_proto::v1::runnel_client::RunnelClient;
use runnel_types::Error;
use tonic::transport::{Channel, Endpoint};

pub use runnel_proto::v1;

pub mod producer;
pub mod record_stream;
pub use producer::{Producer, ProducerConfig};
pub use record_stream::RecordStream;

/// Largest message accepted or sent.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Converts a gRPC status from a Runnel node into the domain error.
pub fn from_status(s: &tonic::Status) -> Error {
    let name = s
        .metadata()
        .get("x-kinesis-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match name {
        Some(n) => Error::from_kinesis_name(&n, s.message().to_string()),
        None => match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                Error::Unavailable(format!("{}: {}", s.code(), s.message()))
            }
            _ => Error::Internal(format!("{}: {}", s.code(), s.message())),
        },
    }
}

/// Where a shard iterator starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Oldest retained record.
    TrimHorizon,
    /// Just after the newest record.
    Latest,
    /// At a sequence number.
    At(String),
    /// After a sequence number.
    After(String),
    /// First record that arrived at or after this time (ms).
    Timestamp(u64),
}

impl std::str::FromStr for Start {
    type Err = String;

    /// `trim-horizon`, `latest`, `at:SEQ`, `after:SEQ`, `timestamp:MILLIS`.
    fn from_str(s: &str) -> Result<Start, String> {
        match s {
            "trim-horizon" => return Ok(Start::TrimHorizon),
            "latest" => return Ok(Start::Latest),
            _ => {}
        }
        if let Some(seq) = s.strip_prefix("at:") {
            return Ok(Start::At(seq.to_string()));
        }
        if let Some(seq) = s.strip_prefix("after:") {
            return Ok(Start::After(seq.to_string()));
        }
        if let Some(ts) = s.strip_prefix("timestamp:") {
            return ts
                .parse()
                .map(Start::Timestamp)
                .map_err(|_| format!("timestamp {ts:?} is not milliseconds since the epoch"));
        }
        Err(format!(
            "unknown start {s:?}: use trim-horizon, latest, at:SEQ, after:SEQ or timestamp:MILLIS"
        ))
    }
}

/// A client of one Runnel endpoint (any node).
#[derive(Clone, Debug)]
pub struct Client {
    inner: RunnelClient<Channel>,
}

/// Reference to a stream by name.
pub fn stream(name: &str) -> Option<pb::StreamRef> {
    Some(pb::StreamRef {
        name: name.to_string(),
        arn: String::new(),
    })
}

impl Client {
    /// Connects lazily to `endpoint` (`http://host:port`).
    pub fn connect_lazy(endpoint: &str) -> Result<Client, Error> {
        let ep = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| Error::InvalidArgument(format!("bad endpoint {endpoint:?}: {e}")))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true);
        let inner = RunnelClient::new(ep.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Client { inner })
    }

    /// Connects lazily to a node by the `grpc_addr` that ClusterStatus reports (`host:port`, or
    /// a URL).
    pub fn connect_node(grpc_addr: &str) -> Result<Client, Error> {
        if grpc_addr.contains("://") {
            Client::connect_lazy(grpc_addr)
        } else {
            Client::connect_lazy(&format!("http://{grpc_addr}"))
        }
    }

    /// A client of the node leading `stream`'s shard `shard_id`, as this client's node sees the
    /// cluster (`None` while it knows no leader). A tail served there needs no relay.
    pub async fn shard_leader(
        &self,
        stream: &str,
        shard_id: &str,
    ) -> Result<Option<Client>, Error> {
        let status = self.cluster_status().await?;
        let Some(g) = status
            .groups
            .iter()
            .find(|g| g.stream == stream && g.shard_id == shard_id && g.leader_node != 0)
        else {
            return Ok(None);
        };
        match status.nodes.iter().find(|n| n.node_id == g.leader_node) {
            Some(n) if !n.grpc_addr.is_empty() => Client::connect_node(&n.grpc_addr).map(Some),
            _ => Ok(None),
        }
    }

    /// Single records to `stream_name` pipelined on one `PutRecordStream` through this
    /// client's node, each acknowledged on its own (see [`RecordStream`]).
    pub fn record_stream(&self, stream_name: &str) -> RecordStream {
        RecordStream::new(self.clone(), stream_name)
    }

    /// The generated client, for calls this wrapper does not cover.
    pub fn raw(&self) -> RunnelClient<Channel> {
        self.inner.clone()
    }

    /// Creates a stream.
    pub async fn create_stream(
        &self,
        name: &str,
        shards: u32,
        retention_hours: u32,
    ) -> Result<(), Error> {
        self.raw()
            .create_stream(pb::CreateStreamRequest {
                name: name.to_string(),
                shard_count: shards,
                retention_hours,
                max_record_size_kib: 0,
            })
            .await
            .map_err(|s| from_status(&s))?;
        Ok(())
    }

    /// Waits until the stream is ACTIVE (or the timeout passes). Like the AWS `stream_exists`
    /// waiter it keeps polling while the stream is not found yet (metadata reaches every node
    /// shortly after it is committed).
    pub async fn wait_active(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<pb::StreamSummary, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.describe_stream_summary(name).await {
                Ok(s) if s.status == pb::StreamStatus::Active as i32 => return Ok(s),
                Ok(_) => {}
                Err(e) if e.is_retryable() => {}
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Unavailable(format!(
                    "stream {name} did not become ACTIVE in {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deletes a stream.
    pub async fn delete_stream(&self, name: &str) -> Result<(), Error> {
        self.raw()
            .delete_stream(pb::DeleteStreamRequest {
                stream: stream(name),
            })
            .await
            .map_err(|s| from_status(&s))?;
        Ok(())
    }

    /// Describes a stream.
    pub async fn describe_stream_summary(&self, name: &str) -> Result<pb::StreamSummary, Error> {
        let r = self
            .raw()
            .describe_stream_summary(pb::DescribeStreamSummaryRequest {
                stream: stream(name),
            })
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        r.summary
            .ok_or_else(|| Error::Internal("empty summary".into()))
    }

    /// Every stream (all pages).
    pub async fn list_streams(&self) -> Result<Vec<pb::StreamSummary>, Error> {
        let mut out: Vec<pb::StreamSummary> = Vec::new();
        loop {
            let r = self
                .raw()
                .list_streams(pb::ListStreamsRequest {
                    limit: 100,
                    exclusive_start_stream_name: out
                        .last()
                        .map(|s| s.name.clone())
                        .unwrap_or_default(),
                })
                .await
                .map_err(|s| from_status(&s))?
                .into_inner();
            out.extend(r.streams);
            if !r.has_more_streams {
                return Ok(out);
            }
        }
    }

    /// Every shard of a stream (all pages).
    pub async fn list_shards(&self, name: &str) -> Result<Vec<pb::Shard>, Error> {
        let mut out: Vec<pb::Shard> = Vec::new();
        loop {
            let r = self
                .raw()
                .list_shards(pb::ListShardsRequest {
                    stream: stream(name),
                    exclusive_start_shard_id: out
                        .last()
                        .map(|s| s.shard_id.clone())
                        .unwrap_or_default(),
                    max_results: 1000,
                })
                .await
                .map_err(|s| from_status(&s))?
                .into_inner();
            let n = r.shards.len();
            out.extend(r.shards);
            if n < 1000 {
                return Ok(out);
            }
        }
    }

    /// Writes one record; returns (shard id, sequence number).
    pub async fn put_record(
        &self,
        name: &str,
        partition_key: &str,
        data: Vec<u8>,
    ) -> Result<(String, String), Error> {
        self.put_record_ordered(name, partition_key, data, "").await
    }

    /// Writes one record with `SequenceNumberForOrdering` (the sequence number of this
    /// client's previous record with the key; empty for none): its number is greater.
    pub async fn put_record_ordered(
        &self,
        name: &str,
        partition_key: &str,
        data: Vec<u8>,
        sequence_number_for_ordering: &str,
    ) -> Result<(String, String), Error> {
        let r = self
            .raw()
            .put_record(pb::PutRecordRequest {
                stream: stream(name),
                partition_key: partition_key.to_string(),
                data: data.into(),
                explicit_hash_key: String::new(),
                sequence_number_for_ordering: sequence_number_for_ordering.to_string(),
            })
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok((r.shard_id, r.sequence_number))
    }

    /// Writes up to 500 records; per-entry results.
    pub async fn put_records(
        &self,
        name: &str,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<pb::PutRecordsResponse, Error> {
        let records = entries
            .into_iter()
            .map(|(k, d)| pb::PutRecordsEntry {
                partition_key: k,
                data: d.into(),
                explicit_hash_key: String::new(),
            })
            .collect();
        Ok(self
            .raw()
            .put_records(pb::PutRecordsRequest {
                stream: stream(name),
                records,
            })
            .await
            .map_err(|s| from_status(&s))?
            .into_inner())
    }

    /// Gets a shard iterator.
    pub async fn shard_iterator(
        &self,
        name: &str,
        shard_id: &str,
        start: &Start,
    ) -> Result<String, Error> {
        use pb::ShardIteratorType as T;
        let (ty, seq, ts) = match start {
            Start::TrimHorizon => (T::TrimHorizon, String::new(), 0),
            Start::Latest => (T::Latest, String::new(), 0),
            Start::At(s) => (T::AtSequenceNumber, s.clone(), 0),
            Start::After(s) => (T::AfterSequenceNumber, s.clone(), 0),
            Start::Timestamp(t) => (T::AtTimestamp, String::new(), *t),
        };
        Ok(self
            .raw()
            .get_shard_iterator(pb::GetShardIteratorRequest {
                stream: stream(name),
                shard_id: shard_id.to_string(),
                iterator_type: ty as i32,
                starting_sequence_number: seq,
                timestamp_ms: ts,
            })
            .await
            .map_err(|s| from_status(&s))?
            .into_inner()
            .shard_iterator)
    }

    /// Reads records with an iterator.
    ///
    /// A call refused by the shard's read limit (5 calls/s, 2 MiB/s by default;
    /// `ProvisionedThroughputExceeded`) is retried after 100, 200, 400 and 800 ms, as the AWS
    /// SDKs retry throttling errors; the error is returned when the last retry is refused too.
    pub async fn get_records(
        &self,
        iterator: &str,
        limit: u32,
    ) -> Result<pb::GetRecordsResponse, Error> {
        self.get_records_wait(iterator, limit, Duration::ZERO).await
    }

    /// GetRecords as a long poll (a Runnel extension): when the shard has nothing new, the
    /// leader holds the call until a record is committed or `wait` (capped at 5 s by the server)
    /// passes, then answers (possibly with no records). Retries throttled calls as
    /// [`Client::get_records`] does.
    pub async fn get_records_wait(
        &self,
        iterator: &str,
        limit: u32,
        wait: Duration,
    ) -> Result<pb::GetRecordsResponse, Error> {
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        let mut backoff = Duration::from_millis(100);
        loop {
            let r = self
                .raw()
                .get_records(pb::GetRecordsRequest {
                    shard_iterator: iterator.to_string(),
                    limit,
                    wait_ms,
                })
                .await
                .map_err(|s| from_status(&s));
            match r {
                Err(Error::ProvisionedThroughputExceeded(_))
                    if backoff <= Duration::from_millis(800) =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                other => return Ok(other?.into_inner()),
            }
        }
    }

    /// Tails a shard (`TailShard`, a Runnel extension): a stream of GetRecords-shaped pages
    /// pushed as the shard commits records, from `iterator` on, in order and without gaps; `limit`
    /// caps the records per page (0 = 10,000). A page without records arrives after each second
    /// with nothing new. On an error (the node lost leadership, the connection broke) the
    /// stream ends; resume with the last page's `next_shard_iterator`, best through
    /// [`Client::shard_leader`], where the tail is served without a relay.
    pub async fn tail_shard(
        &self,
        iterator: &str,
        limit: u32,
    ) -> Result<tonic::Streaming<pb::GetRecordsResponse>, Error> {
        Ok(self
            .raw()
            .tail_shard(pb::TailShardRequest {
                shard_iterator: iterator.to_string(),
                limit,
            })
            .await
            .map_err(|s| from_status(&s))?
            .into_inner())
    }

    /// Cluster status as seen by the node answering.
    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusResponse, Error> {
        Ok(self
            .raw()
            .cluster_status(pb::ClusterStatusRequest {})
            .await
            .map_err(|s| from_status(&s))?
            .into_inner())
    }
}

/// Follows one shard with `TailShard`, resuming after every break from the last page received:
/// through the shard's leader when this client's node names one (no relay), and after a failed
/// attempt through this client's node, alternately. Used by `runnel tail` and the load generator.
#[derive(Debug)]
pub struct ShardFollower {
    client: Client,
    stream: String,
    shard: String,
    iterator: String,
    via_leader: bool,
    pages: Option<tonic::Streaming<pb::GetRecordsResponse>>,
}

impl ShardFollower {
    /// A follower of `shard` of `stream` from `iterator` on; nothing is sent before
    /// [`ShardFollower::next_page`].
    pub fn new(client: Client, stream: &str, shard: &str, iterator: String) -> ShardFollower {
        ShardFollower {
            client,
            stream: stream.to_string(),
            shard: shard.to_string(),
            iterator,
            via_leader: true,
            pages: None,
        }
    }

    /// The next page (possibly without records: one comes after each idle second). An error
    /// means the tail broke or could not start; the next call starts a new one after the last
    /// page received. A page with an empty `next_shard_iterator` is the end of a closed shard.
    pub async fn next_page(&mut self) -> Result<pb::GetRecordsResponse, Error> {
        let mut pages = match self.pages.take() {
            Some(p) => p,
            None => {
                let node = match self.via_leader {
                    true => self
                        .client
                        .shard_leader(&self.stream, &self.shard)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| self.client.clone()),
                    false => self.client.clone(),
                };
                match node.tail_shard(&self.iterator, 10_000).await {
                    Ok(p) => p,
                    Err(e) => return Err(self.broke(e)),
                }
            }
        };
        match pages.message().await {
            Ok(Some(page)) => {
                self.iterator.clone_from(&page.next_shard_iterator);
                self.pages = Some(pages);
                Ok(page)
            }
            Ok(None) => Err(self.broke(Error::Unavailable("the tail ended".into()))),
            Err(s) => Err(self.broke(from_status(&s))),
        }
    }

    fn broke(&mut self, e: Error) -> Error {
        self.via_leader = !self.via_leader;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_parses() {
        assert_eq!("trim-horizon".parse::<Start>().unwrap(), Start::TrimHorizon);
        assert_eq!(
            "after:12".parse::<Start>().unwrap(),
            Start::After("12".into())
        );
        assert_eq!("timestamp:5".parse::<Start>().unwrap(), Start::Timestamp(5));
        assert!("timestamp:x".parse::<Start>().is_err());
        assert!("sideways".parse::<Start>().is_err());
    }

    #[test]
    fn status_maps_back_to_kinesis_errors() {
        let mut s = tonic::Status::not_found("Stream x not found");
        s.metadata_mut().insert(
            "x-kinesis-error",
            "ResourceNotFoundException".parse().unwrap(),
        );
        assert_eq!(
            from_status(&s),
            Error::ResourceNotFound("Stream x not found".into())
        );
        assert!(from_status(&tonic::Status::unavailable("down")).is_retryable());
    }
}
