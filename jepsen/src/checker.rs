//! The safety checker: one pass over a history with hash maps (no linearizability search is
//! needed for a log), reporting Jepsen's anomaly names.
//!
//! | anomaly | meaning here |
//! |---|---|
//! | `lost-write` | a value acknowledged (or seen by a poll) is missing from the final drain of its shard |
//! | `inconsistent-offsets` | one (shard, sequence number) holds two values, or an acknowledged value sits elsewhere |
//! | `unexpected` | a value was read that no client tried to write |
//! | `duplicate` | a value sits at two positions; allowed (and counted) only for retried or indeterminate writes |
//! | `nonmonotonic-poll` | a poll returned records out of order or at or before its starting position |
//! | `poll-skip` | a poll jumped over a record that the drain shows exists between its start and its last record |
//! | `nonmonotonic-send` | one process's later acknowledged send on a shard got a smaller sequence number |
//! | `stale-read` | a poll that began after a write was acknowledged, at or before its position, said it was caught up without it |
//! | `divergence` | two replicas of a shard report different digests at the same applied index |
//!
//! Invariant: only definite outcomes are held against the system. Values of `info` (timed-out)
//! writes may appear or not, and may appear twice if they were retried; values of `fail` writes
//! must never appear (one that does is reported as `unexpected`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

#[cfg(test)]
use crate::history::UNKNOWN_SEQ;
use crate::history::{seq, Event, Type, F};

/// One anomaly instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// Anomaly name.
    pub name: &'static str,
    /// Shard concerned, if any.
    pub shard: Option<String>,
    /// Value concerned, if any.
    pub value: Option<u64>,
    /// Explanation.
    pub detail: String,
}

/// A fault window and how long writes were unavailable after it began.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Fault description.
    pub fault: String,
    /// Start (ms).
    pub start: u64,
    /// End (ms), if it ended.
    pub end: Option<u64>,
    /// Time from the fault's start to the next acknowledged send (ms), if any came.
    pub first_ok_after_ms: Option<u64>,
    /// Longest time without any acknowledged send from the fault's start until the first
    /// acknowledged send after its end (ms): the unavailability it caused.
    pub longest_gap_ms: u64,
}

/// Counts of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Values some client tried to write.
    pub attempted: usize,
    /// Values acknowledged.
    pub acknowledged: usize,
    /// Values whose write certainly failed.
    pub failed: usize,
    /// Values whose outcome is unknown.
    pub indeterminate: usize,
    /// Distinct values read.
    pub read: usize,
    /// Values read at more than one position (allowed or not).
    pub duplicated: usize,
    /// `duplicated / read`.
    pub duplicate_rate: f64,
    /// Shards whose final drain reached the end.
    pub drained_shards: usize,
    /// Acknowledged values on shards whose drain did not complete (neither lost nor confirmed).
    pub unknown: usize,
    /// Longest time between two acknowledged sends (ms).
    pub longest_write_gap_ms: u64,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// True when no safety anomaly was found and every acknowledged value could be checked
    /// (a run whose final drain did not finish is not valid: its outcome is unknown).
    pub valid: bool,
    /// True when every acknowledged value could be checked (no value is `unknown`).
    pub complete: bool,
    /// Anomalies by name (at most [`MAX_EXAMPLES`] examples each) and their counts.
    pub anomalies: BTreeMap<&'static str, Vec<Anomaly>>,
    /// Number of instances per anomaly name.
    pub anomaly_counts: BTreeMap<&'static str, usize>,
    /// Counts.
    pub stats: Stats,
    /// Fault windows.
    pub windows: Vec<Window>,
}

/// Examples kept per anomaly name.
pub const MAX_EXAMPLES: usize = 20;

type Pos = (String, u128);

#[derive(Default)]
struct State {
    anomalies: BTreeMap<&'static str, Vec<Anomaly>>,
    counts: BTreeMap<&'static str, usize>,
}

impl State {
    fn add(&mut self, name: &'static str, shard: Option<&str>, value: Option<u64>, detail: String) {
        *self.counts.entry(name).or_default() += 1;
        let list = self.anomalies.entry(name).or_default();
        if list.len() < MAX_EXAMPLES {
            list.push(Anomaly {
                name,
                shard: shard.map(str::to_string),
                value,
                detail,
            });
        }
    }
}

