//! [`Fabric::process`]: one Geneve datagram in, one [`Verdict`] out. The steps, in order (see
//! `PIPELINE.md` for the flowchart):
//!
//! 1. Geneve decap (RFC 8926) and port lookup: the VNI must be registered *and* the datagram
//!    must come from the shim address that registered it.
//! 2. 802.1Q demux: untagged (or priority-tagged, VID 0) = the port's own ENI (or external
//!    host); VID n = the member ENI attached to this trunk port with `DeviceIndex` n; anything
//!    else is dropped.
//! 3. Proxy ARP: every request is answered with `ee:ff:ff:ff:ff:ff`, back on the same port and
//!    tag; replies, announcements and probes are consumed.
//! 4. IPv4 only, addressed to `ee:ff:ff:ff:ff:ff`; an echo request to any vSwitch gateway of
//!    the VPC (CIDR last − 2), or to a load balancer's address that has a listener, is answered
//!    by the fabric.
//! 5. Anti-spoof when the sender has `SourceDestCheck` on (always, for an external host).
//! 6. Answers to the fabric's own health checks go to the checker ([`crate::health`]).
//! 7. Conntrack: a packet of a live flow, either direction, skips the security groups; a
//!    translated (load-balanced) flow also decides where the packet goes and how it is
//!    rewritten.
//! 8. Otherwise route by destination: an ENI address of the sender's VPC; or a load balancer's
//!    address (a VPC's intranet VIP, or from the internet side a public VIP), where the listener
//!    picks a backend ([`crate::lb`]) and the flow is translated to it, the client's address kept.
//! 9. Security groups, for new flows: sender's egress (towards the address it used), then
//!    receiver's ingress (from the client's real address, as CLB layer 4 preserves it).
//! 10. Rewrite as routed (src MAC `ee:ff:ff:ff:ff:ff`, dst MAC = receiving port's MAC, member
//!     VLAN pushed, TTL untouched), apply the translation with incremental checksums, and
//!     re-encapsulate, moving the virtio-net offsets by the change in L2 header length.
//!
//! Accepted destination MACs: ARP to broadcast or `ee:ff:ff:ff:ff:ff` (Linux re-validates
//! neighbours with unicast ARP); IPv4 to `ee:ff:ff:ff:ff:ff` only, which is what every node
//! addresses after proxy ARP. Other unicast MACs are `not_for_gateway`; broadcast and multicast
//! IPv4 are `broadcast_or_multicast` (a VPC never floods). Source MACs are not checked: the
//! port and VLAN identify the sender (architecture decision 4).
//!
//! Forwarding changes at most the IPv4 and TCP/UDP headers (translated flows), so
//! [`Fabric::process_split`] writes only the new headers and names the rest of the packet as a
//! range of the input datagram ([`SplitVerdict`]): the caller sends headers and payload as two
//! pieces of one datagram (the emulator, as two iovecs) and the payload is never copied here.
//! [`Fabric::process`] runs the same pipeline, only checking `out` for room for the payload too,
//! then copies the payload after the headers; the two cannot disagree on anything else. The
//! fabric's own frames (ARP and echo replies, health-check segments, a translated ICMP error)
//! are always written whole.
//!
//! Decide, then commit: the pipeline itself (`decide`) only reads `self`; the conntrack entry,
//! the scheduler's move, the health checker's progress and the counters it produced are applied
//! afterwards. [`Fabric::trace`] runs the same code with a step recorder and skips the commit, so
//! explaining a frame changes nothing. The recorder is a generic parameter whose no-op version
//! compiles away on the normal path.

mod ipv6;

use core::net::{Ipv4Addr, SocketAddr};
use core::ops::Range;
use core::time::Duration;
use std::hash::RandomState;
use std::sync::Arc;

use crate::Instant;
use crate::config::{Direction, Eni, EniIdx, FabricConfig, LbIdx, Policy, Scheduler, Timeouts};
use crate::conntrack::{
    self, Conn, Conntrack, Dirs, Entry, FlowDir, FlowKey, FlowKey6, FlowState, InsertError, L4Info, Nat,
};
use crate::drop::{DropReason, Layer};
use crate::fastpath::{self, Grants};
use crate::flowlog::{self, FlowLog, FlowRecord, Tuple};
use crate::health::{self, Answer, Arrival, BackendHealth, HealthTable, ProbeKind, ProbeSpec, Respond};
use crate::lb::{self, LbRuntime, NewFlow, NoBackend, Pick};
use crate::nat::{Translate, translate_headers, translate_icmp_error, translated_ends};
use crate::security_group::{self, Judgement, PacketMeta, RuleAddr, SgMatch};
use crate::stats::{Stats, StatsSnapshot};
use crate::wire::arp::{self, ArpError};
use crate::wire::ethernet::{
    self, BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Frame, GATEWAY_MAC, L2Error, Mac,
};
use crate::wire::fastpath::{ReportRecord, ReportRecord6};
use crate::wire::geneve::{self, Vni};
use crate::wire::ipv4::{self, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::l4::{self, Icmp, Tcp, TcpRepr, Udp, UdpRepr};
use crate::wire::vlan::{self, Tci};
use crate::wire::vnet::VnetHdr;
use crate::wire::{BufferTooSmall, checksum};

/// The output datagram is never longer than the input plus this (one pushed 802.1Q tag): size
/// `out` as `datagram.len() + MAX_GROWTH` and `OutputBufferTooSmall` cannot happen.
pub const MAX_GROWTH: usize = vlan::TAG_LEN;

/// The headers [`Fabric::process_split`] writes for a forwarded datagram are never longer than
/// this: Geneve with the virtio-net option, an 802.1Q-tagged Ethernet header, and for a
/// translated packet what the translation rewrites: the IPv4 and TCP headers with the largest
/// options, or for an ICMP error the outer IPv4 header, the ICMP header and the quoted IPv4
/// header with the 8 bytes after it.
pub const MAX_HEADER_LEN: usize = geneve::MAX_EMIT_LEN + ethernet::TAGGED_HEADER_LEN + 60 + 8 + 60 + 8;

/// TTL of packets the fabric originates (echo replies, health checks), Linux's default.
const FABRIC_TTL: u8 = 64;

/// What the caller must do with a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send `out[..len]`, a complete Geneve datagram, to the receiving port's shim.
    Forward { to: SocketAddr, len: usize },
    /// Send `out[..len]` back to the sender: the gateway's ARP or echo reply, or the health
    /// checker's next segment.
    Reply { to: SocketAddr, len: usize },
    /// Nothing to send; already counted.
    Drop(DropReason),
}

/// What the caller must do with a datagram, from [`Fabric::process_split`]: as [`Verdict`], but a
/// forwarded datagram is left in two pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitVerdict {
    /// Send one datagram to the receiving port's shim: `headers_out[..header_len]` (Geneve and
    /// Ethernet headers, and rewritten IPv4/L4 headers of a translated flow) followed by
    /// `datagram[payload]` (the rest of the packet, unchanged).
    Forward { to: SocketAddr, header_len: usize, payload: Range<usize> },
    /// Send `headers_out[..len]`, a complete Geneve datagram, back to the sender.
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
    /// Most clients a load balancer's persistence remembers at once (all listeners together).
    pub persistence_max: usize,
    /// Hasher of the conntrack and persistence tables, whose keys come from the wire. The shell
    /// passes `RandomState::new()` so that nobody can aim collisions at them; the core never
    /// creates randomness itself.
    pub conntrack_hasher: RandomState,
    /// Flow logs ([`crate::flowlog`]): on, and their capture window.
    pub flow_log: bool,
    pub flow_log_window: Duration,
}

