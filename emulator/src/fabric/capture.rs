//! Per-port packet capture on the fabric's I/O thread (`enifab capture`, `Fabric.CaptureFrames`).
//!
//! A capture is a [`Tap`]: the ports (VNIs) it watches, an optional 802.1Q VLAN id, and a bounded
//! channel to its reader. The I/O thread hands every Geneve datagram it receives from a port, and
//! every one it sends to a port, to [`Taps::offer`] — but only after [`Taps::is_empty`], one
//! branch on a local vector's length, so capture costs nothing when nobody captures. What it
//! copies is the frame as it is on the trunk: the inner Ethernet frame, a member's tag in it
//! (received frames before the pipeline decides, so the ones it then drops are there too), or
//! with `outer` the whole Geneve datagram behind a synthetic IPv4/UDP header.
//!
//! Must not: block the I/O thread or let a reader slow the fabric down. A full channel drops the
//! frame for that capture and counts it (tcpdump's "dropped by kernel"); a reader that went away
//! closes its channel and the tap is pruned. Timestamps are the host's wall clock (what a capture
//! file wants), read only when a frame is copied.
//!
//! The cloud has no packet capture on an ENI; this follows what tcpdump on the trunk device of the
//! node would show, from the port's side: a frame the node sent is one the fabric received.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use enifab_dataplane::wire::geneve;
use tokio::sync::mpsc;

/// Which way a frame went, seen from the port (its node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by the node, received by the fabric.
    FromPort,
    /// Sent by the fabric to the node.
    ToPort,
}

/// One captured frame, on its way to the reader.
#[derive(Debug, Clone)]
pub struct Frame {
    pub timestamp_ns: u64,
    pub direction: Direction,
    pub vni: u32,
    /// The frame's 802.1Q VLAN id, 0 when untagged.
    pub vlan: u16,
    /// The Ethernet frame, or (outer) the IPv4 packet around the Geneve datagram.
    pub data: Vec<u8>,
}

/// What one capture watches, and where its frames go.
#[derive(Debug)]
pub struct Tap {
    /// The ports (Geneve VNIs), sorted.
    pub ports: Vec<u32>,
    /// Only frames with this VLAN id.
    pub vlan: Option<u16>,
    pub outer: bool,
    pub tx: mpsc::Sender<Frame>,
    /// Frames a full channel refused.
    pub dropped: Arc<AtomicU64>,
}

/// The fabric's end of the synthetic outer header: the Geneve port, so that a dissector decodes
/// what follows whichever port the fabric is really bound to.
pub const OUTER_FABRIC_PORT: u16 = geneve::UDP_PORT;

/// The captures in force, owned by the I/O thread.
#[derive(Debug)]
pub struct Taps {
    taps: Vec<Tap>,
    /// The fabric's address in the outer view.
    fabric_ip: Ipv4Addr,
}

impl Taps {
    pub fn new(fabric: SocketAddr) -> Taps {
        let fabric_ip = match fabric.ip() {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
        };
        Taps { taps: Vec::new(), fabric_ip }
    }

