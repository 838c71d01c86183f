//! Raft messages between nodes on plain TCP connections, without HTTP/2.
//!
//! A connection starts with [`MAGIC`] from the connecting node; the receiving node's gRPC port
//! tells it apart from HTTP/2 by those first bytes ([`is_raft_connection`]; an HTTP/2 client
//! opens with `PRI * HTTP/2.0`) and hands it to [`serve_accepted`]. After the magic, each
//! direction is a sequence of frames: a 4-byte big-endian length, then a protobuf message, a
//! `RaftStreamRequest` towards the receiver and a `RaftStreamReply` back, matched by id as on
//! the gRPC `RaftStream`.
//!
//! Why: on the gRPC stream a message crossed two more tasks on each side (the HTTP/2 connection
//! tasks) and h2's framing; here the sender writes frames straight to the socket and the
//! receiver reads them straight from it, and a writer puts every frame that is ready into one
//! socket write.
//!
//! Invariants (the same as the gRPC stream's):
//! * every message handed to a connection is answered exactly once: with the peer's reply, or
//!   with an error when the connection breaks (openraft then retries; Raft messages are
//!   idempotent); a caller that gave up is not sent;
//! * reading and writing run in separate tasks on both sides, so two nodes that both have
//!   much to send cannot block each other's writes;
//! * a frame larger than [`MAX_FRAME`] or one that does not decode breaks the connection; it
//!   never reaches a group;
//! * a connection that has had messages outstanding and no reply for [`SILENCE_LIMIT`] is
//!   broken by the sender (the gRPC stream had HTTP/2 pings for this), and both ends use TCP
//!   keepalive, so a peer that vanished without closing does not hold a connection forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use prost::Message;
use runnel_proto::internal::v1::{RaftReply, RaftStreamReply, RaftStreamRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Encoder, FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::network::StreamCall;
use crate::Registry;

/// First bytes of a Raft connection.
pub const MAGIC: &[u8; 8] = b"RNLRAFT1";

/// Largest frame either side accepts. Messages above
/// [`STREAM_MAX_PAYLOAD`](crate::network::STREAM_MAX_PAYLOAD) go as gRPC calls, so this only
/// bounds what a broken or hostile peer can make us buffer.
pub const MAX_FRAME: usize = 64 << 20;

/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection with messages outstanding and nothing read for this long is given up. openraft
/// stops waiting for a reply after a heartbeat interval (500 ms by default), so this only
/// bounds how long a dead connection keeps its bookkeeping.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(10);

/// Most frames put into one socket write.
const MAX_FRAMES_PER_WRITE: usize = 512;

/// Replies a receiving connection holds ready before its handlers wait for the writer.
const REPLY_QUEUE: usize = 1024;

/// Reads frames: a 4-byte big-endian length, then that many bytes.
fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Writes a protobuf message as one frame of [`codec`]'s format straight into the
/// connection's write buffer. Encoding to a vector first and handing that to the
/// length-delimited codec copied every message (with the entries it carries) twice more.
struct FrameEncoder;

impl<M: Message> Encoder<M> for FrameEncoder {
    type Error = std::io::Error;

    fn encode(&mut self, msg: M, dst: &mut bytes::BytesMut) -> std::io::Result<()> {
        use bytes::BufMut;
        let len = msg.encoded_len();
        if len > MAX_FRAME {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("raft frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
            ));
        }
        dst.reserve(4 + len);
        dst.put_u32(len as u32);
        msg.encode(dst).map_err(std::io::Error::other)
    }
}

/// What the two tasks of a sending connection share.
struct Outstanding {
    /// Messages written and not answered yet, by id.
    waiting: HashMap<u64, oneshot::Sender<Result<RaftReply, String>>>,
    /// When the reader last read a reply, or messages became outstanding after none were.
    last_read: Instant,
}

type Waiting = Arc<Mutex<Outstanding>>;

/// Fails every message still waiting for a reply.
fn fail_all(waiting: &Waiting, why: &str) {
    let drained: Vec<_> = match waiting.lock() {
        Ok(mut m) => m.waiting.drain().collect(),
        Err(poisoned) => poisoned.into_inner().waiting.drain().collect(),
    };
    for (_, tx) in drained {
        let _ = tx.send(Err(why.to_string()));
    }
}

