//! Cluster control: N `runnel` node processes on loopback, each with its own data directory,
//! ports and log, started from a given binary. Faults act on processes: SIGKILL and restart,
//! SIGSTOP/SIGCONT.
//!
//! Invariant: everything started here is stopped when the [`Cluster`] is dropped (also on panic):
//! paused nodes are resumed first, then every node is killed and waited for.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use runnel_client::Client;

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

/// A cluster of node processes.
pub struct Cluster {
    /// Binary.
    pub bin: PathBuf,
    /// Nodes (index = id - 1).
    pub nodes: Vec<Node>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    /// Writes the configs of `n` nodes under `dir` (each config gets `extra` TOML appended, and
    /// the last node also `last_extra`) and starts them.
    pub fn start(
        bin: &Path,
        dir: &Path,
        n: usize,
        extra: &str,
        last_extra: &str,
    ) -> std::io::Result<Cluster> {
        let mut ports = Vec::new();
        for _ in 0..n {
            ports.push((free_port()?, free_port()?));
        }
        let peers: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (g, _))| format!("{{ id = {}, addr = \"127.0.0.1:{g}\" }}", i + 1))
            .collect();
        let mut nodes = Vec::new();
        for (i, (grpc, http)) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let config = dir.join(format!("node{id}.toml"));
            let extra = if i + 1 == n {
                format!("{extra}\n{last_extra}")
            } else {
                extra.to_string()
            };
            std::fs::write(
                &config,
                format!(
                    "node_id = {id}\ndata_dir = {:?}\ngrpc_listen = \"127.0.0.1:{grpc}\"\nhttp_listen = \"127.0.0.1:{http}\"\npeers = [ {} ]\n{extra}\n",
                    dir.join(format!("node{id}")),
                    peers.join(", ")
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
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(&node.config)
            .env("RUNNEL_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILLs node `i` (resuming it first if paused, so the kill is immediate).
    pub fn kill(&mut self, i: usize) {
        self.resume(i);
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, i: usize, sig: &str) -> bool {
        let Some(c) = &self.nodes[i].child else {
            return false;
        };
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(c.id().to_string())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGSTOPs node `i`.
    pub fn pause(&mut self, i: usize) {
        if !self.nodes[i].paused && self.signal(i, "STOP") {
            self.nodes[i].paused = true;
        }
    }

    /// SIGCONTs node `i` if paused.
    pub fn resume(&mut self, i: usize) {
        if self.nodes[i].paused {
            self.signal(i, "CONT");
            self.nodes[i].paused = false;
        }
    }

    /// Whether node `i` runs.
    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// The gRPC endpoint of node `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].grpc)
    }

    /// A client of node `i`.
    pub fn client(&self, i: usize) -> Option<Client> {
        Client::connect_lazy(&self.endpoint(i)).ok()
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
                    if let Ok(s) = c.cluster_status().await {
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

    /// The node index leading `group` as some running node reports it.
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
    }
}
