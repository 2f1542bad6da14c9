//! Why a frame was not delivered. Every drop is a value (OPTE's `ProcessResult::Drop`), counted
//! under a stable snake_case name ([`DropKind::as_str`]) that the emulator exports as a metric
//! label and a gRPC enum-like string; renaming one is an API change.
//!
//! Some "drops" are the VPC consuming a frame on purpose (ARP replies, gratuitous ARP): the
//! cloud answers ARP itself and never floods, so these are counted, not errors.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::wire::ethernet::Mac;
use crate::wire::geneve::{self, Vni};

/// The protocol layer a malformed header belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    Geneve,
    Vnet,
    Ethernet,
    Vlan,
    Arp,
    Ipv4,
    Ipv6,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// A header is too short or inconsistent.
    Malformed {
        layer: Layer,
        detail: &'static str,
    },
    GeneveVersion(u8),
    GeneveCriticalOption {
        class: u16,
        kind: u8,
    },
    GeneveNotEthernet(u16),
    /// Geneve OAM (control) packets carry no tenant frame.
    GeneveOam,
    /// No port with this VNI is registered.
    UnknownPort {
        vni: Vni,
    },
    /// The VNI exists but was registered by another shim address.
    UnknownPeer {
        vni: Vni,
        from: SocketAddr,
    },
    /// The port's ENI has no addresses in the snapshot (nothing it could send or receive).
    UnknownEni {
        vni: Vni,
    },
    /// QinQ or a service tag; a trunk carries single 0x8100 tags only.
    UnsupportedTpid(u16),
    /// A tag that names no member of this trunk port.
    UnknownVlan {
        vni: Vni,
        vlan: u16,
    },
    /// IPv4 to a unicast MAC other than the gateway's `ee:ff:ff:ff:ff:ff`.
    NotForGateway {
        dst: Mac,
    },
    /// A VPC never floods broadcast or multicast.
    BroadcastOrMulticast {
        dst: Mac,
    },
    /// IPv6 the fabric does not carry: an extension header it does not forward (routing,
    /// destination options, ESP/AH…), or a link-local address outside neighbour discovery.
    Ipv6Unsupported,
    /// Neighbour discovery the fabric consumes: advertisements, router solicitations and
    /// advertisements, redirects, and duplicate address detection (a solicitation from `::`,
    /// left unanswered so the node keeps its address).
    NdpConsumed,
    /// IPv6 fragments are not forwarded (no reassembly, as for IPv4).
    Ipv6Fragment,
    UnsupportedEthertype(u16),
    /// ARP that is not Ethernet/IPv4 request or reply.
    ArpUnsupported,
    /// ARP replies are consumed: the fabric is the only one that answers.
    ArpReply,
    /// Announcements (sender IP = target IP) are consumed.
    ArpGratuitous,
    /// RFC 5227 probes (sender 0.0.0.0) are consumed unanswered, so duplicate address detection
    /// on a node does not see the proxy answer as a conflict.
    ArpProbe,
    /// IPv4 fragments are not forwarded (no reassembly; see PIPELINE.md).
    Ipv4Fragment,
    /// Addressed to a vSwitch gateway but not an ICMP echo request.
    ToGateway {
        dst: IpAddr,
    },
    /// `SourceDestCheck` is on and the source is not one of the sending ENI's IPs.
    Spoofed {
        eni: Arc<str>,
        src: IpAddr,
    },
    /// No ENI of the VPC has this address.
    NoRoute {
        dst: IpAddr,
    },
    /// The destination ENI's port is not registered by any shim (yet).
    DestinationNotRegistered {
        eni: Arc<str>,
    },
    /// Refused by the sending ENI's egress rules; `sg`/`rule` are `None` for the default.
    SecurityGroupEgress {
        eni: Arc<str>,
        sg: Option<Arc<str>>,
        rule: Option<Arc<str>>,
    },
    /// Refused by the receiving ENI's ingress rules; `sg`/`rule` are `None` for the default.
    SecurityGroupIngress {
        eni: Arc<str>,
        sg: Option<Arc<str>>,
        rule: Option<Arc<str>>,
    },
    /// A new flow was allowed but the conntrack table is full.
    ConntrackFull,
    /// A new flow would share a tuple with a live one (e.g. a client reaching a backend both
    /// directly and through a VIP from one source port): refused, never merged.
    ConntrackClash,
    /// To a load balancer's address, on a protocol and port it has no listener for (or not TCP
    /// or UDP at all). The cloud's VIP stays silent.
    LbNoListener {
        vip: Ipv4Addr,
        protocol: u8,
        port: u16,
    },
    /// The listener exists but is stopped.
    LbListenerStopped {
        vip: Ipv4Addr,
        port: u16,
    },
    /// The listener has no backend with a weight above 0.
    LbNoBackend {
        vip: Ipv4Addr,
        port: u16,
    },
    /// Every backend with weight is unhealthy.
    LbNoHealthyBackend {
        vip: Ipv4Addr,
        port: u16,
    },
    /// The backend chosen is the client itself: layer-4 CLB does not support an instance being
    /// both a backend and a client of one listener, since it keeps the client's address.
    LbHairpin {
        eni: Arc<str>,
    },
    /// A backend's answer to a health check, taken by the fabric's checker (counted, not an
    /// error).
    HealthCheckAnswer,
    /// Addressed to the health checker, but no probe in progress expects it (a late answer).
    HealthCheckStray,
    /// The caller's output buffer cannot hold the frame to send.
    OutputBufferTooSmall {
        needed: usize,
    },
}

