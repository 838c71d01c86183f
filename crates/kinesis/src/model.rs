//! The AWS service model of Kinesis (`model/kinesis-2013-12-02.json`, generated from botocore by
//! `scripts/gen-kinesis-model.py`): operations with their input/output shapes, and every shape's
//! type and constraints. Validation and CBOR encoding are driven by it, so Runnel checks exactly
//! what AWS documents.
//!
//! Invariant: the model is embedded at compile time and parsed once; a shape reference that does
//! not resolve is treated as an unconstrained string (a unit test checks that none exist).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex_lite::Regex;
use serde::Deserialize;

const MODEL_JSON: &str = include_str!("../model/kinesis-2013-12-02.json");

/// The API version's target prefix (`X-Amz-Target: Kinesis_20131202.<Action>`).
pub const TARGET_PREFIX: &str = "Kinesis_20131202";

#[derive(Deserialize)]
struct RawModel {
    operations: HashMap<String, RawOp>,
    shapes: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawOp {
    input: Option<String>,
    output: Option<String>,
}

#[derive(Deserialize)]
struct RawRef {
    shape: String,
}

#[derive(Deserialize)]
struct RawShape {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    members: serde_json::Map<String, serde_json::Value>,
    member: Option<RawRef>,
    key: Option<RawRef>,
    value: Option<RawRef>,
    min: Option<f64>,
    max: Option<f64>,
    pattern: Option<String>,
    #[serde(rename = "enum")]
    enum_values: Option<Vec<String>>,
    #[serde(default)]
    eventstream: bool,
}

/// The type of a shape, with its children.
#[derive(Debug)]
pub enum Kind {
    /// A structure: members in model order and the required ones.
    Structure {
        /// (member name, shape name) in the model's order.
        members: Vec<(String, String)>,
        /// Required member names.
        required: HashSet<String>,
        /// True for an event stream union (SubscribeToShard output).
        eventstream: bool,
    },
    /// A list of `member` shapes.
    List(String),
    /// A map from `key` to `value` shapes.
    Map(String, String),
    /// A string, optionally an enum.
    String(Option<Vec<String>>),
    /// 32-bit integer.
    Integer,
    /// 64-bit integer.
    Long,
    /// Double.
    Double,
    /// Boolean.
    Boolean,
    /// Binary, base64 in JSON and a byte string in CBOR.
    Blob,
    /// Epoch seconds in JSON, tag 1 in CBOR.
    Timestamp,
}

/// A shape with its constraints.
#[derive(Debug)]
pub struct Shape {
    /// The type.
    pub kind: Kind,
    /// Minimum length (strings, blobs, lists, maps) or value (numbers).
    pub min: Option<f64>,
    /// Maximum length or value.
    pub max: Option<f64>,
    /// Pattern as written in the model (for messages) and compiled for a full match.
    pub pattern: Option<(String, Regex)>,
}

/// An operation.
#[derive(Debug)]
pub struct Operation {
    /// Input shape name.
    pub input: Option<String>,
    /// Output shape name.
    pub output: Option<String>,
}

/// The whole model.
#[derive(Debug)]
pub struct Model {
    operations: HashMap<String, Operation>,
    shapes: HashMap<String, Shape>,
    unconstrained: Shape,
}

static MODEL: LazyLock<Model> = LazyLock::new(|| Model::parse(MODEL_JSON));

/// The embedded Kinesis model.
pub fn model() -> &'static Model {
    &MODEL
}

