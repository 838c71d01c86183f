//! `runnel-placement`: pure placement functions for replica sets.
//!
//! Owns the choice of which nodes host the replicas of a shard. A consistent-hash ring (from the
//! `consistent_hash` crate, [`VNODES_PER_NODE`] virtual nodes per node) is built over the node ids
//! and walked clockwise from the key's point, collecting distinct nodes.
//!
//! Invariants of [`place_replicas`]:
//!
//! * the result has exactly `min(rf, distinct nodes)` entries, all distinct, all taken from the input;
//! * it depends only on the key and the *set* of node ids (not their order or duplicates);
//! * adding or removing one node moves only about `1/n` of the keys' first entries.
//!
//! The ring's order is not the leader choice: the metadata's `CreateStream` keeps this set (and
//! hands out replica ids in this order) but puts first the replica whose node leads the fewest
//! open shards, since the ring alone piles leaders onto one node by chance
//! (`runnel-server`'s `meta.rs`, `prefer_least_leading`).
//!
//! Ring positions are computed with a hash that is fixed here (FNV-1a mixed by a 64-bit finalizer,
//! integers fed little-endian), so the result does not depend on the platform's endianness or on
//! the standard library's `RandomState`. Callers should still persist the placement they decide
//! (e.g. in the replicated metadata) rather than recompute it on every node.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::hash::{Hash, Hasher};

use consistent_hash::{Node, RingHash, StaticHashRing};

/// Identifier of a cluster node.
pub type NodeId = u64;

/// Virtual nodes per physical node on the ring: enough for an even spread with a handful of nodes.
pub const VNODES_PER_NODE: usize = 160;

/// Default replication factor: `min(3, node_count)`.
pub fn default_replication_factor(node_count: usize) -> usize {
    node_count.min(3)
}

/// Choose `rf` distinct nodes for the replica set of `key` (e.g. `"stream-uid/shard-index"`),
/// seeded by a consistent-hash ring over `nodes` (with virtual nodes), deterministic for the same
/// inputs. Returns `min(rf, distinct nodes)` distinct node ids in ring order. Empty
/// `nodes` gives an empty vector; duplicate ids are ignored.
pub fn place_replicas(key: &str, nodes: &[NodeId], rf: usize) -> Vec<NodeId> {
    if nodes.is_empty() || rf == 0 {
        return Vec::new();
    }
    // The ring removes duplicate node keys itself and sorts nodes, so input order does not matter.
    let ring = StaticHashRing::new(
        PortableHash,
        nodes
            .iter()
            .map(|&id| Node::new(id).quantity(VNODES_PER_NODE)),
    );
    // `calc_candidates` walks the ring clockwise from the key and yields each node once.
    ring.calc_candidates(&key).take(rf).map(|n| n.key).collect()
}

/// Ring hash independent of platform and std's randomized hashers.
#[derive(Copy, Clone, Debug, Default)]
struct PortableHash;

impl RingHash for PortableHash {
    fn hash_item<T: Hash>(&self, item: &T) -> u64 {
        let mut h = Fnv1a::default();
        item.hash(&mut h);
        h.finish()
    }
}

