//! Runnel's fault-injection harness.
//!
//! * [`cluster`]: node processes behind harness-owned TCP proxies ([`proxy`]) or in network
//!   namespaces of their own ([`netns`]),
//!   and the faults they allow (kill / power cut, pause, partitions, delay, clock offsets);
//! * [`nemesis`]: scenarios and the fault schedule;
//! * [`report`]: the picture of a run (throughput and latency over time, faults shaded);
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
pub mod nemesis;
pub mod netns;
pub mod proxy;
pub mod report;
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
