//! The root network mode: every node in its own network namespace with its own address, joined
//! by veth pairs to a bridge in the harness's namespace (which is where clients connect from),
//! and partitions made by nftables drop rules inside the namespaces. Needs root, `ip`
//! (iproute2) and `nft` (nftables). There is no `tc netem` in these kernels, so this mode has no
//! delay fault (the proxy mode has one).
//!
//! Names are derived from the harness's pid (`rj<pid>-<i>` namespaces, bridge `brj<pid>`, veth
//! `vrj<pid>-<i>`). The subnet `10.231.<k>.0/24` is claimed by creating the file
//! `/tmp/runnel-jepsen-subnet-<k>` exclusively (holding the pid), starting at `k = pid mod 250`
//! and moving on while a live run holds a claim, so concurrent runs never share a subnet; claims
//! of dead runs are taken over. At creation, leftovers of runs whose harness process is gone are
//! deleted. A host with `br_netfilter`
//! loaded and a FORWARD policy of DROP (Docker sets one) drops the bridged traffic.
//!
//! Invariants: only namespaces, links and addresses created here are touched; [`Netns`]
//! deletes all of them when dropped (the node processes must be stopped first: a namespace
//! with processes in it lingers until they exit); a block is enforced where packets enter
//! their destination (input hook), or leave a node for the clients (output hook), so each
//! direction is one rule and the other direction is untouched.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The namespaces, bridge and addresses of one run.
pub struct Netns {
    tag: String,
    subnet: u8,
    n: usize,
}

/// Subnets `10.231.<k>.0/24` a run may claim.
const SUBNETS: u32 = 250;

fn claim_path(k: u32) -> String {
    format!("/tmp/runnel-jepsen-subnet-{k}")
}

/// Claims a free subnet for this process: the first `k` from `pid mod 250` on whose claim file
/// this process creates, or takes over from a process that no longer exists.
fn claim_subnet(pid: u32) -> std::io::Result<u8> {
    use std::io::Write as _;
    // One claimer at a time, so a dead run's claim is taken over by exactly one run (the lock
    // is released when `lock` is dropped, or by the kernel if this process dies).
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/runnel-jepsen-subnets.lock")?;
    lock.lock()?;
    for step in 0..SUBNETS {
        let k = (pid + step) % SUBNETS;
        let path = claim_path(k);
        // Two attempts: the second after removing a dead run's claim.
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(pid.to_string().as_bytes())?;
                    return Ok(k as u8);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let alive = holder
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
                    if alive {
                        break;
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(std::io::Error::other(
        "no free 10.231.x.0/24 subnet: 250 fault-injection runs hold one",
    ))
}

fn run(args: &[&str], stdin: Option<&str>) -> std::io::Result<()> {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e} (netns mode needs iproute2 and nftables)", args[0]),
        )
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Deletes the namespaces and bridges of earlier runs whose harness process no longer exists.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut dead = HashSet::new();
    for name in text.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix("rj") else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name], None);
            dead.insert(pid.to_string());
        }
    }
    for pid in dead {
        let _ = run(&["ip", "link", "del", &format!("brj{pid}")], None);
    }
}

impl Netns {
    /// Creates `n` namespaces with their veth links and the bridge.
    pub fn create(n: usize) -> std::io::Result<Netns> {
        remove_stale();
        let pid = std::process::id();
        let ns = Netns {
            tag: format!("rj{pid}"),
            subnet: claim_subnet(pid)?,
            n,
        };
        // Built step by step; on failure, Drop removes what exists.
        let bridge = ns.bridge();
        run(&["ip", "link", "add", &bridge, "type", "bridge"], None)?;
        run(
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", ns.clients_addr()),
                "dev",
                &bridge,
            ],
            None,
        )?;
        run(&["ip", "link", "set", &bridge, "up"], None)?;
        for i in 0..n {
            let name = ns.namespace(i);
            let veth = format!("v{}-{i}", ns.tag);
            run(&["ip", "netns", "add", &name], None)?;
            run(
                &[
                    "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                    &name,
                ],
                None,
            )?;
            run(&["ip", "link", "set", &veth, "master", &bridge, "up"], None)?;
            run(
                &[
                    "ip",
                    "-n",
                    &name,
                    "addr",
                    "add",
                    &format!("{}/24", ns.addr(i)),
                    "dev",
                    "eth0",
                ],
                None,
            )?;
            run(&["ip", "-n", &name, "link", "set", "eth0", "up"], None)?;
            run(&["ip", "-n", &name, "link", "set", "lo", "up"], None)?;
        }
        ns.block(&HashSet::new())?;
        Ok(ns)
    }

    fn bridge(&self) -> String {
        format!("b{}", self.tag)
    }

    /// Namespace of node `i`.
    pub fn namespace(&self, i: usize) -> String {
        format!("{}-{i}", self.tag)
    }

    /// Address of node `i`.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, i as u8 + 1)
    }

    /// The harness's (clients') address on the bridge.
    pub fn clients_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 254)
    }

    /// Installs exactly these blocked directions (from, to) between parties (node indexes; `n`
    /// is the clients), replacing the previous rules in every namespace.
    pub fn block(&self, blocked: &HashSet<(usize, usize)>) -> std::io::Result<()> {
        let party = |p: usize| {
            if p == self.n {
                self.clients_addr()
            } else {
                self.addr(p)
            }
        };
        for j in 0..self.n {
            let mut input = String::new();
            let mut output = String::new();
            for &(from, to) in blocked {
                if to == j && from != j {
                    input.push_str(&format!("    ip saddr {} drop\n", party(from)));
                }
                if from == j && to == self.n {
                    output.push_str(&format!("    ip daddr {} drop\n", party(to)));
                }
            }
            let script = format!(
                "table inet jepsen\ndelete table inet jepsen\ntable inet jepsen {{\n  chain input {{\n    type filter hook input priority 0;\n{input}  }}\n  chain output {{\n    type filter hook output priority 0;\n{output}  }}\n}}\n"
            );
            run(
                &["ip", "netns", "exec", &self.namespace(j), "nft", "-f", "-"],
                Some(&script),
            )?;
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for i in 0..self.n {
            let _ = run(&["ip", "netns", "del", &self.namespace(i)], None);
        }
        let _ = run(&["ip", "link", "del", &self.bridge()], None);
        let _ = std::fs::remove_file(claim_path(u32::from(self.subnet)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_claims_get_distinct_subnets_and_dead_claims_are_taken_over() {
        let me = std::process::id();
        let a = claim_subnet(me).unwrap();
        let b = claim_subnet(me).unwrap();
        assert_ne!(a, b, "a live claim (this process) is skipped");
        // A claim whose holder is gone is taken over.
        std::fs::write(claim_path(u32::from(b)), u32::MAX.to_string()).unwrap();
        let c = claim_subnet(u32::from(b)).unwrap();
        assert_eq!(c, b);
        for k in [a, c] {
            let _ = std::fs::remove_file(claim_path(u32::from(k)));
        }
    }
}
