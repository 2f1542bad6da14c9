//! A small lab and frame builders for tests, the fuzz target and other crates' tests (feature
//! `testkit`). Not for production: builders allocate and assume well-formed arguments.
//!
//! The lab is one VPC (`vpc-lab`) with two vSwitches and two nodes:
//!
//! ```text
//! vsw-node 10.0.0.0/24 (gw .253)            vsw-pod 10.0.1.0/24 (gw .253)
//! node A, shim 192.0.2.1:6081
//!   VNI 10  eni-trunk-a   10.0.0.10, .11     00:16:3e:0a:00:01   sg-node
//!     VLAN 1001  eni-pod-a1   10.0.1.11                          sg-web
//!     VLAN 1002  eni-pod-a2   10.0.1.12                          sg-db
//! node B, shim 192.0.2.2:6081
//!   VNI 20  eni-primary-b 10.0.0.20          00:16:3e:0b:00:01   sg-node
//!   VNI 21  eni-trunk-b   10.0.0.21          00:16:3e:0b:00:02   sg-node
//!     VLAN 1001  eni-pod-b1   10.0.1.21                          sg-web
//! ```
//!
//! Groups (all basic): `sg-node` accepts inner access and nothing else; `sg-web` accepts TCP 80
//! from 10.0.0.0/8; `sg-db` accepts TCP 5432 from group `sg-web`.
//!
//! The pods are dual stack: the pod vSwitch also has `2408:4005:3000:1::/64` (gateway
//! `…:ffff:ffff:ffff:fffd`), pod-a1 is `::11`, pod-a2 `::12`, pod-b1 `::21` and holds the /80
//! `2408:4005:3000:1:5::/80`. The nodes' ENIs are IPv4 only. No rule names an IPv6 peer
//! ([`any_ipv6`] and [`web6_rule`] add them), so IPv6 between groups is what group peers allow.
//!
//! [`Lab::with_load_balancers`] adds the internet side and two load balancers:
//!
//! ```text
//! internet: ext-client 47.100.1.10 (segment 47.100.1.0/24), VNI 99, shim 192.0.2.50:6081
//! lb-intra  10.0.1.100 (intranet, vpc-lab): TCP 80 → pod-a1:80, pod-b1:80 (wrr, 100/100)
//!                                           UDP 53 → pod-a2:5353
//! lb-public 8.210.162.178 (internet):       TCP 80 → pod-a1:8080, pod-b1:8080 (wrr, 100/100)
//! ```

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{PacketBuilder, VlanId};

use crate::config::*;
use crate::wire::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4, GATEWAY_MAC, Mac};
use crate::wire::geneve::{self, Vni};
use crate::wire::ipv4::{self, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::vlan::Tci;
use crate::wire::vnet::VnetHdr;
use crate::wire::{arp, checksum};

pub const VPC: &str = "vpc-lab";
pub const NODE_A: SocketAddr = SocketAddr::new(core::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 6081);
pub const NODE_B: SocketAddr = SocketAddr::new(core::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 6081);
pub const STRANGER: SocketAddr = SocketAddr::new(core::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)), 6081);
pub const NODE_GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 253);
pub const POD_GW: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 253);

/// One sender/receiver in the lab: where its frames enter and how they look there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub eni: &'static str,
    pub vni: u32,
    pub vlan: Option<u16>,
    /// The MAC on the wire: for a member, the trunk's.
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub peer: SocketAddr,
}

const MAC_TRUNK_A: Mac = Mac([0x00, 0x16, 0x3e, 0x0a, 0x00, 0x01]);
const MAC_PRIMARY_B: Mac = Mac([0x00, 0x16, 0x3e, 0x0b, 0x00, 0x01]);
const MAC_TRUNK_B: Mac = Mac([0x00, 0x16, 0x3e, 0x0b, 0x00, 0x02]);

