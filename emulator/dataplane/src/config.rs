//! The data plane's view of the VPC: an immutable snapshot ([`FabricConfig`]) that the emulator
//! builds from its resource model after every API change and hands over as `Arc<FabricConfig>`.
//!
//! Building a snapshot does all the work that would otherwise be per frame: it indexes ports,
//! ENI addresses, `(trunk port, VLAN)` member bindings and vSwitch gateways, resolves
//! security-group references to IP sets, and flattens each ENI's rules into one pre-sorted list
//! per direction (reference §8.2: all rules of all groups, priority 1 first, drop before accept
//! at equal priority). Per-frame code then does hash lookups only.
//!
//! Must not: read a clock, do I/O, or use process-random hashing. Index maps use a fixed-key
//! hasher because their keys come from the trusted control plane; conntrack, whose keys come
//! from the wire, gets its hasher from the caller (see `FabricOptions`).
//!
//! Cloud facts encoded here: member VLAN id = `DeviceIndex` in 1..=4094, conntrack defaults of
//! `ConnectionTrackingConfiguration` (reference §8.2 item 6). The gateway rule (last address of
//! the vSwitch CIDR − 2, reference §9.1, Terway `DeriveGatewayIP`; none for /31 and /32) is
//! `enifab-net`'s, applied here to index each vSwitch's gateway.
//!
//! Dual stack: an ENI may also have IPv6 addresses and /80 prefixes ([`Ipv6Setup`]); they are
//! indexed per VPC like IPv4 ones (a prefix by its /80), the vSwitch's IPv6 gateway (the /64's
//! last address − 2, the same rule) is the fabric's own, and a group's members are its ENIs'
//! addresses of both families. Rules name a peer of one family ([`Peer::Cidr`] or
//! [`Peer::Cidr6`]) or a group, which holds both.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::sync::Arc;

use crate::wire::ethernet::Mac;
use crate::wire::geneve::Vni;
use crate::wire::ipv4::{PROTO_GRE, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::vlan::Tci;

/// Deterministic hasher for maps whose keys the control plane chose.
pub(crate) type FixedState = BuildHasherDefault<DefaultHasher>;
pub(crate) type FixedMap<K, V> = HashMap<K, V, FixedState>;
pub(crate) type FixedSet<K> = HashSet<K, FixedState>;

/// An IPv4 or IPv6 prefix; built with `containing`, host bits are ignored when matching.
pub use enifab_net::{Cidr, Cidr6};

/// The length of the IPv6 prefixes an ENI may hold (ECS assigns /80s).
pub const IPV6_PREFIX_LEN: u8 = 80;

/// The /80 an address lies in: the key prefixes are indexed by.
pub(crate) fn prefix80(ip: Ipv6Addr) -> u128 {
    u128::from(ip) & (u128::MAX << (128 - u32::from(IPV6_PREFIX_LEN)))
}

/// An ENI's IPv6 side, when its vSwitch has a /64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Setup {
    pub addresses: Vec<Ipv6Addr>,
    /// /80 prefixes routed to the ENI.
    pub prefixes: Vec<Cidr6>,
    pub vswitch_cidr: Cidr6,
}

/// One ENI device a node shim registered: frames with this VNI are accepted only from `peer`,
/// and frames for it are sent there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    pub eni_id: String,
    /// The device's MAC: dst MAC of everything delivered on this port, members included.
    pub mac: Mac,
    pub peer: SocketAddr,
    /// The node's kernel fast path: the address its VXLAN device is reached at, when the node
    /// has one (see [`crate::fastpath`]).
    pub fast_path: Option<Ipv4Addr>,
}

/// Where an ENI's frames enter and leave the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attachment {
    /// Primary, Secondary or Trunk ENI: the untagged traffic of port `vni`.
    Port { vni: Vni },
    /// Member ENI: VLAN `vlan` (its `DeviceIndex`) on the trunk's port.
    Member { trunk_vni: Vni, vlan: u16 },
}

/// Per-ENI `ConnectionTrackingConfiguration`. A flow between two ENIs uses the shorter value of
/// each, since either ENI's own tracker forgetting the flow ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConntrackTimeouts {
    /// `TcpEstablishedTimeout`, 30–910 s in the cloud, default 910 s.
    pub tcp_established: Duration,
    /// `TcpClosedAndTimeWaitTimeout`, 3–15 s, default 3 s: after RST or FIN both ways.
    pub tcp_closed: Duration,
    /// Not exposed by the cloud. 120 s, Linux's `nf_conntrack_tcp_timeout_syn_sent`: longer than
    /// the gap between any of a client's SYN retransmissions, so a slow handshake is not cut.
    pub tcp_handshake: Duration,
    /// `UdpTimeout`, 10–100 s, default 30 s. Also used for GRE and other IP protocols, which
    /// are tracked by address pair only.
    pub udp: Duration,
    /// Not exposed by the cloud. 30 s, Linux's `nf_conntrack_icmp_timeout`: an echo exchange
    /// (keyed by echo id) lives as long as a `ping` keeps sending.
    pub icmp: Duration,
}

