//! Connection tracking: what makes security groups stateful ("if an outbound packet is
//! permitted, inbound packets of this connection are also permitted", reference §8.2 item 6),
//! and what lets a load balancer's translation follow a flow (reference §11.1: layer-4 CLB keeps
//! the client's address, so replies must be steered back through the VIP).
//!
//! A connection has two tuples, as in Linux's conntrack: the *original* one (the first packet's
//! addresses and ports, in its sender's namespace) and the *reply* one (what a reply looks like
//! where the receiver sends it). Without translation the reply tuple is the original reversed,
//! and only the original is indexed: a reply finds its connection by reversing itself. A
//! translated (load-balanced) connection indexes both, because its reply (`backend → client`) is
//! not the reverse of its original (`client → VIP`); the reply tuple lives in the backend's
//! VPC, the original in the client's (a VPC, or the internet side).
//!
//! TCP and UDP use ports, ICMP echo uses the echo identifier (a reply matches only the reverse
//! of a tracked request, so an unsolicited request never rides on someone else's ping), and any
//! other IP protocol (GRE…) is tracked by address pair. TCP state is followed just far enough to
//! pick the timeout: handshake, established, half-closed, closed (FIN both ways or RST).
//!
//! One reply tuple never belongs to two connections: a new connection whose tuples (or their
//! reverses) are held by a live one is refused (`conntrack_clash`), never merged. That is what
//! stops a client that reaches a backend directly and through a VIP from the same source port
//! from having the backend's replies un-translated for the wrong one.
//!
//! Decisions are split from effects: lookups and [`start`]/[`advance`] are read-only and return
//! what to store; the pipeline commits it after the verdict is known. That is what lets
//! `Fabric::trace` run the whole pipeline without touching state.
//!
//! Revoked rules: a tracked flow keeps passing until it expires, even if the rule that admitted
//! it is removed, as in the cloud's own conntrack (and Linux/AWS): rules are checked when a flow
//! starts, not per packet. This keeps established traffic O(1) in the number of rules. Entries
//! remember the endpoints they were admitted between, so an address that moves to another ENI
//! does not inherit the old ENI's flows.
//!
//! Memory: connections live in a slab reserved up front (no allocation on the frame path) and
//! the index maps compact 20-byte tuples to a 4-byte slot: about 80 bytes a connection plus 25
//! per indexed tuple and the hash table's slack (BENCHMARKS.md has the measured figure).
//!
//! Must not: read a clock (time comes in as `now`) or grow without bound (`max_entries`).
//!
//! IPv6 flows are tracked by the same code in a table of their own ([`FlowKey6`] tuples): the
//! table is generic over the tuple ([`Tuple`]), so IPv4 keys stay 20 bytes and the two families
//! share every rule above. Translation (load balancing) exists for IPv4 only.

use core::fmt::Debug;
use core::hash::Hash;
use core::net::{Ipv4Addr, Ipv6Addr};
use std::collections::HashMap;
use std::hash::RandomState;

use crate::Instant;
use crate::config::{FixedMap, Timeouts};
use crate::wire::l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// A packet's tuple in one namespace. `ns` is the VPC's stable key (or the internet side's)
/// folded to 32 bits: the index stays compact, and a fold collision between two VPCs could at
/// worst make a flow be judged afresh, since connections also check their endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    pub ns: u32,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// An IPv6 packet's tuple in one namespace (a VPC): as [`FlowKey`], with 128-bit addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey6 {
    pub ns: u32,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// What the table needs of a tuple: its reverse, its protocol, and the reply tuple a
/// translation gives it (IPv4 only; an IPv6 connection is never translated).
pub(crate) trait Tuple: Copy + Eq + Hash + Debug {
    fn reversed(&self) -> Self;
    fn proto(&self) -> u8;
    fn translated_reply(&self, nat: &Nat) -> Self;
}

impl Tuple for FlowKey {
    fn reversed(&self) -> FlowKey {
        FlowKey::reversed(self)
    }

    fn proto(&self) -> u8 {
        self.proto
    }

    fn translated_reply(&self, n: &Nat) -> FlowKey {
        FlowKey {
            ns: n.reply_ns,
            src: n.backend,
            dst: self.src,
            sport: n.backend_port,
            dport: self.sport,
            proto: self.proto,
        }
    }
}

impl Tuple for FlowKey6 {
    fn reversed(&self) -> FlowKey6 {
        FlowKey6 { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, ..*self }
    }

