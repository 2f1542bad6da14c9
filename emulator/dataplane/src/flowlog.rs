//! Flow logs: what each ENI sent and received, per flow and direction, with the action and the
//! security-group rule that decided it — the fields of the cloud's VPC flow logs (`eni-id`,
//! `direction` in/out, `srcaddr`, `srcport`, `dstaddr`, `dstport`, `protocol`, `action`
//! ACCEPT/REJECT, `packets`, `bytes`, `start`, `end`), plus what the cloud leaves out and a
//! user of enifab asks first: the deciding rule (`SecurityGroupRuleId`, the group default, or
//! inner access) and the member's VLAN on its trunk.
//!
//! Written as the pipeline's own events, never by re-reading frames: an admitted flow is
//! logged from the conntrack entry it lives in (counted by slot, so a packet of a live flow
//! costs two additions and no lookup), its packets carried by a node's fast path are added from
//! the node's reports, and a refusal by a group is aggregated per ENI, direction and tuple.
//! Like the cloud's, records are aggregated over a capture window and emitted when it closes
//! or when the flow ends.
//!
//! Memory is bounded: one slot per conntrack entry (the table's own bound), at most
//! [`REJECT_CAP`] refused tuples per window (beyond it refusals are counted as skipped, as the
//! cloud's `log-status SKIPDATA`), and emitted records wait in a queue of at most
//! [`READY_CAP`] for the shell, which drains it every round.
//!
//! Must not: allocate on the path of a live flow's packet, or read a clock.

use core::net::Ipv4Addr;
use std::collections::{HashMap, VecDeque};
use std::hash::RandomState;
use std::sync::Arc;

use crate::Instant;
use crate::config::{Direction, EniIdx, FabricConfig};
use crate::conntrack::FlowDir;
use crate::security_group::Judgement;
use crate::wire::vlan::Tci;

/// Refused tuples aggregated per window at most.
pub const REJECT_CAP: usize = 4_096;
/// Emitted records waiting for the shell at most; older ones are dropped (and counted) first.
pub const READY_CAP: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Accept,
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "ACCEPT",
            Action::Reject => "REJECT",
        }
    }
}

/// A 5-tuple as the ENI's own side sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

impl Tuple {
    fn reversed(self) -> Tuple {
        Tuple {
            protocol: self.protocol,
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }
}

/// One flow-log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    pub eni: Arc<str>,
    pub vlan: Option<u16>,
    /// `Egress` = out of the ENI, `Ingress` = into it.
    pub direction: Direction,
    pub tuple: Tuple,
    pub action: Action,
    /// The deciding rule's id, `default`, `inner-access:<sg>` or `health-check`; for packets of a
    /// live flow, the rule that admitted the flow.
    pub rule: Arc<str>,
    pub packets: u64,
    pub bytes: u64,
    pub start: Instant,
    pub end: Instant,
}

/// One side of a flow, as records name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub eni: Arc<str>,
    pub vlan: Option<u16>,
    /// The rule that let the flow out of (original sender) or into (original receiver) this ENI.
    pub rule: Arc<str>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Count {
    packets: u64,
    bytes: u64,
    first: u64,
    last: u64,
}

impl Count {
    fn add(&mut self, packets: u64, bytes: u64, now: u64) {
        if self.packets == 0 {
            self.first = now;
        }
        self.packets = self.packets.saturating_add(packets);
        self.bytes = self.bytes.saturating_add(bytes);
        self.last = self.last.max(now);
    }
}

#[derive(Debug, Clone)]
struct Live {
    /// The original direction's tuple as its sender addressed it.
    orig: Tuple,
    /// The reply direction's tuple as its sender (the receiver) addressed it (differs from the
    /// reverse of `orig` when a load balancer translated the flow).
    reply: Tuple,
    sender: End,
    receiver: End,
    orig_count: Count,
    reply_count: Count,
    window_start: u64,
}

/// A refused tuple at one ENI (by the snapshot's index: the refusals are flushed before a new
/// snapshot renumbers them), one direction, packed into one integer: a flood of refused packets
/// costs one short hash each (one `write_u128`), no string and no reference count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RejectKey(u128);

/// ENIs a refusal can be logged for (20 bits of the key; a region holds far fewer).
const REJECT_ENI_LIMIT: EniIdx = 1 << 20;

impl RejectKey {
    fn new(eni: EniIdx, direction: Direction, t: Tuple) -> Option<RejectKey> {
        if eni >= REJECT_ENI_LIMIT {
            return None;
        }
        let dir = u128::from(direction == Direction::Egress);
        let bits = u128::from(eni) << 105
            | dir << 104
            | u128::from(t.protocol) << 96
            | u128::from(u32::from(t.src)) << 64
            | u128::from(u32::from(t.dst)) << 32
            | u128::from(t.src_port) << 16
            | u128::from(t.dst_port);
        Some(RejectKey(bits))
    }

