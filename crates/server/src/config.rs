//! Node configuration: TOML file, then `RUNNEL_*` environment variables, then command-line flags
//! (applied by the binary), validated once at start with messages that name the setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use runnel_types::Limits;
use serde::{Deserialize, Serialize};

/// A node listed in the static bootstrap configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// Physical node id (1..2^32).
    pub id: u64,
    /// gRPC address other nodes and clients use to reach it.
    pub addr: String,
}

/// Raft timing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Metadata group heartbeat (ms). openraft also uses it as the timeout of every
    /// AppendEntries RPC, so it must exceed the worst node-to-node round trip plus the time
    /// to send a batch; below that, replication stalls (found by the harness's delay fault).
    pub meta_heartbeat_ms: u64,
    /// Metadata group election timeout, lower bound (ms).
    pub meta_election_min_ms: u64,
    /// Metadata group election timeout, upper bound (ms).
    pub meta_election_max_ms: u64,
    /// Shard group heartbeat (ms); also the AppendEntries timeout (see `meta_heartbeat_ms`).
    pub shard_heartbeat_ms: u64,
    /// Shard group election timeout, lower bound (ms).
    pub shard_election_min_ms: u64,
    /// Shard group election timeout, upper bound (ms).
    pub shard_election_max_ms: u64,
    /// Log entries between shard snapshots.
    pub shard_snapshot_logs: u64,
    /// Log entries kept after a snapshot (a follower further behind gets the snapshot).
    pub logs_to_keep: u64,
    /// Raft entries a shard leader keeps proposed and not yet applied. Writes that arrive while
    /// this many are in flight wait and share the next entry, so fewer in flight means larger
    /// entries (fewer Raft rounds and fsyncs per record) at the cost of pipelining.
    pub shard_inflight_entries: usize,
    /// A shard group whose leader appended nothing for this long goes quiet: its Raft timers
    /// stop and one beat per peer node replaces its heartbeats (ms; 0 turns quiescing off).
    pub quiesce_idle_ms: u64,
    /// How Raft messages travel to each peer node: `tcp` (one plain TCP connection per peer on
    /// its gRPC port, without HTTP/2), `grpc-stream` (one long-lived gRPC stream per peer) or
    /// `grpc-call` (a gRPC call per message). The gRPC ones are kept for comparison and as a
    /// fallback; every node accepts all three.
    pub peer_transport: PeerTransport,
    /// What makes Raft log writes durable: `journal` (the node's own preallocated segment
    /// files, synced once per group commit) or `rocksdb-wal` (RocksDB's write-ahead log). A
    /// node replays a journal left by an earlier run either way, so it can switch on restart.
    pub log_durability: LogDurability,
}

/// See [`RaftConfig::log_durability`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogDurability {
    #[default]
    Journal,
    RocksdbWal,
}

/// See [`RaftConfig::peer_transport`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerTransport {
    #[default]
    Tcp,
    GrpcStream,
    GrpcCall,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            meta_heartbeat_ms: 500,
            meta_election_min_ms: 1500,
            meta_election_max_ms: 3000,
            shard_heartbeat_ms: 500,
            shard_election_min_ms: 1500,
            shard_election_max_ms: 3000,
            shard_snapshot_logs: 20_000,
            logs_to_keep: 5_000,
            shard_inflight_entries: 1,
            quiesce_idle_ms: 3_000,
            peer_transport: PeerTransport::Tcp,
            log_durability: LogDurability::Journal,
        }
    }
}

/// How the Kinesis endpoint authenticates requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// SigV4 when access keys are configured, development mode otherwise.
    #[default]
    Auto,
    /// Accept every request, signed or not, with any key (as local emulators do).
    Development,
    /// Require a valid SigV4 signature by a configured key.
    Sigv4,
}

/// An access key accepted by the Kinesis endpoint.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    /// Access key id.
    pub id: String,
    /// Secret access key.
    pub secret: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessKey({}, <secret>)", self.id)
    }
}

/// Authentication of the Kinesis endpoint (`[auth]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `auto` (default), `development` or `sigv4`.
    pub mode: AuthMode,
    /// Access keys.
    pub access_keys: Vec<AccessKey>,
    /// An AWS shared credentials file whose keys are accepted as well.
    pub credentials_file: Option<PathBuf>,
}