    fn proto(&self) -> u8 {
        self.proto
    }

    /// Never asked: no IPv6 connection carries a translation. The plain reply, to be safe.
    fn translated_reply(&self, _: &Nat) -> FlowKey6 {
        self.reversed()
    }
}

/// The 32-bit namespace of a VPC (or internet) key.
pub(crate) fn ns(key: u64) -> u32 {
    (key as u32) ^ ((key >> 32) as u32)
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

    pub(crate) fn timeout(self, t: &Timeouts) -> u64 {
        match self {
            FlowState::TcpSynSent | FlowState::TcpSynReceived => t.tcp_handshake,
            FlowState::TcpEstablished | FlowState::TcpHalfClosed => t.tcp_established,
            FlowState::TcpClosed => t.tcp_closed,
            FlowState::Udp | FlowState::Other => t.udp,
            FlowState::IcmpEcho => t.icmp,
        }
    }
}

/// A load balancer's translation of a flow: the original direction's destination (the VIP and
/// listener port, which are the original tuple's `dst`/`dport`) becomes this backend, and the
/// reply's source becomes the VIP again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Nat {
    pub backend: Ipv4Addr,
    pub backend_port: u16,
    /// Namespace of the backend's side, where the reply tuple lives.
    pub reply_ns: u32,
    /// The listener that chose the backend (for its flow counts).
    pub listener: u64,
}

/// The state of one tracked connection, as the pipeline reads and writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub state: FlowState,
    pub expires: u64,
    /// `stable_key` of the endpoints the flow was admitted from and to (for a translated flow,
    /// the client and the backend).
    pub src_eni: u64,
    pub dst_eni: u64,
    pub fin_original: bool,
    pub fin_reply: bool,
    pub nat: Option<Nat>,
}

/// A connection in the slab: its original tuple and its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Conn<K = FlowKey> {
    pub orig: K,
    pub entry: Entry,
}

impl<K: Tuple> Conn<K> {
    /// What replies look like, in the namespace they are sent in.
    pub fn reply_key(&self) -> K {
        match &self.entry.nat {
            None => self.orig.reversed(),
            Some(n) => self.orig.translated_reply(n),
        }
    }

    /// The tuples the index holds for this connection: the original, and for a translated flow
    /// the reply too.
    fn indexed(&self) -> ([K; 2], usize) {
        match self.entry.nat {
            None => ([self.orig, self.orig], 1),
            Some(_) => ([self.orig, self.reply_key()], 2),
        }
    }
}

/// What the layer-4 header says, as far as tracking cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L4Info {
    Tcp { flags: u8 },
    Udp,
    IcmpEcho,
    Other,
}

/// Which tuples a lookup may match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dirs {
    /// The packet's own tuple, as an original or (translated flows) a reply; then its reverse,
    /// as the original of an untranslated flow.
    Both,
    /// Only as an original (an echo request starts or continues its own exchange).
    OriginalOnly,
    /// The key given is already the original tuple the packet would reply to (an echo reply).
    ReplyOnly,
}

/// A new entry for the first packet of a flow, or `None` for a packet that must not start one
/// (a lone RST: it ends things, it does not open them).
pub(crate) fn start(
    l4: L4Info,
    now: Instant,
    t: &Timeouts,
    src_eni: u64,
    dst_eni: u64,
    nat: Option<Nat>,
) -> Option<Entry> {
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
    let mut e = Entry { state, expires: 0, src_eni, dst_eni, fin_original: false, fin_reply: false, nat };
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

/// Whether the live connection `old` gives way to the new connection `new` that claims one of
/// its tuples: a closed TCP connection does, to a new TCP one.
fn gives_way<K: Tuple>(old: &Conn<K>, new: &Conn<K>) -> bool {
    old.entry.state == FlowState::TcpClosed && new.orig.proto() == crate::wire::ipv4::PROTO_TCP
}

/// ICMP (IPv4) and ICMPv6: the protocols whose echo exchanges may cross with one identifier.
fn is_echo_protocol(proto: u8) -> bool {
    proto == crate::wire::ipv4::PROTO_ICMP || proto == PROTO_ICMPV6
}

/// ICMPv6's protocol number (next header 58).
pub(crate) const PROTO_ICMPV6: u8 = 58;

/// Slot numbers in the index carry this bit when the tuple is a connection's reply tuple.
const REPLY_BIT: u32 = 1 << 31;

/// A live connection a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found<K = FlowKey> {
    pub slot: u32,
    pub dir: FlowDir,
    pub conn: Conn<K>,
}

