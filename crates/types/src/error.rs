//! The crate-wide error type.
//!
//! Owns the mapping from a Runnel error to the Kinesis wire contract: the exception name
//! (`__type`), the HTTP status and whether a client should retry. Invariant: every variant maps
//! to exactly one exception name and status; the message is carried verbatim to the client.

/// Every failure Runnel reports, named after the Kinesis exception it becomes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The stream, shard or consumer does not exist (`ResourceNotFoundException`).
    #[error("{0}")]
    ResourceNotFound(String),
    /// The resource is not in a state that allows the operation (`ResourceInUseException`).
    #[error("{0}")]
    ResourceInUse(String),
    /// A quota or rate of control-plane operations is exceeded (`LimitExceededException`).
    #[error("{0}")]
    LimitExceeded(String),
    /// A parameter is semantically invalid (`InvalidArgumentException`).
    #[error("{0}")]
    InvalidArgument(String),
    /// A parameter violates a modelled constraint (`ValidationException`).
    #[error("{0}")]
    Validation(String),
    /// Shard read or write throughput exceeded (`ProvisionedThroughputExceededException`).
    #[error("{0}")]
    ProvisionedThroughputExceeded(String),
    /// A shard iterator is older than its time to live (`ExpiredIteratorException`).
    #[error("{0}")]
    ExpiredIterator(String),
    /// A pagination token is older than its time to live (`ExpiredNextTokenException`).
    #[error("{0}")]
    ExpiredNextToken(String),
    /// The caller may not perform the operation (`AccessDeniedException`).
    #[error("{0}")]
    AccessDenied(String),
    /// The operation is part of the Kinesis API but not (yet) provided by Runnel
    /// (`UnsupportedOperationException`, 400, not retryable). The message names the capability.
    #[error("{0}")]
    Unsupported(String),
    /// No leader, not ready or shutting down: retryable, reported as `InternalFailure` with 503.
    #[error("{0}")]
    Unavailable(String),
    /// A server fault, reported as `InternalFailure` with 500.
    #[error("{0}")]
    Internal(String),
}

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The Kinesis exception name sent as `__type`.
    pub fn kinesis_name(&self) -> &'static str {
        match self {
            Error::ResourceNotFound(_) => "ResourceNotFoundException",
            Error::ResourceInUse(_) => "ResourceInUseException",
            Error::LimitExceeded(_) => "LimitExceededException",
            Error::InvalidArgument(_) => "InvalidArgumentException",
            Error::Validation(_) => "ValidationException",
            Error::ProvisionedThroughputExceeded(_) => "ProvisionedThroughputExceededException",
            Error::ExpiredIterator(_) => "ExpiredIteratorException",
            Error::ExpiredNextToken(_) => "ExpiredNextTokenException",
            Error::AccessDenied(_) => "AccessDeniedException",
            Error::Unsupported(_) => "UnsupportedOperationException",
            Error::Unavailable(_) | Error::Internal(_) => "InternalFailure",
        }
    }

    /// Rebuilds an error from its Kinesis exception name and message (the reverse of
    /// [`Error::kinesis_name`]; unknown names become [`Error::Internal`]).
    pub fn from_kinesis_name(name: &str, message: String) -> Error {
        match name {
            "ResourceNotFoundException" => Error::ResourceNotFound(message),
            "ResourceInUseException" => Error::ResourceInUse(message),
            "LimitExceededException" => Error::LimitExceeded(message),
            "InvalidArgumentException" => Error::InvalidArgument(message),
            "ValidationException" => Error::Validation(message),
            "ProvisionedThroughputExceededException" => {
                Error::ProvisionedThroughputExceeded(message)
            }
            "ExpiredIteratorException" => Error::ExpiredIterator(message),
            "ExpiredNextTokenException" => Error::ExpiredNextToken(message),
            "AccessDeniedException" => Error::AccessDenied(message),
            "UnsupportedOperationException" => Error::Unsupported(message),
            "ServiceUnavailable" => Error::Unavailable(message),
            _ => Error::Internal(message),
        }
    }

    /// HTTP status: 400 for client errors, 500 for [`Error::Internal`], 503 for [`Error::Unavailable`].
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Internal(_) => 500,
            Error::Unavailable(_) => 503,
            _ => 400,
        }
    }

    /// The gRPC status code (numbering of the gRPC spec) used on the native API. Together with
    /// [`Error::kinesis_name`] (sent as the `x-kinesis-error` metadata) and
    /// [`Error::http_status`] this is the one place where errors meet transports.
    pub fn grpc_code(&self) -> i32 {
        match self {
            Error::ResourceNotFound(_) => 5, // NOT_FOUND
            Error::ResourceInUse(_) => 9,    // FAILED_PRECONDITION
            Error::LimitExceeded(_) | Error::ProvisionedThroughputExceeded(_) => 8, // RESOURCE_EXHAUSTED
            Error::InvalidArgument(_) | Error::Validation(_) => 3, // INVALID_ARGUMENT
            Error::ExpiredIterator(_) | Error::ExpiredNextToken(_) => 11, // OUT_OF_RANGE
            Error::AccessDenied(_) => 7,                           // PERMISSION_DENIED
            Error::Unsupported(_) => 12,                           // UNIMPLEMENTED
            Error::Unavailable(_) => 14,                           // UNAVAILABLE
            Error::Internal(_) => 13,                              // INTERNAL
        }
    }

    /// The name used on the native API: the Kinesis name, except that [`Error::Unavailable`]
    /// keeps its own name so a client can tell it is retryable.
    pub fn wire_name(&self) -> &'static str {
        match self {
            Error::Unavailable(_) => "ServiceUnavailable",
            other => other.kinesis_name(),
        }
    }

    /// Whether the same request may succeed if simply retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::ProvisionedThroughputExceeded(_)
                | Error::Unavailable(_)
                | Error::LimitExceeded(_)
        )
    }

    /// The human-readable message, without the exception name.
    pub fn message(&self) -> &str {
        match self {
            Error::ResourceNotFound(m)
            | Error::ResourceInUse(m)
            | Error::LimitExceeded(m)
            | Error::InvalidArgument(m)
            | Error::Validation(m)
            | Error::ProvisionedThroughputExceeded(m)
            | Error::ExpiredIterator(m)
            | Error::ExpiredNextToken(m)
            | Error::AccessDenied(m)
            | Error::Unsupported(m)
            | Error::Unavailable(m)
            | Error::Internal(m) => m,
        }
    }

    /// A [`Error::Validation`] worded like AWS:
    /// `1 validation error detected: Value '<value>' at '<field>' failed to satisfy constraint: <constraint>`.
    /// With `value == None` the `'<value>' ` part is omitted (used for blobs). Long values are clipped.
    pub fn validation_failed(field: &str, value: Option<&str>, constraint: &str) -> Error {
        let value = match value {
            Some(v) => format!(" '{}'", clip(v)),
            None => String::new(),
        };
        Error::Validation(format!(
            "1 validation error detected: Value{value} at '{field}' failed to satisfy constraint: {constraint}"
        ))
    }
}