/// HTTPS on the HTTP port (`[tls]`): both set = HTTPS (ALPN h2 and http/1.1), neither = HTTP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// Settings that exist only to test the system (fault injection). Never use them in production.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestingConfig {
    /// Enables the admin endpoints that change the node's clock offset.
    pub enable_clock_hook: bool,
    /// Acknowledge log appends without fsync (a deliberate durability bug for the harness).
    pub unsafe_skip_fsync: bool,
    /// This replica silently drops one record every 50 log entries (a deliberate divergence bug
    /// the fault-injection harness must catch).
    pub bug_drop_applied_records: bool,
    /// Every 50th log entry's records are stored one position early, so two records share a
    /// sequence number (a deliberate ordering bug the harness must catch).
    pub bug_reuse_sequence_numbers: bool,
    /// Let a replica that led its group resume as leader of the same term after a restart
    /// (openraft's default), bringing back the stale reads the harness found after power cuts
    /// (a deliberate bug for its regression run).
    pub bug_restore_leader: bool,
    /// Keep unsynced write-ahead-log bytes inside the process (RocksDB `manual_wal_flush`), so a
    /// SIGKILL discards every write that was not fsynced, as a power cut discards the page
    /// cache. Durability is unchanged for synced writes.
    pub simulate_power_loss: bool,
    /// Reach these peers at these addresses instead of the ones in the cluster membership (the
    /// harness routes node-to-node traffic through its own TCP proxies).
    pub peer_overrides: Vec<PeerConfig>,
}

/// Metrics (`[metrics]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Most (stream, shard) pairs with shard-level series (enhanced monitoring); more are
    /// dropped and counted in `runnel_metrics_shard_series_dropped_total`.
    pub max_shard_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_shard_series: 1000,
        }
    }
}

