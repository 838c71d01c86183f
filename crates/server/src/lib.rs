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
pub mod lag;
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

/// Accepts the gRPC port's connections and sorts them: those opening with
/// [`runnel_raft::tcp::MAGIC`] carry Raft messages between nodes and are served here; every other
/// one goes to the gRPC server through the returned channel. Ends when `stop` turns true.
///
/// Accepted sockets get TCP_NODELAY here (with a caller-supplied listener tonic does not set
/// it): otherwise Nagle's algorithm and delayed ACKs hold small Raft replies and API responses
/// back by tens of milliseconds.
fn accept_grpc_port(
    listener: tokio::net::TcpListener,
    registry: std::sync::Arc<runnel_raft::Registry>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::sync::mpsc::Receiver<std::io::Result<tokio::net::TcpStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                a = listener.accept() => a,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: the listener itself is fine.
                    tracing::warn!(error = %e, "gRPC port: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "gRPC port: cannot set TCP_NODELAY");
            }
            let tx = tx.clone();
            let registry = registry.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                if runnel_raft::tcp::is_raft_connection(&stream).await {
                    // Raft connections end with the node (gRPC ones end with the gRPC server).
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => {}
                        _ = runnel_raft::tcp::serve_accepted(registry, stream) => {}
                    }
                } else {
                    let _ = tx.send(Ok(stream)).await;
                }
            });
        }
    });
    rx
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
    let stop_accept = stop.subscribe();
    let registry = node.registry.clone();
    let node_id = node.config.node_id;
    tasks.push(tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::ReceiverStream::new(accept_grpc_port(
            grpc,
            registry,
            stop_accept,
        ));
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