impl Default for ConntrackTimeouts {
    fn default() -> Self {
        ConntrackTimeouts {
            tcp_established: Duration::from_secs(910),
            tcp_closed: Duration::from_secs(3),
            tcp_handshake: Duration::from_secs(120),
            udp: Duration::from_secs(30),
            icmp: Duration::from_secs(30),
        }
    }
}

/// An ENI of the VPC that has addresses and is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EniConfig {
    pub id: String,
    pub vpc_id: String,
    pub mac: Mac,
    pub primary_ip: Ipv4Addr,
    /// Primary and secondary IPs (the primary is added if missing).
    pub ips: Vec<Ipv4Addr>,
    pub vswitch_cidr: Cidr,
    /// Addresses, prefixes and vSwitch block of IPv6; `None` on an IPv4-only vSwitch.
    pub ipv6: Option<Ipv6Setup>,
    pub security_group_ids: Vec<String>,
    pub source_dest_check: bool,
    pub attachment: Attachment,
    pub conntrack: ConntrackTimeouts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SgKind {
    /// `SecurityGroupType=normal`: no-match default in deny / out allow.
    Basic,
    /// Enterprise (advanced): no-match default in deny / out deny; never inner-accept.
    Enterprise,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroupConfig {
    pub id: String,
    pub vpc_id: String,
    pub kind: SgKind,
    /// `InnerAccessPolicy=Accept`; only honoured for basic groups.
    pub inner_access_accept: bool,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    Accept,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Gre,
    /// Only in rules with an IPv6 peer.
    Icmpv6,
    All,
}

impl Protocol {
    fn number(self) -> Option<u8> {
        match self {
            Protocol::Tcp => Some(PROTO_TCP),
            Protocol::Udp => Some(PROTO_UDP),
            Protocol::Icmp => Some(PROTO_ICMP),
            Protocol::Gre => Some(PROTO_GRE),
            Protocol::Icmpv6 => Some(crate::conntrack::PROTO_ICMPV6),
            Protocol::All => None,
        }
    }
}

/// The remote side of a rule: `SourceCidrIp`/`DestCidrIp` or `SourceGroupId`/`DestGroupId`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    Cidr(Cidr),
    /// `Ipv6SourceCidrIp` / `Ipv6DestCidrIp`: matches IPv6 packets only.
    Cidr6(Cidr6),
    /// All private IPs of all ENIs in that group (same VPC). An unknown group matches nothing.
    Group(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// `SecurityGroupRuleId` (`sgr-…`), named by traces, drop reasons and flow logs. A snapshot
    /// built without one (tests) names the rule by its position, `#<n>`.
    pub id: String,
    pub direction: Direction,
    /// 1..=100, 1 highest.
    pub priority: u8,
    pub policy: Policy,
    pub protocol: Protocol,
    /// Destination ports (`PortRange`); `None` is `-1/-1`. Only constrains TCP and UDP rules.
    pub port_range: Option<(u16, u16)>,
    /// `SourcePortRange`; same rules as `port_range`.
    pub source_port_range: Option<(u16, u16)>,
    pub peer: Peer,
    /// This ENI's side of a 5-tuple rule: `DestCidrIp` on ingress, `SourceCidrIp` on egress.
    pub local_cidr: Option<Cidr>,
    /// The same for an IPv6 rule (`Ipv6DestCidrIp` on ingress, `Ipv6SourceCidrIp` on egress).
    pub local_cidr6: Option<Cidr6>,
}

/// A layer-4 protocol a load balancer listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LbProtocol {
    Tcp,
    Udp,
}

impl LbProtocol {
    pub fn number(self) -> u8 {
        match self {
            LbProtocol::Tcp => PROTO_TCP,
            LbProtocol::Udp => PROTO_UDP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LbProtocol::Tcp => "tcp",
            LbProtocol::Udp => "udp",
        }
    }
}

/// How a listener picks a backend for a new flow (CLB `Scheduler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// Weighted round robin (the cloud's default), smooth: over every cycle of total-weight
    /// flows each backend gets exactly its weight's share, interleaved.
    Wrr,
    /// Round robin over the eligible backends, weights ignored (beyond weight 0 = none).
    Rr,
    /// Weighted least connections: the fewest tracked flows per unit of weight.
    Wlc,
    /// Consistent hash of the source IP (weighted rendezvous hashing).
    Sch,
    /// Consistent hash of the 4-tuple.
    Tch,
}

impl Scheduler {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::Wrr => "wrr",
            Scheduler::Rr => "rr",
            Scheduler::Wlc => "wlc",
            Scheduler::Sch => "sch",
            Scheduler::Tch => "tch",
        }
    }
}

/// One backend of a listener: an address of an ENI of the load balancer's VPC.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendConfig {
    /// What the API calls it (`eni-…`, `i-…`), for health reports.
    pub server_id: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    /// 0–100; 0 takes no new flows.
    pub weight: u8,
}

/// What a health check sends and what counts as an answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HealthCheckKind {
    /// A SYN; a SYN-ACK is healthy (answered with a RST), a RST or silence is not.
    Tcp,
    /// A connection and a `HEAD` (or, with `get`, `GET`) of `uri`; healthy when the status
    /// code's class is in `codes`.
    Http { uri: String, host: Option<String>, get: bool, codes: HttpCodes },
    /// A datagram (`request`); an ICMP port unreachable is unhealthy. With `expect` set, only a
    /// reply containing it is healthy; without, silence is healthy too.
    Udp { request: Vec<u8>, expect: Option<Vec<u8>> },
}

