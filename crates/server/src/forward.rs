//! Forwarding of appends from a node that does not lead a shard to the node that does.
//!
//! Most clients reach a node that does not lead the shard they write (2 in 3 with three nodes), so
//! every such append crossed the node-to-node link as its own `Propose` call: one more gRPC call
//! per request, which cost about as much CPU as the client's own call. A forwarder, one per
//! (shard group, leader node), gathers the appends that arrive while its earlier calls are in
//! flight and sends them as one `Propose` whose records are the requests' records in arrival
//! order; the leader's batcher then treats them as one request.
//!
//! Invariants:
//! * records keep their arrival order, and each request's records stay contiguous, so a request
//!   learns where its own first record went (the call's first position plus the request's offset);
//! * every request of a call gets the call's outcome: stored, refused before anything happened
//!   (`NotLeader`, after which each request retries on its own through the router), or failed
//!   (the same error for all, including "outcome unknown");
//! * a call never exceeds the limits of one Raft entry, so the leader never splits it;
//! * a forwarder with nothing to do for [`IDLE_EXIT`] ends; the next append starts a new one.
//!
//! The leader's write limits see a call as one request: either all of its records are admitted
//! or all are refused with `ProvisionedThroughputExceeded`.

use std::sync::Arc;
use std::time::Duration;

use runnel_proto::internal::v1::internal_client::InternalClient;
use runnel_proto::internal::v1::ProposeRequest;
use runnel_raft::codec;
use runnel_types::Error;
use tokio::sync::{mpsc, Semaphore};
use tonic::transport::Channel;

use crate::node::{gather, Appended, Attempt, Pending, Proposal, ProposalReply, NOT_LEADER};

/// A forwarder with no appends for this long ends.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(30);

/// How long a forwarded call may take before its outcome counts as unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `Propose` calls one forwarder keeps in flight; appends arriving meanwhile join the next call.
const MAX_INFLIGHT_CALLS: usize = 2;

/// Sends one `Propose` to `node` and classifies the outcome: `NotLeader` only when the proposal
/// certainly had no effect.
pub(crate) async fn propose_call(
    mut client: InternalClient<Channel>,
    node: u64,
    group: u64,
    command: Vec<u8>,
) -> Attempt<ProposalReply> {
    let req = ProposeRequest {
        group_id: group,
        command: command.into(),
    };
    match tokio::time::timeout(CALL_TIMEOUT, client.propose(req)).await {
        Err(_) => Attempt::Fail(Error::Unavailable(format!(
            "timed out waiting for node {node}; the outcome is unknown"
        ))),
        Ok(Err(status)) if crate::node::connect_failed(&status) => {
            // Could not connect: nothing was sent.
            Attempt::NotLeader(None)
        }
        Ok(Err(status)) => Attempt::Fail(Error::Unavailable(format!(
            "node {node}: {}; the outcome is unknown",
            status.message()
        ))),
        Ok(Ok(r)) => {
            let r = r.into_inner();
            if r.error_code == NOT_LEADER {
                return Attempt::NotLeader((r.leader_hint != 0).then_some(r.leader_hint));
            }
            if !r.error_code.is_empty() {
                return Attempt::Fail(Error::from_kinesis_name(&r.error_code, r.error_message));
            }
            match codec::decode::<ProposalReply>(&r.response) {
                Ok(p) => Attempt::Done(p),
                Err(e) => Attempt::Fail(Error::Internal(e.to_string())),
            }
        }
    }
}

/// The forwarder of `group`'s appends to `node`: gathers what is queued once a call slot is
/// free, sends it as one call and hands each request its part of the outcome.
pub(crate) async fn forward_loop(
    node: u64,
    group: u64,
    client: InternalClient<Channel>,
    mut rx: mpsc::Receiver<Pending>,
) {
    let slots = Arc::new(Semaphore::new(MAX_INFLIGHT_CALLS));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(f) => f,
            None => match tokio::time::timeout(IDLE_EXIT, rx.recv()).await {
                Ok(Some(f)) => f,
                Ok(None) | Err(_) => return,
            },
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (records, replies) = gather(first, &mut rx, &mut carry);
        let command = match codec::encode(&Proposal::Records(records)) {
            Ok(c) => c,
            Err(e) => {
                for (_, reply) in replies {
                    let _ = reply.send(Attempt::Fail(Error::Internal(e.to_string())));
                }
                continue;
            }
        };
        let client = client.clone();
        tokio::spawn(async move {
            let outcome = propose_call(client, node, group, command).await;
            drop(permit);
            for (offset, reply) in replies {
                let part = match &outcome {
                    Attempt::Done(ProposalReply::Records(a)) => Attempt::Done(Appended {
                        first_sub: a.first_sub + offset,
                        ..*a
                    }),
                    Attempt::Done(ProposalReply::Meta(..)) => {
                        Attempt::Fail(Error::Internal("unexpected reply to an append".into()))
                    }
                    Attempt::NotLeader(h) => Attempt::NotLeader(*h),
                    Attempt::Fail(e) => Attempt::Fail(e.clone()),
                };
                let _ = reply.send(part);
            }
        });
    }
}