/// FNV-1a over the fed bytes, finished with the MurmurHash3 64-bit finalizer for avalanche.
/// Integers are fed little-endian so the result is the same on every platform.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }

    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }

    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }

    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_le_bytes());
    }

    fn write_usize(&mut self, i: usize) {
        // Same bytes on 32- and 64-bit targets.
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    fn keys(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("{}/{}", 1000 + i / 7, i % 7))
            .collect()
    }

    #[test]
    fn default_rf() {
        assert_eq!(
            (0..6).map(default_replication_factor).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 3, 3]
        );
    }

    #[test]
    fn edge_cases() {
        assert!(place_replicas("k", &[], 3).is_empty());
        assert!(place_replicas("k", &[1, 2, 3], 0).is_empty());
        assert_eq!(place_replicas("k", &[9], 3), vec![9]);
        assert_eq!(place_replicas("k", &[9, 9, 9], 3), vec![9]);
        let two = place_replicas("k", &[4, 4, 5, 5], 3);
        assert_eq!(
            two.iter().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([4, 5])
        );
        assert_eq!(two.len(), 2);
    }

    #[test]
    fn hasher_is_fixed() {
        // Pins the ring hash so that a change of algorithm (which would move placements) is noticed.
        let mut h = Fnv1a::default();
        h.write(b"");
        assert_eq!(h.0, 0xcbf2_9ce4_8422_2325);
        let mut h = Fnv1a::default();
        h.write(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c); // FNV-1a 64 of "a"
                                                // Integer width does not depend on the platform.
        let (mut a, mut b) = (Fnv1a::default(), Fnv1a::default());
        a.write_usize(7);
        b.write_u64(7);
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn adding_a_node_moves_few_primaries() {
        let five = [1, 2, 3, 4, 5];
        let six = [1, 2, 3, 4, 5, 6];
        let ks = keys(1000);
        let mut moved = 0;
        for k in &ks {
            let before = place_replicas(k, &five, 3)[0];
            let after = place_replicas(k, &six, 3)[0];
            if before != after {
                // A primary only ever moves to the new node.
                assert_eq!(after, 6, "{k}");
                moved += 1;
            }
        }
        assert!(moved < 400, "moved {moved} of 1000");
        // ... and some keys must move, or the new node would stay idle.
        assert!(moved > 50, "moved {moved} of 1000");
    }

    #[test]
    fn removing_a_node_only_moves_its_keys() {
        let all = [10, 20, 30, 40, 50];
        let without = [10, 20, 40, 50];
        for k in keys(500) {
            let before = place_replicas(&k, &all, 1)[0];
            let after = place_replicas(&k, &without, 1)[0];
            if before != 30 {
                assert_eq!(before, after, "{k}");
            }
        }
    }

    #[test]
    fn primaries_spread_evenly() {
        let nodes = [101, 202, 303, 404, 505];
        let mut first: HashMap<NodeId, usize> = HashMap::new();
        let mut any: HashMap<NodeId, usize> = HashMap::new();
        for k in keys(1000) {
            let r = place_replicas(&k, &nodes, 3);
            *first.entry(r[0]).or_default() += 1;
            for n in r {
                *any.entry(n).or_default() += 1;
            }
        }
        for n in nodes {
            let share = first.get(&n).copied().unwrap_or(0);
            assert!(
                (100..=350).contains(&share),
                "node {n} leads {share} of 1000: {first:?}"
            );
            // Each node holds about 3/5 of the 1000 replica sets.
            let held = any.get(&n).copied().unwrap_or(0);
            assert!(
                (450..=750).contains(&held),
                "node {n} holds {held}: {any:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn replica_set_properties(
            key in "\\PC{0,40}",
            nodes in proptest::collection::vec(0u64..50, 0..20),
            rf in 0usize..8,
        ) {
            let distinct: BTreeSet<NodeId> = nodes.iter().copied().collect();
            let r = place_replicas(&key, &nodes, rf);
            prop_assert_eq!(r.len(), rf.min(distinct.len()));
            let set: BTreeSet<NodeId> = r.iter().copied().collect();
            prop_assert_eq!(set.len(), r.len());
            prop_assert!(set.is_subset(&distinct));
            prop_assert_eq!(place_replicas(&key, &nodes, rf), r.clone());
        }

        #[test]
        fn depends_only_on_the_node_set(
            key in "[a-z0-9/]{1,20}",
            nodes in proptest::collection::btree_set(any::<u64>(), 1..12),
            rf in 1usize..6,
            seed: u64,
        ) {
            let sorted: Vec<NodeId> = nodes.iter().copied().collect();
            let mut shuffled = sorted.clone();
            // Deterministic rotation plus duplicates.
            let len = shuffled.len();
            shuffled.rotate_left((seed as usize) % len);
            shuffled.reverse();
            shuffled.extend_from_slice(&sorted);
            prop_assert_eq!(place_replicas(&key, &sorted, rf), place_replicas(&key, &shuffled, rf));
        }

        #[test]
        fn smaller_rf_is_a_prefix(key in "[a-z0-9/]{1,20}", nodes in proptest::collection::btree_set(any::<u64>(), 1..10)) {
            let nodes: Vec<NodeId> = nodes.into_iter().collect();
            let full = place_replicas(&key, &nodes, nodes.len());
            for rf in 0..=nodes.len() {
                prop_assert_eq!(&place_replicas(&key, &nodes, rf)[..], &full[..rf]);
            }
        }
    }
}
