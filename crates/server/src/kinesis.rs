//! The Kinesis-compatible endpoint: `POST /` on the node's HTTP port with
//! `X-Amz-Target: Kinesis_20131202.<Action>`, AWS JSON 1.1 or CBOR 1.1 bodies.
//!
//! The protocol (decoding, model validation, SigV4, envelopes) lives in `runnel-kinesis`; this
//! module authenticates, dispatches each operation to the same [`Api`] the gRPC service uses
//! (so both transports share every check and the routing to shard leaders) and writes the AWS
//! response shapes. Invariants: every response carries `x-amzn-RequestId`; operations that
//! later capabilities own answer `UnsupportedOperationException` naming the capability.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use runnel_kinesis::{Auth, Format, RequestParts};
use runnel_proto::v1 as pb;
use runnel_types::{parse_stream_arn, Error, PageToken, Result, ShardId, StreamName};
use serde_json::{json, Map, Value};

use crate::api::{Api, NewStream, ShardFilter};
use crate::meta::{MetaCommand, StreamMeta, StreamMode, StreamStatus, SHARD_LEVEL_METRICS};
use crate::metrics;

/// Shared state of the endpoint.
#[derive(Clone)]
pub struct Endpoint {
    api: Api,
    auth: Arc<Auth>,
}

impl Endpoint {
    /// The endpoint over `api`, authenticating with `auth`.
    pub fn new(api: Api, auth: Auth) -> Endpoint {
        Endpoint {
            api,
            auth: Arc::new(auth),
        }
    }
}

/// Page token kinds.
const PAGE_LIST_SHARDS: u8 = 1;
const PAGE_LIST_STREAMS: u8 = 2;

/// Operations of the model that Runnel does not provide yet, with the missing capability.
fn unsupported(op: &str) -> Option<&'static str> {
    Some(match op {
        "SplitShard" | "MergeShards" | "UpdateShardCount" => "resharding",
        "UpdateStreamMode" | "UpdateStreamWarmThroughput" => "on-demand capacity management",
        "RegisterStreamConsumer"
        | "DeregisterStreamConsumer"
        | "DescribeStreamConsumer"
        | "ListStreamConsumers"
        | "SubscribeToShard" => "enhanced fan-out consumers",
        "StartStreamEncryption" | "StopStreamEncryption" => "encryption at rest",
        "UpdateAccountSettings" => "account settings (minimum throughput billing commitment)",
        _ => return None,
    })
}