    fn parts(self) -> (EniIdx, Direction, Tuple) {
        let b = self.0;
        let direction = if (b >> 104) & 1 == 1 { Direction::Egress } else { Direction::Ingress };
        let tuple = Tuple {
            protocol: (b >> 96) as u8,
            src: Ipv4Addr::from((b >> 64) as u32),
            dst: Ipv4Addr::from((b >> 32) as u32),
            src_port: (b >> 16) as u16,
            dst_port: b as u16,
        };
        ((b >> 105) as EniIdx, direction, tuple)
    }
}

/// Where a refusal happened and what refused it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    pub eni: EniIdx,
    pub direction: Direction,
    pub tuple: Tuple,
    pub judged: Option<Judgement>,
}

/// How a flow log names what decided: the rule's id, the default, inner access, the checker
/// (names made before the frame path, so naming allocates nothing).
pub(crate) fn rule_name(cfg: &FabricConfig, names: &Names, j: Option<Judgement>) -> Arc<str> {
    match j {
        Some(Judgement::Rule(r)) => cfg.rule_id(&r),
        Some(Judgement::InnerAccess(g)) => cfg.group(g).inner_access_name.clone(),
        Some(Judgement::HealthCheck) => names.health_check.clone(),
        Some(Judgement::Default(_)) | None => names.default.clone(),
    }
}

/// The names of what is not a rule, made once.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub default: Arc<str>,
    pub health_check: Arc<str>,
}

/// The flow log's state (see the module doc).
#[derive(Debug)]
pub struct FlowLog {
    enabled: bool,
    names: Names,
    window: u64,
    live: Vec<Option<Live>>,
    rejects: HashMap<RejectKey, (Option<Judgement>, Count), RandomState>,
    window_start: u64,
    ready: VecDeque<FlowRecord>,
    skipped: u64,
    lost: u64,
}

impl FlowLog {
    /// A flow log over a conntrack table of `slots` entries, emitting every `window`; disabled
    /// (costing one branch per packet) when `enabled` is false.
    pub fn new(enabled: bool, slots: usize, window: core::time::Duration, hasher: RandomState) -> FlowLog {
        FlowLog {
            enabled,
            names: Names { default: Arc::from("default"), health_check: Arc::from("health-check") },
            window: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX).max(1),
            live: if enabled { vec![None; slots] } else { Vec::new() },
            rejects: HashMap::with_capacity_and_hasher(if enabled { REJECT_CAP } else { 0 }, hasher),
            window_start: 0,
            ready: VecDeque::new(),
            skipped: 0,
            lost: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn names(&self) -> &Names {
        &self.names
    }

    /// A new flow was stored in conntrack slot `slot`. Whatever the slot logged before (a flow
    /// that expired) is emitted first.
    pub(crate) fn start(&mut self, slot: u32, orig: Tuple, reply: Tuple, sender: End, receiver: End, now: Instant) {
        if !self.enabled {
            return;
        }
        self.end_slot(slot);
        if let Some(s) = self.live.get_mut(slot as usize) {
            *s = Some(Live {
                orig,
                reply,
                sender,
                receiver,
                orig_count: Count::default(),
                reply_count: Count::default(),
                window_start: now.0,
            });
        }
    }

    /// `packets` of the flow in `slot`, going `dir`.
    #[inline]
    pub(crate) fn count(&mut self, slot: u32, dir: FlowDir, packets: u64, bytes: u64, now: Instant) {
        if !self.enabled {
            return;
        }
        if let Some(Some(l)) = self.live.get_mut(slot as usize) {
            match dir {
                FlowDir::Original => l.orig_count.add(packets, bytes, now.0),
                FlowDir::Reply => l.reply_count.add(packets, bytes, now.0),
            }
        }
    }

    /// A packet refused by `eni`'s groups for `direction`.
    pub(crate) fn reject(&mut self, r: Refusal, bytes: u64, now: Instant) {
        if !self.enabled {
            return;
        }
        let Some(key) = RejectKey::new(r.eni, r.direction, r.tuple) else {
            self.skipped += 1;
            return;
        };
        if let Some((_, c)) = self.rejects.get_mut(&key) {
            c.add(1, bytes, now.0);
        } else if self.rejects.len() < REJECT_CAP {
            let mut c = Count::default();
            c.add(1, bytes, now.0);
            self.rejects.insert(key, (r.judged, c));
        } else {
            self.skipped += 1;
        }
    }

    /// Emits the refusals aggregated so far, named by `cfg` (the snapshot their indices are
    /// of): when a window closes, and before a new snapshot comes in.
    pub(crate) fn flush_rejects(&mut self, cfg: &FabricConfig) {
        if self.rejects.is_empty() {
            return;
        }
        let rejects: Vec<_> = self.rejects.drain().collect();
        for (key, (judged, c)) in rejects {
            let (idx, direction, tuple) = key.parts();
            let Some(e) = cfg.enis.get(idx as usize) else { continue };
            let rule = rule_name(cfg, &self.names, judged);
            self.push(FlowRecord {
                eni: e.id.clone(),
                vlan: e.tag.map(Tci::vid),
                direction,
                tuple,
                action: Action::Reject,
                rule,
                packets: c.packets,
                bytes: c.bytes,
                start: Instant(c.first),
                end: Instant(c.last),
            });
        }
    }

    /// Closes windows due at `now` and the flows conntrack no longer holds (`alive(slot)`).
    pub(crate) fn tick(&mut self, now: Instant, alive: impl Fn(u32) -> bool, cfg: &FabricConfig) {
        if !self.enabled {
            return;
        }
        for slot in 0..self.live.len() {
            let Some(l) = &self.live[slot] else { continue };
            if !alive(slot as u32) {
                self.end_slot(slot as u32);
            } else if now.0.saturating_sub(l.window_start) >= self.window {
                self.emit_slot(slot as u32, now.0);
            }
        }
        if now.0.saturating_sub(self.window_start) >= self.window {
            self.window_start = now.0;
            self.flush_rejects(cfg);
        }
    }

    /// Records emitted so far (the shell drains them every round).
    pub fn take(&mut self) -> impl Iterator<Item = FlowRecord> + '_ {
        self.ready.drain(..)
    }

