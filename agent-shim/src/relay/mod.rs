//! The frame relay between the node's devices and the emulator: Ethernet frames (with their
//! virtio-net header) from every TAP go to the fabric as Geneve over UDP, and Geneve datagrams
//! from the fabric go to the right TAP.
//!
//! ```text
//!             ┌──────────── "enifab-egress" thread ────────────┐
//!  TAP fds ──▶│ poll → readv ×N → vlan push? → Geneve → sendmmsg│──▶ fabric_address
//!             └─────────────────────────────────────────────────┘
//!             ┌──────────── "enifab-ingress" thread ───────────┐
//!  TAP fds ◀──│ writev ◀ vlan pop? ◀ VNI → device ◀ recvmmsg    │◀── fabric_address only
//!             └─────────────────────────────────────────────────┘
//! ```
//!
//! Two dedicated OS threads, one per direction, so that a TCP stream's data and its ACKs never
//! wait for each other, and both block in the kernel when idle (no spinning: two shims and the
//! emulator share two cores; a measured spin-before-sleep only made things worse). Each thread
//! owns a preallocated [`sys::MmsgBatch`]: the hot path allocates nothing and makes one
//! `readv`/`writev` per frame and one `sendmmsg`/`recvmmsg` per batch. Frames are handled
//! whole — a TSO super-frame stays one datagram — by [`frame`].
//!
//! Profiling showed the egress thread spending ~90% of its time in `sendmmsg` (IP output and
//! the loopback delivery into the emulator's socket, once per datagram), so runs of equal-sized
//! datagrams (small packets, TCP ACKs) leave as one UDP GSO send (`UDP_SEGMENT`): +20%
//! small-packet rate. The emulator keeps such a run whole on receive (`UDP_GRO`) and sends its
//! own runs the same way; the ingress socket has `UDP_GRO` on too, so a run from the fabric is
//! one buffer in the socket queue and one `recvmmsg` slot, split here datagram by datagram.
//!
//! Configuration ([`RelayTable`]: fabric address, which fd is which port, member tags) is an
//! `Arc` that [`Relay::publish`] swaps in; the threads check a generation counter between
//! batches and acknowledge the new table, so when `publish` returns no thread holds the old one
//! any more and dropping a device's last handle really closes its fd (and removes the device).
//!
//! With a kernel fast path ([`crate::fastpath`]), the ingress thread also takes the fabric's
//! control datagrams: a revocation sets the kernel's epoch and is acknowledged at once, a
//! grant is installed; and about once a second it reports what the kernel carried.
//!
//! Must not: parse or act on anything but Geneve/Ethernet/802.1Q and the fabric's control
//! messages; accept either from any address but the registered fabric address (the emulator
//! does the same for us).

pub mod frame;
pub mod stats;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use enifab_net::Vni;
use enifab_net::wire::fastpath as fastpath_wire;
use enifab_net::wire::vlan::Tci;
use enifab_net::wire::vnet::{self, VnetHdr};

use crate::fastpath::{Devices, FastPath};
use crate::sys::{self, EventFd, Gso, MmsgBatch, RawSockAddr};
use crate::vlan::MemberTable;
use frame::{EgressRule, HEADROOM, SLOT_LEN};
pub use stats::{DropReason, Stats, StatsSnapshot};