/// Why a new connection cannot be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertError {
    /// Every slot holds a live connection.
    Full,
    /// A live connection holds one of its tuples, or the reverse of one.
    Clash,
}

/// Flows per (listener, backend address, backend port), for the least-connections scheduler.
pub(crate) type BackendKey = (u64, Ipv4Addr, u16);

/// The connection table.
#[derive(Debug)]
pub(crate) struct Conntrack<K = FlowKey> {
    slots: Vec<Option<Conn<K>>>,
    free: Vec<u32>,
    index: HashMap<K, u32, RandomState>,
    live: usize,
    /// Translated connections per backend; keys are created when the snapshot names the
    /// backend ([`Conntrack::sync_backends`]), so the frame path never inserts.
    per_backend: FixedMap<BackendKey, u32>,
}

impl<K: Tuple> Conntrack<K> {
    pub fn new(max_entries: usize, hasher: RandomState) -> Conntrack<K> {
        let max = max_entries.min(REPLY_BIT as usize - 1);
        // Reserved up front so that admitting a flow does not allocate on the frame path; a
        // translated flow has two tuples, and most flows of a busy fabric are translated only
        // when a load balancer is in front, so the index is sized for the worst case.
        Conntrack {
            slots: vec![None; max],
            free: (0..max as u32).rev().collect(),
            index: HashMap::with_capacity_and_hasher(max.saturating_mul(2), hasher),
            live: 0,
            per_backend: FixedMap::default(),
        }
    }

    fn conn(&self, slot: u32) -> Option<&Conn<K>> {
        self.slots.get((slot & !REPLY_BIT) as usize)?.as_ref()
    }

    fn live_at(&self, key: &K, now: Instant) -> Option<(u32, &Conn<K>)> {
        let slot = *self.index.get(key)?;
        let c = self.conn(slot)?;
        (c.entry.expires > now.0).then_some((slot, c))
    }

    /// The live connection a packet with tuple `key` belongs to, and the packet's direction.
    pub fn lookup(&self, key: &K, dirs: Dirs, now: Instant) -> Option<Found<K>> {
        let found = |slot: u32, c: &Conn<K>, dir| Found { slot: slot & !REPLY_BIT, dir, conn: *c };
        match dirs {
            Dirs::Both => {
                if let Some((slot, c)) = self.live_at(key, now) {
                    let dir = if slot & REPLY_BIT != 0 { FlowDir::Reply } else { FlowDir::Original };
                    return Some(found(slot, c, dir));
                }
                // An untranslated flow's reply is its original reversed. The reverse of a
                // translated flow's reply tuple (client → backend, directly) is not part of it.
                let (slot, c) = self.live_at(&key.reversed(), now)?;
                (slot & REPLY_BIT == 0 && c.entry.nat.is_none()).then(|| found(slot, c, FlowDir::Reply))
            }
            Dirs::OriginalOnly => {
                let (slot, c) = self.live_at(key, now)?;
                (slot & REPLY_BIT == 0).then(|| found(slot, c, FlowDir::Original))
            }
            Dirs::ReplyOnly => {
                let (slot, c) = self.live_at(key, now)?;
                (slot & REPLY_BIT == 0).then(|| found(slot, c, FlowDir::Reply))
            }
        }
    }

    /// Whether `conn` could be stored now: no live connection holds its tuples or their
    /// reverses, and a slot is free (or held by an expired connection, which would be reused).
    /// `replacing`: a live connection the new one supersedes (a port reopened after close, an
    /// address that moved), whose tuples do not count as a clash.
    ///
    /// A closed TCP connection (FIN both ways, or RST) never blocks a new TCP one: like a socket
    /// in TIME_WAIT, it gives way to a new connection on its ports, which takes its place.
    pub fn check_insert(&self, conn: &Conn<K>, now: Instant, replacing: Option<u32>) -> Result<(), InsertError> {
        let (keys, n) = conn.indexed();
        let live_at = |k: &K| {
            self.live_at(k, now)
                .filter(|(slot, _)| Some(slot & !REPLY_BIT) != replacing)
                .filter(|(_, c)| !gives_way(c, conn))
        };
        for (i, k) in keys[..n].iter().enumerate() {
            if live_at(k).is_some() {
                return Err(InsertError::Clash);
            }
            // The reverse of a tuple held as another flow's reply tuple: the two flows' packets
            // would be taken for each other's. The reverse of our own reply tuple held as an
            // original (a direct flow client → backend): its replies are ours. The reverse of
            // our original held as an original is only allowed for echo requests crossing
            // (each side pinging the other with one identifier), which are separate exchanges;
            // a TCP or UDP packet that reverses a flow's original is that flow's reply.
            if let Some((slot, _)) = live_at(&k.reversed())
                && (slot & REPLY_BIT != 0 || i == 1 || !is_echo_protocol(k.proto()))
            {
                return Err(InsertError::Clash);
            }
        }
        let reusable = replacing.is_some() || keys[..n].iter().any(|k| self.index.contains_key(k));
        if self.free.is_empty() && !reusable { Err(InsertError::Full) } else { Ok(()) }
    }