/// The status classes an HTTP check accepts (`HealthCheckHttpCode`: `http_2xx,http_3xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HttpCodes {
    /// Bit n set: class nxx (n = 1..=5) is healthy.
    pub classes: u8,
}

impl HttpCodes {
    pub const DEFAULT: HttpCodes = HttpCodes { classes: 1 << 2 };

    pub fn accepts(&self, status: u16) -> bool {
        let class = status / 100;
        (1..=5).contains(&class) && self.classes & (1 << class) != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    /// `HealthCheckConnectPort`; `None` checks each backend on its own port.
    pub port: Option<u16>,
    /// How long one probe waits for its answer (`HealthCheckConnectTimeout`).
    pub timeout: Duration,
    /// Between the starts of two probes of one backend (`HealthCheckInterval`).
    pub interval: Duration,
    /// Consecutive successes that make an unhealthy backend healthy (`HealthyThreshold`).
    pub healthy_threshold: u8,
    /// Consecutive failures that make a healthy backend unhealthy (`UnhealthyThreshold`).
    pub unhealthy_threshold: u8,
}

/// One listener of a load balancer (CLB layer 4: TCP or UDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub protocol: LbProtocol,
    pub port: u16,
    /// `running`; a stopped listener takes no traffic.
    pub running: bool,
    pub scheduler: Scheduler,
    /// `PersistenceTimeout`: a client keeps its backend this long after its last new flow;
    /// zero is off.
    pub persistence: Duration,
    /// `EstablishedTimeout` (TCP): idle time after which an established flow is forgotten.
    pub established_timeout: Duration,
    pub backends: Vec<BackendConfig>,
    /// `None`: health checking is off and every backend counts as healthy.
    pub health_check: Option<HealthCheckConfig>,
}

/// Where a load balancer's address is reached from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LbNetwork {
    /// `AddressType=intranet`: a private address of the VPC, reached from its ENIs.
    Intranet,
    /// `AddressType=internet`: a public address, reached from the internet side only.
    Internet,
}

/// A load balancer (CLB instance) with its listeners; backends live in `vpc_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerConfig {
    pub id: String,
    pub vpc_id: String,
    pub network: LbNetwork,
    pub address: Ipv4Addr,
    pub listeners: Vec<ListenerConfig>,
}

/// A host on the internet side of the fabric (an external client): one port, one public
/// address, no VPC and no security groups. It reaches internet-facing load balancers; nothing
/// reaches it but the replies of its own flows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalHostConfig {
    pub id: String,
    pub vni: Vni,
    pub mac: Mac,
    pub peer: SocketAddr,
    pub ip: Ipv4Addr,
    /// The segment it believes it is on; its gateway (last − 2) answers ping.
    pub segment: Cidr,
}

/// A snapshot the emulator could not turn into a consistent data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    DuplicateEni(String),
    /// Two ENIs of one VPC claim the same address.
    DuplicateIp {
        vpc_id: String,
        ip: Ipv4Addr,
    },
    /// Two members on one trunk port share a VLAN id.
    DuplicateVlan {
        trunk_vni: Vni,
        vlan: u16,
    },
    /// Member VLAN id outside 1..=4094.
    BadVlan {
        eni_id: String,
        vlan: u16,
    },
    /// Two ENIs attached as the untagged ENI of one port, or a port naming another ENI than
    /// the one attached to it.
    PortEniMismatch {
        vni: Vni,
        eni_id: String,
    },
    UnknownSecurityGroup {
        eni_id: String,
        sg_id: String,
    },
    DuplicateSecurityGroup(String),
    /// Two load balancers (or a load balancer and an ENI or external host) claim one address.
    DuplicateAddress {
        id: String,
        ip: Ipv4Addr,
    },
    /// A load balancer listens twice on one protocol and port, or on port 0.
    BadListener {
        lb_id: String,
        port: u16,
    },
    /// A backend with port 0 or a weight over 100.
    BadBackend {
        lb_id: String,
        ip: Ipv4Addr,
    },
    /// An external host's VNI is also a node's port.
    DuplicatePort(Vni),
    /// Two ENIs of one VPC claim the same IPv6 address or /80.
    DuplicateIp6 {
        vpc_id: String,
        ip: Ipv6Addr,
    },
    /// An IPv6 prefix that is not a /80.
    BadPrefix6 {
        eni_id: String,
        prefix: Cidr6,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::DuplicateEni(id) => write!(f, "ENI {id} appears twice"),
            ConfigError::DuplicateIp { vpc_id, ip } => {
                write!(f, "IP {ip} is claimed twice in {vpc_id}")
            }
            ConfigError::DuplicateVlan { trunk_vni, vlan } => {
                write!(f, "VLAN {vlan} is used twice on trunk port {trunk_vni}")
            }
            ConfigError::BadVlan { eni_id, vlan } => {
                write!(f, "member {eni_id} has VLAN {vlan}, not in 1..=4094")
            }
            ConfigError::PortEniMismatch { vni, eni_id } => {
                write!(f, "port {vni} and ENI {eni_id} disagree about their attachment")
            }
            ConfigError::UnknownSecurityGroup { eni_id, sg_id } => {
                write!(f, "ENI {eni_id} names unknown security group {sg_id}")
            }
            ConfigError::DuplicateSecurityGroup(id) => {
                write!(f, "security group {id} appears twice")
            }
            ConfigError::DuplicateAddress { id, ip } => write!(f, "{id} claims {ip}, which is already taken"),
            ConfigError::DuplicateIp6 { vpc_id, ip } => write!(f, "IPv6 {ip} is claimed twice in {vpc_id}"),
            ConfigError::BadPrefix6 { eni_id, prefix } => write!(f, "ENI {eni_id}: IPv6 prefix {prefix} is not a /80"),
            ConfigError::BadListener { lb_id, port } => {
                write!(f, "load balancer {lb_id}: listener port {port} is 0 or appears twice")
            }
            ConfigError::BadBackend { lb_id, ip } => {
                write!(f, "load balancer {lb_id}: backend {ip} has port 0 or a weight over 100")
            }
            ConfigError::DuplicatePort(vni) => write!(f, "port {vni} is registered twice"),
        }
    }
}