/// `POST /`.
pub async fn handle(
    State(ep): State<Endpoint>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let started = Instant::now();
    let request_id = runnel_kinesis::new_request_id();
    let format = Format::from_content_type(
        headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
    let operation = runnel_kinesis::operation_from_target(target);
    let op_label = operation.clone().unwrap_or("Unknown");
    let result = match &body {
        Ok(body) => serve(&ep, &method, &uri, &headers, body, format, operation).await,
        // Too large (over the HTTP body limit) or cut off: still an AWS envelope with a request id.
        Err(rejection) => Err(runnel_kinesis::Error::Serialization(format!(
            "The request body could not be read: {rejection}"
        ))),
    };
    metrics::LATENCY
        .with_label_values(&[op_label, "http"])
        .observe(started.elapsed().as_secs_f64());
    let (status, bytes) = match result {
        Ok((op, value)) => {
            metrics::REQUESTS
                .with_label_values(&[op, "http", "ok"])
                .inc();
            (
                StatusCode::OK,
                runnel_kinesis::encode_output(format, op, &value),
            )
        }
        Err(e) => {
            metrics::REQUESTS
                .with_label_values(&[op_label, "http", e.type_name()])
                .inc();
            if e.http_status() >= 500 {
                tracing::warn!(op = op_label, request_id, error = %e, "Kinesis request failed");
            }
            (
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
                runnel_kinesis::encode_error(format, &e),
            )
        }
    };
    let mut resp = (status, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

async fn serve(
    ep: &Endpoint,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    format: Format,
    operation: std::result::Result<&'static str, runnel_kinesis::Error>,
) -> std::result::Result<(&'static str, Value), runnel_kinesis::Error> {
    let mut parts: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    if !headers.contains_key(axum::http::header::HOST) {
        // HTTP/2 carries the host as :authority.
        if let Some(a) = uri.authority() {
            parts.push(("host".into(), a.as_str().to_string()));
        }
    }
    let now = UNIX_EPOCH + Duration::from_millis(ep.api.node().now_ms());
    ep.auth.verify(
        &RequestParts {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            headers: parts,
            body,
        },
        now,
    )?;
    // Authentication comes first: an unauthenticated caller learns nothing about operations.
    let op = operation?;
    let input = runnel_kinesis::decode_input(format, op, body)?;
    let out = dispatch(&ep.api, op, In(&input)).await?;
    Ok((op, out))
}

/// Read access to a validated input.
#[derive(Clone, Copy)]
struct In<'a>(&'a Value);

impl<'a> In<'a> {
    fn str(self, k: &str) -> Option<&'a str> {
        self.0.get(k).and_then(Value::as_str)
    }
    fn u64(self, k: &str) -> Option<u64> {
        self.0.get(k).and_then(Value::as_u64)
    }
    fn f64(self, k: &str) -> Option<f64> {
        self.0.get(k).and_then(Value::as_f64)
    }
    fn list(self, k: &str) -> &'a [Value] {
        self.0
            .get(k)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
    fn child(self, k: &str) -> Option<In<'a>> {
        self.0.get(k).map(In)
    }
    fn string_map(self, k: &str) -> BTreeMap<String, String> {
        self.0
            .get(k)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }
    fn strings(self, k: &str) -> Vec<String> {
        self.list(k)
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }
    /// A base64 blob (already checked for shape by the codec).
    fn blob(self, k: &str) -> Result<Vec<u8>> {
        let s = self.str(k).unwrap_or_default();
        runnel_kinesis::codec::BLOB_BASE64
            .decode(s)
            .map_err(|e| Error::Validation(format!("'{k}' is not valid base64: {e}")))
    }
}

fn ts(ms: u64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn ms_of(seconds: f64) -> u64 {
    if seconds <= 0.0 {
        0
    } else {
        (seconds * 1000.0).round() as u64
    }
}

fn status_str(s: StreamStatus) -> &'static str {
    match s {
        StreamStatus::Creating => "CREATING",
        StreamStatus::Active => "ACTIVE",
        StreamStatus::Updating => "UPDATING",
        StreamStatus::Deleting => "DELETING",
    }
}

fn shard_json(s: &pb::Shard) -> Value {
    let mut m = Map::new();
    m.insert("ShardId".into(), json!(s.shard_id));
    if !s.parent_shard_id.is_empty() {
        m.insert("ParentShardId".into(), json!(s.parent_shard_id));
    }
    if !s.adjacent_parent_shard_id.is_empty() {
        m.insert(
            "AdjacentParentShardId".into(),
            json!(s.adjacent_parent_shard_id),
        );
    }
    m.insert(
        "HashKeyRange".into(),
        json!({"StartingHashKey": s.starting_hash_key, "EndingHashKey": s.ending_hash_key}),
    );
    let mut range = Map::new();
    range.insert(
        "StartingSequenceNumber".into(),
        json!(s.starting_sequence_number),
    );
    if !s.ending_sequence_number.is_empty() {
        range.insert(
            "EndingSequenceNumber".into(),
            json!(s.ending_sequence_number),
        );
    }
    m.insert("SequenceNumberRange".into(), Value::Object(range));
    Value::Object(m)
}

fn enhanced(s: &StreamMeta) -> Value {
    json!([{ "ShardLevelMetrics": enhanced_list(&s.enhanced_metrics) }])
}

fn stream_id(s: &StreamMeta) -> String {
    // `[a-z0-9]{20}-[a-z0-9]{3}` as the model requires: derived from the incarnation id.
    format!("{:020x}-{:03x}", s.uid, s.uid % 4096)
}

