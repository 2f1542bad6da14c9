//! IPv6 through the fabric: the steps of the IPv4 pipeline (see the parent module), for the
//! second family of a dual-stack VPC.
//!
//! After the 802.1Q demux, an IPv6 frame:
//! 1. is parsed (header, extension chain, upper-layer protocol); fragments are not forwarded
//!    (`ipv6_fragment`), as IPv4 ones are not;
//! 2. if it is neighbour discovery, meets the IPv6 counterpart of proxy ARP: a solicitation for
//!    any target is answered with the gateway MAC `ee:ff:ff:ff:ff:ff` (hop limit 255, solicited
//!    and override set, router set for the vSwitch gateway, the target link-layer option) back
//!    on the same port and tag; a solicitation from `::` (duplicate address detection) and every
//!    other ND message are consumed (`ndp_consumed`), so a node never sees its own address
//!    contested and no router advertisement competes with the routes its shim installs;
//! 3. must otherwise be unicast to the gateway MAC between global addresses (a link-local or
//!    unspecified end is `ipv6_unsupported`); an echo request to the vSwitch's IPv6 gateway (the
//!    /64's last address − 2, Terway's rule) is answered by the fabric, anything else sent to it
//!    is `to_gateway`;
//! 4. passes anti-spoof when the sender has `SourceDestCheck` on: the source must be one of its
//!    IPv6 addresses or inside one of its /80 prefixes;
//! 5. is tracked (IPv6 flows have a table of their own, with the IPv4 table's rules) and routed
//!    by destination to the ENI holding the address, or the /80 prefix, in the sender's VPC;
//! 6. if no live flow vouches for it, is judged by the sender's egress and the receiver's
//!    ingress rules: rules with an IPv6 peer, group peers by their members' IPv6 addresses and
//!    prefixes, inner access as for IPv4;
//! 7. leaves with a new Ethernet header only (gateway MAC as source, the receiving port's MAC,
//!    the member's tag); the IPv6 packet is the input's tail, hop limit untouched. A TCP flow
//!    once established, or a UDP flow, is then granted to the nodes' kernels as an IPv4 one is
//!    (`crate::fastpath`: the same candidate, from this table).
//!
//! ICMPv6 errors (unreachable, packet too big, time exceeded, parameter problem) that quote a
//! packet of a live TCP or UDP flow pass like the flow's own packets when the flow's other end
//! sends them back to where the quoted packet came from (Path MTU discovery needs "too big" to
//! get through whatever the rules say); any other error is judged by the groups.
//!
//! Not for IPv6 yet: load balancers, flow logs and `enifab trace` (both speak IPv4 tuples).
//!
//! Parsing uses etherparse (the design card's choice), which walks the extension chain without
//! copying; neighbour discovery's rules and its answer are `enifab_net::wire::ipv6`'s (shared
//! with the tests of the shim's side), and the echo reply is written with etherparse's headers,
//! straight into the caller's buffer after the Geneve and Ethernet headers. Duplicate address
//! detection is the pipeline's decision: that module would answer it, the VPC does not.
//!
//! Must not: allocate, panic on any input, or change state before the verdict (the parent's
//! decide-then-commit rule holds: flows are recorded in the outcome).

use core::net::{Ipv6Addr, SocketAddr};

use enifab_net::wire::ipv6::{self as ndp, NdpError, NeighborAdvertisement, NeighborSolicitation};
use etherparse::{
    IcmpEchoHeader, Icmpv6Header, Icmpv6Slice, Icmpv6Type, IpNumber, Ipv6FlowLabel, Ipv6Header, Ipv6Slice,
};

use super::{Emit, FlowCommit, Outcome, SplitVerdict, Tracer, not_for_us, write_frame, write_headers};
use crate::Instant;
use crate::config::{Eni, EniIdx, FabricConfig, prefix80};
use crate::conntrack::{self, Conn, Dirs, FlowDir, FlowKey6, InsertError, L4Info, PROTO_ICMPV6};
use crate::drop::{DropReason, Layer};
use crate::fastpath;
use crate::security_group::PacketMeta;
use crate::wire::ethernet::{ETHERTYPE_IPV6, Frame, GATEWAY_MAC};
use crate::wire::geneve;
use crate::wire::ipv4::{PROTO_TCP, PROTO_UDP};
use crate::wire::l4::{Tcp, Udp};
use crate::wire::vnet::VnetHdr;
use crate::wire::{BufferTooSmall, ethernet};

