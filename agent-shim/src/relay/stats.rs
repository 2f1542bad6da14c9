//! The relay's counters: frames and bytes each way, tags pushed and popped, and drops by
//! reason. Written by the two relay threads with relaxed atomic adds (each counter has one
//! writer), read as a [`StatsSnapshot`] by anyone. Nothing here is on the wire.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why the relay did not pass a frame on. Stable snake_case names, like the fabric's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// TAP → fabric before the emulator told us where it is.
    NoFabric,
    /// TAP → fabric on a NIC the emulator has given no port (VNI 0).
    NoPort,
    /// A VLAN sub-interface device sent a frame that is already tagged (QinQ is not carried;
    /// passing it would let a pod pick another member's VLAN).
    TaggedOnVlanDevice,
    /// The tag could not be pushed (runt frame, vnet offsets out of range).
    VlanPush,
    /// Encapsulated, the frame would not fit one UDP datagram.
    Oversize,
    /// `sendmmsg` refused the datagram.
    Send,
    /// A TAP read failed with something other than "nothing to read".
    TapRead,
    /// A datagram from an address other than the registered fabric address.
    NotFromFabric,
    /// Not a Geneve packet we accept (bad header, critical option, not Ethernet) or truncated.
    Geneve,
    /// A Geneve OAM packet: never a tenant frame.
    Oam,
    /// A VNI that names none of this node's devices.
    UnknownVni,
    /// The tag could not be popped (vnet offsets pointing into it).
    VlanPop,
    /// A virtio-net header the receiving kernel would refuse.
    BadVnet,
    /// The TAP refused the frame (device down, bad GSO metadata).
    TapWrite,
}

impl DropReason {
    pub const ALL: [DropReason; 14] = [
        DropReason::NoFabric,
        DropReason::NoPort,
        DropReason::TaggedOnVlanDevice,
        DropReason::VlanPush,
        DropReason::Oversize,
        DropReason::Send,
        DropReason::TapRead,
        DropReason::NotFromFabric,
        DropReason::Geneve,
        DropReason::Oam,
        DropReason::UnknownVni,
        DropReason::VlanPop,
        DropReason::BadVnet,
        DropReason::TapWrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoFabric => "no_fabric",
            DropReason::NoPort => "no_port",
            DropReason::TaggedOnVlanDevice => "tagged_on_vlan_device",
            DropReason::VlanPush => "vlan_push",
            DropReason::Oversize => "oversize",
            DropReason::Send => "send",
            DropReason::TapRead => "tap_read",
            DropReason::NotFromFabric => "not_from_fabric",
            DropReason::Geneve => "geneve",
            DropReason::Oam => "oam",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::VlanPop => "vlan_pop",
            DropReason::BadVnet => "bad_vnet",
            DropReason::TapWrite => "tap_write",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) to_fabric_frames: AtomicU64,
    pub(crate) to_fabric_bytes: AtomicU64,
    pub(crate) from_fabric_frames: AtomicU64,
    pub(crate) from_fabric_bytes: AtomicU64,
    pub(crate) tags_pushed: AtomicU64,
    pub(crate) tags_popped: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl Stats {
    pub(crate) fn drop(&self, d: DropReason) {
        self.drops[d as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            to_fabric_frames: r(&self.to_fabric_frames),
            to_fabric_bytes: r(&self.to_fabric_bytes),
            from_fabric_frames: r(&self.from_fabric_frames),
            from_fabric_bytes: r(&self.from_fabric_bytes),
            tags_pushed: r(&self.tags_pushed),
            tags_popped: r(&self.tags_popped),
            drops: DropReason::ALL.iter().map(|d| (*d, r(&self.drops[*d as usize]))).filter(|(_, n)| *n > 0).collect(),
        }
    }
}

/// Counters at one moment. Frames are datagrams: a GSO super-frame counts once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub to_fabric_frames: u64,
    pub to_fabric_bytes: u64,
    pub from_fabric_frames: u64,
    pub from_fabric_bytes: u64,
    pub tags_pushed: u64,
    pub tags_popped: u64,
    /// Only reasons that happened.
    pub drops: Vec<(DropReason, u64)>,
}

impl StatsSnapshot {
    pub fn dropped(&self, d: DropReason) -> u64 {
        self.drops.iter().find(|(r, _)| *r == d).map_or(0, |(_, n)| *n)
    }
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "to fabric {} frames/{} B, from fabric {} frames/{} B, pushed {}, popped {}",
            self.to_fabric_frames,
            self.to_fabric_bytes,
            self.from_fabric_frames,
            self.from_fabric_bytes,
            self.tags_pushed,
            self.tags_popped
        )?;
        for (d, n) in &self.drops {
            write!(f, ", {d} {n}")?;
        }
        Ok(())
    }
}
