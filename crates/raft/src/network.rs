//! Node-to-node transport for Raft traffic.
//!
//! [`PeerPool`] keeps one lazily connected gRPC channel (one HTTP/2 connection) per peer node for
//! the Raft messages of every group, and a second one per peer for snapshots, so a large snapshot
//! cannot delay heartbeats. [`NetworkFactory`] is the per-group openraft network factory; its
//! connections address a group and a target replica over the shared channel.
//!
//! AppendEntries and Vote messages travel on one long-lived connection per peer node, matched to
//! their replies by an id: by default a plain TCP connection of length-prefixed frames
//! ([`crate::tcp`], [`Transport::Tcp`]), or a `RaftStream` over the gRPC channel
//! ([`Transport::GrpcStream`]); a gRPC call per message ([`Transport::GrpcCall`]) cost several
//! times the CPU of a message on an open stream. Messages above [`STREAM_MAX_PAYLOAD`] (catch-up
//! batches) still go as their own `Raft` call, so they cannot hold the connection up for the
//! small ones behind them. A broken connection fails what it had outstanding (openraft retries;
//! Raft messages are idempotent) and the next message opens a new one.
//!
//! Failures to reach a peer, and a peer that does not host the group yet, are reported to openraft
//! as `Unreachable` so it backs off; errors returned by the remote Raft are passed through.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot};
use runnel_proto::internal::v1::internal_client::InternalClient;
use runnel_proto::internal::v1::{
    RaftBatchRequest, RaftKind, RaftReply, RaftRequest, RaftStreamRequest, SnapshotChunk,
};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

use crate::codec::{decode, encode};
use crate::{ReplicaId, ReplicaNode, TypeConfig, Vote};

/// Size of one snapshot chunk on the wire.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// How long a heartbeat waits for others to the same node before they travel together. Each
/// group's heartbeat timer runs on its own, so without this window few would share a call; with
/// it a node leading N idle groups sends about `1000 / HEARTBEAT_LINGER_MS` calls per second to
/// each peer instead of `2 * N` (at 500 ms heartbeats). It delays only empty AppendEntries, far
/// below the election timeout.
const HEARTBEAT_LINGER: Duration = Duration::from_millis(20);

/// How much later than openraft's own deadline an AppendEntries or Vote gives up here.
///
/// openraft times each AppendEntries out itself after the heartbeat interval and treats that as
/// a `Timeout`: the follower gets the next message at once. If our limit fired first, the
/// `Unreachable` we report would make openraft back off from that follower for 500 ms instead,
/// so one slow fsync on a follower (0.2–0.4 s happen on a shared disk) cost half a second of its
/// replication. Ours is only a backstop for a message whose caller stopped waiting.
const DEADLINE_MARGIN: Duration = Duration::from_millis(250);

fn backstop(option: &RPCOption) -> Duration {
    option.hard_ttl() + DEADLINE_MARGIN
}

/// Larger Raft messages go as their own call instead of on the peer's stream.
pub const STREAM_MAX_PAYLOAD: usize = 512 << 10;

/// Messages waiting to go out on one peer's stream before senders are refused.
const STREAM_QUEUE_LIMIT: usize = 8192;

/// The queue of `node`'s per-peer task in `map`, starting a new task (`start`) when there is
/// none, it ended, or the peer's address changed (the old task then drains its queue and ends).
fn peer_queue<T: Clone>(
    map: &mut HashMap<u64, (String, T)>,
    node: u64,
    addr: &str,
    closed: impl Fn(&T) -> bool,
    start: impl FnOnce() -> T,
) -> T {
    if let Some((known, tx)) = map.get(&node) {
        if known == addr && !closed(tx) {
            return tx.clone();
        }
    }
    let tx = start();
    map.insert(node, (addr.to_string(), tx.clone()));
    tx
}

/// A Raft message for a peer's stream or connection, with where its reply goes.
pub(crate) struct StreamCall {
    pub(crate) request: RaftRequest,
    pub(crate) reply: oneshot::Sender<Result<RaftReply, String>>,
}

