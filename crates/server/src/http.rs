//! The node's HTTP port: the Kinesis-compatible endpoint (`POST /`), `/healthz` and `/metrics`
//! (Prometheus text), over plain HTTP (HTTP/1.1 and h2c) or TLS (ALPN h2 and http/1.1).
//! With `[testing] enable_clock_hook` (fault injection only) also `POST /testing/clock`, whose
//! body is the node clock's offset from the system clock in milliseconds.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::kinesis::Endpoint;
use crate::node::Node;

/// Largest request body accepted (a PutRecords of 10 MiB records, base64-encoded, fits).
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// The HTTP routes of a node.
pub fn router(node: Arc<Node>, endpoint: Endpoint) -> Router {
    let kinesis = Router::new()
        .route("/", post(crate::kinesis::handle))
        .with_state(endpoint);
    let mut routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    if node.config.testing.enable_clock_hook {
        routes = routes.route("/testing/clock", post(set_clock));
    }
    routes
        .with_state(node)
        .merge(kinesis)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Serves `router` over TLS until `stop` turns true.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    config: Arc<rustls::ServerConfig>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "HTTPS accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn =
                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service);
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
                    }
                }
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
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

/// `POST /testing/clock` (only with `[testing] enable_clock_hook`): the body is the new offset
/// of the node's clock in milliseconds (a signed integer); the reply is the node's time after it.
async fn set_clock(State(node): State<Arc<Node>>, body: String) -> impl IntoResponse {
    match body.trim().parse::<i64>() {
        Ok(offset) => {
            node.clock.set_offset_ms(offset);
            tracing::warn!(
                node = node.config.node_id,
                offset_ms = offset,
                "clock offset set by the test hook"
            );
            (StatusCode::OK, node.now_ms().to_string())
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("the body must be an offset in milliseconds: {e}"),
        ),
    }
}
