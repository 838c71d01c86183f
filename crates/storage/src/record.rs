//! The stored form of shard records.
//!
//! A shard stores the records of one Raft entry together, as one value (an *entry block*) under
//! one key (group ‖ log index): one key and one memtable insert per entry instead of per record,
//! which is what a shard's write path pays for on every replica, and what compaction moves.
//!
//! Entry block layout (version 2): `2u8 | arrival_ms u64 | count u32 | count × record`, where a
//! record is `sub u32 | enc_len u16 | enc header | pk_len u16 | pk | data_len u32 | data`, in
//! increasing `sub` order. The encryption header is empty for plaintext records; encryption at
//! rest fills it (key id, nonce) and replaces `data` with ciphertext.
//!
//! Version 1 (one record per key: `1u8 | enc_len u16 | enc header | arrival_ms u64 | pk_len u16 |
//! pk | data`) is what stores written before entry blocks hold; [`decode`] reads it so the store
//! can convert them when it opens.

use bytes::Bytes;

use crate::error::{Error, Result};

/// A record as written by a producer, before a position and arrival time are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordIn {
    /// Partition key (1–256 chars, validated upstream).
    pub partition_key: String,
    /// Data blob.
    pub data: Bytes,
    /// Encryption header; empty when the data is plaintext.
    pub encryption: Bytes,
}

/// A record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// Arrival time assigned by the shard leader (milliseconds since the epoch).
    pub arrival_ms: u64,
    /// Partition key.
    pub partition_key: String,
    /// Data blob.
    pub data: Bytes,
    /// Encryption header; empty when the data is plaintext.
    pub encryption: Bytes,
}

/// A borrowed view of a record to store: the fields an entry block holds. Callers that keep
/// records in another form (a Raft entry's records) store them through it without first
/// copying each into a [`RecordIn`].
pub trait RecordView {
    /// Partition key.
    fn partition_key(&self) -> &str;
    /// Data blob.
    fn data(&self) -> &[u8];
    /// Encryption header; empty when the data is plaintext.
    fn encryption(&self) -> &[u8];
}

impl RecordView for RecordIn {
    fn partition_key(&self) -> &str {
        &self.partition_key
    }
    fn data(&self) -> &[u8] {
        &self.data
    }
    fn encryption(&self) -> &[u8] {
        &self.encryption
    }
}

impl From<StoredRecord> for RecordIn {
    /// The record as written, without its arrival time (rebuilding entries, converting stores).
    fn from(r: StoredRecord) -> RecordIn {
        RecordIn {
            partition_key: r.partition_key,
            data: r.data,
            encryption: r.encryption,
        }
    }
}

/// Encodes `rec` in the version 1 form (one record per value), as stores written before entry
/// blocks hold it (tests of the conversion).
#[cfg(test)]
pub(crate) fn encode(rec: &RecordIn, arrival_ms: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(encoded_len(rec));
    encode_into(&mut v, rec, arrival_ms);
    v
}

#[cfg(test)]
fn encoded_len(rec: &RecordIn) -> usize {
    1 + 2 + rec.encryption.len() + 8 + 2 + rec.partition_key.len() + rec.data.len()
}

#[cfg(test)]
fn encode_into(v: &mut Vec<u8>, rec: &RecordIn, arrival_ms: u64) {
    let pk = rec.partition_key.as_bytes();
    v.clear();
    v.reserve(encoded_len(rec));
    v.push(1u8);
    // Lengths were validated upstream (pk <= 256 chars = at most 1024 bytes; headers are small).
    v.extend_from_slice(&(rec.encryption.len().min(u16::MAX as usize) as u16).to_be_bytes());
    v.extend_from_slice(&rec.encryption[..rec.encryption.len().min(u16::MAX as usize)]);
    v.extend_from_slice(&arrival_ms.to_be_bytes());
    v.extend_from_slice(&(pk.len().min(u16::MAX as usize) as u16).to_be_bytes());
    v.extend_from_slice(&pk[..pk.len().min(u16::MAX as usize)]);
    v.extend_from_slice(&rec.data);
}