/// How AppendEntries and Vote messages (up to [`STREAM_MAX_PAYLOAD`]) travel to a peer node.
/// Heartbeats share batched gRPC calls and snapshots have their own gRPC connection whichever
/// is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// One plain TCP connection per peer node with length-prefixed frames ([`crate::tcp`]).
    #[default]
    Tcp,
    /// One long-lived gRPC `RaftStream` per peer node.
    GrpcStream,
    /// A gRPC call per message.
    GrpcCall,
}

/// Most heartbeats in one batched call.
const MAX_HEARTBEATS_PER_CALL: usize = 4096;

/// A node-to-node client without message size limits (snapshots and batches can be large).
pub(crate) fn internal_client(ch: Channel) -> InternalClient<Channel> {
    InternalClient::new(ch)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// A heartbeat queued for a peer node, with where its reply goes.
struct QueuedBeat {
    request: RaftRequest,
    ttl: Duration,
    reply: oneshot::Sender<Result<RaftReply, String>>,
}

/// Error text used when the target does not host the group.
pub const NOT_HOSTED: &str = "group not hosted";

/// Simple error type to carry a message into openraft's error wrappers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetErr(pub String);

/// Channels to peer nodes, shared by every group on this node.
#[derive(Default)]
pub struct PeerPool {
    channels: Mutex<HashMap<(u64, bool), (String, Channel)>>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    overrides: HashMap<u64, String>,
    /// When each peer node last answered a Raft RPC (any group).
    last_ok: Mutex<HashMap<u64, std::time::Instant>>,
    /// Per peer node: the queue of its heartbeat coalescer task.
    beats: Mutex<HashMap<u64, (String, mpsc::UnboundedSender<QueuedBeat>)>>,
    /// How Raft messages travel.
    transport: Transport,
    /// Per peer node: the queue of the task that owns its Raft stream or connection.
    streams: Mutex<HashMap<u64, (String, mpsc::Sender<StreamCall>)>>,
}

impl std::fmt::Debug for PeerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerPool").finish_non_exhaustive()
    }
}

