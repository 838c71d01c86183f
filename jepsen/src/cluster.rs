//! Cluster control: N `runnel` node processes, each with its own data directory, ports and log,
//! started from a given binary, in one of two network modes ([`NetMode`]): on 127.0.0.1 with
//! every node-to-node and client-to-node connection carried by a harness-owned TCP proxy
//! ([`crate::proxy`]; needs no root), or each node in its own network namespace behind a bridge
//! with nftables rules for partitions ([`crate::netns`]; root). Faults: SIGKILL and restart
//! (a power cut when the nodes run with
//! `[testing] simulate_power_loss`), SIGSTOP/SIGCONT, blocked directions between any two
//! parties (partitions of every shape), delays on node-to-node links (proxy mode only), and
//! node clock offsets through the test-only `POST /testing/clock` hook.
//!
//! Invariants: everything started here is stopped when the [`Cluster`] is dropped (also on
//! panic): paused nodes are resumed first, then every node is killed and waited for, then the
//! proxies close. Node processes also get SIGKILL from the kernel if the harness process dies
//! (`PR_SET_PDEATHSIG`), so even a SIGKILLed harness leaves nothing behind. Admin calls
//! ([`Cluster::client`]) go straight to the node; workload traffic ([`Cluster::endpoint`])
//! goes through the client proxies, so it can be partitioned.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use runnel_client::Client;

use crate::netns::Netns;
use crate::proxy::Proxy;

/// How nodes and clients are networked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetMode {
    /// 127.0.0.1 and harness-owned TCP proxies on every link (no root needed; has delays).
    #[default]
    Proxy,
    /// A network namespace per node, veth pairs to a bridge, nftables drop rules (root).
    Netns,
}

impl std::str::FromStr for NetMode {
    type Err = String;
    fn from_str(s: &str) -> Result<NetMode, String> {
        match s {
            "proxy" => Ok(NetMode::Proxy),
            "netns" => Ok(NetMode::Netns),
            other => Err(format!("unknown network mode {other:?}: proxy or netns")),
        }
    }
}

/// The network of a running cluster.
enum Net {
    Proxy {
        /// `peers[i][j]`: the proxy node `i` uses to reach node `j` (`None` when `i == j`).
        peers: Vec<Vec<Option<Proxy>>>,
        /// `clients[j]`: the proxy clients use to reach node `j`.
        clients: Vec<Proxy>,
    },
    Netns(Netns),
}

/// gRPC and HTTP ports of every node in netns mode (each node has its own address).
const NETNS_PORTS: (u16, u16) = (4600, 4567);

/// One node process.
pub struct Node {
    /// Node id (1-based).
    pub id: u64,
    /// gRPC port.
    pub grpc: u16,
    /// HTTP port.
    pub http: u16,
    /// Config file.
    pub config: PathBuf,
    /// Log file.
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// How the nodes are configured.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// TOML appended to every node's `[raft]` section.
    pub raft: String,
    /// TOML appended to every node's `[testing]` section.
    pub testing: String,
    /// TOML appended to the last node's `[testing]` section only.
    pub last_testing: String,
    /// Nodes keep unsynced WAL bytes in the process, so SIGKILL is a power cut.
    pub power_loss: bool,
    /// Network mode.
    pub net: NetMode,
}

/// A cluster of node processes behind proxies.
pub struct Cluster {
    /// Binary.
    pub bin: PathBuf,
    /// Nodes (index = id - 1).
    pub nodes: Vec<Node>,
    /// Kills are power cuts (the nodes run with `simulate_power_loss`).
    pub power_loss: bool,
    /// Node addresses (127.0.0.1, or each node's own in netns mode).
    hosts: Vec<IpAddr>,
    /// Directions currently blocked, as (from, to) party indexes; party `n` is the clients.
    blocked: HashSet<(usize, usize)>,
    /// Dropped after the nodes are stopped (see `Drop`).
    net: Net,
}