/// Configuration of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Physical node id (1..2^32).
    pub node_id: u64,
    /// Data directory.
    pub data_dir: PathBuf,
    /// gRPC listen address (public API and node-to-node).
    pub grpc_listen: SocketAddr,
    /// Address other nodes use to reach this node's gRPC port (defaults to `grpc_listen`).
    pub advertise_addr: Option<String>,
    /// HTTP listen address (health, metrics; later the Kinesis endpoint).
    pub http_listen: SocketAddr,
    /// The initial cluster (every node must list the same peers). Empty: a single-node cluster
    /// made of this node.
    pub peers: Vec<PeerConfig>,
    /// Replicas per shard; 0 = min(3, nodes).
    pub replication_factor: usize,
    /// Region shown in ARNs.
    pub region: String,
    /// Account id shown in ARNs.
    pub account_id: String,
    /// How often retention trimming runs (seconds).
    pub retention_check_secs: u64,
    /// Threads of the node's async runtime; 0 = one per CPU the process may run on. Set it
    /// when the node shares the machine (several nodes on one host, a container's CPU quota):
    /// runnable threads beyond the cores the node really gets only add wake-ups and context
    /// switches.
    pub worker_threads: usize,
    /// MiB of memory for recently applied entry blocks, from which reads at the end of a shard
    /// (tails, consumers keeping up) are served without a disk read; 0 turns that off.
    pub recent_blocks_mib: usize,
    /// Limits (records, requests, retention).
    pub limits: Limits,
    /// Raft timing.
    pub raft: RaftConfig,
    /// Test-only switches.
    pub testing: TestingConfig,
    /// Metrics.
    pub metrics: MetricsConfig,
    /// Kinesis endpoint authentication.
    pub auth: AuthConfig,
    /// HTTPS for the HTTP port.
    pub tls: TlsConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 1,
            data_dir: PathBuf::from("runnel-data"),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 4600)),
            advertise_addr: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 4567)),
            peers: Vec::new(),
            replication_factor: 0,
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            retention_check_secs: 30,
            worker_threads: 0,
            recent_blocks_mib: 64,
            limits: Limits::default(),
            raft: RaftConfig::default(),
            testing: TestingConfig::default(),
            metrics: MetricsConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// A configuration error naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl NodeConfig {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// Applies `RUNNEL_*` environment overrides from `vars`.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(
        &mut self,
        vars: I,
    ) -> Result<(), ConfigError> {
        for (k, v) in vars {
            let parse_err = |what: &str| ConfigError(format!("{k}={v}: {what}"));
            match k.as_str() {
                "RUNNEL_NODE_ID" => {
                    self.node_id = v.parse().map_err(|_| parse_err("not a number"))?
                }
                "RUNNEL_DATA_DIR" => self.data_dir = PathBuf::from(v),
                "RUNNEL_GRPC_LISTEN" => {
                    self.grpc_listen = v.parse().map_err(|_| parse_err("not host:port"))?
                }
                "RUNNEL_HTTP_LISTEN" => {
                    self.http_listen = v.parse().map_err(|_| parse_err("not host:port"))?
                }
                "RUNNEL_ADVERTISE_ADDR" => self.advertise_addr = Some(v),
                "RUNNEL_REPLICATION_FACTOR" => {
                    self.replication_factor = v.parse().map_err(|_| parse_err("not a number"))?
                }
                "RUNNEL_WORKER_THREADS" => {
                    self.worker_threads = v.parse().map_err(|_| parse_err("not a number"))?
                }
                "RUNNEL_RECENT_BLOCKS_MIB" => {
                    self.recent_blocks_mib = v.parse().map_err(|_| parse_err("not a number"))?
                }
                "RUNNEL_REGION" => self.region = v,
                "RUNNEL_ACCOUNT_ID" => self.account_id = v,
                "RUNNEL_PEERS" => self.peers = parse_peers(&v).map_err(|e| parse_err(&e))?,
                "RUNNEL_AUTH_MODE" => {
                    self.auth.mode = match v.as_str() {
                        "auto" => AuthMode::Auto,
                        "development" => AuthMode::Development,
                        "sigv4" => AuthMode::Sigv4,
                        _ => return Err(parse_err("expected auto, development or sigv4")),
                    }
                }
                "RUNNEL_CREDENTIALS_FILE" => self.auth.credentials_file = Some(PathBuf::from(v)),
                "RUNNEL_TLS_CERT" => self.tls.cert = Some(PathBuf::from(v)),
                "RUNNEL_TLS_KEY" => self.tls.key = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        Ok(())
    }

    /// The address peers use for this node.
    pub fn advertised(&self) -> String {
        self.advertise_addr
            .clone()
            .unwrap_or_else(|| self.grpc_listen.to_string())
    }

    /// The initial cluster: the configured peers, or this node alone.
    pub fn cluster(&self) -> Vec<PeerConfig> {
        if self.peers.is_empty() {
            vec![PeerConfig {
                id: self.node_id,
                addr: self.advertised(),
            }]
        } else {
            self.peers.clone()
        }
    }

    /// Effective replication factor.
    pub fn effective_replication_factor(&self) -> usize {
        let n = self.cluster().len();
        if self.replication_factor == 0 {
            runnel_placement::default_replication_factor(n)
        } else {
            self.replication_factor.min(n)
        }
    }

    /// Checks the whole configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.node_id == 0 || self.node_id >= crate::meta::FIRST_REPLICA_ID {
            return bad(format!(
                "node_id must be between 1 and 2^32-1, got {}",
                self.node_id
            ));
        }
        if self.worker_threads > 1024 {
            return bad(format!(
                "worker_threads must be between 0 (one per CPU) and 1024, got {}",
                self.worker_threads
            ));
        }
        if self.recent_blocks_mib > 1 << 20 {
            return bad(format!(
                "recent_blocks_mib must be between 0 (off) and 1048576, got {}",
                self.recent_blocks_mib
            ));
        }
        let cluster = self.cluster();
        if !cluster.iter().any(|p| p.id == self.node_id) {
            return bad(format!(
                "peers must include this node (node_id {})",
                self.node_id
            ));
        }
        let mut ids: Vec<u64> = cluster.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != cluster.len() {
            return bad("peers contain a duplicate id".into());
        }
        if let Some(p) = cluster
            .iter()
            .find(|p| p.id == 0 || p.id >= crate::meta::FIRST_REPLICA_ID)
        {
            return bad(format!("peer id {} must be between 1 and 2^32-1", p.id));
        }
        if let Some(p) = cluster.iter().find(|p| !p.addr.contains(':')) {
            return bad(format!(
                "peer {} address {:?} is not host:port",
                p.id, p.addr
            ));
        }
        if self.replication_factor > cluster.len() {
            return bad(format!(
                "replication_factor {} exceeds the number of nodes {}",
                self.replication_factor,
                cluster.len()
            ));
        }
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return bad(format!(
                "account_id must be 12 digits, got {:?}",
                self.account_id
            ));
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad(format!(
                "region {:?} must be lowercase letters, digits and '-'",
                self.region
            ));
        }
        let r = &self.raft;
        if r.meta_heartbeat_ms == 0
            || r.meta_election_min_ms <= r.meta_heartbeat_ms
            || r.meta_election_max_ms <= r.meta_election_min_ms
        {
            return bad(
                "raft: need 0 < meta_heartbeat_ms < meta_election_min_ms < meta_election_max_ms"
                    .into(),
            );
        }
        if r.shard_heartbeat_ms == 0
            || r.shard_election_min_ms <= r.shard_heartbeat_ms
            || r.shard_election_max_ms <= r.shard_election_min_ms
        {
            return bad(
                "raft: need 0 < shard_heartbeat_ms < shard_election_min_ms < shard_election_max_ms"
                    .into(),
            );
        }
        if r.shard_inflight_entries == 0 || r.shard_inflight_entries > 1024 {
            return bad("raft: shard_inflight_entries must be between 1 and 1024".into());
        }
        if r.quiesce_idle_ms != 0 && r.quiesce_idle_ms < 2 * r.shard_heartbeat_ms {
            return bad(format!(
                "raft: quiesce_idle_ms must be 0 (off) or at least two shard heartbeats ({} ms)",
                2 * r.shard_heartbeat_ms
            ));
        }
        if r.shard_snapshot_logs == 0 {
            return bad("raft: shard_snapshot_logs must be at least 1".into());
        }
        if self.retention_check_secs == 0 {
            return bad("retention_check_secs must be at least 1".into());
        }
        let l = &self.limits;
        if l.min_retention_hours == 0 || l.min_retention_hours > l.max_retention_hours {
            return bad("limits: need 0 < min_retention_hours <= max_retention_hours".into());
        }
        if l.max_tags == 0 || l.max_tags > crate::meta::MAX_TAGS {
            return bad(format!(
                "limits: max_tags must be between 1 and {} (the metadata's own cap, Kinesis' limit), got {}",
                crate::meta::MAX_TAGS,
                l.max_tags
            ));
        }
        if l.max_record_bytes == 0 || l.max_put_records_entries == 0 || l.max_get_records_limit == 0
        {
            return bad("limits: max_record_bytes, max_put_records_entries and max_get_records_limit must be > 0".into());
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls: set both cert and key, or neither".into());
        }
        if let Some(k) = self
            .auth
            .access_keys
            .iter()
            .find(|k| k.id.is_empty() || k.secret.is_empty())
        {
            return bad(format!(
                "auth: access key {:?} needs a non-empty id and secret",
                k.id
            ));
        }
        self.kinesis_auth()?;
        Ok(())
    }

    /// The Kinesis endpoint's authentication, with the credentials file read.
    pub fn kinesis_auth(&self) -> Result<runnel_kinesis::Auth, ConfigError> {
        let mut keys: std::collections::HashMap<String, String> = self
            .auth
            .access_keys
            .iter()
            .map(|k| (k.id.clone(), k.secret.clone()))
            .collect();
        if let Some(path) = &self.auth.credentials_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("auth: credentials_file {}: {e}", path.display()))
            })?;
            let more = runnel_kinesis::Auth::parse_credentials_file(&text).map_err(|e| {
                ConfigError(format!("auth: credentials_file {}: {e}", path.display()))
            })?;
            keys.extend(more);
        }
        match (self.auth.mode, keys.is_empty()) {
            (AuthMode::Development, _) | (AuthMode::Auto, true) => {
                Ok(runnel_kinesis::Auth::Development)
            }
            (AuthMode::Sigv4, true) => Err(ConfigError(
                "auth: mode sigv4 needs access_keys or a credentials_file with keys".into(),
            )),
            (AuthMode::Sigv4 | AuthMode::Auto, false) => Ok(runnel_kinesis::Auth::Keys(keys)),
        }
    }
}

