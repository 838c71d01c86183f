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

/// How long an accepted connection on the gRPC port may take to send the bytes that tell a
/// Raft connection from HTTP/2 before it is handed to the gRPC server anyway.
const CLASSIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
            tokio::spawn(async move {
                if opens_with_magic(&stream).await {
                    if let Err(e) = runnel_raft::tcp::keepalive(&stream) {
                        tracing::debug!(error = %e, "raft connection: cannot set keepalive");
                    }
                    let (mut read, write) = stream.into_split();
                    let mut magic = [0u8; 8];
                    if tokio::io::AsyncReadExt::read_exact(&mut read, &mut magic)
                        .await
                        .is_ok()
                    {
                        runnel_raft::tcp::serve_connection(registry, read, write).await;
                    }
                } else {
                    let _ = tx.send(Ok(stream)).await;
                }
            });
        }
    });
    rx
}

/// Whether the connection's first bytes are the Raft magic (peeked, not consumed). A client
/// that sends other bytes, closes, or stays silent for [`CLASSIFY_TIMEOUT`] is not Raft.
async fn opens_with_magic(stream: &tokio::net::TcpStream) -> bool {
    let magic = runnel_raft::tcp::MAGIC;
    let check = async {
        let mut buf = [0u8; 8];
        let started = std::time::Instant::now();
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if buf[..n] != magic[..n] {
                return false;
            }
            if n == magic.len() {
                return true;
            }
            // A prefix of the magic so far: peek returns at once while bytes are waiting (and
            // cannot see a close behind them), so wait a little for the rest. A peer writes all
            // eight at once; one that sent a prefix and nothing more within a second is not
            // one of ours.
            if started.elapsed() > std::time::Duration::from_secs(1) {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(CLASSIFY_TIMEOUT, check)
        .await
        .unwrap_or(false)
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

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    async fn classify(send: &[u8], close: bool) -> bool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(send).await.unwrap();
        if close {
            client.shutdown().await.unwrap();
        }
        let raft = super::opens_with_magic(&server).await;
        // Nothing was consumed: the gRPC server still sees every byte.
        let mut buf = vec![0u8; send.len()];
        if !send.is_empty() {
            server.peek(&mut buf).await.unwrap();
            assert_eq!(buf, send);
        }
        raft
    }

    #[tokio::test]
    async fn raft_connections_are_told_from_http2_by_their_first_bytes() {
        assert!(classify(runnel_raft::tcp::MAGIC, false).await);
        assert!(classify(b"RNLRAFT1 and frames", false).await);
        assert!(!classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false).await);
        // A prefix of the magic and then nothing more: not Raft.
        assert!(!classify(b"RNLR", true).await);
        assert!(!classify(b"", true).await);
    }
}