/// The stream named by `StreamName`/`StreamARN`.
fn stream_of(api: &Api, input: In<'_>) -> Result<StreamName> {
    api.resolve_stream(input.str("StreamName"), input.str("StreamARN"))
}

/// The stream named by a `ResourceARN` (stream ARNs only until consumers exist).
fn resource_stream(api: &Api, input: In<'_>) -> Result<StreamName> {
    let arn = input.str("ResourceARN").unwrap_or_default();
    if arn.contains("/consumer/") {
        return Err(Error::ResourceNotFound(format!(
            "Consumer {arn} not found: enhanced fan-out consumers are not supported by this version of Runnel."
        )));
    }
    parse_stream_arn(arn)?;
    api.resolve_stream(None, Some(arn))
}

fn tags_json(tags: impl Iterator<Item = (String, String)>) -> Value {
    Value::Array(tags.map(|(k, v)| json!({"Key": k, "Value": v})).collect())
}

async fn dispatch(api: &Api, op: &'static str, input: In<'_>) -> Result<Value> {
    if let Some(capability) = unsupported(op) {
        return Err(Error::Unsupported(format!(
            "{op} is not supported by this version of Runnel: {capability} is not built yet (see the operation table in the README)."
        )));
    }
    let node = api.node().clone();
    let limits = &node.config.limits;
    match op {
        "CreateStream" => {
            let mode = match input
                .child("StreamModeDetails")
                .and_then(|d| d.str("StreamMode"))
            {
                Some("ON_DEMAND") => StreamMode::OnDemand,
                _ => StreamMode::Provisioned,
            };
            let tags = input.string_map("Tags");
            if tags.len() > limits.max_tags {
                return Err(Error::InvalidArgument(format!(
                    "A stream cannot have more than {} tags.",
                    limits.max_tags
                )));
            }
            api.create_stream(NewStream {
                name: StreamName::parse(input.str("StreamName").unwrap_or_default())?,
                shard_count: input
                    .u64("ShardCount")
                    .map_or(0, |n| n.min(u64::from(u32::MAX)) as u32),
                mode,
                retention_hours: 0,
                max_record_size_kib: input
                    .u64("MaxRecordSizeInKiB")
                    .map_or(0, |n| n.min(u64::from(u32::MAX)) as u32),
                tags,
            })
            .await?;
            Ok(json!({}))
        }
        "DeleteStream" => {
            let name = stream_of(api, input)?;
            node.propose_meta(MetaCommand::DeleteStream { name })
                .await?;
            Ok(json!({}))
        }
        "DescribeStreamSummary" => {
            let name = stream_of(api, input)?;
            let state = node.fresh_state().await?;
            let s = state.stream(&name)?;
            Ok(json!({"StreamDescriptionSummary": {
                "StreamName": s.name.as_str(),
                "StreamARN": api.arn(&s.name),
                "StreamId": stream_id(s),
                "StreamStatus": status_str(s.status),
                "StreamModeDetails": {"StreamMode": s.mode.as_str()},
                "RetentionPeriodHours": s.retention_hours,
                "StreamCreationTimestamp": ts(s.created_ms),
                "EnhancedMonitoring": enhanced(s),
                "EncryptionType": "NONE",
                "OpenShardCount": s.shards.iter().filter(|x| x.ending.is_none()).count(),
                "ConsumerCount": 0,
                "MaxRecordSizeInKiB": s.max_record_size_kib,
            }}))
        }
        "DescribeStream" => {
            let name = stream_of(api, input)?;
            let limit = input.u64("Limit").unwrap_or(100) as usize;
            let after = match input.str("ExclusiveStartShardId") {
                Some(id) => Some(ShardId::parse(id)?.0),
                None => None,
            };
            let state = node.fresh_state().await?;
            let s = state.stream(&name)?;
            let (shards, more) = Api::list_shards_page(s, &ShardFilter::All, after, limit);
            Ok(json!({"StreamDescription": {
                "StreamName": s.name.as_str(),
                "StreamARN": api.arn(&s.name),
                "StreamStatus": status_str(s.status),
                "StreamModeDetails": {"StreamMode": s.mode.as_str()},
                "Shards": shards.iter().map(shard_json).collect::<Vec<_>>(),
                "HasMoreShards": more,
                "RetentionPeriodHours": s.retention_hours,
                "StreamCreationTimestamp": ts(s.created_ms),
                "EnhancedMonitoring": enhanced(s),
                "EncryptionType": "NONE",
            }}))
        }
        "ListStreams" => {
            let limit = input.u64("Limit").unwrap_or(100) as usize;
            let state = node.fresh_state().await?;
            let key = Api::key(&state)?;
            let after: Option<String> = match input.str("NextToken") {
                Some(t) => {
                    let page = PageToken::open(t, &key, node.now_ms())?;
                    if page.kind != PAGE_LIST_STREAMS {
                        return Err(Error::InvalidArgument(
                            "NextToken is not a ListStreams token.".into(),
                        ));
                    }
                    Some(page.after)
                }
                None => input.str("ExclusiveStartStreamName").map(str::to_string),
            };
            let rest: Vec<&StreamMeta> = state
                .streams
                .values()
                .map(|s| &**s)
                .filter(|s| after.as_deref().is_none_or(|a| s.name.as_str() > a))
                .collect();
            let more = rest.len() > limit;
            let page: Vec<&StreamMeta> = rest.into_iter().take(limit).collect();
            let mut out = json!({
                "StreamNames": page.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
                "HasMoreStreams": more,
                "StreamSummaries": page.iter().map(|s| json!({
                    "StreamName": s.name.as_str(),
                    "StreamARN": api.arn(&s.name),
                    "StreamStatus": status_str(s.status),
                    "StreamModeDetails": {"StreamMode": s.mode.as_str()},
                    "StreamCreationTimestamp": ts(s.created_ms),
                })).collect::<Vec<_>>(),
            });
            if more {
                if let Some(last) = page.last() {
                    out["NextToken"] = json!(PageToken {
                        kind: PAGE_LIST_STREAMS,
                        stream: String::new(),
                        after: last.name.to_string(),
                        issued_ms: node.now_ms(),
                    }
                    .seal(&key));
                }
            }
            Ok(out)
        }
        "ListShards" => list_shards(api, input).await,
        "PutRecord" => {
            let name = stream_of(api, input)?;
            let data = input.blob("Data")?;
            let (shard, seq) = api
                .put_record(
                    name,
                    input.str("PartitionKey").unwrap_or_default().to_string(),
                    data.into(),
                    input.str("ExplicitHashKey").unwrap_or_default(),
                    input.str("SequenceNumberForOrdering").unwrap_or_default(),
                )
                .await?;
            Ok(
                json!({"ShardId": shard.to_string(), "SequenceNumber": seq.encode(), "EncryptionType": "NONE"}),
            )
        }
        "PutRecords" => {
            let name = stream_of(api, input)?;
            let mut entries = Vec::with_capacity(input.list("Records").len());
            for r in input.list("Records") {
                let r = In(r);
                entries.push(pb::PutRecordsEntry {
                    partition_key: r.str("PartitionKey").unwrap_or_default().to_string(),
                    data: r.blob("Data")?.into(),
                    explicit_hash_key: r.str("ExplicitHashKey").unwrap_or_default().to_string(),
                });
            }
            let resp = api.put_records_inner(name, entries).await?;
            let records: Vec<Value> = resp
                .records
                .into_iter()
                .map(|r| {
                    if r.error_code.is_empty() {
                        json!({"SequenceNumber": r.sequence_number, "ShardId": r.shard_id})
                    } else {
                        json!({"ErrorCode": r.error_code, "ErrorMessage": r.error_message})
                    }
                })
                .collect();
            Ok(json!({
                "FailedRecordCount": resp.failed_record_count,
                "Records": records,
                "EncryptionType": "NONE",
            }))
        }
        "GetShardIterator" => {
            let name = stream_of(api, input)?;
            let ty = match input.str("ShardIteratorType").unwrap_or_default() {
                "AT_SEQUENCE_NUMBER" => pb::ShardIteratorType::AtSequenceNumber,
                "AFTER_SEQUENCE_NUMBER" => pb::ShardIteratorType::AfterSequenceNumber,
                "TRIM_HORIZON" => pb::ShardIteratorType::TrimHorizon,
                "LATEST" => pb::ShardIteratorType::Latest,
                "AT_TIMESTAMP" => pb::ShardIteratorType::AtTimestamp,
                _ => pb::ShardIteratorType::Unspecified,
            };
            let iterator = api
                .get_shard_iterator_inner(pb::GetShardIteratorRequest {
                    stream: Some(pb::StreamRef {
                        name: name.to_string(),
                        arn: String::new(),
                    }),
                    shard_id: input.str("ShardId").unwrap_or_default().to_string(),
                    iterator_type: ty as i32,
                    starting_sequence_number: input
                        .str("StartingSequenceNumber")
                        .unwrap_or_default()
                        .to_string(),
                    timestamp_ms: input.f64("Timestamp").map_or(0, |t| ms_of(t).max(1)),
                })
                .await?;
            Ok(json!({"ShardIterator": iterator}))
        }
        "GetRecords" => {
            let resp = api
                .get_records_inner(pb::GetRecordsRequest {
                    shard_iterator: input.str("ShardIterator").unwrap_or_default().to_string(),
                    limit: input
                        .u64("Limit")
                        .map_or(0, |l| l.min(u64::from(u32::MAX)) as u32),
                    wait_ms: 0,
                })
                .await?;
            let b64 = &base64::engine::general_purpose::STANDARD;
            let records: Vec<Value> = resp
                .records
                .iter()
                .map(|r| {
                    json!({
                        "SequenceNumber": r.sequence_number,
                        "ApproximateArrivalTimestamp": ts(r.approximate_arrival_timestamp_ms),
                        "Data": b64.encode(&r.data),
                        "PartitionKey": r.partition_key,
                        "EncryptionType": "NONE",
                    })
                })
                .collect();
            let mut out = json!({
                "Records": records,
                "MillisBehindLatest": resp.millis_behind_latest,
            });
            if !resp.next_shard_iterator.is_empty() {
                out["NextShardIterator"] = json!(resp.next_shard_iterator);
            }
            if !resp.child_shards.is_empty() {
                out["ChildShards"] = Value::Array(
                    resp.child_shards
                        .iter()
                        .map(|c| {
                            json!({
                                "ShardId": c.shard_id,
                                "ParentShards": c.parent_shards,
                                "HashKeyRange": {"StartingHashKey": c.starting_hash_key,
                                                 "EndingHashKey": c.ending_hash_key},
                            })
                        })
                        .collect(),
                );
            }
            Ok(out)
        }
        "IncreaseStreamRetentionPeriod" | "DecreaseStreamRetentionPeriod" => {
            let name = stream_of(api, input)?;
            let hours = input.u64("RetentionPeriodHours").unwrap_or(0);
            let hours = u32::try_from(hours).map_err(|_| {
                Error::InvalidArgument(format!(
                    "Minimum allowed retention period is {} hours. Maximum allowed retention period is {} hours.",
                    limits.min_retention_hours, limits.max_retention_hours
                ))
            })?;
            api.retention(
                pb::UpdateRetentionRequest {
                    stream: Some(pb::StreamRef {
                        name: name.to_string(),
                        arn: String::new(),
                    }),
                    retention_hours: hours,
                },
                op == "IncreaseStreamRetentionPeriod",
            )
            .await?;
            Ok(json!({}))
        }
        "UpdateMaxRecordSize" => {
            let name = stream_of(api, input)?;
            let kib = input.u64("MaxRecordSizeInKiB").unwrap_or(0);
            let kib = u32::try_from(kib).unwrap_or(u32::MAX);
            node.fresh_state().await?.stream(&name)?;
            node.propose_meta(MetaCommand::SetMaxRecordSize { name, kib })
                .await?;
            Ok(json!({}))
        }
        "DescribeLimits" => {
            let state = node.fresh_state().await?;
            let open: usize = state
                .streams
                .values()
                .map(|s| s.shards.iter().filter(|x| x.ending.is_none()).count())
                .sum();
            let on_demand = state
                .streams
                .values()
                .filter(|s| s.mode == StreamMode::OnDemand)
                .count();
            Ok(json!({
                "ShardLimit": limits.max_shards_per_stream,
                "OpenShardCount": open,
                "OnDemandStreamCount": on_demand,
                "OnDemandStreamCountLimit": 50,
            }))
        }
        "DescribeAccountSettings" => Ok(json!({
            "MinimumThroughputBillingCommitment": {"Status": "DISABLED"}
        })),
        "AddTagsToStream" | "TagResource" => {
            let name = if op == "TagResource" {
                resource_stream(api, input)?
            } else {
                stream_of(api, input)?
            };
            let add = input.string_map("Tags");
            // `[limits] max_tags` (at most the metadata's own cap of 50, which apply enforces
            // for every node alike) is checked here against this node's view of the stream.
            let state = node.fresh_state().await?;
            let existing = &state.stream(&name)?.tags;
            let after = existing.len() + add.keys().filter(|k| !existing.contains_key(*k)).count();
            if after > limits.max_tags {
                return Err(Error::InvalidArgument(format!(
                    "Failed to add tags to stream {name}: a stream cannot have more than {} tags.",
                    limits.max_tags
                )));
            }
            node.propose_meta(MetaCommand::UpdateTags {
                name,
                add,
                remove: Vec::new(),
            })
            .await?;
            Ok(json!({}))
        }
        "RemoveTagsFromStream" | "UntagResource" => {
            let name = if op == "UntagResource" {
                resource_stream(api, input)?
            } else {
                stream_of(api, input)?
            };
            node.propose_meta(MetaCommand::UpdateTags {
                name,
                add: BTreeMap::new(),
                remove: input.strings("TagKeys"),
            })
            .await?;
            Ok(json!({}))
        }
        "ListTagsForStream" => {
            let name = stream_of(api, input)?;
            let limit = input.u64("Limit").unwrap_or(10) as usize;
            let state = node.fresh_state().await?;
            let s = state.stream(&name)?;
            let after = input.str("ExclusiveStartTagKey");
            let rest: Vec<(String, String)> = s
                .tags
                .iter()
                .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let more = rest.len() > limit;
            Ok(json!({
                "Tags": tags_json(rest.into_iter().take(limit)),
                "HasMoreTags": more,
            }))
        }
        "ListTagsForResource" => {
            let name = resource_stream(api, input)?;
            let state = node.fresh_state().await?;
            let s = state.stream(&name)?;
            Ok(json!({"Tags": tags_json(s.tags.clone().into_iter())}))
        }
        "PutResourcePolicy" => {
            let name = resource_stream(api, input)?;
            let policy = input.str("Policy").unwrap_or_default();
            if serde_json::from_str::<Map<String, Value>>(policy).is_err() {
                return Err(Error::InvalidArgument(
                    "Policy is not a valid JSON policy document.".into(),
                ));
            }
            node.propose_meta(MetaCommand::SetPolicy {
                name,
                policy: Some(policy.to_string()),
            })
            .await?;
            Ok(json!({}))
        }
        "GetResourcePolicy" => {
            let name = resource_stream(api, input)?;
            let state = node.fresh_state().await?;
            let s = state.stream(&name)?;
            Ok(json!({"Policy": s.policy.clone().unwrap_or_else(|| "{}".into())}))
        }
        "DeleteResourcePolicy" => {
            let name = resource_stream(api, input)?;
            let state = node.fresh_state().await?;
            if state.stream(&name)?.policy.is_none() {
                return Err(Error::ResourceNotFound(format!(
                    "No resource policy found for resource {}.",
                    api.arn(&name)
                )));
            }
            node.propose_meta(MetaCommand::SetPolicy { name, policy: None })
                .await?;
            Ok(json!({}))
        }
        "EnableEnhancedMonitoring" | "DisableEnhancedMonitoring" => {
            let name = stream_of(api, input)?;
            let asked = input.strings("ShardLevelMetrics");
            let metrics: Vec<String> = if asked.iter().any(|m| m == "ALL") {
                SHARD_LEVEL_METRICS.iter().map(|m| m.to_string()).collect()
            } else {
                asked
            };
            let before = enhanced_list(&node.fresh_state().await?.stream(&name)?.enhanced_metrics);
            node.propose_meta(MetaCommand::SetEnhancedMonitoring {
                name: name.clone(),
                metrics,
                enable: op == "EnableEnhancedMonitoring",
            })
            .await?;
            let after = enhanced_list(&node.fresh_state().await?.stream(&name)?.enhanced_metrics);
            Ok(json!({
                "StreamName": name.as_str(),
                "StreamARN": api.arn(&name),
                "CurrentShardLevelMetrics": before,
                "DesiredShardLevelMetrics": after,
            }))
        }
        other => Err(Error::Unsupported(format!(
            "{other} is not supported by this version of Runnel."
        ))),
    }
}

