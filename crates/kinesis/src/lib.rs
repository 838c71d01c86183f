//! The Kinesis wire protocol, independent of the server that answers it.
//!
//! Owns: reading `X-Amz-Target` into an operation of the AWS service model ([`model`]), decoding
//! and validating AWS JSON 1.1 / CBOR 1.1 bodies against that model and encoding responses and
//! error envelopes ([`codec`]), SigV4 verification ([`sigv4`]), and this crate's [`Error`] with
//! its exception names and HTTP statuses.
//!
//! Invariants: a request reaches the server's handler only after its operation is known, its
//! body decoded and every modelled constraint checked (bad input never reaches the data path);
//! every error leaves as exactly one `__type` with one status.

pub mod codec;
pub mod error;
pub mod model;
pub mod sigv4;

pub use codec::{decode_input, encode_error, encode_output, Format};
pub use error::Error;
pub use sigv4::{Auth, RequestParts};

/// The operation named by an `X-Amz-Target` header (`Kinesis_20131202.<Action>`).
pub fn operation_from_target(target: Option<&str>) -> Result<&'static str, Error> {
    let unknown = || Error::UnknownOperation(String::new());
    let target = target.ok_or_else(unknown)?;
    let (prefix, action) = target.split_once('.').ok_or_else(unknown)?;
    if prefix != model::TARGET_PREFIX {
        return Err(unknown());
    }
    model::model().operation_name(action).ok_or_else(unknown)
}

/// A fresh request id in the UUID v4 text form AWS uses for `x-amzn-RequestId`.
pub fn new_request_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(
        [
            &b[..6],
            &[0x40 | (b[6] & 0x0f)],
            &b[7..8],
            &[0x80 | (b[8] & 0x3f)],
            &b[9..],
        ]
        .concat(),
    );
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            operation_from_target(Some("Kinesis_20131202.PutRecord")).unwrap(),
            "PutRecord"
        );
        for bad in [
            None,
            Some(""),
            Some("Kinesis_20131202.Nope"),
            Some("DynamoDB_20120810.PutRecord"),
            Some("PutRecord"),
        ] {
            assert_eq!(
                operation_from_target(bad).unwrap_err().type_name(),
                "UnknownOperationException"
            );
        }
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, new_request_id());
    }
}