/// Datagrams per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 32;
/// How long a relay thread sleeps at most before it looks at the stop flag and the table.
const IDLE: Duration = Duration::from_millis(250);
/// Socket buffers: a few hundred 64 KiB super-frames, so a burst from the fabric is not dropped
/// while the ingress thread is descheduled.
const SOCKET_BUFFER: usize = 32 << 20;
/// How often the fast path's counters go to the fabric (its conntrack lives on by them; the
/// shortest timeout a flow can have is seconds).
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How long [`Relay::publish`] waits for the threads to take a new table.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Anything the relay can read frames from and write frames to: a TAP fd (or, in tests, one
/// end of a `SOCK_SEQPACKET` pair). The relay shares ownership; the device goes away when the
/// last handle is dropped.
pub type DeviceFd = Arc<dyn AsRawFd + Send + Sync>;

/// One device frames are read from.
#[derive(Clone)]
pub struct Source {
    pub device: DeviceFd,
    /// Its fabric port; `None` = the emulator has not given it one yet (frames are dropped).
    pub vni: Option<Vni>,
    pub rule: SourceRule,
}

/// How a source's frames are tagged (see [`frame::EgressRule`]).
#[derive(Debug, Clone)]
pub enum SourceRule {
    Plain,
    Trunk(Arc<MemberTable>),
    Tag(Tci),
}

/// Where frames of one fabric port (VNI) go.
#[derive(Clone, Default)]
pub struct Port {
    /// The NIC's own device (untagged frames, and tagged ones without a sub-interface).
    pub device: Option<DeviceFd>,
    /// Pop 802.1Q tags (the trunk's untagger).
    pub untag: bool,
    /// VLAN id → the member's sub-interface device.
    pub vlans: HashMap<u16, DeviceFd>,
}

/// Everything the relay threads need to know, swapped as a whole.
#[derive(Clone, Default)]
pub struct RelayTable {
    /// Where the emulator's Geneve socket is; `None` until registered.
    pub fabric: Option<SocketAddr>,
    pub sources: Vec<Source>,
    pub ports: HashMap<Vni, Port>,
    /// The node's kernel fast path and where its devices are.
    pub fast: Option<(Arc<FastPath>, Arc<Devices>)>,
}

impl std::fmt::Debug for RelayTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayTable")
            .field("fabric", &self.fabric)
            .field("sources", &self.sources.iter().map(|s| (s.device.as_raw_fd(), s.vni, &s.rule)).collect::<Vec<_>>())
            .field("ports", &self.ports.keys().collect::<Vec<_>>())
            .finish()
    }
}

struct Shared {
    table: Mutex<Arc<RelayTable>>,
    generation: AtomicU64,
    /// Generation each thread (egress, ingress) runs with.
    seen: [AtomicU64; 2],
    stop: AtomicBool,
    wake: EventFd,
    stats: Stats,
}

impl Shared {
    fn load(&self) -> (u64, Arc<RelayTable>) {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        (self.generation.load(Ordering::Acquire), t.clone())
    }
}

/// The running relay. Dropping it stops both threads (and releases every device they hold).
pub struct Relay {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    local: SocketAddr,
    /// Sends the empty datagram that wakes the ingress thread out of `recvmmsg`.
    waker: UdpSocket,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("local", &self.local).finish()
    }
}

impl Relay {
    /// Starts both threads on the bound Geneve socket, with an empty table.
    pub fn start(sock: UdpSocket) -> io::Result<Relay> {
        let local = enifab_udp::reachable(sock.local_addr()?);
        enifab_udp::set_buffers(&sock, SOCKET_BUFFER);
        if let Err(e) = sys::enable_gro(&sock) {
            tracing::debug!(error = %e, "UDP_GRO not available: receiving datagram by datagram");
        }
        sock.set_read_timeout(Some(IDLE))?;
        let waker = UdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
        let shared = Arc::new(Shared {
            table: Mutex::new(Arc::new(RelayTable::default())),
            generation: AtomicU64::new(0),
            seen: [AtomicU64::new(0), AtomicU64::new(0)],
            stop: AtomicBool::new(false),
            wake: EventFd::new()?,
            stats: Stats::default(),
        });
        let sock = Arc::new(sock);
        let mut threads = Vec::new();
        let (s, k) = (shared.clone(), sock.clone());
        threads.push(std::thread::Builder::new().name("enifab-egress".into()).spawn(move || egress(&s, &k))?);
        let (s, k) = (shared.clone(), sock);
        let spawned = std::thread::Builder::new().name("enifab-ingress".into()).spawn(move || ingress(&s, &k, local));
        let mut relay = Relay { shared, threads, local, waker };
        match spawned {
            Ok(t) => relay.threads.push(t),
            Err(e) => {
                relay.stop();
                return Err(e);
            }
        }
        Ok(relay)
    }

    /// The Geneve address to register with the emulator.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// The table the threads run with now.
    pub fn table(&self) -> Arc<RelayTable> {
        self.shared.load().1
    }

