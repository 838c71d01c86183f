//! [`RecordStream`]: single records over one long-lived `PutRecordStream` to one node, each
//! acknowledged on its own, without a gRPC call per record.
//!
//! A background task owns the gRPC stream. Records queued while it was busy travel together in
//! one request message (at most [`MAX_RECORDS_PER_MESSAGE`] records or
//! [`MAX_BYTES_PER_MESSAGE`] bytes); the task numbers them and matches each ack to its caller by
//! that number. Back-pressure: the server reads only while a bounded number of records is
//! outstanding, and this side keeps reading acks while it waits to send, so neither end can
//! block the other.
//!
//! Invariants: every [`RecordStream::send`] resolves exactly once: with the shard and sequence
//! number the cluster assigned, with the error the cluster gave for that record, or (when the
//! connection breaks with the record outstanding) with `Unavailable` saying that its outcome is
//! unknown. Records are never resent by this module. After a broken connection the next record
//! opens a new stream. The task ends when every handle is dropped and nothing is outstanding.

use std::collections::{HashMap, VecDeque};

use runnel_proto::v1 as pb;
use runnel_types::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::producer::Acked;
use crate::{from_status, stream, Client};

/// Most records in one request message.
pub const MAX_RECORDS_PER_MESSAGE: usize = 500;
/// Most data bytes (partition keys included) in one request message.
pub const MAX_BYTES_PER_MESSAGE: usize = 4 << 20;
/// Records accepted from callers but not yet sent, before `send` waits.
const QUEUE_LIMIT: usize = 8192;

struct Outgoing {
    key: String,
    data: Vec<u8>,
    explicit_hash_key: String,
    reply: oneshot::Sender<Result<Acked, Error>>,
}

/// Single records to one stream through one node, pipelined on one gRPC stream. Cheap to clone.
#[derive(Clone)]
pub struct RecordStream {
    tx: mpsc::Sender<Outgoing>,
}

impl RecordStream {
    /// A record stream for `stream_name` through `client`'s node (connected on first use).
    pub fn new(client: Client, stream_name: &str) -> RecordStream {
        let (tx, rx) = mpsc::channel(QUEUE_LIMIT);
        tokio::spawn(run(client, stream_name.to_string(), rx));
        RecordStream { tx }
    }

    /// Writes one record; resolves with its shard and sequence number once acknowledged (a
    /// majority of the shard's replicas made it durable), or with the error for it.
    pub async fn send(&self, partition_key: String, data: Vec<u8>) -> Result<Acked, Error> {
        self.send_with_hash_key(partition_key, data, String::new())
            .await
    }

    /// As [`RecordStream::send`], with an explicit hash key choosing the shard.
    pub async fn send_with_hash_key(
        &self,
        partition_key: String,
        data: Vec<u8>,
        explicit_hash_key: String,
    ) -> Result<Acked, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Outgoing {
                key: partition_key,
                data,
                explicit_hash_key,
                reply,
            })
            .await
            .map_err(|_| Error::Internal("record stream stopped".into()))?;
        rx.await.map_err(|_| {
            Error::Unavailable("record stream stopped; the outcome is unknown".into())
        })?
    }
}

/// One connection's worth of state: outstanding records by id.
struct Conn {
    requests: mpsc::Sender<pb::PutRecordStreamRequest>,
    acks: tonic::Streaming<pb::PutRecordStreamResponse>,
    outstanding: HashMap<u64, oneshot::Sender<Result<Acked, Error>>>,
}

async fn connect(client: &Client) -> Result<Conn, Error> {
    let (requests, rx) = mpsc::channel(16);
    let acks = client
        .raw()
        .put_record_stream(ReceiverStream::new(rx))
        .await
        .map_err(|s| from_status(&s))?
        .into_inner();
    Ok(Conn {
        requests,
        acks,
        outstanding: HashMap::new(),
    })
}

async fn run(client: Client, stream_name: String, mut rx: mpsc::Receiver<Outgoing>) {
    let mut queue: VecDeque<Outgoing> = VecDeque::new();
    let mut next_id: u64 = 0;
    let mut callers_gone = false;
    loop {
        // Wait for work before (re)connecting.
        if queue.is_empty() {
            match rx.recv().await {
                Some(o) => queue.push_back(o),
                None => return,
            }
        }
        let mut conn = match connect(&client).await {
            Ok(c) => c,
            Err(e) => {
                // Nothing was sent: these records are refused, not in doubt.
                for o in queue.drain(..) {
                    let _ = o.reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        let broken: Error = loop {
            if callers_gone && queue.is_empty() && conn.outstanding.is_empty() {
                return;
            }
            tokio::select! {
                biased;
                ack = conn.acks.message() => match ack {
                    Ok(Some(m)) => {
                        for a in m.acks {
                            if let Some(reply) = conn.outstanding.remove(&a.id) {
                                let _ = reply.send(outcome(a));
                            }
                        }
                    }
                    Ok(None) => break Error::Unavailable("the node ended the record stream".into()),
                    Err(s) => break from_status(&s),
                },
                permit = conn.requests.reserve(), if !queue.is_empty() => {
                    let Ok(permit) = permit else {
                        break Error::Unavailable("record stream closed".into());
                    };
                    let mut records = Vec::new();
                    let mut bytes = 0;
                    while let Some(o) = queue.front() {
                        let b = o.key.len() + o.data.len();
                        if !records.is_empty()
                            && (records.len() >= MAX_RECORDS_PER_MESSAGE
                                || bytes + b > MAX_BYTES_PER_MESSAGE)
                        {
                            break;
                        }
                        let Some(o) = queue.pop_front() else { break };
                        bytes += b;
                        let id = next_id;
                        next_id = next_id.wrapping_add(1);
                        conn.outstanding.insert(id, o.reply);
                        records.push(pb::StreamedRecord {
                            id,
                            partition_key: o.key,
                            data: o.data.into(),
                            explicit_hash_key: o.explicit_hash_key,
                        });
                    }
                    permit.send(pb::PutRecordStreamRequest {
                        stream: stream(&stream_name),
                        records,
                    });
                }
                o = rx.recv(), if !callers_gone && queue.len() < QUEUE_LIMIT => match o {
                    Some(o) => {
                        queue.push_back(o);
                        while queue.len() < QUEUE_LIMIT {
                            match rx.try_recv() {
                                Ok(o) => queue.push_back(o),
                                Err(_) => break,
                            }
                        }
                    }
                    None => callers_gone = true,
                },
            }
        };
        let unknown = Error::Unavailable(format!(
            "record stream broke with the record outstanding; its outcome is unknown: {broken}"
        ));
        for (_, reply) in conn.outstanding.drain() {
            let _ = reply.send(Err(unknown.clone()));
        }
        if callers_gone && queue.is_empty() {
            return;
        }
    }
}

fn outcome(a: pb::StreamedAck) -> Result<Acked, Error> {
    if a.error_code.is_empty() {
        Ok((a.shard_id, a.sequence_number))
    } else {
        Err(Error::from_kinesis_name(&a.error_code, a.error_message))
    }
}
