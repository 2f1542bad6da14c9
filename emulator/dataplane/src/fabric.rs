//! [`Fabric::process`]: one Geneve datagram in, one [`Verdict`] out. The steps, in order (see
//! `PIPELINE.md` for the flowchart):
//!
//! 1. Geneve decap (RFC 8926) and port lookup: the VNI must be registered *and* the datagram
//!    must come from the shim address that registered it.
//! 2. 802.1Q demux: untagged (or priority-tagged, VID 0) = the port's own ENI; VID n = the
//!    member ENI attached to this trunk port with `DeviceIndex` n; anything else is dropped.
//! 3. Proxy ARP: every request is answered with `ee:ff:ff:ff:ff:ff`, back on the same port and
//!    tag; replies, announcements and probes are consumed.
//! 4. IPv4 only, addressed to `ee:ff:ff:ff:ff:ff`; an echo request to any vSwitch gateway of
//!    the VPC (CIDR last − 2) is answered by the fabric.
//! 5. Anti-spoof when the sender has `SourceDestCheck` on.
//! 6. Route by destination IP to the ENI of the VPC that owns it. (The receiver's own
//!    `SourceDestCheck` needs no code: only its own addresses route to it.)
//! 7. Conntrack: a packet of a live flow, either direction, skips step 8.
//! 8. Security groups: sender's egress, then receiver's ingress.
//! 9. Rewrite as routed (src MAC `ee:ff:ff:ff:ff:ff`, dst MAC = receiving port's MAC, member
//!    VLAN pushed, TTL untouched) and re-encapsulate, moving the virtio-net offsets by the
//!    change in L2 header length.
//!
//! Accepted destination MACs: ARP to broadcast or `ee:ff:ff:ff:ff:ff` (Linux re-validates
//! neighbours with unicast ARP); IPv4 to `ee:ff:ff:ff:ff:ff` only, which is what every node
//! addresses after proxy ARP. Other unicast MACs are `not_for_gateway`; broadcast and multicast
//! IPv4 are `broadcast_or_multicast` (a VPC never floods). Source MACs are not checked: the
//! port and VLAN identify the sender (architecture decision 4).
//!
//! Forwarding never changes the inner IPv4 packet, so [`Fabric::process_split`] writes only the
//! new Geneve and Ethernet headers and names the packet as a range of the input datagram
//! ([`SplitVerdict`]): the caller sends headers and payload as two pieces of one datagram (the
//! emulator, as two iovecs) and the packet is never copied here. [`Fabric::process`] runs the
//! same pipeline, only checking `out` for room for the payload too, then copies the payload
//! after the headers; the two cannot disagree on anything else. The gateway's replies (ARP,
//! echo) are always written whole.
//!
//! Decide, then commit: the pipeline itself (`decide`) only reads `self`; the conntrack entry
//! and counters it produced are applied afterwards. [`Fabric::trace`] runs the same code with a
//! step recorder and skips the commit, so explaining a frame changes nothing. The recorder is a
//! generic parameter whose no-op version compiles away on the normal path.

use core::net::{Ipv4Addr, SocketAddr};
use core::ops::Range;
use core::time::Duration;
use std::hash::RandomState;
use std::sync::Arc;

use crate::Instant;
use crate::config::{Direction, Eni, EniIdx, FabricConfig, Policy};
use crate::conntrack::{self, Conntrack, Entry, FlowDir, FlowKey, FlowState, L4Info};
use crate::drop::{DropReason, Layer};
use crate::security_group::{self, Judgement, PacketMeta, SgMatch};
use crate::stats::{Stats, StatsSnapshot};
use crate::wire::arp::{self, ArpError};
use crate::wire::ethernet::{
    self, BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Frame, GATEWAY_MAC, L2Error, Mac,
};
use crate::wire::geneve::{self, Vni};
use crate::wire::ipv4::{self, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::l4::{self, Icmp, Tcp, Udp};
use crate::wire::vlan::{self, Tci};
use crate::wire::vnet::VnetHdr;
use crate::wire::{BufferTooSmall, checksum};

/// The output datagram is never longer than the input plus this (one pushed 802.1Q tag): size
/// `out` as `datagram.len() + MAX_GROWTH` and `OutputBufferTooSmall` cannot happen.
pub const MAX_GROWTH: usize = vlan::TAG_LEN;

/// The headers [`Fabric::process_split`] writes for a forwarded datagram are never longer than
/// this: Geneve with the virtio-net option, and an 802.1Q-tagged Ethernet header.
pub const MAX_HEADER_LEN: usize = geneve::MAX_EMIT_LEN + ethernet::TAGGED_HEADER_LEN;

/// TTL of packets the gateway originates (echo replies), Linux's default.
const GATEWAY_TTL: u8 = 64;

/// What the caller must do with a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send `out[..len]`, a complete Geneve datagram, to the receiving port's shim.
    Forward { to: SocketAddr, len: usize },
    /// Send `out[..len]` back to the sender: the gateway's ARP or echo reply.
    Reply { to: SocketAddr, len: usize },
    /// Nothing to send; already counted.
    Drop(DropReason),
}

