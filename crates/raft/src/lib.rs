//! openraft glue for Runnel. This is the only crate that names openraft types in its public API;
//! the rest of the workspace goes through [`Registry`], [`Command`] and [`CommandResponse`].
//!
//! What it owns:
//! * the openraft type configuration ([`TypeConfig`]) shared by every group on a node: the metadata
//!   group (group id [`META_GROUP`]) and one group per shard replica;
//! * [`log_store::LogStore`]: openraft's log storage over `runnel-storage`, whose flush callback runs
//!   only after the group-commit `fsync` that covers the entries (acknowledge only what is durable);
//! * [`state_machine::StateMachine`]: applies shard record batches (records + applied index in one
//!   atomic batch, sequence positions derived from the log index, arrival time never going back) and
//!   metadata commands (through the [`MetaApplier`] the server provides);
//! * [`network`] and [`tcp`]: the node-to-node transport. Every group's AppendEntries and Votes to
//!   a peer share one TCP connection of length-prefixed frames (or, as configured, one gRPC
//!   stream or a call each); heartbeats go in batched gRPC calls, and snapshots use a separate
//!   gRPC connection so they cannot starve the rest;
//! * [`Registry`]: the groups hosted on this node, and the entry points for incoming Raft messages;
//! * [`quiesce`]: idle shard groups stop their Raft timers; one beat per peer node keeps their
//!   followers from campaigning while the leader's node is alive.
//!
//! Invariants:
//! * a replica's Raft node id is a per-replica incarnation id allocated by the metadata group and
//!   never reused; only the metadata group uses physical node ids (its membership is static);
//! * all replicas derive the same record positions `(log index, offset)` and arrival times from the
//!   log, so sequence numbers are identical on every replica and never reused after a leader change.

// openraft's trait methods return its `StorageError` (224 bytes); our helpers return the same type.
#![allow(clippy::result_large_err)]

pub mod codec;
mod error;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod quiesce;
mod registry;
pub mod state_machine;
pub mod tcp;

pub use error::{Error, Result};
pub use registry::{GroupInfo, GroupKind, GroupStatus, Registry, RegistryOptions};
pub use state_machine::MetaApplier;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// Group id of the metadata group.
pub const META_GROUP: u64 = 0;

/// Raft node id: a replica incarnation id (metadata group: the physical node id).
pub type ReplicaId = u64;

/// Where a replica lives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaNode {
    /// Physical node id.
    pub node: u64,
    /// gRPC address of that node (`host:port`).
    pub addr: String,
}

impl fmt::Display for ReplicaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}@{}", self.node, self.addr)
    }
}

/// A record inside a Raft entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    /// Partition key.
    pub partition_key: String,
    /// Data blob (shared, not copied, when an entry is cloned).
    #[serde(with = "codec::bytes_serde")]
    pub data: bytes::Bytes,
    /// Encryption header (empty: plaintext).
    #[serde(with = "codec::bytes_serde")]
    pub encryption: bytes::Bytes,
}

impl WireRecord {
    /// A stored record as it travels in an entry.
    pub fn from_record_in(r: runnel_storage::RecordIn) -> WireRecord {
        WireRecord {
            partition_key: r.partition_key,
            data: r.data,
            encryption: r.encryption,
        }
    }
}

/// Apply stores an entry's records straight from the entry (no copy into `RecordIn`s).
impl runnel_storage::RecordView for WireRecord {
    fn partition_key(&self) -> &str {
        &self.partition_key
    }
    fn data(&self) -> &[u8] {
        &self.data
    }
    fn encryption(&self) -> &[u8] {
        &self.encryption
    }
}

/// The application data of a Raft entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A batch of records for a shard group, stamped with the leader's clock when proposed.
    Records {
        /// Leader time at proposal (ms). Apply clamps it so arrival times never go back.
        arrival_ms: u64,
        /// The records, in the order they get positions `(log index, 0..)`. Shared, so cloning
        /// an entry (the log cache hands out clones to replication and apply) copies no record;
        /// encoded exactly as a `Vec`.
        records: std::sync::Arc<Vec<WireRecord>>,
    },
    /// A metadata command, opaque to this crate.
    Meta(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// What applying a [`Command`] returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResponse {
    /// Nothing to report (blank or membership entries).
    #[default]
    None,
    /// Records were stored at `(log_index, 0..count)` with this arrival time.
    Records {
        /// Log index of the entry.
        log_index: u64,
        /// Arrival time assigned to every record of the entry.
        arrival_ms: u64,
        /// Number of records.
        count: u32,
    },
    /// A metadata command's reply, opaque to this crate.
    Meta(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The command does not fit this group (a shard group got a meta command or the reverse).
    Rejected(String),
}

/// Snapshot payload. The metadata group's snapshot is its serialized state; a shard snapshot is
/// the group's records up to the snapshot's last log id (materialized when sent).
pub type SnapshotData = Cursor<Vec<u8>>;

openraft::declare_raft_types!(
    /// openraft type configuration of every Runnel group.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = ReplicaId,
        Node = ReplicaNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The openraft handle of one group.
pub type Raft = openraft::Raft<TypeConfig>;
/// Log id.
pub type LogId = openraft::LogId<ReplicaId>;
/// Vote.
pub type Vote = openraft::Vote<ReplicaId>;
/// Membership with node info.
pub type Membership = openraft::Membership<ReplicaId, ReplicaNode>;
/// Stored membership.
pub type StoredMembership = openraft::StoredMembership<ReplicaId, ReplicaNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<ReplicaId, ReplicaNode>;
/// Log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// Storage error.
pub type StorageError = openraft::StorageError<ReplicaId>;