    /// Refusals not logged because a window's table was full, and records dropped because the
    /// shell did not drain them in time.
    pub fn skipped_and_lost(&self) -> (u64, u64) {
        (self.skipped, self.lost)
    }

    fn end_slot(&mut self, slot: u32) {
        self.emit_slot(slot, 0);
        if let Some(s) = self.live.get_mut(slot as usize) {
            *s = None;
        }
    }

    /// Emits the slot's counts since its window opened (nothing for a direction without
    /// packets), and opens a new window at `now`.
    fn emit_slot(&mut self, slot: u32, now: u64) {
        let Some(Some(l)) = self.live.get_mut(slot as usize) else { return };
        let (o, r) = (std::mem::take(&mut l.orig_count), std::mem::take(&mut l.reply_count));
        l.window_start = now;
        let (orig, reply, sender, receiver) = (l.orig, l.reply, l.sender.clone(), l.receiver.clone());
        let record = |end: &End, direction, tuple, rule: &Arc<str>, c: Count| FlowRecord {
            eni: end.eni.clone(),
            vlan: end.vlan,
            direction,
            tuple,
            action: Action::Accept,
            rule: rule.clone(),
            packets: c.packets,
            bytes: c.bytes,
            start: Instant(c.first),
            end: Instant(c.last),
        };
        if o.packets > 0 {
            self.push(record(&sender, Direction::Egress, orig, &sender.rule, o));
            self.push(record(&receiver, Direction::Ingress, reply.reversed(), &receiver.rule, o));
        }
        if r.packets > 0 {
            self.push(record(&receiver, Direction::Egress, reply, &receiver.rule, r));
            self.push(record(&sender, Direction::Ingress, orig.reversed(), &sender.rule, r));
        }
    }

