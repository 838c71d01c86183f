//! Binary encoding of Raft entries, votes and messages (postcard over serde). Every decode returns
//! an error instead of panicking on bad bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Serializes a value into a buffer of exactly its encoded size. Sizing first is a walk over
/// the value's lengths; growing the buffer while encoding copied an entry's records several
/// times over.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let err = |e: postcard::Error| Error::Codec(e.to_string());
    let size =
        postcard::serialize_with_flavor(v, postcard::ser_flavors::Size::default()).map_err(err)?;
    postcard::to_extend(v, Vec::with_capacity(size)).map_err(err)
}

/// Deserializes a value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Codec(e.to_string()))
}

/// Serde of a `Bytes` field as a byte string: the same encoding as `serde_bytes` on a
/// `Vec<u8>`, so stored entries keep their format.
pub mod bytes_serde {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as a byte string.
    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    /// Deserializes a byte string (taking ownership of the decoded buffer, no second copy).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|b| Bytes::from(b.into_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, Entry, LogId, WireRecord};
    use openraft::{CommittedLeaderId, EntryPayload};

    #[test]
    fn entries_round_trip() {
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 7), 42),
            payload: EntryPayload::Normal(Command::Records {
                arrival_ms: 1_700_000_000_000,
                records: std::sync::Arc::new(vec![WireRecord {
                    partition_key: "k".into(),
                    data: bytes::Bytes::from_static(&[1, 2, 3]),
                    encryption: bytes::Bytes::new(),
                }]),
            }),
        };
        let bytes = encode(&e).unwrap();
        // Sized exactly, and the same bytes as postcard's own growing encoder.
        assert_eq!(bytes.capacity(), bytes.len());
        assert_eq!(bytes, postcard::to_stdvec(&e).unwrap());
        let back: Entry = decode(&bytes).unwrap();
        assert_eq!(back.log_id, e.log_id);
        assert_eq!(format!("{:?}", back.payload), format!("{:?}", e.payload));
        assert!(decode::<Entry>(&[0xff, 0xff, 0xff]).is_err());
    }

    /// The records of a `Command` are shared (`Arc`) in memory but must encode exactly as the
    /// `Vec` they were before, or logs and snapshots written earlier would not read back.
    #[test]
    fn shared_records_encode_as_a_plain_vec() {
        #[derive(Serialize)]
        enum VecCommand {
            Records {
                arrival_ms: u64,
                records: Vec<WireRecord>,
            },
        }
        let records: Vec<WireRecord> = (0..3u8)
            .map(|i| WireRecord {
                partition_key: format!("key-{i}"),
                data: bytes::Bytes::from(vec![i; 40 + usize::from(i)]),
                encryption: if i == 1 {
                    bytes::Bytes::from_static(b"hdr")
                } else {
                    bytes::Bytes::new()
                },
            })
            .collect();
        let shared = Command::Records {
            arrival_ms: 1_700_000_000_123,
            records: std::sync::Arc::new(records.clone()),
        };
        let plain = VecCommand::Records {
            arrival_ms: 1_700_000_000_123,
            records,
        };
        let bytes = encode(&shared).unwrap();
        assert_eq!(bytes, encode(&plain).unwrap());
        assert_eq!(decode::<Command>(&bytes).unwrap(), shared);
    }
}
