//! What the pipeline lets the nodes' kernels carry by themselves: *grants* for admitted flows,
//! and what a node reports back about the packets it carried.
//!
//! The pipeline stays the one decider (ARCHITECTURE.md §8). When it forwards a packet of a flow
//! that the kernel can carry exactly as the pipeline would — an untranslated TCP flow once
//! established, or a UDP flow, between two ENIs whose nodes both have a fast path — it also
//! queues four entries (see [`wire::fastpath`]): on each node, an egress entry for the flow's
//! direction leaving it and an ingress entry for the direction arriving, with the rewrite the
//! pipeline itself makes (gateway source MAC, the receiving port's MAC, the member's tag).
//! Anything else stays on the slow path: load-balanced and internet flows (central hops), the
//! gateway's own addresses, ICMP, fragments, and the TCP segments that move conntrack's state
//! (SYN, FIN, RST: the node's program sends those here).
//!
//! IPv6 flows are granted by the same rules, from the IPv6 conntrack table, with entries of
//! their own ([`Update::Grant6`]: they travel in IPv6 messages); ICMPv6 (neighbour discovery
//! included), fragments and the fabric's own IPv6 addresses stay here as their IPv4
//! counterparts do, and so does every IPv6 packet with an extension header before its TCP or UDP
//! header (the node's program carries only a next header that is TCP or UDP itself). Reports of
//! IPv6 flows keep them alive in that table.
//!
//! Every entry carries the snapshot's epoch; a node uses it only while its own epoch is that
//! one, and the shell revokes every node's epoch (and waits for the acknowledgements) before a
//! new snapshot is in force. So a cached verdict never outlives the configuration that made it:
//! after a change, a flow's next packet is judged here again, and granted again if it still
//! passes. Conntrack itself does not re-judge live flows on a change (see `conntrack`), so an
//! established flow is granted again at once, as the cloud keeps it.
//!
//! A grant is repeated at most once a second per flow (a node that lost the datagram asks again
//! by sending the flow's packets here). Reports keep the flow alive in conntrack and add the
//! carried packets to the ports' counters, so `DescribeFabricCounters` counts both paths.
//!
//! A port being captured (`enifab capture`, [`FabricConfig::is_captured`]) gets no grants: its
//! flows stay on the slow path while the capture lasts, and the snapshot that marks it revokes
//! what the nodes' kernels carried of them before.
//!
//! Must not: grant anything the same packet would not have been forwarded for, or grant a
//! translated flow.

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::collections::HashMap;

use crate::Instant;
use crate::config::{Eni, EniIdx, FabricConfig};
use crate::conntrack::{self, FlowKey, FlowKey6, FlowState};
use crate::wire::fastpath::{Addr, EgressEntry, Entry, Entry6, IngressEntry, Tuple};
use crate::wire::geneve::Vni;
use crate::wire::vlan::Tci;

/// How long a flow waits before it is granted again (its packets still arriving here).
const REGRANT_NS: u64 = 1_000_000_000;

/// A forwarded packet the pipeline found eligible, waiting for the commit; `K` is the family's
/// conntrack key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<K> {
    pub key: K,
    pub src: EniIdx,
    pub dst: EniIdx,
}

/// A candidate of either family, as the pipeline's outcome carries it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AnyCandidate {
    V4(Candidate<FlowKey>),
    V6(Candidate<FlowKey6>),
}

/// What a node's kernel is told: carry this flow, or stop carrying it. IPv6 flows have
/// variants of their own, since they travel in messages of their own (`wire::fastpath`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    Grant(Entry),
    Evict(Entry),
    Grant6(Entry6),
    Evict6(Entry6),
}

/// An address family's [`Update`]s.
pub(crate) trait Family: Addr {
    fn update(grant: bool, e: Entry<Self>) -> Update;
}

impl Family for Ipv4Addr {
    fn update(grant: bool, e: Entry) -> Update {
        if grant { Update::Grant(e) } else { Update::Evict(e) }
    }
}

