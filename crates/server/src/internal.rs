//! The node-to-node gRPC service: Raft messages for every group (handed to the registry),
//! forwarded proposals and reads (executed only if this node leads the group; never forwarded
//! again), and replica digests.

use std::sync::Arc;

use runnel_proto::internal::v1 as ipb;
use runnel_proto::internal::v1::internal_server::Internal;
use runnel_raft::codec;
use runnel_types::Position;
use tonic::{Request, Response, Status, Streaming};

use crate::node::{Attempt, Node, Proposal, ShardRead, NOT_LEADER};

/// The internal service of a node.
#[derive(Clone)]
pub struct InternalService {
    node: Arc<Node>,
}

impl InternalService {
    /// The service of `node`.
    pub fn new(node: Arc<Node>) -> Self {
        InternalService { node }
    }
}

/// Converts a read reply from the wire.
pub fn shard_read_from_proto(r: ipb::ReadShardReply) -> ShardRead {
    ShardRead {
        records: r
            .records
            .into_iter()
            .map(|x| {
                (
                    Position {
                        log_index: x.log_index,
                        sub: x.sub,
                    },
                    runnel_storage::StoredRecord {
                        arrival_ms: x.arrival_ms,
                        partition_key: x.partition_key,
                        data: x.data,
                        encryption: x.encryption,
                    },
                )
            })
            .collect(),
        end: Position {
            log_index: r.end_log_index,
            sub: r.end_sub,
        },
        trim: Position {
            log_index: r.trim_log_index,
            sub: r.trim_sub,
        },
        last_arrival_ms: r.last_arrival_ms,
        found: r.found.then_some(Position {
            log_index: r.found_log_index,
            sub: r.found_sub,
        }),
    }
}

fn shard_read_to_proto(r: ShardRead) -> ipb::ReadShardReply {
    ipb::ReadShardReply {
        records: r
            .records
            .into_iter()
            .map(|(p, x)| ipb::StoredRecord {
                log_index: p.log_index,
                sub: p.sub,
                arrival_ms: x.arrival_ms,
                partition_key: x.partition_key,
                data: x.data,
                encryption: x.encryption,
            })
            .collect(),
        end_log_index: r.end.log_index,
        end_sub: r.end.sub,
        trim_log_index: r.trim.log_index,
        trim_sub: r.trim.sub,
        last_arrival_ms: r.last_arrival_ms,
        found: r.found.is_some(),
        found_log_index: r.found.map_or(0, |p| p.log_index),
        found_sub: r.found.map_or(0, |p| p.sub),
        ..Default::default()
    }
}

