//! `enifab trace`'s core: the frame an ENI would send for a probe (a TCP SYN, a UDP datagram or an
//! ICMP echo request to an address and port), put through [`Fabric::trace`], the pipeline's own
//! code with a step recorder and without its commit. So a trace is what the pipeline would do
//! with a real first packet now, by construction, and it changes nothing: no flow, counter,
//! scheduler move or health state.
//!
//! The synthetic frame is built as the node would send it: from the ENI's port (a member's
//! from its trunk's, tagged with its VLAN), from the shim address that registered that port,
//! to the gateway MAC, from the ENI's primary address. Its source port is one no live flow of
//! that ENI uses, so the probe is judged as a new flow (security groups, listener) rather than
//! riding an established one, unless the caller names a port.
//!
//! Must not: change any state, or build a frame for an ENI the snapshot does not hold.

use core::net::{Ipv4Addr, SocketAddr};

use crate::Instant;
use crate::config::Attachment;
use crate::fabric::{Fabric, Trace};
use crate::wire::ethernet::{self, ETHERTYPE_IPV4, GATEWAY_MAC};
use crate::wire::ipv4::{self, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::l4::{self, TcpRepr, UdpRepr};
use crate::wire::vlan::Tci;
use crate::wire::{BufferTooSmall, checksum, geneve};

/// What the probe carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeProtocol {
    Tcp,
    Udp,
    Icmp,
}

impl ProbeProtocol {
    pub fn number(self) -> u8 {
        match self {
            ProbeProtocol::Tcp => PROTO_TCP,
            ProbeProtocol::Udp => PROTO_UDP,
            ProbeProtocol::Icmp => PROTO_ICMP,
        }
    }
}

/// A first packet to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The sending ENI.
    pub src_eni: String,
    pub dst: Ipv4Addr,
    pub protocol: ProbeProtocol,
    /// Destination port (TCP/UDP); ignored for ICMP.
    pub dst_port: u16,
    /// `None`: the first port from [`FIRST_SOURCE_PORT`] up that no live flow of the sender uses.
    pub src_port: Option<u16>,
}

/// Where the automatic source port starts (Linux's ephemeral range ends at 60999, so a probe's
/// port rarely meets a real connection's).
pub const FIRST_SOURCE_PORT: u16 = 61_000;

/// Why no frame could be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// The snapshot holds no such ENI (unknown, or not attached: only attached ENIs reach the
    /// fabric).
    UnknownEni(String),
    /// The ENI's node has no shim registered: nothing can send from it.
    NotRegistered(String),
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProbeError::UnknownEni(id) => write!(f, "{id} is not attached to an instance"),
            ProbeError::NotRegistered(id) => write!(f, "the node of {id} has no shim registered with the fabric"),
        }
    }
}

/// The frame as sent, and what the pipeline made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    pub src_ip: Ipv4Addr,
    pub src_port: u16,
    /// The Geneve datagram the probe was (as the shim would send it).
    pub datagram: Vec<u8>,
    pub trace: Trace,
}

impl Fabric {
    /// Explains `probe` as of `now` (see the module doc).
    pub fn explain(&self, now: Instant, probe: &Probe) -> Result<Explained, ProbeError> {
        let cfg = self.config();
        let eni = cfg
            .enis()
            .iter()
            .find(|e| e.id == probe.src_eni)
            .ok_or_else(|| ProbeError::UnknownEni(probe.src_eni.clone()))?;
        let (vni, tag) = match eni.attachment {
            Attachment::Port { vni } => (vni, None),
            Attachment::Member { trunk_vni, vlan } => (trunk_vni, Tci::from_vid(vlan)),
        };
        let port = cfg
            .ports()
            .iter()
            .find(|(v, _)| *v == vni)
            .map(|(_, p)| p)
            .ok_or_else(|| ProbeError::NotRegistered(probe.src_eni.clone()))?;
        let src_ip = eni.primary_ip;
        let src_port = match probe.src_port {
            Some(p) => p,
            None => self.free_port(now, probe.protocol.number(), src_ip),
        };
        let datagram = synthetic(vni, port.mac, tag, src_ip, src_port, probe)
            .map_err(|_| ProbeError::UnknownEni(probe.src_eni.clone()))?;
        let from: SocketAddr = port.peer;
        let trace = self.trace(now, from, &datagram);
        Ok(Explained { src_ip, src_port, datagram, trace })
    }

    fn free_port(&self, now: Instant, protocol: u8, src: Ipv4Addr) -> u16 {
        let used: std::collections::HashSet<u16> = self
            .flows(now)
            .into_iter()
            .filter(|f| f.protocol == protocol)
            .flat_map(|f| [(f.src, f.src_port), (f.dst, f.dst_port)])
            .filter(|(ip, _)| *ip == src)
            .map(|(_, p)| p)
            .collect();
        (FIRST_SOURCE_PORT..=u16::MAX).find(|p| !used.contains(p)).unwrap_or(FIRST_SOURCE_PORT)
    }
}