pub const TRUNK_A: Endpoint = Endpoint {
    eni: "eni-trunk-a",
    vni: 10,
    vlan: None,
    mac: MAC_TRUNK_A,
    ip: Ipv4Addr::new(10, 0, 0, 10),
    peer: NODE_A,
};
pub const POD_A1: Endpoint = Endpoint {
    eni: "eni-pod-a1",
    vni: 10,
    vlan: Some(1001),
    mac: MAC_TRUNK_A,
    ip: Ipv4Addr::new(10, 0, 1, 11),
    peer: NODE_A,
};
pub const POD_A2: Endpoint = Endpoint {
    eni: "eni-pod-a2",
    vni: 10,
    vlan: Some(1002),
    mac: MAC_TRUNK_A,
    ip: Ipv4Addr::new(10, 0, 1, 12),
    peer: NODE_A,
};
pub const PRIMARY_B: Endpoint = Endpoint {
    eni: "eni-primary-b",
    vni: 20,
    vlan: None,
    mac: MAC_PRIMARY_B,
    ip: Ipv4Addr::new(10, 0, 0, 20),
    peer: NODE_B,
};
pub const TRUNK_B: Endpoint = Endpoint {
    eni: "eni-trunk-b",
    vni: 21,
    vlan: None,
    mac: MAC_TRUNK_B,
    ip: Ipv4Addr::new(10, 0, 0, 21),
    peer: NODE_B,
};
pub const POD_B1: Endpoint = Endpoint {
    eni: "eni-pod-b1",
    vni: 21,
    vlan: Some(1001),
    mac: MAC_TRUNK_B,
    ip: Ipv4Addr::new(10, 0, 1, 21),
    peer: NODE_B,
};

pub const ALL: [Endpoint; 6] = [TRUNK_A, POD_A1, POD_A2, PRIMARY_B, TRUNK_B, POD_B1];

/// The pod vSwitch's IPv6 /64 and its gateway (last − 2).
pub const POD_VSW6: Ipv6Addr = Ipv6Addr::new(0x2408, 0x4005, 0x3000, 1, 0, 0, 0, 0);
pub const POD_GW6: Ipv6Addr = Ipv6Addr::new(0x2408, 0x4005, 0x3000, 1, 0xffff, 0xffff, 0xffff, 0xfffd);
pub const POD_A1_V6: Ipv6Addr = Ipv6Addr::new(0x2408, 0x4005, 0x3000, 1, 0, 0, 0, 0x11);
pub const POD_A2_V6: Ipv6Addr = Ipv6Addr::new(0x2408, 0x4005, 0x3000, 1, 0, 0, 0, 0x12);
pub const POD_B1_V6: Ipv6Addr = Ipv6Addr::new(0x2408, 0x4005, 0x3000, 1, 0, 0, 0, 0x21);
/// pod-b1's /80 prefix.
pub const POD_B1_PREFIX6: Ipv6Addr = Ipv6Addr::new(0x2408, 0x4005, 0x3000, 1, 5, 0, 0, 0);

pub fn cidr6(addr: Ipv6Addr, prefix: u8) -> Cidr6 {
    Cidr6::containing(addr, prefix).unwrap_or_else(|| panic!("bad prefix {prefix}"))
}

pub const EXT_PEER: SocketAddr = SocketAddr::new(core::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50)), 6081);
pub const EXTERNAL: Endpoint = Endpoint {
    eni: "ext-client",
    vni: 99,
    vlan: None,
    mac: Mac([0x02, 0x00, 0x2f, 0x64, 0x01, 0x0a]),
    ip: Ipv4Addr::new(47, 100, 1, 10),
    peer: EXT_PEER,
};
pub const VIP_INTRA: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 100);
pub const VIP_PUBLIC: Ipv4Addr = Ipv4Addr::new(8, 210, 162, 178);

pub fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap_or_else(|| panic!("vni {v} out of range"))
}

pub fn cidr(a: [u8; 4], prefix: u8) -> Cidr {
    Cidr::containing(Ipv4Addr::from(a), prefix).unwrap_or_else(|| panic!("bad prefix {prefix}"))
}

pub fn rule(
    direction: Direction,
    priority: u8,
    policy: Policy,
    protocol: Protocol,
    port: Option<u16>,
    peer: Peer,
) -> Rule {
    Rule {
        id: String::new(),
        direction,
        priority,
        policy,
        protocol,
        port_range: port.map(|p| (p, p)),
        source_port_range: None,
        peer,
        local_cidr: None,
        local_cidr6: None,
    }
}