    fn wake_all(&self) {
        self.shared.wake.wake();
        let _ = self.waker.send_to(&[], self.local);
    }

    /// Installs `table` and waits until both threads run with it, so that devices left out of
    /// it are no longer referenced by the relay when this returns.
    pub fn publish(&self, table: RelayTable) {
        let generation = {
            let mut t = self.shared.table.lock().unwrap_or_else(|p| p.into_inner());
            *t = Arc::new(table);
            self.shared.generation.fetch_add(1, Ordering::AcqRel) + 1
        };
        self.wake_all();
        let deadline = Instant::now() + ACK_TIMEOUT;
        let mut rewake = Instant::now() + Duration::from_millis(50);
        while self.shared.seen.iter().any(|s| s.load(Ordering::Acquire) < generation) {
            if self.threads.iter().any(|t| t.is_finished()) || Instant::now() > deadline {
                tracing::warn!(generation, "relay threads did not take the new table in time");
                return;
            }
            if Instant::now() > rewake {
                // The wake-up datagram can be lost under load (full receive buffer).
                self.wake_all();
                rewake = Instant::now() + Duration::from_millis(50);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Stops and joins both threads (idempotent).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.wake_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Release every device handle the table holds.
        *self.shared.table.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(RelayTable::default());
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn poll_set(wake: RawFd, table: &RelayTable) -> Vec<libc::pollfd> {
    std::iter::once(wake)
        .chain(table.sources.iter().map(|s| s.device.as_raw_fd()))
        .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
        .collect()
}

/// Sends `batch[0..n]`; datagrams the kernel refuses are counted and skipped.
fn flush(batch: &mut MmsgBatch, sock: RawFd, n: usize, gso: &mut Gso, stats: &Stats) {
    if n == 0 {
        return;
    }
    let sent = batch.send(sock, n, gso);
    for _ in 0..sent.dropped {
        stats.drop(DropReason::Send);
    }
}

/// TAPs → fabric.
fn egress(shared: &Shared, sock: &UdpSocket) {
    let sock = sock.as_raw_fd();
    let mut batch = MmsgBatch::new(BATCH, SLOT_LEN);
    let mut vnets = [[0u8; vnet::LEN]; BATCH];
    let mut gso = Gso::default();
    let (mut generation, mut table) = shared.load();
    let mut fabric = table.fabric.map(RawSockAddr::from_std);
    let mut fds = poll_set(shared.wake.raw(), &table);
    shared.seen[0].store(generation, Ordering::Release);
    let stats = &shared.stats;
    while !shared.stop.load(Ordering::Acquire) {
        if shared.generation.load(Ordering::Acquire) != generation {
            // Drop the old table first: its devices may be waiting for their last handle.
            drop(std::mem::take(&mut table));
            (generation, table) = shared.load();
            fabric = table.fabric.map(RawSockAddr::from_std);
            fds = poll_set(shared.wake.raw(), &table);
            shared.seen[0].store(generation, Ordering::Release);
        }
        match sys::poll(&mut fds, IDLE) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(_) => continue, // EINTR
        }
        if fds[0].revents != 0 {
            shared.wake.drain();
        }
        let mut n = 0;
        for (src, pfd) in table.sources.iter().zip(fds[1..].iter_mut()) {
            if pfd.revents & libc::POLLIN == 0 {
                if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                    // The device is gone from under us (its namespace was destroyed); stop
                    // polling it until the next table instead of spinning. `poll` reports
                    // errors and hang-ups whatever `events` asks for, so only a negative fd
                    // takes it out.
                    pfd.fd = -1;
                }
                continue;
            }
            let fd = src.device.as_raw_fd();
            let rule = match &src.rule {
                SourceRule::Plain => EgressRule::Plain,
                SourceRule::Trunk(m) => EgressRule::Trunk(m),
                SourceRule::Tag(t) => EgressRule::Tag(*t),
            };
            // At most one batch per device per round, so a busy device cannot starve the others.
            for _ in 0..BATCH {
                if n == BATCH {
                    flush(&mut batch, sock, n, &mut gso, stats);
                    n = 0;
                }
                let slot = batch.buf_mut(n);
                let got = match sys::read2(fd, &mut vnets[n], &mut slot[HEADROOM..]) {
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        stats.drop(DropReason::TapRead);
                        pfd.fd = -1;
                        break;
                    }
                };
                let Some(frame_len) = got.checked_sub(vnet::LEN) else { continue };
                let (Some(to), Some(vni)) = (fabric.as_ref(), src.vni) else {
                    stats.drop(if fabric.is_none() { DropReason::NoFabric } else { DropReason::NoPort });
                    continue;
                };
                match frame::encapsulate(slot, frame_len, VnetHdr::from_bytes(&vnets[n]), vni, rule) {
                    Ok(e) => {
                        if e.pushed.is_some() {
                            stats.tags_pushed.fetch_add(1, Ordering::Relaxed);
                        }
                        stats.to_fabric_frames.fetch_add(1, Ordering::Relaxed);
                        stats.to_fabric_bytes.fetch_add(frame_len as u64, Ordering::Relaxed);
                        batch.set_send(n, e.datagram.start, e.datagram.end, to);
                        n += 1;
                    }
                    Err(d) => stats.drop(d),
                }
            }
        }
        flush(&mut batch, sock, n, &mut gso, stats);
    }
}

/// Fabric → TAPs.
fn ingress(shared: &Shared, udp: &UdpSocket, local: SocketAddr) {
    let sock = udp.as_raw_fd();
    let mut last_report = Instant::now();
    let mut batch = MmsgBatch::new(BATCH, SLOT_LEN);
    let (mut generation, mut table) = shared.load();
    shared.seen[1].store(generation, Ordering::Release);
    let stats = &shared.stats;
    while !shared.stop.load(Ordering::Acquire) {
        if shared.generation.load(Ordering::Acquire) != generation {
            drop(std::mem::take(&mut table));
            (generation, table) = shared.load();
            shared.seen[1].store(generation, Ordering::Release);
        }
        if last_report.elapsed() >= REPORT_EVERY {
            report(&table, udp);
            last_report = Instant::now();
        }
        let n = match batch.recv(sock) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
            Err(e) => {
                // ECONNREFUSED and friends from ICMP errors; nothing to do but go on.
                tracing::debug!(error = %e, "recvmmsg");
                continue;
            }
        };
        for i in 0..n {
            let segment = batch.segment(i);
            let (from, d) = batch.received(i);
            if from.is_none() || from != table.fabric {
                // Empty datagrams are the relay's own wake-ups, not traffic.
                if !(d.is_empty() && from.map(|f| f.ip()) == Some(local.ip())) {
                    stats.drop(DropReason::NotFromFabric);
                }
                continue;
            }
            if fastpath_wire::is_control(d) {
                control(&table, udp, d);
                continue;
            }
            // A run the fabric sent as one UDP GSO message arrives whole (UDP_GRO): its
            // datagrams, back to back, `segment` bytes each but the last.
            let segment = segment.filter(|s| *s < d.len()).unwrap_or(d.len());
            let mut rest = d;
            loop {
                let at = segment.min(rest.len());
                let (d, tail) = std::mem::take(&mut rest).split_at_mut(at);
                if let Err(reason) = deliver(&table, d, stats) {
                    stats.drop(reason);
                }
                if tail.is_empty() {
                    break;
                }
                rest = tail;
            }
        }
    }
}