/// A free port below the kernel's ephemeral range (32768 and up): a port the kernel hands out
/// for `bind(0)` can be taken by any outgoing connection between the probe and the node's own
/// bind (a node then failed with "Address already in use"). Ports are probed from a
/// pid-derived start so concurrent runs rarely probe the same ones.
fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() % 600) * 20,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free port in 20000-31999"))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Cluster {
    /// Writes the configs of the nodes under `dir`, starts their proxies and the nodes.
    pub async fn start(bin: &Path, dir: &Path, opts: &ClusterOptions) -> std::io::Result<Cluster> {
        let n = opts.nodes;
        let mut ports = Vec::new();
        let mut hosts = Vec::new();
        let net = match opts.net {
            NetMode::Proxy => {
                for _ in 0..n {
                    ports.push((free_port()?, free_port()?));
                    hosts.push(IpAddr::from([127, 0, 0, 1]));
                }
                let mut peers: Vec<Vec<Option<Proxy>>> = Vec::new();
                for i in 0..n {
                    let mut row = Vec::new();
                    for (j, (grpc, _)) in ports.iter().enumerate() {
                        row.push(if i == j {
                            None
                        } else {
                            Some(Proxy::start(loopback(*grpc)).await?)
                        });
                    }
                    peers.push(row);
                }
                let mut clients = Vec::new();
                for (grpc, _) in &ports {
                    clients.push(Proxy::start(loopback(*grpc)).await?);
                }
                Net::Proxy { peers, clients }
            }
            NetMode::Netns => {
                let ns = Netns::create(n)?;
                for i in 0..n {
                    ports.push(NETNS_PORTS);
                    hosts.push(IpAddr::V4(ns.addr(i)));
                }
                Net::Netns(ns)
            }
        };
        let members: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (g, _))| format!("{{ id = {}, addr = \"{}:{g}\" }}", i + 1, hosts[i]))
            .collect();
        let mut nodes = Vec::new();
        for (i, (grpc, http)) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let config = dir.join(format!("node{id}.toml"));
            let overrides: Vec<String> = match &net {
                Net::Proxy { peers, .. } => peers[i]
                    .iter()
                    .enumerate()
                    .filter_map(|(j, p)| {
                        p.as_ref()
                            .map(|p| format!("{{ id = {}, addr = \"{}\" }}", j + 1, p.listen))
                    })
                    .collect(),
                Net::Netns(_) => Vec::new(),
            };
            let mut testing = format!(
                "[raft]\n{}\n[testing]\nenable_clock_hook = true\nsimulate_power_loss = {}\npeer_overrides = [ {} ]\n{}\n",
                opts.raft,
                opts.power_loss,
                overrides.join(", "),
                opts.testing
            );
            if i + 1 == n {
                testing.push_str(&opts.last_testing);
                testing.push('\n');
            }
            std::fs::write(
                &config,
                format!(
                    "node_id = {id}\ndata_dir = {:?}\ngrpc_listen = \"{host}:{grpc}\"\nhttp_listen = \"{host}:{http}\"\npeers = [ {} ]\n{testing}",
                    dir.join(format!("node{id}")),
                    members.join(", "),
                    host = hosts[i],
                ),
            )?;
            nodes.push(Node {
                id,
                grpc: *grpc,
                http: *http,
                config,
                log: dir.join(format!("node{id}.log")),
                child: None,
                paused: false,
            });
        }
        let mut c = Cluster {
            bin: bin.to_path_buf(),
            nodes,
            power_loss: opts.power_loss,
            hosts,
            blocked: HashSet::new(),
            net,
        };
        for i in 0..n {
            c.start_node(i)?;
        }
        Ok(c)
    }

    /// Starts node `i` if it is not running.
    pub fn start_node(&mut self, i: usize) -> std::io::Result<()> {
        let node = &mut self.nodes[i];
        if node.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = match &self.net {
            Net::Proxy { .. } => Command::new(&self.bin),
            Net::Netns(ns) => {
                // `ip netns exec` enters the namespace and execs the binary (same pid).
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.namespace(i)]).arg(&self.bin);
                c
            }
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&node.config)
            .env(
                "RUNNEL_LOG",
                std::env::var("RUNNEL_JEPSEN_NODE_LOG")
                    .unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
        // which is async-signal-safe; it allocates nothing and touches no shared state.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        node.child = Some(cmd.spawn()?);
        Ok(())
    }

    /// SIGKILLs node `i` (resuming it first if paused, so the kill is immediate). With
    /// [`ClusterOptions::power_loss`] this is a power cut: its unsynced writes are gone.
    pub fn kill(&mut self, i: usize) {
        self.resume(i);
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, i: usize, sig: libc::c_int) -> bool {
        let Some(c) = &self.nodes[i].child else {
            return false;
        };
        let Ok(pid) = libc::pid_t::try_from(c.id()) else {
            return false;
        };
        // SAFETY: kill(2) on the pid of a child we have not reaped (it cannot be reused).
        unsafe { libc::kill(pid, sig) == 0 }
    }

    /// SIGSTOPs node `i`.
    pub fn pause(&mut self, i: usize) {
        if !self.nodes[i].paused && self.signal(i, libc::SIGSTOP) {
            self.nodes[i].paused = true;
        }
    }

    /// SIGCONTs node `i` if paused.
    pub fn resume(&mut self, i: usize) {
        if self.nodes[i].paused {
            self.signal(i, libc::SIGCONT);
            self.nodes[i].paused = false;
        }
    }

    /// Whether node `i` runs.
    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Whether node `i` is paused.
    pub fn paused(&self, i: usize) -> bool {
        self.nodes[i].paused
    }

    /// The party index of the clients in [`Cluster::block`].
    pub fn clients_party(&self) -> usize {
        self.nodes.len()
    }

    /// Blocks exactly these directions (from, to) between parties (node indexes, and
    /// [`Cluster::clients_party`] for the clients); everything else passes. Links whose state
    /// changes drop their open connections.
    pub fn block(&mut self, blocked: HashSet<(usize, usize)>) {
        let n = self.nodes.len();
        match &self.net {
            Net::Proxy { peers, clients } => {
                for (i, row) in peers.iter().enumerate() {
                    for (j, p) in row.iter().enumerate() {
                        if let Some(p) = p {
                            // i's connections to j: forward bytes go i -> j, replies j -> i.
                            p.link
                                .set_pass(!blocked.contains(&(i, j)), !blocked.contains(&(j, i)));
                        }
                    }
                }
                for (j, p) in clients.iter().enumerate() {
                    p.link
                        .set_pass(!blocked.contains(&(n, j)), !blocked.contains(&(j, n)));
                }
            }
            Net::Netns(ns) => {
                if let Err(e) = ns.block(&blocked) {
                    eprintln!("warning: installing the partition rules: {e}");
                }
            }
        }
        self.blocked = blocked;
    }

    /// Whether delays can be injected (proxy mode only).
    pub fn can_delay(&self) -> bool {
        matches!(self.net, Net::Proxy { .. })
    }

    /// Every link passes again.
    pub fn heal(&mut self) {
        self.block(HashSet::new());
    }

    /// Whether some direction is blocked.
    pub fn partitioned(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// Delays every chunk on every node-to-node link by `delay` plus up to `jitter`.
    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        if let Net::Proxy { peers, .. } = &self.net {
            for p in peers.iter().flatten().flatten() {
                p.link.set_delay(delay, jitter);
            }
        }
    }

    /// Sets node `i`'s clock offset (ms) through its test hook.
    pub async fn set_clock(&self, i: usize, offset_ms: i64) -> Result<(), String> {
        let addr = SocketAddr::new(self.hosts[i], self.nodes[i].http);
        let call = async {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = hyper::Request::post("/testing/clock")
                .header(hyper::header::HOST, addr.to_string())
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    offset_ms.to_string(),
                )))
                .map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(format!("clock hook answered {}", resp.status()))
            }
        };
        tokio::time::timeout(Duration::from_secs(3), call)
            .await
            .map_err(|_| "clock hook timed out".to_string())?
    }

    /// The gRPC endpoint of node `i` as workload clients reach it (through its client proxy).
    pub fn endpoint(&self, i: usize) -> String {
        match &self.net {
            Net::Proxy { clients, .. } => format!("http://{}", clients[i].listen),
            Net::Netns(_) => self.admin_endpoint(i),
        }
    }

    /// The direct gRPC endpoint of node `i` (admin calls, digests; in netns mode the same
    /// address as the workload's, so a clients-to-node block affects it too).
    pub fn admin_endpoint(&self, i: usize) -> String {
        format!(
            "http://{}",
            SocketAddr::new(self.hosts[i], self.nodes[i].grpc)
        )
    }

    /// A direct (unproxied) client of node `i`.
    pub fn client(&self, i: usize) -> Option<Client> {
        Client::connect_lazy(&self.admin_endpoint(i)).ok()
    }

    /// Waits (bounded) until every running node answers and knows a metadata leader.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        for i in 0..self.nodes.len() {
            if !self.running(i) {
                continue;
            }
            loop {
                if let Some(c) = self.client(i) {
                    let status =
                        tokio::time::timeout(Duration::from_secs(2), c.cluster_status()).await;
                    if let Ok(Ok(s)) = status {
                        if s.groups.first().is_some_and(|g| g.leader_node != 0) {
                            break;
                        }
                    }
                }
                if tokio::time::Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        true
    }

    /// The node index leading `group` as some running, unpaused node reports it.
    pub async fn leader_of(&self, group: u64) -> Option<usize> {
        for i in 0..self.nodes.len() {
            if !self.running(i) || self.nodes[i].paused {
                continue;
            }
            let c = self.client(i)?;
            let status = tokio::time::timeout(Duration::from_secs(2), c.cluster_status()).await;
            if let Ok(Ok(s)) = status {
                if let Some(g) = s.groups.iter().find(|g| g.group_id == group) {
                    if g.leader_node != 0 {
                        return self.nodes.iter().position(|n| n.id == g.leader_node);
                    }
                }
            }
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        // The proxies close, or the namespaces and bridge are deleted, when `net` drops.
    }
}
