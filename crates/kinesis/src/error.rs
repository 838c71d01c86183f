//! Errors of the Kinesis endpoint and their envelopes: every failure becomes one AWS exception
//! name (`__type`), an HTTP status and a message. Errors of the data model come from
//! [`runnel_types::Error`], whose names and statuses are defined there; this enum adds the
//! protocol-level ones (serialization, unknown operation, authentication).

/// A failure answered by the Kinesis endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The body could not be read as the declared format, or a value has the wrong type.
    #[error("{0}")]
    Serialization(String),
    /// `X-Amz-Target` names no Kinesis operation.
    #[error("{0}")]
    UnknownOperation(String),
    /// No authentication information in a request that needs it.
    #[error("{0}")]
    MissingAuthenticationToken(String),
    /// The Authorization header or presigned query lacks a part.
    #[error("{0}")]
    IncompleteSignature(String),
    /// The signature does not match, or the request time is out of the allowed window.
    #[error("{0}")]
    InvalidSignature(String),
    /// The access key id is not known.
    #[error("{0}")]
    UnrecognizedClient(String),
    /// An error of the data model (validation, not found, ...).
    #[error(transparent)]
    Api(#[from] runnel_types::Error),
}

impl Error {
    /// The exception name sent as `__type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Error::Serialization(_) => "SerializationException",
            Error::UnknownOperation(_) => "UnknownOperationException",
            Error::MissingAuthenticationToken(_) => "MissingAuthenticationTokenException",
            Error::IncompleteSignature(_) => "IncompleteSignatureException",
            Error::InvalidSignature(_) => "InvalidSignatureException",
            Error::UnrecognizedClient(_) => "UnrecognizedClientException",
            Error::Api(e) => e.kinesis_name(),
        }
    }

    /// The HTTP status: 403 for authentication failures, 400 for other client errors, 500/503
    /// for server faults.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Serialization(_) | Error::UnknownOperation(_) => 400,
            Error::MissingAuthenticationToken(_)
            | Error::IncompleteSignature(_)
            | Error::InvalidSignature(_)
            | Error::UnrecognizedClient(_) => 403,
            Error::Api(e) => e.http_status(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Error::Serialization(m)
            | Error::UnknownOperation(m)
            | Error::MissingAuthenticationToken(m)
            | Error::IncompleteSignature(m)
            | Error::InvalidSignature(m)
            | Error::UnrecognizedClient(m) => m,
            Error::Api(e) => e.message(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_statuses() {
        let cases = [
            (
                Error::Serialization("x".into()),
                "SerializationException",
                400,
            ),
            (
                Error::UnknownOperation("x".into()),
                "UnknownOperationException",
                400,
            ),
            (
                Error::MissingAuthenticationToken("x".into()),
                "MissingAuthenticationTokenException",
                403,
            ),
            (
                Error::IncompleteSignature("x".into()),
                "IncompleteSignatureException",
                403,
            ),
            (
                Error::InvalidSignature("x".into()),
                "InvalidSignatureException",
                403,
            ),
            (
                Error::UnrecognizedClient("x".into()),
                "UnrecognizedClientException",
                403,
            ),
            (
                Error::Api(runnel_types::Error::ResourceNotFound("x".into())),
                "ResourceNotFoundException",
                400,
            ),
            (
                Error::Api(runnel_types::Error::Internal("x".into())),
                "InternalFailure",
                500,
            ),
        ];
        for (e, name, status) in cases {
            assert_eq!(
                (e.type_name(), e.http_status(), e.message()),
                (name, status, "x")
            );
        }
    }
}