impl PeerPool {
    /// A pool; `tls` enables TLS for node-to-node traffic.
    pub fn new(tls: Option<tonic::transport::ClientTlsConfig>) -> PeerPool {
        PeerPool {
            channels: Mutex::new(HashMap::new()),
            tls,
            overrides: HashMap::new(),
            last_ok: Mutex::new(HashMap::new()),
            beats: Mutex::new(HashMap::new()),
            transport: Transport::default(),
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// How Raft messages travel (default: [`Transport::Tcp`]).
    pub fn with_transport(mut self, transport: Transport) -> PeerPool {
        self.transport = transport;
        self
    }

    /// Sends one Raft message on the stream or connection to `node`; resolves with its reply.
    async fn stream_call(
        &self,
        node: u64,
        addr: &str,
        request: RaftRequest,
        ttl: Duration,
    ) -> Result<RaftReply, String> {
        let (reply, rx) = oneshot::channel();
        let mut unreachable = None;
        let tx = {
            let mut map = self
                .streams
                .lock()
                .map_err(|_| "raft stream map lock poisoned".to_string())?;
            // The peer's task is started only when it has none (or it ended).
            peer_queue(
                &mut map,
                node,
                addr,
                |tx| tx.is_closed(),
                || {
                    let (tx, rx) = mpsc::channel(STREAM_QUEUE_LIMIT);
                    match self.transport {
                        Transport::Tcp => {
                            let target = self.target(node, addr).to_string();
                            tokio::spawn(crate::tcp::peer_connection(rx, target));
                        }
                        Transport::GrpcStream | Transport::GrpcCall => {
                            match self.channel(node, addr, false) {
                                Ok(ch) => {
                                    tokio::spawn(peer_stream(rx, ch));
                                }
                                // `rx` is dropped: the queue is closed, and the next call retries.
                                Err(e) => unreachable = Some(e.0),
                            }
                        }
                    }
                    tx
                },
            )
        };
        if let Some(e) = unreachable {
            return Err(e);
        }
        tx.try_send(StreamCall { request, reply })
            .map_err(|e| format!("raft stream to node {node}: {e}"))?;
        match tokio::time::timeout(ttl, rx).await {
            Err(_) => Err("raft rpc timed out".to_string()),
            Ok(Err(_)) => Err("raft stream dropped the reply".to_string()),
            Ok(Ok(r)) => r,
        }
    }

    /// Sends a heartbeat to `node` together with the other heartbeats queued for it within
    /// [`HEARTBEAT_LINGER`]; resolves with its own reply.
    async fn heartbeat(
        &self,
        node: u64,
        addr: &str,
        request: RaftRequest,
        ttl: Duration,
    ) -> Result<RaftReply, String> {
        let ch = self.channel(node, addr, false).map_err(|e| e.0)?;
        let (reply, rx) = oneshot::channel();
        let beat = QueuedBeat {
            request,
            ttl,
            reply,
        };
        {
            let mut map = self
                .beats
                .lock()
                .map_err(|_| "heartbeat queue lock poisoned".to_string())?;
            let tx = peer_queue(
                &mut map,
                node,
                addr,
                |tx| tx.is_closed(),
                || {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(coalesce_heartbeats(rx, ch));
                    tx
                },
            );
            tx.send(beat)
                .map_err(|_| "heartbeat coalescer stopped".to_string())?;
        }
        rx.await
            .map_err(|_| "heartbeat coalescer dropped the reply".to_string())?
    }

    /// Notes that `node` answered a Raft RPC now.
    pub fn mark_ok(&self, node: u64) {
        if let Ok(mut m) = self.last_ok.lock() {
            m.insert(node, std::time::Instant::now());
        }
    }

    /// Whether `node` answered a Raft RPC within `window` (heartbeats reach every follower of
    /// every led group each heartbeat interval, so a live follower node always has).
    pub fn answered_within(&self, node: u64, window: Duration) -> bool {
        self.last_ok
            .lock()
            .ok()
            .and_then(|m| m.get(&node).map(|t| t.elapsed() <= window))
            .unwrap_or(false)
    }

    /// Reaches the given nodes at these addresses instead of their membership addresses (the
    /// fault-injection harness puts its proxies there).
    pub fn with_overrides(mut self, overrides: HashMap<u64, String>) -> PeerPool {
        self.overrides = overrides;
        self
    }

    /// Where `node`, known at `addr`, is reached: its override, if it has one.
    fn target<'a>(&'a self, node: u64, addr: &'a str) -> &'a str {
        self.overrides.get(&node).map_or(addr, String::as_str)
    }

    /// The shared channel to `node` at `addr` (`snapshot` selects the snapshot connection).
    pub fn channel(&self, node: u64, addr: &str, snapshot: bool) -> Result<Channel, NetErr> {
        let addr = self.target(node, addr);
        let mut map = self
            .channels
            .lock()
            .map_err(|_| NetErr("peer pool lock poisoned".into()))?;
        if let Some((known, ch)) = map.get(&(node, snapshot)) {
            if known == addr {
                return Ok(ch.clone());
            }
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| NetErr(format!("bad peer address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            ep = ep
                .tls_config(tls.clone())
                .map_err(|e| NetErr(e.to_string()))?;
        }
        let ch = ep.connect_lazy();
        map.insert((node, snapshot), (addr.to_string(), ch.clone()));
        Ok(ch)
    }
}

/// openraft network factory of one group.
#[derive(Clone, Debug)]
pub struct NetworkFactory {
    group: u64,
    pool: Arc<PeerPool>,
}

impl NetworkFactory {
    /// A factory for `group`.
    pub fn new(group: u64, pool: Arc<PeerPool>) -> Self {
        NetworkFactory { group, pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = GroupConn;

    async fn new_client(&mut self, target: ReplicaId, node: &ReplicaNode) -> GroupConn {
        GroupConn {
            group: self.group,
            target,
            node: node.clone(),
            pool: self.pool.clone(),
            sent_commit: None,
            last_ok: None,
            fresh: true,
        }
    }
}

/// A connection from one group to one target replica.
pub struct GroupConn {
    group: u64,
    target: ReplicaId,
    node: ReplicaNode,
    pool: Arc<PeerPool>,
    /// The commit index this target last acknowledged from us. An empty AppendEntries that
    /// carries a newer one is openraft telling the follower about a commit, not a periodic
    /// heartbeat: it goes out at once (openraft keeps one RPC in flight per follower, so
    /// delaying it would hold back the next entries too).
    sent_commit: Option<openraft::LogId<ReplicaId>>,
    /// The last AppendEntries this target answered with `Success`.
    last_ok: Option<LastOk>,
    /// Nothing was sent on this connection yet. openraft opens a new connection for each
    /// leadership check of a linearizable read, so its heartbeats are the first on theirs;
    /// they go out at once (a read must not wait for the coalescing window) and are never
    /// answered locally.
    fresh: bool,
}

/// A successful AppendEntries exchange: when it was sent, under which vote, and the log id the
/// target then matched.
struct LastOk {
    at: std::time::Instant,
    vote: Vote,
    matching: Option<openraft::LogId<ReplicaId>>,
}

/// A shard group's commit notice (an empty AppendEntries that only moves the commit index) is
/// not sent when the target answered `Success` to an AppendEntries of the same vote, matching
/// the same log id, less than this long ago: openraft answers it locally as `Success`, which
/// tells it nothing new (the matching log id stays the same), and the target learns the commit
/// index from the next AppendEntries or heartbeat instead (500 ms at most, not an election
/// timeout). Commit notices were a third to half of all Raft RPCs under load, and openraft
/// waits for each before it sends the next entries to that follower.
///
/// Safe because a commit index only matters to a follower for applying (reads are served by
/// leaders, and a new leader commits and applies everything before it serves anything), and
/// because nothing that decides leadership uses these answers: linearizable reads send their
/// own heartbeats on fresh connections (`last_ok` empty, so always sent), and openraft 0.9
/// uses replication answers for the leader's quorum-ack clock only in its metrics. The
/// metadata group always sends them: a node waits for its own copy of the metadata to apply
/// the commands it forwarded.
const COMMIT_NOTICE_SKIP_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);

type RpcErr = RPCError<ReplicaId, ReplicaNode, RaftError<ReplicaId>>;

impl GroupConn {
    async fn call<Req, Resp>(
        &self,
        kind: RaftKind,
        req: &Req,
        option: &RPCOption,
        coalesce: bool,
    ) -> Result<Resp, RpcErr>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let payload = encode(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&NetErr(e.to_string()))))?;
        let request = RaftRequest {
            group_id: self.group,
            kind: kind as i32,
            target: self.target,
            payload: payload.into(),
        };
        if coalesce {
            let reply = self
                .pool
                .heartbeat(self.node.node, &self.node.addr, request, option.hard_ttl())
                .await
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&NetErr(e))))?;
            return self.finish(reply);
        }
        if self.pool.transport != Transport::GrpcCall && request.payload.len() <= STREAM_MAX_PAYLOAD
        {
            let reply = self
                .pool
                .stream_call(self.node.node, &self.node.addr, request, backstop(option))
                .await
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&NetErr(e))))?;
            return self.finish(reply);
        }
        let ch = self
            .pool
            .channel(self.node.node, &self.node.addr, false)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = internal_client(ch);
        let reply = match tokio::time::timeout(backstop(option), client.raft(request)).await {
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::new(&NetErr(
                    "raft rpc timed out".into(),
                ))))
            }
            Ok(Err(status)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&NetErr(
                    status.to_string(),
                ))))
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        self.finish(reply)
    }

    /// Turns a reply into the response or error openraft expects.
    fn finish<Resp>(&self, reply: RaftReply) -> Result<Resp, RpcErr>
    where
        Resp: serde::de::DeserializeOwned,
    {
        if !reply.unavailable.is_empty() {
            return Err(RPCError::Unreachable(Unreachable::new(&NetErr(
                reply.unavailable,
            ))));
        }
        self.pool.mark_ok(self.node.node);
        let result: Result<Resp, RaftError<ReplicaId>> = decode(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&NetErr(e.to_string()))))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for GroupConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<ReplicaId>, RpcErr> {
        // Periodic heartbeats (no entries, no news about the commit index) share calls per
        // peer node. Replication does not wait, nor does an empty AppendEntries that announces
        // a commit, nor the first message on a new connection (a linearizable read's check).
        let commit = rpc.leader_commit;
        let kind = if !rpc.entries.is_empty() {
            "append"
        } else if self.fresh {
            "read"
        } else if commit != self.sent_commit {
            "commit"
        } else {
            "heartbeat"
        };
        self.fresh = false;
        let started = std::time::Instant::now();
        if kind == "commit" && self.group != crate::META_GROUP {
            let recent = self.last_ok.as_ref().is_some_and(|ok| {
                started.duration_since(ok.at) < COMMIT_NOTICE_SKIP_WINDOW
                    && ok.vote == rpc.vote
                    && ok.matching == rpc.prev_log_id
            });
            if recent {
                crate::metrics::COMMIT_NOTICES_SKIPPED.inc();
                return Ok(AppendEntriesResponse::Success);
            }
        }
        let vote = rpc.vote;
        let matching = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        let reply = self
            .call(RaftKind::AppendEntries, &rpc, &option, kind == "heartbeat")
            .await;
        crate::metrics::RPC_SECONDS
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        match &reply {
            Ok(AppendEntriesResponse::Success) => {
                self.sent_commit = commit;
                self.last_ok = Some(LastOk {
                    at: started,
                    vote,
                    matching,
                });
            }
            Ok(_) => {
                self.sent_commit = commit;
                self.last_ok = None;
            }
            Err(_) => self.last_ok = None,
        }
        reply
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<ReplicaId>,
        option: RPCOption,
    ) -> Result<VoteResponse<ReplicaId>, RpcErr> {
        let started = std::time::Instant::now();
        let reply = self.call(RaftKind::Vote, &rpc, &option, false).await;
        crate::metrics::RPC_SECONDS
            .with_label_values(&["vote"])
            .observe(started.elapsed().as_secs_f64());
        reply
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<ReplicaId>, StreamingError<TypeConfig, Fatal<ReplicaId>>> {
        let unreachable = |e: String| StreamingError::Unreachable(Unreachable::new(&NetErr(e)));
        let header =
            encode(&(vote, snapshot.meta.clone())).map_err(|e| unreachable(e.to_string()))?;
        let data = snapshot.snapshot.into_inner();
        let ch = self
            .pool
            .channel(self.node.node, &self.node.addr, true)
            .map_err(|e| unreachable(e.0))?;
        let mut client = internal_client(ch);
        let group = self.group;
        let target = self.target;
        let mut chunks: Vec<SnapshotChunk> = Vec::new();
        let mut pieces = data.chunks(SNAPSHOT_CHUNK).peekable();
        let mut first = true;
        loop {
            let piece = pieces.next();
            let last = pieces.peek().is_none();
            chunks.push(SnapshotChunk {
                group_id: group,
                target,
                header: if first {
                    header.clone().into()
                } else {
                    Default::default()
                },
                data: piece.map(|p| p.to_vec()).unwrap_or_default().into(),
                last,
            });
            first = false;
            if last {
                break;
            }
        }
        let send = client.install_snapshot(tokio_stream_iter(chunks));
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = tokio::time::timeout(option.hard_ttl().max(Duration::from_secs(60)), send) => r,
        };
        let reply = match reply {
            Err(_) => return Err(unreachable("snapshot transfer timed out".into())),
            Ok(Err(status)) => return Err(unreachable(status.to_string())),
            Ok(Ok(r)) => r.into_inner(),
        };
        if !reply.unavailable.is_empty() {
            return Err(unreachable(reply.unavailable));
        }
        let result: Result<SnapshotResponse<ReplicaId>, String> =
            decode(&reply.payload).map_err(|e| unreachable(e.to_string()))?;
        crate::metrics::SNAPSHOTS_SENT.inc();
        tracing::info!(group, target, "sent snapshot");
        result.map_err(|e| StreamingError::Network(NetworkError::new(&NetErr(e))))
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

fn tokio_stream_iter(
    chunks: Vec<SnapshotChunk>,
) -> impl futures::Stream<Item = SnapshotChunk> + Send + 'static {
    futures::stream::iter(chunks)
}