impl FabricOptions {
    pub fn new(conntrack_hasher: RandomState) -> FabricOptions {
        FabricOptions {
            conntrack_max: 65_536,
            persistence_max: 65_536,
            conntrack_hasher,
            flow_log: true,
            flow_log_window: Duration::from_secs(10),
        }
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
    Decap {
        vni: Vni,
        vnet: Option<VnetHdr>,
        frame_len: usize,
    },
    Port {
        vni: Vni,
        peer: SocketAddr,
        eni: Arc<str>,
    },
    Demux {
        vlan: Option<u16>,
        eni: Arc<str>,
    },
    Arp {
        operation: u16,
        sender_ip: Ipv4Addr,
        target_ip: Ipv4Addr,
    },
    Ipv4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        gso: bool,
    },
    GatewayEcho {
        gateway: Ipv4Addr,
    },
    SourceCheck {
        eni: Arc<str>,
        enabled: bool,
    },
    Route {
        dst: Ipv4Addr,
        eni: Arc<str>,
        vni: Vni,
        vlan: Option<u16>,
    },
    Conntrack(CtLookup),
    /// A new flow to a load balancer's address: the listener and the backend it chose.
    LoadBalancer {
        lb: Arc<str>,
        vip: Ipv4Addr,
        port: u16,
        scheduler: Scheduler,
        backend: Ipv4Addr,
        backend_port: u16,
        /// Chosen by persistence rather than by the scheduler.
        persisted: bool,
    },
    SecurityGroup {
        direction: Direction,
        eni: Arc<str>,
        decision: SgMatch,
    },
    FlowStarted {
        state: FlowState,
    },
    /// The addresses and ports the packet leaves with, when a translation changed them.
    Translate {
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
    },
    /// An answer to the fabric's health check, and what the checker made of it.
    HealthCheck {
        backend: Ipv4Addr,
        port: u16,
        verdict: Option<Result<(), &'static str>>,
    },
    Rewrite {
        vni: Vni,
        to: SocketAddr,
        dst_mac: Mac,
        vlan: Option<u16>,
        vnet_shift: i32,
    },
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
    /// For a load-balanced flow: the backend its `dst` (the VIP) was translated to.
    pub backend: Option<(Ipv4Addr, u16)>,
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

/// A flow to store when the frame is sent.
#[derive(Debug, Clone, Copy)]
enum FlowCommit {
    /// One more packet of a live flow.
    Update {
        slot: u32,
        entry: Entry,
        dir: FlowDir,
    },
    /// A new flow; `replaces` is the live one it supersedes (a port reopened after close).
    New {
        conn: Conn,
        replaces: Option<u32>,
    },
    /// The same two for an IPv6 flow (the IPv6 table).
    Update6 {
        slot: u32,
        entry: Entry,
    },
    New6 {
        conn: Conn<FlowKey6>,
        replaces: Option<u32>,
    },
}

/// Everything `decide` wants changed; applied by `commit`.
struct Outcome {
    rx: Option<Vni>,
    in_bytes: usize,
    tx: Option<(Vni, usize)>,
    flow: Option<FlowCommit>,
    pick: Option<Pick>,
    health: Option<Answer>,
    /// A flow the nodes' kernels may carry from now on, with its idle timeout; or (`None`) a
    /// flow that is closing, which they must stop carrying.
    grant: Option<(fastpath::AnyCandidate, Option<u64>)>,
    /// For flow logs: the ENIs a new flow (or a refused packet) is between, the groups'
    /// judgements of each side, and the packet's tuple.
    judged: Option<Judged>,
    /// The ENI that sent the frame (once demultiplexed) and the one it is sent to (`None` with
    /// a `tx`: a reply of the fabric's, to the sender).
    rx_eni: Option<EniIdx>,
    tx_eni: Option<EniIdx>,
}

#[derive(Debug, Clone, Copy)]
struct Judged {
    src: EniIdx,
    dst: EniIdx,
    meta: PacketMeta,
    /// Egress of `src`, ingress of `dst` (`None` when not reached: egress refused).
    egress: Option<Judgement>,
    ingress: Option<Judgement>,
}

impl Outcome {
    fn new(in_bytes: usize) -> Outcome {
        Outcome {
            rx: None,
            in_bytes,
            tx: None,
            flow: None,
            pick: None,
            health: None,
            grant: None,
            judged: None,
            rx_eni: None,
            tx_eni: None,
        }
    }
}

/// The security groups' judgements of a new flow, each side, and the verdict.
struct SgOutcome {
    egress: Option<Judgement>,
    ingress: Option<Judgement>,
    verdict: Result<(), DropReason>,
}

/// Where a packet goes after tracking and routing.
struct Path {
    dst: EniIdx,
    lookup: CtLookup,
    translate: Translate,
    /// For a related ICMP error of a translated flow: the quoted packet's rewrite.
    quoted: Option<Translate>,
}

/// The VPC's switch: current snapshot, flow table, load-balancer and health state, counters.
#[derive(Debug)]
pub struct Fabric {
    config: Arc<FabricConfig>,
    conntrack: Conntrack,
    /// IPv6 flows: the same rules, 128-bit tuples.
    conntrack6: Conntrack<FlowKey6>,
    lb: LbRuntime,
    health: HealthTable,
    stats: Stats,
    grants: Grants,
    flow_log: FlowLog,
}

impl Fabric {
    pub fn new(config: Arc<FabricConfig>, options: FabricOptions) -> Fabric {
        let stats = Stats::new(&config);
        let mut f = Fabric {
            conntrack: Conntrack::new(options.conntrack_max, options.conntrack_hasher.clone()),
            conntrack6: Conntrack::new(options.conntrack_max, options.conntrack_hasher.clone()),
            lb: LbRuntime::new(options.persistence_max, options.conntrack_hasher.clone()),
            health: HealthTable::default(),
            stats,
            grants: Grants::default(),
            flow_log: FlowLog::new(
                options.flow_log,
                options.conntrack_max,
                options.flow_log_window,
                options.conntrack_hasher,
            ),
            config: config.clone(),
        };
        f.set_config_at(config, Instant(0));
        f
    }

    /// Swaps in a new snapshot; the next frame sees it. Flows and counters are kept (counters of
    /// ports that left the snapshot are dropped). Tracked flows are *not* re-judged against the
    /// new rules: see the `conntrack` module for why. New health-checked backends are probed
    /// from the next [`Fabric::poll_health`] on.
    pub fn set_config(&mut self, config: Arc<FabricConfig>) {
        // Health checks of new backends are due at once: "now" for them is any time up to the
        // next poll, so the earliest instant will do.
        self.set_config_at(config, Instant(0));
    }

    fn set_config_at(&mut self, config: Arc<FabricConfig>, now: Instant) {
        // Refusals are kept by the old snapshot's ENI numbers: named now, before it goes.
        self.flow_log.flush_rejects(&self.config);
        self.stats.sync_ports(&config);
        self.lb.sync(&config);
        self.health.sync(&config, now.0);
        self.conntrack.sync_backends(
            config
                .lbs
                .iter()
                .flat_map(|lb| lb.listeners.iter())
                .flat_map(|l| l.backends.iter().map(|b| (l.key, b.ip, b.port))),
        );
        self.grants.reset();
        self.config = config;
    }

    pub fn config(&self) -> &Arc<FabricConfig> {
        &self.config
    }