/// Whether messages are outstanding and nothing was read for [`SILENCE_LIMIT`].
fn silent(waiting: &Waiting) -> bool {
    waiting
        .lock()
        .is_ok_and(|m| !m.waiting.is_empty() && m.last_read.elapsed() > SILENCE_LIMIT)
}

/// TCP keepalive on a node-to-node connection: probes after 10 s idle, every 5 s.
pub fn keepalive(stream: &TcpStream) -> std::io::Result<()> {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    socket2::SockRef::from(stream).set_tcp_keepalive(&ka)
}

/// One peer's sending task: connects when there is something to send, writes the queued
/// messages, and hands each reply back. A broken connection fails what it had outstanding and
/// the next message opens a new one. Ends when the pool drops its queue.
pub(crate) async fn peer_connection(mut rx: mpsc::Receiver<StreamCall>, addr: String) {
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        if first.reply.is_closed() {
            continue;
        }
        let (read, write) = match connect(&addr).await {
            Ok(halves) => halves,
            Err(e) => {
                let why = format!("raft connection to {addr}: {e}");
                let _ = first.reply.send(Err(why.clone()));
                // What queued up meanwhile would fail the same way.
                while let Ok(c) = rx.try_recv() {
                    let _ = c.reply.send(Err(why.clone()));
                }
                continue;
            }
        };
        let waiting: Waiting = Arc::new(Mutex::new(Outstanding {
            waiting: HashMap::new(),
            last_read: Instant::now(),
        }));
        let mut check = tokio::time::interval(Duration::from_secs(1));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reader = tokio::spawn(read_replies(
            FramedRead::new(read, codec()),
            waiting.clone(),
        ));
        let mut frames = FramedWrite::new(write, FrameEncoder);
        let mut next_id: u64 = 0;
        let mut batch = vec![first];
        let broken = loop {
            while batch.len() < MAX_FRAMES_PER_WRITE {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let written = async {
                for c in batch.drain(..) {
                    // A sender that gave up (timed out) needs no message.
                    if c.reply.is_closed() {
                        continue;
                    }
                    let id = next_id;
                    next_id = next_id.wrapping_add(1);
                    let frame = RaftStreamRequest {
                        id,
                        request: Some(c.request),
                    };
                    if let Ok(mut m) = waiting.lock() {
                        if m.waiting.is_empty() {
                            m.last_read = Instant::now();
                        }
                        m.waiting.insert(id, c.reply);
                    }
                    frames.feed(frame).await?;
                }
                SinkExt::<RaftStreamRequest>::flush(&mut frames).await
            };
            tokio::select! {
                r = tokio::time::timeout(SILENCE_LIMIT, written) => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break format!("write: {e}"),
                    Err(_) => break format!("a write stalled for {SILENCE_LIMIT:?}"),
                },
                r = &mut reader => break match r {
                    Ok(why) => why,
                    Err(e) => format!("reader task: {e}"),
                },
            }
            tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => batch.push(c),
                    // The pool is gone: nothing more to send. Dropping the connection fails
                    // what is outstanding.
                    None => {
                        reader.abort();
                        fail_all(&waiting, "raft connection closed");
                        return;
                    }
                },
                r = &mut reader => break match r {
                    Ok(why) => why,
                    Err(e) => format!("reader task: {e}"),
                },
                _ = check.tick() => if silent(&waiting) {
                    break format!("no reply from the peer for {SILENCE_LIMIT:?}");
                },
            }
        };
        reader.abort();
        tracing::debug!(peer = %addr, error = %broken, "raft connection to a peer broke");
        // Messages taken from the queue but not written were dropped with the batch: their
        // callers see the reply dropped, as with those failed here.
        fail_all(&waiting, &broken);
    }
}

async fn connect(addr: &str) -> std::io::Result<(OwnedReadHalf, OwnedWriteHalf)> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    keepalive(&stream)?;
    let (read, mut write) = stream.into_split();
    write.write_all(MAGIC).await?;
    Ok((read, write))
}