/// The probe's Geneve datagram.
fn synthetic(
    vni: geneve::Vni,
    src_mac: ethernet::Mac,
    tag: Option<Tci>,
    src: Ipv4Addr,
    src_port: u16,
    probe: &Probe,
) -> Result<Vec<u8>, BufferTooSmall> {
    const PAYLOAD: &[u8] = b"enifab trace";
    let mut l4 = vec![0u8; 64];
    let l4_len = match probe.protocol {
        ProbeProtocol::Tcp => TcpRepr {
            src,
            dst: probe.dst,
            src_port,
            dst_port: probe.dst_port,
            seq: 1,
            ack: 0,
            flags: l4::TCP_SYN,
            window: 65_535,
            payload: &[],
        }
        .emit(&mut l4)?,
        ProbeProtocol::Udp => {
            UdpRepr { src, dst: probe.dst, src_port, dst_port: probe.dst_port, payload: PAYLOAD }.emit(&mut l4)?
        }
        ProbeProtocol::Icmp => {
            // Echo request: type 8, code 0, identifier = the "source port", sequence 1.
            let len = 8 + PAYLOAD.len();
            l4[0] = l4::ICMP_ECHO_REQUEST;
            l4[4..6].copy_from_slice(&src_port.to_be_bytes());
            l4[6..8].copy_from_slice(&1u16.to_be_bytes());
            l4[8..len].copy_from_slice(PAYLOAD);
            let c = checksum::internet(&l4[..len]);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
            len
        }
    };
    l4.truncate(l4_len);
    let gh = geneve::Header { vni, oam: false, vnet: None };
    let ip = ipv4::Repr {
        src,
        dst: probe.dst,
        protocol: probe.protocol.number(),
        ttl: 64,
        tos: 0,
        ident: 1,
        payload_len: l4.len(),
    };
    let mut out = vec![0u8; gh.len() + ethernet::TAGGED_HEADER_LEN + ipv4::MIN_HEADER_LEN + l4.len()];
    let mut at = gh.emit(&mut out)?;
    at += ethernet::emit_header(GATEWAY_MAC, src_mac, tag, ETHERTYPE_IPV4, &mut out[at..])?;
    at += ip.emit(&mut out[at..])?;
    out[at..at + l4.len()].copy_from_slice(&l4);
    out.truncate(at + l4.len());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verdict;
    use crate::drop::DropReason;
    use crate::fabric::Step;
    use crate::testkit::Lab;
    use crate::{FabricOptions, SgMatch};
    use std::hash::RandomState;
    use std::sync::Arc;

    fn fabric(lab: &Lab) -> Fabric {
        Fabric::new(Arc::new(lab.build(1)), FabricOptions::new(RandomState::new()))
    }

    #[test]
    fn an_unknown_eni_is_named() {
        let f = fabric(&Lab::new());
        let p = Probe {
            src_eni: "eni-nope".into(),
            dst: Ipv4Addr::new(10, 0, 0, 1),
            protocol: ProbeProtocol::Tcp,
            dst_port: 80,
            src_port: None,
        };
        assert_eq!(f.explain(Instant(0), &p), Err(ProbeError::UnknownEni("eni-nope".into())));
    }

    #[test]
    fn every_lab_pair_explains_without_changing_anything() {
        let lab = Lab::new();
        let f = fabric(&lab);
        let before = f.stats();
        let cfg = f.config().clone();
        let mut seen_drop = false;
        for src in cfg.enis() {
            for dst in cfg.enis() {
                for protocol in [ProbeProtocol::Tcp, ProbeProtocol::Udp, ProbeProtocol::Icmp] {
                    let p =
                        Probe { src_eni: src.id.clone(), dst: dst.primary_ip, protocol, dst_port: 80, src_port: None };
                    let e = f.explain(Instant(1), &p).expect("lab ENIs are registered");
                    assert!(matches!(e.trace.steps.first(), Some(Step::Decap { .. })));
                    if let Verdict::Drop(
                        DropReason::SecurityGroupIngress { .. } | DropReason::SecurityGroupEgress { .. },
                    ) = e.trace.verdict
                    {
                        seen_drop = true;
                        let named = e.trace.steps.iter().any(|s| matches!(s, Step::SecurityGroup { .. }));
                        assert!(named, "a refused probe shows the check that refused it");
                    }
                }
            }
        }
        assert!(seen_drop, "the lab has groups that refuse something");
        assert_eq!(f.stats(), before, "explaining counts nothing");
        assert!(f.flows(Instant(1)).is_empty(), "explaining starts no flow");
    }

    #[test]
    fn a_blocking_rule_is_named_by_its_id() {
        use crate::config::{Direction, Peer, Policy, Protocol};
        use crate::testkit::{POD_A2, POD_B1, cidr, rule};
        let mut lab = Lab::new();
        let mut drop =
            rule(Direction::Ingress, 1, Policy::Drop, Protocol::Tcp, Some(80), Peer::Cidr(cidr([10, 0, 1, 0], 24)));
        drop.id = "sgr-blocker".into();
        lab.group_mut("sg-web").rules.push(drop);
        let p = Probe {
            src_eni: POD_A2.eni.into(),
            dst: POD_B1.ip,
            protocol: ProbeProtocol::Tcp,
            dst_port: 80,
            src_port: None,
        };
        let e = fabric(&lab).explain(Instant(1), &p).expect("registered");
        assert_eq!(
            e.trace.verdict,
            Verdict::Drop(DropReason::SecurityGroupIngress {
                eni: POD_B1.eni.into(),
                sg: Some("sg-web".into()),
                rule: Some("sgr-blocker".into()),
            })
        );
        let decided = e.trace.steps.iter().find_map(|s| match s {
            Step::SecurityGroup { decision: SgMatch::Rule { id, .. }, .. } => Some(id.clone()),
            _ => None,
        });
        assert_eq!(decided.as_deref(), Some("sgr-blocker"));
    }
}
