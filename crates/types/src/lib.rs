//! `runnel-types`: the I/O-free domain model of Runnel, a Kinesis-compatible streaming server.
//!
//! This crate owns the vocabulary every other crate speaks:
//!
//! * [`Error`]: the single error enum, with its Kinesis exception name, HTTP status and retry class;
//! * names ([`StreamName`], [`ShardId`], stream ARNs, partition keys) and their validation rules;
//! * the 128-bit hash key space ([`HashKey`], [`HashRange`]), the initial shard split and routing;
//! * record positions and the [`SequenceNumber`] codec;
//! * sealed, expiring, tamper-proof shard iterators ([`IteratorToken`]) and pagination tokens ([`PageToken`]);
//! * configurable service [`Limits`];
//! * the [`Clock`] abstraction.
//!
//! Invariants kept here (and relied upon elsewhere):
//!
//! * every value of a validated type ([`StreamName`], [`HashKey`] from [`HashKey::parse_explicit`],
//!   [`SequenceNumber`] from [`SequenceNumber::parse`]) satisfies the Kinesis constraint it models;
//! * [`initial_ranges`] partitions `[0, 2^128-1]` exactly, with no gap and no overlap;
//! * for one shard, sequence numbers order exactly like positions, both numerically and as
//!   decimal strings compared by `(length, lexicographic)`;
//! * opening a token never panics, whatever the input, and only accepts tokens sealed with the same key.
//!
//! Nothing in this crate performs I/O or reads the wall clock except [`SystemClock`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
mod error;
mod hashkey;
mod iterator;
mod limits;
mod names;
mod seqno;
mod token;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{clip as clip_for_message, Error, Result};
pub use hashkey::{initial_ranges, route, HashKey, HashRange};
pub use iterator::{IteratorKey, IteratorToken, PageToken, ITERATOR_TTL_MS, NEXT_TOKEN_TTL_MS};
pub use limits::Limits;
pub use names::{parse_stream_arn, stream_arn, validate_partition_key, ShardId, StreamName};
pub use seqno::{Position, SequenceNumber};
