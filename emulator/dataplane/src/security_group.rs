//! Security-group evaluation, exactly as reference §8.2/§8.3 describes the cloud:
//!
//! 1. Basic groups with `InnerAccessPolicy=Accept` shared by both ENIs admit the packet before
//!    any rule ("the highest priority of all rules, other user rules are ignored").
//! 2. Otherwise the ENI's rules for the direction, from all its groups, are tried in the order
//!    the snapshot pre-sorted them (priority 1 first, drop before accept at equal priority); the
//!    first match decides.
//! 3. No match: ingress is denied, except from 100.64.0.0/10 (CLB health checks need no rule);
//!    egress is allowed for basic groups (or no group) and denied for enterprise groups.
//!
//! A packet crossing the fabric is judged twice: egress of the sending ENI, then ingress of the
//! receiving one, also when both are members of the same trunk (that is what distinguishes
//! Terway's VLAN datapath from its veth one). Only the first packet of a flow gets here;
//! conntrack admits the rest. Must not allocate: the result names rules by index and is turned
//! into strings only for drop reasons and traces.
//!
//! Both families go through the same evaluation ([`RuleAddr`]): a rule with an IPv4 peer never
//! matches an IPv6 packet and the other way round, a group peer holds its members' addresses of
//! both families (and their IPv6 prefixes), and the health-check range exists for IPv4 only.

use core::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::config::{Cidr, CompiledPeer, CompiledRule, Direction, Eni, FabricConfig, GroupIdx, Policy, prefix80};

/// CLB health checks and other Alibaba services come from here (reference §8.2 item 7).
pub const HEALTH_CHECK_CIDR: Cidr = match Cidr::containing_const(Ipv4Addr::new(100, 64, 0, 0), 10) {
    Some(c) => c,
    None => panic!("constant CIDR"),
};

/// The fields rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PacketMeta<A = Ipv4Addr> {
    pub proto: u8,
    pub src: A,
    pub dst: A,
    /// Only for TCP and UDP.
    pub ports: Option<(u16, u16)>,
}

/// An address of one family, as rules see it.
pub(crate) trait RuleAddr: Copy {
    /// Whether the rule's peer names this address.
    fn in_peer(self, cfg: &FabricConfig, peer: &CompiledPeer) -> bool;
    /// Whether the rule's own side (if it names one) holds this address.
    fn in_local(self, r: &CompiledRule) -> bool;
    /// Ingress no rule matched that the cloud admits anyway (its health checks).
    fn is_health_check(self) -> bool;
}

impl RuleAddr for Ipv4Addr {
    fn in_peer(self, cfg: &FabricConfig, peer: &CompiledPeer) -> bool {
        match peer {
            CompiledPeer::Cidr(c) => c.contains(self),
            CompiledPeer::Group(g) => cfg.group(*g).members.contains(&self),
            CompiledPeer::Cidr6(_) | CompiledPeer::Nothing => false,
        }
    }

    fn in_local(self, r: &CompiledRule) -> bool {
        r.local6.is_none() && r.local.is_none_or(|c| c.contains(self))
    }

    fn is_health_check(self) -> bool {
        HEALTH_CHECK_CIDR.contains(self)
    }
}

impl RuleAddr for Ipv6Addr {
    fn in_peer(self, cfg: &FabricConfig, peer: &CompiledPeer) -> bool {
        match peer {
            CompiledPeer::Cidr6(c) => c.contains(self),
            CompiledPeer::Group(g) => {
                let g = cfg.group(*g);
                g.members6.contains(&self) || g.member_prefixes6.contains(&prefix80(self))
            }
            CompiledPeer::Cidr(_) | CompiledPeer::Nothing => false,
        }
    }

    fn in_local(self, r: &CompiledRule) -> bool {
        r.local.is_none() && r.local6.is_none_or(|c| c.contains(self))
    }

    fn is_health_check(self) -> bool {
        false
    }
}

/// Why one direction admitted or refused a packet (internal, index-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judgement {
    Rule(CompiledRule),
    Default(Policy),
    InnerAccess(GroupIdx),
    HealthCheck,
}

impl Judgement {
    pub fn policy(&self) -> Policy {
        match self {
            Judgement::Rule(r) => r.policy,
            Judgement::Default(p) => *p,
            Judgement::InnerAccess(_) | Judgement::HealthCheck => Policy::Accept,
        }
    }

    pub fn describe(&self, cfg: &FabricConfig) -> SgMatch {
        match self {
            Judgement::Rule(r) => SgMatch::Rule {
                sg: cfg.group(r.group).id.clone(),
                id: cfg.rule_id(r),
                index: r.index,
                priority: r.priority,
                policy: r.policy,
            },
            Judgement::Default(policy) => SgMatch::Default { policy: *policy },
            Judgement::InnerAccess(g) => SgMatch::InnerAccess { sg: cfg.group(*g).id.clone() },
            Judgement::HealthCheck => SgMatch::HealthCheck,
        }
    }
}

/// What decided a security-group check, for traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SgMatch {
    /// The rule `id` (`sgr-…`), number `index` (0-based position in that group's rule list) of
    /// group `sg`.
    Rule { sg: Arc<str>, id: Arc<str>, index: u32, priority: u8, policy: Policy },
    /// No rule matched.
    Default { policy: Policy },
    /// Both ENIs share this basic group with `InnerAccessPolicy=Accept`.
    InnerAccess { sg: Arc<str> },
    /// Ingress from 100.64.0.0/10 that no rule matched.
    HealthCheck,
}

/// A basic group with inner access accepted that both ENIs are in, if any.
pub(crate) fn shared_inner_group(a: &Eni, b: &Eni) -> Option<GroupIdx> {
    // Both lists are sorted and hold at most a handful of groups.
    a.inner_accept.iter().find(|g| b.inner_accept.binary_search(g).is_ok()).copied()
}

/// The judgement of `eni`'s rules for `dir` on `pkt` (inner access is checked by the caller,
/// which knows both ENIs).
pub(crate) fn judge<A: RuleAddr>(cfg: &FabricConfig, eni: &Eni, dir: Direction, pkt: &PacketMeta<A>) -> Judgement {
    let (rules, peer, local) = match dir {
        Direction::Ingress => (&eni.ingress, pkt.src, pkt.dst),
        Direction::Egress => (&eni.egress, pkt.dst, pkt.src),
    };
    if let Some(r) = rules.iter().find(|r| matches(cfg, r, pkt, peer, local)) {
        return Judgement::Rule(*r);
    }
    match dir {
        Direction::Ingress if pkt.src.is_health_check() => Judgement::HealthCheck,
        Direction::Ingress => Judgement::Default(Policy::Drop),
        Direction::Egress => Judgement::Default(eni.default_egress),
    }
}

fn in_range(p: u16, (lo, hi): (u16, u16)) -> bool {
    lo <= p && p <= hi
}

fn matches<A: RuleAddr>(cfg: &FabricConfig, r: &CompiledRule, pkt: &PacketMeta<A>, peer: A, local: A) -> bool {
    if r.protocol.is_some_and(|p| p != pkt.proto) {
        return false;
    }
    if let Some((sport, dport)) = pkt.ports
        && !(in_range(dport, r.dst_ports) && in_range(sport, r.src_ports))
    {
        return false;
    }
    local.in_local(r) && peer.in_peer(cfg, &r.peer)
}