/// What the caller must do with a datagram, from [`Fabric::process_split`]: as [`Verdict`], but a
/// forwarded datagram is left in two pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitVerdict {
    /// Send one datagram to the receiving port's shim: `headers_out[..header_len]` (Geneve and
    /// Ethernet headers) followed by `datagram[payload]` (the inner packet, unchanged).
    Forward { to: SocketAddr, header_len: usize, payload: Range<usize> },
    /// Send `headers_out[..len]`, a complete Geneve datagram, back to the sender: the gateway's
    /// ARP or echo reply.
    Reply { to: SocketAddr, len: usize },
    /// Nothing to send; already counted.
    Drop(DropReason),
}

/// How much of a forwarded datagram `run` writes into `out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emit {
    /// The headers, with room checked for the payload after them (which the caller copies).
    Whole,
    /// The headers only.
    Split,
}

/// Construction parameters of a [`Fabric`].
#[derive(Debug, Clone)]
pub struct FabricOptions {
    /// Most flows tracked at once; new flows beyond it are dropped `conntrack_full`. The table
    /// is reserved up front.
    pub conntrack_max: usize,
    /// Hasher of the conntrack table, whose keys come from the wire. The shell passes
    /// `RandomState::new()` so that nobody can aim collisions at it; the core never creates
    /// randomness itself.
    pub conntrack_hasher: RandomState,
}

impl FabricOptions {
    pub fn new(conntrack_hasher: RandomState) -> FabricOptions {
        FabricOptions { conntrack_max: 65_536, conntrack_hasher }
    }
}

/// How a packet related to connection tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtLookup {
    /// Part of a live flow: security groups are skipped.
    Established { dir: FlowDir, state: FlowState },
    /// An ICMP error about a live flow: passes like the flow's own packets.
    Related,
    /// Trackable, no live flow: security groups decide and a flow starts if they allow.
    New,
    /// Not trackable (ICMP other than echo, echo replies without a request): security groups
    /// decide, no flow starts.
    Untracked,
}

/// One step a frame took through the pipeline, for `enifab trace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Decap { vni: Vni, vnet: Option<VnetHdr>, frame_len: usize },
    Port { vni: Vni, peer: SocketAddr, eni: Arc<str> },
    Demux { vlan: Option<u16>, eni: Arc<str> },
    Arp { operation: u16, sender_ip: Ipv4Addr, target_ip: Ipv4Addr },
    Ipv4 { src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, gso: bool },
    GatewayEcho { gateway: Ipv4Addr },
    SourceCheck { eni: Arc<str>, enabled: bool },
    Route { dst: Ipv4Addr, eni: Arc<str>, vni: Vni, vlan: Option<u16> },
    Conntrack(CtLookup),
    SecurityGroup { direction: Direction, eni: Arc<str>, decision: SgMatch },
    FlowStarted { state: FlowState },
    Rewrite { vni: Vni, to: SocketAddr, dst_mac: Mac, vlan: Option<u16>, vnet_shift: i32 },
}

/// The explanation of one frame: steps, verdict, and the bytes that would have been sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub steps: Vec<Step>,
    pub verdict: Verdict,
    pub output: Vec<u8>,
}

/// A tracked flow, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowView {
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Ports for TCP/UDP, echo id and 0 for ICMP, 0 otherwise.
    pub src_port: u16,
    pub dst_port: u16,
    pub state: FlowState,
    pub expires_in: Duration,
}

