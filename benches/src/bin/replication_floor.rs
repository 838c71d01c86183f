//! `replication-floor`: the least work a replicated, fsynced log must do on this machine, to
//! compare Runnel's latency with (BENCHMARKS.md, "Eleventh round").
//!
//! Three `node` processes form one replicated log with a fixed leader (no elections, no
//! sharding, no HTTP/2, no RocksDB): the leader takes records from clients on plain TCP
//! (`[u32 length][u64 id][data]`), gathers whatever has arrived into a batch, appends it to its
//! file and `fdatasync`s it while sending the same batch to both followers, which append and
//! `fdatasync` in turn and answer with the batch's number. A record is acknowledged
//! (`[u64 id]`) once the leader and one follower have synced its batch: the durability of
//! Runnel's acknowledgement, with batching and pipelining as deep as the load allows. `load`
//! drives it open-loop at a fixed rate (or closed-loop with `--rate 0`) with the same
//! connection count and window as `runnel-load` and reports ack latency from each send's
//! scheduled time.
//!
//! It is a yardstick, not a product: nothing is recovered after a crash, nothing is read back.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One replica. With `--followers` it leads and serves clients; without, it follows.
    Node {
        /// Address to listen on (clients for the leader, the leader for a follower).
        #[arg(long)]
        listen: String,
        /// The followers' addresses (leader only).
        #[arg(long, value_delimiter = ',')]
        followers: Vec<String>,
        /// The log file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Open-loop load against a leader.
    Load {
        #[arg(long)]
        leader: String,
        /// Records per second in total; 0 = closed loop (as fast as the window allows).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Records in flight per connection.
        #[arg(long, default_value_t = 64)]
        window: usize,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 15)]
        duration: u64,
        #[arg(long, default_value_t = 3)]
        warmup: u64,
    },
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    match Args::parse().cmd {
        Cmd::Node {
            listen,
            followers,
            file,
        } => {
            if followers.is_empty() {
                follower(&listen, file).await
            } else {
                leader(&listen, &followers, file).await
            }
        }
        Cmd::Load {
            leader,
            rate,
            connections,
            window,
            size,
            duration,
            warmup,
        } => {
            load(
                &leader,
                rate,
                connections,
                window,
                size,
                Duration::from_secs(duration),
                Duration::from_secs(warmup),
            )
            .await
        }
    }
}

/// A thread that appends batches to `file` and syncs them, as many per sync as are waiting,
/// and reports the highest batch number each sync made durable.
fn log_writer(
    file: PathBuf,
    mut batches: mpsc::UnboundedReceiver<(u64, Arc<Vec<u8>>)>,
    synced: mpsc::UnboundedSender<u64>,
) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    std::thread::spawn(move || {
        let mut waiting = Vec::new();
        while batches.blocking_recv_many(&mut waiting, 1024) > 0 {
            let mut last = 0;
            for (n, data) in waiting.drain(..) {
                if f.write_all(&data).is_err() {
                    return;
                }
                last = n;
            }
            if f.sync_data().is_err() || synced.send(last).is_err() {
                return;
            }
        }
    });
    Ok(())
}

async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let len = r.read_u32().await? as usize;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn follower(listen: &str, file: PathBuf) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (sock, _) = listener.accept().await?;
        sock.set_nodelay(true)?;
        let (rd, wr) = sock.into_split();
        let (to_log, batches) = mpsc::unbounded_channel();
        let (synced_tx, mut synced) = mpsc::unbounded_channel();
        log_writer(file.clone(), batches, synced_tx)?;
        tokio::spawn(async move {
            let mut wr = BufWriter::new(wr);
            while let Some(n) = synced.recv().await {
                if wr.write_u64(n).await.is_err() || wr.flush().await.is_err() {
                    return;
                }
            }
        });
        let mut rd = BufReader::new(rd);
        while let Ok(frame) = read_frame(&mut rd).await {
            if frame.len() < 8 {
                break;
            }
            let n = u64::from_be_bytes(frame[..8].try_into().unwrap_or_default());
            if to_log.send((n, Arc::new(frame))).is_err() {
                break;
            }
        }
    }
}

/// What the leader learns: a batch synced locally, or by a follower.
enum Durable {
    Local(u64),
    Follower(usize, u64),
}

