//! A second, deliberately naive reading of the cloud's security-group semantics (reference §8.2),
//! property-tested against the engine: for random groups, rules, memberships and packets, the
//! engine's verdict *and the rule it names* (as `enifab trace` shows them) must equal what this
//! model picks.
//!
//! The model shares no code with `security_group.rs`: it never sorts or compiles anything. It
//! collects every rule of every group of the ENI that matches, and takes the minimum by
//! (priority, drop before accept, group order on the ENI, rule order in the group) — the
//! reference's words, "priority 1 first, at equal priority drop wins", with the tie between two
//! equal rules broken the one way a trace must stay stable.

use core::net::Ipv4Addr;
use std::hash::RandomState;
use std::sync::Arc;

use proptest::prelude::*;

use crate::config::*;
use crate::explain::{Probe, ProbeProtocol};
use crate::fabric::Step;
use crate::testkit::{VPC, cidr, vni};
use crate::wire::ethernet::Mac;
use crate::{Fabric, FabricOptions, Instant, SgMatch};

const GROUPS: [&str; 4] = ["sg-0", "sg-1", "sg-2", "sg-3"];
const IPS: [Ipv4Addr; 3] = [Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 20), Ipv4Addr::new(10, 0, 0, 30)];
const SOURCE_PORT: u16 = 61_000;

/// What decided one direction, in the model's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decided {
    Rule { sg: String, index: u32, policy: Policy },
    Default(Policy),
    Inner(String),
}

#[derive(Debug, Clone)]
struct World {
    groups: Vec<SecurityGroupConfig>,
    /// Each ENI's groups, in order.
    memberships: Vec<Vec<usize>>,
}

fn in_cidr(c: &Cidr, ip: Ipv4Addr) -> bool {
    let (ip, net, len) = (u32::from(ip), u32::from(c.network()), u32::from(c.prefix()));
    len == 0 || ip >> (32 - len) == net >> (32 - len)
}

impl World {
    fn group_ips(&self, id: &str) -> Vec<Ipv4Addr> {
        let Some(g) = GROUPS.iter().position(|g| *g == id) else { return Vec::new() };
        self.memberships.iter().enumerate().filter(|(_, m)| m.contains(&g)).map(|(e, _)| IPS[e]).collect()
    }

    fn rule_matches(&self, r: &Rule, proto: u8, remote: Ipv4Addr, local: Ipv4Addr, sport: u16, dport: u16) -> bool {
        let (rule_proto, ported) = match r.protocol {
            Protocol::Tcp => (Some(6), true),
            Protocol::Udp => (Some(17), true),
            Protocol::Icmp => (Some(1), false),
            Protocol::Gre => (Some(47), false),
            Protocol::Icmpv6 => (Some(58), false),
            Protocol::All => (None, false),
        };
        if rule_proto.is_some_and(|p| p != proto) {
            return false;
        }
        if ported {
            let within = |range: Option<(u16, u16)>, p: u16| range.is_none_or(|(lo, hi)| lo <= p && p <= hi);
            if !within(r.port_range, dport) || !within(r.source_port_range, sport) {
                return false;
            }
        }
        let peer_ok = match &r.peer {
            Peer::Cidr(c) => in_cidr(c, remote),
            Peer::Group(g) => self.group_ips(g).contains(&remote),
            // The packets here are IPv4: an IPv6 peer names none of them.
            Peer::Cidr6(_) => false,
        };
        peer_ok && r.local_cidr.is_none_or(|c| in_cidr(&c, local))
    }

