//! `runnel-jepsen run SCENARIO ...`: a fault-injection run against a fresh local cluster;
//! `runnel-jepsen check HISTORY`: checks a recorded history. Both print the verdict and exit 0
//! only when every safety invariant holds (1 on an anomaly, 2 on a harness error).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use runnel_jepsen::checker::{check, Report};
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
        /// none | kill | leader-kill | pause
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
        /// Switch on a deliberate server bug: drop-applied-records.
        #[arg(long)]
        bug: Option<Bug>,
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
            "anomalies": r.anomaly_counts,
            "stats": r.stats,
            "longest_unavailability_ms": r.windows.iter().filter_map(|w| w.first_ok_after_ms).max(),
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
            };
            match runtime.block_on(run(opts)) {
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
