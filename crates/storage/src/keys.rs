//! Key codecs. Every key starts with the 8-byte big-endian group id so that a group's keys are
//! contiguous, and numbers are big-endian so that byte order equals numeric order.

use runnel_types::Position;

use crate::error::{Error, Result};
use crate::StateKey;

pub(crate) fn group_prefix(group: u64) -> [u8; 8] {
    group.to_be_bytes()
}

/// The smallest key greater than every key of `group`.
pub(crate) fn group_upper(group: u64) -> Vec<u8> {
    match group.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 9],
    }
}

pub(crate) fn log_key(group: u64, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

pub(crate) fn decode_log_key(k: &[u8], group: u64) -> Result<u64> {
    if k.len() != 16 || k[..8] != group.to_be_bytes() {
        return Err(Error::Corrupt(format!("bad log key {k:?}")));
    }
    Ok(u64::from_be_bytes(arr8(&k[8..16])))
}

pub(crate) fn state_key(group: u64, key: StateKey) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8] = key as u8;
    k
}

/// Key of a shard's entry block: group ‖ log index (the same layout as a log key, in another
/// column family).
pub(crate) fn entry_key(group: u64, log_index: u64) -> [u8; 16] {
    log_key(group, log_index)
}

pub(crate) fn decode_entry_key(k: &[u8], group: u64) -> Result<u64> {
    decode_log_key(k, group)
}

/// Key of one record in a store from before entry blocks: group ‖ log index ‖ offset.
pub(crate) fn decode_v1_record_key(k: &[u8]) -> Result<(u64, Position)> {
    if k.len() != 20 {
        return Err(Error::Corrupt(format!("bad record key {k:?}")));
    }
    Ok((
        u64::from_be_bytes(arr8(&k[..8])),
        Position {
            log_index: u64::from_be_bytes(arr8(&k[8..16])),
            sub: u32::from_be_bytes([k[16], k[17], k[18], k[19]]),
        },
    ))
}

/// Test counterpart of [`decode_v1_record_key`].
#[cfg(test)]
pub(crate) fn v1_record_key(group: u64, pos: Position) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..16].copy_from_slice(&pos.log_index.to_be_bytes());
    k[16..].copy_from_slice(&pos.sub.to_be_bytes());
    k
}

pub(crate) fn time_key(group: u64, arrival_ms: u64, log_index: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..16].copy_from_slice(&arrival_ms.to_be_bytes());
    k[16..].copy_from_slice(&log_index.to_be_bytes());
    k
}

pub(crate) fn decode_time_key(k: &[u8], group: u64) -> Result<(u64, u64)> {
    if k.len() != 24 || k[..8] != group.to_be_bytes() {
        return Err(Error::Corrupt(format!("bad time key {k:?}")));
    }
    Ok((
        u64::from_be_bytes(arr8(&k[8..16])),
        u64::from_be_bytes(arr8(&k[16..24])),
    ))
}

pub(crate) fn encode_position(p: Position) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&p.log_index.to_be_bytes());
    v[8..].copy_from_slice(&p.sub.to_be_bytes());
    v
}

pub(crate) fn decode_position(v: &[u8]) -> Result<Position> {
    if v.len() != 12 {
        return Err(Error::Corrupt("bad position".into()));
    }
    Ok(Position {
        log_index: u64::from_be_bytes(arr8(&v[..8])),
        sub: u32::from_be_bytes([v[8], v[9], v[10], v[11]]),
    })
}

fn arr8(s: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&s[..8]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn entry_keys_sort_like_log_indexes(g in 0u64..4, a in any::<u64>(), b in any::<u64>()) {
            prop_assert_eq!(entry_key(g, a).cmp(&entry_key(g, b)), a.cmp(&b));
            prop_assert_eq!(decode_entry_key(&entry_key(g, a), g).unwrap(), a);
            prop_assert!(decode_entry_key(&entry_key(g, a), g + 1).is_err());
        }

        #[test]
        fn v1_record_keys_round_trip(g in any::<u64>(), a in any::<(u64, u32)>()) {
            let p = Position { log_index: a.0, sub: a.1 };
            prop_assert_eq!(decode_v1_record_key(&v1_record_key(g, p)).unwrap(), (g, p));
        }

        #[test]
        fn groups_do_not_interleave(g in 0u64..u64::MAX - 1, i in any::<u64>(), j in any::<u64>()) {
            prop_assert!(log_key(g, i).as_slice() < group_upper(g).as_slice());
            prop_assert!(log_key(g, i) < log_key(g + 1, j));
            prop_assert_eq!(decode_log_key(&log_key(g, i), g).unwrap(), i);
        }
    }
}
