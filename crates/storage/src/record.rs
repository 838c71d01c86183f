//! The stored form of a shard record.
//!
//! Value layout (version 1): `1u8 | enc_len u16 | enc header | arrival_ms u64 | pk_len u16 | pk |
//! data`. The encryption header is empty for plaintext records; encryption at rest fills it (key id,
//! nonce) and replaces `data` with ciphertext.

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

/// Encodes `rec` into a new buffer (tests; the store encodes with [`encode_into`]).
#[cfg(test)]
pub(crate) fn encode(rec: &RecordIn, arrival_ms: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(encoded_len(rec));
    encode_into(&mut v, rec, arrival_ms);
    v
}

/// Upper bound of the stored size of `rec`.
pub(crate) fn encoded_len(rec: &RecordIn) -> usize {
    1 + 2 + rec.encryption.len() + 8 + 2 + rec.partition_key.len() + rec.data.len()
}

/// Encodes `rec` into `v`, replacing its contents (one buffer serves a whole entry).
pub(crate) fn encode_into(v: &mut Vec<u8>, rec: &RecordIn, arrival_ms: u64) {
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
    }
}