/// Serves one peer's Raft stream: every message is handled as a `Raft` call would be, each in
/// its own task (messages of different groups never wait for each other's log writes);
/// each reply goes back with its request's id as soon as it is ready. Ends when the peer ends
/// the stream (after answering what is outstanding) or stops reading replies.
async fn serve_raft_stream(
    node: Arc<Node>,
    mut inbound: Streaming<ipb::RaftStreamRequest>,
    tx: tokio::sync::mpsc::Sender<Result<ipb::RaftStreamReply, Status>>,
) {
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut pending = FuturesUnordered::new();
    let mut reading = true;
    loop {
        tokio::select! {
            biased;
            Some(done) = pending.next(), if !pending.is_empty() => {
                let reply = match done {
                    Ok((id, reply)) => ipb::RaftStreamReply { id, reply: Some(reply) },
                    // The handler panicked: the peer's call fails and it retries.
                    Err(e) => {
                        tracing::error!(error = %e, "raft stream handler failed");
                        continue;
                    }
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
            msg = inbound.message(), if reading => match msg {
                Ok(Some(m)) => {
                    let id = m.id;
                    let request = m.request.unwrap_or_default();
                    let node = node.clone();
                    // A task per message: decoding large AppendEntries runs on any core.
                    pending.push(tokio::spawn(async move {
                        (id, node.registry.handle_raft(request).await)
                    }));
                }
                Ok(None) => reading = false,
                Err(status) => {
                    tracing::debug!(error = %status, "raft stream from a peer ended");
                    reading = false;
                }
            },
            else => return,
        }
    }
}

#[tonic::async_trait]
impl Internal for InternalService {
    async fn raft(
        &self,
        request: Request<ipb::RaftRequest>,
    ) -> Result<Response<ipb::RaftReply>, Status> {
        Ok(Response::new(
            self.node.registry.handle_raft(request.into_inner()).await,
        ))
    }

    type RaftStreamStream =
        tokio_stream::wrappers::ReceiverStream<Result<ipb::RaftStreamReply, Status>>;

    async fn raft_stream(
        &self,
        request: Request<Streaming<ipb::RaftStreamRequest>>,
    ) -> Result<Response<Self::RaftStreamStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(serve_raft_stream(
            self.node.clone(),
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn raft_batch(
        &self,
        request: Request<ipb::RaftBatchRequest>,
    ) -> Result<Response<ipb::RaftBatchReply>, Status> {
        let registry = &self.node.registry;
        let replies = futures::future::join_all(
            request
                .into_inner()
                .requests
                .into_iter()
                .map(|r| registry.handle_raft(r)),
        )
        .await;
        Ok(Response::new(ipb::RaftBatchReply { replies }))
    }

    async fn node_beat(
        &self,
        request: Request<ipb::NodeBeatRequest>,
    ) -> Result<Response<ipb::NodeBeatReply>, Status> {
        Ok(Response::new(
            self.node.registry.handle_node_beat(request.into_inner()),
        ))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<ipb::SnapshotChunk>>,
    ) -> Result<Response<ipb::RaftReply>, Status> {
        Ok(Response::new(
            self.node
                .registry
                .handle_snapshot(request.into_inner())
                .await,
        ))
    }

    async fn propose(
        &self,
        request: Request<ipb::ProposeRequest>,
    ) -> Result<Response<ipb::ProposeReply>, Status> {
        let req = request.into_inner();
        let proposal: Proposal = codec::decode(&req.command)
            .map_err(|e| Status::invalid_argument(format!("bad proposal: {e}")))?;
        let reply = match self.node.propose_local(req.group_id, &proposal).await {
            Attempt::Done(r) => ipb::ProposeReply {
                response: codec::encode(&r)
                    .map_err(|e| Status::internal(e.to_string()))?
                    .into(),
                ..Default::default()
            },
            Attempt::NotLeader(hint) => ipb::ProposeReply {
                error_code: NOT_LEADER.into(),
                leader_hint: hint.unwrap_or(0),
                ..Default::default()
            },
            Attempt::Fail(e) => ipb::ProposeReply {
                error_code: e.wire_name().into(),
                error_message: e.message().into(),
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn read_shard(
        &self,
        request: Request<ipb::ReadShardRequest>,
    ) -> Result<Response<ipb::ReadShardReply>, Status> {
        let req = request.into_inner();
        let reply = match self.node.read_local(req.group_id, &req).await {
            Attempt::Done(r) => shard_read_to_proto(r),
            Attempt::NotLeader(hint) => ipb::ReadShardReply {
                error_code: NOT_LEADER.into(),
                leader_hint: hint.unwrap_or(0),
                ..Default::default()
            },
            Attempt::Fail(e) => ipb::ReadShardReply {
                error_code: e.wire_name().into(),
                error_message: e.message().into(),
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn group_digest(
        &self,
        request: Request<ipb::GroupDigestRequest>,
    ) -> Result<Response<ipb::GroupDigestReply>, Status> {
        let group = request.into_inner().group_id;
        let Some(frontier) = self.node.registry.frontier(group) else {
            return Err(Status::not_found(format!(
                "group {group} is not hosted here"
            )));
        };
        let f = *frontier.borrow();
        let store = self.node.registry.store();
        let mut from = store
            .trim_horizon(group)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut hasher = digest::Hasher::default();
        let mut count = 0u64;
        loop {
            let batch = store
                .read_records(group, from, f.end, 10_000, 16 << 20)
                .map_err(|e| Status::internal(e.to_string()))?;
            let Some((last, _)) = batch.last() else { break };
            from = last.next();
            for (pos, rec) in &batch {
                hasher.update(pos, rec);
                count += 1;
            }
        }
        Ok(Response::new(ipb::GroupDigestReply {
            applied_index: f.applied_index,
            digest: hasher.finish().into(),
            record_count: count,
        }))
    }
}

/// A small order-sensitive digest of records (FNV-1a 64 over positions and contents), enough to
/// compare replicas.
mod digest {
    use runnel_storage::StoredRecord;
    use runnel_types::Position;

    pub struct Hasher(u64);

    impl Default for Hasher {
        fn default() -> Self {
            Hasher(0xcbf2_9ce4_8422_2325)
        }
    }

    impl Hasher {
        fn bytes(&mut self, b: &[u8]) {
            for x in b {
                self.0 ^= u64::from(*x);
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
        }

        pub fn update(&mut self, pos: &Position, rec: &StoredRecord) {
            self.bytes(&pos.log_index.to_be_bytes());
            self.bytes(&pos.sub.to_be_bytes());
            self.bytes(&rec.arrival_ms.to_be_bytes());
            self.bytes(&(rec.partition_key.len() as u64).to_be_bytes());
            self.bytes(rec.partition_key.as_bytes());
            self.bytes(&(rec.data.len() as u64).to_be_bytes());
            self.bytes(&rec.data);
        }

        pub fn finish(self) -> Vec<u8> {
            self.0.to_be_bytes().to_vec()
        }
    }
}
