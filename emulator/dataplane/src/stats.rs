//! Counters: frames and bytes received and sent per port, and drops per reason, both per port
//! and in total. Plain integers updated by the one owner of the `Fabric` (no atomics: the shell
//! serialises access), read out as a [`StatsSnapshot`] shaped like a table/gRPC message.
//!
//! Bytes are inner Ethernet frame bytes (tag included, Geneve and vnet option excluded); a drop
//! before the Geneve header could be read counts the whole datagram. Per-port counters live as
//! long as the port is in the snapshot; totals live as long as the `Fabric`.
//!
//! The health checker's own traffic (its probes, the backends' answers, its resets) is counted
//! apart, per port, never as the port's rx/tx or as drops: a user reading the counters around
//! one request sees what that request did, not the checks running every two seconds.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{EniIdx, FabricConfig, FixedMap};
use crate::drop::DropKind;
use crate::wire::geneve::Vni;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub frames: u64,
    pub bytes: u64,
}

impl Counter {
    fn add(&mut self, bytes: usize) {
        self.frames += 1;
        self.bytes += bytes as u64;
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PortCounters {
    pub rx: Counter,
    pub tx: Counter,
    /// Health-check frames, both ways.
    pub health: Counter,
    pub drops: [Counter; DropKind::COUNT],
}

impl Default for PortCounters {
    fn default() -> Self {
        PortCounters {
            rx: Counter::default(),
            tx: Counter::default(),
            health: Counter::default(),
            drops: [Counter::default(); DropKind::COUNT],
        }
    }
}

#[derive(Debug)]
pub(crate) struct Stats {
    pub drops: [Counter; DropKind::COUNT],
    pub ports: FixedMap<Vni, PortCounters>,
    /// Per ENI (members apart from their trunk), by the snapshot's index; `eni_ids` says whose,
    /// so counters follow their ENI across snapshots.
    pub enis: Vec<PortCounters>,
    eni_ids: Vec<Arc<str>>,
}

impl Stats {
    pub fn new(cfg: &FabricConfig) -> Stats {
        let mut s = Stats {
            drops: [Counter::default(); DropKind::COUNT],
            ports: FixedMap::default(),
            enis: Vec::new(),
            eni_ids: Vec::new(),
        };
        s.sync_ports(cfg);
        s
    }

    /// Creates counters for new ports and ENIs and forgets removed ones, at snapshot time, so
    /// that the frame path never inserts (never allocates).
    pub fn sync_ports(&mut self, cfg: &FabricConfig) {
        self.ports.retain(|vni, _| cfg.ports.contains_key(vni));
        for vni in cfg.ports.keys() {
            self.ports.entry(*vni).or_default();
        }
        let mut by_id: HashMap<Arc<str>, PortCounters> = self.eni_ids.drain(..).zip(self.enis.drain(..)).collect();
        for e in &cfg.enis {
            self.enis.push(by_id.remove(&e.id).unwrap_or_default());
            self.eni_ids.push(e.id.clone());
        }
    }

    pub fn rx(&mut self, vni: Vni, eni: Option<EniIdx>, bytes: usize) {
        if let Some(p) = self.ports.get_mut(&vni) {
            p.rx.add(bytes);
        }
        if let Some(e) = eni.and_then(|i| self.enis.get_mut(i as usize)) {
            e.rx.add(bytes);
        }
    }

    pub fn tx(&mut self, vni: Vni, eni: Option<EniIdx>, bytes: usize) {
        if let Some(p) = self.ports.get_mut(&vni) {
            p.tx.add(bytes);
        }
        if let Some(e) = eni.and_then(|i| self.enis.get_mut(i as usize)) {
            e.tx.add(bytes);
        }
    }

    /// [`Stats::carried`] for the two ENIs.
    pub fn carried_enis(&mut self, from: EniIdx, to: EniIdx, frames: u64, (rx_bytes, tx_bytes): (u64, u64)) {
        if let Some(e) = self.enis.get_mut(from as usize) {
            e.rx.frames += frames;
            e.rx.bytes += rx_bytes;
        }
        if let Some(e) = self.enis.get_mut(to as usize) {
            e.tx.frames += frames;
            e.tx.bytes += tx_bytes;
        }
    }

    /// Frames a node's kernel carried from one port to another (reported in bulk).
    pub fn carried(&mut self, from: Vni, to: Vni, frames: u64, (rx_bytes, tx_bytes): (u64, u64)) {
        if let Some(p) = self.ports.get_mut(&from) {
            p.rx.frames += frames;
            p.rx.bytes += rx_bytes;
        }
        if let Some(p) = self.ports.get_mut(&to) {
            p.tx.frames += frames;
            p.tx.bytes += tx_bytes;
        }
    }

    /// A health-check frame sent on or received from the port.
    pub fn health(&mut self, vni: Vni, bytes: usize) {
        if let Some(p) = self.ports.get_mut(&vni) {
            p.health.add(bytes);
        }
    }

    pub fn drop(&mut self, port: Option<Vni>, eni: Option<EniIdx>, kind: DropKind, bytes: usize) {
        self.drops[kind as usize].add(bytes);
        if let Some(p) = port.and_then(|v| self.ports.get_mut(&v)) {
            p.drops[kind as usize].add(bytes);
        }
        if let Some(e) = eni.and_then(|i| self.enis.get_mut(i as usize)) {
            e.drops[kind as usize].add(bytes);
        }
    }

    pub fn snapshot(&self, cfg: &FabricConfig, conntrack_entries: usize) -> StatsSnapshot {
        let rows = |drops: &[Counter; DropKind::COUNT]| -> Vec<DropStats> {
            DropKind::ALL
                .iter()
                .zip(drops)
                .filter(|(_, c)| c.frames > 0)
                .map(|(k, c)| DropStats { reason: k.as_str(), frames: c.frames, bytes: c.bytes })
                .collect()
        };
        let ports = cfg
            .ports()
            .iter()
            .map(|(vni, p)| {
                let c = self.ports.get(vni).cloned().unwrap_or_default();
                PortStats {
                    vni: vni.get(),
                    eni_id: p.eni_id.clone(),
                    rx_frames: c.rx.frames,
                    rx_bytes: c.rx.bytes,
                    tx_frames: c.tx.frames,
                    tx_bytes: c.tx.bytes,
                    health_frames: c.health.frames,
                    health_bytes: c.health.bytes,
                    drops: rows(&c.drops),
                }
            })
            .collect();
        let enis = cfg
            .enis
            .iter()
            .zip(&self.enis)
            .map(|(e, c)| EniStats {
                eni_id: e.id.to_string(),
                vni: e.vni.get(),
                vlan: e.tag.map(crate::wire::vlan::Tci::vid),
                rx_frames: c.rx.frames,
                rx_bytes: c.rx.bytes,
                tx_frames: c.tx.frames,
                tx_bytes: c.tx.bytes,
                drops: rows(&c.drops),
            })
            .collect();
        StatsSnapshot { epoch: cfg.epoch(), conntrack_entries, ports, enis, drops: rows(&self.drops) }
    }
}

/// All counters at one moment, ready to become a table or a protobuf message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Epoch of the configuration in force.
    pub epoch: u64,
    pub conntrack_entries: usize,
    /// One row per registered port, by VNI.
    pub ports: Vec<PortStats>,
    /// One row per ENI that reaches the fabric: a trunk's members apart from the trunk (whose
    /// own row counts its untagged frames only).
    pub enis: Vec<EniStats>,
    /// Totals over all ports (and over frames no port could be found for); non-zero only.
    pub drops: Vec<DropStats>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortStats {
    pub vni: u32,
    pub eni_id: String,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// The health checker's frames on this port, both ways (not in rx/tx).
    pub health_frames: u64,
    pub health_bytes: u64,
    /// Drops of frames received on this port; non-zero only.
    pub drops: Vec<DropStats>,
}

/// One ENI's counters: frames it sent into the fabric (rx), frames delivered to it (tx,
/// the fabric's replies included) and its frames dropped, by reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EniStats {
    pub eni_id: String,
    /// The port its frames travel on (a member's: its trunk's).
    pub vni: u32,
    /// A member's VLAN on its trunk.
    pub vlan: Option<u16>,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub drops: Vec<DropStats>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropStats {
    /// [`DropKind::as_str`], e.g. `security_group_ingress`.
    pub reason: &'static str,
    pub frames: u64,
    pub bytes: u64,
}

impl StatsSnapshot {
    /// Total drops under `reason` (0 if none).
    pub fn drops(&self, reason: DropKind) -> u64 {
        self.drops.iter().find(|d| d.reason == reason.as_str()).map_or(0, |d| d.frames)
    }

    pub fn port(&self, vni: Vni) -> Option<&PortStats> {
        self.ports.iter().find(|p| p.vni == vni.get())
    }
}

impl PortStats {
    pub fn drops(&self, reason: DropKind) -> u64 {
        self.drops.iter().find(|d| d.reason == reason.as_str()).map_or(0, |d| d.frames)
    }
}