impl Model {
    fn parse(text: &str) -> Model {
        // The text is a compile-time constant; a unit test proves it parses, so an error here can
        // only come from a broken build and yields an empty model (every operation unknown).
        let raw: RawModel = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "embedded Kinesis model does not parse");
                RawModel {
                    operations: HashMap::new(),
                    shapes: serde_json::Map::new(),
                }
            }
        };
        let operations = raw
            .operations
            .into_iter()
            .map(|(name, op)| {
                (
                    name,
                    Operation {
                        input: op.input,
                        output: op.output,
                    },
                )
            })
            .collect();
        let mut shapes = HashMap::new();
        for (name, v) in raw.shapes {
            let Ok(s) = serde_json::from_value::<RawShape>(v) else {
                tracing::error!(shape = %name, "embedded Kinesis model shape does not parse");
                continue;
            };
            let kind = match s.ty.as_str() {
                "structure" => Kind::Structure {
                    members: s
                        .members
                        .iter()
                        .map(|(m, r)| {
                            let shape = r
                                .get("shape")
                                .and_then(|x| x.as_str())
                                .unwrap_or("String")
                                .to_string();
                            (m.clone(), shape)
                        })
                        .collect(),
                    required: s.required.into_iter().collect(),
                    eventstream: s.eventstream,
                },
                "list" => Kind::List(s.member.map(|r| r.shape).unwrap_or_default()),
                "map" => Kind::Map(
                    s.key.map(|r| r.shape).unwrap_or_default(),
                    s.value.map(|r| r.shape).unwrap_or_default(),
                ),
                "integer" => Kind::Integer,
                "long" => Kind::Long,
                "double" | "float" => Kind::Double,
                "boolean" => Kind::Boolean,
                "blob" => Kind::Blob,
                "timestamp" => Kind::Timestamp,
                _ => Kind::String(s.enum_values),
            };
            let pattern = s.pattern.and_then(|p| {
                let full = format!("^(?:{p})$");
                match Regex::new(&full) {
                    Ok(re) => Some((p, re)),
                    Err(e) => {
                        tracing::error!(shape = %name, error = %e, "model pattern does not compile");
                        None
                    }
                }
            });
            shapes.insert(
                name,
                Shape {
                    kind,
                    min: s.min,
                    max: s.max,
                    pattern,
                },
            );
        }
        Model {
            operations,
            shapes,
            unconstrained: Shape {
                kind: Kind::String(None),
                min: None,
                max: None,
                pattern: None,
            },
        }
    }

    /// The operation named `name` (e.g. `PutRecord`).
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.get(name)
    }

    /// The model's own spelling of an operation name (`'static`, for labels), if it exists.
    pub fn operation_name(&'static self, name: &str) -> Option<&'static str> {
        self.operations.get_key_value(name).map(|(k, _)| k.as_str())
    }

    /// Every operation name, sorted.
    pub fn operation_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.operations.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The shape named `name`.
    pub fn shape(&self, name: &str) -> &Shape {
        self.shapes.get(name).unwrap_or(&self.unconstrained)
    }

    #[cfg(test)]
    fn has_shape(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_parses_with_all_39_operations() {
        let m = model();
        assert_eq!(m.operation_names().len(), 39);
        assert!(m.operation("PutRecords").is_some());
        let input = m.operation("CreateStream").and_then(|o| o.input.clone());
        assert_eq!(input.as_deref(), Some("CreateStreamInput"));
    }

    #[test]
    fn every_reference_resolves_and_every_pattern_compiles() {
        let raw: RawModel = serde_json::from_str(MODEL_JSON).unwrap();
        let m = model();
        for (name, v) in raw.shapes {
            if let Some(p) = v.get("pattern") {
                assert!(m.shape(&name).pattern.is_some(), "{name}: {p}");
            }
            match &m.shape(&name).kind {
                Kind::Structure { members, .. } => {
                    for (_, s) in members {
                        assert!(m.has_shape(s), "{name} -> {s}");
                    }
                }
                Kind::List(s) => assert!(m.has_shape(s), "{name} -> {s}"),
                Kind::Map(k, v) => assert!(m.has_shape(k) && m.has_shape(v), "{name}"),
                _ => {}
            }
        }
    }

    #[test]
    fn constraints_are_read() {
        let s = model().shape("StreamName");
        assert_eq!((s.min, s.max), (Some(1.0), Some(128.0)));
        let (p, re) = s.pattern.as_ref().unwrap();
        assert_eq!(p, "[a-zA-Z0-9_.-]+");
        assert!(re.is_match("a.b-c_d"));
        assert!(!re.is_match("a b"));
    }
}