use super::Fabric;

/// ICMPv6 types the fabric looks at (RFC 4443, RFC 4861).
const ECHO_REQUEST: u8 = 128;
const ECHO_REPLY: u8 = 129;
const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
const NEIGHBOR_SOLICITATION: u8 = ndp::TYPE_NEIGHBOR_SOLICITATION;
const NEIGHBOR_ADVERTISEMENT: u8 = ndp::TYPE_NEIGHBOR_ADVERTISEMENT;
const REDIRECT: u8 = 137;

/// The fixed IPv6 header.
pub(crate) const HEADER_LEN: usize = ndp::HEADER_LEN;

/// Hop limit of packets the fabric originates (echo replies), as IPv4's TTL.
const FABRIC_HOP_LIMIT: u8 = 64;

/// How an IPv6 packet relates to connection tracking.
#[derive(Debug, Clone, Copy)]
enum Track6 {
    Flow {
        key: FlowKey6,
        l4: L4Info,
        dirs: Dirs,
    },
    /// An ICMPv6 error quoting a packet of this TCP/UDP tuple.
    Related {
        quoted: FlowKey6,
    },
    None,
}

impl Fabric {
    /// Steps 1–7 of the module doc for a frame `src_idx` sent.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ipv6<T: Tracer>(
        &self,
        now: Instant,
        from: SocketAddr,
        gh: &geneve::Header,
        eth: &Frame<'_>,
        vnet: VnetHdr,
        src_idx: EniIdx,
        datagram: &[u8],
        out: &mut [u8],
        emit: Emit,
        o: &mut Outcome,
        t: &mut T,
    ) -> Result<SplitVerdict, DropReason> {
        let cfg = &*self.config;
        let src = cfg.eni(src_idx);

        // 1. Parse. A segmentation offload's super-frame may carry a payload length that is not
        //    its own, as for IPv4: its chain is then read leniently.
        let malformed = |detail| DropReason::Malformed { layer: Layer::Ipv6, detail };
        let pkt =
            if vnet.is_gso() { Ipv6Slice::from_slice_lax(eth.payload) } else { Ipv6Slice::from_slice(eth.payload) }
                .map_err(|_| malformed("ipv6 header or extension chain truncated or inconsistent"))?;
        let hdr = pkt.header();
        let (s6, d6) = (hdr.source_addr(), hdr.destination_addr());
        if pkt.is_payload_fragmented() {
            return Err(DropReason::Ipv6Fragment);
        }
        let upper = pkt.payload();
        let proto = upper.ip_number.0;

        // 2. Neighbour discovery, whatever the destination MAC (solicitations go to a
        //    solicited-node multicast address).
        if proto == PROTO_ICMPV6 {
            let icmp = Icmpv6Slice::from_slice(upper.payload)
                .map_err(|_| DropReason::Malformed { layer: Layer::Icmpv6, detail: "icmpv6 header truncated" })?;
            match icmp.type_u8() {
                NEIGHBOR_SOLICITATION => return self.neighbor_advertisement(src, gh, eth, from, out, o),
                ROUTER_SOLICITATION | ROUTER_ADVERTISEMENT | NEIGHBOR_ADVERTISEMENT | REDIRECT => {
                    return Err(DropReason::NdpConsumed);
                }
                _ => {}
            }
        }

        // 3. Unicast to the gateway MAC, global ends; the gateway's own address.
        if eth.dst != GATEWAY_MAC {
            return Err(not_for_us(eth.dst));
        }
        if !is_global(s6) || !is_global(d6) {
            return Err(DropReason::Ipv6Unsupported);
        }
        if cfg.gateways6.contains(&(src.vpc, d6)) {
            return self.echo_reply6(gh, eth, from, s6, d6, proto, upper.payload, out, o);
        }

        // 4. Anti-spoof.
        if src.source_dest_check && owner6(cfg, src.vpc, s6) != Some(src_idx) {
            return Err(DropReason::Spoofed { eni: src.id.clone(), src: s6.into() });
        }

        // 5. Track, then route.
        let (meta, track) = classify6(conntrack::ns(src.vpc), s6, d6, proto, upper.payload)?;
        let dst_idx = owner6(cfg, src.vpc, d6).ok_or(DropReason::NoRoute { dst: d6.into() })?;
        let dst = cfg.eni(dst_idx);
        let dst_port =
            cfg.ports.get(&dst.vni).ok_or_else(|| DropReason::DestinationNotRegistered { eni: dst.id.clone() })?;
        let timeouts = self.flow_timeouts(src, dst, None);
        let mut replaces = None;
        let mut established = match track {
            // The quoted packet went from this error's receiver to its sender.
            Track6::Related { quoted } if quoted.src == d6 => self.related6(&quoted, src, dst, now),
            _ => false,
        };
        if let Track6::Flow { key, l4, dirs } = track
            && let Some(found) = self.conntrack6.lookup(&key, dirs, now)
        {
            let e = found.conn.entry;
            let same_ends = match found.dir {
                FlowDir::Original => (e.src_eni, e.dst_eni) == (src.key, dst.key),
                FlowDir::Reply => (e.src_eni, e.dst_eni) == (dst.key, src.key),
            };
            if same_ends && !conntrack::is_reopen(&e, found.dir, l4) {
                let next = conntrack::advance(&e, found.dir, l4, now, &timeouts);
                o.flow = Some(FlowCommit::Update6 { slot: found.slot, entry: next });
                established = true;
            } else {
                // Between other ends now, or a port reopened: judged afresh, and the new flow
                // takes the old one's place.
                replaces = Some(found.slot);
            }
        }

        // 6. Security groups, for packets no live flow vouches for.
        if !established {
            self.security_groups(src, dst, &meta, &meta, t).verdict?;
            if let Track6::Flow { key, l4, .. } = track
                && let Some(entry) = conntrack::start(l4, now, &timeouts, src.key, dst.key, None)
            {
                let conn = Conn { orig: key, entry };
                match self.conntrack6.check_insert(&conn, now, replaces) {
                    Ok(()) => {}
                    Err(InsertError::Full) => return Err(DropReason::ConntrackFull),
                    Err(InsertError::Clash) => return Err(DropReason::ConntrackClash),
                }
                o.flow = Some(FlowCommit::New6 { conn, replaces });
            }
        }

        // 7. Rewrite the Ethernet header and encap; the packet is the input's tail.
        let tag = dst.tag;
        let out_l2 = if tag.is_some() { ethernet::TAGGED_HEADER_LEN } else { ethernet::HEADER_LEN };
        let shift = out_l2 as i32 - eth.header_len as i32;
        let mut out_vnet = vnet;
        out_vnet.shift(shift).map_err(|m| DropReason::malformed(Layer::Vnet, m))?;
        let oh = geneve::Header { vni: dst.vni, oam: false, vnet: gh.vnet.map(|_| out_vnet) };
        let payload = datagram.len().saturating_sub(eth.payload.len())..datagram.len();
        let room_after = match emit {
            Emit::Whole => payload.len(),
            Emit::Split => 0,
        };
        let header_len = write_headers(out, &oh, dst_port.mac, tag, ETHERTYPE_IPV6, room_after)?;
        o.tx = Some((dst.vni, header_len - oh.len() + payload.len()));
        o.tx_eni = Some(dst_idx);
        if let Track6::Flow { key, .. } = track {
            let c = fastpath::Candidate { key, src: src_idx, dst: dst_idx };
            o.grant = self.grant_candidate(fastpath::AnyCandidate::V6(c), key.proto, o);
        }
        Ok(SplitVerdict::Forward { to: dst_port.peer, header_len, payload })
    }

    /// Whether an error that `src` sends to `dst` about the `quoted` tuple belongs to a live
    /// flow between those two ENIs, `dst` being the end the quoted packet came from.
    fn related6(&self, quoted: &FlowKey6, src: &Eni, dst: &Eni, now: Instant) -> bool {
        let Some(found) = self.conntrack6.lookup(quoted, Dirs::Both, now) else { return false };
        let e = found.conn.entry;
        match found.dir {
            FlowDir::Original => (e.src_eni, e.dst_eni) == (dst.key, src.key),
            FlowDir::Reply => (e.src_eni, e.dst_eni) == (src.key, dst.key),
        }
    }

    /// Answers a neighbour solicitation: "its target is at `ee:ff:ff:ff:ff:ff`". One a node
    /// must ignore (RFC 4861 §7.1.1), and duplicate address detection, are consumed.
    fn neighbor_advertisement(
        &self,
        src: &Eni,
        gh: &geneve::Header,
        eth: &Frame<'_>,
        from: SocketAddr,
        out: &mut [u8],
        o: &mut Outcome,
    ) -> Result<SplitVerdict, DropReason> {
        let ip = ndp::Packet::parse(eth.payload).map_err(|m| DropReason::malformed(Layer::Ipv6, m))?;
        let ns = match NeighborSolicitation::parse(&ip) {
            Ok(ns) => ns,
            Err(NdpError::NotSolicitation | NdpError::Invalid(_)) => return Err(DropReason::NdpConsumed),
        };
        // Duplicate address detection: no answer, or the node would give up its address.
        if ip.src.is_unspecified() {
            return Err(DropReason::NdpConsumed);
        }
        let router = self.config.gateways6.contains(&(src.vpc, ns.target));
        let na = NeighborAdvertisement::answer(ip.src, &ns, GATEWAY_MAC, router);
        let oh = geneve::Header { vni: gh.vni, oam: false, vnet: None };
        let len = write_frame(out, &oh, eth.src, eth.tag, ETHERTYPE_IPV6, ndp::ADVERTISEMENT_LEN, |b| na.emit(b))?;
        o.tx = Some((gh.vni, len - oh.len()));
        Ok(SplitVerdict::Reply { to: from, len })
    }

    /// The vSwitch gateway answers ping; anything else sent to it is `to_gateway`.
    #[allow(clippy::too_many_arguments)]
    fn echo_reply6(
        &self,
        gh: &geneve::Header,
        eth: &Frame<'_>,
        from: SocketAddr,
        sender: Ipv6Addr,
        gateway: Ipv6Addr,
        proto: u8,
        icmp: &[u8],
        out: &mut [u8],
        o: &mut Outcome,
    ) -> Result<SplitVerdict, DropReason> {
        let refuse = DropReason::ToGateway { dst: gateway.into() };
        if proto != PROTO_ICMPV6 || icmp.len() < 8 || icmp[0] != ECHO_REQUEST || icmp[1] != 0 {
            return Err(refuse);
        }
        let oh = geneve::Header { vni: gh.vni, oam: false, vnet: None };
        let len = write_frame(out, &oh, eth.src, eth.tag, ETHERTYPE_IPV6, HEADER_LEN + icmp.len(), |b| {
            emit_echo_reply(b, gateway, sender, icmp)
        })?;
        o.tx = Some((gh.vni, len - oh.len()));
        Ok(SplitVerdict::Reply { to: from, len })
    }
}

