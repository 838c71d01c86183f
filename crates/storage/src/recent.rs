//! The most recently applied entry blocks of every group, kept in memory so that tails (readers
//! at the end of a shard) are served without a RocksDB read.
//!
//! A block enters when apply (or a snapshot install) adds it to its write batch, so before the
//! batch is written and before the group's applied frontier moves past it; a reader that saw
//! the frontier therefore finds every block below it that the cache still holds.
//!
//! Invariant: for each group the cache is *complete from* an index `from`: every entry block of
//! the group with a log index `>= from` that this store has applied since it opened is in the
//! cache, up to the newest block added. Only reads that start at or after `from` are answered
//! here; the rest go to RocksDB. The invariant is kept by:
//! * adding blocks in increasing log index order (apply order); a block that is not above the
//!   newest one resets the group to start at it;
//! * evicting only a group's oldest block (globally first in, first out), which moves `from`
//!   just past it;
//! * forgetting a group whenever its stored records are replaced or removed
//!   ([`Recent::forget`]: snapshot install, replica removal), and dropping blocks below a new
//!   trim horizon.
//!
//! A block's bytes are the ones written to RocksDB (the same `Bytes`), so both sources decode
//! to the same records.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

/// One group's recent blocks.
struct Group {
    /// Every block of the group at or above this index is in `blocks` (see the module doc).
    from: u64,
    /// `(log index, block)`, increasing log index.
    blocks: VecDeque<(u64, Bytes)>,
}

struct Inner {
    groups: HashMap<u64, Group>,
    /// Blocks in the order they were added, for eviction: `(group, log index)`. An item whose
    /// block is gone already (forgotten group, trimmed) is skipped when it comes up.
    order: VecDeque<(u64, u64)>,
    /// Bytes held in `groups`.
    bytes: usize,
    /// Blocks held in `groups`.
    count: usize,
}

impl Inner {
    /// Drops `group` and everything held for it.
    fn remove_group(&mut self, group: u64) {
        if let Some(g) = self.groups.remove(&group) {
            self.count -= g.blocks.len();
            self.bytes -= g.blocks.iter().map(|(_, b)| b.len()).sum::<usize>();
        }
    }
}

/// The cache. `capacity` bytes at most (plus the block being added); 0 turns it off.
pub(crate) struct Recent {
    capacity: usize,
    inner: Mutex<Inner>,
}

/// What a read found in the cache: the blocks at or after the asked index, oldest first.
pub(crate) type Hit = Vec<(u64, Bytes)>;

