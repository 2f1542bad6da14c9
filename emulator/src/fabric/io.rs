//! The fabric's I/O thread: Geneve datagrams in, [`enifab_dataplane::Fabric::process_split`],
//! Geneve datagrams out.
//!
//! One OS thread owns the pipeline (and so its conntrack and counters) and the UDP socket. It
//! takes up to a batch of messages per `recvmmsg` (a message is one datagram, or a run of them
//! that a shim sent as one UDP GSO message and the kernel kept whole: see [`super::udp`]), runs
//! each datagram through the pure pipeline, and sends the batch with one `sendmmsg`, runs to one
//! shim coalesced again.
//!
//! A forwarded datagram is never copied here: the pipeline writes its new headers into the next
//! free send buffer, and the packet goes out from the receive buffer it arrived in, as the
//! datagram's second iovec (the gateway's replies are written whole). So everything queued is
//! sent before the next `recvmmsg` reuses those buffers: when the send batch fills up, and at
//! the end of each round. The send queue borrows the round's receive buffers, so the compiler
//! checks that.
//!
//! Nothing else touches the pipeline, so the hot path takes no lock: a new configuration arrives
//! as an `Arc` swapped in between batches (a `watch` channel, checked with one atomic load),
//! counters and backend health leave as snapshots on request. The socket's read timeout bounds
//! how late a swap or a request can be, and how late a health check starts.
//!
//! The load balancers' health checks run here too: when the checker has something due, its
//! probes are sent like any other datagram, and the backends' answers come back through the
//! pipeline with the rest of the traffic.

use std::hash::RandomState;
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use enifab_dataplane::fabric::SplitVerdict;
use enifab_dataplane::{BackendHealth, Fabric, FabricConfig, FabricOptions, Instant, StatsSnapshot};
use tokio::sync::{oneshot, watch};

use super::udp::{RecvBatch, SendBatch, enable_gro, set_buffers};

/// What other threads may ask of the I/O thread.
pub enum IoRequest {
    Stats(oneshot::Sender<StatsSnapshot>),
    Health(oneshot::Sender<Vec<BackendHealth>>),
}

const POLL: Duration = Duration::from_millis(20);
/// Socket buffers, each way: bursts from several shims must not overflow them while the thread
/// is descheduled (two shims and the emulator may share two cores).
const SOCKET_BUFFER: usize = 8 << 20;
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

pub fn spawn(
    sock: UdpSocket,
    mut config: watch::Receiver<Arc<FabricConfig>>,
    requests: mpsc::Receiver<IoRequest>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    sock.set_read_timeout(Some(POLL))?;
    set_buffers(&sock, SOCKET_BUFFER);
    if enable_gro(&sock).is_err() {
        tracing::debug!("UDP_GRO not available: receiving datagram by datagram");
    }
    std::thread::Builder::new().name("enifab-fabric".into()).spawn(move || {
        let epoch = std::time::Instant::now();
        let clock = || Instant(epoch.elapsed().as_nanos() as u64);
        let mut fabric = Fabric::new(config.borrow_and_update().clone(), FabricOptions::new(RandomState::new()));
        let mut rx = RecvBatch::new();
        let mut tx = SendBatch::default();
        let mut last_expire = clock();
        // When the health checker next has work: probes are started (and timeouts noticed) in
        // the loop, between batches, so their resolution is the socket's read timeout.
        let mut next_check = Instant(0);
        loop {
            while let Ok(req) = requests.try_recv() {
                match req {
                    IoRequest::Stats(reply) => {
                        let _ = reply.send(fabric.stats());
                    }
                    IoRequest::Health(reply) => {
                        let _ = reply.send(fabric.health());
                    }
                }
            }
            let received = rx.recv(&sock);
            // Look for a new snapshot after waking, not before sleeping: a frame sent after an
            // API call returned must meet the configuration that call made.
            match config.has_changed() {
                Ok(true) => {
                    fabric.set_config(config.borrow_and_update().clone());
                    // New backends are checked at once.
                    next_check = Instant(0);
                }
                Ok(false) => {}
                // The emulator is shutting down.
                Err(_) => return,
            }
            match received {
                Ok(n) => {
                    let now = clock();
                    // Borrows this round's receive buffers: gone (everything sent) before the
                    // next `recv`.
                    let mut queue = tx.queue();
                    for i in 0..n {
                        let Some((from, datagrams)) = rx.get(i) else { continue };
                        for data in datagrams {
                            match fabric.process_split(now, from, data, queue.next_buf()) {
                                SplitVerdict::Forward { to, header_len, payload } => match data.get(payload) {
                                    Some(payload) => queue.commit_split(to, header_len, payload),
                                    None => continue,
                                },
                                SplitVerdict::Reply { to, len } => queue.commit(to, len),
                                SplitVerdict::Drop(_) => continue,
                            }
                            if queue.is_full() {
                                queue.flush(&sock);
                            }
                        }
                    }
                    queue.flush(&sock);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "fabric receive failed");
                    std::thread::sleep(POLL);
                }
            }
            let now = clock();
            if now >= next_check {
                let mut queue = tx.queue();
                while let Some((to, len)) = fabric.poll_health(now, queue.next_buf()) {
                    queue.commit(to, len);
                    if queue.is_full() {
                        queue.flush(&sock);
                    }
                }
                queue.flush(&sock);
                next_check = fabric.next_health_check().unwrap_or(Instant(u64::MAX));
            }
            if now.0.saturating_sub(last_expire.0) >= EXPIRE_EVERY.as_nanos() as u64 {
                fabric.expire(now);
                last_expire = now;
            }
        }
    })
}
