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
//!
//! And the nodes' kernel fast paths are told here what they may carry (`wire::fastpath`): the
//! pipeline's grants leave after each batch, to the shims they are for; a node's reports of
//! what its kernel carried go back into the pipeline (conntrack, counters); and every new
//! snapshot is first *revoked* on every fast-path node — its new epoch sent, and sent again
//! every poll until the node acknowledges it — while the publisher waits on [`Acks`]. A node
//! that lets a revocation go unacknowledged for [`ACK_TIMEOUT`] is posted in [`Acks::late`], for
//! its WatchNode streams to end (see [`Late`]). Control datagrams are accepted from registered
//! shims only (the pipeline checks reports; an acknowledgement from anyone else is ignored).
//!
//! Captures (`enifab capture`, [`super::capture`]) are registered here too: every frame
//! datagram received, and every one sent to a port, is offered to them — after one check that
//! there are any, so a fabric nobody captures does nothing more per datagram.

use std::collections::HashMap;
use std::hash::RandomState;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::net::UdpSocket;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use enifab_dataplane::explain::{Explained, Probe, ProbeError};
use enifab_dataplane::fabric::SplitVerdict;
use enifab_dataplane::fastpath::Update;
use enifab_dataplane::wire::fastpath::{self, Addr, Kind, Message};
use enifab_dataplane::{BackendHealth, Fabric, FabricConfig, FabricOptions, Instant, StatsSnapshot};
use tokio::sync::{oneshot, watch};

use super::capture::{Direction, Tap, Taps};
use super::udp::{RecvBatch, SendBatch, enable_gro, set_buffers};

/// What other threads may ask of the I/O thread.
pub enum IoRequest {
    Stats(oneshot::Sender<StatsSnapshot>),
    Health(oneshot::Sender<Vec<BackendHealth>>),
    /// `enifab trace`: the pipeline's explanation of a probe, against the live flows.
    Explain(Probe, oneshot::Sender<Result<Explained, ProbeError>>),
    /// Start a capture; answered once it is in force (it ends when its reader goes away).
    Capture(Tap, oneshot::Sender<()>),
}

const POLL: Duration = Duration::from_millis(20);
/// Socket buffers, each way: bursts from several shims must not overflow them while the thread
/// is descheduled (two shims and the emulator may share two cores).
const SOCKET_BUFFER: usize = 8 << 20;
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// How long a new snapshot waits for the fast-path nodes' acknowledgements. A node that has
/// not answered by then is named in the log and not waited for again until it answers; its
/// peers have revoked, and their kernels refuse what it sends under the old epoch (the
/// receiving side checks its own epoch too). Its own kernel may still carry flows on the old
/// verdicts, though, so its WatchNode streams are ended (see [`Late`]): its shim, having lost
/// the emulator, revokes its kernel to epoch 0 and registers again. The same holds for a node
/// already not waited for, at every revocation it lets time out.
pub const ACK_TIMEOUT: Duration = Duration::from_millis(500);
/// How often an unacknowledged revocation is sent again.
const RESEND: Duration = Duration::from_millis(20);

/// Fast-path nodes that let a revocation go unacknowledged for [`ACK_TIMEOUT`], by the address
/// their revocations go to, each with the epoch of the newest one it let time out. Kept for
/// the current peers only. A WatchNode stream ends when its node appears here with an epoch
/// newer than the stream: the shim applied its registration before it asked to watch, so a
/// revocation published after that found it ready to answer, and one published before (its
/// registration's, say, while it was still making its devices) is not held against it.
pub type Late = HashMap<SocketAddr, u64>;

/// The newest epoch every fast-path node has acknowledged (or that timed out), and a condition
/// variable to wait for it on; and the nodes that were late ([`Late`]).
#[derive(Default)]
pub struct Acks {
    done: Mutex<u64>,
    cv: Condvar,
    late: watch::Sender<Late>,
}