impl std::error::Error for ConfigError {}

// `stable_key` (FNV-1a of an id) names conntrack keys and entries, so that they stay meaningful
// across snapshots, whose internal indexes are renumbered.
pub(crate) use enifab_net::hash::{fnv1a_extend, stable_key};

/// The namespace of the internet side: what the VPC key is for ENIs, this is for external
/// hosts and internet-facing VIPs. No VPC id hashes to it in practice (VPC ids start `vpc-`),
/// and conntrack checks endpoints as well as keys, so a collision could not mix flows anyway.
pub(crate) const INTERNET: u64 = stable_key("enifab:internet");

/// The stable name of a listener, for runtime state that outlives snapshots (scheduler,
/// persistence, health).
pub(crate) fn listener_key(lb_id: &str, protocol: LbProtocol, port: u16) -> u64 {
    let h = fnv1a_extend(stable_key(lb_id), &[0, protocol.number()]);
    fnv1a_extend(h, &port.to_be_bytes())
}

pub(crate) type EniIdx = u32;
pub(crate) type GroupIdx = u32;

#[derive(Debug)]
pub(crate) struct Port {
    pub eni_id: Arc<str>,
    pub mac: Mac,
    pub peer: SocketAddr,
    pub fast_path: Option<Ipv4Addr>,
    /// The untagged ENI, when the snapshot has one for this port.
    pub eni: Option<EniIdx>,
}