impl From<geneve::Error> for DropReason {
    fn from(e: geneve::Error) -> Self {
        match e {
            geneve::Error::Truncated => {
                DropReason::Malformed { layer: Layer::Geneve, detail: "geneve header truncated" }
            }
            geneve::Error::OptionOverrun => {
                DropReason::Malformed { layer: Layer::Geneve, detail: "geneve option runs past the options area" }
            }
            geneve::Error::BadVnetOption => {
                DropReason::Malformed { layer: Layer::Vnet, detail: "virtio-net option has a bad length or repeats" }
            }
            geneve::Error::Version(v) => DropReason::GeneveVersion(v),
            geneve::Error::CriticalOption { class, kind } => DropReason::GeneveCriticalOption { class, kind },
            geneve::Error::Protocol(p) => DropReason::GeneveNotEthernet(p),
        }
    }
}

macro_rules! drop_kinds {
    ($($kind:ident => $name:literal,)*) => {
        /// The counter a [`DropReason`] is accounted under.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum DropKind { $($kind,)* }

        impl DropKind {
            pub const ALL: &'static [DropKind] = &[$(DropKind::$kind,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// Stable metric/API name.
            pub const fn as_str(self) -> &'static str {
                match self { $(DropKind::$kind => $name,)* }
            }
        }
    };
}

drop_kinds! {
    MalformedGeneve => "malformed_geneve",
    MalformedVnet => "malformed_vnet",
    MalformedEthernet => "malformed_ethernet",
    MalformedVlan => "malformed_vlan",
    MalformedArp => "malformed_arp",
    MalformedIpv4 => "malformed_ipv4",
    MalformedIpv6 => "malformed_ipv6",
    MalformedIcmpv6 => "malformed_icmpv6",
    MalformedTcp => "malformed_tcp",
    MalformedUdp => "malformed_udp",
    MalformedIcmp => "malformed_icmp",
    GeneveVersion => "geneve_version",
    GeneveCriticalOption => "geneve_critical_option",
    GeneveNotEthernet => "geneve_not_ethernet",
    GeneveOam => "geneve_oam",
    UnknownPort => "unknown_port",
    UnknownPeer => "unknown_peer",
    UnknownEni => "unknown_eni",
    UnsupportedTpid => "unsupported_tpid",
    UnknownVlan => "unknown_vlan",
    NotForGateway => "not_for_gateway",
    BroadcastOrMulticast => "broadcast_or_multicast",
    Ipv6Unsupported => "ipv6_unsupported",
    NdpConsumed => "ndp_consumed",
    Ipv6Fragment => "ipv6_fragment",
    UnsupportedEthertype => "unsupported_ethertype",
    ArpUnsupported => "arp_unsupported",
    ArpReply => "arp_reply",
    ArpGratuitous => "arp_gratuitous",
    ArpProbe => "arp_probe",
    Ipv4Fragment => "ipv4_fragment",
    ToGateway => "to_gateway",
    Spoofed => "spoofed",
    NoRoute => "no_route",
    DestinationNotRegistered => "destination_not_registered",
    SecurityGroupEgress => "security_group_egress",
    SecurityGroupIngress => "security_group_ingress",
    ConntrackFull => "conntrack_full",
    ConntrackClash => "conntrack_clash",
    LbNoListener => "lb_no_listener",
    LbListenerStopped => "lb_listener_stopped",
    LbNoBackend => "lb_no_backend",
    LbNoHealthyBackend => "lb_no_healthy_backend",
    LbHairpin => "lb_hairpin",
    HealthCheckAnswer => "health_check_answer",
    HealthCheckStray => "health_check_stray",
    OutputBufferTooSmall => "output_buffer_too_small",
}

