//! Code generated from the `.proto` files under `proto/`.
//!
//! * [`v1`]: the public `runnel.v1` API that clients and the CLI use;
//! * [`internal::v1`]: node-to-node traffic (`runnel.internal.v1`): Raft messages of all groups
//!   multiplexed over one connection per peer, forwarded proposals and reads, snapshots.
//!
//! Nothing but generated code lives here.

#![allow(clippy::all, missing_docs)]

/// The public API.
pub mod v1 {
    tonic::include_proto!("runnel.v1");
}

/// Node-to-node API.
pub mod internal {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("runnel.internal.v1");
    }
}
