//! The harness-owned TCP proxies that carry every node-to-node and client-to-node connection
//! (network mode without root: everything on 127.0.0.1). A [`Link`] is one proxy from a source
//! (a node or the clients) to one destination node; its controls make partitions (one-way or
//! both ways) and delays without any kernel support (`tc netem` does not exist on these
//! machines).
//!
//! Invariants:
//! * bytes of one direction of one connection are delivered in order, never duplicated or
//!   altered; a blocked direction discards them (like dropped packets);
//! * a connection that lost bytes never carries bytes again: every change of what a link
//!   blocks closes all its open connections (so TCP/HTTP/2 peers see a reset and reconnect
//!   instead of a corrupted stream);
//! * every task belongs to its [`Proxy`]; dropping the proxy stops the listener and closes every
//!   connection.
//!
//! Limits: when one side closes its direction, the whole connection is closed (no half-close;
//! gRPC over HTTP/2 never half-closes); a delayed direction buffers without bound (faults are
//! short).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The controls of one proxied link (source → destination).
#[derive(Debug)]
pub struct Link {
    /// Bytes from the source to the destination pass.
    forward: AtomicBool,
    /// Bytes from the destination back to the source pass.
    backward: AtomicBool,
    /// Delay added to every chunk, ms.
    delay_ms: AtomicU64,
    /// Extra random delay, up to this many ms.
    jitter_ms: AtomicU64,
    /// Bumped to close every open connection.
    generation: watch::Sender<u64>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            forward: AtomicBool::new(true),
            backward: AtomicBool::new(true),
            delay_ms: AtomicU64::new(0),
            jitter_ms: AtomicU64::new(0),
            generation: watch::channel(0).0,
        }
    }
}

impl Link {
    /// Sets which directions pass; a change closes the open connections.
    pub fn set_pass(&self, forward: bool, backward: bool) {
        let f = self.forward.swap(forward, Ordering::SeqCst);
        let b = self.backward.swap(backward, Ordering::SeqCst);
        if f != forward || b != backward {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// Whether both directions pass.
    pub fn healthy(&self) -> bool {
        self.forward.load(Ordering::SeqCst) && self.backward.load(Ordering::SeqCst)
    }

    /// Sets the delay of every chunk (both directions): `delay` plus up to `jitter` at random.
    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.jitter_ms
            .store(jitter.as_millis() as u64, Ordering::SeqCst);
    }

    fn delay(&self) -> Duration {
        let d = self.delay_ms.load(Ordering::Relaxed);
        let j = self.jitter_ms.load(Ordering::Relaxed);
        let extra = if j > 0 {
            rand::rng().random_range(0..=j)
        } else {
            0
        };
        Duration::from_millis(d + extra)
    }
}

/// A listening proxy for one link.
pub struct Proxy {
    /// Where the source connects.
    pub listen: SocketAddr,
    /// The link's controls.
    pub link: Arc<Link>,
    accept: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let link = Arc::new(Link::default());
        let (stop, stop_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, target, link.clone(), stop_rx));
        Ok(Proxy {
            listen,
            link,
            accept,
            stop,
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    link: Arc<Link>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((inbound, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let link = link.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            // A refused or timed-out connect closes the inbound side: the source sees the
            // destination as down.
            let outbound = match tokio::time::timeout(
                Duration::from_secs(2),
                TcpStream::connect(target),
            )
            .await
            {
                Ok(Ok(s)) => s,
                _ => return,
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            connection(inbound, outbound, link, stop).await;
        });
    }
}

/// Carries one connection until either side closes, the link changes or the proxy stops.
async fn connection(
    inbound: TcpStream,
    outbound: TcpStream,
    link: Arc<Link>,
    mut stop: watch::Receiver<bool>,
) {
    let mut generation = link.generation.subscribe();
    generation.borrow_and_update();
    let (in_r, in_w) = inbound.into_split();
    let (out_r, out_w) = outbound.into_split();
    let fwd = pump(in_r, out_w, link.clone(), true);
    let bwd = pump(out_r, in_w, link.clone(), false);
    tokio::select! {
        _ = fwd => {}
        _ = bwd => {}
        _ = generation.changed() => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    // Dropping both halves closes both sockets.
}

/// Copies one direction: a reader stamps each chunk with its due time, a writer delivers the
/// chunks in order once due. A blocked direction discards what it reads.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Link>,
    forward: bool,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = {
        let link = link.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let pass = if forward {
                    link.forward.load(Ordering::SeqCst)
                } else {
                    link.backward.load(Ordering::SeqCst)
                };
                if !pass {
                    continue;
                }
                let due = tokio::time::Instant::now() + link.delay();
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // The reader ends at EOF (dropping the sender); the writer then delivers what is queued and
    // ends. Both live in this future, so dropping it closes both halves.
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, h)
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut got))
            .await
            .ok()?
            .ok()?;
        Some(got)
    }

    #[tokio::test]
    async fn passes_blocks_resets_and_delays() {
        let (target, server) = echo_server().await;
        let proxy = Proxy::start(target).await.unwrap();
        let mut c = TcpStream::connect(proxy.listen).await.unwrap();
        assert_eq!(
            roundtrip(&mut c, b"hello").await.as_deref(),
            Some(&b"hello"[..])
        );

        // Cutting a direction closes the open connection...
        proxy.link.set_pass(false, true);
        let mut buf = [0u8; 8];
        let closed = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        // ...and a new one loses what the source sends.
        let mut c = TcpStream::connect(proxy.listen).await.unwrap();
        assert_eq!(roundtrip(&mut c, b"lost").await, None);

        // Healing closes the connection that lost bytes; a new one works again.
        proxy.link.set_pass(true, true);
        let closed = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut c = TcpStream::connect(proxy.listen).await.unwrap();
        assert_eq!(
            roundtrip(&mut c, b"again").await.as_deref(),
            Some(&b"again"[..])
        );

        // A delay holds each chunk (both directions) but keeps the bytes and their order.
        proxy
            .link
            .set_delay(Duration::from_millis(150), Duration::ZERO);
        let started = tokio::time::Instant::now();
        c.write_all(b"slow1").await.unwrap();
        c.write_all(b"slow2").await.unwrap();
        let mut got = vec![0u8; 10];
        tokio::time::timeout(Duration::from_secs(3), c.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"slow1slow2");
        assert!(started.elapsed() >= Duration::from_millis(300));
        drop(proxy);
        server.abort();
    }
}