pub fn any_ip() -> Peer {
    Peer::Cidr(cidr([0, 0, 0, 0], 0))
}

/// `::/0`: every IPv6 address.
pub fn any_ipv6() -> Peer {
    Peer::Cidr6(cidr6(Ipv6Addr::UNSPECIFIED, 0))
}

/// sg-web's IPv6 twin of its rule: TCP 80 from `2408:4005:3000::/48`.
pub fn web6_rule() -> Rule {
    let vpc6 = cidr6(Ipv6Addr::new(0x2408, 0x4005, 0x3000, 0, 0, 0, 0, 0), 48);
    rule(Direction::Ingress, 1, Policy::Accept, Protocol::Tcp, Some(80), Peer::Cidr6(vpc6))
}

/// The lab's resources, editable before [`Lab::build`].
#[derive(Debug, Clone)]
pub struct Lab {
    pub ports: Vec<(Vni, PortConfig)>,
    pub enis: Vec<EniConfig>,
    pub groups: Vec<SecurityGroupConfig>,
    pub load_balancers: Vec<LoadBalancerConfig>,
    pub external_hosts: Vec<ExternalHostConfig>,
}

/// A backend for a lab listener.
pub fn backend(e: &Endpoint, port: u16, weight: u8) -> BackendConfig {
    BackendConfig { server_id: e.eni.to_string(), ip: e.ip, port, weight }
}

/// A running TCP (or UDP) listener with the given backends, health checks off.
pub fn listener(protocol: LbProtocol, port: u16, backends: Vec<BackendConfig>) -> ListenerConfig {
    ListenerConfig {
        protocol,
        port,
        running: true,
        scheduler: Scheduler::Wrr,
        persistence: core::time::Duration::ZERO,
        established_timeout: core::time::Duration::from_secs(900),
        backends,
        health_check: None,
    }
}