    fn decide(&self, eni: usize, peer_eni: usize, dir: Direction, proto: u8, dport: u16) -> Decided {
        // Two shared inner-accept groups: either admits; the one listed first in the VPC is named.
        let shared_inner = (0..self.groups.len()).find(|gi| {
            let g = &self.groups[*gi];
            g.kind == SgKind::Basic
                && g.inner_access_accept
                && self.memberships[eni].contains(gi)
                && self.memberships[peer_eni].contains(gi)
        });
        if let Some(g) = shared_inner {
            return Decided::Inner(self.groups[g].id.clone());
        }
        // The same packet both ways: the peer is the remote side, this ENI the local one.
        let (remote, local, sport) = (IPS[peer_eni], IPS[eni], SOURCE_PORT);
        let mut best: Option<((u8, bool, usize, usize), Decided)> = None;
        for (order, gi) in self.memberships[eni].iter().enumerate() {
            let g = &self.groups[*gi];
            for (ri, r) in g.rules.iter().enumerate() {
                if r.direction != dir || !self.rule_matches(r, proto, remote, local, sport, dport) {
                    continue;
                }
                let key = (r.priority, r.policy == Policy::Accept, order, ri);
                if best.as_ref().is_none_or(|(k, _)| key < *k) {
                    let d = Decided::Rule { sg: g.id.clone(), index: ri as u32, policy: r.policy };
                    best = Some((key, d));
                }
            }
        }
        if let Some((_, d)) = best {
            return d;
        }
        let enterprise = self.memberships[eni].iter().any(|g| self.groups[*g].kind == SgKind::Enterprise);
        match dir {
            Direction::Ingress => Decided::Default(Policy::Drop),
            Direction::Egress if enterprise => Decided::Default(Policy::Drop),
            Direction::Egress => Decided::Default(Policy::Accept),
        }
    }

    fn config(&self) -> FabricConfig {
        let ports = (0..IPS.len())
            .map(|i| {
                let peer = format!("127.0.0.1:{}", 7000 + i).parse().expect("address");
                (
                    vni(i as u32 + 1),
                    PortConfig {
                        eni_id: format!("eni-{i}"),
                        mac: Mac([0, 0x16, 0x3e, 0, 0, i as u8]),
                        peer,
                        fast_path: None,
                    },
                )
            })
            .collect();
        let enis = (0..IPS.len())
            .map(|i| EniConfig {
                id: format!("eni-{i}"),
                vpc_id: VPC.into(),
                mac: Mac([0, 0x16, 0x3e, 0, 0, i as u8]),
                primary_ip: IPS[i],
                ips: vec![IPS[i]],
                vswitch_cidr: cidr([10, 0, 0, 0], 24),
                ipv6: None,
                security_group_ids: self.memberships[i].iter().map(|g| GROUPS[*g].to_string()).collect(),
                source_dest_check: true,
                attachment: Attachment::Port { vni: vni(i as u32 + 1) },
                conntrack: ConntrackTimeouts::default(),
            })
            .collect();
        let spec = FabricSpec { ports, enis, groups: self.groups.clone(), ..FabricSpec::default() };
        FabricConfig::build(1, spec).expect("a valid world")
    }
}

fn engine_decided(m: &SgMatch) -> Decided {
    match m {
        SgMatch::Rule { sg, index, policy, .. } => Decided::Rule { sg: sg.to_string(), index: *index, policy: *policy },
        SgMatch::Default { policy } => Decided::Default(*policy),
        SgMatch::InnerAccess { sg } => Decided::Inner(sg.to_string()),
        SgMatch::HealthCheck => Decided::Default(Policy::Accept),
    }
}

fn a_cidr() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        Just(cidr([0, 0, 0, 0], 0)),
        Just(cidr([10, 0, 0, 0], 24)),
        Just(cidr([10, 0, 0, 0], 27)),
        Just(cidr([10, 0, 0, 10], 32)),
        Just(cidr([10, 0, 0, 20], 32)),
        Just(cidr([10, 0, 0, 30], 32)),
        Just(cidr([192, 168, 0, 0], 16)),
    ]
}

fn a_range() -> impl Strategy<Value = Option<(u16, u16)>> {
    prop_oneof![
        Just(None),
        Just(Some((80, 80))),
        Just(Some((1, 1024))),
        Just(Some((443, 8080))),
        Just(Some((61_000, 65_535)))
    ]
}

fn a_rule() -> impl Strategy<Value = Rule> {
    let direction = prop_oneof![Just(Direction::Ingress), Just(Direction::Egress)];
    let policy = prop_oneof![Just(Policy::Accept), Just(Policy::Drop)];
    let protocol = prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Icmp),
        Just(Protocol::All),
        Just(Protocol::Gre)
    ];
    let peer = prop_oneof![
        3 => a_cidr().prop_map(Peer::Cidr),
        1 => (0usize..5).prop_map(|g| Peer::Group(GROUPS.get(g).map_or("sg-missing".to_string(), |s| s.to_string()))),
    ];
    let local = prop_oneof![3 => Just(None), 1 => a_cidr().prop_map(Some)];
    (direction, 1u8..=3, policy, protocol, a_range(), prop_oneof![3 => Just(None), 1 => a_range()], peer, local)
        .prop_map(|(direction, priority, policy, protocol, port_range, source_port_range, peer, local_cidr)| Rule {
            id: String::new(),
            direction,
            priority,
            policy,
            protocol,
            port_range,
            source_port_range,
            peer,
            local_cidr,
            local_cidr6: None,
        })
}

