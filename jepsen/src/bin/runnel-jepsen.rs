//! `runnel-jepsen run SCENARIO ...`: a fault-injection run against a fresh local cluster;
//! `runnel-jepsen check HISTORY`: checks a recorded history. Both print the verdict and exit 0
//! only when every safety invariant holds (1 on an anomaly, 2 on a harness error).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use runnel_jepsen::checker::{check, Report};
use runnel_jepsen::cluster::NetMode;
use runnel_jepsen::run::{run, Bug, Options, Scenario};

#[derive(Parser)]
#[command(
    name = "runnel-jepsen",
    about = "Fault injection and checking for Runnel"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario against a fresh cluster of the given binary.
    Run {
        /// none, kill, leader-kill, kill-majority, kill-all, pause, partition,
        /// partition-one, partition-majority, partition-bridge, partition-one-way,
        /// partition-client-leader, delay, clock, power-loss or everything
        scenario: Scenario,
        /// Cluster size.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Seconds of faults and load.
        #[arg(long, default_value_t = 30)]
        time_limit: u64,
        /// Concurrent producers.
        #[arg(long, default_value_t = 6)]
        producers: usize,
        /// Shards of the stream.
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// The runnel binary.
        #[arg(long)]
        bin: PathBuf,
        /// Run directory (history.jsonl, verdict.json, node logs and data).
        #[arg(long)]
        dir: PathBuf,
        /// Switch on a deliberate server bug: drop-applied-records (expect divergence),
        /// reuse-sequence-numbers (inconsistent-offsets), ack-before-fsync (lost-write),
        /// restore-leader (stale-read, rarely).
        #[arg(long)]
        bug: Option<Bug>,
        /// Network mode: proxy (127.0.0.1 and TCP proxies; no root; has delays) or netns (a
        /// network namespace per node and nftables rules; root, iproute2 and nftables).
        #[arg(long, default_value = "proxy")]
        net: NetMode,
        /// Producers write in bursts (2 s of every 6 s) and idle shard groups quiesce after
        /// 1 s, so faults also hit quiet groups.
        #[arg(long)]
        bursts: bool,
        /// Every shard replica builds a snapshot each N log entries and purges its log below it
        /// (keeping 10), so faults also hit snapshots, purges and snapshot installs. 0: the
        /// server's default (20,000, which a run rarely reaches).
        #[arg(long, default_value_t = 0)]
        snapshot_logs: u64,
    },
    /// Check a JSON-lines history.
    Check {
        /// History file.
        history: PathBuf,
    },
}

fn summary(r: &Report) {
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "valid": r.valid,
            "complete": r.complete,
            "anomalies": r.anomaly_counts,
            "stats": r.stats,
            "longest_unavailability_ms": r.windows.iter().map(|w| w.longest_gap_ms).max(),
            "faults": r.windows.len(),
        }))
        .unwrap_or_default()
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let report = match cli.command {
        Cmd::Check { history } => {
            let text = match std::fs::read_to_string(&history) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", history.display());
                    return ExitCode::from(2);
                }
            };
            match runnel_jepsen::history::parse(&text) {
                Ok(events) => check(&events),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        Cmd::Run {
            scenario,
            nodes,
            time_limit,
            producers,
            shards,
            bin,
            dir,
            bug,
            net,
            bursts,
            snapshot_logs,
        } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = Options {
                scenario,
                nodes,
                time_limit: Duration::from_secs(time_limit),
                producers,
                shards,
                bin,
                dir,
                bug,
                net,
                bursts,
                snapshot_logs,
            };
            // Ctrl-C or SIGTERM abandons the run; dropping the runtime drops every task and so
            // the cluster, which stops every node and proxy.
            let outcome = runtime.block_on(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .map_err(|e| e.to_string())?;
                tokio::select! {
                    r = run(opts) => r,
                    _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
                    _ = term.recv() => Err("terminated".to_string()),
                }
            });
            drop(runtime);
            match outcome {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    summary(&report);
    if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