/// Parses `1=127.0.0.1:4601,2=127.0.0.1:4602`.
pub fn parse_peers(s: &str) -> Result<Vec<PeerConfig>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (id, addr) = p
                .split_once('=')
                .ok_or_else(|| format!("peer {p:?} is not id=host:port"))?;
            let id = id
                .trim()
                .parse()
                .map_err(|_| format!("peer id {id:?} is not a number"))?;
            Ok(PeerConfig {
                id,
                addr: addr.trim().to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_single_node() {
        let c = NodeConfig::default();
        c.validate().unwrap();
        assert_eq!(c.cluster().len(), 1);
        assert_eq!(c.effective_replication_factor(), 1);
    }

    #[test]
    fn toml_env_and_validation() {
        let mut c = NodeConfig::from_toml(
            r#"
            node_id = 2
            grpc_listen = "127.0.0.1:4602"
            http_listen = "127.0.0.1:4568"
            peers = [ { id = 1, addr = "127.0.0.1:4601" }, { id = 2, addr = "127.0.0.1:4602" }, { id = 3, addr = "127.0.0.1:4603" } ]
            [limits]
            max_record_bytes = 2048
            "#,
        )
        .unwrap();
        assert_eq!(c.limits.max_record_bytes, 2048);
        assert_eq!(c.limits.max_put_records_entries, 500);
        c.validate().unwrap();
        assert_eq!(c.effective_replication_factor(), 3);
        c.apply_env([("RUNNEL_NODE_ID".to_string(), "9".to_string())])
            .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("peers must include this node"), "{err}");
        assert!(c
            .apply_env([("RUNNEL_NODE_ID".to_string(), "x".to_string())])
            .is_err());
        assert!(NodeConfig::from_toml("nodeid = 1")
            .unwrap_err()
            .to_string()
            .contains("unknown field"));
    }

    #[test]
    fn max_tags_is_bounded_by_the_metadata_cap() {
        let ok = NodeConfig::from_toml("[limits]\nmax_tags = 3\n").unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.limits.max_tags, 3);
        for bad in [0, 51] {
            let c = NodeConfig::from_toml(&format!("[limits]\nmax_tags = {bad}\n")).unwrap();
            assert!(c.validate().unwrap_err().to_string().contains("max_tags"));
        }
    }

    #[test]
    fn log_durability_defaults_to_the_journal_and_can_be_chosen() {
        assert_eq!(
            NodeConfig::default().raft.log_durability,
            LogDurability::Journal
        );
        let c = NodeConfig::from_toml("[raft]\nlog_durability = \"rocksdb-wal\"\n").unwrap();
        assert_eq!(c.raft.log_durability, LogDurability::RocksdbWal);
        assert!(NodeConfig::from_toml("[raft]\nlog_durability = \"none\"\n").is_err());
    }

    #[test]
    fn peer_transport_defaults_to_tcp_and_can_be_chosen() {
        assert_eq!(
            NodeConfig::default().raft.peer_transport,
            PeerTransport::Tcp
        );
        for (text, want) in [
            ("tcp", PeerTransport::Tcp),
            ("grpc-stream", PeerTransport::GrpcStream),
            ("grpc-call", PeerTransport::GrpcCall),
        ] {
            let c =
                NodeConfig::from_toml(&format!("[raft]\npeer_transport = \"{text}\"\n")).unwrap();
            c.validate().unwrap();
            assert_eq!(c.raft.peer_transport, want);
        }
        assert!(NodeConfig::from_toml("[raft]\npeer_transport = \"udp\"\n").is_err());
        assert!(NodeConfig::from_toml("[raft]\npeer_streams = false\n").is_err());
    }

    #[test]
    fn worker_threads_from_file_and_environment_and_bounded() {
        assert_eq!(NodeConfig::default().worker_threads, 0);
        let mut c = NodeConfig::from_toml("worker_threads = 2\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.worker_threads, 2);
        c.apply_env([("RUNNEL_WORKER_THREADS".to_string(), "1".to_string())])
            .unwrap();
        assert_eq!(c.worker_threads, 1);
        let err = c
            .apply_env([("RUNNEL_WORKER_THREADS".to_string(), "many".to_string())])
            .unwrap_err();
        assert!(err.to_string().contains("RUNNEL_WORKER_THREADS"), "{err}");
        let too_many = NodeConfig::from_toml("worker_threads = 5000\n").unwrap();
        let err = too_many.validate().unwrap_err();
        assert!(err.to_string().contains("worker_threads"), "{err}");
    }

    #[test]
    fn recent_blocks_from_file_and_environment_and_bounded() {
        assert_eq!(NodeConfig::default().recent_blocks_mib, 64);
        let mut c = NodeConfig::from_toml("recent_blocks_mib = 0\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.recent_blocks_mib, 0);
        c.apply_env([("RUNNEL_RECENT_BLOCKS_MIB".to_string(), "8".to_string())])
            .unwrap();
        assert_eq!(c.recent_blocks_mib, 8);
        let err = c
            .apply_env([("RUNNEL_RECENT_BLOCKS_MIB".to_string(), "lots".to_string())])
            .unwrap_err();
        assert!(
            err.to_string().contains("RUNNEL_RECENT_BLOCKS_MIB"),
            "{err}"
        );
        let too_many = NodeConfig::from_toml("recent_blocks_mib = 2000000\n").unwrap();
        let err = too_many.validate().unwrap_err();
        assert!(err.to_string().contains("recent_blocks_mib"), "{err}");
    }

    #[test]
    fn quiesce_idle_is_off_or_at_least_two_heartbeats() {
        assert_eq!(NodeConfig::default().raft.quiesce_idle_ms, 3_000);
        for ok in [0, 1_000, 60_000] {
            let c = NodeConfig::from_toml(&format!("[raft]\nquiesce_idle_ms = {ok}\n")).unwrap();
            c.validate().unwrap();
            assert_eq!(c.raft.quiesce_idle_ms, ok);
        }
        for bad in [1, 999] {
            let c = NodeConfig::from_toml(&format!("[raft]\nquiesce_idle_ms = {bad}\n")).unwrap();
            assert!(c
                .validate()
                .unwrap_err()
                .to_string()
                .contains("quiesce_idle_ms"));
        }
    }

    #[test]
    fn auth_modes_and_tls_pairing() {
        let dev = NodeConfig::default();
        assert!(matches!(
            dev.kinesis_auth().unwrap(),
            runnel_kinesis::Auth::Development
        ));
        let keyed =
            NodeConfig::from_toml("[auth]\naccess_keys = [ { id = \"AKID\", secret = \"s\" } ]\n")
                .unwrap();
        keyed.validate().unwrap();
        assert!(
            matches!(keyed.kinesis_auth().unwrap(), runnel_kinesis::Auth::Keys(ref k) if k["AKID"] == "s")
        );
        // An explicit development mode wins over keys; sigv4 without keys is refused.
        let mut forced = keyed.clone();
        forced.auth.mode = AuthMode::Development;
        assert!(matches!(
            forced.kinesis_auth().unwrap(),
            runnel_kinesis::Auth::Development
        ));
        let mut c = NodeConfig::default();
        c.apply_env([("RUNNEL_AUTH_MODE".to_string(), "sigv4".to_string())])
            .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("sigv4"));
        assert!(c
            .apply_env([("RUNNEL_AUTH_MODE".to_string(), "open".to_string())])
            .is_err());
        // Keys from an AWS credentials file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = K1\naws_secret_access_key = S1\n",
        )
        .unwrap();
        let mut c = NodeConfig::default();
        c.auth.credentials_file = Some(file);
        assert!(
            matches!(c.kinesis_auth().unwrap(), runnel_kinesis::Auth::Keys(ref k) if k["K1"] == "S1")
        );
        c.auth.credentials_file = Some(dir.path().join("missing"));
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("credentials_file"));
        // TLS needs both files.
        let mut c = NodeConfig::default();
        c.tls.cert = Some("cert.pem".into());
        assert!(c.validate().unwrap_err().to_string().contains("tls"));
    }

    #[test]
    fn peers_parse() {
        let p = parse_peers("1=127.0.0.1:1, 2=127.0.0.1:2").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].addr, "127.0.0.1:2");
        assert!(parse_peers("1:127").is_err());
    }
}
