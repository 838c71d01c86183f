//! The `runnel` binary: `runnel serve` runs a node; the other subcommands are clients of the
//! `runnel.v1` gRPC API (any node's endpoint).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use clap::{Parser, Subcommand, ValueEnum};
use runnel_client::{v1 as pb, Client, Start};
use runnel_server::config::{parse_peers, NodeConfig};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "runnel",
    version,
    about = "Runnel: a Kinesis-compatible, Raft-replicated stream store"
)]
struct Cli {
    /// gRPC endpoint of any node (client commands).
    #[arg(
        long,
        global = true,
        env = "RUNNEL_ENDPOINT",
        default_value = "http://127.0.0.1:4600"
    )]
    endpoint: String,
    /// Output format of client commands (json: one object per line).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node (no arguments: a single-node cluster in ./runnel-data on 127.0.0.1:4600/4567).
    Serve(ServeArgs),
    /// Manage streams.
    #[command(subcommand)]
    Stream(StreamCmd),
    /// Write records (one per stdin line without --data).
    Put {
        /// Stream name.
        stream: String,
        /// Partition key.
        #[arg(long)]
        partition_key: String,
        /// Record data; without it every stdin line becomes a record.
        #[arg(long)]
        data: Option<String>,
    },
    /// Read records from one shard.
    Get {
        /// Stream name.
        stream: String,
        /// Shard id (shardId-000000000000) or index.
        #[arg(long)]
        shard: String,
        /// trim-horizon | latest | at:SEQ | after:SEQ | timestamp:MILLIS
        #[arg(long, default_value = "trim-horizon")]
        from: Start,
        /// Most records to print.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Follow every shard of a stream from now on (Ctrl-C stops).
    Tail {
        /// Stream name.
        stream: String,
        /// Where to start on each shard.
        #[arg(long, default_value = "latest")]
        from: Start,
    },
    /// Cluster state.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Write a self-signed development certificate and key (cert.pem, key.pem) for HTTPS.
    Cert {
        /// Output directory.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Host names and IP addresses the certificate is valid for.
        #[arg(long = "host", default_values_t = vec!["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Node id (overrides file and environment).
    #[arg(long)]
    node_id: Option<u64>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long)]
    grpc_listen: Option<std::net::SocketAddr>,
    /// HTTP listen address.
    #[arg(long)]
    http_listen: Option<std::net::SocketAddr>,
    /// Initial cluster: id=host:port,id=host:port,...
    #[arg(long)]
    peers: Option<String>,
    /// HTTPS certificate (PEM) for the HTTP port; needs --tls-key.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// HTTPS private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Threads of the async runtime (0 = one per CPU).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Log filter (tracing env-filter syntax).
    #[arg(long, env = "RUNNEL_LOG", default_value = "info,openraft=warn")]
    log: String,
}

