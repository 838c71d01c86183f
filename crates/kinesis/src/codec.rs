//! Request and response bodies in AWS JSON 1.1 and CBOR 1.1, checked against the service model.
//!
//! Requests of either format are turned into one normalized JSON tree (blobs as base64 strings,
//! timestamps as epoch seconds), type-checked (a wrong type is a `SerializationException`) and
//! validated against the model's constraints with AWS's wording: up to 10 violations, in model
//! member order, reported as `N validation error(s) detected: Value ... at 'path' failed to
//! satisfy constraint: ...`. Responses are written from the same normalized tree: as is for JSON,
//! and for CBOR with blobs as byte strings and timestamps as tag 1, following the output shape.

use base64::Engine as _;
use serde_json::Value;

use crate::model::{model, Kind, Shape};
use crate::Error;

/// The body format of a request (and of its response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/x-amz-json-1.1` (also used for a missing or unknown content type).
    Json,
    /// `application/x-amz-cbor-1.1`.
    Cbor,
}

impl Format {
    /// The format declared by a `Content-Type` header.
    pub fn from_content_type(ct: Option<&str>) -> Format {
        match ct {
            Some(ct)
                if ct
                    .trim()
                    .to_ascii_lowercase()
                    .starts_with("application/x-amz-cbor") =>
            {
                Format::Cbor
            }
            _ => Format::Json,
        }
    }

    /// The `Content-Type` of responses.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/x-amz-json-1.1",
            Format::Cbor => "application/x-amz-cbor-1.1",
        }
    }
}

const MAX_ERRORS: usize = 10;

/// Decodes and validates the input of `op`. An empty body is an empty structure.
pub fn decode_input(format: Format, op: &str, body: &[u8]) -> Result<Value, Error> {
    let mut value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(serde_json::Map::new())
    } else {
        match format {
            Format::Json => serde_json::from_slice::<Value>(body)
                .map_err(|e| Error::Serialization(format!("Malformed JSON body: {e}")))?,
            Format::Cbor => {
                let v: ciborium::Value = ciborium::de::from_reader(body)
                    .map_err(|e| Error::Serialization(format!("Malformed CBOR body: {e}")))?;
                from_cbor(v)?
            }
        }
    };
    if !value.is_object() {
        return Err(Error::Serialization(
            "Start of structure or map expected at the top level of the request".into(),
        ));
    }
    let Some(input) = model().operation(op).and_then(|o| o.input.as_deref()) else {
        return Ok(value);
    };
    drop_nulls(&mut value);
    type_check(model().shape(input), &value)?;
    let mut errors = Vec::new();
    check_structure(model().shape(input), &value, "", &mut errors);
    if errors.is_empty() {
        Ok(value)
    } else {
        let n = errors.len();
        Err(Error::Api(runnel_types::Error::Validation(format!(
            "{n} validation error{} detected: {}",
            if n > 1 { "s" } else { "" },
            errors.join("; ")
        ))))
    }
}

/// Encodes the output of `op` (a normalized tree built by the server).
pub fn encode_output(format: Format, op: &str, value: &Value) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()),
        Format::Cbor => {
            let shape = model()
                .operation(op)
                .and_then(|o| o.output.as_deref())
                .map(|s| model().shape(s));
            write_cbor(&to_cbor(value, shape))
        }
    }
}

/// Encodes an error envelope: `{"__type": ..., "message": ...}`.
pub fn encode_error(format: Format, e: &Error) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(&serde_json::json!({
            "__type": e.type_name(),
            "message": e.message(),
        }))
        .unwrap_or_default(),
        Format::Cbor => write_cbor(&ciborium::Value::Map(vec![
            (
                ciborium::Value::Text("__type".into()),
                ciborium::Value::Text(e.type_name().into()),
            ),
            (
                ciborium::Value::Text("message".into()),
                ciborium::Value::Text(e.message().into()),
            ),
        ])),
    }
}