impl Acks {
    /// Blocks until `epoch` is acknowledged or `timeout` passes.
    pub fn wait(&self, epoch: u64, timeout: Duration) {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.cv.wait_timeout_while(done, timeout, |d| *d < epoch);
    }

    fn complete(&self, epoch: u64) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        *done = (*done).max(epoch);
        self.cv.notify_all();
    }

    /// The nodes that were late, as that changes.
    pub fn late(&self) -> watch::Receiver<Late> {
        self.late.subscribe()
    }

    fn overdue(&self, nodes: &[(SocketAddr, u64)]) {
        self.late.send_modify(|late| late.extend(nodes.iter().copied()));
    }

    /// Forgets the lateness of nodes no longer in the snapshot (re-registered elsewhere, or
    /// without a fast path now): nothing would look it up.
    fn keep_late(&self, peers: &[SocketAddr]) {
        self.late.send_if_modified(|late| {
            let before = late.len();
            late.retain(|p, _| peers.contains(p));
            late.len() != before
        });
    }
}

/// A revocation in flight.
struct Revoking {
    epoch: u64,
    /// Nodes whose acknowledgement the publisher waits for.
    pending: Vec<SocketAddr>,
    /// Nodes that did not answer a previous revocation in time: sent to all the same, not
    /// waited for (a node that died must not slow every API call down), until they answer.
    quiet: Vec<SocketAddr>,
    started: std::time::Instant,
    sent: std::time::Instant,
}

impl Revoking {
    fn peers(&self) -> impl Iterator<Item = &SocketAddr> {
        self.pending.iter().chain(&self.quiet)
    }
}