/// Nanosecond timeouts, ready for `now + t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    pub tcp_established: u64,
    pub tcp_closed: u64,
    pub tcp_handshake: u64,
    pub udp: u64,
    pub icmp: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Timeouts {
    fn from_config(c: &ConntrackTimeouts) -> Timeouts {
        Timeouts {
            tcp_established: nanos(c.tcp_established),
            tcp_closed: nanos(c.tcp_closed),
            tcp_handshake: nanos(c.tcp_handshake),
            udp: nanos(c.udp),
            icmp: nanos(c.icmp),
        }
    }

    pub fn min(&self, o: &Timeouts) -> Timeouts {
        Timeouts {
            tcp_established: self.tcp_established.min(o.tcp_established),
            tcp_closed: self.tcp_closed.min(o.tcp_closed),
            tcp_handshake: self.tcp_handshake.min(o.tcp_handshake),
            udp: self.udp.min(o.udp),
            icmp: self.icmp.min(o.icmp),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompiledPeer {
    Cidr(Cidr),
    Cidr6(Cidr6),
    Group(GroupIdx),
    /// A reference to a group not in the snapshot.
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompiledRule {
    pub group: GroupIdx,
    /// Position in the group's `rules`, reported in drop reasons and traces.
    pub index: u32,
    pub priority: u8,
    pub policy: Policy,
    /// `None` = all protocols.
    pub protocol: Option<u8>,
    /// Inclusive; `(0, 65535)` when unconstrained.
    pub dst_ports: (u16, u16),
    pub src_ports: (u16, u16),
    pub peer: CompiledPeer,
    pub local: Option<Cidr>,
    pub local6: Option<Cidr6>,
}

#[derive(Debug)]
pub(crate) struct Eni {
    pub id: Arc<str>,
    pub key: u64,
    pub vpc: u64,
    pub source_dest_check: bool,
    /// The port its frames arrive on and leave by, and the tag they carry there.
    pub vni: Vni,
    pub tag: Option<Tci>,
    pub timeouts: Timeouts,
    pub ingress: Box<[CompiledRule]>,
    pub egress: Box<[CompiledRule]>,
    pub default_egress: Policy,
    /// Basic groups with `InnerAccessPolicy=Accept`, sorted.
    pub inner_accept: Box<[GroupIdx]>,
    /// A host of the internet side, not an ENI: no groups, its own address only.
    pub external: bool,
}

pub(crate) type LbIdx = u32;

#[derive(Debug)]
pub(crate) struct Backend {
    pub server_id: Arc<str>,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub weight: u8,
}

#[derive(Debug)]
pub(crate) struct Listener {
    /// [`listener_key`].
    pub key: u64,
    pub protocol: LbProtocol,
    pub port: u16,
    pub running: bool,
    pub scheduler: Scheduler,
    /// Nanoseconds; 0 = no persistence.
    pub persistence: u64,
    /// Nanoseconds.
    pub established: u64,
    pub backends: Box<[Backend]>,
    pub health: Option<HealthCheckConfig>,
}

#[derive(Debug)]
pub(crate) struct Lb {
    pub id: Arc<str>,
    /// The backends' VPC.
    pub vpc: u64,
    /// Sorted by (protocol, port).
    pub listeners: Box<[Listener]>,
}

impl Lb {
    pub fn listener(&self, protocol: u8, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.protocol.number() == protocol && l.port == port)
    }
}

#[derive(Debug)]
pub(crate) struct Group {
    pub id: Arc<str>,
    /// The rules' ids, by position in the group's `rules` ([`CompiledRule::index`]).
    pub rule_ids: Box<[Arc<str>]>,
    /// How a flow log names the group's inner access (`inner-access:<id>`), made once here so
    /// that logging a flow allocates nothing.
    pub inner_access_name: Arc<str>,
    /// Every IP of every ENI of the group's VPC that is in the group.
    pub members: FixedSet<Ipv4Addr>,
    /// Their IPv6 addresses, and the /80 prefixes they hold (by [`prefix80`]).
    pub members6: FixedSet<Ipv6Addr>,
    pub member_prefixes6: FixedSet<u128>,
}

/// An immutable, indexed snapshot of everything the pipeline needs. Build one per change of the
/// resource model and swap it in with `Fabric::set_config`.
#[derive(Debug)]
pub struct FabricConfig {
    epoch: u64,
    port_specs: Vec<(Vni, PortConfig)>,
    eni_specs: Vec<EniConfig>,
    group_specs: Vec<SecurityGroupConfig>,
    pub(crate) ports: FixedMap<Vni, Port>,
    pub(crate) enis: Vec<Eni>,
    pub(crate) groups: Vec<Group>,
    pub(crate) by_ip: FixedMap<(u64, Ipv4Addr), EniIdx>,
    pub(crate) by_vlan: FixedMap<(Vni, u16), EniIdx>,
    pub(crate) gateways: FixedSet<(u64, Ipv4Addr)>,
    /// (VPC, IPv6 address) → the ENI holding it; (VPC, /80) → the ENI holding that prefix.
    pub(crate) by_ip6: FixedMap<(u64, Ipv6Addr), EniIdx>,
    pub(crate) by_prefix6: FixedMap<(u64, u128), EniIdx>,
    pub(crate) gateways6: FixedSet<(u64, Ipv6Addr)>,
    lb_specs: Vec<LoadBalancerConfig>,
    host_specs: Vec<ExternalHostConfig>,
    pub(crate) lbs: Vec<Lb>,
    /// (namespace, VIP) → load balancer: a VPC key for intranet VIPs, [`INTERNET`] for public.
    pub(crate) vips: FixedMap<(u64, Ipv4Addr), LbIdx>,
    /// [`listener_key`] → (load balancer, listener index).
    pub(crate) listener_by_key: FixedMap<u64, (LbIdx, u32)>,
    /// Conntrack's folded namespace → the full key (every VPC with an ENI, and the internet).
    pub(crate) namespaces: FixedMap<u32, u64>,
    /// Ports someone captures (sorted): their flows are not granted to a kernel fast path, so
    /// every frame of theirs passes where the capture sees it (ARCHITECTURE.md §8).
    captured: Vec<Vni>,
}

/// Everything a snapshot is built from.
#[derive(Debug, Clone, Default)]
pub struct FabricSpec {
    pub ports: Vec<(Vni, PortConfig)>,
    pub enis: Vec<EniConfig>,
    pub groups: Vec<SecurityGroupConfig>,
    pub load_balancers: Vec<LoadBalancerConfig>,
    pub external_hosts: Vec<ExternalHostConfig>,
}

impl FabricConfig {
    /// A snapshot with nothing in it: every frame is dropped `unknown_port`.
    pub fn empty(epoch: u64) -> FabricConfig {
        Self::new(epoch, Vec::new(), Vec::new(), Vec::new()).unwrap_or_else(|_| unreachable!())
    }

    pub fn new(
        epoch: u64,
        ports: impl IntoIterator<Item = (Vni, PortConfig)>,
        enis: Vec<EniConfig>,
        groups: Vec<SecurityGroupConfig>,
    ) -> Result<FabricConfig, ConfigError> {
        let spec = FabricSpec { ports: ports.into_iter().collect(), enis, groups, ..FabricSpec::default() };
        Self::build(epoch, spec)
    }

    /// A snapshot with load balancers and the internet side too.
    pub fn build(epoch: u64, spec: FabricSpec) -> Result<FabricConfig, ConfigError> {
        let FabricSpec { ports, enis, groups, load_balancers, external_hosts } = spec;
        let mut port_specs: Vec<(Vni, PortConfig)> = ports;
        port_specs.sort_by_key(|(v, _)| *v);
        port_specs.dedup_by_key(|(v, _)| *v);
        for h in &external_hosts {
            if port_specs.iter().any(|(v, _)| *v == h.vni) {
                return Err(ConfigError::DuplicatePort(h.vni));
            }
            port_specs.push((h.vni, PortConfig { eni_id: h.id.clone(), mac: h.mac, peer: h.peer, fast_path: None }));
        }
        port_specs.sort_by_key(|(v, _)| *v);

        let mut group_idx: FixedMap<&str, GroupIdx> = FixedMap::default();
        for (i, g) in groups.iter().enumerate() {
            if group_idx.insert(g.id.as_str(), i as GroupIdx).is_some() {
                return Err(ConfigError::DuplicateSecurityGroup(g.id.clone()));
            }
        }

        let mut eni_idx: FixedMap<&str, EniIdx> = FixedMap::default();
        let mut by_ip = FixedMap::default();
        let mut by_vlan = FixedMap::default();
        let mut untagged: FixedMap<Vni, EniIdx> = FixedMap::default();
        let mut gateways = FixedSet::default();
        let mut by_ip6 = FixedMap::default();
        let mut by_prefix6 = FixedMap::default();
        let mut gateways6 = FixedSet::default();
        // Each group's member addresses, gathered in the one pass over the ENIs.
        let mut members: Vec<FixedSet<Ipv4Addr>> = vec![FixedSet::default(); groups.len()];
        let mut members6: Vec<(FixedSet<Ipv6Addr>, FixedSet<u128>)> = vec![Default::default(); groups.len()];
        for (i, e) in enis.iter().enumerate() {
            let i = i as EniIdx;
            if eni_idx.insert(e.id.as_str(), i).is_some() {
                return Err(ConfigError::DuplicateEni(e.id.clone()));
            }
            let vpc = stable_key(&e.vpc_id);
            for ip in core::iter::once(e.primary_ip).chain(e.ips.iter().copied()) {
                if let Some(other) = by_ip.insert((vpc, ip), i)
                    && other != i
                {
                    return Err(ConfigError::DuplicateIp { vpc_id: e.vpc_id.clone(), ip });
                }
            }
            if let Some(gw) = e.vswitch_cidr.gateway() {
                gateways.insert((vpc, gw));
            }
            if let Some(v6) = &e.ipv6 {
                for &ip in &v6.addresses {
                    if let Some(other) = by_ip6.insert((vpc, ip), i)
                        && other != i
                    {
                        return Err(ConfigError::DuplicateIp6 { vpc_id: e.vpc_id.clone(), ip });
                    }
                }
                for p in &v6.prefixes {
                    if p.prefix() != IPV6_PREFIX_LEN {
                        return Err(ConfigError::BadPrefix6 { eni_id: e.id.clone(), prefix: *p });
                    }
                    if let Some(other) = by_prefix6.insert((vpc, prefix80(p.network())), i)
                        && other != i
                    {
                        return Err(ConfigError::DuplicateIp6 { vpc_id: e.vpc_id.clone(), ip: p.network() });
                    }
                }
                if let Some(gw) = v6.vswitch_cidr.gateway() {
                    gateways6.insert((vpc, gw));
                }
            }
            match e.attachment {
                Attachment::Port { vni } => {
                    let named = port_specs
                        .binary_search_by_key(&vni, |(v, _)| *v)
                        .ok()
                        .map(|k| port_specs[k].1.eni_id.as_str());
                    if untagged.insert(vni, i).is_some() || named.is_some_and(|n| n != e.id) {
                        return Err(ConfigError::PortEniMismatch { vni, eni_id: e.id.clone() });
                    }
                }
                Attachment::Member { trunk_vni, vlan } => {
                    if Tci::from_vid(vlan).is_none() {
                        return Err(ConfigError::BadVlan { eni_id: e.id.clone(), vlan });
                    }
                    if by_vlan.insert((trunk_vni, vlan), i).is_some() {
                        return Err(ConfigError::DuplicateVlan { trunk_vni, vlan });
                    }
                }
            }
            for sg in &e.security_group_ids {
                let Some(&g) = group_idx.get(sg.as_str()) else {
                    return Err(ConfigError::UnknownSecurityGroup { eni_id: e.id.clone(), sg_id: sg.clone() });
                };
                // A group of another VPC names no one here (the model refuses such a pairing).
                if groups[g as usize].vpc_id == e.vpc_id {
                    members[g as usize].extend(core::iter::once(e.primary_ip).chain(e.ips.iter().copied()));
                    if let Some(v6) = &e.ipv6 {
                        let (addrs, prefixes) = &mut members6[g as usize];
                        addrs.extend(v6.addresses.iter().copied());
                        prefixes.extend(v6.prefixes.iter().map(|p| prefix80(p.network())));
                    }
                }
            }
        }

        let compiled_groups: Vec<Group> = groups
            .iter()
            .zip(members)
            .zip(members6)
            .map(|((g, members), (members6, member_prefixes6))| Group {
                id: Arc::from(g.id.as_str()),
                rule_ids: rule_ids(&g.rules),
                inner_access_name: Arc::from(format!("inner-access:{}", g.id)),
                members,
                members6,
                member_prefixes6,
            })
            .collect();

        let mut compiled_enis = enis.iter().map(|e| compile_eni(e, &groups, &group_idx)).collect::<Vec<_>>();

        // The internet side: each external host is an endpoint of its own namespace.
        for h in &external_hosts {
            let i = compiled_enis.len() as EniIdx;
            if eni_idx.insert(h.id.as_str(), i).is_some() {
                return Err(ConfigError::DuplicateEni(h.id.clone()));
            }
            if by_ip.insert((INTERNET, h.ip), i).is_some() {
                return Err(ConfigError::DuplicateAddress { id: h.id.clone(), ip: h.ip });
            }
            untagged.insert(h.vni, i);
            if let Some(gw) = h.segment.gateway() {
                gateways.insert((INTERNET, gw));
            }
            compiled_enis.push(Eni {
                id: Arc::from(h.id.as_str()),
                key: stable_key(&h.id),
                vpc: INTERNET,
                source_dest_check: true,
                vni: h.vni,
                tag: None,
                timeouts: Timeouts::from_config(&ConntrackTimeouts::default()),
                ingress: Box::new([]),
                egress: Box::new([]),
                default_egress: Policy::Accept,
                inner_accept: Box::new([]),
                external: true,
            });
        }

        let mut vips = FixedMap::default();
        let mut lbs = Vec::with_capacity(load_balancers.len());
        for lb in &load_balancers {
            let vpc = stable_key(&lb.vpc_id);
            let ns = match lb.network {
                LbNetwork::Intranet => vpc,
                LbNetwork::Internet => INTERNET,
            };
            let taken = by_ip.contains_key(&(ns, lb.address)) || gateways.contains(&(ns, lb.address));
            if taken || vips.insert((ns, lb.address), lbs.len() as LbIdx).is_some() {
                return Err(ConfigError::DuplicateAddress { id: lb.id.clone(), ip: lb.address });
            }
            let mut listeners = Vec::with_capacity(lb.listeners.len());
            for l in &lb.listeners {
                if l.port == 0 || listeners.iter().any(|o: &Listener| o.protocol == l.protocol && o.port == l.port) {
                    return Err(ConfigError::BadListener { lb_id: lb.id.clone(), port: l.port });
                }
                let mut backends = Vec::with_capacity(l.backends.len());
                for b in &l.backends {
                    if b.port == 0 || b.weight > 100 {
                        return Err(ConfigError::BadBackend { lb_id: lb.id.clone(), ip: b.ip });
                    }
                    backends.push(Backend {
                        server_id: Arc::from(b.server_id.as_str()),
                        ip: b.ip,
                        port: b.port,
                        weight: b.weight,
                    });
                }
                listeners.push(Listener {
                    key: listener_key(&lb.id, l.protocol, l.port),
                    protocol: l.protocol,
                    port: l.port,
                    running: l.running,
                    scheduler: l.scheduler,
                    persistence: nanos(l.persistence),
                    established: nanos(l.established_timeout),
                    backends: backends.into(),
                    health: l.health_check.clone(),
                });
            }
            listeners.sort_by_key(|l| (l.protocol, l.port));
            lbs.push(Lb { id: Arc::from(lb.id.as_str()), vpc, listeners: listeners.into() });
        }
        let listener_by_key = lbs
            .iter()
            .enumerate()
            .flat_map(|(i, lb)| lb.listeners.iter().enumerate().map(move |(j, l)| (l.key, (i as LbIdx, j as u32))))
            .collect();
        let namespaces = compiled_enis
            .iter()
            .map(|e| e.vpc)
            .chain(lbs.iter().map(|lb| lb.vpc))
            .chain(core::iter::once(INTERNET))
            .map(|k| (crate::conntrack::ns(k), k))
            .collect();

        let ports = port_specs
            .iter()
            .map(|(vni, p)| {
                let port = Port {
                    eni_id: Arc::from(p.eni_id.as_str()),
                    mac: p.mac,
                    peer: p.peer,
                    fast_path: p.fast_path,
                    eni: untagged.get(vni).copied(),
                };
                (*vni, port)
            })
            .collect();

        Ok(FabricConfig {
            epoch,
            port_specs,
            eni_specs: enis,
            group_specs: groups,
            ports,
            enis: compiled_enis,
            groups: compiled_groups,
            by_ip,
            by_vlan,
            gateways,
            by_ip6,
            by_prefix6,
            gateways6,
            lb_specs: load_balancers,
            host_specs: external_hosts,
            lbs,
            vips,
            listener_by_key,
            namespaces,
            captured: Vec::new(),
        })
    }

    /// Marks the ports being captured (see [`FabricConfig::is_captured`]).
    pub fn set_captured(&mut self, vnis: impl IntoIterator<Item = Vni>) {
        let mut v: Vec<Vni> = vnis.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        self.captured = v;
    }

    /// Whether `vni` is being captured: no flow touching it is granted to a fast path.
    pub fn is_captured(&self, vni: Vni) -> bool {
        !self.captured.is_empty() && self.captured.binary_search(&vni).is_ok()
    }

    pub(crate) fn listener(&self, key: u64) -> Option<(&Lb, &Listener)> {
        let &(lb, l) = self.listener_by_key.get(&key)?;
        let lb = self.lb(lb);
        Some((lb, &lb.listeners[l as usize]))
    }

    pub fn load_balancers(&self) -> &[LoadBalancerConfig] {
        &self.lb_specs
    }

    pub fn external_hosts(&self) -> &[ExternalHostConfig] {
        &self.host_specs
    }

    pub(crate) fn lb(&self, i: LbIdx) -> &Lb {
        &self.lbs[i as usize]
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The shims of nodes with a kernel fast path, each once: who must acknowledge this
    /// snapshot's epoch before it is in force.
    pub fn fast_path_peers(&self) -> Vec<SocketAddr> {
        let mut peers: Vec<SocketAddr> =
            self.port_specs.iter().filter(|(_, p)| p.fast_path.is_some()).map(|(_, p)| p.peer).collect();
        peers.sort();
        peers.dedup();
        peers
    }

    /// Registered ports, sorted by VNI.
    pub fn ports(&self) -> &[(Vni, PortConfig)] {
        &self.port_specs
    }

    pub fn enis(&self) -> &[EniConfig] {
        &self.eni_specs
    }

    pub fn security_groups(&self) -> &[SecurityGroupConfig] {
        &self.group_specs
    }

    pub(crate) fn eni(&self, i: EniIdx) -> &Eni {
        &self.enis[i as usize]
    }

    pub(crate) fn group(&self, i: GroupIdx) -> &Group {
        &self.groups[i as usize]
    }

    /// The id of a compiled rule (its `SecurityGroupRuleId`, or `#<n>`).
    pub(crate) fn rule_id(&self, r: &CompiledRule) -> Arc<str> {
        let g = self.group(r.group);
        g.rule_ids.get(r.index as usize).cloned().unwrap_or_else(|| Arc::from(format!("#{}", r.index)))
    }
}

fn rule_ids(rules: &[Rule]) -> Box<[Arc<str>]> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| if r.id.is_empty() { Arc::from(format!("#{i}")) } else { Arc::from(r.id.as_str()) })
        .collect()
}

fn compile_eni(e: &EniConfig, groups: &[SecurityGroupConfig], group_idx: &FixedMap<&str, GroupIdx>) -> Eni {
    let mut ingress = Vec::new();
    let mut egress = Vec::new();
    let mut inner_accept = Vec::new();
    let mut any_enterprise = false;
    for sg_id in &e.security_group_ids {
        let Some(&gi) = group_idx.get(sg_id.as_str()) else {
            continue;
        };
        let g = &groups[gi as usize];
        any_enterprise |= g.kind == SgKind::Enterprise;
        if g.kind == SgKind::Basic && g.inner_access_accept {
            inner_accept.push(gi);
        }
        for (ri, r) in g.rules.iter().enumerate() {
            let ported = matches!(r.protocol, Protocol::Tcp | Protocol::Udp);
            let any = (0, u16::MAX);
            let compiled = CompiledRule {
                group: gi,
                index: ri as u32,
                priority: r.priority,
                policy: r.policy,
                protocol: r.protocol.number(),
                dst_ports: r.port_range.filter(|_| ported).unwrap_or(any),
                src_ports: r.source_port_range.filter(|_| ported).unwrap_or(any),
                peer: match &r.peer {
                    Peer::Cidr(c) => CompiledPeer::Cidr(*c),
                    Peer::Cidr6(c) => CompiledPeer::Cidr6(*c),
                    Peer::Group(id) => {
                        group_idx.get(id.as_str()).map_or(CompiledPeer::Nothing, |&i| CompiledPeer::Group(i))
                    }
                },
                local: r.local_cidr,
                local6: r.local_cidr6,
            };
            match r.direction {
                Direction::Ingress => ingress.push(compiled),
                Direction::Egress => egress.push(compiled),
            }
        }
    }
    // Stable sort: equal (priority, policy) keeps group order then rule order, so a trace names
    // the same rule every time.
    let order = |r: &CompiledRule| (r.priority, r.policy == Policy::Accept);
    ingress.sort_by_key(order);
    egress.sort_by_key(order);
    inner_accept.sort_unstable();
    inner_accept.dedup();
    let (vni, tag) = match e.attachment {
        Attachment::Port { vni } => (vni, None),
        Attachment::Member { trunk_vni, vlan } => (trunk_vni, Tci::from_vid(vlan)),
    };
    Eni {
        id: Arc::from(e.id.as_str()),
        key: stable_key(&e.id),
        vpc: stable_key(&e.vpc_id),
        source_dest_check: e.source_dest_check,
        vni,
        tag,
        timeouts: Timeouts::from_config(&e.conntrack),
        ingress: ingress.into(),
        egress: egress.into(),
        // An ENI cannot mix kinds (reference §8.3); if a snapshot does anyway, the stricter
        // enterprise default wins. No group at all behaves like a basic group.
        default_egress: if any_enterprise { Policy::Drop } else { Policy::Accept },
        inner_accept: inner_accept.into(),
        external: false,
    }
}