    /// Runs the pipeline on one datagram from `from`, writing any datagram to send into `out`.
    /// `out` should hold `datagram.len() + MAX_GROWTH` bytes.
    pub fn process(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], out: &mut [u8]) -> Verdict {
        let mut o = Outcome::new(datagram.len());
        let split = self.decide(now, from, datagram, out, Emit::Whole, &mut o, &mut NoTrace);
        let verdict = join(split, datagram, out);
        self.commit(now, o, if let Verdict::Drop(reason) = &verdict { Some(reason) } else { None });
        verdict
    }

    /// [`Fabric::process`] without copying what it forwards: a forwarded datagram is
    /// `headers_out[..header_len]` followed by `datagram[payload]` (see [`SplitVerdict`]); the
    /// fabric's own frames are written whole into `headers_out`. Flows and counters change
    /// exactly as with `process`. `headers_out` needs [`MAX_HEADER_LEN`] bytes for forwarding and
    /// `datagram.len() + MAX_GROWTH` for everything to fit (a translated ICMP error is written
    /// whole too); a shorter one drops what does not fit as `output_buffer_too_small`.
    pub fn process_split(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        headers_out: &mut [u8],
    ) -> SplitVerdict {
        let mut o = Outcome::new(datagram.len());
        let verdict = self.decide(now, from, datagram, headers_out, Emit::Split, &mut o, &mut NoTrace);
        self.commit(now, o, if let SplitVerdict::Drop(reason) = &verdict { Some(reason) } else { None });
        verdict
    }

    /// Explains what [`Fabric::process`] would do with this datagram now, without changing any
    /// flow, counter, scheduler or health state.
    pub fn trace(&self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Trace {
        let mut out = vec![0u8; datagram.len() + MAX_GROWTH];
        let mut steps = Vec::new();
        let mut o = Outcome::new(datagram.len());
        let split = self.decide(now, from, datagram, &mut out, Emit::Whole, &mut o, &mut steps);
        let verdict = join(split, datagram, &mut out);
        let len = match verdict {
            Verdict::Forward { len, .. } | Verdict::Reply { len, .. } => len,
            Verdict::Drop(_) => 0,
        };
        out.truncate(len);
        Trace { steps, verdict, output: out }
    }

    /// Forgets flows and persistence entries that have expired at `now`; returns how many
    /// flows. Call periodically: lookups already ignore expired entries, this only reclaims
    /// their room.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.lb.expire(now.0);
        let n = self.conntrack.expire(now) + self.conntrack6.expire(now);
        let (ct, ct6) = (&self.conntrack, &self.conntrack6);
        self.grants.expire(
            now,
            |k| ct.lookup(k, Dirs::Both, now).is_some(),
            |k| ct6.lookup(k, Dirs::Both, now).is_some(),
        );
        let conntrack = &self.conntrack;
        self.flow_log.tick(now, |slot| conntrack.holds(slot), &self.config);
        n
    }

