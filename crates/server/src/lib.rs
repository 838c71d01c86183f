//! The Runnel node.
//!
//! * [`config`]: node configuration (TOML, environment, validation);
//! * [`meta`]: the metadata state machine (streams, shards, placement) and its shared handle;
//! * [`node`]: the running node: Raft groups, reconciler, retention, routing to leaders,
//!   batching of shard writes;
//! * [`api`]: the public `runnel.v1` gRPC API; [`internal`]: node-to-node gRPC;
//! * [`kinesis`]: the Kinesis-compatible endpoint (`POST /` on the HTTP port);
//! * HTTP: `/healthz`, `/metrics`, optionally over TLS ([`tls`]).
//!
//! [`start`] binds the ports and runs everything until [`Server::shutdown`].

pub mod api;
pub mod config;
mod forward;
mod http;
pub mod internal;
pub mod kinesis;
pub mod meta;
pub mod metrics;
pub mod node;
mod put_stream;
pub mod throttle;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use runnel_proto::internal::v1::internal_server::InternalServer;
use runnel_proto::v1::runnel_server::RunnelServer;
use tokio::task::JoinHandle;

pub use config::NodeConfig;
pub use node::Node;

/// Largest gRPC message accepted or sent (PutRecords and GetRecords carry up to 10 MiB of data).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Storage(String),
    /// Raft could not start.
    #[error("raft: {0}")]
    Raft(String),
    /// A port could not be bound.
    #[error("cannot listen on {0}")]
    Bind(String),
    /// The TLS certificate or key could not be loaded.
    #[error("{0}")]
    Tls(String),
}

/// A started node with its listeners.
pub struct Server {
    node: Arc<Node>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops listeners, loops and groups.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        self.node.shutdown().await;
    }
}

/// Binds the ports and starts the node.
pub async fn start(config: NodeConfig) -> Result<Server, StartError> {
    config.validate()?;
    let auth = config.kinesis_auth()?;
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key).map_err(StartError::Tls)?),
        _ => None,
    };
    let grpc = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|e| StartError::Bind(format!("{} (gRPC): {e}", config.grpc_listen)))?;
    let http = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|e| StartError::Bind(format!("{} (HTTP): {e}", config.http_listen)))?;
    let grpc_addr = grpc
        .local_addr()
        .map_err(|e| StartError::Bind(e.to_string()))?;
    let http_addr = http
        .local_addr()
        .map_err(|e| StartError::Bind(e.to_string()))?;
    let (stop, _) = tokio::sync::watch::channel(false);

    let node = Node::start(config).await?;

    let mut tasks = Vec::new();
    let api = RunnelServer::new(api::Api::new(node.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let internal = InternalServer::new(internal::InternalService::new(node.clone()))
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let mut stop_rx = stop.subscribe();
    let node_id = node.config.node_id;
    tasks.push(tokio::spawn(async move {
        // With a caller-supplied listener tonic ignores `Server::tcp_nodelay`: the accepted
        // sockets must get TCP_NODELAY here, or Nagle's algorithm and delayed ACKs hold small
        // Raft replies and API responses back by tens of milliseconds.
        let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
        let result = tonic::transport::Server::builder()
            .add_service(api)
            .add_service(internal)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(node = node_id, error = %e, "gRPC server failed");
        }
    }));
    let mut stop_rx = stop.subscribe();
    let endpoint = kinesis::Endpoint::new(api::Api::new(node.clone()), auth);
    let router = http::router(node.clone(), endpoint);
    match tls {
        None => tasks.push(tokio::spawn(async move {
            let result = axum::serve(http, router)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(node = node_id, error = %e, "HTTP server failed");
            }
        })),
        Some(tls) => tasks.push(tokio::spawn(http::serve_tls(http, router, tls, stop_rx))),
    }
    tracing::info!(node = node_id, %grpc_addr, %http_addr, "runnel node started");
    Ok(Server {
        node,
        grpc_addr,
        http_addr,
        tasks,
        stop,
    })
}