impl Recent {
    pub(crate) fn new(capacity: usize) -> Recent {
        Recent {
            capacity,
            inner: Mutex::new(Inner {
                groups: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                count: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The data is a cache: after a panic elsewhere it is still consistent enough to drop.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the block of `group` at `log_index`.
    pub(crate) fn add(&self, group: u64, log_index: u64, block: Bytes) {
        if self.capacity == 0 {
            return;
        }
        if block.len() > self.capacity {
            // Too large to keep: the group's cache could not stay complete past it.
            self.forget(group);
            return;
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let out_of_order = inner.groups.get(&group).is_some_and(|g| {
            g.blocks.back().is_some_and(|(i, _)| *i >= log_index) || log_index < g.from
        });
        if out_of_order {
            // Not in apply order: start the group over at this block.
            inner.remove_group(group);
        }
        let g = inner.groups.entry(group).or_insert_with(|| Group {
            from: log_index,
            blocks: VecDeque::new(),
        });
        inner.bytes += block.len();
        inner.count += 1;
        g.blocks.push_back((log_index, block));
        inner.order.push_back((group, log_index));
        while inner.bytes > self.capacity {
            let Some((og, oi)) = inner.order.pop_front() else {
                break;
            };
            Self::evict_front(inner, og, oi);
        }
        // Items of forgotten groups pile up in `order` only until this bounds them.
        if inner.order.len() > 2 * inner.count + 64 {
            let Inner { groups, order, .. } = inner;
            order.retain(|(g, i)| {
                groups
                    .get(g)
                    .is_some_and(|g| g.blocks.binary_search_by_key(i, |(j, _)| *j).is_ok())
            });
        }
    }

    /// Evicts the block of `group` at `log_index` if it is still the group's oldest.
    fn evict_front(inner: &mut Inner, group: u64, log_index: u64) {
        let Some(g) = inner.groups.get_mut(&group) else {
            return;
        };
        if g.blocks.front().is_some_and(|(i, _)| *i == log_index) {
            if let Some((i, b)) = g.blocks.pop_front() {
                inner.bytes -= b.len();
                inner.count -= 1;
                g.from = i + 1;
            }
        }
        if g.blocks.is_empty() {
            inner.groups.remove(&group);
        }
    }

    /// The blocks of `group` with a log index in `from..until`, if the cache is complete from
    /// `from`; `None` sends the reader to RocksDB.
    pub(crate) fn read(&self, group: u64, from: u64, until: u64) -> Option<Hit> {
        if self.capacity == 0 {
            return None;
        }
        let inner = self.lock();
        let g = inner.groups.get(&group)?;
        if from < g.from {
            return None;
        }
        let start = g.blocks.partition_point(|(i, _)| *i < from);
        Some(
            g.blocks
                .range(start..)
                .take_while(|(i, _)| *i < until)
                .map(|(i, b)| (*i, b.clone()))
                .collect(),
        )
    }

    /// Drops everything held for `group`: its stored records are being replaced or removed.
    pub(crate) fn forget(&self, group: u64) {
        self.lock().remove_group(group);
    }

    /// Drops the blocks of `group` below `log_index` (retention trimmed them).
    pub(crate) fn trim(&self, group: u64, log_index: u64) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(g) = inner.groups.get_mut(&group) else {
            return;
        };
        while g.blocks.front().is_some_and(|(i, _)| *i < log_index) {
            if let Some((_, b)) = g.blocks.pop_front() {
                inner.bytes -= b.len();
                inner.count -= 1;
            }
        }
        g.from = g.from.max(log_index);
        if g.blocks.is_empty() {
            inner.groups.remove(&group);
        }
    }

    /// Bytes held (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    fn indexes(hit: Option<Hit>) -> Option<Vec<u64>> {
        hit.map(|h| h.into_iter().map(|(i, _)| i).collect())
    }

    #[test]
    fn reads_only_from_where_it_is_complete() {
        let r = Recent::new(1 << 20);
        r.add(1, 10, block(100));
        r.add(1, 12, block(100));
        r.add(1, 15, block(100));
        // Below the first block this store applied: unknown here.
        assert_eq!(indexes(r.read(1, 9, 100)), None);
        assert_eq!(indexes(r.read(1, 10, 100)), Some(vec![10, 12, 15]));
        // Index 11 held no records: the read starts at the next block.
        assert_eq!(indexes(r.read(1, 11, 100)), Some(vec![12, 15]));
        assert_eq!(indexes(r.read(1, 11, 15)), Some(vec![12]));
        assert_eq!(indexes(r.read(1, 16, 100)), Some(vec![]));
        assert_eq!(indexes(r.read(2, 0, 100)), None);
    }

    #[test]
    fn eviction_takes_the_oldest_block_and_moves_the_start() {
        let r = Recent::new(250);
        r.add(1, 1, block(100));
        r.add(2, 1, block(100));
        r.add(1, 2, block(100));
        // Group 1's block 1 went first: reads from it go to RocksDB, reads above it stay here.
        assert!(r.bytes() <= 250);
        assert_eq!(indexes(r.read(1, 1, 10)), None);
        assert_eq!(indexes(r.read(1, 2, 10)), Some(vec![2]));
        assert_eq!(indexes(r.read(2, 1, 10)), Some(vec![1]));
        r.add(2, 2, block(100));
        assert_eq!(indexes(r.read(2, 1, 10)), None);
        assert_eq!(indexes(r.read(2, 2, 10)), Some(vec![2]));
    }

    #[test]
    fn out_of_order_forget_trim_and_oversized_blocks_restart_the_group() {
        let r = Recent::new(1000);
        r.add(1, 5, block(10));
        r.add(1, 6, block(10));
        // A block not above the newest one: the group restarts at it.
        r.add(1, 3, block(10));
        assert_eq!(indexes(r.read(1, 3, 10)), Some(vec![3]));
        assert_eq!(indexes(r.read(1, 2, 10)), None);
        r.add(1, 4, block(10));
        r.trim(1, 4);
        assert_eq!(indexes(r.read(1, 3, 10)), None);
        assert_eq!(indexes(r.read(1, 4, 10)), Some(vec![4]));
        r.forget(1);
        assert_eq!(indexes(r.read(1, 4, 10)), None);
        assert_eq!(r.bytes(), 0);
        r.add(1, 7, block(10));
        r.add(1, 8, block(2000));
        // Block 8 could not be kept, so nothing of the group can be answered here.
        assert_eq!(indexes(r.read(1, 7, 10)), None);
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn a_zero_capacity_cache_holds_nothing() {
        let r = Recent::new(0);
        r.add(1, 1, block(1));
        assert_eq!(indexes(r.read(1, 1, 10)), None);
    }

    #[test]
    fn forgotten_groups_do_not_grow_the_eviction_queue() {
        let r = Recent::new(1 << 20);
        for i in 0..10_000u64 {
            r.add(i, 1, block(1));
            r.forget(i);
        }
        let inner = r.lock();
        assert!(
            inner.order.len() <= 2 * inner.count + 65,
            "{}",
            inner.order.len()
        );
    }
}
