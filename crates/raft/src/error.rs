//! Errors of the Raft layer.

/// Errors of this crate.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Encoding or decoding failed.
    #[error("codec: {0}")]
    Codec(String),
    /// The storage layer failed.
    #[error("storage: {0}")]
    Storage(#[from] runnel_storage::Error),
    /// The group is not hosted on this node.
    #[error("group {0} is not hosted on this node")]
    NoSuchGroup(u64),
    /// This replica is not the leader; the physical node of the leader if known.
    #[error("not the leader of group {group} (leader node: {leader:?})")]
    NotLeader {
        /// Group id.
        group: u64,
        /// Physical node id of the leader, if known.
        leader: Option<u64>,
    },
    /// openraft reported a fatal error or the group is shutting down.
    #[error("raft: {0}")]
    Raft(String),
    /// A peer could not be reached.
    #[error("unreachable: {0}")]
    Unreachable(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