/// Owns the Raft stream to one peer: opens it when there is something to send, sends queued
/// messages with ids, hands each reply to its sender, and keeps reading replies while it waits
/// to send (so neither side can block the other). When the stream breaks, every message
/// outstanding on it fails with the reason and the next message opens a new stream. Ends when
/// its queue is dropped and nothing is outstanding.
async fn peer_stream(mut rx: mpsc::Receiver<StreamCall>, ch: Channel) {
    use std::collections::VecDeque;
    let mut queue: VecDeque<StreamCall> = VecDeque::new();
    let mut next_id: u64 = 0;
    let mut senders_gone = false;
    loop {
        if queue.is_empty() {
            if senders_gone {
                return;
            }
            match rx.recv().await {
                Some(c) => queue.push_back(c),
                None => return,
            }
        }
        let (requests, outgoing) = mpsc::channel::<RaftStreamRequest>(64);
        let mut client = internal_client(ch.clone());
        let opened = client
            .raft_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await;
        let mut replies = match opened {
            Ok(r) => r.into_inner(),
            Err(status) => {
                // Nothing of the queue was sent.
                for c in queue.drain(..) {
                    let _ = c.reply.send(Err(status.to_string()));
                }
                continue;
            }
        };
        let mut outstanding: HashMap<u64, oneshot::Sender<Result<RaftReply, String>>> =
            HashMap::new();
        let broken = loop {
            if senders_gone && queue.is_empty() && outstanding.is_empty() {
                return;
            }
            tokio::select! {
                biased;
                reply = replies.message() => match reply {
                    Ok(Some(m)) => {
                        if let Some(tx) = outstanding.remove(&m.id) {
                            let _ = tx.send(m.reply.ok_or_else(|| "empty raft stream reply".to_string()));
                        }
                    }
                    Ok(None) => break "peer ended the raft stream".to_string(),
                    Err(status) => break status.to_string(),
                },
                permit = requests.reserve(), if !queue.is_empty() => {
                    let Ok(permit) = permit else {
                        break "raft stream closed".to_string();
                    };
                    if let Some(c) = queue.pop_front() {
                        // A sender that gave up (timed out) needs no message.
                        if !c.reply.is_closed() {
                            let id = next_id;
                            next_id = next_id.wrapping_add(1);
                            outstanding.insert(id, c.reply);
                            permit.send(RaftStreamRequest { id, request: Some(c.request) });
                        }
                    }
                }
                c = rx.recv(), if !senders_gone => match c {
                    Some(c) => queue.push_back(c),
                    None => senders_gone = true,
                },
            }
        };
        tracing::debug!(error = %broken, "raft stream to a peer broke");
        for (_, tx) in outstanding.drain() {
            let _ = tx.send(Err(broken.clone()));
        }
    }
}