fn enhanced_list(set: &std::collections::BTreeSet<String>) -> Vec<&'static str> {
    SHARD_LEVEL_METRICS
        .iter()
        .copied()
        .filter(|m| set.contains(*m))
        .collect()
}

fn filter_code(f: &ShardFilter) -> String {
    match f {
        ShardFilter::All => "all".into(),
        ShardFilter::AfterShardId(i) => format!("after:{i}"),
        ShardFilter::AtTrimHorizon => "ath".into(),
        ShardFilter::FromTrimHorizon => "fth".into(),
        ShardFilter::AtLatest => "latest".into(),
        ShardFilter::AtTimestamp(t) => format!("at:{t}"),
        ShardFilter::FromTimestamp(t) => format!("from:{t}"),
    }
}

fn parse_filter_code(s: &str) -> Option<ShardFilter> {
    let num = |x: &str| x.parse::<u64>().ok();
    Some(match s {
        "all" => ShardFilter::All,
        "ath" => ShardFilter::AtTrimHorizon,
        "fth" => ShardFilter::FromTrimHorizon,
        "latest" => ShardFilter::AtLatest,
        _ => match s.split_once(':')? {
            ("after", i) => ShardFilter::AfterShardId(num(i)?),
            ("at", t) => ShardFilter::AtTimestamp(num(t)?),
            ("from", t) => ShardFilter::FromTimestamp(num(t)?),
            _ => return None,
        },
    })
}

