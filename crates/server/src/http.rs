//! The node's HTTP port: `/healthz` and `/metrics` (Prometheus text). The Kinesis-compatible
//! endpoint will be mounted here as well.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::node::Node;

/// The HTTP routes of a node.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(node)
}

async fn healthz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let meta_leader = node.registry.leader_node(runnel_raft::META_GROUP);
    let initialized = node.meta.get().secret.is_some();
    let body = serde_json::json!({
        "node_id": node.config.node_id,
        "meta_leader": meta_leader,
        "initialized": initialized,
        "groups": node.registry.hosted_groups().len(),
    });
    let code = if initialized && meta_leader.is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}