/// The ENI holding `ip` in VPC `vpc`: as an address, or inside one of its /80 prefixes.
pub(super) fn owner6(cfg: &FabricConfig, vpc: u64, ip: Ipv6Addr) -> Option<EniIdx> {
    cfg.by_ip6.get(&(vpc, ip)).or_else(|| cfg.by_prefix6.get(&(vpc, prefix80(ip)))).copied()
}

/// Neither unspecified, loopback, link-local nor multicast: an address a VPC routes.
fn is_global(ip: Ipv6Addr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_unicast_link_local())
}

/// What rules and conntrack see of an IPv6 packet whose upper layer is `proto`.
fn classify6(
    ns: u32,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    proto: u8,
    l4: &[u8],
) -> Result<(PacketMeta<Ipv6Addr>, Track6), DropReason> {
    let mut meta = PacketMeta { proto, src, dst, ports: None };
    let key = |sport, dport| FlowKey6 { ns, proto, src, dst, sport, dport };
    let track = match proto {
        PROTO_TCP => {
            let h = Tcp::parse(l4).map_err(|m| DropReason::malformed(Layer::Tcp, m))?;
            meta.ports = Some((h.src_port, h.dst_port));
            Track6::Flow { key: key(h.src_port, h.dst_port), l4: L4Info::Tcp { flags: h.flags }, dirs: Dirs::Both }
        }
        PROTO_UDP => {
            let h = Udp::parse(l4).map_err(|m| DropReason::malformed(Layer::Udp, m))?;
            meta.ports = Some((h.src_port, h.dst_port));
            Track6::Flow { key: key(h.src_port, h.dst_port), l4: L4Info::Udp, dirs: Dirs::Both }
        }
        PROTO_ICMPV6 => {
            let short = || DropReason::Malformed { layer: Layer::Icmpv6, detail: "icmpv6 echo truncated" };
            match l4.first().copied() {
                Some(ECHO_REQUEST) => {
                    let id = crate::wire::be16(l4, 4).ok_or_else(short)?;
                    Track6::Flow { key: key(id, 0), l4: L4Info::IcmpEcho, dirs: Dirs::OriginalOnly }
                }
                Some(ECHO_REPLY) => {
                    let id = crate::wire::be16(l4, 4).ok_or_else(short)?;
                    let request = FlowKey6 { src: dst, dst: src, sport: id, dport: 0, ..key(0, 0) };
                    Track6::Flow { key: request, l4: L4Info::IcmpEcho, dirs: Dirs::ReplyOnly }
                }
                Some(1..=4) => l4
                    .get(8..)
                    .and_then(|q| quoted_flow6(ns, q))
                    .map_or(Track6::None, |quoted| Track6::Related { quoted }),
                _ => Track6::None,
            }
        }
        _ => Track6::Flow { key: key(0, 0), l4: L4Info::Other, dirs: Dirs::Both },
    };
    Ok((meta, track))
}

