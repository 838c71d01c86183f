//! Test harness: real `runnel` node processes on loopback, each with its own data directory and
//! ports, stopped (SIGKILL) when the harness is dropped, so no test leaves processes or
//! directories behind. Set RUNNEL_TEST_KEEP=1 to keep the directory (node logs) for debugging.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runnel_client::Client;

/// `n` distinct free loopback ports, below the kernel's ephemeral range (32768 and up). A port
/// from `bind(0)` is in that range, and released it can be handed out again, to this process's
/// next probe or to any outgoing connection, before the node binds it: a node once got the same
/// port for gRPC and HTTP and could not start. Ports here come from a per-process counter (so
/// never twice in one test binary) started at a pid-derived offset, and are probed once.
pub fn free_ports(n: usize) -> Vec<u16> {
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
    let mut out = Vec::with_capacity(n);
    for _ in 0..SPAN {
        if out.len() == n {
            break;
        }
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
    }
    assert_eq!(out.len(), n, "no {n} free ports in 20000-31999");
    out
}

pub struct TestNode {
    pub id: u64,
    pub grpc: u16,
    pub http: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

pub struct TestCluster {
    pub dir: Option<tempfile::TempDir>,
    pub nodes: Vec<TestNode>,
}

impl TestCluster {
    /// Writes configs for `n` nodes and starts them.
    pub fn start(n: usize) -> TestCluster {
        Self::start_with(n, "")
    }

    /// Like [`TestCluster::start`] with extra TOML appended to every node's config.
    pub fn start_with(n: usize, extra: &str) -> TestCluster {
        Self::start_each(n, |_| extra.to_string())
    }

    /// Like [`TestCluster::start`] with `extra(i)` appended to node `i`'s config (index, not id).
    #[allow(dead_code)] // not every test binary uses it
    pub fn start_each(n: usize, extra: impl Fn(usize) -> String) -> TestCluster {
        let dir = tempfile::Builder::new()
            .prefix("runnel-test-")
            .tempdir()
            .expect("tempdir");
        let picked = free_ports(2 * n);
        let ports: Vec<(u16, u16)> = picked.chunks(2).map(|p| (p[0], p[1])).collect();
        let peers: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (g, _))| format!("{{ id = {}, addr = \"127.0.0.1:{g}\" }}", i + 1))
            .collect();
        let mut nodes = Vec::new();
        for (i, (grpc, http)) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let data = dir.path().join(format!("node{id}"));
            let config = dir.path().join(format!("node{id}.toml"));
            let extra = extra(i);
            let text = format!(
                "node_id = {id}\ndata_dir = {data:?}\ngrpc_listen = \"127.0.0.1:{grpc}\"\nhttp_listen = \"127.0.0.1:{http}\"\npeers = [ {} ]\n{extra}\n",
                peers.join(", ")
            );
            std::fs::write(&config, text).expect("write config");
            nodes.push(TestNode {
                id,
                grpc: *grpc,
                http: *http,
                config,
                log: dir.path().join(format!("node{id}.log")),
                child: None,
            });
        }
        let mut c = TestCluster {
            dir: Some(dir),
            nodes,
        };
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    /// Starts node `i` (index, not id) if it is not running.
    pub fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.child.is_some() {
            return;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open log");
        let child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .arg("serve")
            .arg("--config")
            .arg(&node.config)
            .env("RUNNEL_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn runnel");
        node.child = Some(child);
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].grpc)
    }

    pub fn client(&self, i: usize) -> Client {
        Client::connect_lazy(&self.endpoint(i)).expect("client")
    }

    /// Index of the node with this id.
    pub fn index_of(&self, id: u64) -> usize {
        self.nodes.iter().position(|n| n.id == id).expect("node id")
    }

    /// Waits until every running node answers and knows a metadata leader.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_none() {
                continue;
            }
            loop {
                if let Ok(s) = self.client(i).cluster_status().await {
                    if s.groups.first().is_some_and(|g| g.leader_node != 0) && !s.nodes.is_empty() {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    self.dump_logs();
                    panic!("node {} not ready after {timeout:?}", n.id);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Prints the tail of every node log (for failing tests).
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("---- node {} log (last 40 lines) ----", n.id);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
        if std::env::var_os("RUNNEL_TEST_KEEP").is_some() {
            if let Some(d) = self.dir.take() {
                eprintln!("keeping {}", d.keep().display());
            }
        }
    }
}