/// The cloud's default TCP check: timeout 5 s, interval 2 s, thresholds 3 and 3.
pub fn tcp_check() -> HealthCheckConfig {
    HealthCheckConfig {
        kind: HealthCheckKind::Tcp,
        port: None,
        timeout: core::time::Duration::from_secs(5),
        interval: core::time::Duration::from_secs(2),
        healthy_threshold: 3,
        unhealthy_threshold: 3,
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab {
    pub fn new() -> Lab {
        let port = |e: &Endpoint| {
            (vni(e.vni), PortConfig { eni_id: e.eni.to_string(), mac: e.mac, peer: e.peer, fast_path: None })
        };
        let eni = |e: &Endpoint, extra: &[Ipv4Addr], sg: &str| {
            let attachment = match e.vlan {
                None => Attachment::Port { vni: vni(e.vni) },
                Some(vlan) => Attachment::Member { trunk_vni: vni(e.vni), vlan },
            };
            let subnet = if e.vlan.is_some() { cidr([10, 0, 1, 0], 24) } else { cidr([10, 0, 0, 0], 24) };
            let mut ips = vec![e.ip];
            ips.extend_from_slice(extra);
            EniConfig {
                id: e.eni.to_string(),
                vpc_id: VPC.to_string(),
                // Members have a MAC of their own in the API, never seen on the wire.
                mac: if e.vlan.is_some() { Mac([0x00, 0x16, 0x3e, 0xee, 0x00, e.ip.octets()[3]]) } else { e.mac },
                primary_ip: e.ip,
                ips,
                vswitch_cidr: subnet,
                ipv6: None,
                security_group_ids: vec![sg.to_string()],
                source_dest_check: false,
                attachment,
                conntrack: ConntrackTimeouts::default(),
            }
        };
        let group = |id: &str, inner: bool, rules: Vec<Rule>| SecurityGroupConfig {
            id: id.to_string(),
            vpc_id: VPC.to_string(),
            kind: SgKind::Basic,
            inner_access_accept: inner,
            rules,
        };
        use Direction::Ingress;
        let v6 = |addrs: &[Ipv6Addr], prefixes: &[Ipv6Addr]| {
            Some(Ipv6Setup {
                addresses: addrs.to_vec(),
                prefixes: prefixes.iter().map(|p| cidr6(*p, IPV6_PREFIX_LEN)).collect(),
                vswitch_cidr: cidr6(POD_VSW6, 64),
            })
        };
        let dual = |mut e: EniConfig, ipv6| {
            e.ipv6 = ipv6;
            e
        };
        Lab {
            ports: vec![port(&TRUNK_A), port(&PRIMARY_B), port(&TRUNK_B)],
            enis: vec![
                eni(&TRUNK_A, &[Ipv4Addr::new(10, 0, 0, 11)], "sg-node"),
                dual(eni(&POD_A1, &[], "sg-web"), v6(&[POD_A1_V6], &[])),
                dual(eni(&POD_A2, &[], "sg-db"), v6(&[POD_A2_V6], &[])),
                eni(&PRIMARY_B, &[], "sg-node"),
                eni(&TRUNK_B, &[], "sg-node"),
                dual(eni(&POD_B1, &[], "sg-web"), v6(&[POD_B1_V6], &[POD_B1_PREFIX6])),
            ],
            groups: vec![
                group("sg-node", true, vec![]),
                group(
                    "sg-web",
                    false,
                    vec![rule(Ingress, 1, Policy::Accept, Protocol::Tcp, Some(80), Peer::Cidr(cidr([10, 0, 0, 0], 8)))],
                ),
                group(
                    "sg-db",
                    false,
                    vec![rule(Ingress, 1, Policy::Accept, Protocol::Tcp, Some(5432), Peer::Group("sg-web".into()))],
                ),
            ],
            load_balancers: Vec::new(),
            external_hosts: Vec::new(),
        }
    }

    /// The lab plus the internet side and the two load balancers of the module docs.
    pub fn with_load_balancers() -> Lab {
        let mut lab = Lab::new();
        lab.external_hosts.push(ExternalHostConfig {
            id: EXTERNAL.eni.to_string(),
            vni: vni(EXTERNAL.vni),
            mac: EXTERNAL.mac,
            peer: EXTERNAL.peer,
            ip: EXTERNAL.ip,
            segment: cidr([47, 100, 1, 0], 24),
        });
        lab.load_balancers.push(LoadBalancerConfig {
            id: "lb-intra".into(),
            vpc_id: VPC.into(),
            network: LbNetwork::Intranet,
            address: VIP_INTRA,
            listeners: vec![
                listener(LbProtocol::Tcp, 80, vec![backend(&POD_A1, 80, 100), backend(&POD_B1, 80, 100)]),
                listener(LbProtocol::Udp, 53, vec![backend(&POD_A2, 5353, 100)]),
            ],
        });
        lab.load_balancers.push(LoadBalancerConfig {
            id: "lb-public".into(),
            vpc_id: VPC.into(),
            network: LbNetwork::Internet,
            address: VIP_PUBLIC,
            listeners: vec![listener(
                LbProtocol::Tcp,
                80,
                vec![backend(&POD_A1, 8080, 100), backend(&POD_B1, 8080, 100)],
            )],
        });
        lab
    }

    pub fn lb_mut(&mut self, id: &str) -> &mut LoadBalancerConfig {
        self.load_balancers.iter_mut().find(|l| l.id == id).unwrap_or_else(|| panic!("no load balancer {id}"))
    }

    /// A listener of a load balancer, by protocol and port.
    pub fn listener_mut(&mut self, lb: &str, protocol: LbProtocol, port: u16) -> &mut ListenerConfig {
        self.lb_mut(lb)
            .listeners
            .iter_mut()
            .find(|l| l.protocol == protocol && l.port == port)
            .unwrap_or_else(|| panic!("no listener {port} on {lb}"))
    }

    pub fn eni_mut(&mut self, id: &str) -> &mut EniConfig {
        self.enis.iter_mut().find(|e| e.id == id).unwrap_or_else(|| panic!("no ENI {id}"))
    }

    pub fn group_mut(&mut self, id: &str) -> &mut SecurityGroupConfig {
        self.groups.iter_mut().find(|g| g.id == id).unwrap_or_else(|| panic!("no group {id}"))
    }

    pub fn build(&self, epoch: u64) -> FabricConfig {
        let spec = FabricSpec {
            ports: self.ports.clone(),
            enis: self.enis.clone(),
            groups: self.groups.clone(),
            load_balancers: self.load_balancers.clone(),
            external_hosts: self.external_hosts.clone(),
        };
        FabricConfig::build(epoch, spec).unwrap_or_else(|e| panic!("lab config: {e}"))
    }
}

/// Geneve datagram around `frame`.
pub fn geneve(vni_: u32, vnet: Option<VnetHdr>, frame: &[u8]) -> Vec<u8> {
    let h = geneve::Header { vni: vni(vni_), oam: false, vnet };
    let mut out = vec![0; h.len() + frame.len()];
    let n = geneve::encapsulate(&h, frame, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

pub fn ethernet(dst: Mac, src: Mac, vlan: Option<u16>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0; ethernet::TAGGED_HEADER_LEN];
    let n = ethernet::emit_header(dst, src, vlan.map(Tci), ethertype, &mut out).unwrap_or(0);
    out.truncate(n);
    out.extend_from_slice(payload);
    out
}

pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0; ipv4::MIN_HEADER_LEN];
    let r = ipv4::Repr { src, dst, protocol, ttl: 64, tos: 0, ident: 0x4242, payload_len: payload.len() };
    let _ = r.emit(&mut out);
    out.extend_from_slice(payload);
    out
}

/// A TCP header with `flags` followed by `data_len` bytes of data (checksum left zero).
pub fn tcp(sport: u16, dport: u16, flags: u8, data_len: usize) -> Vec<u8> {
    let mut h = vec![0u8; 20 + data_len];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 0x50;
    h[13] = flags;
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    for (i, b) in h[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    h
}

pub fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    h.extend_from_slice(data);
    h
}

pub fn icmp(ty: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(data);
    let c = checksum::internet(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

pub fn echo(ty: u8, id: u16, seq: u16) -> Vec<u8> {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    icmp(ty, 0, [a, b, c, d], b"enifab-ping-data")
}

/// IPv4 packet `ip` sent by `from`, to the gateway MAC, as its shim would encapsulate it.
pub fn from_endpoint(from: &Endpoint, ip: &[u8]) -> Vec<u8> {
    geneve(from.vni, None, &ethernet(GATEWAY_MAC, from.mac, from.vlan, ETHERTYPE_IPV4, ip))
}

/// An IPv6 frame `from` sends to `dst_mac`, its network and transport layers written by
/// etherparse's builder (`build` gets the step after Ethernet/802.1Q), Geneve-encapsulated.
pub fn frame6(from: &Endpoint, dst_mac: Mac, build: impl FnOnce(Ip6Builder) -> Vec<u8>) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(from.mac.0, dst_mac.0);
    let bytes = match from.vlan.and_then(|v| VlanId::try_new(v).ok()) {
        Some(v) => build(Ip6Builder::Tagged(eth.single_vlan(v))),
        None => build(Ip6Builder::Plain(eth)),
    };
    geneve(from.vni, None, &bytes)
}

/// The two ways an etherparse builder reaches the IP layer (tagged or not).
pub enum Ip6Builder {
    Plain(etherparse::PacketBuilderStep<etherparse::Ethernet2Header>),
    Tagged(etherparse::PacketBuilderStep<etherparse::VlanHeader>),
}

impl Ip6Builder {
    pub fn ipv6(self, src: Ipv6Addr, dst: Ipv6Addr, hop: u8) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        match self {
            Ip6Builder::Plain(b) => b.ipv6(src.octets(), dst.octets(), hop),
            Ip6Builder::Tagged(b) => b.ipv6(src.octets(), dst.octets(), hop),
        }
    }
}

/// A TCP segment over IPv6 (a SYN, or an ACK with `hello`).
pub fn tcp6_datagram(from: &Endpoint, src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, syn: bool) -> Vec<u8> {
    frame6(from, GATEWAY_MAC, |b| {
        let t = b.ipv6(src, dst, 64).tcp(sport, dport, 1, 64240);
        let t = if syn { t.syn() } else { t.ack(1) };
        let mut v = Vec::new();
        let _ = t.write(&mut v, if syn { &[] } else { b"hello" });
        v
    })
}

/// A TCP segment over IPv6 with `flags` (`wire::l4::TCP_*`; an ACK acknowledges 1), carrying
/// `hello` unless it is a SYN.
pub fn tcp6_flags_datagram(
    from: &Endpoint,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    use crate::wire::l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
    frame6(from, GATEWAY_MAC, |b| {
        let mut t = b.ipv6(src, dst, 64).tcp(sport, dport, 1, 64240);
        if flags & TCP_SYN != 0 {
            t = t.syn();
        }
        if flags & TCP_ACK != 0 {
            t = t.ack(1);
        }
        if flags & TCP_FIN != 0 {
            t = t.fin();
        }
        if flags & TCP_RST != 0 {
            t = t.rst();
        }
        let mut v = Vec::new();
        let _ = t.write(&mut v, if flags & TCP_SYN != 0 { &[] } else { b"hello" });
        v
    })
}

/// A UDP datagram over IPv6 carrying `hello`.
pub fn udp6_datagram(from: &Endpoint, src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    frame6(from, GATEWAY_MAC, |b| {
        let mut v = Vec::new();
        let _ = b.ipv6(src, dst, 64).udp(sport, dport).write(&mut v, b"hello");
        v
    })
}

/// An ICMPv6 echo request (or reply) with identifier `id`.
pub fn echo6_datagram(from: &Endpoint, src: Ipv6Addr, dst: Ipv6Addr, id: u16, reply: bool) -> Vec<u8> {
    frame6(from, GATEWAY_MAC, |b| {
        let ip = b.ipv6(src, dst, 64);
        let m = if reply { ip.icmpv6_echo_reply(id, 1) } else { ip.icmpv6_echo_request(id, 1) };
        let mut v = Vec::new();
        let _ = m.write(&mut v, b"enifab-ping6");
        v
    })
}

/// "Who has `target`?" from `src`, to its solicited-node multicast group, as Linux sends it.
pub fn neighbor_solicitation(from: &Endpoint, src: Ipv6Addr, target: Ipv6Addr, hop: u8) -> Vec<u8> {
    let o = target.octets();
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]));
    let mac = Mac([0x33, 0x33, 0xff, o[13], o[14], o[15]]);
    frame6(from, mac, |b| {
        let mut payload = target.octets().to_vec();
        payload.extend_from_slice(&[1, 1]);
        payload.extend_from_slice(&from.mac.0);
        let mut v = Vec::new();
        let _ = b.ipv6(src, group, hop).icmpv6_raw(135, 0, [0; 4]).write(&mut v, &payload);
        v
    })
}