pub fn spawn(
    sock: UdpSocket,
    mut config: watch::Receiver<Arc<FabricConfig>>,
    requests: mpsc::Receiver<IoRequest>,
    acks: Arc<Acks>,
    waker: SocketAddr,
    flow_logs: super::flowlog::FlowLogSettings,
    logs: Arc<super::flowlog::FlowLogStore>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut taps = Taps::new(sock.local_addr()?);
    sock.set_read_timeout(Some(POLL))?;
    set_buffers(&sock, SOCKET_BUFFER);
    if enable_gro(&sock).is_err() {
        tracing::debug!("UDP_GRO not available: receiving datagram by datagram");
    }
    std::thread::Builder::new().name("enifab-fabric".into()).spawn(move || {
        let epoch = std::time::Instant::now();
        let clock = || Instant(epoch.elapsed().as_nanos() as u64);
        logs.set_origin(std::time::SystemTime::now());
        let options = FabricOptions {
            flow_log: flow_logs.enabled,
            flow_log_window: flow_logs.window,
            ..FabricOptions::new(RandomState::new())
        };
        let mut fabric = Fabric::new(config.borrow_and_update().clone(), options);
        let mut rx = RecvBatch::new();
        let mut tx = SendBatch::default();
        let mut last_expire = clock();
        // When the health checker next has work: probes are started (and timeouts noticed) in
        // the loop, between batches, so their resolution is the socket's read timeout.
        let mut next_check = Instant(0);
        let mut revoking: Option<Revoking> = None;
        // Nodes that let a revocation time out (see `Revoking::quiet`).
        let mut silent: std::collections::HashSet<SocketAddr> = Default::default();
        // Since when each node owes an acknowledgement, and of which epoch: a revocation
        // superseded by the next snapshot does not restart a node's clock. Every node of the
        // revocation in flight owes until it answers or its clock runs out (a node not waited
        // for too: its lateness still ends its watch).
        let mut owing: HashMap<SocketAddr, (std::time::Instant, u64)> = Default::default();
        // Egress entries granted in the previous round (see `send_grants`).
        let mut held = Held::default();
        loop {
            while let Ok(req) = requests.try_recv() {
                match req {
                    IoRequest::Stats(reply) => {
                        let _ = reply.send(fabric.stats());
                    }
                    IoRequest::Health(reply) => {
                        let _ = reply.send(fabric.health());
                    }
                    IoRequest::Explain(probe, reply) => {
                        let _ = reply.send(fabric.explain(clock(), &probe));
                    }
                    IoRequest::Capture(tap, ready) => {
                        taps.add(tap);
                        let _ = ready.send(());
                    }
                }
            }
            if !taps.is_empty() {
                taps.prune();
            }
            let received = rx.recv(&sock);
            // Look for a new snapshot after waking, not before sleeping: a frame sent after an
            // API call returned must meet the configuration that call made.
            match config.has_changed() {
                Ok(true) => {
                    let new = config.borrow_and_update().clone();
                    let peers = new.fast_path_peers();
                    let epoch = new.epoch();
                    fabric.set_config(new);
                    // Held grants were decided under the old snapshot.
                    held.clear();
                    // New backends are checked at once.
                    next_check = Instant(0);
                    if let Some(r) = revoking.take() {
                        acks.complete(r.epoch);
                    }
                    acks.keep_late(&peers);
                    let (quiet, pending): (Vec<_>, Vec<_>) = peers.into_iter().partition(|p| silent.contains(p));
                    if pending.is_empty() {
                        acks.complete(epoch);
                    }
                    let now = std::time::Instant::now();
                    owing.retain(|p, _| pending.contains(p) || quiet.contains(p));
                    for p in pending.iter().chain(&quiet) {
                        owing.entry(*p).or_insert((now, epoch));
                    }
                    if !(pending.is_empty() && quiet.is_empty()) {
                        let r = Revoking { epoch, pending, quiet, started: now, sent: now };
                        send_revocations(&sock, &mut tx, &r);
                        revoking = Some(r);
                    }
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
                            if from == waker && data.is_empty() {
                                continue;
                            }
                            if fastpath::is_control(data) {
                                control(&mut fabric, now, from, data, &mut revoking, &mut silent, &mut owing, &acks);
                                continue;
                            }
                            if !taps.is_empty() {
                                taps.offer(Direction::FromPort, from, data, &[]);
                            }
                            match fabric.process_split(now, from, data, queue.next_buf()) {
                                SplitVerdict::Forward { to, header_len, payload } => match data.get(payload) {
                                    Some(payload) => {
                                        if !taps.is_empty() {
                                            let head = queue.next_buf().get(..header_len).unwrap_or_default();
                                            taps.offer(Direction::ToPort, to, head, payload);
                                        }
                                        queue.commit_split(to, header_len, payload)
                                    }
                                    None => continue,
                                },
                                SplitVerdict::Reply { to, len } => {
                                    if !taps.is_empty() {
                                        taps.offer(
                                            Direction::ToPort,
                                            to,
                                            queue.next_buf().get(..len).unwrap_or_default(),
                                            &[],
                                        );
                                    }
                                    queue.commit(to, len)
                                }
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
            send_grants(&sock, &mut tx, &mut fabric, &mut held);
            let now = clock();
            if now >= next_check {
                let mut queue = tx.queue();
                while let Some((to, len)) = fabric.poll_health(now, queue.next_buf()) {
                    if !taps.is_empty() {
                        taps.offer(Direction::ToPort, to, queue.next_buf().get(..len).unwrap_or_default(), &[]);
                    }
                    queue.commit(to, len);
                    if queue.is_full() {
                        queue.flush(&sock);
                    }
                }
                queue.flush(&sock);
                next_check = fabric.next_health_check().unwrap_or(Instant(u64::MAX));
            }
            if let Some(r) = &mut revoking {
                let late: Vec<(SocketAddr, u64)> = r
                    .peers()
                    .filter_map(|p| match owing.get(p) {
                        Some((since, epoch)) if since.elapsed() >= ACK_TIMEOUT => Some((*p, *epoch)),
                        _ => None,
                    })
                    .collect();
                if !late.is_empty() {
                    let waited: Vec<SocketAddr> =
                        late.iter().map(|(p, _)| *p).filter(|p| r.pending.contains(p)).collect();
                    if !waited.is_empty() {
                        tracing::warn!(
                            epoch = r.epoch, nodes = ?waited,
                            "fast-path nodes did not acknowledge a revocation; not waited for until they do"
                        );
                        r.pending.retain(|p| !waited.contains(p));
                        silent.extend(&waited);
                        r.quiet.extend(waited);
                        if r.pending.is_empty() {
                            acks.complete(r.epoch);
                        }
                    }
                    for (p, epoch) in &late {
                        owing.remove(p);
                        // A clock that ran from an older epoch says nothing of the one in
                        // flight, sent later: that one gets a clock of its own.
                        if *epoch != r.epoch {
                            owing.insert(*p, (r.started, r.epoch));
                        }
                    }
                    acks.overdue(&late);
                }
                if r.pending.is_empty() && r.peers().all(|p| !owing.contains_key(p)) {
                    revoking = None;
                } else if r.sent.elapsed() >= RESEND {
                    r.sent = std::time::Instant::now();
                    send_revocations(&sock, &mut tx, r);
                }
            }
            if now.0.saturating_sub(last_expire.0) >= EXPIRE_EVERY.as_nanos() as u64 {
                fabric.expire(now);
                last_expire = now;
                let mut records = fabric.take_flow_records().peekable();
                if records.peek().is_some() {
                    logs.push(records);
                }
            }
        }
    })
}

/// A control datagram from a shim: an acknowledgement of the revocation in flight, or a report
/// of what a node's kernel carried.
#[allow(clippy::too_many_arguments)]
fn control(
    fabric: &mut Fabric,
    now: Instant,
    from: SocketAddr,
    data: &[u8],
    revoking: &mut Option<Revoking>,
    silent: &mut std::collections::HashSet<SocketAddr>,
    owing: &mut HashMap<SocketAddr, (std::time::Instant, u64)>,
    acks: &Acks,
) {
    let Ok(m) = Message::parse(data) else { return };
    match m.kind {
        Kind::Ack => {
            if let Some(r) = revoking.as_mut().filter(|r| r.epoch == m.epoch) {
                let was_waited_for = !r.pending.is_empty();
                r.pending.retain(|p| *p != from);
                r.quiet.retain(|p| *p != from);
                silent.remove(&from);
                owing.remove(&from);
                if was_waited_for && r.pending.is_empty() {
                    acks.complete(r.epoch);
                }
                if r.pending.is_empty() && r.quiet.is_empty() {
                    *revoking = None;
                }
            }
        }
        Kind::Report => {
            for record in m.reports().flatten() {
                fabric.fast_path_report(now, from, &record);
            }
            for record in m.reports6().flatten() {
                fabric.fast_path_report6(now, from, &record);
            }
        }
        Kind::Revoke | Kind::Grant | Kind::Evict => {}
    }
}

fn send_revocations(sock: &UdpSocket, tx: &mut SendBatch, r: &Revoking) {
    let mut queue = tx.queue();
    for peer in r.peers() {
        if let Ok(len) = fastpath::emit_bare(Kind::Revoke, r.epoch, queue.next_buf()) {
            queue.commit(*peer, len);
        }
        if queue.is_full() {
            queue.flush(sock);
        }
    }
    queue.flush(sock);
}

/// Egress entries granted in the previous round, each family's (see `send_grants`).
#[derive(Default)]
struct Held {
    v4: Vec<(SocketAddr, fastpath::Entry)>,
    v6: Vec<(SocketAddr, fastpath::Entry6)>,
}

impl Held {
    fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
    }
}

/// The pipeline's grants and evictions, as few datagrams as fit, each shim's entries in the
/// order they came. Evictions and ingress entries leave at once; egress entries (which start a
/// node sending through its kernel) wait for the next round (one batch, or a poll at most), so
/// the receiving node has installed its entry before the sending one uses its own: otherwise
/// the first carried frames could meet a receiver that does not know them yet and be refused.
/// A held entry whose flow was evicted meanwhile is not sent. IPv4 and IPv6 entries go in
/// messages of their own family, by the same rules.
fn send_grants(sock: &UdpSocket, tx: &mut SendBatch, fabric: &mut Fabric, held: &mut Held) {
    let epoch = fabric.config().epoch();
    let (mut v4, mut v6) = (Outgoing::new(&mut held.v4), Outgoing::new(&mut held.v6));
    for (peer, u) in fabric.take_grants() {
        match u {
            Update::Grant(e) => v4.granted(peer, e, &mut held.v4),
            Update::Evict(e) => v4.evictions.push((peer, e)),
            Update::Grant6(e) => v6.granted(peer, e, &mut held.v6),
            Update::Evict6(e) => v6.evictions.push((peer, e)),
        }
    }
    v4.send(sock, tx, epoch, &mut held.v4);
    v6.send(sock, tx, epoch, &mut held.v6);
}

/// One family's entries to send this round.
struct Outgoing<A: Addr> {
    grants: Vec<(SocketAddr, fastpath::Entry<A>)>,
    evictions: Vec<(SocketAddr, fastpath::Entry<A>)>,
}

impl<A: Addr> Outgoing<A> {
    /// Starts with the egress entries held from the last round.
    fn new(held: &mut Vec<(SocketAddr, fastpath::Entry<A>)>) -> Outgoing<A> {
        Outgoing { grants: std::mem::take(held), evictions: Vec::new() }
    }

    /// An ingress entry goes now, an egress entry next round.
    fn granted(&mut self, peer: SocketAddr, e: fastpath::Entry<A>, held: &mut Vec<(SocketAddr, fastpath::Entry<A>)>) {
        match e {
            fastpath::Entry::Ingress(_) => self.grants.push((peer, e)),
            fastpath::Entry::Egress(_) => held.push((peer, e)),
        }
    }

    fn send(
        mut self,
        sock: &UdpSocket,
        tx: &mut SendBatch,
        epoch: u64,
        held: &mut Vec<(SocketAddr, fastpath::Entry<A>)>,
    ) {
        if !self.evictions.is_empty() {
            let gone: std::collections::HashSet<_> = self.evictions.iter().map(|(p, e)| (*p, e.tuple())).collect();
            self.grants.retain(|(p, e)| !gone.contains(&(*p, e.tuple())));
            held.retain(|(p, e)| !gone.contains(&(*p, e.tuple())));
            send_entries(sock, tx, &mut self.evictions, fastpath::emit_evict);
        }
        send_entries(sock, tx, &mut self.grants, |entries, buf| fastpath::emit_grant(epoch, entries, buf));
    }
}

/// `entries`, grouped by shim, as datagrams `emit` writes.
fn send_entries<A: Addr>(
    sock: &UdpSocket,
    tx: &mut SendBatch,
    entries: &mut [(SocketAddr, fastpath::Entry<A>)],
    emit: impl Fn(&[fastpath::Entry<A>], &mut [u8]) -> Result<(usize, usize), enifab_dataplane::wire::BufferTooSmall>,
) {
    if entries.is_empty() {
        return;
    }
    entries.sort_by_key(|(peer, _)| *peer);
    let mut batch = Vec::with_capacity(A::MAX_RECORDS);
    let mut queue = tx.queue();
    for run in entries.chunk_by(|a, b| a.0 == b.0) {
        let peer = run[0].0;
        for chunk in run.chunks(A::MAX_RECORDS) {
            batch.clear();
            batch.extend(chunk.iter().map(|(_, e)| *e));
            if let Ok((len, _)) = emit(&batch, queue.next_buf()) {
                queue.commit(peer, len);
            }
            if queue.is_full() {
                queue.flush(sock);
            }
        }
    }
    queue.flush(sock);
}