impl DropReason {
    pub fn kind(&self) -> DropKind {
        match self {
            DropReason::Malformed { layer, .. } => match layer {
                Layer::Geneve => DropKind::MalformedGeneve,
                Layer::Vnet => DropKind::MalformedVnet,
                Layer::Ethernet => DropKind::MalformedEthernet,
                Layer::Vlan => DropKind::MalformedVlan,
                Layer::Arp => DropKind::MalformedArp,
                Layer::Ipv4 => DropKind::MalformedIpv4,
                Layer::Ipv6 => DropKind::MalformedIpv6,
                Layer::Icmpv6 => DropKind::MalformedIcmpv6,
                Layer::Tcp => DropKind::MalformedTcp,
                Layer::Udp => DropKind::MalformedUdp,
                Layer::Icmp => DropKind::MalformedIcmp,
            },
            DropReason::GeneveVersion(_) => DropKind::GeneveVersion,
            DropReason::GeneveCriticalOption { .. } => DropKind::GeneveCriticalOption,
            DropReason::GeneveNotEthernet(_) => DropKind::GeneveNotEthernet,
            DropReason::GeneveOam => DropKind::GeneveOam,
            DropReason::UnknownPort { .. } => DropKind::UnknownPort,
            DropReason::UnknownPeer { .. } => DropKind::UnknownPeer,
            DropReason::UnknownEni { .. } => DropKind::UnknownEni,
            DropReason::UnsupportedTpid(_) => DropKind::UnsupportedTpid,
            DropReason::UnknownVlan { .. } => DropKind::UnknownVlan,
            DropReason::NotForGateway { .. } => DropKind::NotForGateway,
            DropReason::BroadcastOrMulticast { .. } => DropKind::BroadcastOrMulticast,
            DropReason::Ipv6Unsupported => DropKind::Ipv6Unsupported,
            DropReason::NdpConsumed => DropKind::NdpConsumed,
            DropReason::Ipv6Fragment => DropKind::Ipv6Fragment,
            DropReason::UnsupportedEthertype(_) => DropKind::UnsupportedEthertype,
            DropReason::ArpUnsupported => DropKind::ArpUnsupported,
            DropReason::ArpReply => DropKind::ArpReply,
            DropReason::ArpGratuitous => DropKind::ArpGratuitous,
            DropReason::ArpProbe => DropKind::ArpProbe,
            DropReason::Ipv4Fragment => DropKind::Ipv4Fragment,
            DropReason::ToGateway { .. } => DropKind::ToGateway,
            DropReason::Spoofed { .. } => DropKind::Spoofed,
            DropReason::NoRoute { .. } => DropKind::NoRoute,
            DropReason::DestinationNotRegistered { .. } => DropKind::DestinationNotRegistered,
            DropReason::SecurityGroupEgress { .. } => DropKind::SecurityGroupEgress,
            DropReason::SecurityGroupIngress { .. } => DropKind::SecurityGroupIngress,
            DropReason::ConntrackFull => DropKind::ConntrackFull,
            DropReason::ConntrackClash => DropKind::ConntrackClash,
            DropReason::LbNoListener { .. } => DropKind::LbNoListener,
            DropReason::LbListenerStopped { .. } => DropKind::LbListenerStopped,
            DropReason::LbNoBackend { .. } => DropKind::LbNoBackend,
            DropReason::LbNoHealthyBackend { .. } => DropKind::LbNoHealthyBackend,
            DropReason::LbHairpin { .. } => DropKind::LbHairpin,
            DropReason::HealthCheckAnswer => DropKind::HealthCheckAnswer,
            DropReason::HealthCheckStray => DropKind::HealthCheckStray,
            DropReason::OutputBufferTooSmall { .. } => DropKind::OutputBufferTooSmall,
        }
    }