pub fn tcp_datagram(from: &Endpoint, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    from_endpoint(from, &ipv4(from.ip, dst, PROTO_TCP, &tcp(sport, dport, flags, 0)))
}

pub fn udp_datagram(from: &Endpoint, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    from_endpoint(from, &ipv4(from.ip, dst, PROTO_UDP, &udp(sport, dport, b"hello")))
}

pub fn echo_datagram(from: &Endpoint, dst: Ipv4Addr, ty: u8, id: u16) -> Vec<u8> {
    from_endpoint(from, &ipv4(from.ip, dst, PROTO_ICMP, &echo(ty, id, 1)))
}

/// A broadcast "who has `target`?" from `from`.
pub fn arp_request(from: &Endpoint, target: Ipv4Addr) -> Vec<u8> {
    let req = arp::Repr {
        operation: arp::OP_REQUEST,
        sender_mac: from.mac,
        sender_ip: from.ip,
        target_mac: Mac([0; 6]),
        target_ip: target,
    };
    let mut a = [0u8; arp::LEN];
    let _ = req.emit(&mut a);
    geneve(from.vni, None, &ethernet(ethernet::BROADCAST, from.mac, from.vlan, ETHERTYPE_ARP, &a))
}

/// Splits a fuzz input into a sender and a datagram: the first byte picks one of the lab's
/// shim addresses (a node, a stranger, or the internet side's host), the rest is the datagram.
pub fn split_fuzz_input(data: &[u8]) -> (SocketAddr, &[u8]) {
    match data.split_first() {
        Some((sel, rest)) => ([NODE_A, NODE_B, STRANGER, EXT_PEER][usize::from(*sel) % 4], rest),
        None => (NODE_A, data),
    }
}