    /// Flow-log records emitted since the last call ([`crate::flowlog`]); drain every round.
    pub fn take_flow_records(&mut self) -> impl Iterator<Item = FlowRecord> + '_ {
        self.flow_log.take()
    }

    /// Refusals the flow log skipped (a full window) and records it lost (not drained in time).
    pub fn flow_log_skipped_and_lost(&self) -> (u64, u64) {
        self.flow_log.skipped_and_lost()
    }

    /// The fast-path entries granted since the last call, each with the shim it is for (see
    /// [`crate::fastpath`]); they hold under this snapshot's epoch only.
    pub fn take_grants(&mut self) -> impl Iterator<Item = (SocketAddr, fastpath::Update)> + '_ {
        self.grants.take()
    }

    /// A node's kernel carried `record`'s packets: the flow lives on in conntrack, and the
    /// packets count as the pipeline's own would (received from the sender's port, sent to the
    /// receiver's). Ignored (`false`) unless `from` is the shim of the sender's port and the
    /// flow is live between those very ENIs.
    /// A flow the report names that conntrack does not hold is evicted from that node, and so
    /// is one that is closing (its FIN or RST went through and evicted it already: this node
    /// carried on, so that eviction was lost or late).
    pub fn fast_path_report(&mut self, now: Instant, from: SocketAddr, record: &ReportRecord) -> bool {
        let state = self.carried(now, from, record);
        self.after_report(from, record.src_vni, state, |g| {
            g.forget(from, record.src_vni, record.src_vlan, record.tuple)
        });
        state.is_some()
    }

    /// [`Fabric::fast_path_report`] for an IPv6 flow: the IPv6 conntrack table vouches for it.
    pub fn fast_path_report6(&mut self, now: Instant, from: SocketAddr, record: &ReportRecord6) -> bool {
        let state = self.carried6(now, from, record);
        self.after_report(from, record.src_vni, state, |g| {
            g.forget(from, record.src_vni, record.src_vlan, record.tuple)
        });
        state.is_some()
    }

    /// Evicts (`forget`) the reported entry of port `src_vni` when conntrack does not vouch for
    /// its flow (`state` `None`) and the report came from that port's shim, or when the flow is
    /// closing.
    fn after_report(
        &mut self,
        from: SocketAddr,
        src_vni: Vni,
        state: Option<FlowState>,
        forget: impl FnOnce(&mut Grants),
    ) {
        let evict = match state {
            None => self.config.ports.get(&src_vni).is_some_and(|p| p.peer == from),
            Some(s) => !fastpath::cacheable(s),
        };
        if evict {
            forget(&mut self.grants);
        }
    }

    /// The ENI that sent a report's packets: the port's (or its member's) whose shim `from` is.
    fn report_sender(&self, from: SocketAddr, src_vni: Vni, src_vlan: u16) -> Option<EniIdx> {
        let cfg = &*self.config;
        cfg.ports.get(&src_vni).filter(|p| p.peer == from).and(fastpath::reporter(cfg, src_vni, src_vlan))
    }

    /// The reported flow's state once its packets are counted, or `None` when conntrack does
    /// not vouch for it.
    fn carried(&mut self, now: Instant, from: SocketAddr, record: &ReportRecord) -> Option<FlowState> {
        let src_idx = self.report_sender(from, record.src_vni, record.src_vlan)?;
        let cfg = &*self.config;
        let src = cfg.eni(src_idx);
        let t = record.tuple;
        let key = FlowKey {
            ns: conntrack::ns(src.vpc),
            src: t.src,
            dst: t.dst,
            sport: t.sport,
            dport: t.dport,
            proto: t.protocol,
        };
        let found = self.conntrack.lookup(&key, Dirs::Both, now)?;
        let dst_idx = cfg.by_ip.get(&(src.vpc, t.dst)).copied()?;
        if !self.carried_between(&found.conn.entry, found.dir, src_idx, dst_idx) {
            return None;
        }
        let timeouts = self.flow_timeouts(src, cfg.eni(dst_idx), None);
        self.conntrack.touch(found.slot, now, &timeouts);
        self.flow_log.count(found.slot, found.dir, record.packets, record.bytes, now);
        self.count_carried(src_idx, dst_idx, record.packets, record.bytes);
        Some(found.conn.entry.state)
    }

    /// As `carried`, in the IPv6 table (IPv6 flows have no flow log yet).
    fn carried6(&mut self, now: Instant, from: SocketAddr, record: &ReportRecord6) -> Option<FlowState> {
        let src_idx = self.report_sender(from, record.src_vni, record.src_vlan)?;
        let cfg = &*self.config;
        let src = cfg.eni(src_idx);
        let t = record.tuple;
        let key = FlowKey6 {
            ns: conntrack::ns(src.vpc),
            src: t.src,
            dst: t.dst,
            sport: t.sport,
            dport: t.dport,
            proto: t.protocol,
        };
        let found = self.conntrack6.lookup(&key, Dirs::Both, now)?;
        let dst_idx = ipv6::owner6(cfg, src.vpc, t.dst)?;
        if !self.carried_between(&found.conn.entry, found.dir, src_idx, dst_idx) {
            return None;
        }
        let timeouts = self.flow_timeouts(src, cfg.eni(dst_idx), None);
        self.conntrack6.touch(found.slot, now, &timeouts);
        self.count_carried(src_idx, dst_idx, record.packets, record.bytes);
        Some(found.conn.entry.state)
    }

    /// Whether a tracked flow (found in direction `dir`) is an untranslated one from `src` to
    /// `dst`: what a report may vouch for.
    fn carried_between(&self, e: &Entry, dir: FlowDir, src: EniIdx, dst: EniIdx) -> bool {
        let (sender, receiver) = match dir {
            FlowDir::Original => (e.src_eni, e.dst_eni),
            FlowDir::Reply => (e.dst_eni, e.src_eni),
        };
        let cfg = &*self.config;
        e.nat.is_none() && sender == cfg.eni(src).key && receiver == cfg.eni(dst).key
    }

    /// Carried packets in the counters, as the pipeline would have counted them.
    fn count_carried(&mut self, src_idx: EniIdx, dst_idx: EniIdx, packets: u64, bytes: u64) {
        let cfg = &*self.config;
        let (src, dst) = (cfg.eni(src_idx), cfg.eni(dst_idx));
        // The kernel sees frames untagged; on the fabric's wire a member's carry its tag.
        let tagged = |e: &Eni| if e.tag.is_some() { packets.saturating_mul(vlan::TAG_LEN as u64) } else { 0 };
        let (rx_bytes, tx_bytes) = (bytes.saturating_add(tagged(src)), bytes.saturating_add(tagged(dst)));
        let (src_vni, dst_vni) = (src.vni, dst.vni);
        self.stats.carried_enis(src_idx, dst_idx, packets, (rx_bytes, tx_bytes));
        self.stats.carried(src_vni, dst_vni, packets, (rx_bytes, tx_bytes));
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot(&self.config, self.conntrack.len() + self.conntrack6.len())
    }

    /// Live flows at `now` (allocates; for inspection, not for the frame path).
    pub fn flows(&self, now: Instant) -> Vec<FlowView> {
        self.conntrack
            .iter()
            .filter(|c| c.entry.expires > now.0)
            .map(|c| FlowView {
                protocol: c.orig.proto,
                src: c.orig.src,
                dst: c.orig.dst,
                src_port: c.orig.sport,
                dst_port: c.orig.dport,
                state: c.entry.state,
                expires_in: Duration::from_nanos(c.entry.expires - now.0),
                backend: c.entry.nat.map(|n| (n.backend, n.backend_port)),
            })
            .collect()
    }

    /// The health of every checked backend (allocates; for `DescribeHealthStatus`).
    pub fn health(&self) -> Vec<BackendHealth> {
        self.health.report(&self.config)
    }

    /// When [`Fabric::poll_health`] next has something to do, if ever.
    pub fn next_health_check(&self) -> Option<Instant> {
        self.health.next_deadline().map(Instant)
    }

    /// Runs the health checks due at `now`: records the probes that timed out, and writes the
    /// next probe to send into `out` (a complete Geneve datagram for the backend's shim). Call
    /// until it returns `None`. A backend that cannot be reached (no ENI holds its address, its
    /// node is not registered, or a rule of its groups drops the checker) gets no frame; its
    /// probe times out and counts as a failure.
    pub fn poll_health(&mut self, now: Instant, out: &mut [u8]) -> Option<(SocketAddr, usize)> {
        loop {
            let spec = self.health.due(now.0)?;
            if let Some((to, vni, len, bytes)) = self.emit_probe(&spec, out) {
                self.stats.health(vni, bytes);
                return Some((to, len));
            }
        }
    }

    fn emit_probe(&self, spec: &ProbeSpec, out: &mut [u8]) -> Option<(SocketAddr, Vni, usize, usize)> {
        let cfg = &*self.config;
        let (lb, listener) = cfg.listener(spec.key.0)?;
        let dst = cfg.eni(*cfg.by_ip.get(&(lb.vpc, spec.backend))?);
        let port = cfg.ports.get(&dst.vni)?;
        let proto = listener.protocol.number();
        // The checker needs no rule, but a rule that drops it explicitly still does.
        let meta =
            PacketMeta { proto, src: health::CHECKER, dst: spec.backend, ports: Some((spec.checker_port, spec.port)) };
        if security_group::judge(cfg, dst, Direction::Ingress, &meta).policy() == Policy::Drop {
            return None;
        }
        let oh = geneve::Header { vni: dst.vni, oam: false, vnet: None };
        let len = match &spec.kind {
            ProbeKind::Syn { isn } => {
                let seg = TcpRepr {
                    src: health::CHECKER,
                    dst: spec.backend,
                    src_port: spec.checker_port,
                    dst_port: spec.port,
                    seq: *isn,
                    ack: 0,
                    flags: l4::TCP_SYN,
                    window: 65_535,
                    payload: &[],
                };
                write_ipv4(out, &oh, port.mac, dst.tag, PROTO_TCP, spec.backend, seg.len(), |b| seg.emit(b)).ok()?
            }
            ProbeKind::Datagram { payload } => {
                let d = UdpRepr {
                    src: health::CHECKER,
                    dst: spec.backend,
                    src_port: spec.checker_port,
                    dst_port: spec.port,
                    payload,
                };
                write_ipv4(out, &oh, port.mac, dst.tag, PROTO_UDP, spec.backend, d.len(), |b| d.emit(b)).ok()?
            }
        };
        Some((port.peer, dst.vni, len, len - oh.len()))
    }

    /// Applies what `decide` produced: counters always; the flow, the scheduler's move and the
    /// checker's progress only if something is sent (the checker also takes the answers it
    /// consumes, and a hairpin still moves the scheduler as the cloud's would).
    fn commit(&mut self, now: Instant, o: Outcome, dropped: Option<&DropReason>) {
        if let Some(a) = &o.health {
            // The checker's conversation is counted apart (see `stats`).
            self.health.apply(a);
            if let Some(vni) = o.rx {
                self.stats.health(vni, o.in_bytes);
            }
            if let Some((vni, bytes)) = o.tx.filter(|_| dropped.is_none()) {
                self.stats.health(vni, bytes);
            }
            return;
        }
        if let Some(vni) = o.rx {
            self.stats.rx(vni, o.rx_eni, o.in_bytes);
        }
        let pick = match dropped {
            Some(reason) => {
                self.stats.drop(o.rx, o.rx_eni, reason.kind(), o.in_bytes);
                if self.flow_log.enabled()
                    && let Some(j) = &o.judged
                {
                    self.log_refusal(j, reason, o.in_bytes, now);
                }
                o.pick.filter(|_| matches!(reason, DropReason::LbHairpin { .. }))
            }
            None => {
                let bytes = o.in_bytes as u64;
                match o.flow {
                    Some(FlowCommit::Update { slot, entry, dir }) => {
                        self.conntrack.update(slot, entry);
                        self.flow_log.count(slot, dir, 1, bytes, now);
                    }
                    Some(FlowCommit::New { conn, replaces }) => {
                        if let Some(slot) = self.conntrack.insert(conn, now, replaces)
                            && self.flow_log.enabled()
                            && let Some(j) = &o.judged
                        {
                            self.log_start(slot, &conn, j, now);
                            self.flow_log.count(slot, FlowDir::Original, 1, bytes, now);
                        }
                    }
                    Some(FlowCommit::Update6 { slot, entry }) => self.conntrack6.update(slot, entry),
                    Some(FlowCommit::New6 { conn, replaces }) => {
                        self.conntrack6.insert(conn, now, replaces);
                    }
                    None => {}
                }
                if let Some((vni, bytes)) = o.tx {
                    self.stats.tx(vni, o.tx_eni.or(o.rx_eni), bytes);
                }
                match o.grant {
                    Some((c, Some(idle))) => self.grants.offer(&self.config, c, idle, now),
                    Some((c, None)) => self.grants.close(&self.config, c),
                    None => {}
                }
                o.pick
            }
        };
        if let Some(p) = pick
            && let Some((_, listener)) = self.config.listener(p.listener)
        {
            let health = &self.health;
            self.lb.commit(&p, listener, |i| lb::is_eligible(health, listener, i));
        }
    }

    fn log_start(&mut self, slot: u32, conn: &Conn, j: &Judged, now: Instant) {
        let cfg = &*self.config;
        let names = self.flow_log.names().clone();
        let end = |idx: EniIdx, judged: Option<Judgement>| {
            let e = cfg.eni(idx);
            flowlog::End { eni: e.id.clone(), vlan: e.tag.map(Tci::vid), rule: flowlog::rule_name(cfg, &names, judged) }
        };
        let (sender, receiver) = (end(j.src, j.egress), end(j.dst, j.ingress));
        let tuple =
            |k: FlowKey| Tuple { protocol: k.proto, src: k.src, dst: k.dst, src_port: k.sport, dst_port: k.dport };
        self.flow_log.start(slot, tuple(conn.orig), tuple(conn.reply_key()), sender, receiver, now);
    }

    fn log_refusal(&mut self, j: &Judged, reason: &DropReason, bytes: usize, now: Instant) {
        let (idx, direction, judged) = match reason {
            DropReason::SecurityGroupEgress { .. } => (j.src, Direction::Egress, j.egress),
            DropReason::SecurityGroupIngress { .. } => (j.dst, Direction::Ingress, j.ingress),
            _ => return,
        };
        let m = j.meta;
        let (src_port, dst_port) = m.ports.unwrap_or((0, 0));
        let tuple = Tuple { protocol: m.proto, src: m.src, dst: m.dst, src_port, dst_port };
        self.flow_log.reject(flowlog::Refusal { eni: idx, direction, tuple, judged }, bytes as u64, now);
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
        o.rx_eni = Some(src_idx);
        t.step(|| Step::Demux { vlan: eth.tag.map(Tci::vid), eni: src.id.clone() });

        // 3. ARP, or IPv4 to the gateway MAC.
        match eth.ethertype {
            ETHERTYPE_ARP => return self.arp(&gh, &eth, from, out, o, t),
            ETHERTYPE_IPV4 => {}
            ETHERTYPE_IPV6 => return self.ipv6(now, from, &gh, &eth, vnet, src_idx, datagram, out, emit, o, t),
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

        // 4. Addresses the fabric answers for itself: the vSwitch gateways, and a load
        //    balancer's address for ping (when it has a listener, as CLB's does).
        if cfg.gateways.contains(&(src.vpc, ip.dst)) {
            return self.echo_reply(&gh, &eth, &ip, from, out, o, t);
        }
        if is_echo_request(&ip)
            && let Some(&lb) = cfg.vips.get(&(src.vpc, ip.dst))
            && !cfg.lb(lb).listeners.is_empty()
        {
            return self.echo_reply(&gh, &eth, &ip, from, out, o, t);
        }

        // 5. Anti-spoof: the source must be routed back to this very ENI.
        if src.source_dest_check && cfg.by_ip.get(&(src.vpc, ip.src)) != Some(&src_idx) {
            return Err(DropReason::Spoofed { eni: src.id.clone(), src: ip.src.into() });
        }
        t.step(|| Step::SourceCheck { eni: src.id.clone(), enabled: src.source_dest_check });

        // 6. The health checker's answers.
        if ip.dst == health::CHECKER && !src.external {
            return self.health_answer(&gh, &ip, src, from, out, o, t);
        }

        // 7–8. Track, then route.
        let (meta, track) = classify(src.vpc, &ip)?;
        let path = self.route(now, src_idx, &ip, &meta, &track, o, t)?;
        let dst = cfg.eni(path.dst);
        let dst_port =
            cfg.ports.get(&dst.vni).ok_or_else(|| DropReason::DestinationNotRegistered { eni: dst.id.clone() })?;
        t.step(|| Step::Route { dst: ip.dst, eni: dst.id.clone(), vni: dst.vni, vlan: dst.tag.map(Tci::vid) });
        t.step(|| Step::Conntrack(path.lookup));

        // 9. Security groups, for packets no live flow vouches for.
        if matches!(path.lookup, CtLookup::New | CtLookup::Untracked) {
            // Egress sees what the sender addressed; ingress sees where it is delivered.
            let ingress_meta = match path.translate.dst {
                Some((to, port)) => PacketMeta { dst: to, ports: meta.ports.map(|(s, _)| (s, port)), ..meta },
                None => meta,
            };
            let judged = self.security_groups(src, dst, &meta, &ingress_meta, t);
            o.judged =
                Some(Judged { src: src_idx, dst: path.dst, meta, egress: judged.egress, ingress: judged.ingress });
            judged.verdict?;
            if let Track::Flow { key, l4, .. } = track {
                let nat = path.translate.dst.zip(o.pick).map(|((backend, backend_port), p)| Nat {
                    backend,
                    backend_port,
                    reply_ns: conntrack::ns(dst.vpc),
                    listener: p.listener,
                });
                let timeouts = self.flow_timeouts(src, dst, nat.as_ref());
                if let Some(entry) = conntrack::start(l4, now, &timeouts, src.key, dst.key, nat) {
                    let conn = Conn { orig: key, entry };
                    let replaces = match o.flow {
                        Some(FlowCommit::New { replaces, .. }) => replaces,
                        _ => None,
                    };
                    match self.conntrack.check_insert(&conn, now, replaces) {
                        Ok(()) => {}
                        Err(InsertError::Full) => return Err(DropReason::ConntrackFull),
                        Err(InsertError::Clash) => return Err(DropReason::ConntrackClash),
                    }
                    o.flow = Some(FlowCommit::New { conn, replaces });
                    t.step(|| Step::FlowStarted { state: entry.state });
                }
            }
        }

        // 10. Rewrite and encap.
        let tag = dst.tag;
        let out_l2 = if tag.is_some() { ethernet::TAGGED_HEADER_LEN } else { ethernet::HEADER_LEN };
        let shift = out_l2 as i32 - eth.header_len as i32;
        let mut out_vnet = vnet;
        out_vnet.shift(shift).map_err(|m| DropReason::malformed(Layer::Vnet, m))?;
        let oh = geneve::Header { vni: dst.vni, oam: false, vnet: gh.vnet.map(|_| out_vnet) };
        t.step(|| Step::Rewrite {
            vni: dst.vni,
            to: dst_port.peer,
            dst_mac: dst_port.mac,
            vlan: tag.map(Tci::vid),
            vnet_shift: shift,
        });
        let in_l3 = datagram.len() - eth.payload.len();
        if let Some(quoted) = path.quoted {
            // A translated ICMP error: the outer header and the quoted headers are rewritten,
            // whatever else it quotes leaves as it came.
            let q_ihl = ip.payload.get(l4::ICMP_HEADER_LEN).map_or(20, |b| usize::from(b & 0x0f) * 4);
            let rewritten = eth.payload.len().min(ip.header_len + l4::ICMP_HEADER_LEN + q_ihl + 8);
            let payload = in_l3 + rewritten..datagram.len();
            let room_after = match emit {
                Emit::Whole => payload.len(),
                Emit::Split => 0,
            };
            let h = write_headers(out, &oh, dst_port.mac, tag, ETHERTYPE_IPV4, rewritten + room_after)?;
            let l3 = out.get_mut(h..h + rewritten).ok_or(DropReason::OutputBufferTooSmall { needed: h + rewritten })?;
            l3.copy_from_slice(&eth.payload[..rewritten]);
            translate_icmp_error(l3, ip.header_len, path.translate, quoted);
            let header_len = h + rewritten;
            o.tx = Some((dst.vni, header_len - oh.len() + payload.len()));
            o.tx_eni = Some(path.dst);
            return Ok(SplitVerdict::Forward { to: dst_port.peer, header_len, payload });
        }
        if path.translate != Translate::default() {
            let (src_now, dst_now) = translated_ends(&ip, &meta, path.translate);
            t.step(|| Step::Translate { src: src_now, dst: dst_now });
            // Headers up to the end of the L4 header are rewritten; the rest leaves as it came.
            let l4_len = match ip.protocol {
                PROTO_TCP => {
                    Tcp::parse(ip.payload).map(|h| h.header_len).map_err(|m| DropReason::malformed(Layer::Tcp, m))?
                }
                _ => l4::UDP_HEADER_LEN,
            };
            let rewritten = ip.header_len + l4_len;
            let payload = in_l3 + rewritten..datagram.len();
            let room_after = match emit {
                Emit::Whole => payload.len(),
                Emit::Split => 0,
            };
            let partial = vnet.needs_csum() && usize::from(vnet.csum_start) == eth.header_len + ip.header_len;
            let h = write_headers(out, &oh, dst_port.mac, tag, ETHERTYPE_IPV4, rewritten + room_after)?;
            let l3 = out.get_mut(h..h + rewritten).ok_or(DropReason::OutputBufferTooSmall { needed: h + rewritten })?;
            l3.copy_from_slice(&eth.payload[..rewritten]);
            translate_headers(l3, ip.header_len, ip.protocol, path.translate, partial);
            let header_len = h + rewritten;
            o.tx = Some((dst.vni, header_len - oh.len() + payload.len()));
            o.tx_eni = Some(path.dst);
            return Ok(SplitVerdict::Forward { to: dst_port.peer, header_len, payload });
        }
        // The IPv4 packet leaves unchanged: it is the input datagram's tail, sent from where it is
        // (or copied by `join`).
        let payload = datagram.len().saturating_sub(eth.payload.len())..datagram.len();
        let room_after = match emit {
            Emit::Whole => payload.len(),
            Emit::Split => 0,
        };
        let header_len = write_headers(out, &oh, dst_port.mac, tag, ETHERTYPE_IPV4, room_after)?;
        o.tx = Some((dst.vni, header_len - oh.len() + payload.len()));
        o.tx_eni = Some(path.dst);
        if let Track::Flow { key, .. } = track {
            let c = fastpath::Candidate { key, src: src_idx, dst: path.dst };
            o.grant = self.grant_candidate(fastpath::AnyCandidate::V4(c), key.proto, o);
        }
        Ok(SplitVerdict::Forward { to: dst_port.peer, header_len, payload })
    }

    /// Conntrack, then routing: where the packet goes, how it relates to a flow, and how it is
    /// translated. Records the flow's next state (or the flow it replaces) and any scheduler
    /// pick in `o`.
    #[allow(clippy::too_many_arguments)]
    fn route<T: Tracer>(
        &self,
        now: Instant,
        src_idx: EniIdx,
        ip: &ipv4::Packet<'_>,
        meta: &PacketMeta,
        track: &Track,
        o: &mut Outcome,
        t: &mut T,
    ) -> Result<Path, DropReason> {
        let cfg = &*self.config;
        let src = cfg.eni(src_idx);
        let plain = |dst, lookup| Path { dst, lookup, translate: Translate::default(), quoted: None };

        match *track {
            Track::Flow { key, l4, dirs } => {
                if let Some(found) = self.conntrack.lookup(&key, dirs, now) {
                    let e = found.conn.entry;
                    // Where this direction of the flow goes, and how it is rewritten.
                    let (dst, translate) = match (e.nat, found.dir) {
                        (None, _) => (cfg.by_ip.get(&(src.vpc, ip.dst)).copied(), Translate::default()),
                        (Some(n), FlowDir::Original) => (
                            self.backend_ns(&n).and_then(|ns| cfg.by_ip.get(&(ns, n.backend))).copied(),
                            Translate { dst: Some((n.backend, n.backend_port)), src: None },
                        ),
                        (Some(_), FlowDir::Reply) => (
                            cfg.namespaces
                                .get(&found.conn.orig.ns)
                                .and_then(|ns| cfg.by_ip.get(&(*ns, found.conn.orig.src)))
                                .copied(),
                            Translate { src: Some((found.conn.orig.dst, found.conn.orig.dport)), dst: None },
                        ),
                    };
                    let same_ends = dst.is_some_and(|d| {
                        let d = cfg.eni(d);
                        match found.dir {
                            FlowDir::Original => (e.src_eni, e.dst_eni) == (src.key, d.key),
                            FlowDir::Reply => (e.src_eni, e.dst_eni) == (d.key, src.key),
                        }
                    });
                    if let Some(dst) = dst.filter(|_| same_ends && !conntrack::is_reopen(&e, found.dir, l4)) {
                        let timeouts = self.flow_timeouts(src, cfg.eni(dst), e.nat.as_ref());
                        let next = conntrack::advance(&e, found.dir, l4, now, &timeouts);
                        o.flow = Some(FlowCommit::Update { slot: found.slot, entry: next, dir: found.dir });
                        let lookup = CtLookup::Established { dir: found.dir, state: next.state };
                        return Ok(Path { dst, lookup, translate, quoted: None });
                    }
                    // Between other ends now (an address moved), or a port reopened: judged
                    // afresh, and the new flow takes the old one's place.
                    o.flow = Some(FlowCommit::New { conn: found.conn, replaces: Some(found.slot) });
                }
            }
            // An error is about a packet its receiver sent.
            Track::Related { quoted } if quoted.src == ip.dst => {
                if let Some(path) = self.related(src, &quoted, now) {
                    return Ok(path);
                }
            }
            Track::Related { .. } | Track::None => {}
        }

        let lookup = if matches!(track, Track::Flow { .. }) { CtLookup::New } else { CtLookup::Untracked };
        if let Some(&dst) = cfg.by_ip.get(&(src.vpc, ip.dst)) {
            return Ok(plain(dst, lookup));
        }
        let Some(&lb) = cfg.vips.get(&(src.vpc, ip.dst)) else {
            return Err(DropReason::NoRoute { dst: ip.dst.into() });
        };
        self.to_vip(now, src_idx, lb, ip, meta, lookup, o, t)
    }

    /// A new flow to a load balancer's address: the listener picks a backend.
    #[allow(clippy::too_many_arguments)]
    fn to_vip<T: Tracer>(
        &self,
        now: Instant,
        src_idx: EniIdx,
        lb_idx: LbIdx,
        ip: &ipv4::Packet<'_>,
        meta: &PacketMeta,
        lookup: CtLookup,
        o: &mut Outcome,
        t: &mut T,
    ) -> Result<Path, DropReason> {
        let cfg = &*self.config;
        let lb = cfg.lb(lb_idx);
        let vip = ip.dst;
        let no_listener = |port| DropReason::LbNoListener { vip, protocol: ip.protocol, port };
        let (sport, vport) = meta.ports.ok_or(no_listener(0))?;
        let listener = lb.listener(ip.protocol, vport).ok_or(no_listener(vport))?;
        if !listener.running {
            return Err(DropReason::LbListenerStopped { vip, port: vport });
        }
        let flow = NewFlow { client: ip.src, client_port: sport, vip, vport };
        let pick = lb::pick(&self.lb, &self.health, &self.conntrack, listener, flow, now.0).map_err(|e| match e {
            NoBackend::Empty => DropReason::LbNoBackend { vip, port: vport },
            NoBackend::Unhealthy => DropReason::LbNoHealthyBackend { vip, port: vport },
        })?;
        let b = &listener.backends[pick.backend];
        t.step(|| Step::LoadBalancer {
            lb: lb.id.clone(),
            vip,
            port: vport,
            scheduler: listener.scheduler,
            backend: b.ip,
            backend_port: b.port,
            persisted: !pick.scheduled,
        });
        o.pick = Some(pick);
        let dst = *cfg.by_ip.get(&(lb.vpc, b.ip)).ok_or(DropReason::NoRoute { dst: b.ip.into() })?;
        if dst == src_idx {
            return Err(DropReason::LbHairpin { eni: cfg.eni(src_idx).id.clone() });
        }
        Ok(Path { dst, lookup, translate: Translate { dst: Some((b.ip, b.port)), src: None }, quoted: None })
    }

    /// An ICMP error about a live flow, from the flow's other end: where it goes, and for a
    /// translated flow how it (and the packet it quotes) is rewritten.
    fn related(&self, src: &Eni, quoted: &FlowKey, now: Instant) -> Option<Path> {
        let cfg = &*self.config;
        // The quoted packet went the other way: from this error's receiver to its sender.
        if let Some(found) = self.conntrack.lookup(quoted, Dirs::Both, now)
            && found.conn.entry.nat.is_none()
        {
            let e = found.conn.entry;
            // The error's receiver is the end the quoted packet came from.
            let receiver = match found.dir {
                FlowDir::Original => e.src_eni,
                FlowDir::Reply => e.dst_eni,
            };
            let sender_ok = match found.dir {
                FlowDir::Original => e.dst_eni == src.key,
                FlowDir::Reply => e.src_eni == src.key,
            };
            let dst = cfg.by_ip.get(&(src.vpc, quoted.src)).copied().filter(|d| cfg.eni(*d).key == receiver)?;
            return sender_ok.then_some(Path {
                dst,
                lookup: CtLookup::Related,
                translate: Translate::default(),
                quoted: None,
            });
        }
        // A translated flow: the quoted packet is one the fabric delivered, so its reverse is
        // one of the flow's own tuples.
        let found = self.conntrack.lookup(&quoted.reversed(), Dirs::Both, now)?;
        let n = found.conn.entry.nat?;
        let orig = found.conn.orig;
        match found.dir {
            // From the backend, about what the client sent it: back to the client, the backend
            // hidden behind the VIP again.
            FlowDir::Reply if found.conn.entry.dst_eni == src.key => {
                let ns = *cfg.namespaces.get(&orig.ns)?;
                let dst = *cfg.by_ip.get(&(ns, orig.src))?;
                Some(Path {
                    dst,
                    lookup: CtLookup::Related,
                    translate: Translate { src: Some((orig.dst, 0)), dst: None },
                    quoted: Some(Translate { dst: Some((orig.dst, orig.dport)), src: None }),
                })
            }
            // From the client, about a reply it got from the VIP: on to the backend.
            FlowDir::Original if found.conn.entry.src_eni == src.key => {
                let dst = *cfg.by_ip.get(&(self.backend_ns(&n)?, n.backend))?;
                Some(Path {
                    dst,
                    lookup: CtLookup::Related,
                    translate: Translate { dst: Some((n.backend, 0)), src: None },
                    quoted: Some(Translate { src: Some((n.backend, n.backend_port)), dst: None }),
                })
            }
            _ => None,
        }
    }

    /// The VPC key of a translated flow's backend side.
    fn backend_ns(&self, n: &Nat) -> Option<u64> {
        self.config.namespaces.get(&n.reply_ns).copied()
    }

    /// An untranslated TCP/UDP flow between two ENIs, in a state the kernel can carry (see
    /// [`crate::fastpath`]), with its idle timeout; `c` is the packet's flow, of either family,
    /// and `proto` its protocol. Both nodes having a fast path is checked when the grant is made.
    fn grant_candidate(
        &self,
        c: fastpath::AnyCandidate,
        proto: u8,
        o: &Outcome,
    ) -> Option<(fastpath::AnyCandidate, Option<u64>)> {
        if proto != PROTO_TCP && proto != PROTO_UDP {
            return None;
        }
        let (src, dst, entry) = match (c, o.flow?) {
            (
                fastpath::AnyCandidate::V4(c),
                FlowCommit::Update { entry, .. } | FlowCommit::New { conn: Conn { entry, .. }, .. },
            ) => (c.src, c.dst, entry),
            (
                fastpath::AnyCandidate::V6(c),
                FlowCommit::Update6 { entry, .. } | FlowCommit::New6 { conn: Conn { entry, .. }, .. },
            ) => (c.src, c.dst, entry),
            // A flow of the other family's table: never this packet's.
            _ => return None,
        };
        let (a, b) = (self.config.eni(src), self.config.eni(dst));
        if entry.nat.is_some() || a.external || b.external {
            return None;
        }
        if matches!(entry.state, FlowState::TcpHalfClosed | FlowState::TcpClosed) {
            return Some((c, None));
        }
        if !fastpath::cacheable(entry.state) {
            return None;
        }
        Some((c, Some(entry.state.timeout(&self.flow_timeouts(a, b, None)))))
    }

    /// A flow's timeouts: the shorter of its two ends' (either end's tracker forgetting it ends
    /// it), and for a load-balanced TCP flow the listener's `EstablishedTimeout` too.
    fn flow_timeouts(&self, a: &Eni, b: &Eni, nat: Option<&Nat>) -> Timeouts {
        let mut t = a.timeouts.min(&b.timeouts);
        if let Some((_, l)) = nat.and_then(|n| self.config.listener(n.listener))
            && l.established > 0
        {
            t.tcp_established = t.tcp_established.min(l.established);
        }
        t
    }

    fn security_groups<T: Tracer, A: RuleAddr>(
        &self,
        src: &Eni,
        dst: &Eni,
        egress: &PacketMeta<A>,
        ingress: &PacketMeta<A>,
        t: &mut T,
    ) -> SgOutcome {
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
            return SgOutcome { egress: Some(j), ingress: Some(j), verdict: Ok(()) };
        }
        let mut out = SgOutcome { egress: None, ingress: None, verdict: Ok(()) };
        for (direction, eni, meta) in [(Direction::Egress, src, egress), (Direction::Ingress, dst, ingress)] {
            let j = security_group::judge(cfg, eni, direction, meta);
            t.step(|| Step::SecurityGroup { direction, eni: eni.id.clone(), decision: j.describe(cfg) });
            match direction {
                Direction::Egress => out.egress = Some(j),
                Direction::Ingress => out.ingress = Some(j),
            }
            if j.policy() == Policy::Drop {
                let (sg, rule) = match j {
                    Judgement::Rule(r) => (Some(cfg.group(r.group).id.clone()), Some(cfg.rule_id(&r))),
                    _ => (None, None),
                };
                let eni = eni.id.clone();
                out.verdict = Err(match direction {
                    Direction::Egress => DropReason::SecurityGroupEgress { eni, sg, rule },
                    Direction::Ingress => DropReason::SecurityGroupIngress { eni, sg, rule },
                });
                return out;
            }
        }
        out
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

    /// An echo reply from `ip.dst` (a gateway or a VIP) to an echo request; anything else
    /// addressed there is refused (the caller names the reason).
    #[allow(clippy::too_many_arguments)]
    fn echo_reply<T: Tracer>(
        &self,
        gh: &geneve::Header,
        eth: &Frame<'_>,
        ip: &ipv4::Packet<'_>,
        from: SocketAddr,
        out: &mut [u8],
        o: &mut Outcome,
        t: &mut T,
    ) -> Result<SplitVerdict, DropReason> {
        let refuse = DropReason::ToGateway { dst: ip.dst.into() };
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
            ttl: FABRIC_TTL,
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

    /// A backend answering the fabric's health checker: the checker's verdict, and its next
    /// segment (sent back on the backend's port) when the check goes on or ends with a RST.
    #[allow(clippy::too_many_arguments)]
    fn health_answer<T: Tracer>(
        &self,
        gh: &geneve::Header,
        ip: &ipv4::Packet<'_>,
        src: &Eni,
        from: SocketAddr,
        out: &mut [u8],
        o: &mut Outcome,
        t: &mut T,
    ) -> Result<SplitVerdict, DropReason> {
        let arrival = match ip.protocol {
            PROTO_TCP => {
                let h = Tcp::parse(ip.payload).map_err(|m| DropReason::malformed(Layer::Tcp, m))?;
                let payload = ip.payload.get(h.header_len..).unwrap_or(&[]);
                Arrival::Tcp {
                    from: ip.src,
                    sport: h.src_port,
                    dport: h.dst_port,
                    seq: h.seq,
                    ack: h.ack,
                    flags: h.flags,
                    payload,
                }
            }
            PROTO_UDP => {
                let h = Udp::parse(ip.payload).map_err(|m| DropReason::malformed(Layer::Udp, m))?;
                Arrival::Udp {
                    from: ip.src,
                    sport: h.src_port,
                    dport: h.dst_port,
                    payload: ip.payload.get(l4::UDP_HEADER_LEN..).unwrap_or(&[]),
                }
            }
            PROTO_ICMP => {
                let h = Icmp::parse(ip.payload).map_err(|m| DropReason::malformed(Layer::Icmp, m))?;
                let q = ipv4::Packet::parse_quoted(h.payload).ok().filter(|q| h.is_error() && q.src == health::CHECKER);
                let q = q.ok_or(DropReason::HealthCheckStray)?;
                let (Some(sport), Some(dport)) = (crate::wire::be16(q.payload, 0), crate::wire::be16(q.payload, 2))
                else {
                    return Err(DropReason::HealthCheckStray);
                };
                // The error may come from the backend or from its node on its behalf.
                Arrival::Unreachable { to: q.dst, port: dport, checker_port: sport }
            }
            _ => return Err(DropReason::HealthCheckStray),
        };
        let answer = self.health.answer(arrival).ok_or(DropReason::HealthCheckStray)?;
        let (backend, port) = (answer.key.1, answer.key.2);
        t.step(|| Step::HealthCheck { backend, port, verdict: answer.verdict });
        let Some(respond) = answer.respond.clone() else {
            o.health = Some(answer);
            return Err(DropReason::HealthCheckAnswer);
        };
        let cfg = &*self.config;
        let port_mac = cfg.ports.get(&src.vni).map(|p| p.mac).ok_or(DropReason::HealthCheckStray)?;
        let Arrival::Tcp { sport, dport, .. } = arrival else { return Err(DropReason::HealthCheckStray) };
        let request;
        let (seq, ack, flags, payload): (u32, u32, u8, &[u8]) = match respond {
            Respond::Rst { seq } => (seq, 0, l4::TCP_RST, &[]),
            Respond::Request { seq, ack } => {
                request = self.health.request_of(&answer.key).unwrap_or_default();
                (seq, ack, l4::TCP_ACK | TCP_PSH, request.as_bytes())
            }
        };
        let seg = TcpRepr {
            src: health::CHECKER,
            dst: ip.src,
            src_port: dport,
            dst_port: sport,
            seq,
            ack,
            flags,
            window: 65_535,
            payload,
        };
        let oh = geneve::Header { vni: gh.vni, oam: false, vnet: None };
        let len = write_ipv4(out, &oh, port_mac, src.tag, PROTO_TCP, ip.src, seg.len(), |b| seg.emit(b))?;
        o.tx = Some((gh.vni, len - oh.len()));
        o.health = Some(answer);
        Ok(SplitVerdict::Reply { to: from, len })
    }
}

/// TCP's push flag: the health check's request is all there is.
const TCP_PSH: u8 = 0x08;

fn is_echo_request(ip: &ipv4::Packet<'_>) -> bool {
    ip.protocol == PROTO_ICMP && Icmp::parse(ip.payload).is_ok_and(|h| h.ty == l4::ICMP_ECHO_REQUEST && h.code == 0)
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
    let ns = conntrack::ns(vpc);
    let mut meta = PacketMeta { proto: ip.protocol, src: ip.src, dst: ip.dst, ports: None };
    let key = |sport, dport| FlowKey { ns, proto: ip.protocol, src: ip.src, dst: ip.dst, sport, dport };
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
                _ if h.is_error() => quoted_flow(ns, h.payload).map_or(Track::None, |quoted| Track::Related { quoted }),
                _ => Track::None,
            }
        }
        _ => Track::Flow { key: key(0, 0), l4: L4Info::Other, dirs: Dirs::Both },
    };
    Ok((meta, track))
}