    pub(crate) fn malformed(layer: Layer, m: crate::wire::Malformed) -> DropReason {
        DropReason::Malformed { layer, detail: m.0 }
    }
}

struct RuleName<'a>(&'a Option<Arc<str>>, &'a Option<Arc<str>>);

impl fmt::Display for RuleName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(sg), Some(rule)) => write!(f, "{sg} rule {rule}"),
            (Some(sg), None) => write!(f, "{sg} default"),
            (None, _) => f.write_str("default"),
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().as_str())?;
        match self {
            DropReason::Malformed { detail, .. } => write!(f, ": {detail}"),
            DropReason::GeneveVersion(v) => write!(f, ": version {v}"),
            DropReason::GeneveCriticalOption { class, kind } => {
                write!(f, ": class {class:#06x} type {kind:#04x}")
            }
            DropReason::GeneveNotEthernet(p) | DropReason::UnsupportedTpid(p) | DropReason::UnsupportedEthertype(p) => {
                write!(f, ": {p:#06x}")
            }
            DropReason::UnknownPort { vni } | DropReason::UnknownEni { vni } => {
                write!(f, ": vni {vni}")
            }
            DropReason::UnknownPeer { vni, from } => write!(f, ": vni {vni} from {from}"),
            DropReason::UnknownVlan { vni, vlan } => write!(f, ": vlan {vlan} on vni {vni}"),
            DropReason::NotForGateway { dst } | DropReason::BroadcastOrMulticast { dst } => {
                write!(f, ": dst {}", dst)
            }
            DropReason::ToGateway { dst } | DropReason::NoRoute { dst } => write!(f, ": {dst}"),
            DropReason::Spoofed { eni, src } => write!(f, ": {src} is not an address of {eni}"),
            DropReason::DestinationNotRegistered { eni } => write!(f, ": {eni}"),
            DropReason::SecurityGroupEgress { eni, sg, rule } | DropReason::SecurityGroupIngress { eni, sg, rule } => {
                write!(f, ": {eni} by {}", RuleName(sg, rule))
            }
            DropReason::OutputBufferTooSmall { needed } => write!(f, ": need {needed} bytes"),
            DropReason::LbNoListener { vip, protocol, port } => write!(f, ": {vip} protocol {protocol} port {port}"),
            DropReason::LbListenerStopped { vip, port }
            | DropReason::LbNoBackend { vip, port }
            | DropReason::LbNoHealthyBackend { vip, port } => write!(f, ": {vip}:{port}"),
            DropReason::LbHairpin { eni } => write!(f, ": {eni} is the client"),
            DropReason::GeneveOam
            | DropReason::Ipv6Unsupported
            | DropReason::NdpConsumed
            | DropReason::Ipv6Fragment
            | DropReason::ArpUnsupported
            | DropReason::ArpReply
            | DropReason::ArpGratuitous
            | DropReason::ArpProbe
            | DropReason::Ipv4Fragment
            | DropReason::ConntrackFull
            | DropReason::ConntrackClash
            | DropReason::HealthCheckAnswer
            | DropReason::HealthCheckStray => Ok(()),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn names_are_unique_snake_case() {
        let mut names: Vec<&str> = DropKind::ALL.iter().map(|k| k.as_str()).collect();
        assert!(names.iter().all(|n| { n.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()) }));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropKind::COUNT);
    }

    #[test]
    fn display_names_the_rule() {
        let r = DropReason::SecurityGroupIngress {
            eni: "eni-b".into(),
            sg: Some("sg-1".into()),
            rule: Some("sgr-2".into()),
        };
        assert_eq!(r.to_string(), "security_group_ingress: eni-b by sg-1 rule sgr-2");
        let d = DropReason::SecurityGroupEgress { eni: "eni-a".into(), sg: None, rule: None };
        assert_eq!(d.to_string(), "security_group_egress: eni-a by default");
    }
}