fn write_cbor(v: &ciborium::Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail for a value tree we built.
    if ciborium::ser::into_writer(v, &mut out).is_err() {
        out.clear();
    }
    out
}

/// CBOR → normalized JSON tree: byte strings become base64 text, tag 1 becomes its number.
fn from_cbor(v: ciborium::Value) -> Result<Value, Error> {
    use ciborium::Value as C;
    Ok(match v {
        C::Null => Value::Null,
        C::Bool(b) => Value::Bool(b),
        C::Integer(i) => {
            let i: i128 = i.into();
            if let Ok(x) = i64::try_from(i) {
                Value::from(x)
            } else {
                return Err(Error::Serialization(format!("integer {i} out of range")));
            }
        }
        C::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| Error::Serialization("non-finite number".into()))?,
        C::Text(s) => Value::String(s),
        C::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        C::Tag(_, inner) => from_cbor(*inner)?,
        C::Array(items) => Value::Array(
            items
                .into_iter()
                .map(from_cbor)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        C::Map(entries) => {
            let mut m = serde_json::Map::new();
            for (k, v) in entries {
                let C::Text(k) = k else {
                    return Err(Error::Serialization("CBOR map keys must be text".into()));
                };
                m.insert(k, from_cbor(v)?);
            }
            Value::Object(m)
        }
        _ => return Err(Error::Serialization("unsupported CBOR value".into())),
    })
}

/// Normalized tree → CBOR, following `shape` where known.
fn to_cbor(v: &Value, shape: Option<&Shape>) -> ciborium::Value {
    use ciborium::Value as C;
    let kind = shape.map(|s| &s.kind);
    match v {
        Value::Null => C::Null,
        Value::Bool(b) => C::Bool(*b),
        Value::Number(n) => match kind {
            Some(Kind::Timestamp) => C::Tag(1, Box::new(C::Float(n.as_f64().unwrap_or(0.0)))),
            _ => {
                if let Some(i) = n.as_i64() {
                    C::Integer(i.into())
                } else if let Some(u) = n.as_u64() {
                    C::Integer(u.into())
                } else {
                    C::Float(n.as_f64().unwrap_or(0.0))
                }
            }
        },
        Value::String(s) => match kind {
            Some(Kind::Blob) => match BLOB_BASE64.decode(s) {
                Ok(b) => C::Bytes(b),
                Err(_) => C::Text(s.clone()),
            },
            _ => C::Text(s.clone()),
        },
        Value::Array(items) => {
            let member = match kind {
                Some(Kind::List(m)) => Some(model().shape(m)),
                _ => None,
            };
            C::Array(items.iter().map(|x| to_cbor(x, member)).collect())
        }
        Value::Object(map) => {
            let entries = map
                .iter()
                .map(|(k, x)| {
                    let child = match kind {
                        Some(Kind::Structure { members, .. }) => members
                            .iter()
                            .find(|(m, _)| m == k)
                            .map(|(_, s)| model().shape(s)),
                        Some(Kind::Map(_, val)) => Some(model().shape(val)),
                        _ => None,
                    };
                    (C::Text(k.clone()), to_cbor(x, child))
                })
                .collect();
            C::Map(entries)
        }
    }
}

/// Removes members whose value is null (AWS treats them as absent).
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            for x in m.values_mut() {
                drop_nulls(x);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn type_name_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "class java.lang.Boolean",
        Value::Number(_) => "class java.math.BigDecimal",
        Value::String(_) => "class java.lang.String",
        Value::Array(_) => "list",
        Value::Object(_) => "structure",
    }
}