/// Reads replies until the connection ends; returns why it ended.
async fn read_replies(
    mut frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    waiting: Waiting,
) -> String {
    loop {
        let frame = match frames.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return format!("read: {e}"),
            None => return "peer closed the raft connection".to_string(),
        };
        let reply = match RaftStreamReply::decode(frame) {
            Ok(r) => r,
            Err(e) => return format!("bad raft reply frame: {e}"),
        };
        let tx = match waiting.lock() {
            Ok(mut m) => {
                m.last_read = Instant::now();
                m.waiting.remove(&reply.id)
            }
            Err(_) => return "raft connection state poisoned".to_string(),
        };
        if let Some(tx) = tx {
            let _ = tx.send(
                reply
                    .reply
                    .ok_or_else(|| "empty raft reply frame".to_string()),
            );
        }
    }
}

/// How long an accepted connection may take to send the bytes that tell a Raft connection from
/// HTTP/2 before it is taken for HTTP/2.
const CLASSIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a prefix of [`MAGIC`] may wait for the rest.
const PREFIX_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether an accepted connection's first bytes are [`MAGIC`] (peeked, not consumed: any other
/// connection reaches the gRPC server with every byte). A client that sends other bytes,
/// closes, stays silent for [`CLASSIFY_TIMEOUT`], or sends a prefix of the magic and nothing
/// more for [`PREFIX_TIMEOUT`], is not a Raft connection.
pub async fn is_raft_connection(stream: &TcpStream) -> bool {
    let check = async {
        let mut buf = [0u8; 8];
        let started = Instant::now();
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if buf[..n] != MAGIC[..n] {
                return false;
            }
            if n == MAGIC.len() {
                return true;
            }
            // A prefix so far: peek returns at once while bytes are waiting (and cannot see a
            // close behind them), so wait a little for the rest. A peer writes all eight at once.
            if started.elapsed() > PREFIX_TIMEOUT {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(CLASSIFY_TIMEOUT, check)
        .await
        .unwrap_or(false)
}

/// Serves an accepted connection that [`is_raft_connection`]: sets TCP keepalive, reads the
/// magic, then serves it with [`serve_connection`].
pub async fn serve_accepted(registry: Arc<Registry>, stream: TcpStream) {
    if let Err(e) = keepalive(&stream) {
        tracing::debug!(error = %e, "raft connection: cannot set keepalive");
    }
    let (mut read, write) = stream.into_split();
    let mut magic = [0u8; 8];
    if read.read_exact(&mut magic).await.is_ok() {
        serve_connection(registry, read, write).await;
    }
}

/// Serves one incoming Raft connection whose [`MAGIC`] was already read: each message is
/// handled in its own task (messages of different groups never wait for each other's log
/// writes), and each reply is written as soon as it is ready. Returns when the peer closed the
/// connection and every reply was written, or when the connection broke.
async fn serve_connection(registry: Arc<Registry>, read: OwnedReadHalf, write: OwnedWriteHalf) {
    let (tx, mut rx) = mpsc::channel::<RaftStreamReply>(REPLY_QUEUE);
    let writer = tokio::spawn(async move {
        let mut frames = FramedWrite::new(write, FrameEncoder);
        while let Some(first) = rx.recv().await {
            let mut reply = Some(first);
            let mut n = 0;
            while let Some(r) = reply.take() {
                if frames.feed(r).await.is_err() {
                    return;
                }
                n += 1;
                if n < MAX_FRAMES_PER_WRITE {
                    reply = rx.try_recv().ok();
                }
            }
            if SinkExt::<RaftStreamReply>::flush(&mut frames)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut frames = FramedRead::new(read, codec());
    while let Some(frame) = frames.next().await {
        let request = match frame.map_err(|e| e.to_string()).and_then(|f| {
            RaftStreamRequest::decode(f).map_err(|e| format!("bad raft request frame: {e}"))
        }) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "raft connection from a peer broke");
                break;
            }
        };
        let registry = registry.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let reply = registry
                .handle_raft(request.request.unwrap_or_default())
                .await;
            let _ = tx
                .send(RaftStreamReply {
                    id: request.id,
                    reply: Some(reply),
                })
                .await;
        });
    }
    // The writer ends once the handlers still running have sent their replies.
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_proto::internal::v1::RaftRequest;
    use tokio::net::TcpListener;

    fn call(group: u64) -> (StreamCall, oneshot::Receiver<Result<RaftReply, String>>) {
        let (reply, rx) = oneshot::channel();
        let request = RaftRequest {
            group_id: group,
            ..Default::default()
        };
        (StreamCall { request, reply }, rx)
    }

    /// A peer that answers the first `answer` requests of each connection with their group id
    /// in `unavailable`, then closes the connection without answering the next one.
    async fn peer(listener: TcpListener, answer: usize) {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut magic = [0u8; 8];
            s.read_exact(&mut magic).await.unwrap();
            assert_eq!(&magic, MAGIC);
            let (r, w) = s.into_split();
            let mut reqs = FramedRead::new(r, codec());
            let mut out = FramedWrite::new(w, codec());
            for n in 0.. {
                let Some(Ok(f)) = reqs.next().await else {
                    break;
                };
                if n == answer {
                    break;
                }
                let req = RaftStreamRequest::decode(f).unwrap();
                let reply = RaftStreamReply {
                    id: req.id,
                    reply: Some(RaftReply {
                        payload: Default::default(),
                        unavailable: req.request.unwrap().group_id.to_string(),
                    }),
                };
                out.send(bytes::Bytes::from(reply.encode_to_vec()))
                    .await
                    .unwrap();
            }
        }
    }

    #[tokio::test]
    async fn replies_match_requests_and_a_broken_connection_fails_only_what_is_outstanding() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(peer(listener, 2));
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(peer_connection(rx, addr));

        let (c1, r1) = call(11);
        let (c2, r2) = call(12);
        tx.send(c1).await.unwrap();
        tx.send(c2).await.unwrap();
        assert_eq!(r1.await.unwrap().unwrap().unavailable, "11");
        assert_eq!(r2.await.unwrap().unwrap().unavailable, "12");
        // The peer closes instead of answering the third: it fails, it is not lost.
        let (c3, r3) = call(13);
        tx.send(c3).await.unwrap();
        assert!(r3.await.unwrap().is_err());
        // The next message opens a new connection.
        let (c4, r4) = call(14);
        tx.send(c4).await.unwrap();
        assert_eq!(r4.await.unwrap().unwrap().unavailable, "14");
    }

    async fn classify(send: &[u8], close: bool) -> bool {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(send).await.unwrap();
        if close {
            client.shutdown().await.unwrap();
        }
        let raft = is_raft_connection(&server).await;
        // Nothing was consumed: the gRPC server still sees every byte.
        let mut buf = vec![0u8; send.len()];
        if !send.is_empty() {
            server.peek(&mut buf).await.unwrap();
            assert_eq!(buf, send);
        }
        raft
    }

    #[tokio::test]
    async fn raft_connections_are_told_from_http2_by_their_first_bytes() {
        assert!(classify(MAGIC, false).await);
        assert!(classify(b"RNLRAFT1 and frames", false).await);
        assert!(!classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false).await);
        // A prefix of the magic and then nothing more: not Raft.
        assert!(!classify(b"RNLR", true).await);
        assert!(!classify(b"", true).await);
    }

    #[test]
    fn frames_are_written_in_the_length_delimited_format_and_bounded() {
        let msg = RaftStreamRequest {
            id: 7,
            request: Some(RaftRequest {
                group_id: 3,
                payload: bytes::Bytes::from(vec![0xab; 3000]),
                ..Default::default()
            }),
        };
        let mut ours = bytes::BytesMut::new();
        FrameEncoder.encode(msg.clone(), &mut ours).unwrap();
        let mut theirs = bytes::BytesMut::new();
        codec()
            .encode(bytes::Bytes::from(msg.encode_to_vec()), &mut theirs)
            .unwrap();
        assert_eq!(ours, theirs);
        // What was written reads back as the same message.
        let frame = tokio_util::codec::Decoder::decode(&mut codec(), &mut ours)
            .unwrap()
            .unwrap();
        assert_eq!(RaftStreamRequest::decode(frame).unwrap(), msg);

        let huge = RaftStreamRequest {
            id: 1,
            request: Some(RaftRequest {
                payload: bytes::Bytes::from(vec![0u8; MAX_FRAME + 1]),
                ..Default::default()
            }),
        };
        let mut buf = bytes::BytesMut::new();
        assert!(FrameEncoder.encode(huge, &mut buf).is_err());
        assert!(buf.is_empty(), "nothing of a refused frame is written");
    }

    #[tokio::test]
    async fn an_unreachable_peer_fails_the_message() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(peer_connection(rx, addr));
        let (c, r) = call(1);
        tx.send(c).await.unwrap();
        let err = r.await.unwrap().unwrap_err();
        assert!(err.contains("raft connection to"), "{err}");
    }
}