async fn list_shards(api: &Api, input: In<'_>) -> Result<Value> {
    let node = api.node();
    let state = node.fresh_state().await?;
    let key = Api::key(&state)?;
    let limit = input.u64("MaxResults").unwrap_or(1000) as usize;
    let (name, filter, after) = if let Some(token) = input.str("NextToken") {
        // The token carries the stream, filter and position. SDK paginators repeat the first
        // call's StreamName/ShardFilter alongside it: accepted when they name the same stream.
        let page = PageToken::open(token, &key, node.now_ms())?;
        let invalid = || Error::InvalidArgument("Invalid NextToken.".into());
        if page.kind != PAGE_LIST_SHARDS {
            return Err(invalid());
        }
        if input.str("StreamName").is_some() || input.str("StreamARN").is_some() {
            let named = stream_of(api, input)?;
            if named.as_str() != page.stream {
                return Err(Error::InvalidArgument(format!(
                    "NextToken belongs to stream {} but the request names stream {named}.",
                    page.stream
                )));
            }
        }
        let (after, code) = page.after.split_once('|').ok_or_else(invalid)?;
        let after: u64 = after.parse().map_err(|_| invalid())?;
        let filter = parse_filter_code(code).ok_or_else(invalid)?;
        (StreamName::parse(&page.stream)?, filter, Some(after))
    } else {
        let name = stream_of(api, input)?;
        let filter = match input.child("ShardFilter") {
            None => ShardFilter::All,
            Some(f) => {
                let t = f.f64("Timestamp").map(ms_of);
                let need_ts = |ty: &str| {
                    t.ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "Timestamp must be provided for ShardFilter type {ty}."
                        ))
                    })
                };
                match f.str("Type").unwrap_or_default() {
                    "AFTER_SHARD_ID" => {
                        let id = f.str("ShardId").ok_or_else(|| {
                            Error::InvalidArgument(
                                "ShardId must be provided for ShardFilter type AFTER_SHARD_ID."
                                    .into(),
                            )
                        })?;
                        ShardFilter::AfterShardId(ShardId::parse(id)?.0)
                    }
                    "AT_TRIM_HORIZON" => ShardFilter::AtTrimHorizon,
                    "FROM_TRIM_HORIZON" => ShardFilter::FromTrimHorizon,
                    "AT_LATEST" => ShardFilter::AtLatest,
                    "AT_TIMESTAMP" => ShardFilter::AtTimestamp(need_ts("AT_TIMESTAMP")?),
                    "FROM_TIMESTAMP" => ShardFilter::FromTimestamp(need_ts("FROM_TIMESTAMP")?),
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "Unknown ShardFilter type {other}."
                        )))
                    }
                }
            }
        };
        let after = match input.str("ExclusiveStartShardId") {
            Some(id) => Some(ShardId::parse(id)?.0),
            None => None,
        };
        (name, filter, after)
    };
    let s = state.stream(&name)?;
    if let Some(created) = input.f64("StreamCreationTimestamp") {
        if ms_of(created) / 1000 != s.created_ms / 1000 {
            return Err(Error::ResourceNotFound(format!(
                "Stream {name} under account {} with the given creation timestamp not found.",
                state.account
            )));
        }
    }
    let (shards, more) = Api::list_shards_page(s, &filter, after, limit);
    let mut out = json!({"Shards": shards.iter().map(shard_json).collect::<Vec<_>>()});
    if more {
        if let Some(last) = shards.last() {
            let idx = ShardId::parse(&last.shard_id)?.0;
            out["NextToken"] = json!(PageToken {
                kind: PAGE_LIST_SHARDS,
                stream: name.to_string(),
                after: format!("{idx}|{}", filter_code(&filter)),
                issued_ms: node.now_ms(),
            }
            .seal(&key));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_codes_round_trip() {
        for f in [
            ShardFilter::All,
            ShardFilter::AfterShardId(7),
            ShardFilter::AtTrimHorizon,
            ShardFilter::FromTrimHorizon,
            ShardFilter::AtLatest,
            ShardFilter::AtTimestamp(123),
            ShardFilter::FromTimestamp(456),
        ] {
            assert_eq!(parse_filter_code(&filter_code(&f)), Some(f));
        }
        assert_eq!(parse_filter_code("at:x"), None);
    }

    #[test]
    fn every_model_operation_is_handled_or_named_unsupported() {
        let handled = [
            "CreateStream",
            "DeleteStream",
            "DescribeStreamSummary",
            "DescribeStream",
            "ListStreams",
            "ListShards",
            "PutRecord",
            "PutRecords",
            "GetShardIterator",
            "GetRecords",
            "IncreaseStreamRetentionPeriod",
            "DecreaseStreamRetentionPeriod",
            "UpdateMaxRecordSize",
            "DescribeLimits",
            "DescribeAccountSettings",
            "AddTagsToStream",
            "TagResource",
            "RemoveTagsFromStream",
            "UntagResource",
            "ListTagsForStream",
            "ListTagsForResource",
            "PutResourcePolicy",
            "GetResourcePolicy",
            "DeleteResourcePolicy",
            "EnableEnhancedMonitoring",
            "DisableEnhancedMonitoring",
        ];
        let ops = runnel_kinesis::model::model().operation_names();
        assert_eq!(ops.len(), 39);
        for op in ops {
            assert!(
                handled.contains(&op) != unsupported(op).is_some(),
                "{op} must be exactly one of handled / unsupported"
            );
        }
    }
}