    /// Stores a new connection (checked with [`Conntrack::check_insert`] by the caller: a
    /// connection that no longer fits is not stored). Expired connections holding its tuples
    /// are forgotten first.
    /// Returns the slot it took.
    pub fn insert(&mut self, conn: Conn<K>, now: Instant, replacing: Option<u32>) -> Option<u32> {
        if self.check_insert(&conn, now, replacing).is_err() {
            return None;
        }
        if let Some(slot) = replacing {
            self.remove(slot);
        }
        let (keys, n) = conn.indexed();
        // `check_insert` passed, so whatever holds one of our tuples has expired or gives way,
        // and so does a closed connection holding the reverse of one.
        for k in &keys[..n] {
            if let Some(&slot) = self.index.get(k) {
                self.remove(slot & !REPLY_BIT);
            }
            if let Some(&slot) = self.index.get(&k.reversed())
                && self.conn(slot).is_some_and(|c| c.entry.expires <= now.0 || gives_way(c, &conn))
            {
                self.remove(slot & !REPLY_BIT);
            }
        }
        let slot = self.free.pop()?;
        self.index.insert(keys[0], slot);
        if n == 2 {
            self.index.insert(keys[1], slot | REPLY_BIT);
        }
        if let Some(nat) = conn.entry.nat
            && let Some(count) = self.per_backend.get_mut(&(nat.listener, nat.backend, nat.backend_port))
        {
            *count += 1;
        }
        self.slots[slot as usize] = Some(conn);
        self.live += 1;
        Some(slot)
    }

    /// Whether `slot` holds a connection (live or expired but not yet reclaimed).
    pub fn holds(&self, slot: u32) -> bool {
        self.conn(slot).is_some()
    }

    /// Replaces the state of the connection in `slot` (its tuples do not change).
    pub fn update(&mut self, slot: u32, entry: Entry) {
        if let Some(Some(c)) = self.slots.get_mut(slot as usize) {
            debug_assert_eq!(c.entry.nat, entry.nat, "a connection's translation never changes");
            c.entry = entry;
        }
    }

    /// The flow in `slot` was seen at `now` (carried by a node's fast path): it lives on as a
    /// packet here would have kept it.
    pub fn touch(&mut self, slot: u32, now: Instant, timeouts: &Timeouts) {
        if let Some(Some(c)) = self.slots.get_mut(slot as usize) {
            let until = now.0.saturating_add(c.entry.state.timeout(timeouts));
            c.entry.expires = c.entry.expires.max(until);
        }
    }

    fn remove(&mut self, slot: u32) {
        let Some(c) = self.slots.get_mut(slot as usize).and_then(Option::take) else { return };
        let (keys, n) = c.indexed();
        for k in &keys[..n] {
            if self.index.get(k).is_some_and(|s| s & !REPLY_BIT == slot) {
                self.index.remove(k);
            }
        }
        if let Some(nat) = c.entry.nat
            && let Some(count) = self.per_backend.get_mut(&(nat.listener, nat.backend, nat.backend_port))
        {
            *count = count.saturating_sub(1);
        }
        self.free.push(slot);
        self.live -= 1;
    }