/// The TCP/UDP flow an ICMP error quotes (RFC 792: original IP header + first 8 bytes).
fn quoted_flow(ns: u32, quoted: &[u8]) -> Option<FlowKey> {
    let q = ipv4::Packet::parse_quoted(quoted).ok()?;
    if q.protocol != PROTO_TCP && q.protocol != PROTO_UDP {
        return None;
    }
    let sport = crate::wire::be16(q.payload, 0)?;
    let dport = crate::wire::be16(q.payload, 2)?;
    Some(FlowKey { ns, proto: q.protocol, src: q.src, dst: q.dst, sport, dport })
}

/// Why a frame addressed to `dst`, neither the gateway nor (for ARP) broadcast, is dropped: a VPC
/// never floods, and every unicast goes to the gateway.
fn not_for_us(dst: Mac) -> DropReason {
    if dst.is_multicast() { DropReason::BroadcastOrMulticast { dst } } else { DropReason::NotForGateway { dst } }
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

/// A packet the fabric originates from its health checker, `l4_len` bytes of `protocol` that
/// `l4` writes, to `dst`: Geneve, Ethernet, IPv4, then the segment.
#[allow(clippy::too_many_arguments)]
fn write_ipv4(
    out: &mut [u8],
    oh: &geneve::Header,
    dst_mac: Mac,
    tag: Option<Tci>,
    protocol: u8,
    dst: Ipv4Addr,
    l4_len: usize,
    l4: impl FnOnce(&mut [u8]) -> Result<usize, BufferTooSmall>,
) -> Result<usize, DropReason> {
    let repr =
        ipv4::Repr { src: health::CHECKER, dst, protocol, ttl: FABRIC_TTL, tos: 0, ident: 0, payload_len: l4_len };
    write_frame(out, oh, dst_mac, tag, ETHERTYPE_IPV4, ipv4::MIN_HEADER_LEN + l4_len, |b| {
        let n = repr.emit(b)?;
        let m = l4(b.get_mut(n..).unwrap_or(&mut []))?;
        Ok(n + m)
    })
}