/// One peer's heartbeat coalescer: takes the first queued heartbeat, waits
/// [`HEARTBEAT_LINGER`] for more, sends them all in one `RaftBatch` call (without waiting for
/// the reply before gathering the next batch) and hands each reply back. Ends when the pool
/// drops its queue.
async fn coalesce_heartbeats(mut rx: mpsc::UnboundedReceiver<QueuedBeat>, ch: Channel) {
    while let Some(first) = rx.recv().await {
        tokio::time::sleep(HEARTBEAT_LINGER).await;
        let mut beats = vec![first];
        while beats.len() < MAX_HEARTBEATS_PER_CALL {
            match rx.try_recv() {
                Ok(b) => beats.push(b),
                Err(_) => break,
            }
        }
        let ttl = beats
            .iter()
            .map(|b| b.ttl)
            .min()
            .unwrap_or(Duration::from_secs(1));
        let mut client = internal_client(ch.clone());
        tokio::spawn(async move {
            let mut replies = Vec::with_capacity(beats.len());
            let requests = beats
                .into_iter()
                .map(|b| {
                    replies.push(b.reply);
                    b.request
                })
                .collect();
            let outcome =
                tokio::time::timeout(ttl, client.raft_batch(RaftBatchRequest { requests })).await;
            match outcome {
                Ok(Ok(r)) => {
                    let mut got = r.into_inner().replies.into_iter();
                    for reply in replies {
                        let _ = reply.send(
                            got.next()
                                .ok_or_else(|| "short heartbeat batch reply".to_string()),
                        );
                    }
                }
                Ok(Err(status)) => {
                    for reply in replies {
                        let _ = reply.send(Err(status.to_string()));
                    }
                }
                Err(_) => {
                    for reply in replies {
                        let _ = reply.send(Err("raft heartbeat batch timed out".to_string()));
                    }
                }
            }
        });
    }
}