/// Maximum number of characters of caller input echoed back in an error message.
const ECHO_MAX_CHARS: usize = 1024;

/// Clips caller input echoed in messages so that a huge input cannot produce a huge error.
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(ECHO_MAX_CHARS) {
        None => std::borrow::Cow::Borrowed(s),
        Some((cut, _)) => std::borrow::Cow::Owned(format!("{}...", &s[..cut])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(m: &str) -> Vec<Error> {
        let m = m.to_string();
        vec![
            Error::ResourceNotFound(m.clone()),
            Error::ResourceInUse(m.clone()),
            Error::LimitExceeded(m.clone()),
            Error::InvalidArgument(m.clone()),
            Error::Validation(m.clone()),
            Error::ProvisionedThroughputExceeded(m.clone()),
            Error::ExpiredIterator(m.clone()),
            Error::ExpiredNextToken(m.clone()),
            Error::AccessDenied(m.clone()),
            Error::Unsupported(m.clone()),
            Error::Unavailable(m.clone()),
            Error::Internal(m),
        ]
    }

    #[test]
    fn names_statuses_and_retry_classes() {
        let got: Vec<(&str, u16, bool)> = all("x")
            .iter()
            .map(|e| (e.kinesis_name(), e.http_status(), e.is_retryable()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ResourceNotFoundException", 400, false),
                ("ResourceInUseException", 400, false),
                ("LimitExceededException", 400, true),
                ("InvalidArgumentException", 400, false),
                ("ValidationException", 400, false),
                ("ProvisionedThroughputExceededException", 400, true),
                ("ExpiredIteratorException", 400, false),
                ("ExpiredNextTokenException", 400, false),
                ("AccessDeniedException", 400, false),
                ("UnsupportedOperationException", 400, false),
                ("InternalFailure", 503, true),
                ("InternalFailure", 500, false),
            ]
        );
    }

    #[test]
    fn message_and_display_are_the_payload() {
        for e in all("some message") {
            assert_eq!(e.message(), "some message");
            assert_eq!(e.to_string(), "some message");
        }
    }

    #[test]
    fn validation_wording() {
        let e = Error::validation_failed(
            "streamName",
            Some(""),
            "Member must have length greater than or equal to 1",
        );
        assert_eq!(
            e.message(),
            "1 validation error detected: Value '' at 'streamName' failed to satisfy constraint: Member must have length greater than or equal to 1"
        );
        let e = Error::validation_failed(
            "data",
            None,
            "Member must have length less than or equal to 1048576",
        );
        assert_eq!(
            e.message(),
            "1 validation error detected: Value at 'data' failed to satisfy constraint: Member must have length less than or equal to 1048576"
        );
    }

    #[test]
    fn clip_bounds_echo() {
        assert_eq!(clip("abc"), "abc");
        let long = "é".repeat(5000);
        let c = clip(&long);
        assert_eq!(c.chars().count(), ECHO_MAX_CHARS + 3);
        assert!(c.ends_with("..."));
    }
}