/// A completed operation: its invocation and completion.
struct Op<'a> {
    invoke: &'a Event,
    done: &'a Event,
}

/// Checks a history.
pub fn check(history: &[Event]) -> Report {
    let mut st = State::default();
    let mut pending: HashMap<(u64, F), &Event> = HashMap::new();
    let mut ops: Vec<Op<'_>> = Vec::new();
    let mut faults: Vec<Window> = Vec::new();
    let mut open_faults: HashMap<(u64, String), usize> = HashMap::new();
    let mut digests: Vec<&Event> = Vec::new();
    for e in history {
        let Some(f) = e.f else { continue };
        match (f, e.ty()) {
            (F::Fault, Type::Invoke) => {
                let name = e.error.clone().unwrap_or_default();
                open_faults.insert((e.process, name.clone()), faults.len());
                faults.push(Window {
                    fault: name,
                    start: e.t0,
                    end: None,
                    first_ok_after_ms: None,
                    longest_gap_ms: 0,
                });
            }
            (F::Fault, _) => {
                let name = e.error.clone().unwrap_or_default();
                if let Some(i) = open_faults.remove(&(e.process, name)) {
                    faults[i].end = Some(e.t1.unwrap_or(e.t0));
                }
            }
            (F::Digest, Type::Ok) => digests.push(e),
            (F::Digest, _) => {}
            (_, Type::Invoke) => {
                pending.insert((e.process, f), e);
            }
            (_, _) => {
                let invoke = pending.remove(&(e.process, f)).unwrap_or(e);
                ops.push(Op { invoke, done: e });
            }
        }
    }

    // Writes.
    let mut attempts: HashMap<u64, usize> = HashMap::new();
    for e in history {
        if e.f == Some(F::Send) && e.ty() == Type::Invoke {
            for v in &e.values {
                *attempts.entry(*v).or_default() += 1;
            }
        }
    }
    let mut acked: HashMap<u64, (Pos, u64)> = HashMap::new();
    let mut failed: HashSet<u64> = HashSet::new();
    let mut indeterminate: HashSet<u64> = HashSet::new();
    let mut ok_times: Vec<u64> = Vec::new();
    for op in ops.iter().filter(|o| o.done.f == Some(F::Send)) {
        match op.done.ty() {
            Type::Ok => {
                ok_times.push(op.done.t1.unwrap_or(op.done.t0));
                for (i, v) in op.done.values.iter().enumerate() {
                    let shard = op.done.shard_of(i);
                    match op.done.seqs.get(i).cloned().flatten() {
                        Some(s) => match seq(&s) {
                            Some(s) => {
                                acked.insert(*v, ((shard, s), op.done.t1.unwrap_or(0)));
                            }
                            // UNKNOWN_SEQ (or anything unreadable): the outcome is unknown.
                            None => {
                                indeterminate.insert(*v);
                            }
                        },
                        None => {
                            failed.insert(*v);
                        }
                    }
                }
            }
            Type::Fail => failed.extend(op.done.values.iter().copied()),
            _ => indeterminate.extend(op.done.values.iter().copied()),
        }
    }
    // A value retried after a failure may still have been acknowledged by the retry.
    for v in acked.keys() {
        failed.remove(v);
    }

    // Reads.
    let mut at: HashMap<Pos, u64> = HashMap::new();
    let mut positions: HashMap<u64, BTreeSet<Pos>> = HashMap::new();
    let mut drained: BTreeMap<String, BTreeSet<u128>> = BTreeMap::new();
    let mut drained_values: HashSet<u64> = HashSet::new();
    let mut complete: HashSet<String> = HashSet::new();
    let mut polled_values: HashMap<u64, String> = HashMap::new();
    for op in ops
        .iter()
        .filter(|o| matches!(o.done.f, Some(F::Poll | F::Drain)) && o.done.ty() == Type::Ok)
    {
        let shard = op.done.shard.clone().unwrap_or_default();
        for (s, v) in &op.done.reads {
            let Some(s) = seq(s) else { continue };
            let pos = (shard.clone(), s);
            match at.get(&pos) {
                Some(old) if old != v => st.add(
                    "inconsistent-offsets",
                    Some(&shard),
                    Some(*v),
                    format!("sequence number {s} read as value {old} and as value {v}"),
                ),
                _ => {
                    at.insert(pos.clone(), *v);
                }
            }
            positions.entry(*v).or_default().insert(pos);
            if op.done.f == Some(F::Drain) {
                drained.entry(shard.clone()).or_default().insert(s);
                drained_values.insert(*v);
            } else {
                polled_values.insert(*v, shard.clone());
            }
        }
        if op.done.f == Some(F::Drain) && op.done.caught_up {
            complete.insert(shard);
        }
    }

    // unexpected: never attempted, or certainly failed.
    for (v, pos) in &positions {
        let shard = pos.iter().next().map(|p| p.0.as_str());
        if !attempts.contains_key(v) {
            st.add(
                "unexpected",
                shard,
                Some(*v),
                format!("value {v} was read but never written"),
            );
        } else if failed.contains(v) && !indeterminate.contains(v) {
            st.add(
                "unexpected",
                shard,
                Some(*v),
                format!("value {v} was read but its write failed definitely"),
            );
        }
    }
    // inconsistent-offsets: an acknowledged value read elsewhere than acknowledged, or its
    // acknowledged position holding another value.
    for (v, (pos, _)) in &acked {
        if let Some(other) = at.get(pos) {
            if other != v {
                st.add(
                    "inconsistent-offsets",
                    Some(&pos.0),
                    Some(*v),
                    format!(
                        "value {v} was acknowledged at {} which holds value {other}",
                        pos.1
                    ),
                );
            }
        }
        if let Some(ps) = positions.get(v) {
            if !ps.contains(pos) {
                st.add(
                    "inconsistent-offsets",
                    Some(&pos.0),
                    Some(*v),
                    format!(
                        "value {v} was acknowledged at {} but read at {:?}",
                        pos.1, ps
                    ),
                );
            }
        }
    }
    // duplicate.
    let mut duplicated = 0usize;
    for (v, ps) in &positions {
        if ps.len() > 1 {
            duplicated += 1;
            let excused = attempts.get(v).copied().unwrap_or(0) > 1 || indeterminate.contains(v);
            if !excused {
                st.add(
                    "duplicate",
                    ps.iter().next().map(|p| p.0.as_str()),
                    Some(*v),
                    format!("value {v} written once is at {} positions", ps.len()),
                );
            }
        }
    }
    // Shards whose last drain attempt found no stream or shard: everything acknowledged on them
    // is lost (the stream itself vanished), not unknown.
    let mut gone: HashMap<String, bool> = HashMap::new();
    for e in history
        .iter()
        .filter(|e| e.f == Some(F::Drain) && e.ty() != Type::Invoke)
    {
        let missing = e
            .error
            .as_deref()
            .is_some_and(|m| m.contains("ResourceNotFound"));
        gone.insert(e.shard.clone().unwrap_or_default(), missing);
    }
    // lost-write.
    let mut unknown = 0usize;
    let mut must_exist: HashMap<u64, String> =
        acked.iter().map(|(v, (p, _))| (*v, p.0.clone())).collect();
    for (v, shard) in &polled_values {
        must_exist.entry(*v).or_insert_with(|| shard.clone());
    }
    for (v, shard) in &must_exist {
        if drained_values.contains(v) {
            continue;
        }
        if complete.contains(shard) {
            st.add(
                "lost-write",
                Some(shard),
                Some(*v),
                format!("value {v} was acknowledged or read but is not in the final drain"),
            );
        } else if gone.get(shard).copied().unwrap_or(false) {
            st.add(
                "lost-write",
                Some(shard),
                Some(*v),
                format!("value {v} was acknowledged or read but its shard no longer exists"),
            );
        } else {
            unknown += 1;
        }
    }
    // nonmonotonic-poll and poll-skip.
    for op in ops
        .iter()
        .filter(|o| o.done.f == Some(F::Poll) && o.done.ty() == Type::Ok)
    {
        let shard = op.done.shard.clone().unwrap_or_default();
        let from = op
            .done
            .from
            .as_deref()
            .or(op.invoke.from.as_deref())
            .and_then(seq);
        let reads: Vec<u128> = op.done.reads.iter().filter_map(|(s, _)| seq(s)).collect();
        let mut prev = from;
        for s in &reads {
            if prev.is_some_and(|p| *s <= p) {
                st.add(
                    "nonmonotonic-poll",
                    Some(&shard),
                    None,
                    format!("process {} read {s} after {:?}", op.done.process, prev),
                );
            }
            prev = Some(*s);
        }
        let last = reads.iter().max().filter(|l| from.is_none_or(|f| **l > f));
        if let (Some(last), Some(d)) = (last, drained.get(&shard)) {
            let got: HashSet<u128> = reads.iter().copied().collect();
            let lower = from.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
            for s in d.range((lower, std::ops::Bound::Included(*last))) {
                if !got.contains(s) {
                    st.add(
                        "poll-skip",
                        Some(&shard),
                        at.get(&(shard.clone(), *s)).copied(),
                        format!(
                            "process {} read from {:?} to {last} without {s}",
                            op.done.process, from
                        ),
                    );
                }
            }
        }
        // stale-read: caught up, yet an earlier-acknowledged write after `from` is missing.
        if op.done.caught_up {
            let got: HashSet<u128> = reads.iter().copied().collect();
            for (v, ((s_shard, s), t_ack)) in &acked {
                if *s_shard == shard
                    && *t_ack < op.invoke.t0
                    && from.is_none_or(|f| *s > f)
                    && !got.contains(s)
                {
                    st.add(
                        "stale-read",
                        Some(&shard),
                        Some(*v),
                        format!(
                            "poll by process {} began at {} ms from {:?} and was caught up without {s}, acknowledged at {t_ack} ms",
                            op.done.process, op.invoke.t0, from
                        ),
                    );
                }
            }
        }
    }
    // nonmonotonic-send: per (process, shard), acknowledged sends in completion order.
    let mut last_send: HashMap<(u64, String), u128> = HashMap::new();
    for op in ops
        .iter()
        .filter(|o| o.done.f == Some(F::Send) && o.done.ty() == Type::Ok)
    {
        let mut per_shard: BTreeMap<String, Vec<u128>> = BTreeMap::new();
        for (i, s) in op.done.seqs.iter().enumerate() {
            if let Some(s) = s.as_deref().and_then(seq) {
                per_shard.entry(op.done.shard_of(i)).or_default().push(s);
            }
        }
        for (shard, seqs) in per_shard {
            let (Some(lo), Some(hi)) = (seqs.iter().min(), seqs.iter().max()) else {
                continue;
            };
            let key = (op.done.process, shard.clone());
            if let Some(prev) = last_send.get(&key) {
                if lo <= prev {
                    st.add(
                        "nonmonotonic-send",
                        Some(&shard),
                        None,
                        format!("process {} got {lo} after {prev}", op.done.process),
                    );
                }
            }
            last_send.insert(key, *hi);
        }
    }
    // divergence.
    let mut by_index: HashMap<(String, u64), HashMap<String, u64>> = HashMap::new();
    for d in &digests {
        let shard = d.shard.clone().unwrap_or_default();
        by_index
            .entry((shard, d.applied))
            .or_default()
            .insert(d.digest.clone().unwrap_or_default(), d.node);
    }
    for ((shard, applied), seen) in &by_index {
        if seen.len() > 1 {
            st.add(
                "divergence",
                Some(shard),
                None,
                format!("replicas at applied index {applied} report different digests: {seen:?}"),
            );
        }
    }

    // Unavailability.
    ok_times.sort_unstable();
    let longest = ok_times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    for w in &mut faults {
        w.first_ok_after_ms = ok_times
            .iter()
            .find(|t| **t >= w.start)
            .map(|t| t - w.start);
        let end = w.end.unwrap_or(u64::MAX);
        let after = ok_times.iter().copied().find(|t| *t >= end);
        let mut points = vec![w.start];
        points.extend(
            ok_times
                .iter()
                .copied()
                .filter(|t| *t > w.start && *t < end),
        );
        points.extend(after.or(w.end));
        w.longest_gap_ms = points
            .windows(2)
            .map(|p| p[1].saturating_sub(p[0]))
            .max()
            .unwrap_or(0);
    }

    let read = positions.len();
    let stats = Stats {
        attempted: attempts.len(),
        acknowledged: acked.len(),
        failed: failed.len(),
        indeterminate: indeterminate
            .iter()
            .filter(|v| !acked.contains_key(v))
            .count(),
        read,
        duplicated,
        duplicate_rate: if read == 0 {
            0.0
        } else {
            duplicated as f64 / read as f64
        },
        drained_shards: complete.len(),
        unknown,
        longest_write_gap_ms: longest,
    };
    Report {
        valid: st.counts.is_empty() && unknown == 0,
        complete: unknown == 0,
        anomalies: st.anomalies,
        anomaly_counts: st.counts,
        stats,
        windows: faults,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S0: &str = "shardId-000000000000";
    const S1: &str = "shardId-000000000001";

    fn ev(process: u64, ty: Type, f: F, shard: &str, t: u64) -> Event {
        Event {
            process,
            ty: Some(ty),
            f: Some(f),
            shard: Some(shard.to_string()),
            t0: t,
            t1: (ty != Type::Invoke).then_some(t),
            ..Default::default()
        }
    }

    /// A send of `values` acknowledged at `seqs`.
    fn send(h: &mut Vec<Event>, p: u64, shard: &str, values: &[u64], seqs: &[u128], t: u64) {
        let mut i = ev(p, Type::Invoke, F::Send, shard, t);
        i.values = values.to_vec();
        h.push(i);
        let mut o = ev(p, Type::Ok, F::Send, shard, t + 1);
        o.values = values.to_vec();
        o.seqs = seqs.iter().map(|s| Some(s.to_string())).collect();
        h.push(o);
    }

    #[allow(clippy::too_many_arguments)] // a test helper: one argument per event field
    fn read(
        h: &mut Vec<Event>,
        p: u64,
        f: F,
        shard: &str,
        from: Option<u128>,
        reads: &[(u128, u64)],
        caught_up: bool,
        t: u64,
    ) {
        let mut i = ev(p, Type::Invoke, f, shard, t);
        i.from = from.map(|x| x.to_string());
        h.push(i);
        let mut o = ev(p, Type::Ok, f, shard, t + 1);
        o.from = from.map(|x| x.to_string());
        o.reads = reads.iter().map(|(s, v)| (s.to_string(), *v)).collect();
        o.caught_up = caught_up;
        h.push(o);
    }

    /// Two shards, two producers, a consumer, a complete drain: valid.
    fn clean() -> Vec<Event> {
        let mut h = Vec::new();
        send(&mut h, 1, S0, &[1, 2], &[10, 11], 0);
        send(&mut h, 2, S1, &[3], &[10], 1);
        send(&mut h, 1, S0, &[4], &[12], 5);
        read(&mut h, 9, F::Poll, S0, None, &[(10, 1), (11, 2)], false, 6);
        read(&mut h, 9, F::Poll, S0, Some(11), &[(12, 4)], true, 8);
        read(
            &mut h,
            20,
            F::Drain,
            S0,
            None,
            &[(10, 1), (11, 2), (12, 4)],
            true,
            50,
        );
        read(&mut h, 21, F::Drain, S1, None, &[(10, 3)], true, 50);
        h
    }

    fn names(r: &Report) -> Vec<&'static str> {
        r.anomaly_counts.keys().copied().collect()
    }

    #[test]
    fn a_clean_history_is_valid() {
        let r = check(&clean());
        assert!(r.valid, "{:?}", r.anomalies);
        assert_eq!(r.stats.acknowledged, 4);
        assert_eq!(r.stats.read, 4);
        assert_eq!(r.stats.drained_shards, 2);
        assert_eq!(r.stats.duplicate_rate, 0.0);
    }

    #[test]
    fn lost_write() {
        let mut h = clean();
        send(&mut h, 1, S0, &[5], &[13], 9);
        let r = check(&h);
        assert_eq!(names(&r), vec!["lost-write"]);
        assert_eq!(r.anomalies["lost-write"][0].value, Some(5));
    }

    #[test]
    fn a_missing_value_on_an_undrained_shard_is_unknown_not_lost() {
        let mut h = clean();
        h.retain(|e| !(e.f == Some(F::Drain) && e.shard.as_deref() == Some(S1)));
        let r = check(&h);
        assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
        assert_eq!(r.stats.unknown, 1);
        // Not checked is not valid.
        assert!(!r.valid && !r.complete);
    }

    #[test]
    fn a_shard_that_vanished_lost_its_writes() {
        let mut h = clean();
        h.retain(|e| !(e.f == Some(F::Drain) && e.shard.as_deref() == Some(S1)));
        let mut inv = ev(40, Type::Invoke, F::Drain, S1, 60);
        inv.t1 = None;
        h.push(inv);
        let mut gone = ev(40, Type::Info, F::Drain, S1, 61);
        gone.error = Some("ResourceNotFoundException: Stream jepsen not found".into());
        h.push(gone);
        let r = check(&h);
        assert_eq!(names(&r), vec!["lost-write"]);
        assert!(r.anomalies["lost-write"][0]
            .detail
            .contains("no longer exists"));
    }

    #[test]
    fn inconsistent_offsets() {
        let mut h = clean();
        read(&mut h, 22, F::Poll, S1, None, &[(10, 7)], false, 60);
        let r = check(&h);
        assert!(
            names(&r).contains(&"inconsistent-offsets"),
            "{:?}",
            r.anomalies
        );
        // An acknowledgement naming another position than where the value is.
        let mut h = clean();
        if let Some(e) = h
            .iter_mut()
            .find(|e| e.ty() == Type::Ok && e.values == vec![3])
        {
            e.seqs = vec![Some("99".into())];
        }
        assert!(names(&check(&h)).contains(&"inconsistent-offsets"));
    }

    #[test]
    fn unexpected() {
        let mut h = clean();
        read(
            &mut h,
            23,
            F::Drain,
            S1,
            None,
            &[(10, 3), (11, 1000)],
            true,
            70,
        );
        assert_eq!(names(&check(&h)), vec!["unexpected"]);
        // A definitely failed write must not show up either.
        let mut h = clean();
        let mut i = ev(3, Type::Invoke, F::Send, S1, 2);
        i.values = vec![8];
        h.insert(0, i);
        let mut f = ev(3, Type::Fail, F::Send, S1, 3);
        f.values = vec![8];
        h.insert(1, f);
        read(
            &mut h,
            23,
            F::Drain,
            S1,
            None,
            &[(10, 3), (11, 8)],
            true,
            70,
        );
        assert_eq!(names(&check(&h)), vec!["unexpected"]);
    }

    #[test]
    fn duplicates_are_anomalies_unless_indeterminate_or_retried() {
        let mut h = clean();
        read(
            &mut h,
            24,
            F::Drain,
            S0,
            None,
            &[(10, 1), (11, 2), (12, 4), (13, 4)],
            true,
            80,
        );
        let r = check(&h);
        assert_eq!(names(&r), vec!["duplicate"]);
        assert!(r.stats.duplicate_rate > 0.0);
        // The same shape after a timed-out send of 6 that was retried: allowed, still counted.
        let mut h = clean();
        let mut i = ev(4, Type::Invoke, F::Send, S1, 10);
        i.values = vec![6];
        h.push(i);
        let mut info = ev(4, Type::Info, F::Send, S1, 11);
        info.values = vec![6];
        h.push(info);
        send(&mut h, 4, S1, &[6], &[12], 12);
        read(
            &mut h,
            25,
            F::Drain,
            S1,
            None,
            &[(10, 3), (11, 6), (12, 6)],
            true,
            90,
        );
        let r = check(&h);
        assert!(r.valid, "{:?}", r.anomalies);
        assert_eq!(r.stats.duplicated, 1);
    }

    #[test]
    fn nonmonotonic_poll_and_poll_skip() {
        let mut h = clean();
        read(&mut h, 26, F::Poll, S0, Some(11), &[(10, 1)], false, 20);
        assert!(names(&check(&h)).contains(&"nonmonotonic-poll"));
        let mut h = clean();
        read(
            &mut h,
            27,
            F::Poll,
            S0,
            None,
            &[(10, 1), (12, 4)],
            false,
            20,
        );
        let r = check(&h);
        assert_eq!(names(&r), vec!["poll-skip"]);
        assert_eq!(r.anomalies["poll-skip"][0].value, Some(2));
    }

    #[test]
    fn put_records_entries_carry_their_own_shards_and_outcomes() {
        let mut h = clean();
        let mut i = ev(5, Type::Invoke, F::Send, "", 20);
        i.shard = None;
        i.values = vec![30, 31, 32, 33];
        h.push(i);
        let mut o = ev(5, Type::Ok, F::Send, "", 21);
        o.shard = None;
        o.values = vec![30, 31, 32, 33];
        o.shards = vec![Some(S0.into()), Some(S1.into()), None, None];
        o.seqs = vec![
            Some("13".into()),
            Some("11".into()),
            None,
            Some(UNKNOWN_SEQ.into()),
        ];
        h.push(o);
        // 30 and 31 drained; 32 failed (absent); 33 unknown and present.
        let base = h.clone();
        read(
            &mut h,
            30,
            F::Drain,
            S0,
            None,
            &[(10, 1), (11, 2), (12, 4), (13, 30)],
            true,
            100,
        );
        read(
            &mut h,
            31,
            F::Drain,
            S1,
            None,
            &[(10, 3), (11, 31), (12, 33)],
            true,
            100,
        );
        let r = check(&h);
        assert!(r.valid, "{:?}", r.anomalies);
        assert_eq!((r.stats.failed, r.stats.indeterminate), (1, 1));
        // Without 31 in shard 1's drain it is a lost write there.
        let mut h = base;
        read(
            &mut h,
            30,
            F::Drain,
            S0,
            None,
            &[(10, 1), (11, 2), (12, 4), (13, 30)],
            true,
            100,
        );
        read(
            &mut h,
            31,
            F::Drain,
            S1,
            None,
            &[(10, 3), (12, 33)],
            true,
            100,
        );
        let r = check(&h);
        assert_eq!(names(&r), vec!["lost-write"]);
        assert_eq!(r.anomalies["lost-write"][0].shard.as_deref(), Some(S1));
    }

    #[test]
    fn nonmonotonic_send() {
        let mut h = clean();
        send(&mut h, 1, S0, &[9], &[11], 30);
        read(
            &mut h,
            28,
            F::Drain,
            S0,
            None,
            &[(10, 1), (11, 2), (12, 4)],
            true,
            100,
        );
        assert!(names(&check(&h)).contains(&"nonmonotonic-send"));
    }

    #[test]
    fn stale_read() {
        let mut h = clean();
        // Value 4 was acknowledged at t=6; a poll from 11 starting at t=20 claims to be caught up
        // without it.
        read(&mut h, 29, F::Poll, S0, Some(11), &[], true, 20);
        assert_eq!(names(&check(&h)), vec!["stale-read"]);
        // A poll that began before the acknowledgement is not stale.
        let mut h = clean();
        read(&mut h, 29, F::Poll, S0, Some(11), &[], true, 3);
        assert!(check(&h).valid);
    }

    #[test]
    fn divergence_and_windows() {
        let mut h = clean();
        for (node, digest) in [(1, "aa"), (2, "aa"), (3, "bb")] {
            let mut d = ev(100 + node, Type::Ok, F::Digest, S0, 200);
            d.node = node;
            d.applied = 42;
            d.digest = Some(digest.into());
            h.push(d);
        }
        let mut start = ev(500, Type::Invoke, F::Fault, "", 3);
        start.error = Some("kill leader of shard 0".into());
        h.push(start);
        let mut end = ev(500, Type::Ok, F::Fault, "", 7);
        end.error = Some("kill leader of shard 0".into());
        h.push(end);
        let r = check(&h);
        assert_eq!(names(&r), vec!["divergence"]);
        assert_eq!(r.windows.len(), 1);
        assert_eq!(r.windows[0].end, Some(7));
        // Acknowledged sends completed at 1, 2 and 6 ms: the first after the fault is 3 ms later.
        assert_eq!(r.windows[0].first_ok_after_ms, Some(3));
        // From the start (3) to 6, then to the end (7; no acknowledged send after it).
        assert_eq!(r.windows[0].longest_gap_ms, 3);
        assert_eq!(r.stats.longest_write_gap_ms, 4);
    }
}