async fn leader(listen: &str, followers: &[String], file: PathBuf) -> std::io::Result<()> {
    // Records from every client connection: (connection, record id, data).
    let (records_tx, mut records) = mpsc::unbounded_channel::<(usize, u64, Vec<u8>)>();
    let (durable_tx, mut durable) = mpsc::unbounded_channel::<Durable>();
    let (to_log, log_rx) = mpsc::unbounded_channel();
    let (local_tx, mut local_rx) = mpsc::unbounded_channel();
    log_writer(file, log_rx, local_tx)?;
    {
        let d = durable_tx.clone();
        tokio::spawn(async move {
            while let Some(n) = local_rx.recv().await {
                let _ = d.send(Durable::Local(n));
            }
        });
    }
    let mut to_followers = Vec::new();
    for (i, addr) in followers.iter().enumerate() {
        let sock = TcpStream::connect(addr).await?;
        sock.set_nodelay(true)?;
        let (rd, wr) = sock.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Arc<Vec<u8>>>();
        to_followers.push(tx);
        tokio::spawn(async move {
            let mut wr = BufWriter::new(wr);
            let mut waiting = Vec::new();
            while rx.recv_many(&mut waiting, 1024).await > 0 {
                for b in waiting.drain(..) {
                    let Ok(len) = u32::try_from(b.len()) else {
                        return;
                    };
                    if wr.write_u32(len).await.is_err() || wr.write_all(&b).await.is_err() {
                        return;
                    }
                }
                if wr.flush().await.is_err() {
                    return;
                }
            }
        });
        let d = durable_tx.clone();
        tokio::spawn(async move {
            let mut rd = BufReader::new(rd);
            while let Ok(n) = rd.read_u64().await {
                let _ = d.send(Durable::Follower(i, n));
            }
        });
    }
    // Acknowledgement writers, one per client connection.
    let acks: Arc<std::sync::Mutex<Vec<mpsc::UnboundedSender<Vec<u64>>>>> = Arc::default();
    let listener = TcpListener::bind(listen).await?;
    {
        let acks = acks.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                if sock.set_nodelay(true).is_err() {
                    continue;
                }
                let (rd, wr) = sock.into_split();
                let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u64>>();
                let conn = {
                    let Ok(mut a) = acks.lock() else { return };
                    a.push(tx);
                    a.len() - 1
                };
                tokio::spawn(async move {
                    let mut wr = BufWriter::new(wr);
                    while let Some(ids) = rx.recv().await {
                        for id in ids {
                            if wr.write_u64(id).await.is_err() {
                                return;
                            }
                        }
                        if wr.flush().await.is_err() {
                            return;
                        }
                    }
                });
                let records_tx = records_tx.clone();
                tokio::spawn(async move {
                    let mut rd = BufReader::new(rd);
                    while let Ok(frame) = read_frame(&mut rd).await {
                        if frame.len() < 8 {
                            return;
                        }
                        let id = u64::from_be_bytes(frame[..8].try_into().unwrap_or_default());
                        if records_tx.send((conn, id, frame)).is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }
    // The sequencer: batches what has arrived, numbers it, hands it to the log and the
    // followers, and acknowledges batches as a majority makes them durable.
    let mut next = 1u64;
    let mut unacked: VecDeque<(u64, Vec<(usize, u64)>)> = VecDeque::new();
    let (mut local, mut remote) = (0u64, vec![0u64; followers.len()]);
    let mut waiting = Vec::new();
    loop {
        tokio::select! {
            n = records.recv_many(&mut waiting, 4096) => {
                if n == 0 {
                    return Ok(());
                }
                let mut data = Vec::with_capacity(8 + waiting.iter().map(|r| r.2.len() + 4).sum::<usize>());
                data.extend_from_slice(&next.to_be_bytes());
                let mut ids = Vec::with_capacity(waiting.len());
                for (conn, id, rec) in waiting.drain(..) {
                    data.extend_from_slice(&(rec.len() as u32).to_be_bytes());
                    data.extend_from_slice(&rec);
                    ids.push((conn, id));
                }
                let data = Arc::new(data);
                let _ = to_log.send((next, data.clone()));
                for f in &to_followers {
                    let _ = f.send(data.clone());
                }
                unacked.push_back((next, ids));
                next += 1;
            }
            Some(d) = durable.recv() => {
                match d {
                    Durable::Local(n) => local = local.max(n),
                    Durable::Follower(i, n) => remote[i] = remote[i].max(n),
                }
                let committed = local.min(remote.iter().copied().max().unwrap_or(0));
                let senders = match acks.lock() {
                    Ok(a) => a.clone(),
                    Err(_) => return Ok(()),
                };
                let mut per_conn: Vec<Vec<u64>> = vec![Vec::new(); senders.len()];
                while unacked.front().is_some_and(|(n, _)| *n <= committed) {
                    if let Some((_, ids)) = unacked.pop_front() {
                        for (conn, id) in ids {
                            if let Some(v) = per_conn.get_mut(conn) {
                                v.push(id);
                            }
                        }
                    }
                }
                for (conn, ids) in per_conn.into_iter().enumerate() {
                    if !ids.is_empty() {
                        let _ = senders[conn].send(ids);
                    }
                }
            }
        }
    }
}

async fn load(
    leader: &str,
    rate: u64,
    connections: usize,
    window: usize,
    size: usize,
    duration: Duration,
    warmup: Duration,
) -> std::io::Result<()> {
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let sock = TcpStream::connect(leader).await?;
        sock.set_nodelay(true)?;
        let (rd, wr) = sock.into_split();
        // Scheduled send time of each record in flight, oldest first (acks come in order).
        let sent: Arc<std::sync::Mutex<VecDeque<(u64, tokio::time::Instant)>>> = Arc::default();
        let slots = Arc::new(Semaphore::new(window));
        let reader = {
            let sent = sent.clone();
            let slots = slots.clone();
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let mut rd = BufReader::new(rd);
                let mut count = 0u64;
                let stop = end + Duration::from_secs(2);
                while let Ok(Ok(id)) = tokio::time::timeout_at(stop, rd.read_u64()).await {
                    let now = tokio::time::Instant::now();
                    let at = {
                        let Ok(mut s) = sent.lock() else { break };
                        match s.pop_front() {
                            Some((sid, at)) if sid == id => at,
                            _ => return Err(std::io::Error::other("ack out of order")),
                        }
                    };
                    slots.add_permits(1);
                    if at >= measure_from && at < end {
                        let us = now.saturating_duration_since(at).as_micros() as u64;
                        let _ = hist.record(us.max(1));
                        count += 1;
                    }
                }
                Ok::<_, std::io::Error>((hist, count))
            })
        };
        let writer = tokio::spawn(async move {
            let mut wr = BufWriter::new(wr);
            let per_conn = rate as f64 / connections as f64;
            let payload = vec![b'x'; size];
            let mut id = 0u64;
            loop {
                let at = if rate == 0 {
                    tokio::time::Instant::now()
                } else {
                    let at = start + Duration::from_secs_f64(id as f64 / per_conn);
                    if at > tokio::time::Instant::now() {
                        // Send what is due before sleeping.
                        wr.flush().await?;
                        tokio::time::sleep_until(at).await;
                    }
                    at
                };
                if at >= end {
                    wr.flush().await?;
                    return Ok::<_, std::io::Error>(());
                }
                let permit = match slots.try_acquire() {
                    Ok(p) => p,
                    Err(_) => {
                        wr.flush().await?;
                        slots
                            .acquire()
                            .await
                            .map_err(|e| std::io::Error::other(e.to_string()))?
                    }
                };
                permit.forget();
                let at = if rate == 0 {
                    tokio::time::Instant::now()
                } else {
                    at
                };
                if let Ok(mut s) = sent.lock() {
                    s.push_back((id, at));
                }
                wr.write_u32((8 + size) as u32).await?;
                wr.write_u64(id).await?;
                wr.write_all(&payload).await?;
                id += 1;
            }
        });
        tasks.push((writer, reader));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut count = 0u64;
    for (w, r) in tasks {
        let _ = w.await;
        if let Ok(Ok((h, n))) = r.await {
            let _ = total.add(&h);
            count += n;
        }
    }
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{{\"records_per_sec\": {:.0}, \"ack_p50_ms\": {:.3}, \"ack_p99_ms\": {:.3}, \"ack_p999_ms\": {:.3}}}",
        count as f64 / duration.as_secs_f64(),
        ms(0.5),
        ms(0.99),
        ms(0.999)
    );
    Ok(())
}