/// A control message from the fabric, for the node's fast path.
fn control(table: &RelayTable, udp: &UdpSocket, d: &[u8]) {
    let (Some((fast, devices)), Some(fabric)) = (&table.fast, table.fabric) else { return };
    let Ok(m) = fastpath_wire::Message::parse(d) else { return };
    match m.kind {
        fastpath_wire::Kind::Revoke => match fast.revoke(m.epoch) {
            Ok(()) => {
                let mut buf = [0u8; fastpath_wire::HEADER_LEN];
                if let Ok(len) = fastpath_wire::emit_bare(fastpath_wire::Kind::Ack, m.epoch, &mut buf) {
                    let _ = udp.send_to(&buf[..len], fabric);
                }
            }
            Err(e) => tracing::warn!(error = %e, "fast path: cannot revoke; not acknowledged"),
        },
        // A message carries one family's entries; the other family's iterator is empty.
        fastpath_wire::Kind::Grant => {
            fast.install(m.epoch, m.entries().flatten(), devices);
            fast.install6(m.epoch, m.entries6().flatten(), devices);
        }
        fastpath_wire::Kind::Evict => {
            fast.evict(m.entries().flatten(), devices);
            fast.evict6(m.entries6().flatten(), devices);
        }
        fastpath_wire::Kind::Ack | fastpath_wire::Kind::Report => {}
    }
}