/// Decodes a version 1 record value.
pub(crate) fn decode(v: &[u8]) -> Result<StoredRecord> {
    let bad = || Error::Corrupt("bad record value".into());
    let mut r = Reader { v, at: 0 };
    if r.take(1).ok_or_else(bad)?[0] != 1 {
        return Err(Error::Corrupt("unknown record version".into()));
    }
    let enc_len = r.u16().ok_or_else(bad)? as usize;
    let encryption = Bytes::copy_from_slice(r.take(enc_len).ok_or_else(bad)?);
    let arrival_ms = r.u64().ok_or_else(bad)?;
    let pk_len = r.u16().ok_or_else(bad)? as usize;
    let pk = r.take(pk_len).ok_or_else(bad)?;
    let partition_key = String::from_utf8(pk.to_vec()).map_err(|_| bad())?;
    let data = Bytes::copy_from_slice(&v[r.at..]);
    Ok(StoredRecord {
        arrival_ms,
        partition_key,
        data,
        encryption,
    })
}

/// Version byte of an entry block.
const BLOCK_VERSION: u8 = 2;
/// Bytes of an entry block's header.
const BLOCK_HEADER: usize = 1 + 8 + 4;
/// Bytes of one record's fixed fields inside a block.
const BLOCK_RECORD_FIXED: usize = 4 + 2 + 2 + 4;

/// Stored size of `records` as one entry block.
pub(crate) fn block_len<'a, R: RecordView + 'a>(records: impl Iterator<Item = &'a R>) -> usize {
    BLOCK_HEADER
        + records
            .map(|r| {
                BLOCK_RECORD_FIXED + r.encryption().len() + r.partition_key().len() + r.data().len()
            })
            .sum::<usize>()
}

/// Encodes the records of one entry (`(sub, record)` in increasing `sub` order) as an entry
/// block into `v`, replacing its contents. Field lengths were validated upstream (partition
/// keys are at most 256 characters, encryption headers are small, data is at most a few MiB);
/// a length that does not fit its field is cut, never wrapped.
pub(crate) fn encode_block<R: RecordView>(v: &mut Vec<u8>, arrival_ms: u64, records: &[(u32, &R)]) {
    v.clear();
    v.reserve(block_len(records.iter().map(|(_, r)| *r)));
    v.push(BLOCK_VERSION);
    v.extend_from_slice(&arrival_ms.to_be_bytes());
    v.extend_from_slice(&(records.len().min(u32::MAX as usize) as u32).to_be_bytes());
    for (sub, rec) in records {
        let enc = rec.encryption();
        let enc = &enc[..enc.len().min(u16::MAX as usize)];
        let pk = rec.partition_key().as_bytes();
        let pk = &pk[..pk.len().min(u16::MAX as usize)];
        let data = rec.data();
        let data = &data[..data.len().min(u32::MAX as usize)];
        v.extend_from_slice(&sub.to_be_bytes());
        v.extend_from_slice(&(enc.len() as u16).to_be_bytes());
        v.extend_from_slice(enc);
        v.extend_from_slice(&(pk.len() as u16).to_be_bytes());
        v.extend_from_slice(pk);
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
    }
}