    fn push(&mut self, r: FlowRecord) {
        if self.ready.len() >= READY_CAP {
            self.ready.pop_front();
            self.lost += 1;
        }
        self.ready.push_back(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FabricConfig {
        crate::testkit::Lab::new().build(1)
    }

    fn tuple() -> Tuple {
        Tuple {
            protocol: 17,
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 5000,
            dst_port: 53,
        }
    }

    fn end(eni: &str, rule: &str) -> End {
        End { eni: eni.into(), vlan: None, rule: rule.into() }
    }

    #[test]
    fn a_flow_is_logged_four_ways_when_its_window_closes() {
        let mut f = FlowLog::new(true, 8, core::time::Duration::from_secs(10), RandomState::new());
        f.start(3, tuple(), tuple().reversed(), end("eni-a", "sgr-out"), end("eni-b", "sgr-in"), Instant(0));
        for i in 0..3 {
            f.count(3, FlowDir::Original, 1, 100, Instant::from_secs(i));
        }
        f.count(3, FlowDir::Reply, 1, 60, Instant::from_secs(4));
        f.tick(Instant::from_secs(5), |_| true, &cfg());
        assert_eq!(f.take().count(), 0, "the window is still open");
        f.tick(Instant::from_secs(10), |_| true, &cfg());
        let records: Vec<FlowRecord> = f.take().collect();
        let summary: Vec<_> =
            records.iter().map(|r| (&*r.eni, r.direction, r.packets, r.bytes, &*r.rule, r.tuple.src_port)).collect();
        assert_eq!(
            summary,
            [
                ("eni-a", Direction::Egress, 3, 300, "sgr-out", 5000),
                ("eni-b", Direction::Ingress, 3, 300, "sgr-in", 5000),
                ("eni-b", Direction::Egress, 1, 60, "sgr-in", 53),
                ("eni-a", Direction::Ingress, 1, 60, "sgr-out", 53),
            ]
        );
        assert_eq!((records[0].start, records[0].end), (Instant(0), Instant::from_secs(2)));
        f.tick(Instant::from_secs(30), |_| true, &cfg());
        assert_eq!(f.take().count(), 0, "nothing new, nothing logged");
    }

    #[test]
    fn an_ended_flow_is_logged_at_once_and_its_slot_reused() {
        let mut f = FlowLog::new(true, 8, core::time::Duration::from_secs(600), RandomState::new());
        f.start(1, tuple(), tuple().reversed(), end("eni-a", "r1"), end("eni-b", "r2"), Instant(0));
        f.count(1, FlowDir::Original, 2, 10, Instant(1));
        f.tick(Instant(2), |_| false, &cfg());
        assert_eq!(f.take().count(), 2);
        f.start(1, tuple(), tuple().reversed(), end("eni-c", "r1"), end("eni-d", "r2"), Instant(3));
        f.count(1, FlowDir::Original, 1, 10, Instant(4));
        f.start(1, tuple(), tuple().reversed(), end("eni-e", "r1"), end("eni-f", "r2"), Instant(5));
        assert_eq!(f.take().map(|r| r.eni.to_string()).collect::<Vec<_>>(), ["eni-c", "eni-d"]);
    }

    #[test]
    fn a_refusal_key_gives_back_what_it_packs() {
        for (eni, direction) in [(0, Direction::Ingress), (REJECT_ENI_LIMIT - 1, Direction::Egress)] {
            let t = Tuple {
                protocol: 255,
                src: Ipv4Addr::new(255, 1, 2, 3),
                dst: Ipv4Addr::new(10, 255, 0, 254),
                src_port: 65535,
                dst_port: 1,
            };
            assert_eq!(RejectKey::new(eni, direction, t).map(RejectKey::parts), Some((eni, direction, t)));
        }
        assert_eq!(RejectKey::new(REJECT_ENI_LIMIT, Direction::Ingress, tuple()), None);
    }

    #[test]
    fn refusals_are_bounded_per_window() {
        let mut f = FlowLog::new(true, 1, core::time::Duration::from_secs(1), RandomState::new());
        let cfg = cfg();
        for p in 0..(REJECT_CAP as u16 + 100) {
            let t = Tuple { src_port: p, ..tuple() };
            let r = Refusal { eni: 1, direction: Direction::Ingress, tuple: t, judged: None };
            f.reject(r, 60, Instant(1));
            f.reject(r, 60, Instant(2));
        }
        assert_eq!(f.skipped_and_lost().0, 200);
        f.tick(Instant::from_secs(2), |_| true, &cfg);
        let records: Vec<FlowRecord> = f.take().collect();
        assert_eq!(records.len(), REJECT_CAP);
        let (eni, vlan) = (cfg.enis[1].id.clone(), cfg.enis[1].tag.map(Tci::vid));
        assert!(records.iter().all(|r| r.action == Action::Reject && r.packets == 2 && r.bytes == 120));
        assert!(records.iter().all(|r| r.eni == eni && r.vlan == vlan && &*r.rule == "default"));
    }

    #[test]
    fn off_costs_nothing_and_logs_nothing() {
        let mut f = FlowLog::new(false, 1 << 16, core::time::Duration::from_secs(1), RandomState::new());
        assert!(f.live.is_empty());
        f.start(1, tuple(), tuple(), end("a", "r"), end("b", "r"), Instant(0));
        f.count(1, FlowDir::Original, 1, 1, Instant(0));
        f.tick(Instant::from_secs(5), |_| false, &cfg());
        assert_eq!(f.take().count(), 0);
    }
}