trait Tracer {
    fn step<F: FnOnce() -> Step>(&mut self, f: F);
}

struct NoTrace;

impl Tracer for NoTrace {
    #[inline(always)]
    fn step<F: FnOnce() -> Step>(&mut self, _f: F) {}
}

impl Tracer for Vec<Step> {
    fn step<F: FnOnce() -> Step>(&mut self, f: F) {
        self.push(f());
    }
}

/// Everything `decide` wants changed; applied by `commit`.
struct Outcome {
    rx: Option<Vni>,
    in_bytes: usize,
    tx: Option<(Vni, usize)>,
    flow: Option<(FlowKey, Entry)>,
}

/// The VPC's switch: current snapshot, flow table and counters.
#[derive(Debug)]
pub struct Fabric {
    config: Arc<FabricConfig>,
    conntrack: Conntrack,
    stats: Stats,
}

impl Fabric {
    pub fn new(config: Arc<FabricConfig>, options: FabricOptions) -> Fabric {
        let stats = Stats::new(&config);
        Fabric { conntrack: Conntrack::new(options.conntrack_max, options.conntrack_hasher), stats, config }
    }

    /// Swaps in a new snapshot; the next frame sees it. Flows and counters are kept (counters of
    /// ports that left the snapshot are dropped). Tracked flows are *not* re-judged against the
    /// new rules: see the `conntrack` module for why.
    pub fn set_config(&mut self, config: Arc<FabricConfig>) {
        self.stats.sync_ports(&config);
        self.config = config;
    }

    pub fn config(&self) -> &Arc<FabricConfig> {
        &self.config
    }

