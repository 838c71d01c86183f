//! Runnel's fault-injection harness.
//!
//! * [`cluster`]: node processes on loopback and the process faults (kill, pause);
//! * [`run`]: a run: workload (producers, consumers, final drain, replica digests) under a
//!   nemesis, then the check;
//! * [`history`]: the JSON-lines history of client operations (invoke / ok / fail / info);
//! * [`checker`]: the safety analysis of a history with Jepsen's anomaly names (lost-write,
//!   inconsistent-offsets, unexpected, duplicate, nonmonotonic-poll, poll-skip,
//!   nonmonotonic-send, stale-read, divergence) and the unavailability windows.
//!
//! Invariant: a timed-out or otherwise indeterminate operation (`info`) is never counted as a
//! failure; its values may or may not have been written, and the checker treats them so.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod run;

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A history line could not be parsed.
    #[error("history line {line}: {message}")]
    History {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        message: String,
    },
}