/// Decodes an entry block into its records with their `sub` offsets. Data and encryption
/// headers are slices of `block` (no copy).
pub(crate) fn decode_block(block: Bytes) -> Result<Vec<(u32, StoredRecord)>> {
    let bad = || Error::Corrupt("bad entry block".into());
    let mut r = Reader { v: &block, at: 0 };
    if r.take(1).ok_or_else(bad)?[0] != BLOCK_VERSION {
        return Err(Error::Corrupt("unknown entry block version".into()));
    }
    let arrival_ms = r.u64().ok_or_else(bad)?;
    let count = r.u32().ok_or_else(bad)? as usize;
    // Every record takes at least its fixed fields: a count beyond that is corrupt, and must
    // not size an allocation.
    if count > block.len() / BLOCK_RECORD_FIXED {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let sub = r.u32().ok_or_else(bad)?;
        let enc_len = r.u16().ok_or_else(bad)? as usize;
        let enc_at = r.at;
        r.take(enc_len).ok_or_else(bad)?;
        let pk_len = r.u16().ok_or_else(bad)? as usize;
        let pk = r.take(pk_len).ok_or_else(bad)?;
        let partition_key = String::from_utf8(pk.to_vec()).map_err(|_| bad())?;
        let data_len = r.u32().ok_or_else(bad)? as usize;
        let data_at = r.at;
        r.take(data_len).ok_or_else(bad)?;
        out.push((
            sub,
            StoredRecord {
                arrival_ms,
                partition_key,
                data: block.slice(data_at..data_at + data_len),
                encryption: block.slice(enc_at..enc_at + enc_len),
            },
        ));
    }
    if r.at != block.len() {
        return Err(bad());
    }
    Ok(out)
}

struct Reader<'a> {
    v: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.v.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        let s = self.take(2)?;
        Some(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        let s = self.take(4)?;
        Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Some(u64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(pk in "\\PC{1,256}", data in proptest::collection::vec(any::<u8>(), 0..2048),
                      enc in proptest::collection::vec(any::<u8>(), 0..64), ts in any::<u64>()) {
            let rec = RecordIn { partition_key: pk.clone(), data: Bytes::from(data.clone()), encryption: Bytes::from(enc.clone()) };
            let got = decode(&encode(&rec, ts)).unwrap();
            prop_assert_eq!(got, StoredRecord { arrival_ms: ts, partition_key: pk, data: Bytes::from(data), encryption: Bytes::from(enc) });
        }

        #[test]
        fn garbage_never_panics(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&v);
        }

        #[test]
        fn blocks_round_trip(
            recs in proptest::collection::vec(
                ("\\PC{1,64}", proptest::collection::vec(any::<u8>(), 0..512),
                 proptest::collection::vec(any::<u8>(), 0..16), 0u32..4),
                0..20),
            ts in any::<u64>(),
        ) {
            // Offsets increase with gaps, as the deliberate-bug paths can leave them.
            let mut sub = 0u32;
            let input: Vec<(u32, RecordIn)> = recs.iter().map(|(pk, data, enc, gap)| {
                sub += gap;
                let r = RecordIn { partition_key: pk.clone(), data: Bytes::from(data.clone()), encryption: Bytes::from(enc.clone()) };
                (sub, r)
            }).collect();
            let refs: Vec<(u32, &RecordIn)> = input.iter().map(|(s, r)| (*s, r)).collect();
            let mut v = vec![9u8; 3];
            encode_block(&mut v, ts, &refs);
            prop_assert_eq!(v.len(), block_len(input.iter().map(|(_, r)| r)));
            let got = decode_block(Bytes::from(v)).unwrap();
            let want: Vec<(u32, StoredRecord)> = input.into_iter().map(|(s, r)| (s, StoredRecord {
                arrival_ms: ts, partition_key: r.partition_key, data: r.data, encryption: r.encryption,
            })).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn garbage_blocks_never_panic(mut v in proptest::collection::vec(any::<u8>(), 0..256), first in any::<bool>()) {
            if first && !v.is_empty() {
                v[0] = BLOCK_VERSION;
            }
            let _ = decode_block(Bytes::from(v));
        }

        #[test]
        fn a_cut_block_is_an_error(n in 1usize..40) {
            let r = RecordIn { partition_key: "k".into(), data: Bytes::from_static(b"0123456789"), encryption: Bytes::new() };
            let mut v = Vec::new();
            encode_block(&mut v, 7, &[(0, &r), (1, &r)]);
            let cut = v.len().saturating_sub(n);
            prop_assert!(decode_block(Bytes::from(v[..cut].to_vec())).is_err());
            v.push(0);
            prop_assert!(decode_block(Bytes::from(v)).is_err());
        }
    }
}