impl Family for Ipv6Addr {
    fn update(grant: bool, e: Entry6) -> Update {
        if grant { Update::Grant6(e) } else { Update::Evict6(e) }
    }
}

/// What granting needs of a family's conntrack key: the tuple the nodes' maps are keyed by,
/// and where the family's flows are remembered.
pub(crate) trait GrantKey: conntrack::Tuple {
    type Addr: Family;
    fn tuple(&self) -> Tuple<Self::Addr>;
    fn last(g: &mut Grants) -> &mut HashMap<Self, u64>;
}

impl GrantKey for FlowKey {
    type Addr = Ipv4Addr;

    fn tuple(&self) -> Tuple {
        Tuple { protocol: self.proto, src: self.src, dst: self.dst, sport: self.sport, dport: self.dport }
    }

    fn last(g: &mut Grants) -> &mut HashMap<FlowKey, u64> {
        &mut g.last
    }
}

impl GrantKey for FlowKey6 {
    type Addr = Ipv6Addr;

    fn tuple(&self) -> Tuple<Ipv6Addr> {
        Tuple { protocol: self.proto, src: self.src, dst: self.dst, sport: self.sport, dport: self.dport }
    }

    fn last(g: &mut Grants) -> &mut HashMap<FlowKey6, u64> {
        &mut g.last6
    }
}

/// Grants queued for the shell, and when each flow was last granted in this epoch (one map per
/// family: the two conntrack tables' keys).
#[derive(Debug, Default)]
pub(crate) struct Grants {
    last: HashMap<FlowKey, u64>,
    last6: HashMap<FlowKey6, u64>,
    queue: Vec<(SocketAddr, Update)>,
}

impl Grants {
    /// A new snapshot: nothing granted so far holds. Grants still queued are dropped too: they
    /// were decided under the old snapshot, and the shell stamps what it sends with the new
    /// epoch. (The shell drains the queue every round, before it looks for a new snapshot, so
    /// this is a guard, not a path.) Queued evictions still go.
    pub fn reset(&mut self) {
        self.last.clear();
        self.last6.clear();
        self.queue.retain(|(_, u)| matches!(u, Update::Evict(_) | Update::Evict6(_)));
    }