    /// Runs the pipeline on one datagram from `from`, writing any datagram to send into `out`.
    /// `out` should hold `datagram.len() + MAX_GROWTH` bytes.
    pub fn process(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], out: &mut [u8]) -> Verdict {
        let mut o = Outcome { rx: None, in_bytes: datagram.len(), tx: None, flow: None };
        let split = self.decide(now, from, datagram, out, Emit::Whole, &mut o, &mut NoTrace);
        let verdict = join(split, datagram, out);
        self.commit(o, if let Verdict::Drop(reason) = &verdict { Some(reason) } else { None });
        verdict
    }

    /// [`Fabric::process`] without copying what it forwards: a forwarded datagram is
    /// `headers_out[..header_len]` followed by `datagram[payload]` (see [`SplitVerdict`]); only
    /// the gateway's replies are written whole into `headers_out`. Flows and counters change
    /// exactly as with `process`. `headers_out` needs [`MAX_HEADER_LEN`] bytes for forwarding and
    /// `datagram.len() + MAX_GROWTH` for every reply to fit; a shorter one drops what does not
    /// fit as `output_buffer_too_small`.
    pub fn process_split(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        headers_out: &mut [u8],
    ) -> SplitVerdict {
        let mut o = Outcome { rx: None, in_bytes: datagram.len(), tx: None, flow: None };
        let verdict = self.decide(now, from, datagram, headers_out, Emit::Split, &mut o, &mut NoTrace);
        self.commit(o, if let SplitVerdict::Drop(reason) = &verdict { Some(reason) } else { None });
        verdict
    }

    /// Explains what [`Fabric::process`] would do with this datagram now, without changing any
    /// flow or counter.
    pub fn trace(&self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Trace {
        let mut out = vec![0u8; datagram.len() + MAX_GROWTH];
        let mut steps = Vec::new();
        let mut o = Outcome { rx: None, in_bytes: datagram.len(), tx: None, flow: None };
        let split = self.decide(now, from, datagram, &mut out, Emit::Whole, &mut o, &mut steps);
        let verdict = join(split, datagram, &mut out);
        let len = match verdict {
            Verdict::Forward { len, .. } | Verdict::Reply { len, .. } => len,
            Verdict::Drop(_) => 0,
        };
        out.truncate(len);
        Trace { steps, verdict, output: out }
    }

    /// Forgets flows that have expired at `now`; returns how many. Call periodically: lookups
    /// already ignore expired flows, this only reclaims their room.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.conntrack.expire(now)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot(&self.config, self.conntrack.len())
    }

    /// Live flows at `now` (allocates; for inspection, not for the frame path).
    pub fn flows(&self, now: Instant) -> Vec<FlowView> {
        self.conntrack
            .iter()
            .filter(|(_, e)| e.expires > now.0)
            .map(|(k, e)| FlowView {
                protocol: k.proto,
                src: k.src,
                dst: k.dst,
                src_port: k.sport,
                dst_port: k.dport,
                state: e.state,
                expires_in: Duration::from_nanos(e.expires - now.0),
            })
            .collect()
    }

    /// Applies what `decide` produced: counters always, the flow only if something is sent.
    fn commit(&mut self, o: Outcome, dropped: Option<&DropReason>) {
        if let Some(vni) = o.rx {
            self.stats.rx(vni, o.in_bytes);
        }
        match dropped {
            Some(reason) => self.stats.drop(o.rx, reason.kind(), o.in_bytes),
            None => {
                if let Some((key, entry)) = o.flow {
                    self.conntrack.store(key, entry);
                }
                if let Some((vni, bytes)) = o.tx {
                    self.stats.tx(vni, bytes);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn decide<T: Tracer>(
        &self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
        emit: Emit,
        o: &mut Outcome,
        t: &mut T,
    ) -> SplitVerdict {
        match self.run(now, from, datagram, out, emit, o, t) {
            Ok(v) => v,
            Err(reason) => SplitVerdict::Drop(reason),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run<T: Tracer>(
        &self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
        emit: Emit,
        o: &mut Outcome,
        t: &mut T,
    ) -> Result<SplitVerdict, DropReason> {
        let cfg = &*self.config;

        // 1. Decap and port.
        let (gh, frame) = geneve::Header::parse(datagram)?;
        t.step(|| Step::Decap { vni: gh.vni, vnet: gh.vnet, frame_len: frame.len() });
        if gh.oam {
            return Err(DropReason::GeneveOam);
        }
        let port = cfg.ports.get(&gh.vni).ok_or(DropReason::UnknownPort { vni: gh.vni })?;
        if port.peer != from {
            return Err(DropReason::UnknownPeer { vni: gh.vni, from });
        }
        o.rx = Some(gh.vni);
        o.in_bytes = frame.len();
        t.step(|| Step::Port { vni: gh.vni, peer: from, eni: port.eni_id.clone() });
        let vnet = gh.vnet.unwrap_or_default();
        vnet.check_frame(frame.len()).map_err(|m| DropReason::malformed(Layer::Vnet, m))?;

        // 2. 802.1Q demux.
        let eth = Frame::parse(frame).map_err(|e| match e {
            L2Error::Ethernet(m) => DropReason::malformed(Layer::Ethernet, m),
            L2Error::Vlan(m) => DropReason::malformed(Layer::Vlan, m),
            L2Error::Tpid(tpid) => DropReason::UnsupportedTpid(tpid),
        })?;
        let src_idx = match eth.tag.map(Tci::vid) {
            // VID 0 is a priority tag: the frame belongs to the untagged ENI (802.1Q §9.6).
            Some(vlan) if vlan != 0 => {
                *cfg.by_vlan.get(&(gh.vni, vlan)).ok_or(DropReason::UnknownVlan { vni: gh.vni, vlan })?
            }
            _ => port.eni.ok_or(DropReason::UnknownEni { vni: gh.vni })?,
        };
        let src = cfg.eni(src_idx);
        t.step(|| Step::Demux { vlan: eth.tag.map(Tci::vid), eni: src.id.clone() });

        // 3. ARP, or IPv4 to the gateway MAC.
        match eth.ethertype {
            ETHERTYPE_ARP => return self.arp(&gh, &eth, from, out, o, t),
            ETHERTYPE_IPV4 => {}
            ETHERTYPE_IPV6 => return Err(DropReason::Ipv6Unsupported),
            other => return Err(DropReason::UnsupportedEthertype(other)),
        }
        if eth.dst != GATEWAY_MAC {
            return Err(not_for_us(eth.dst));
        }
        let ip = ipv4::Packet::parse(eth.payload, vnet.is_gso()).map_err(|m| DropReason::malformed(Layer::Ipv4, m))?;
        t.step(|| Step::Ipv4 { src: ip.src, dst: ip.dst, protocol: ip.protocol, gso: vnet.is_gso() });
        if ip.is_fragment() {
            return Err(DropReason::Ipv4Fragment);
        }

        // 4. The vSwitch gateways.
        if cfg.gateways.contains(&(src.vpc, ip.dst)) {
            return self.gateway_echo(&gh, &eth, &ip, from, out, o, t);
        }

        // 5. Anti-spoof: the source must be routed back to this very ENI.
        if src.source_dest_check && cfg.by_ip.get(&(src.vpc, ip.src)) != Some(&src_idx) {
            return Err(DropReason::Spoofed { eni: src.id.clone(), src: ip.src });
        }
        t.step(|| Step::SourceCheck { eni: src.id.clone(), enabled: src.source_dest_check });

        // 6. Route.
        let dst_idx: EniIdx = *cfg.by_ip.get(&(src.vpc, ip.dst)).ok_or(DropReason::NoRoute { dst: ip.dst })?;
        let dst = cfg.eni(dst_idx);
        let dst_port =
            cfg.ports.get(&dst.vni).ok_or_else(|| DropReason::DestinationNotRegistered { eni: dst.id.clone() })?;
        t.step(|| Step::Route { dst: ip.dst, eni: dst.id.clone(), vni: dst.vni, vlan: dst.tag.map(Tci::vid) });

        // 7. Conntrack.
        let (meta, track) = classify(src.vpc, &ip)?;
        let timeouts = src.timeouts.min(&dst.timeouts);
        let lookup = match track {
            Track::Flow { key, l4, dirs } => match self.live_flow(key, dirs, l4, src, dst, now) {
                Some((canonical, dir, entry)) => {
                    let next = conntrack::advance(&entry, dir, l4, now, &timeouts);
                    o.flow = Some((canonical, next));
                    CtLookup::Established { dir, state: next.state }
                }
                None => CtLookup::New,
            },
            // The quoted packet went the other way, from this error's receiver to its sender:
            // only the flow's other end can speak for it (a VPC has no router in between).
            Track::Related { quoted } => match self.live_flow(quoted, Dirs::Both, L4Info::Other, dst, src, now) {
                Some(_) => CtLookup::Related,
                None => CtLookup::Untracked,
            },
            Track::None => CtLookup::Untracked,
        };
        t.step(|| Step::Conntrack(lookup));

        // 8. Security groups, for packets no live flow vouches for.
        if matches!(lookup, CtLookup::New | CtLookup::Untracked) {
            self.security_groups(src, dst, &meta, t)?;
            if let Track::Flow { key, l4, .. } = track
                && let Some(entry) = conntrack::start(l4, now, &timeouts, src.key, dst.key)
            {
                if !self.conntrack.has_room_for(&key) {
                    return Err(DropReason::ConntrackFull);
                }
                o.flow = Some((key, entry));
                t.step(|| Step::FlowStarted { state: entry.state });
            }
        }

        // 9. Rewrite and encap.
        let tag = dst.tag;
        let out_l2 = if tag.is_some() { ethernet::TAGGED_HEADER_LEN } else { ethernet::HEADER_LEN };
        let shift = out_l2 as i32 - eth.header_len as i32;
        let mut out_vnet = vnet;
        out_vnet.shift(shift).map_err(|m| DropReason::malformed(Layer::Vnet, m))?;
        let oh = geneve::Header { vni: dst.vni, oam: false, vnet: gh.vnet.map(|_| out_vnet) };
        // The IPv4 packet leaves unchanged: it is the input datagram's tail, sent from where it is
        // (or copied by `join`).
        let payload = datagram.len().saturating_sub(eth.payload.len())..datagram.len();
        let room_after = match emit {
            Emit::Whole => payload.len(),
            Emit::Split => 0,
        };
        let header_len = write_headers(out, &oh, dst_port.mac, tag, ETHERTYPE_IPV4, room_after)?;
        o.tx = Some((dst.vni, header_len - oh.len() + payload.len()));
        t.step(|| Step::Rewrite {
            vni: dst.vni,
            to: dst_port.peer,
            dst_mac: dst_port.mac,
            vlan: tag.map(Tci::vid),
            vnet_shift: shift,
        });
        Ok(SplitVerdict::Forward { to: dst_port.peer, header_len, payload })
    }

    /// The live entry of this packet's flow, with the key it is stored under and the packet's
    /// direction. An entry admitted between other ENIs (the address moved) or closed and now
    /// reopened by a SYN does not count: the packet must be judged afresh.
    fn live_flow(
        &self,
        key: FlowKey,
        dirs: Dirs,
        l4: L4Info,
        src: &Eni,
        dst: &Eni,
        now: Instant,
    ) -> Option<(FlowKey, FlowDir, Entry)> {
        let original = || self.conntrack.get(&key, now).map(|e| (key, FlowDir::Original, *e));
        let reply = || {
            let k = if dirs == Dirs::ReplyOnly { key } else { key.reversed() };
            self.conntrack.get(&k, now).map(|e| (k, FlowDir::Reply, *e))
        };
        let found = match dirs {
            Dirs::Both => original().or_else(reply),
            Dirs::OriginalOnly => original(),
            Dirs::ReplyOnly => reply(),
        };
        found.filter(|(_, dir, e)| {
            let same_enis = match dir {
                FlowDir::Original => (e.src_eni, e.dst_eni) == (src.key, dst.key),
                FlowDir::Reply => (e.src_eni, e.dst_eni) == (dst.key, src.key),
            };
            same_enis && !conntrack::is_reopen(e, *dir, l4)
        })
    }

    fn security_groups<T: Tracer>(&self, src: &Eni, dst: &Eni, meta: &PacketMeta, t: &mut T) -> Result<(), DropReason> {
        let cfg = &*self.config;
        if let Some(g) = security_group::shared_inner_group(src, dst) {
            let j = Judgement::InnerAccess(g);
            t.step(|| Step::SecurityGroup {
                direction: Direction::Egress,
                eni: src.id.clone(),
                decision: j.describe(cfg),
            });
            t.step(|| Step::SecurityGroup {
                direction: Direction::Ingress,
                eni: dst.id.clone(),
                decision: j.describe(cfg),
            });
            return Ok(());
        }
        for (direction, eni) in [(Direction::Egress, src), (Direction::Ingress, dst)] {
            let j = security_group::judge(cfg, eni, direction, meta);
            t.step(|| Step::SecurityGroup { direction, eni: eni.id.clone(), decision: j.describe(cfg) });
            if j.policy() == Policy::Drop {
                let (sg, rule) = match j {
                    Judgement::Rule(r) => (Some(cfg.group(r.group).id.clone()), Some(r.index)),
                    _ => (None, None),
                };
                let eni = eni.id.clone();
                return Err(match direction {
                    Direction::Egress => DropReason::SecurityGroupEgress { eni, sg, rule },
                    Direction::Ingress => DropReason::SecurityGroupIngress { eni, sg, rule },
                });
            }
        }
        Ok(())
    }

    fn arp<T: Tracer>(
        &self,
        gh: &geneve::Header,
        eth: &Frame<'_>,
        from: SocketAddr,
        out: &mut [u8],
        o: &mut Outcome,
        t: &mut T,
    ) -> Result<SplitVerdict, DropReason> {
        if eth.dst != BROADCAST && eth.dst != GATEWAY_MAC {
            return Err(not_for_us(eth.dst));
        }
        let a = arp::Repr::parse(eth.payload).map_err(|e| match e {
            ArpError::Malformed(m) => DropReason::malformed(Layer::Arp, m),
            ArpError::Unsupported => DropReason::ArpUnsupported,
        })?;
        t.step(|| Step::Arp { operation: a.operation, sender_ip: a.sender_ip, target_ip: a.target_ip });
        if a.is_gratuitous() {
            return Err(DropReason::ArpGratuitous);
        }
        if a.operation == arp::OP_REPLY {
            return Err(DropReason::ArpReply);
        }
        if a.is_probe() {
            return Err(DropReason::ArpProbe);
        }
        let reply = a.reply_from(GATEWAY_MAC);
        let oh = geneve::Header { vni: gh.vni, oam: false, vnet: None };
        // Same tag as the request (priority bits included): the answer must come back on the
        // VLAN sub-interface that asked.
        let len = write_frame(out, &oh, eth.src, eth.tag, ETHERTYPE_ARP, arp::LEN, |b| reply.emit(b))?;
        o.tx = Some((gh.vni, len - oh.len()));
        Ok(SplitVerdict::Reply { to: from, len })
    }

    #[allow(clippy::too_many_arguments)]
    fn gateway_echo<T: Tracer>(
        &self,
        gh: &geneve::Header,
        eth: &Frame<'_>,
        ip: &ipv4::Packet<'_>,
        from: SocketAddr,
        out: &mut [u8],
        o: &mut Outcome,
        t: &mut T,
    ) -> Result<SplitVerdict, DropReason> {
        let refuse = DropReason::ToGateway { dst: ip.dst };
        if ip.protocol != PROTO_ICMP {
            return Err(refuse);
        }
        let icmp = Icmp::parse(ip.payload).map_err(|m| DropReason::malformed(Layer::Icmp, m))?;
        if icmp.ty != l4::ICMP_ECHO_REQUEST || icmp.code != 0 {
            return Err(refuse);
        }
        t.step(|| Step::GatewayEcho { gateway: ip.dst });
        let icmp_len = ip.payload.len();
        let ip_repr = ipv4::Repr {
            src: ip.dst,
            dst: ip.src,
            protocol: PROTO_ICMP,
            ttl: GATEWAY_TTL,
            tos: ip.tos,
            ident: ip.ident,
            payload_len: icmp_len,
        };
        let oh = geneve::Header { vni: gh.vni, oam: false, vnet: None };
        let body_len = ipv4::MIN_HEADER_LEN + icmp_len;
        let len = write_frame(out, &oh, eth.src, eth.tag, ETHERTYPE_IPV4, body_len, |b| {
            let n = ip_repr.emit(b)?;
            let available = b.len();
            let msg = b.get_mut(n..n + icmp_len).ok_or(BufferTooSmall { needed: n + icmp_len, available })?;
            msg.copy_from_slice(ip.payload);
            msg[0] = l4::ICMP_ECHO_REPLY;
            msg[2..4].fill(0);
            let c = checksum::internet(msg);
            msg[2..4].copy_from_slice(&c.to_be_bytes());
            Ok(n + icmp_len)
        })?;
        o.tx = Some((gh.vni, len - oh.len()));
        Ok(SplitVerdict::Reply { to: from, len })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dirs {
    Both,
    OriginalOnly,
    /// The key given is already the original direction's.
    ReplyOnly,
}

#[derive(Debug, Clone, Copy)]
enum Track {
    Flow {
        key: FlowKey,
        l4: L4Info,
        dirs: Dirs,
    },
    /// An ICMP error quoting this flow.
    Related {
        quoted: FlowKey,
    },
    None,
}

/// Reads the L4 header into what rules match on and how conntrack should treat the packet.
fn classify(vpc: u64, ip: &ipv4::Packet<'_>) -> Result<(PacketMeta, Track), DropReason> {
    let mut meta = PacketMeta { proto: ip.protocol, src: ip.src, dst: ip.dst, ports: None };
    let key = |sport, dport| FlowKey { vpc, proto: ip.protocol, src: ip.src, dst: ip.dst, sport, dport };
    let track = match ip.protocol {
        PROTO_TCP => {
            let h = Tcp::parse(ip.payload).map_err(|m| DropReason::malformed(Layer::Tcp, m))?;
            meta.ports = Some((h.src_port, h.dst_port));
            Track::Flow { key: key(h.src_port, h.dst_port), l4: L4Info::Tcp { flags: h.flags }, dirs: Dirs::Both }
        }
        PROTO_UDP => {
            let h = Udp::parse(ip.payload).map_err(|m| DropReason::malformed(Layer::Udp, m))?;
            meta.ports = Some((h.src_port, h.dst_port));
            Track::Flow { key: key(h.src_port, h.dst_port), l4: L4Info::Udp, dirs: Dirs::Both }
        }
        PROTO_ICMP => {
            let h = Icmp::parse(ip.payload).map_err(|m| DropReason::malformed(Layer::Icmp, m))?;
            match h.ty {
                l4::ICMP_ECHO_REQUEST => {
                    Track::Flow { key: key(h.echo_id(), 0), l4: L4Info::IcmpEcho, dirs: Dirs::OriginalOnly }
                }
                l4::ICMP_ECHO_REPLY => {
                    let request = FlowKey { src: ip.dst, dst: ip.src, sport: h.echo_id(), dport: 0, ..key(0, 0) };
                    Track::Flow { key: request, l4: L4Info::IcmpEcho, dirs: Dirs::ReplyOnly }
                }
                _ if h.is_error() => {
                    quoted_flow(vpc, h.payload).map_or(Track::None, |quoted| Track::Related { quoted })
                }
                _ => Track::None,
            }
        }
        _ => Track::Flow { key: key(0, 0), l4: L4Info::Other, dirs: Dirs::Both },
    };
    Ok((meta, track))
}

/// The TCP/UDP flow an ICMP error quotes (RFC 792: original IP header + first 8 bytes).
fn quoted_flow(vpc: u64, quoted: &[u8]) -> Option<FlowKey> {
    let q = ipv4::Packet::parse_quoted(quoted).ok()?;
    if q.protocol != PROTO_TCP && q.protocol != PROTO_UDP {
        return None;
    }
    let sport = crate::wire::be16(q.payload, 0)?;
    let dport = crate::wire::be16(q.payload, 2)?;
    Some(FlowKey { vpc, proto: q.protocol, src: q.src, dst: q.dst, sport, dport })
}

/// Why a frame addressed to `dst`, neither the gateway nor (for ARP) broadcast, is dropped: a VPC
/// never floods, and every unicast goes to the gateway.
fn not_for_us(dst: Mac) -> DropReason {
    if ethernet::is_multicast(&dst) {
        DropReason::BroadcastOrMulticast { dst }
    } else {
        DropReason::NotForGateway { dst }
    }
}

/// Completes a split verdict into `out` for [`Fabric::process`]: a forward's payload is copied
/// after its headers (`run` checked the room for it in [`Emit::Whole`]).
fn join(v: SplitVerdict, datagram: &[u8], out: &mut [u8]) -> Verdict {
    match v {
        SplitVerdict::Forward { to, header_len, payload } => {
            let len = header_len + payload.len();
            match (out.get_mut(header_len..len), datagram.get(payload)) {
                (Some(dst), Some(src)) => {
                    dst.copy_from_slice(src);
                    Verdict::Forward { to, len }
                }
                _ => Verdict::Drop(DropReason::OutputBufferTooSmall { needed: len }),
            }
        }
        SplitVerdict::Reply { to, len } => Verdict::Reply { to, len },
        SplitVerdict::Drop(reason) => Verdict::Drop(reason),
    }
}

/// Geneve header, then an Ethernet header from the gateway MAC to `dst_mac`, into the start of
/// `out`, which must also have `room_after` bytes free after them. Returns the headers' length.
/// The whole length is checked first, so a short buffer is reported with what would have been
/// needed.
fn write_headers(
    out: &mut [u8],
    oh: &geneve::Header,
    dst_mac: Mac,
    tag: Option<Tci>,
    ethertype: u16,
    room_after: usize,
) -> Result<usize, DropReason> {
    let l2 = if tag.is_some() { ethernet::TAGGED_HEADER_LEN } else { ethernet::HEADER_LEN };
    let needed = oh.len() + l2 + room_after;
    let too_small = |_: BufferTooSmall| DropReason::OutputBufferTooSmall { needed };
    let out = out.get_mut(..needed).ok_or(DropReason::OutputBufferTooSmall { needed })?;
    let g = oh.emit(out).map_err(too_small)?;
    let l2 = ethernet::emit_header(dst_mac, GATEWAY_MAC, tag, ethertype, &mut out[g..]).map_err(too_small)?;
    Ok(g + l2)
}

/// [`write_headers`], then the `body_len` bytes `body` writes. Returns the datagram length.
fn write_frame(
    out: &mut [u8],
    oh: &geneve::Header,
    dst_mac: Mac,
    tag: Option<Tci>,
    ethertype: u16,
    body_len: usize,
    body: impl FnOnce(&mut [u8]) -> Result<usize, BufferTooSmall>,
) -> Result<usize, DropReason> {
    let h = write_headers(out, oh, dst_mac, tag, ethertype, body_len)?;
    let needed = h + body_len;
    let too_small = |_: BufferTooSmall| DropReason::OutputBufferTooSmall { needed };
    let n = body(out.get_mut(h..needed).ok_or(DropReason::OutputBufferTooSmall { needed })?).map_err(too_small)?;
    Ok(h + n)
}