fn a_world() -> impl Strategy<Value = World> {
    let group = |id: &'static str| {
        (
            prop_oneof![3 => Just(SgKind::Basic), 1 => Just(SgKind::Enterprise)],
            any::<bool>(),
            prop::collection::vec(a_rule(), 0..7),
        )
            .prop_map(move |(kind, inner, rules)| SecurityGroupConfig {
                id: id.into(),
                vpc_id: VPC.into(),
                kind,
                inner_access_accept: inner,
                rules,
            })
    };
    let membership = prop::sample::subsequence(vec![0usize, 1, 2, 3], 1..=3).prop_shuffle();
    (
        (group(GROUPS[0]), group(GROUPS[1]), group(GROUPS[2]), group(GROUPS[3])),
        prop::collection::vec(membership, IPS.len()),
    )
        .prop_map(|((a, b, c, d), memberships)| World { groups: vec![a, b, c, d], memberships })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_names_the_rule_the_reference_picks(
        world in a_world(),
        src in 0usize..3,
        dst_offset in 1usize..3,
        protocol in prop_oneof![Just(ProbeProtocol::Tcp), Just(ProbeProtocol::Udp), Just(ProbeProtocol::Icmp)],
        dport in prop_oneof![Just(80u16), Just(443), Just(22), Just(5000)],
    ) {
        let dst = (src + dst_offset) % IPS.len();
        let fabric = Fabric::new(Arc::new(world.config()), FabricOptions::new(RandomState::new()));
        let probe = Probe { src_eni: format!("eni-{src}"), dst: IPS[dst], protocol, dst_port: dport, src_port: Some(SOURCE_PORT) };
        let e = fabric.explain(Instant(1), &probe).expect("registered");
        let engine: Vec<(Direction, Decided)> = e.trace.steps.iter().filter_map(|s| match s {
            Step::SecurityGroup { direction, decision, .. } => Some((*direction, engine_decided(decision))),
            _ => None,
        }).collect();
        let proto = protocol.number();
        let dport = if protocol == ProbeProtocol::Icmp { 0 } else { dport };
        let egress = world.decide(src, dst, Direction::Egress, proto, dport);
        let mut expected = vec![(Direction::Egress, egress.clone())];
        let egress_passes = !matches!(egress, Decided::Rule { policy: Policy::Drop, .. } | Decided::Default(Policy::Drop));
        if egress_passes {
            expected.push((Direction::Ingress, world.decide(dst, src, Direction::Ingress, proto, dport)));
        }
        prop_assert_eq!(engine, expected, "world {:?}", world);
    }
}

#[test]
fn the_model_reads_the_reference_examples() {
    // Priority 1 drop beats priority 1 accept; priority 1 accept beats priority 2 drop.
    let r = |priority, policy| Rule {
        id: String::new(),
        direction: Direction::Ingress,
        priority,
        policy,
        protocol: Protocol::Tcp,
        port_range: Some((80, 80)),
        source_port_range: None,
        peer: Peer::Cidr(cidr([0, 0, 0, 0], 0)),
        local_cidr: None,
        local_cidr6: None,
    };
    let g = |rules| SecurityGroupConfig {
        id: "sg-0".into(),
        vpc_id: VPC.into(),
        kind: SgKind::Basic,
        inner_access_accept: false,
        rules,
    };
    let w = |rules| World { groups: vec![g(rules)], memberships: vec![vec![0], vec![0], vec![0]] };
    let d = w(vec![r(1, Policy::Accept), r(1, Policy::Drop)]).decide(1, 0, Direction::Ingress, 6, 80);
    assert_eq!(d, Decided::Rule { sg: "sg-0".into(), index: 1, policy: Policy::Drop });
    let d = w(vec![r(2, Policy::Drop), r(1, Policy::Accept)]).decide(1, 0, Direction::Ingress, 6, 80);
    assert_eq!(d, Decided::Rule { sg: "sg-0".into(), index: 1, policy: Policy::Accept });
    let d = w(vec![]).decide(1, 0, Direction::Ingress, 6, 80);
    assert_eq!(d, Decided::Default(Policy::Drop));
}
