//! Connection tracking: what makes security groups stateful ("if an outbound packet is
//! permitted, inbound packets of this connection are also permitted", reference §8.2 item 6).
//!
//! A flow is keyed by (VPC, protocol, addresses, ports) in the direction of its first packet.
//! TCP and UDP use ports, ICMP echo uses the echo identifier (a reply matches only the reverse
//! of a tracked request, so an unsolicited request never rides on someone else's ping), and any
//! other IP protocol (GRE…) is tracked by address pair. TCP state is followed just far enough to
//! pick the timeout: handshake, established, half-closed, closed (FIN both ways or RST).
//!
//! Decisions are split from effects: `Conntrack::get`, `start` and `advance` are read-only and
//! return the entry to store; the pipeline commits it after the verdict is known. That is what
//! lets `Fabric::trace` run the whole pipeline without touching state.
//!
//! Revoked rules: a tracked flow keeps passing until it expires, even if the rule that admitted
//! it is removed, as in the cloud's own conntrack (and Linux/AWS): rules are checked when a flow
//! starts, not per packet. This keeps established traffic O(1) in the number of rules. Entries
//! remember the ENIs they were admitted between, so an address that moves to another ENI does
//! not inherit the old ENI's flows.
//!
//! Must not: read a clock (time comes in as `now`) or grow without bound (`max_entries`).

use core::net::Ipv4Addr;
use std::collections::HashMap;
use std::hash::RandomState;

use crate::Instant;
use crate::config::Timeouts;
use crate::wire::l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    pub vpc: u64,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl FlowKey {
    pub fn reversed(&self) -> FlowKey {
        FlowKey { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, ..*self }
    }
}

/// Which way a packet travels relative to the packet that created the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowDir {
    Original,
    Reply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowState {
    /// A SYN seen, no SYN-ACK yet.
    TcpSynSent,
    /// SYN-ACK seen, waiting for the final ACK.
    TcpSynReceived,
    TcpEstablished,
    /// FIN seen in one direction; the other may still send, so the established timeout holds.
    TcpHalfClosed,
    /// FIN both ways, or RST.
    TcpClosed,
    Udp,
    IcmpEcho,
    /// Any other IP protocol, by address pair.
    Other,
}

impl FlowState {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::TcpSynSent => "tcp_syn_sent",
            FlowState::TcpSynReceived => "tcp_syn_received",
            FlowState::TcpEstablished => "tcp_established",
            FlowState::TcpHalfClosed => "tcp_half_closed",
            FlowState::TcpClosed => "tcp_closed",
            FlowState::Udp => "udp",
            FlowState::IcmpEcho => "icmp_echo",
            FlowState::Other => "other",
        }
    }

    fn timeout(self, t: &Timeouts) -> u64 {
        match self {
            FlowState::TcpSynSent | FlowState::TcpSynReceived => t.tcp_handshake,
            FlowState::TcpEstablished | FlowState::TcpHalfClosed => t.tcp_established,
            FlowState::TcpClosed => t.tcp_closed,
            FlowState::Udp | FlowState::Other => t.udp,
            FlowState::IcmpEcho => t.icmp,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub state: FlowState,
    pub expires: u64,
    /// `stable_key` of the ENIs the flow was admitted from and to.
    pub src_eni: u64,
    pub dst_eni: u64,
    pub fin_original: bool,
    pub fin_reply: bool,
}

/// What the layer-4 header says, as far as tracking cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L4Info {
    Tcp { flags: u8 },
    Udp,
    IcmpEcho,
    Other,
}

/// A new entry for the first packet of a flow, or `None` for a packet that must not start one
/// (a lone RST: it ends things, it does not open them).
pub(crate) fn start(l4: L4Info, now: Instant, t: &Timeouts, src_eni: u64, dst_eni: u64) -> Option<Entry> {
    let state = match l4 {
        L4Info::Tcp { flags } if flags & TCP_RST != 0 => return None,
        L4Info::Tcp { flags } if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 => FlowState::TcpSynSent,
        // Mid-stream pickup (e.g. after the entry expired and the rules still allow it), like
        // Linux's `nf_conntrack_tcp_loose`.
        L4Info::Tcp { .. } => FlowState::TcpEstablished,
        L4Info::Udp => FlowState::Udp,
        L4Info::IcmpEcho => FlowState::IcmpEcho,
        L4Info::Other => FlowState::Other,
    };
    let mut e = Entry { state, expires: 0, src_eni, dst_eni, fin_original: false, fin_reply: false };
    if let L4Info::Tcp { flags } = l4 {
        note_fin(&mut e, FlowDir::Original, flags);
    }
    e.expires = now.0.saturating_add(state.timeout(t));
    Some(e)
}

fn note_fin(e: &mut Entry, dir: FlowDir, flags: u8) {
    if flags & TCP_FIN != 0 {
        match dir {
            FlowDir::Original => e.fin_original = true,
            FlowDir::Reply => e.fin_reply = true,
        }
    }
}

/// The entry after one more packet of the flow.
pub(crate) fn advance(e: &Entry, dir: FlowDir, l4: L4Info, now: Instant, t: &Timeouts) -> Entry {
    let mut n = *e;
    if let L4Info::Tcp { flags } = l4 {
        note_fin(&mut n, dir, flags);
        let syn = flags & TCP_SYN != 0;
        let ack = flags & TCP_ACK != 0;
        n.state = if flags & TCP_RST != 0 || (n.fin_original && n.fin_reply) {
            FlowState::TcpClosed
        } else if n.fin_original || n.fin_reply {
            FlowState::TcpHalfClosed
        } else {
            match (e.state, dir) {
                (FlowState::TcpSynSent, FlowDir::Reply) if syn && ack => FlowState::TcpSynReceived,
                (FlowState::TcpSynReceived, FlowDir::Original) if ack && !syn => FlowState::TcpEstablished,
                (s, _) => s,
            }
        };
    }
    n.expires = now.0.saturating_add(n.state.timeout(t));
    n
}