/// Valid datagrams of many kinds, prefixed for [`split_fuzz_input`]: the fuzz seed corpus.
pub fn seed_corpus() -> Vec<(&'static str, Vec<u8>)> {
    let with_sel = |from: &Endpoint, d: Vec<u8>| {
        let sel = match from.peer {
            NODE_A => 0u8,
            NODE_B => 1,
            _ => 3,
        };
        let mut v = vec![sel];
        v.extend(d);
        v
    };
    let gso = VnetHdr {
        flags: crate::wire::vnet::F_NEEDS_CSUM,
        gso_type: crate::wire::vnet::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    let big = ipv4(TRUNK_A.ip, PRIMARY_B.ip, PROTO_TCP, &tcp(40000, 22, 0x18, 3000));
    vec![
        ("arp_untagged", with_sel(&TRUNK_A, arp_request(&TRUNK_A, NODE_GW))),
        ("arp_vlan1001", with_sel(&POD_A1, arp_request(&POD_A1, POD_GW))),
        ("tcp_syn_member_to_member", with_sel(&POD_A1, tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, 0x02))),
        ("tcp_synack_reply", with_sel(&POD_B1, tcp_datagram(&POD_B1, POD_A1.ip, 80, 40000, 0x12))),
        ("udp_node_to_node", with_sel(&TRUNK_A, udp_datagram(&TRUNK_A, PRIMARY_B.ip, 5353, 53))),
        ("ping_gateway", with_sel(&POD_A2, echo_datagram(&POD_A2, POD_GW, 8, 7))),
        ("ping_node", with_sel(&PRIMARY_B, echo_datagram(&PRIMARY_B, TRUNK_A.ip, 8, 9))),
        ("tcp_syn_to_intranet_vip", with_sel(&TRUNK_A, tcp_datagram(&TRUNK_A, VIP_INTRA, 40001, 80, 0x02))),
        ("udp_to_intranet_vip", with_sel(&PRIMARY_B, udp_datagram(&PRIMARY_B, VIP_INTRA, 5353, 53))),
        ("tcp_syn_from_internet", with_sel(&EXTERNAL, tcp_datagram(&EXTERNAL, VIP_PUBLIC, 55000, 80, 0x02))),
        ("ipv6_neighbor_solicitation", with_sel(&POD_A1, neighbor_solicitation(&POD_A1, POD_A1_V6, POD_GW6, 255))),
        ("ipv6_ping_gateway", with_sel(&POD_A2, echo6_datagram(&POD_A2, POD_A2_V6, POD_GW6, 7, false))),
        ("ipv6_tcp_syn", with_sel(&POD_A1, tcp6_datagram(&POD_A1, POD_A1_V6, POD_B1_V6, 40000, 80, true))),
        ("ipv6_tcp_ack_reply", with_sel(&POD_B1, tcp6_datagram(&POD_B1, POD_B1_V6, POD_A1_V6, 80, 40000, false))),
        (
            "tcp_synack_to_checker",
            with_sel(
                &POD_A1,
                from_endpoint(&POD_A1, &ipv4(POD_A1.ip, crate::CHECKER, PROTO_TCP, &tcp(80, 1024, 0x12, 0))),
            ),
        ),
        (
            "tso_vnet",
            with_sel(
                &TRUNK_A,
                geneve(TRUNK_A.vni, Some(gso), &ethernet(GATEWAY_MAC, TRUNK_A.mac, None, ETHERTYPE_IPV4, &big)),
            ),
        ),
    ]
}