    pub fn take(&mut self) -> std::vec::Drain<'_, (SocketAddr, Update)> {
        self.queue.drain(..)
    }

    /// A granted flow is closing (a FIN or RST went through): both nodes forget its four
    /// entries, so nothing of it is carried on a verdict conntrack no longer holds. The
    /// segments still to come (the other side's, a half-close's) go through the pipeline.
    pub fn close(&mut self, cfg: &FabricConfig, c: AnyCandidate) {
        match c {
            AnyCandidate::V4(c) => self.close_in(cfg, c),
            AnyCandidate::V6(c) => self.close_in(cfg, c),
        }
    }

    fn close_in<K: GrantKey>(&mut self, cfg: &FabricConfig, c: Candidate<K>) {
        if K::last(self).remove(&canonical(&c.key)).is_none() {
            return;
        }
        self.entries(cfg, c, 0, false);
    }

    /// A node reported a flow conntrack does not hold (any more) between those ends: it
    /// forgets that entry.
    pub fn forget<A: Family>(&mut self, peer: SocketAddr, src_vni: Vni, src_vlan: u16, tuple: Tuple<A>) {
        let entry =
            EgressEntry { src_vni, src_vlan, tuple, peer: Ipv4Addr::UNSPECIFIED, dst_vni: src_vni, idle_secs: 0 };
        self.queue.push((peer, A::update(false, Entry::Egress(entry))));
    }

    /// Forgets flows not granted for a while that conntrack no longer holds (`live4`, `live6`;
    /// called with conntrack's expiry). A flow the kernels carry reaches the pipeline only with
    /// its FIN or RST, maybe hours after its grant: it is remembered as long as it lives, so that
    /// segment evicts it (`close`). Bounded by the conntrack tables.
    pub fn expire(&mut self, now: Instant, live4: impl Fn(&FlowKey) -> bool, live6: impl Fn(&FlowKey6) -> bool) {
        let recent = |t: &u64| now.0.saturating_sub(*t) < 60 * REGRANT_NS;
        self.last.retain(|k, t| recent(t) || live4(k));
        self.last6.retain(|k, t| recent(t) || live6(k));
    }

    /// Queues the four entries for `c` unless they went out less than a second ago.
    pub fn offer(&mut self, cfg: &FabricConfig, c: AnyCandidate, idle_ns: u64, now: Instant) {
        match c {
            AnyCandidate::V4(c) => self.offer_in(cfg, c, idle_ns, now),
            AnyCandidate::V6(c) => self.offer_in(cfg, c, idle_ns, now),
        }
    }

    fn offer_in<K: GrantKey>(&mut self, cfg: &FabricConfig, c: Candidate<K>, idle_ns: u64, now: Instant) {
        let canonical = canonical(&c.key);
        if K::last(self).get(&canonical).is_some_and(|t| now.0.saturating_sub(*t) < REGRANT_NS) {
            return;
        }
        if self.entries(cfg, c, idle_ns, true) {
            K::last(self).insert(canonical, now.0);
        }
    }

    /// Queues the flow's four entries as grants (or evictions); false when a node has no fast
    /// path.
    fn entries<K: GrantKey>(&mut self, cfg: &FabricConfig, c: Candidate<K>, idle_ns: u64, grant: bool) -> bool {
        let (a, b) = (cfg.eni(c.src), cfg.eni(c.dst));
        // A captured port keeps its flows here, where the capture sees them.
        if cfg.is_captured(a.vni) || cfg.is_captured(b.vni) {
            return false;
        }
        let (Some(pa), Some(pb)) = (cfg.ports.get(&a.vni), cfg.ports.get(&b.vni)) else { return false };
        let (Some(ua), Some(ub)) = (pa.fast_path, pb.fast_path) else { return false };
        let idle_secs = u32::try_from(idle_ns.div_ceil(1_000_000_000)).unwrap_or(u32::MAX).max(1);
        let forward = c.key.tuple();
        let reply = forward.reversed();
        let vlan = |e: &Eni| e.tag.map_or(0, Tci::vid);
        let egress = |from: &Eni, to: &Eni, tuple, peer: Ipv4Addr| {
            Entry::Egress(EgressEntry {
                src_vni: from.vni,
                src_vlan: vlan(from),
                tuple,
                peer,
                dst_vni: to.vni,
                idle_secs,
            })
        };
        let ingress = |to: &Eni, mac, tuple, peer: Ipv4Addr| {
            Entry::Ingress(IngressEntry { dst_vni: to.vni, dst_vlan: vlan(to), dst_mac: mac, tuple, peer, idle_secs })
        };
        let what = |e| K::Addr::update(grant, e);
        // The receiving side first: an egress entry in force before its ingress entry would drop
        // the packets between the two.
        self.queue.push((pb.peer, what(ingress(b, pb.mac, forward, ua))));
        self.queue.push((pa.peer, what(ingress(a, pa.mac, reply, ub))));
        self.queue.push((pa.peer, what(egress(a, b, forward, ub))));
        self.queue.push((pb.peer, what(egress(b, a, reply, ua))));
        true
    }
}

/// One key per flow, whichever direction a packet went.
fn canonical<K: GrantKey>(k: &K) -> K {
    let t = k.tuple();
    if (t.src, t.sport) <= (t.dst, t.dport) { *k } else { k.reversed() }
}

/// Is a flow in this state one the kernel may carry?
pub(crate) fn cacheable(state: FlowState) -> bool {
    matches!(state, FlowState::TcpEstablished | FlowState::Udp)
}

/// The port and tag a report names, as the pipeline's demux would find the sender.
pub(crate) fn reporter(cfg: &FabricConfig, vni: Vni, vlan: u16) -> Option<EniIdx> {
    if vlan == 0 { cfg.ports.get(&vni)?.eni } else { cfg.by_vlan.get(&(vni, vlan)).copied() }
}