    /// Forgets every connection that has expired at `now`; returns how many. The shell calls
    /// this periodically (about once a second is plenty): lookups already ignore them.
    pub fn expire(&mut self, now: Instant) -> usize {
        let expired: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.filter(|c| c.entry.expires <= now.0).map(|_| i as u32))
            .collect();
        for slot in &expired {
            self.remove(*slot);
        }
        expired.len()
    }

    /// Makes `backends` the set whose translated flows are counted (the snapshot's), keeping
    /// the counts of those that stay.
    pub fn sync_backends(&mut self, backends: impl IntoIterator<Item = BackendKey>) {
        let mut next: FixedMap<BackendKey, u32> = backends.into_iter().map(|k| (k, 0)).collect();
        for (k, v) in next.iter_mut() {
            *v = self.per_backend.get(k).copied().unwrap_or(0);
        }
        // Flows to a backend that was removed and comes back are counted again from its flows.
        if next.values().all(|v| *v == 0) && self.live > 0 {
            for c in self.slots.iter().flatten() {
                if let Some(nat) = c.entry.nat
                    && let Some(n) = next.get_mut(&(nat.listener, nat.backend, nat.backend_port))
                {
                    *n += 1;
                }
            }
        }
        self.per_backend = next;
    }

    /// Tracked translated flows of one backend of one listener.
    pub fn flows_to(&self, key: &BackendKey) -> u32 {
        self.per_backend.get(key).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn iter(&self) -> impl Iterator<Item = &Conn<K>> {
        self.slots.iter().flatten()
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

    fn key(sport: u16, dport: u16) -> FlowKey {
        FlowKey { ns: 1, proto: 17, src: Ipv4Addr::new(10, 0, 0, 1), dst: Ipv4Addr::new(10, 0, 0, 2), sport, dport }
    }

    fn conn(orig: FlowKey, nat: Option<Nat>) -> Conn {
        Conn { orig, entry: start(L4Info::Udp, Instant(0), &t(), 1, 2, nat).unwrap() }
    }

    #[test]
    fn tcp_lifecycle_picks_timeouts() {
        let t = t();
        let e = start(tcp(TCP_SYN), Instant(0), &t, 1, 2, None).unwrap();
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
        assert!(start(tcp(TCP_RST), Instant(0), &t, 1, 2, None).is_none());
        let e = start(tcp(TCP_ACK), Instant(0), &t, 1, 2, None).unwrap();
        assert_eq!(e.state, FlowState::TcpEstablished, "mid-stream pickup");
        let e = advance(&e, FlowDir::Reply, tcp(TCP_RST), Instant(0), &t);
        assert_eq!((e.state, e.expires), (FlowState::TcpClosed, 3 * S));
    }

    #[test]
    fn table_bounds_and_expiry() {
        let mut ct = Conntrack::new(2, RandomState::new());
        ct.insert(conn(key(1, 53), None), Instant(0), None);
        ct.insert(conn(key(2, 53), None), Instant(0), None);
        assert_eq!(ct.check_insert(&conn(key(3, 53), None), Instant(0), None), Err(InsertError::Full));
        ct.insert(conn(key(3, 53), None), Instant(0), None);
        assert_eq!(ct.len(), 2);
        let found = ct.lookup(&key(1, 53), Dirs::Both, Instant(30 * S - 1)).unwrap();
        assert_eq!(found.dir, FlowDir::Original);
        assert_eq!(ct.lookup(&key(1, 53).reversed(), Dirs::Both, Instant(0)).unwrap().dir, FlowDir::Reply);
        assert!(ct.lookup(&key(1, 53), Dirs::Both, Instant(30 * S)).is_none());
        assert_eq!(ct.expire(Instant(30 * S)), 2);
        assert_eq!(ct.len(), 0);
        assert!(ct.index.is_empty());
    }

    #[test]
    fn a_translated_flow_is_found_from_both_tuples() {
        let mut ct = Conntrack::new(8, RandomState::new());
        let vip = key(40000, 80);
        let nat = Nat { backend: Ipv4Addr::new(10, 0, 1, 5), backend_port: 8080, reply_ns: 1, listener: 7 };
        ct.sync_backends([(7, nat.backend, 8080)]);
        ct.insert(conn(vip, Some(nat)), Instant(0), None);
        assert_eq!(ct.flows_to(&(7, nat.backend, 8080)), 1);
        let reply = FlowKey { src: nat.backend, dst: vip.src, sport: 8080, dport: 40000, ..vip };
        let f = ct.lookup(&reply, Dirs::Both, Instant(0)).unwrap();
        assert_eq!((f.dir, f.conn.orig), (FlowDir::Reply, vip));
        // The client reaching the backend directly from the same port is not this flow, and
        // may not start one of its own: its replies would be un-translated for the other.
        let direct = reply.reversed();
        assert!(ct.lookup(&direct, Dirs::Both, Instant(0)).is_none());
        assert_eq!(ct.check_insert(&conn(direct, None), Instant(0), None), Err(InsertError::Clash));
        // Nor may a second VIP flow whose reply would be the same.
        let other_vip = FlowKey { dst: Ipv4Addr::new(10, 0, 0, 99), ..vip };
        assert_eq!(ct.check_insert(&conn(other_vip, Some(nat)), Instant(0), None), Err(InsertError::Clash));
        assert_eq!(ct.expire(Instant(31 * S)), 1);
        assert_eq!(ct.flows_to(&(7, nat.backend, 8080)), 0);
        assert!(ct.index.is_empty());
        assert!(ct.check_insert(&conn(direct, None), Instant(31 * S), None).is_ok());
    }

    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// A flow from client `c` port `p` to backend `b` port 80, directly or through VIP `v`.
        Flow {
            c: u8,
            p: u16,
            b: u8,
            via_vip: Option<u8>,
            udp: bool,
        },
        Advance(u8),
        Expire,
        /// The n-th live connection closes (FIN both ways).
        Close(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..3, 1u16..4, 0u8..3, proptest::option::of(0u8..2), any::<bool>())
                .prop_map(|(c, p, b, via_vip, udp)| Op::Flow { c, p, b, via_vip, udp }),
            1 => (1u8..40).prop_map(Op::Advance),
            1 => Just(Op::Expire),
            2 => any::<u8>().prop_map(Op::Close),
        ]
    }

    proptest! {
        /// Whatever flows are offered, direct or translated, in a small address space that forces
        /// collisions: every live connection is found from its own two tuples and only from
        /// them, so no reply tuple ever maps to two flows.
        #[test]
        fn one_reply_never_maps_to_two_flows(ops in proptest::collection::vec(op(), 1..120)) {
            let mut ct = Conntrack::new(16, RandomState::new());
            let mut now = Instant(0);
            let client = |c: u8| Ipv4Addr::new(10, 0, 0, 10 + c);
            let backend = |b: u8| Ipv4Addr::new(10, 0, 1, 10 + b);
            for op in ops {
                match op {
                    Op::Flow { c, p, b, via_vip, udp } => {
                        let proto = if udp { 17 } else { 6 };
                        let dst = via_vip.map_or(backend(b), |v| Ipv4Addr::new(10, 0, 2, v));
                        let orig = FlowKey { ns: 1, src: client(c), dst, sport: p, dport: 80, proto };
                        let nat = via_vip.map(|v| Nat { backend: backend(b), backend_port: 80, reply_ns: 1, listener: u64::from(v) });
                        let l4 = if udp { L4Info::Udp } else { L4Info::Tcp { flags: TCP_SYN } };
                        let entry = start(l4, now, &t(), u64::from(c), 100 + u64::from(b), nat).unwrap();
                        let conn = Conn { orig, entry };
                        if ct.check_insert(&conn, now, None).is_ok() {
                            ct.insert(conn, now, None);
                        }
                    }
                    Op::Advance(s) => now = Instant(now.0 + u64::from(s) * S),
                    Op::Expire => { ct.expire(now); }
                    Op::Close(n) => {
                        let live: Vec<u32> = ct.slots.iter().enumerate()
                            .filter_map(|(i, c)| c.filter(|c| c.entry.expires > now.0).map(|_| i as u32)).collect();
                        if !live.is_empty() {
                            let slot = live[usize::from(n) % live.len()];
                            let mut e = ct.slots[slot as usize].unwrap().entry;
                            e.state = FlowState::TcpClosed;
                            e.expires = now.0 + 3 * S;
                            ct.update(slot, e);
                        }
                    }
                }
                let live: Vec<(u32, Conn)> = ct.slots.iter().enumerate()
                    .filter_map(|(i, c)| c.filter(|c| c.entry.expires > now.0).map(|c| (i as u32, c)))
                    .collect();
                let mut replies = std::collections::HashSet::new();
                for (slot, c) in &live {
                    prop_assert!(replies.insert(c.reply_key()), "two flows reply alike: {:?}", c);
                    let o = ct.lookup(&c.orig, Dirs::Both, now).expect("found by its original");
                    prop_assert_eq!((o.slot, o.dir), (*slot, FlowDir::Original));
                    let r = ct.lookup(&c.reply_key(), Dirs::Both, now).expect("found by its reply");
                    prop_assert_eq!((r.slot, r.dir), (*slot, FlowDir::Reply));
                }
                prop_assert_eq!(ct.len(), ct.slots.iter().flatten().count());
                prop_assert!(ct.index.len() <= 2 * ct.len());
            }
        }
    }
}