/// A SYN that finds a closed flow opens a new connection on the same ports (port reuse after
/// TIME_WAIT); it must be judged by the rules again, not waved through.
pub(crate) fn is_reopen(e: &Entry, dir: FlowDir, l4: L4Info) -> bool {
    matches!(l4, L4Info::Tcp { flags } if flags & TCP_SYN != 0 && flags & TCP_ACK == 0)
        && (e.state == FlowState::TcpClosed || dir == FlowDir::Reply && e.state != FlowState::TcpSynSent)
}

/// A flow table in the direction of first packets.
#[derive(Debug)]
pub(crate) struct Conntrack {
    map: HashMap<FlowKey, Entry, RandomState>,
    max_entries: usize,
}

impl Conntrack {
    pub fn new(max_entries: usize, hasher: RandomState) -> Conntrack {
        // Reserved up front so that admitting a flow does not allocate on the frame path.
        Conntrack { map: HashMap::with_capacity_and_hasher(max_entries, hasher), max_entries }
    }

    /// The live entry for `key` as seen from `dir`: looks up `key` itself for `Original`, its
    /// reverse for `Reply`. Expired entries are invisible (and are replaced or swept later).
    pub fn get(&self, key: &FlowKey, now: Instant) -> Option<&Entry> {
        self.map.get(key).filter(|e| e.expires > now.0)
    }

    /// Room for `key` (an existing, possibly expired entry for it is overwritten in place).
    pub fn has_room_for(&self, key: &FlowKey) -> bool {
        self.map.len() < self.max_entries || self.map.contains_key(key)
    }

    pub fn store(&mut self, key: FlowKey, e: Entry) {
        if self.has_room_for(&key) {
            self.map.insert(key, e);
        }
    }

    /// Drops every entry that has expired at `now`; returns how many. The shell calls this
    /// periodically (about once a second is plenty).
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| e.expires > now.0);
        before - self.map.len()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &Entry)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn t() -> Timeouts {
        Timeouts { tcp_established: 910 * S, tcp_closed: 3 * S, tcp_handshake: 120 * S, udp: 30 * S, icmp: 30 * S }
    }

    fn tcp(flags: u8) -> L4Info {
        L4Info::Tcp { flags }
    }

    #[test]
    fn tcp_lifecycle_picks_timeouts() {
        let t = t();
        let e = start(tcp(TCP_SYN), Instant(0), &t, 1, 2).unwrap();
        assert_eq!((e.state, e.expires), (FlowState::TcpSynSent, 120 * S));
        let e = advance(&e, FlowDir::Reply, tcp(TCP_SYN | TCP_ACK), Instant(S), &t);
        assert_eq!(e.state, FlowState::TcpSynReceived);
        let e = advance(&e, FlowDir::Original, tcp(TCP_ACK), Instant(2 * S), &t);
        assert_eq!((e.state, e.expires), (FlowState::TcpEstablished, 912 * S));
        let e = advance(&e, FlowDir::Original, tcp(TCP_FIN | TCP_ACK), Instant(3 * S), &t);
        assert_eq!((e.state, e.expires), (FlowState::TcpHalfClosed, 913 * S));
        let e = advance(&e, FlowDir::Reply, tcp(TCP_FIN | TCP_ACK), Instant(4 * S), &t);
        assert_eq!((e.state, e.expires), (FlowState::TcpClosed, 7 * S));
        assert!(is_reopen(&e, FlowDir::Original, tcp(TCP_SYN)));
        assert!(!is_reopen(&e, FlowDir::Original, tcp(TCP_ACK)));
    }

    #[test]
    fn rst_closes_and_never_opens() {
        let t = t();
        assert!(start(tcp(TCP_RST), Instant(0), &t, 1, 2).is_none());
        let e = start(tcp(TCP_ACK), Instant(0), &t, 1, 2).unwrap();
        assert_eq!(e.state, FlowState::TcpEstablished, "mid-stream pickup");
        let e = advance(&e, FlowDir::Reply, tcp(TCP_RST), Instant(0), &t);
        assert_eq!((e.state, e.expires), (FlowState::TcpClosed, 3 * S));
    }

    #[test]
    fn table_bounds_and_expiry() {
        let t = t();
        let mut ct = Conntrack::new(2, RandomState::new());
        let key =
            |p| FlowKey { vpc: 1, proto: 17, src: Ipv4Addr::LOCALHOST, dst: Ipv4Addr::BROADCAST, sport: p, dport: 53 };
        let e = start(L4Info::Udp, Instant(0), &t, 1, 2).unwrap();
        ct.store(key(1), e);
        ct.store(key(2), e);
        assert!(!ct.has_room_for(&key(3)));
        assert!(ct.has_room_for(&key(2)));
        ct.store(key(3), e);
        assert_eq!(ct.len(), 2);
        assert!(ct.get(&key(1), Instant(30 * S - 1)).is_some());
        assert!(ct.get(&key(1), Instant(30 * S)).is_none());
        assert!(ct.get(&key(1).reversed(), Instant(0)).is_none());
        assert_eq!(ct.expire(Instant(30 * S)), 2);
        assert_eq!(ct.len(), 0);
    }
}