/// What the node's kernel carried since the last report, to the fabric.
fn report(table: &RelayTable, udp: &UdpSocket) {
    let (Some((fast, devices)), Some(fabric)) = (&table.fast, table.fabric) else { return };
    send_reports(udp, fabric, &fast.report(devices));
    send_reports(udp, fabric, &fast.report6(devices));
}

/// One family's report records, as few datagrams as fit.
fn send_reports<A: fastpath_wire::Addr>(
    udp: &UdpSocket,
    fabric: SocketAddr,
    records: &[fastpath_wire::ReportRecord<A>],
) {
    let mut buf = [0u8; fastpath_wire::MAX_LEN];
    for chunk in records.chunks(A::MAX_RECORDS) {
        if let Ok((len, _)) = fastpath_wire::emit_report(chunk, &mut buf) {
            let _ = udp.send_to(&buf[..len], fabric);
        }
    }
}

/// One datagram from the fabric to its device.
fn deliver(table: &RelayTable, d: &mut [u8], stats: &Stats) -> Result<(), DropReason> {
    let mut x = frame::decapsulate(d)?;
    let port = table.ports.get(&x.vni).ok_or(DropReason::UnknownVni)?;
    let vid = if port.untag { frame::untag(d, &mut x)? } else { None };
    if vid.is_some() {
        stats.tags_popped.fetch_add(1, Ordering::Relaxed);
    }
    let device = vid.and_then(|v| port.vlans.get(&v)).or(port.device.as_ref()).ok_or(DropReason::UnknownVni)?;
    frame::check_vnet(&x)?;
    let frame = &d[x.frame.clone()];
    match sys::write2(device.as_raw_fd(), &x.vnet.to_bytes(), frame) {
        Ok(_) => {
            stats.from_fabric_frames.fetch_add(1, Ordering::Relaxed);
            stats.from_fabric_bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
            Ok(())
        }
        Err(_) => Err(DropReason::TapWrite),
    }
}

#[cfg(test)]
mod test {
    use std::os::unix::net::UnixDatagram;

    use enifab_net::wire::geneve::{self, Header};

    use super::*;
    use crate::vlan::test::{IPV4_FROM_MEMBER, members};

