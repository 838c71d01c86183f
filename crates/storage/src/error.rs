//! The storage error type.

/// Errors of the storage layer. Any of them means the operation did not take effect.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(String),
    /// A filesystem error outside RocksDB.
    #[error("io: {0}")]
    Io(String),
    /// Stored bytes could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The caller passed something the store cannot hold.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The writer thread is gone (the store is shutting down).
    #[error("store closed")]
    Closed,
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Rocks(e.into_string())
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