/// Checks JSON types against the shape (members the model does not know are ignored).
fn type_check(shape: &Shape, v: &Value) -> Result<(), Error> {
    let mismatch = |want: &str| {
        Err(match v {
            Value::Array(_) => {
                Error::Serialization("Start of list found where not expected".into())
            }
            Value::Object(_) => {
                Error::Serialization("Start of structure or map found where not expected.".into())
            }
            other => Error::Serialization(format!(
                "{} can not be converted to {want}",
                type_name_of(other)
            )),
        })
    };
    match (&shape.kind, v) {
        (Kind::Structure { members, .. }, Value::Object(m)) => {
            for (name, s) in members {
                if let Some(x) = m.get(name) {
                    type_check(model().shape(s), x)?;
                }
            }
            Ok(())
        }
        (Kind::List(member), Value::Array(items)) => {
            let s = model().shape(member);
            items.iter().try_for_each(|x| type_check(s, x))
        }
        (Kind::Map(_, val), Value::Object(m)) => {
            let s = model().shape(val);
            m.values().try_for_each(|x| type_check(s, x))
        }
        (Kind::String(_), Value::String(_)) => Ok(()),
        (Kind::Blob, Value::String(s)) => blob_len(s).map(|_| ()),
        (Kind::Integer | Kind::Long, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(()),
        (Kind::Integer | Kind::Long, Value::Number(_)) => Err(Error::Serialization(
            "a fraction can not be converted to an Integer".into(),
        )),
        (Kind::Double | Kind::Timestamp, Value::Number(_)) => Ok(()),
        (Kind::Boolean, Value::Bool(_)) => Ok(()),
        (Kind::Structure { .. }, _) => mismatch("a structure"),
        (Kind::List(_), _) => mismatch("a list"),
        (Kind::Map(..), _) => mismatch("a map"),
        (Kind::String(_), _) => mismatch("an String"),
        (Kind::Blob, _) => mismatch("a Blob"),
        (Kind::Integer, _) => mismatch("an Integer"),
        (Kind::Long, _) => mismatch("an Long"),
        (Kind::Double, _) => mismatch("an Double"),
        (Kind::Timestamp, _) => mismatch("a Timestamp"),
        (Kind::Boolean, _) => mismatch("an Boolean"),
    }
}

/// Base64 decoding of request blobs: the standard alphabet with padding, accepting nonzero
/// trailing bits in the last character (`QR==` reads as `QQ==`), as AWS's decoders do; the
/// strict default refused such input with a ValidationException that Kinesis would not send.
pub const BLOB_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// The decoded length of a base64 blob, checking that it is well formed.
pub(crate) fn blob_len(s: &str) -> Result<usize, Error> {
    let bad = |why: String| {
        Err(Error::Serialization(format!(
            "'{}' can not be converted to a Blob: {why}",
            runnel_types::clip_for_message(s)
        )))
    };
    if !s.len().is_multiple_of(4) {
        return bad(format!(
            "Base64 encoded length is expected a multiple of 4 bytes but found: {}",
            s.len()
        ));
    }
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 {
        return bad("Invalid Base64 padding".into());
    }
    // One table lookup per byte: this runs over every record of a PutRecords.
    if let Some(pos) = body.bytes().position(|b| !BASE64_ALPHABET[usize::from(b)]) {
        let c = body[pos..].chars().next().unwrap_or('?');
        return bad(format!("Invalid Base64 character: '{c}'"));
    }
    Ok(decoded_len(s))
}

/// The decoded length of a base64 string of valid shape, from its length and padding alone.
fn decoded_len(s: &str) -> usize {
    let pad = s.bytes().rev().take(2).take_while(|b| *b == b'=').count();
    (s.len() / 4 * 3).saturating_sub(pad)
}

const BASE64_ALPHABET: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
        i += 1;
    }
    t
};

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// How AWS prints a value in a validation message.
fn render(shape: &Shape, v: Option<&Value>) -> String {
    let Some(v) = v else {
        return "null".into();
    };
    let inner = match (&shape.kind, v) {
        (Kind::Blob, Value::String(s)) => {
            let n = decoded_len(s);
            format!("java.nio.HeapByteBuffer[pos=0 lim={n} cap={n}]")
        }
        (_, Value::String(s)) => runnel_types::clip_for_message(s).into_owned(),
        (_, Value::Array(items)) => format!(
            "[{}]",
            items
                .iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (_, Value::Object(m)) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, x)| match x {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (_, other) => other.to_string(),
    };
    format!("'{}'", runnel_types::clip_for_message(&inner))
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e18 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

fn check_structure(shape: &Shape, v: &Value, path: &str, errors: &mut Vec<String>) {
    let Kind::Structure {
        members, required, ..
    } = &shape.kind
    else {
        return;
    };
    let Value::Object(map) = v else {
        return;
    };
    for (name, shape_name) in members {
        let member_path = format!("{path}{}", lower_first(name));
        check_member(
            model().shape(shape_name),
            map.get(name),
            required.contains(name),
            &member_path,
            errors,
        );
    }
}

fn check_member(
    shape: &Shape,
    v: Option<&Value>,
    required: bool,
    path: &str,
    errors: &mut Vec<String>,
) {
    let fail = |errors: &mut Vec<String>, constraint: String| {
        if errors.len() < MAX_ERRORS {
            errors.push(format!(
                "Value {} at '{path}' failed to satisfy constraint: {constraint}",
                render(shape, v)
            ));
        }
    };
    let Some(v) = v else {
        if required {
            fail(errors, "Member must not be null".into());
        }
        return;
    };
    // Length-bearing values: strings (characters), blobs (bytes), lists and maps (entries).
    let length = match (&shape.kind, v) {
        (Kind::String(_), Value::String(s)) => Some(s.chars().count()),
        (Kind::Blob, Value::String(s)) => Some(decoded_len(s)),
        (Kind::List(_), Value::Array(a)) => Some(a.len()),
        (Kind::Map(..), Value::Object(m)) => Some(m.len()),
        _ => None,
    };
    if let (Some((p, re)), Value::String(s)) = (&shape.pattern, v) {
        if !re.is_match(s) {
            fail(
                errors,
                format!("Member must satisfy regular expression pattern: {p}"),
            );
        }
    }
    if let Some(len) = length {
        if let Some(min) = shape.min {
            if (len as f64) < min {
                fail(
                    errors,
                    format!(
                        "Member must have length greater than or equal to {}",
                        fmt_num(min)
                    ),
                );
            }
        }
        if let Some(max) = shape.max {
            if (len as f64) > max {
                fail(
                    errors,
                    format!(
                        "Member must have length less than or equal to {}",
                        fmt_num(max)
                    ),
                );
            }
        }
    }
    if let Value::Number(n) = v {
        if matches!(shape.kind, Kind::Integer | Kind::Long | Kind::Double) {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = shape.min {
                if x < min {
                    fail(
                        errors,
                        format!(
                            "Member must have value greater than or equal to {}",
                            fmt_num(min)
                        ),
                    );
                }
            }
            if let Some(max) = shape.max {
                if x > max {
                    fail(
                        errors,
                        format!(
                            "Member must have value less than or equal to {}",
                            fmt_num(max)
                        ),
                    );
                }
            }
        }
    }
    if let (Kind::String(Some(values)), Value::String(s)) = (&shape.kind, v) {
        if !values.iter().any(|x| x == s) {
            fail(
                errors,
                format!(
                    "Member must satisfy enum value set: [{}]",
                    values.join(", ")
                ),
            );
        }
    }
    match (&shape.kind, v) {
        (Kind::Structure { .. }, _) => check_structure(shape, v, &format!("{path}."), errors),
        (Kind::List(member), Value::Array(items)) => {
            let s = model().shape(member);
            for (i, x) in items.iter().enumerate() {
                check_member(
                    s,
                    Some(x),
                    false,
                    &format!("{path}.{}.member", i + 1),
                    errors,
                );
            }
        }
        (Kind::Map(key, val), Value::Object(m)) => {
            let (ks, vs) = (model().shape(key), model().shape(val));
            for (k, x) in m {
                let kv = Value::String(k.clone());
                check_member(ks, Some(&kv), false, &format!("{path}.{k}.key"), errors);
                check_member(vs, Some(x), false, &format!("{path}.{k}.member"), errors);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn validation(op: &str, body: &str) -> String {
        match decode_input(Format::Json, op, body.as_bytes()) {
            Err(Error::Api(runnel_types::Error::Validation(m))) => m,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn empty_stream_name_gives_two_errors_pattern_first() {
        assert_eq!(
            validation("DescribeStreamSummary", r#"{"StreamName": ""}"#),
            "2 validation errors detected: Value '' at 'streamName' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; Value '' at \
             'streamName' failed to satisfy constraint: Member must have length greater than or equal to 1"
        );
    }

    #[test]
    fn missing_required_member_is_null() {
        assert_eq!(
            validation("GetRecords", "{}"),
            "1 validation error detected: Value null at 'shardIterator' failed to satisfy \
             constraint: Member must not be null"
        );
    }

    #[test]
    fn list_members_and_blobs_are_addressed_like_aws() {
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 10_485_761]);
        let body = format!(
            r#"{{"StreamName":"s","Records":[{{"Data":"AA==","PartitionKey":"k"}},{{"Data":"{big}","PartitionKey":""}}]}}"#
        );
        assert_eq!(
            validation("PutRecords", &body),
            "2 validation errors detected: Value 'java.nio.HeapByteBuffer[pos=0 lim=10485761 \
             cap=10485761]' at 'records.2.member.data' failed to satisfy constraint: Member must \
             have length less than or equal to 10485760; Value '' at 'records.2.member.partitionKey' \
             failed to satisfy constraint: Member must have length greater than or equal to 1"
        );
    }

    #[test]
    fn numbers_enums_and_the_ten_error_cap() {
        assert_eq!(
            validation(
                "GetShardIterator",
                r#"{"StreamName":"s","ShardId":"shardId-0","ShardIteratorType":"NOPE"}"#
            ),
            "1 validation error detected: Value 'NOPE' at 'shardIteratorType' failed to satisfy \
             constraint: Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, \
             AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]"
        );
        assert_eq!(
            validation("CreateStream", r#"{"StreamName":"s","ShardCount":0}"#),
            "1 validation error detected: Value '0' at 'shardCount' failed to satisfy constraint: \
             Member must have value greater than or equal to 1"
        );
        let keys: Vec<String> = (0..12)
            .map(|i| format!("\"{}\"", "k".repeat(129 + i)))
            .collect();
        let msg = validation(
            "RemoveTagsFromStream",
            &format!(r#"{{"StreamName":"s","TagKeys":[{}]}}"#, keys.join(",")),
        );
        assert!(msg.starts_with("10 validation errors detected: "), "{msg}");
    }

    #[test]
    fn wrong_types_and_bad_bodies_are_serialization_errors() {
        for (op, body) in [
            ("CreateStream", r#"{"StreamName":"s","ShardCount":"1"}"#),
            ("CreateStream", r#"{"StreamName":5}"#),
            (
                "PutRecord",
                r#"{"StreamName":"s","PartitionKey":"k","Data":"abc"}"#,
            ),
            (
                "PutRecord",
                r#"{"StreamName":"s","PartitionKey":"k","Data":"ab!="}"#,
            ),
            ("ListStreams", "{not json"),
            ("ListStreams", "[]"),
        ] {
            let e = decode_input(Format::Json, op, body.as_bytes()).unwrap_err();
            assert_eq!(e.type_name(), "SerializationException", "{body}");
        }
    }

    #[test]
    fn nulls_are_absent_and_unknown_members_ignored() {
        let v = decode_input(
            Format::Json,
            "ListStreams",
            br#"{"Limit":null,"Whatever":[1,2]}"#,
        )
        .unwrap();
        assert!(v.get("Limit").is_none());
    }

    #[test]
    fn cbor_requests_normalize_bytes_and_timestamps() {
        use ciborium::Value as C;
        let req = C::Map(vec![
            (C::Text("StreamName".into()), C::Text("s".into())),
            (C::Text("PartitionKey".into()), C::Text("k".into())),
            (C::Text("Data".into()), C::Bytes(vec![1, 2, 3])),
        ]);
        let v = decode_input(Format::Cbor, "PutRecord", &write_cbor(&req)).unwrap();
        assert_eq!(v["Data"], "AQID");
        let req = C::Map(vec![(
            C::Text("Timestamp".into()),
            C::Tag(1, Box::new(C::Float(1.5))),
        )]);
        let v = decode_input(Format::Cbor, "GetShardIterator", &write_cbor(&req));
        // ShardId etc. missing: a validation error, but the timestamp itself was accepted.
        assert!(matches!(
            v,
            Err(Error::Api(runnel_types::Error::Validation(_)))
        ));
    }

    #[test]
    fn cbor_output_follows_the_shape() {
        let out = serde_json::json!({
            "Records": [{"SequenceNumber": "1", "Data": "AQID", "PartitionKey": "k",
                         "ApproximateArrivalTimestamp": 1.25}],
            "NextShardIterator": "it", "MillisBehindLatest": 0
        });
        let bytes = encode_output(Format::Cbor, "GetRecords", &out);
        let v: ciborium::Value = ciborium::de::from_reader(&bytes[..]).unwrap();
        let text = format!("{v:?}");
        assert!(text.contains("Bytes([1, 2, 3])"), "{text}");
        assert!(text.contains("Tag(1, Float(1.25))"), "{text}");
    }

    #[test]
    fn error_envelopes() {
        let e = Error::UnknownOperation("x".into());
        let j: Value = serde_json::from_slice(&encode_error(Format::Json, &e)).unwrap();
        assert_eq!(j["__type"], "UnknownOperationException");
        assert_eq!(j["message"], "x");
        let c: ciborium::Value =
            ciborium::de::from_reader(&encode_error(Format::Cbor, &e)[..]).unwrap();
        assert!(format!("{c:?}").contains("UnknownOperationException"));
    }

    proptest! {
        #[test]
        fn blob_len_matches_decoding(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let s = base64::engine::general_purpose::STANDARD.encode(&data);
            prop_assert_eq!(blob_len(&s).unwrap(), data.len());
        }

        #[test]
        fn cbor_and_json_inputs_agree(pk in "[a-z]{1,20}", data in proptest::collection::vec(any::<u8>(), 0..100)) {
            use ciborium::Value as C;
            let c = C::Map(vec![
                (C::Text("StreamName".into()), C::Text("s".into())),
                (C::Text("PartitionKey".into()), C::Text(pk.clone())),
                (C::Text("Data".into()), C::Bytes(data.clone())),
            ]);
            let from_cbor = decode_input(Format::Cbor, "PutRecord", &write_cbor(&c)).unwrap();
            let j = serde_json::json!({"StreamName": "s", "PartitionKey": pk,
                "Data": base64::engine::general_purpose::STANDARD.encode(&data)});
            let from_json = decode_input(Format::Json, "PutRecord", j.to_string().as_bytes()).unwrap();
            prop_assert_eq!(from_cbor, from_json);
        }
    }

    #[test]
    fn blobs_with_nonzero_trailing_bits_decode_like_aws() {
        // 'R' carries bits beyond the one byte that "QR==" encodes.
        assert!(base64::engine::general_purpose::STANDARD
            .decode("QR==")
            .is_err());
        assert_eq!(BLOB_BASE64.decode("QR==").unwrap(), b"A");
        assert_eq!(BLOB_BASE64.decode("QUJD").unwrap(), b"ABC");
        assert!(
            BLOB_BASE64.decode("QQ=").is_err(),
            "padding is still checked"
        );
    }
}