    /// A fake device: the relay gets one end of a datagram socket pair (frames keep their
    /// boundaries, readv/writev work as on a TAP), the test holds the other.
    fn device() -> (DeviceFd, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (Arc::new(a), b)
    }

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap()
    }

    fn with_vnet(frame: &[u8], v: VnetHdr) -> Vec<u8> {
        let mut out = v.to_bytes().to_vec();
        out.extend_from_slice(frame);
        out
    }

    struct Lab {
        relay: Relay,
        fabric: UdpSocket,
        trunk: UnixDatagram,
        vlan7: UnixDatagram,
        plain: UnixDatagram,
    }

    fn lab() -> Lab {
        let relay = Relay::start(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let fabric = UdpSocket::bind("127.0.0.1:0").unwrap();
        fabric.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (trunk_dev, trunk) = device();
        let (vlan7_dev, vlan7) = device();
        let (plain_dev, plain) = device();
        let mut ports = HashMap::new();
        ports.insert(
            vni(11),
            Port { device: Some(trunk_dev.clone()), untag: true, vlans: HashMap::from([(7, vlan7_dev.clone())]) },
        );
        ports.insert(vni(10), Port { device: Some(plain_dev.clone()), untag: false, vlans: HashMap::new() });
        relay.publish(RelayTable {
            fabric: Some(fabric.local_addr().unwrap()),
            sources: vec![
                Source { device: trunk_dev, vni: Some(vni(11)), rule: SourceRule::Trunk(Arc::new(members())) },
                Source { device: vlan7_dev, vni: Some(vni(11)), rule: SourceRule::Tag(Tci::from_vid(7).unwrap()) },
                Source { device: plain_dev, vni: Some(vni(10)), rule: SourceRule::Plain },
            ],
            ports,
            fast: None,
        });
        Lab { relay, fabric, trunk, vlan7, plain }
    }

    /// The relay's counters once `done` holds (or after 2 s).
    fn settle(relay: &Relay, done: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let s = relay.stats();
            if done(&s) || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn recv_geneve(fabric: &UdpSocket) -> (Header, Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 70000];
        let (n, from) = fabric.recv_from(&mut buf).unwrap();
        let (h, inner) = Header::parse(&buf[..n]).unwrap();
        (h, inner.to_vec(), from)
    }

    fn send_geneve(from: &UdpSocket, to: SocketAddr, v: u32, vnet: VnetHdr, frame: &[u8]) {
        let h = Header { vni: vni(v), oam: false, vnet: Some(vnet) };
        let mut d = vec![0u8; h.len() + frame.len()];
        geneve::encapsulate(&h, frame, &mut d).unwrap();
        from.send_to(&d, to).unwrap();
    }

    fn tagged(vid: u8) -> Vec<u8> {
        let mut f = IPV4_FROM_MEMBER[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, vid]);
        f.extend_from_slice(&IPV4_FROM_MEMBER[12..]);
        f
    }

    #[test]
    fn egress_tags_by_source_and_device() {
        let l = lab();
        let relay_addr = l.relay.local_addr();
        // From the trunk, source = member 10.0.8.5: tagged 5.
        l.trunk.send(&with_vnet(&IPV4_FROM_MEMBER, VnetHdr::PLAIN)).unwrap();
        let (h, inner, from) = recv_geneve(&l.fabric);
        assert_eq!((h.vni, from), (vni(11), relay_addr));
        assert_eq!(inner, tagged(5));
        // From the VLAN 7 device: tagged 7 whatever the source.
        l.vlan7.send(&with_vnet(&IPV4_FROM_MEMBER, VnetHdr::PLAIN)).unwrap();
        let (h, inner, _) = recv_geneve(&l.fabric);
        assert_eq!((h.vni, inner), (vni(11), tagged(7)));
        // From a plain NIC: untouched.
        l.plain.send(&with_vnet(&IPV4_FROM_MEMBER, VnetHdr::PLAIN)).unwrap();
        let (h, inner, _) = recv_geneve(&l.fabric);
        assert_eq!((h.vni, inner), (vni(10), IPV4_FROM_MEMBER.to_vec()));
        let s = settle(&l.relay, |s| s.to_fabric_frames == 3);
        assert_eq!((s.to_fabric_frames, s.tags_pushed), (3, 2));
    }

    #[test]
    fn ingress_pops_and_routes_by_vlan() {
        let l = lab();
        let to = l.relay.local_addr();
        let mut buf = [0u8; 2048];
        // VLAN 7 has a device: popped and delivered there.
        send_geneve(&l.fabric, to, 11, VnetHdr::PLAIN, &tagged(7));
        let n = l.vlan7.recv(&mut buf).unwrap();
        assert_eq!(&buf[vnet::LEN..n], &IPV4_FROM_MEMBER);
        // VLAN 5 has none: popped and delivered to the trunk device.
        send_geneve(&l.fabric, to, 11, VnetHdr::PLAIN, &tagged(5));
        let n = l.trunk.recv(&mut buf).unwrap();
        assert_eq!(&buf[vnet::LEN..n], &IPV4_FROM_MEMBER);
        // Untagged on the plain NIC's port.
        send_geneve(&l.fabric, to, 10, VnetHdr::PLAIN, &IPV4_FROM_MEMBER);
        let n = l.plain.recv(&mut buf).unwrap();
        assert_eq!(&buf[..vnet::LEN], &[0u8; vnet::LEN]);
        assert_eq!(&buf[vnet::LEN..n], &IPV4_FROM_MEMBER);
        // Counted just after the write the test saw.
        let s = settle(&l.relay, |s| s.from_fabric_frames == 3);
        assert_eq!((s.from_fabric_frames, s.tags_popped), (3, 2));
    }

    /// Equal-sized datagrams the fabric sends as one UDP GSO message reach the relay as one
    /// buffer (UDP_GRO) and are delivered one frame each, in order.
    #[test]
    fn ingress_splits_a_coalesced_run() {
        let l = lab();
        let to = RawSockAddr::from_std(l.relay.local_addr());
        let h = Header { vni: vni(10), oam: false, vnet: Some(VnetHdr::PLAIN) };
        let mut tx = MmsgBatch::new(4, 2048);
        for i in 0..4 {
            let mut frame = IPV4_FROM_MEMBER.to_vec();
            *frame.last_mut().unwrap() = i as u8;
            let len = geneve::encapsulate(&h, &frame, tx.buf_mut(i)).unwrap();
            tx.set_send(i, 0, len, &to);
        }
        let sent = tx.send(l.fabric.as_raw_fd(), 4, &mut Gso::default());
        assert_eq!((sent.datagrams, sent.dropped), (4, 0));
        let mut buf = [0u8; 2048];
        for i in 0..4 {
            let n = l.plain.recv(&mut buf).unwrap();
            assert_eq!(&buf[vnet::LEN..n - 1], &IPV4_FROM_MEMBER[..IPV4_FROM_MEMBER.len() - 1]);
            assert_eq!(buf[n - 1], i as u8, "in order");
        }
        let s = settle(&l.relay, |s| s.from_fabric_frames == 4);
        assert_eq!(s.from_fabric_frames, 4);
    }

    #[test]
    fn ingress_only_from_the_fabric_address_and_known_vnis() {
        let l = lab();
        let to = l.relay.local_addr();
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        send_geneve(&stranger, to, 10, VnetHdr::PLAIN, &IPV4_FROM_MEMBER);
        send_geneve(&l.fabric, to, 99, VnetHdr::PLAIN, &IPV4_FROM_MEMBER);
        // A frame that does arrive proves the two before it were processed (one thread, in order).
        send_geneve(&l.fabric, to, 10, VnetHdr::PLAIN, &IPV4_FROM_MEMBER);
        let mut buf = [0u8; 2048];
        l.plain.recv(&mut buf).unwrap();
        let s = settle(&l.relay, |s| s.from_fabric_frames == 1);
        assert_eq!(s.dropped(DropReason::NotFromFabric), 1);
        assert_eq!(s.dropped(DropReason::UnknownVni), 1);
        assert_eq!(s.from_fabric_frames, 1);
        l.trunk.set_nonblocking(true).unwrap();
        assert!(l.trunk.recv(&mut buf).is_err(), "nothing reached another device");
    }

    #[test]
    fn publish_releases_removed_devices() {
        let l = lab();
        let (dev, peer) = device();
        let weak = Arc::downgrade(&dev);
        let mut t = (*l.relay.table()).clone();
        t.sources.push(Source { device: dev, vni: Some(vni(12)), rule: SourceRule::Plain });
        l.relay.publish(t);
        assert!(weak.upgrade().is_some());
        let mut t = (*l.relay.table()).clone();
        t.sources.pop();
        l.relay.publish(t);
        assert!(weak.upgrade().is_none(), "no thread keeps the old table");
        // The fd is closed: the peer sees its end gone.
        assert!(peer.send(b"x").is_err());
    }

    #[test]
    fn without_fabric_frames_are_counted_not_sent() {
        let relay = Relay::start(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let (dev, peer) = device();
        relay.publish(RelayTable {
            fabric: None,
            sources: vec![Source { device: dev, vni: Some(vni(1)), rule: SourceRule::Plain }],
            ports: HashMap::new(),
            fast: None,
        });
        peer.send(&with_vnet(&IPV4_FROM_MEMBER, VnetHdr::PLAIN)).unwrap();
        let s = settle(&relay, |s| s.dropped(DropReason::NoFabric) > 0);
        assert_eq!((s.dropped(DropReason::NoFabric), s.to_fabric_frames), (1, 0));
    }
}
