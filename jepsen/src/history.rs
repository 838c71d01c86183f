//! The history: one JSON object per line, in the order events happened.
//!
//! `{"process":3,"type":"invoke","f":"send","node":2,"shard":"shardId-000000000001",
//!   "values":[17,18],"seqs":[],"t0":1200,"t1":null,"error":null}`
//!
//! * `send`: a PutRecord/PutRecords of `values` (unique integers). Its completion repeats the
//!   values, with `seqs[i]` the sequence number acknowledged for `values[i]` (`null` for an entry
//!   that certainly failed in a partial failure, `"?"` for one whose outcome is unknown) and
//!   `shards[i]` its shard. `ok` = every non-null entry is acknowledged; `fail` = the
//!   request certainly wrote nothing; `info` = unknown (timeout, reset, unknown leader outcome).
//! * `poll`: one GetRecords of a consumer following its own iterator chain on `shard`;
//!   completion carries the records read as `reads` (`[seq, value]`), the position the call read
//!   from (`from`: the sequence number it started at or after, as decimal string, or null for
//!   the start of the shard), and whether the response said it was caught up (`caught_up`).
//! * `drain`: like `poll`, issued by the final phase after every fault healed; only drains that
//!   reached the end of their shard (`caught_up`) count as complete.
//! * `digest`: a replica's digest of its applied prefix: `node`, `shard`, `applied` (index) and
//!   `digest` (hex).
//! * `fault`: a nemesis event; `type` is `invoke` when the fault starts and `ok` when it ends,
//!   `error` names it.
//!
//! Times `t0` (invocation) and `t1` (completion) are milliseconds since the start of the run.

use serde::{Deserialize, Serialize};

/// Event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    /// The operation starts.
    Invoke,
    /// It succeeded.
    Ok,
    /// It certainly had no effect.
    Fail,
    /// Its outcome is unknown.
    Info,
}

/// Operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum F {
    /// Write values.
    Send,
    /// Read along an iterator chain.
    Poll,
    /// Final read of a shard after healing.
    Drain,
    /// Replica digest.
    Digest,
    /// Nemesis fault start/end.
    Fault,
}

/// One history event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Client (or nemesis) id; a process has at most one operation in flight.
    pub process: u64,
    /// Event type.
    #[serde(rename = "type")]
    pub ty: Option<Type>,
    /// Operation.
    pub f: Option<F>,
    /// Node the request was sent to (or the fault's target).
    #[serde(default)]
    pub node: u64,
    /// Shard id.
    #[serde(default)]
    pub shard: Option<String>,
    /// Values written (send).
    #[serde(default)]
    pub values: Vec<u64>,
    /// Acknowledged sequence numbers, one per value (send completions): `null` = that entry
    /// certainly failed, [`UNKNOWN_SEQ`] = its outcome is unknown.
    #[serde(default)]
    pub seqs: Vec<Option<String>>,
    /// Shard of each value (PutRecords spans shards); empty = all in `shard`.
    #[serde(default)]
    pub shards: Vec<Option<String>>,
    /// Records read: (sequence number, value) (poll/drain completions).
    #[serde(default)]
    pub reads: Vec<(String, u64)>,
    /// Position a poll read from (exclusive lower bound when `after` is set).
    #[serde(default)]
    pub from: Option<String>,
    /// The poll's response said the consumer is caught up (MillisBehindLatest = 0, no more data).
    #[serde(default)]
    pub caught_up: bool,
    /// Replica applied index (digest).
    #[serde(default)]
    pub applied: u64,
    /// Replica digest, hex (digest).
    #[serde(default)]
    pub digest: Option<String>,
    /// Invocation time, ms since the start.
    #[serde(default)]
    pub t0: u64,
    /// Completion time, ms since the start.
    #[serde(default)]
    pub t1: Option<u64>,
    /// Error name or fault description.
    #[serde(default)]
    pub error: Option<String>,
}

/// The sequence-number placeholder of a PutRecords entry whose outcome is unknown.
pub const UNKNOWN_SEQ: &str = "?";

impl Event {
    /// The event type (invoke when missing).
    pub fn ty(&self) -> Type {
        self.ty.unwrap_or(Type::Invoke)
    }

    /// The shard of value `i`: its own entry in `shards`, else `shard`.
    pub fn shard_of(&self, i: usize) -> String {
        self.shards
            .get(i)
            .cloned()
            .flatten()
            .or_else(|| self.shard.clone())
            .unwrap_or_default()
    }
}

/// Parses a JSON-lines history (blank lines are skipped).
pub fn parse(text: &str) -> Result<Vec<Event>, crate::Error> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| crate::Error::History {
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

/// Writes one event as a JSON line (with the trailing newline).
pub fn to_line(e: &Event) -> String {
    let mut s = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// Parses a decimal sequence number (up to 128 bits).
pub fn seq(s: &str) -> Option<u128> {
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let e = Event {
            process: 3,
            ty: Some(Type::Ok),
            f: Some(F::Send),
            node: 2,
            shard: Some("shardId-000000000001".into()),
            values: vec![17, 18],
            seqs: vec![Some("100".into()), None],
            t0: 5,
            t1: Some(9),
            ..Default::default()
        };
        let parsed = parse(&(to_line(&e) + "\n" + &to_line(&e))).unwrap();
        assert_eq!(parsed, vec![e.clone(), e]);
        let err = parse("{\"process\": 1}\nnot json\n").unwrap_err();
        assert!(err.to_string().starts_with("history line 2:"), "{err}");
    }
}