#[derive(Subcommand)]
enum StreamCmd {
    /// Create a stream.
    Create {
        /// Name.
        name: String,
        /// Shard count.
        #[arg(long)]
        shards: u32,
        /// Retention in hours (24..8760).
        #[arg(long)]
        retention_hours: Option<u32>,
        /// Do not wait for ACTIVE.
        #[arg(long)]
        no_wait: bool,
    },
    /// List streams.
    List,
    /// Describe a stream and its shards.
    Describe {
        /// Name.
        name: String,
    },
    /// Delete a stream.
    Delete {
        /// Name.
        name: String,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Nodes, groups, leaders, applied indexes.
    Status,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` reads its configuration before the runtime exists: the configuration says how
    // many threads the runtime gets.
    let mut threads = 0;
    let prepared = match &cli.command {
        Cmd::Serve(args) => match serve_config(args) {
            Ok(config) => {
                threads = config.worker_threads;
                Some(config)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match prepared {
        Some(config) => runtime.block_on(serve(config)),
        None => runtime.block_on(run(cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let output = cli.output;
    match cli.command {
        // main() runs `serve` itself (it needs the configuration before the runtime).
        Cmd::Serve(args) => serve(serve_config(&args)?).await,
        Cmd::Cert { out, hosts } => {
            let (cert, key) = runnel_server::tls::generate_dev_cert(&hosts)?;
            std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            let write = |name: &str, text: &str| {
                let path = out.join(name);
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
            };
            write("cert.pem", &cert)?;
            write("key.pem", &key)?;
            println!(
                "wrote {} and {} (self-signed, for {}; development only)",
                out.join("cert.pem").display(),
                out.join("key.pem").display(),
                hosts.join(", ")
            );
            Ok(())
        }
        Cmd::Stream(cmd) => {
            let client = Client::connect_lazy(&cli.endpoint).map_err(|e| e.to_string())?;
            stream_cmd(&client, cmd, output).await
        }
        Cmd::Put {
            stream,
            partition_key,
            data,
        } => {
            let client = Client::connect_lazy(&cli.endpoint).map_err(|e| e.to_string())?;
            let lines: Box<dyn Iterator<Item = std::io::Result<String>>> = match data {
                Some(d) => Box::new(std::iter::once(Ok(d))),
                None => Box::new(std::io::stdin().lock().lines()),
            };
            for line in lines {
                let line = line.map_err(|e| format!("reading stdin: {e}"))?;
                let (shard, seq) = client
                    .put_record(&stream, &partition_key, line.into_bytes())
                    .await
                    .map_err(fmt_err)?;
                match output {
                    Output::Text => println!("{shard} {seq}"),
                    Output::Json => {
                        println!("{}", json!({"shard_id": shard, "sequence_number": seq}))
                    }
                }
            }
            Ok(())
        }
        Cmd::Get {
            stream,
            shard,
            from,
            limit,
        } => {
            let client = Client::connect_lazy(&cli.endpoint).map_err(|e| e.to_string())?;
            let shard = normalize_shard(&shard)?;
            let mut it = client
                .shard_iterator(&stream, &shard, &from)
                .await
                .map_err(fmt_err)?;
            let mut left = limit;
            while left > 0 {
                let r = client
                    .get_records(&it, left.min(10_000))
                    .await
                    .map_err(fmt_err)?;
                let n = r.records.len() as u32;
                for rec in &r.records {
                    print_record(output, &shard, rec);
                }
                left = left.saturating_sub(n);
                if r.next_shard_iterator.is_empty() || n == 0 {
                    break;
                }
                it = r.next_shard_iterator;
            }
            Ok(())
        }
        Cmd::Tail { stream, from } => {
            let client = Client::connect_lazy(&cli.endpoint).map_err(|e| e.to_string())?;
            tail(&client, &stream, from, output).await
        }
        Cmd::Cluster(ClusterCmd::Status) => {
            let client = Client::connect_lazy(&cli.endpoint).map_err(|e| e.to_string())?;
            let s = client.cluster_status().await.map_err(fmt_err)?;
            print_status(output, &s);
            Ok(())
        }
    }
}

fn fmt_err(e: runnel_types::Error) -> String {
    format!("{}: {}", e.kinesis_name(), e.message())
}

fn normalize_shard(s: &str) -> Result<String, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(runnel_types::ShardId(n).to_string());
    }
    runnel_types::ShardId::parse(s)
        .map(|id| id.to_string())
        .map_err(|e| e.message().to_string())
}

fn print_record(output: Output, shard: &str, rec: &pb::Record) {
    let text = String::from_utf8(rec.data.to_vec());
    match output {
        Output::Text => {
            let data = text.unwrap_or_else(|_| {
                format!(
                    "base64:{}",
                    base64::engine::general_purpose::STANDARD.encode(&rec.data)
                )
            });
            println!(
                "{shard} {} {} {} {}",
                rec.sequence_number, rec.partition_key, rec.approximate_arrival_timestamp_ms, data
            );
        }
        Output::Json => println!(
            "{}",
            json!({
                "shard_id": shard,
                "sequence_number": rec.sequence_number,
                "partition_key": rec.partition_key,
                "data": text.ok(),
                "data_base64": base64::engine::general_purpose::STANDARD.encode(&rec.data),
                "approximate_arrival_timestamp_ms": rec.approximate_arrival_timestamp_ms,
            })
        ),
    }
}

fn status_name(s: i32) -> &'static str {
    pb::StreamStatus::try_from(s)
        .map(|x| x.as_str_name())
        .unwrap_or("UNKNOWN")
}

async fn stream_cmd(client: &Client, cmd: StreamCmd, output: Output) -> Result<(), String> {
    match cmd {
        StreamCmd::Create {
            name,
            shards,
            retention_hours,
            no_wait,
        } => {
            client
                .create_stream(&name, shards, retention_hours.unwrap_or(0))
                .await
                .map_err(fmt_err)?;
            let status = if no_wait {
                "CREATING".to_string()
            } else {
                let s = client
                    .wait_active(&name, Duration::from_secs(60))
                    .await
                    .map_err(fmt_err)?;
                status_name(s.status).to_string()
            };
            match output {
                Output::Text => println!("{name} {status}"),
                Output::Json => println!("{}", json!({"stream": name, "status": status})),
            }
            Ok(())
        }
        StreamCmd::List => {
            for s in client.list_streams().await.map_err(fmt_err)? {
                match output {
                    Output::Text => println!(
                        "{} {} shards={}",
                        s.name,
                        status_name(s.status),
                        s.open_shard_count
                    ),
                    Output::Json => println!(
                        "{}",
                        json!({"stream": s.name, "arn": s.arn, "status": status_name(s.status), "open_shards": s.open_shard_count})
                    ),
                }
            }
            Ok(())
        }
        StreamCmd::Describe { name } => {
            let s = client
                .describe_stream_summary(&name)
                .await
                .map_err(fmt_err)?;
            let shards = client.list_shards(&name).await.map_err(fmt_err)?;
            match output {
                Output::Text => {
                    println!(
                        "{} {} arn={} retention={}h max_record={}KiB",
                        s.name,
                        status_name(s.status),
                        s.arn,
                        s.retention_hours,
                        s.max_record_size_kib
                    );
                    for sh in &shards {
                        println!(
                            "  {} hash=[{}, {}] start_seq={}{}",
                            sh.shard_id,
                            sh.starting_hash_key,
                            sh.ending_hash_key,
                            sh.starting_sequence_number,
                            if sh.ending_sequence_number.is_empty() {
                                String::new()
                            } else {
                                format!(" end_seq={}", sh.ending_sequence_number)
                            }
                        );
                    }
                }
                Output::Json => println!(
                    "{}",
                    json!({
                        "stream": s.name, "arn": s.arn, "status": status_name(s.status),
                        "retention_hours": s.retention_hours, "max_record_size_kib": s.max_record_size_kib,
                        "creation_ms": s.creation_ms,
                        "shards": shards.iter().map(|sh| json!({
                            "shard_id": sh.shard_id, "starting_hash_key": sh.starting_hash_key,
                            "ending_hash_key": sh.ending_hash_key,
                            "starting_sequence_number": sh.starting_sequence_number,
                            "ending_sequence_number": sh.ending_sequence_number,
                            "parent_shard_id": sh.parent_shard_id,
                        })).collect::<Vec<_>>(),
                    })
                ),
            }
            Ok(())
        }
        StreamCmd::Delete { name } => {
            client.delete_stream(&name).await.map_err(fmt_err)?;
            match output {
                Output::Text => println!("{name} deleted"),
                Output::Json => println!("{}", json!({"stream": name, "deleted": true})),
            }
            Ok(())
        }
    }
}

fn print_status(output: Output, s: &pb::ClusterStatusResponse) {
    match output {
        Output::Text => {
            println!("answered by node {}", s.node_id);
            for n in &s.nodes {
                println!("node {} {}", n.node_id, n.grpc_addr);
            }
            for g in &s.groups {
                let name = if g.stream.is_empty() {
                    "metadata".to_string()
                } else {
                    format!("{}/{}", g.stream, g.shard_id)
                };
                println!(
                    "group {} {} leader={} term={} replicas={:?} applied={} last_log={}",
                    g.group_id,
                    name,
                    g.leader_node,
                    g.term,
                    g.replica_nodes,
                    g.applied_index,
                    g.last_log_index
                );
            }
        }
        Output::Json => {
            for g in &s.groups {
                println!(
                    "{}",
                    json!({
                        "answered_by": s.node_id, "group": g.group_id, "stream": g.stream, "shard_id": g.shard_id,
                        "leader_node": g.leader_node, "term": g.term, "replica_nodes": g.replica_nodes,
                        "applied_index": g.applied_index, "last_log_index": g.last_log_index,
                    })
                );
            }
        }
    }
}

async fn tail(client: &Client, stream: &str, from: Start, output: Output) -> Result<(), String> {
    let shards = client.list_shards(stream).await.map_err(fmt_err)?;
    let mut tasks = Vec::new();
    for sh in shards {
        let client = client.clone();
        let stream = stream.to_string();
        let from = from.clone();
        tasks.push(tokio::spawn(async move {
            let it = client
                .shard_iterator(&stream, &sh.shard_id, &from)
                .await
                .map_err(fmt_err)?;
            let mut follower = runnel_client::ShardFollower::new(client, &stream, &sh.shard_id, it);
            let mut failures = 0u32;
            loop {
                match follower.next_page().await {
                    Ok(page) => {
                        failures = 0;
                        for rec in &page.records {
                            print_record(output, &sh.shard_id, rec);
                        }
                        if page.next_shard_iterator.is_empty() {
                            return Ok::<(), String>(());
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        if failures > 10 {
                            return Err(format!("{}: {}", sh.shard_id, fmt_err(e)));
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }));
    }
    tokio::select! {
        r = futures_first(tasks) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn futures_first(
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
) -> Result<(), String> {
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Logging and the node's configuration: file, then environment, then flags; validated.
fn serve_config(args: &ServeArgs) -> Result<NodeConfig, String> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(&args.log).map_err(|e| format!("--log: {e}"))?;
    // `try_init`: a second call (there is none today) keeps the first subscriber, not a panic.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            NodeConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => NodeConfig::default(),
    };
    config
        .apply_env(std::env::vars())
        .map_err(|e| e.to_string())?;
    if let Some(v) = args.node_id {
        config.node_id = v;
    }
    if let Some(v) = &args.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = args.grpc_listen {
        config.grpc_listen = v;
    }
    if let Some(v) = args.http_listen {
        config.http_listen = v;
    }
    if let Some(v) = &args.peers {
        config.peers = parse_peers(v)?;
    }
    if let Some(v) = &args.tls_cert {
        config.tls.cert = Some(v.clone());
    }
    if let Some(v) = &args.tls_key {
        config.tls.key = Some(v.clone());
    }
    if let Some(v) = args.worker_threads {
        config.worker_threads = v;
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

async fn serve(config: NodeConfig) -> Result<(), String> {
    let server = runnel_server::start(config)
        .await
        .map_err(|e| e.to_string())?;
    let scheme = if server.node().config.tls.cert.is_some() {
        "HTTPS"
    } else {
        "HTTP"
    };
    let auth = match server.node().config.kinesis_auth() {
        Ok(runnel_kinesis::Auth::Development) => "development mode: any key accepted",
        _ => "SigV4 required",
    };
    eprintln!(
        "runnel node {} serving gRPC on {} and {scheme} (Kinesis endpoint, {auth}) on {} (data in {})",
        server.node().config.node_id,
        server.grpc_addr(),
        server.http_addr(),
        server.node().config.data_dir.display()
    );
    wait_for_signal().await;
    eprintln!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