    /// Nobody captures: the I/O thread skips [`Taps::offer`] altogether.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.taps.is_empty()
    }

    pub fn add(&mut self, tap: Tap) {
        self.taps.push(tap);
    }

    /// Forgets the captures whose reader went away.
    pub fn prune(&mut self) {
        self.taps.retain(|t| !t.tx.is_closed());
    }

    /// A Geneve datagram that went between the fabric and the shim at `peer`, as two pieces
    /// (`head` then `tail`: a forwarded datagram's headers and payload are in different buffers;
    /// otherwise `tail` is empty). Copied to every tap that watches its port and tag.
    pub fn offer(&mut self, direction: Direction, peer: SocketAddr, head: &[u8], tail: &[u8]) {
        let Ok((header, inner)) = geneve::Header::parse(head) else { return };
        if header.oam {
            return;
        }
        let vni = header.vni.get();
        let inner_at = head.len() - inner.len();
        let vlan = vlan_of(inner, tail);
        let mut now = None;
        for tap in &self.taps {
            if tap.ports.binary_search(&vni).is_err() || tap.vlan.is_some_and(|v| Some(v) != vlan) {
                continue;
            }
            let data = if tap.outer {
                let (src, dst) = match direction {
                    Direction::FromPort => (peer, SocketAddr::new(self.fabric_ip.into(), OUTER_FABRIC_PORT)),
                    Direction::ToPort => (SocketAddr::new(self.fabric_ip.into(), OUTER_FABRIC_PORT), peer),
                };
                outer_packet(src, dst, head, tail)
            } else {
                let mut d = Vec::with_capacity(head.len() - inner_at + tail.len());
                d.extend_from_slice(&head[inner_at..]);
                d.extend_from_slice(tail);
                d
            };
            let timestamp_ns = *now.get_or_insert_with(wall_clock_ns);
            let frame = Frame { timestamp_ns, direction, vni, vlan: vlan.unwrap_or(0), data };
            if let Err(mpsc::error::TrySendError::Full(_)) = tap.tx.try_send(frame) {
                tap.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn wall_clock_ns() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The 802.1Q VLAN id of an Ethernet frame that starts in `a` and may go on in `b`.
fn vlan_of(a: &[u8], b: &[u8]) -> Option<u16> {
    let byte = |i: usize| a.get(i).or_else(|| b.get(i.checked_sub(a.len())?)).copied();
    if u16::from_be_bytes([byte(12)?, byte(13)?]) != 0x8100 {
        return None;
    }
    Some(u16::from_be_bytes([byte(14)?, byte(15)?]) & 0x0fff)
}

/// `payload` (two pieces) in an IPv4/UDP header from `src` to `dst` (IPv6 ends show as
/// 0.0.0.0). The UDP checksum is left out (zero), as IPv4 allows; the IPv4 one is right.
pub fn outer_packet(src: SocketAddr, dst: SocketAddr, head: &[u8], tail: &[u8]) -> Vec<u8> {
    let v4 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    };
    let udp_len = 8 + head.len() + tail.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    // Identification 0, don't fragment, TTL 64, UDP, checksum filled in below.
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&v4(src).octets());
    p.extend_from_slice(&v4(dst).octets());
    let sum = ipv4_checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&u16::try_from(udp_len).unwrap_or(u16::MAX).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(head);
    p.extend_from_slice(tail);
    p
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use enifab_dataplane::wire::geneve::{Header, Vni};

    fn datagram(vni: u32, vlan: Option<u16>) -> Vec<u8> {
        let mut frame = vec![0xff; 12];
        if let Some(v) = vlan {
            frame.extend_from_slice(&[0x81, 0x00]);
            frame.extend_from_slice(&v.to_be_bytes());
        }
        frame.extend_from_slice(&[0x08, 0x00, 0x45]);
        let mut out = vec![0u8; 64 + frame.len()];
        let h = Header { vni: Vni::new(vni).unwrap(), oam: false, vnet: None };
        let n = geneve::encapsulate(&h, &frame, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn tap(ports: &[u32], vlan: Option<u16>, outer: bool, room: usize) -> (Tap, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(room);
        (Tap { ports: ports.to_vec(), vlan, outer, tx, dropped: Arc::default() }, rx)
    }

    const PEER: &str = "127.0.0.9:40000";

    #[test]
    fn a_tap_gets_its_ports_frames_with_the_tag_and_nothing_else() {
        let mut taps = Taps::new("127.0.0.1:6081".parse().unwrap());
        assert!(taps.is_empty());
        let (t, mut rx) = tap(&[10, 21], Some(1001), false, 8);
        taps.add(t);
        let peer = PEER.parse().unwrap();
        taps.offer(Direction::FromPort, peer, &datagram(21, Some(1001)), &[]);
        taps.offer(Direction::FromPort, peer, &datagram(21, Some(1002)), &[]);
        taps.offer(Direction::FromPort, peer, &datagram(21, None), &[]);
        taps.offer(Direction::ToPort, peer, &datagram(30, Some(1001)), &[]);
        // A forwarded datagram in two pieces, the tag in the first.
        let whole = datagram(10, Some(1001));
        taps.offer(Direction::ToPort, peer, &whole[..22], &whole[22..]);
        let a = rx.try_recv().unwrap();
        assert_eq!((a.vni, a.vlan, a.direction), (21, 1001, Direction::FromPort));
        assert_eq!(&a.data[12..16], &[0x81, 0x00, 0x03, 0xe9]);
        let b = rx.try_recv().unwrap();
        assert_eq!((b.vni, b.vlan, b.direction), (10, 1001, Direction::ToPort));
        assert_eq!(b.data, a.data, "the inner frame, whole again");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_slow_reader_loses_frames_counted_and_a_gone_one_is_pruned() {
        let mut taps = Taps::new("127.0.0.1:6081".parse().unwrap());
        let (t, rx) = tap(&[10], None, false, 2);
        let dropped = t.dropped.clone();
        taps.add(t);
        for _ in 0..5 {
            taps.offer(Direction::FromPort, PEER.parse().unwrap(), &datagram(10, None), &[]);
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        drop(rx);
        taps.prune();
        assert!(taps.is_empty());
    }

    #[test]
    fn the_outer_view_is_a_valid_ipv4_udp_packet_to_the_geneve_port() {
        let mut taps = Taps::new("127.0.0.1:16081".parse().unwrap());
        let (t, mut rx) = tap(&[10], None, true, 2);
        taps.add(t);
        let d = datagram(10, None);
        taps.offer(Direction::FromPort, PEER.parse().unwrap(), &d, &[]);
        let f = rx.try_recv().unwrap();
        assert_eq!(ipv4_checksum(&f.data[..20]), 0, "the header sums to all ones");
        assert_eq!(&f.data[12..16], &[127, 0, 0, 9]);
        assert_eq!(&f.data[16..20], &[127, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([f.data[20], f.data[21]]), 40000);
        assert_eq!(u16::from_be_bytes([f.data[22], f.data[23]]), 6081);
        assert_eq!(usize::from(u16::from_be_bytes([f.data[2], f.data[3]])), f.data.len());
        assert_eq!(&f.data[28..], &d[..]);
    }
}