/// The TCP/UDP tuple an ICMPv6 error quotes (RFC 4443 §2.4: as much of the invoking packet as
/// fits). A quoted packet with extension headers is not followed: it is rare, and the error is
/// then judged as any other.
fn quoted_flow6(ns: u32, quoted: &[u8]) -> Option<FlowKey6> {
    let q = quoted.get(..HEADER_LEN + 4)?;
    let proto = q[6];
    if q[0] >> 4 != 6 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return None;
    }
    let addr = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&q[at..at + 16]).unwrap_or([0; 16]));
    let sport = crate::wire::be16(q, HEADER_LEN)?;
    let dport = crate::wire::be16(q, HEADER_LEN + 2)?;
    Some(FlowKey6 { ns, proto, src: addr(8), dst: addr(24), sport, dport })
}

/// `request` (an echo request to `gateway`) answered as an echo reply to `to`.
fn emit_echo_reply(b: &mut [u8], gateway: Ipv6Addr, to: Ipv6Addr, request: &[u8]) -> Result<usize, BufferTooSmall> {
    let needed = HEADER_LEN + request.len();
    let available = b.len();
    let too_small = BufferTooSmall { needed, available };
    let b = b.get_mut(..needed).ok_or(too_small)?;
    let id = u16::from_be_bytes([request[4], request[5]]);
    let seq = u16::from_be_bytes([request[6], request[7]]);
    let data = &request[8..];
    let ip = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: u16::try_from(request.len()).map_err(|_| too_small)?,
        next_header: IpNumber::IPV6_ICMP,
        hop_limit: FABRIC_HOP_LIMIT,
        source: gateway.octets(),
        destination: to.octets(),
    };
    let icmp =
        Icmpv6Header::with_checksum(Icmpv6Type::EchoReply(IcmpEchoHeader { id, seq }), ip.source, ip.destination, data)
            .map_err(|_| too_small)?;
    b[..HEADER_LEN].copy_from_slice(&ip.to_bytes());
    b[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&icmp.to_bytes());
    b[HEADER_LEN + 8..].copy_from_slice(data);
    Ok(needed)
}

#[cfg(test)]
mod test {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    #[test]
    fn an_echo_reply_is_what_etherparse_reads() {
        let gw: Ipv6Addr = "2408:4005:3000:4:ffff:ffff:ffff:fffd".parse().unwrap();
        let to: Ipv6Addr = "2408:4005:3000:4::7".parse().unwrap();
        let request = [ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'];
        let mut b = [0u8; 100];
        let n = emit_echo_reply(&mut b, gw, to, &request).unwrap();
        let p = SlicedPacket::from_ip(&b[..n]).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &p.net else { panic!("not IPv6") };
        assert_eq!(ip.header().source_addr(), gw);
        let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else { panic!("not ICMPv6") };
        assert!(icmp.is_checksum_valid(gw.octets(), to.octets()));
        match icmp.icmp_type() {
            Icmpv6Type::EchoReply(h) => assert_eq!((h.id, h.seq), (0x1234, 1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(icmp.payload(), b"hi");
    }
}
