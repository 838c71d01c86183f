//! Binary encoding of Raft entries, votes and messages (postcard over serde). Every decode returns
//! an error instead of panicking on bad bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Serializes a value.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| Error::Codec(e.to_string()))
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
                records: vec![WireRecord {
                    partition_key: "k".into(),
                    data: bytes::Bytes::from_static(&[1, 2, 3]),
                    encryption: bytes::Bytes::new(),
                }],
            }),
        };
        let back: Entry = decode(&encode(&e).unwrap()).unwrap();
        assert_eq!(back.log_id, e.log_id);
        assert_eq!(format!("{:?}", back.payload), format!("{:?}", e.payload));
        assert!(decode::<Entry>(&[0xff, 0xff, 0xff]).is_err());
    }
}
