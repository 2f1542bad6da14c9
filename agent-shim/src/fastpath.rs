//! The node's kernel fast path: the BPF programs of `bpf/fastpath.bpf.c` (compiled by
//! `build.rs`), loaded with aya, and the metadata-mode VXLAN device they fall back on.
//!
//! ```text
//!   node device (eth0, eth1, sub-interfaces in the node namespace)
//!       tc egress fp_egress ── granted flow, VXLAN pushed ──▶ underlay NIC ══▶ peer node's underlay NIC
//!            │   └─ too big encapsulated, or local ─▶ enifab-fp (VXLAN) ──┘   tc ingress fp_wire
//!            │ anything else                                                       │ granted → popped,
//!            ▼                                                                     ▼ into the device
//!       the TAP: the shim relays it to the pipeline (slow path)   (a GSO aggregate: enifab-fp, fp_ingress)
//! ```
//!
//! The fabric's pipeline decides; this module only writes what it granted into the maps (see
//! `enifab_net::wire::fastpath`): egress entries keyed by the sending device and the
//! 5-tuple, ingress entries keyed by the VXLAN id (the receiving port) and the 5-tuple, each
//! valid while the node's epoch is the one it was granted under. IPv6 flows have maps of their
//! own (`egress6`, `ingress6`, keys with 16-byte addresses), filled from IPv6 grants by the same
//! code ([`FastPath::install6`]): one epoch covers both families. A revocation sets the epoch,
//! so every cached verdict stops at once; entries are replaced by the next grants. Reports send
//! the packets and bytes carried since the last report back to the fabric, each family's in
//! messages of its own.
//!
//! Where the kernel lacks what this needs (no BPF, no VXLAN, no clang at build time, no
//! underlay address), [`FastPath::start`] fails with the reason; the shim says so once and
//! relays everything (the node still works). A member's sub-interface is made reachable (a veth
//! pair whose node end is wired to the relay's TAP by [`FastPath::patch`], see `node.rs`);
//! entries for a device in another namespace are not installed (a redirect cannot cross
//! namespaces), so such flows stay on the slow path.
//!
//! An entry's idle time runs from its last packet, and until the first from its grant (see
//! `granted_at`): the kernel stops using it no later than conntrack forgets its flow, also when
//! its direction never sent anything.
//!
//! Must not: install anything the fabric did not grant, keep working on an old epoch, or keep
//! an entry past its flow's idle timeout, used or not.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
#[cfg(enifab_bpf)]
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use enifab_net::Vni;
#[cfg(enifab_bpf)]
use enifab_net::wire::fastpath::{Addr, Tuple};
use enifab_net::wire::fastpath::{Entry, Entry6, ReportRecord, ReportRecord6};

use crate::driver::DriverError;
use crate::driver::netlink::Netlink;
use crate::driver::netns::run_in;
#[cfg(enifab_bpf)]
use aya::programs::TcAttachType;

/// The VXLAN device the fast path sends through and receives on.
pub const DEVICE: &str = "enifab-fp";
/// A bridge that is never up, whose only job is to lend its ports headroom. Room for the
/// encapsulation in front of a frame is made by copying the whole packet when the socket that
/// sent it left too little, and a pod's socket leaves what its device asks for: a veth asks
/// for 16 bytes, the fast path needs 50. Linux has no knob for a veth's headroom, but a bridge
/// gives every port the largest any of its ports needs, and a veth passes it to its peer: so
/// the node's end of each member sub-interface joins this bridge beside [`HEADROOM_DONOR`], and
/// the pod's `eth0` asks for room for VXLAN. The bridge never sees a frame: the fast path's
/// programs take every one at the node's end first. (Worth about a tenth more 64-byte
/// datagrams a second, BENCHMARKS.md.)
pub const HEADROOM_BRIDGE: &str = "enifab-fphr";
/// A VXLAN device that is never up (so it has no socket), there for its headroom.
pub const HEADROOM_DONOR: &str = "enifab-fphr0";
/// VXLAN's IANA port: every node's fast path listens on it, on its own underlay address.
pub const DEFAULT_PORT: u16 = 4789;

/// How the shim is told to run its fast path.
#[derive(Debug, Clone)]
pub struct FastPathOptions {
    /// The node namespace's device whose IPv4 address is the node's underlay address.
    pub device: String,
    pub port: u16,
    pub encap: Encap,
}

/// Who builds and takes apart the fast path's VXLAN. Both speak the same VXLAN, so nodes of
/// either kind carry each other's flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encap {
    /// The programs, on the underlay device; the VXLAN device takes what they leave to it.
    #[default]
    Program,
    /// The kernel's VXLAN device, for everything: the first design, kept to measure against
    /// (`bench/fastpath.sh`) and for an underlay whose driver would mishandle what a program
    /// built.
    Device,
}

#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    #[error("this shim was built without the BPF program (clang was missing at build time)")]
    NotBuilt,
    #[error("no IPv4 address on {0} in the node namespace")]
    NoAddress(String),
    #[error("cannot create the VXLAN device: {0}")]
    Vxlan(String),
    #[error("BPF: {0}")]
    Bpf(String),
    #[error(transparent)]
    Driver(#[from] DriverError),
}

/// Where the fabric's ports are in this node's kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    /// (port, member VLAN or 0) → the device its frames leave by.
    pub egress: HashMap<(Vni, u16), u32>,
    /// (port, member VLAN or 0) → where to deliver.
    pub ingress: HashMap<(Vni, u16), Delivery>,
    /// name → ifindex of every device that gets the egress program.
    pub attach: HashMap<String, u32>,
}

/// Where the kernel delivers a carried frame on the receiving node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub ifindex: u32,
    /// The tag to push (0 = none).
    pub push: u16,
    /// Out of the device (a member's veth, into its pod) rather than into it (a TAP, into the
    /// node's stack).
    pub egress: bool,
}

#[cfg(enifab_bpf)]
#[allow(unsafe_code)]
mod bpf {
    //! The maps' layouts, as `bpf/fastpath.bpf.c` declares them.

    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct EgressKey {
        pub ifindex: u32,
        pub proto: u8,
        pub pad: [u8; 3],
        pub src: [u8; 4],
        pub dst: [u8; 4],
        pub sport: [u8; 2],
        pub dport: [u8; 2],
    }
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    pub struct EgressVal {
        pub epoch: u64,
        pub idle_ns: u64,
        pub last_ns: u64,
        pub packets: u64,
        pub bytes: u64,
        pub remote: u32,
        pub vni: u32,
    }
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct IngressKey {
        pub vni: u32,
        pub proto: u8,
        pub pad: [u8; 3],
        pub src: [u8; 4],
        pub dst: [u8; 4],
        pub sport: [u8; 2],
        pub dport: [u8; 2],
    }
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    pub struct IngressVal {
        pub epoch: u64,
        pub idle_ns: u64,
        pub last_ns: u64,
        pub peer: u32,
        pub ifindex: u32,
        pub mac: [u8; 6],
        pub vlan: u16,
        pub flags: u32,
        pub pad: u32,
    }
    pub const DELIVER_EGRESS: u32 = 1;
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct EgressKey6 {
        pub ifindex: u32,
        pub proto: u8,
        pub pad: [u8; 3],
        pub src: [u8; 16],
        pub dst: [u8; 16],
        pub sport: [u8; 2],
        pub dport: [u8; 2],
    }
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct IngressKey6 {
        pub vni: u32,
        pub proto: u8,
        pub pad: [u8; 3],
        pub src: [u8; 16],
        pub dst: [u8; 16],
        pub sport: [u8; 2],
        pub dport: [u8; 2],
    }
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    pub struct State {
        pub epoch: u64,
        pub vxlan_ifindex: u32,
        pub underlay_ifindex: u32,
        /// Network order, as the C side compares it with a header's bytes.
        pub local: u32,
        /// Network order, likewise.
        pub port: u16,
        pub pad: u16,
    }
    // SAFETY: plain `repr(C)` integers and byte arrays with every padding byte a named field.
    unsafe impl aya::Pod for EgressKey {}
    unsafe impl aya::Pod for EgressVal {}
    unsafe impl aya::Pod for IngressKey {}
    unsafe impl aya::Pod for IngressVal {}
    unsafe impl aya::Pod for State {}
    unsafe impl aya::Pod for EgressKey6 {}
    unsafe impl aya::Pod for IngressKey6 {}

    // The C side's sizes: a key that differs would never match.
    const _: () = assert!(size_of::<EgressKey>() == 20 && size_of::<IngressKey>() == 20);
    const _: () = assert!(size_of::<EgressKey6>() == 44 && size_of::<IngressKey6>() == 44);
    const _: () = assert!(size_of::<EgressVal>() == 48 && size_of::<IngressVal>() == 48);
    const _: () = assert!(size_of::<State>() == 24);

    pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fastpath.bpf.o"));
}

/// The running fast path of one node.
pub struct FastPath {
    /// The node's underlay address: what the fabric sends other nodes' traffic for this one to.
    pub address: Ipv4Addr,
    netns: PathBuf,
    #[cfg(enifab_bpf)]
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath").field("address", &self.address).finish()
    }
}

/// One family's maps, and what of them was reported.
#[cfg(enifab_bpf)]
struct Maps<EK, IK> {
    egress: aya::maps::HashMap<aya::maps::MapData, EK, bpf::EgressVal>,
    ingress: aya::maps::HashMap<aya::maps::MapData, IK, bpf::IngressVal>,
    /// Packets and bytes already reported, per egress entry.
    reported: HashMap<EK, (u64, u64)>,
}

#[cfg(enifab_bpf)]
impl<EK: aya::Pod + Eq + std::hash::Hash, IK: aya::Pod> Maps<EK, IK> {
    fn take(ebpf: &mut aya::Ebpf, egress: &str, ingress: &str) -> Result<Maps<EK, IK>, FastPathError> {
        let bpf_err = |e: &dyn std::fmt::Display| FastPathError::Bpf(e.to_string());
        let mut take = |name: &str| ebpf.take_map(name).ok_or_else(|| bpf_err(&name));
        Ok(Maps {
            egress: aya::maps::HashMap::try_from(take(egress)?).map_err(|e| bpf_err(&e))?,
            ingress: aya::maps::HashMap::try_from(take(ingress)?).map_err(|e| bpf_err(&e))?,
            reported: HashMap::new(),
        })
    }
}

/// What the maps of an address family are keyed by, and how a tuple of that family becomes a
/// key (and back).
#[cfg(enifab_bpf)]
trait Keys: Addr {
    type Egress: aya::Pod + Eq + std::hash::Hash;
    type Ingress: aya::Pod;
    fn maps(inner: &mut Inner) -> &mut Maps<Self::Egress, Self::Ingress>;
    fn egress_key(ifindex: u32, t: &Tuple<Self>) -> Self::Egress;
    fn ingress_key(vni: Vni, t: &Tuple<Self>) -> Self::Ingress;
    /// The device and the tuple of an egress key.
    fn from_egress_key(k: &Self::Egress) -> (u32, Tuple<Self>);
}

#[cfg(enifab_bpf)]
impl Keys for Ipv4Addr {
    type Egress = bpf::EgressKey;
    type Ingress = bpf::IngressKey;

    fn maps(inner: &mut Inner) -> &mut Maps<bpf::EgressKey, bpf::IngressKey> {
        &mut inner.v4
    }

    fn egress_key(ifindex: u32, t: &Tuple) -> bpf::EgressKey {
        bpf::EgressKey {
            ifindex,
            proto: t.protocol,
            pad: [0; 3],
            src: t.src.octets(),
            dst: t.dst.octets(),
            sport: t.sport.to_be_bytes(),
            dport: t.dport.to_be_bytes(),
        }
    }

    fn ingress_key(vni: Vni, t: &Tuple) -> bpf::IngressKey {
        bpf::IngressKey {
            vni: vni.get(),
            proto: t.protocol,
            pad: [0; 3],
            src: t.src.octets(),
            dst: t.dst.octets(),
            sport: t.sport.to_be_bytes(),
            dport: t.dport.to_be_bytes(),
        }
    }

    fn from_egress_key(k: &bpf::EgressKey) -> (u32, Tuple) {
        let t = Tuple {
            protocol: k.proto,
            src: Ipv4Addr::from(k.src),
            dst: Ipv4Addr::from(k.dst),
            sport: u16::from_be_bytes(k.sport),
            dport: u16::from_be_bytes(k.dport),
        };
        (k.ifindex, t)
    }
}

#[cfg(enifab_bpf)]
impl Keys for Ipv6Addr {
    type Egress = bpf::EgressKey6;
    type Ingress = bpf::IngressKey6;

    fn maps(inner: &mut Inner) -> &mut Maps<bpf::EgressKey6, bpf::IngressKey6> {
        &mut inner.v6
    }

    fn egress_key(ifindex: u32, t: &Tuple<Ipv6Addr>) -> bpf::EgressKey6 {
        bpf::EgressKey6 {
            ifindex,
            proto: t.protocol,
            pad: [0; 3],
            src: t.src.octets(),
            dst: t.dst.octets(),
            sport: t.sport.to_be_bytes(),
            dport: t.dport.to_be_bytes(),
        }
    }

    fn ingress_key(vni: Vni, t: &Tuple<Ipv6Addr>) -> bpf::IngressKey6 {
        bpf::IngressKey6 {
            vni: vni.get(),
            proto: t.protocol,
            pad: [0; 3],
            src: t.src.octets(),
            dst: t.dst.octets(),
            sport: t.sport.to_be_bytes(),
            dport: t.dport.to_be_bytes(),
        }
    }

    fn from_egress_key(k: &bpf::EgressKey6) -> (u32, Tuple<Ipv6Addr>) {
        let t = Tuple {
            protocol: k.proto,
            src: Ipv6Addr::from(k.src),
            dst: Ipv6Addr::from(k.dst),
            sport: u16::from_be_bytes(k.sport),
            dport: u16::from_be_bytes(k.dport),
        };
        (k.ifindex, t)
    }
}

#[cfg(enifab_bpf)]
struct Inner {
    /// `None` only while it visits the namespace's thread in [`FastPath::attach`].
    ebpf: Option<aya::Ebpf>,
    v4: Maps<bpf::EgressKey, bpf::IngressKey>,
    v6: Maps<bpf::EgressKey6, bpf::IngressKey6>,
    config: aya::maps::Array<aya::maps::MapData, bpf::State>,
    patch: aya::maps::HashMap<aya::maps::MapData, u32, u32>,
    /// Member sub-interfaces' devices (the node's end of the veth, the TAP), with their links.
    patched: HashMap<u32, aya::programs::tc::SchedClassifierLink>,
    /// What the kernel is told (the epoch changes, the rest is set at start).
    state: bpf::State,
    /// Devices the egress program is attached to (ifindex), with their link.
    attached: HashMap<u32, aya::programs::tc::SchedClassifierLink>,
}

impl FastPath {
    /// Creates the VXLAN device on `opts.device`'s address in the node namespace `netns`,
    /// loads the programs and attaches the receiving one. Nothing is carried until the fabric
    /// revokes to a first epoch and grants flows.
    #[cfg(enifab_bpf)]
    pub fn start(netns: &Path, opts: &FastPathOptions) -> Result<FastPath, FastPathError> {
        let (device, port, encap) = (opts.device.clone(), opts.port, opts.encap);
        let (address, inner) = run_in(netns, move || Ok(start_here(&device, port, encap)))??;
        Ok(FastPath { address, netns: netns.to_path_buf(), inner: Mutex::new(inner) })
    }

    #[cfg(not(enifab_bpf))]
    pub fn start(_netns: &Path, _opts: &FastPathOptions) -> Result<FastPath, FastPathError> {
        Err(FastPathError::NotBuilt)
    }

    /// Attaches the egress program to every device in `devices.attach` that lacks it, and
    /// forgets devices that are gone.
    #[cfg(enifab_bpf)]
    pub fn attach(&self, devices: &Devices) -> Result<(), FastPathError> {
        let mut inner = self.lock();
        let wanted: HashSet<u32> = devices.attach.values().copied().collect();
        inner.attached.retain(|ifindex, _| wanted.contains(ifindex));
        let missing: Vec<(String, u32)> = devices
            .attach
            .iter()
            .filter(|(_, i)| !inner.attached.contains_key(i))
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // The program and its links move to the namespace's thread and back: attaching names
        // devices of that namespace.
        let Some(mut ebpf) = inner.ebpf.take() else { return Err(FastPathError::Bpf("programs not loaded".into())) };
        let mut attached = std::mem::take(&mut inner.attached);
        // An error here: the thread never ran (the namespace is gone), the programs went with it.
        let (ebpf, attached, result) = run_in(&self.netns, move || {
            let result = attach_egress(&mut ebpf, &missing, &mut attached);
            Ok((ebpf, attached, result))
        })?;
        inner.ebpf = Some(ebpf);
        inner.attached = attached;
        result
    }

    #[cfg(not(enifab_bpf))]
    pub fn attach(&self, _devices: &Devices) -> Result<(), FastPathError> {
        Ok(())
    }

    /// Wires a member sub-interface made as a veth pair: `node_end` (this namespace's end) and
    /// `tap` (the device the shim relays) pass frames to each other through the programs, the
    /// node's end first trying the fast path.
    pub fn patch(&self, node_end: (&str, u32), tap: (&str, u32)) -> Result<(), FastPathError> {
        #[cfg(enifab_bpf)]
        {
            let mut inner = self.lock();
            let bpf_err = |e: &dyn std::fmt::Display| FastPathError::Bpf(e.to_string());
            inner.patch.insert(node_end.1, tap.1, 0).map_err(|e| bpf_err(&e))?;
            inner.patch.insert(tap.1, node_end.1, 0).map_err(|e| bpf_err(&e))?;
            let Some(mut ebpf) = inner.ebpf.take() else { return Err(bpf_err(&"programs not loaded")) };
            let wires =
                [("fp_member_out", node_end.0.to_string(), node_end.1), ("fp_member_in", tap.0.to_string(), tap.1)];
            let (ebpf, result) = run_in(&self.netns, move || {
                let mut links = Vec::new();
                let result = wires
                    .iter()
                    .try_for_each(|(prog, dev, ifindex)| {
                        links.push((*ifindex, attach_one(&mut ebpf, prog, dev, TcAttachType::Ingress)?));
                        Ok::<(), FastPathError>(())
                    })
                    .map(|()| links);
                // Only once the programs take its frames (see HEADROOM_BRIDGE); without the
                // room, the encapsulation copies each packet, which is slower, not wrong.
                if result.is_ok()
                    && let Err(e) = ip(&["link", "set", &wires[0].1, "master", HEADROOM_BRIDGE])
                {
                    tracing::debug!(device = %wires[0].1, error = %e, "fast path: no headroom lent");
                }
                Ok((ebpf, result))
            })?;
            inner.ebpf = Some(ebpf);
            for (ifindex, link) in result? {
                inner.patched.insert(ifindex, link);
            }
        }
        #[cfg(not(enifab_bpf))]
        let _ = (node_end, tap);
        Ok(())
    }

    /// Forgets a member sub-interface's wiring (its devices are going).
    pub fn unpatch(&self, node_end: u32, tap: u32) {
        #[cfg(enifab_bpf)]
        {
            let mut inner = self.lock();
            for i in [node_end, tap] {
                let _ = inner.patch.remove(&i);
                inner.patched.remove(&i);
            }
        }
        #[cfg(not(enifab_bpf))]
        let _ = (node_end, tap);
    }

    /// The fabric's configuration is now `epoch`: nothing granted under another is used from
    /// this call's return on. Epoch 0, which the fabric never grants under, is for when there
    /// is no fabric to answer for what the kernel carries (the control session ended).
    pub fn revoke(&self, epoch: u64) -> Result<(), FastPathError> {
        #[cfg(enifab_bpf)]
        {
            let mut inner = self.lock();
            let state = bpf::State { epoch, ..inner.state };
            inner.config.set(0, state, 0).map_err(|e| FastPathError::Bpf(e.to_string()))?;
            inner.state = state;
        }
        let _ = epoch;
        Ok(())
    }

    /// The epoch the kernel checks entries against (0 until the fabric's first revocation).
    pub fn epoch(&self) -> u64 {
        #[cfg(enifab_bpf)]
        return self.lock().state.epoch;
        #[cfg(not(enifab_bpf))]
        0
    }

    /// Installs the entries of a grant made under `epoch`, resolved to this node's devices;
    /// returns how many were installed (entries for devices the node does not carry are
    /// skipped).
    pub fn install(&self, epoch: u64, entries: impl Iterator<Item = Entry>, devices: &Devices) -> usize {
        #[cfg(enifab_bpf)]
        return install_in(&mut self.lock(), epoch, entries, devices);
        #[cfg(not(enifab_bpf))]
        {
            let _ = (epoch, entries, devices);
            0
        }
    }

    /// [`FastPath::install`] for the entries of an IPv6 grant, into the IPv6 maps.
    pub fn install6(&self, epoch: u64, entries: impl Iterator<Item = Entry6>, devices: &Devices) -> usize {
        #[cfg(enifab_bpf)]
        return install_in(&mut self.lock(), epoch, entries, devices);
        #[cfg(not(enifab_bpf))]
        {
            let _ = (epoch, entries, devices);
            0
        }
    }

    /// Forgets the entries named (by their keys), from this call's return on.
    pub fn evict(&self, entries: impl Iterator<Item = Entry>, devices: &Devices) {
        #[cfg(enifab_bpf)]
        evict_in(&mut self.lock(), entries, devices);
        #[cfg(not(enifab_bpf))]
        let _ = (entries, devices);
    }

    /// [`FastPath::evict`] for IPv6 entries.
    pub fn evict6(&self, entries: impl Iterator<Item = Entry6>, devices: &Devices) {
        #[cfg(enifab_bpf)]
        evict_in(&mut self.lock(), entries, devices);
        #[cfg(not(enifab_bpf))]
        let _ = (entries, devices);
    }

    /// What the kernel carried of IPv4 flows since the last call, per egress entry, named as
    /// the fabric knows the sender (port and VLAN); entries of old epochs (which the kernel no
    /// longer uses) are removed from the maps on the way, so they hold what is in force.
    pub fn report(&self, devices: &Devices) -> Vec<ReportRecord> {
        #[cfg(enifab_bpf)]
        return report_in(&mut self.lock(), devices);
        #[cfg(not(enifab_bpf))]
        {
            let _ = devices;
            Vec::new()
        }
    }

    /// [`FastPath::report`] for IPv6 flows (and the IPv6 maps' old entries).
    pub fn report6(&self, devices: &Devices) -> Vec<ReportRecord6> {
        #[cfg(enifab_bpf)]
        return report_in(&mut self.lock(), devices);
        #[cfg(not(enifab_bpf))]
        {
            let _ = devices;
            Vec::new()
        }
    }

    /// How many IPv4 egress and ingress entries the maps hold (of any epoch).
    pub fn entries(&self) -> (usize, usize) {
        #[cfg(enifab_bpf)]
        {
            let inner = self.lock();
            (inner.v4.egress.keys().count(), inner.v4.ingress.keys().count())
        }
        #[cfg(not(enifab_bpf))]
        (0, 0)
    }

    /// How many IPv6 egress and ingress entries the maps hold (of any epoch).
    pub fn entries6(&self) -> (usize, usize) {
        #[cfg(enifab_bpf)]
        {
            let inner = self.lock();
            (inner.v6.egress.keys().count(), inner.v6.ingress.keys().count())
        }
        #[cfg(not(enifab_bpf))]
        (0, 0)
    }

    /// Packets the kernel carried, sent to the slow path, delivered and refused (since start).
    pub fn counters(&self) -> [u64; 4] {
        #[cfg(enifab_bpf)]
        {
            let inner = self.lock();
            let mut out = [0u64; 4];
            let map = inner.ebpf.as_ref().and_then(|e| e.map("counters"));
            if let Some(Ok(map)) = map.map(aya::maps::PerCpuArray::<_, u64>::try_from) {
                for (i, o) in out.iter_mut().enumerate() {
                    if let Ok(v) = map.get(&(i as u32), 0) {
                        *o = v.iter().sum();
                    }
                }
            }
            out
        }
        #[cfg(not(enifab_bpf))]
        [0; 4]
    }

    #[cfg(enifab_bpf)]
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for FastPath {
    fn drop(&mut self) {
        // The programs detach with their links; the devices are ours to remove.
        let _ = run_in(&self.netns, || {
            for name in [DEVICE, HEADROOM_BRIDGE, HEADROOM_DONOR] {
                let _ = Command::new("ip").args(["link", "del", name]).output();
            }
            Ok(())
        });
    }
}

/// Installs a grant's entries of family `A` (see [`FastPath::install`]).
#[cfg(enifab_bpf)]
fn install_in<A: Keys>(
    inner: &mut Inner,
    epoch: u64,
    entries: impl Iterator<Item = Entry<A>>,
    devices: &Devices,
) -> usize {
    let since = granted_at();
    let maps = A::maps(inner);
    let mut n = 0;
    for e in entries {
        let ok = match e {
            Entry::Egress(g) => {
                let Some(&ifindex) = devices.egress.get(&(g.src_vni, g.src_vlan)) else { continue };
                let key = A::egress_key(ifindex, &g.tuple);
                let val = bpf::EgressVal {
                    epoch,
                    idle_ns: u64::from(g.idle_secs) * 1_000_000_000,
                    last_ns: since,
                    packets: 0,
                    bytes: 0,
                    remote: u32::from(g.peer),
                    vni: g.dst_vni.get(),
                };
                maps.reported.remove(&key);
                maps.egress.insert(key, val, 0).is_ok()
            }
            Entry::Ingress(g) => {
                let Some(d) = devices.ingress.get(&(g.dst_vni, g.dst_vlan)) else { continue };
                let key = A::ingress_key(g.dst_vni, &g.tuple);
                let val = bpf::IngressVal {
                    epoch,
                    idle_ns: u64::from(g.idle_secs) * 1_000_000_000,
                    last_ns: since,
                    peer: u32::from(g.peer),
                    ifindex: d.ifindex,
                    mac: g.dst_mac.0,
                    vlan: d.push,
                    flags: if d.egress { bpf::DELIVER_EGRESS } else { 0 },
                    pad: 0,
                };
                maps.ingress.insert(key, val, 0).is_ok()
            }
        };
        n += usize::from(ok);
    }
    n
}

/// Where a new entry's idle time starts, on the clock the programs read (`bpf_ktime_get_ns` is
/// CLOCK_MONOTONIC): a second before now. The fabric granted the flow when one of its packets
/// refreshed conntrack, a moment before the grant got here; counting from then (with a second
/// to spare for the way here) the kernel stops using an entry no later than conntrack forgets
/// the flow, also an entry whose direction never sends a packet (the kernel's own clock takes
/// over at the first). Without a clock, "long ago": the entry is never used, the flow stays on
/// the slow path.
#[cfg(enifab_bpf)]
fn granted_at() -> u64 {
    const SLACK_NS: u64 = 1_000_000_000;
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .ok()
        .and_then(|t| {
            let (secs, nanos) = (u64::try_from(t.tv_sec()).ok()?, u64::try_from(t.tv_nsec()).ok()?);
            secs.checked_mul(1_000_000_000)?.checked_add(nanos)?.checked_sub(SLACK_NS)
        })
        .unwrap_or(1)
}

/// Forgets entries of family `A` (see [`FastPath::evict`]).
#[cfg(enifab_bpf)]
fn evict_in<A: Keys>(inner: &mut Inner, entries: impl Iterator<Item = Entry<A>>, devices: &Devices) {
    let maps = A::maps(inner);
    for e in entries {
        match e {
            Entry::Egress(g) => {
                let Some(&ifindex) = devices.egress.get(&(g.src_vni, g.src_vlan)) else { continue };
                let key = A::egress_key(ifindex, &g.tuple);
                let _ = maps.egress.remove(&key);
                maps.reported.remove(&key);
            }
            Entry::Ingress(g) => {
                let _ = maps.ingress.remove(&A::ingress_key(g.dst_vni, &g.tuple));
            }
        }
    }
}

/// What the kernel carried of family `A` since the last report (see [`FastPath::report`]).
#[cfg(enifab_bpf)]
fn report_in<A: Keys>(inner: &mut Inner, devices: &Devices) -> Vec<ReportRecord<A>> {
    let by_ifindex: HashMap<u32, (Vni, u16)> = devices.egress.iter().map(|(k, i)| (*i, *k)).collect();
    let epoch = inner.state.epoch;
    let maps = A::maps(inner);
    let mut out = Vec::new();
    let mut stale = Vec::new();
    let entries: Vec<(A::Egress, bpf::EgressVal)> = maps.egress.iter().flatten().collect();
    for (k, v) in entries {
        let before = maps.reported.get(&k).copied().unwrap_or((0, 0));
        let (ifindex, tuple) = A::from_egress_key(&k);
        if v.packets > before.0
            && let Some(&(src_vni, src_vlan)) = by_ifindex.get(&ifindex)
        {
            out.push(ReportRecord {
                src_vni,
                src_vlan,
                tuple,
                packets: v.packets - before.0,
                bytes: v.bytes.saturating_sub(before.1),
            });
            maps.reported.insert(k, (v.packets, v.bytes));
        }
        if v.epoch != epoch {
            stale.push(k);
        }
    }
    for k in stale {
        let _ = maps.egress.remove(&k);
        maps.reported.remove(&k);
    }
    let stale: Vec<A::Ingress> =
        maps.ingress.iter().flatten().filter(|(_, v)| v.epoch != epoch).map(|(k, _)| k).collect();
    for k in stale {
        let _ = maps.ingress.remove(&k);
    }
    out
}

/// In the node namespace: the underlay address, the VXLAN device, the programs.
#[cfg(enifab_bpf)]
fn start_here(device: &str, port: u16, encap: Encap) -> Result<(Ipv4Addr, Inner), FastPathError> {
    use aya::programs::{SchedClassifier, TcAttachType};

    let nl = Netlink::open()?;
    let index = nl.index(device)?.ok_or_else(|| FastPathError::NoAddress(device.to_string()))?;
    let address = nl
        .ipv4_addrs()?
        .into_iter()
        .find(|a| a.index == index)
        .map(|a| a.address)
        .ok_or_else(|| FastPathError::NoAddress(device.to_string()))?;
    // Devices left by a shim that was killed are replaced. The VXLAN device is not tied to the
    // underlay link (no `dev`): the route picks it, and the device outlives the link going and
    // coming back.
    for name in [DEVICE, HEADROOM_BRIDGE, HEADROOM_DONOR] {
        let _ = ip(&["link", "del", name]);
    }
    let dstport = port.to_string();
    for args in [
        &["link", "add", DEVICE, "type", "vxlan", "external", "dstport", &dstport][..],
        &["link", "set", DEVICE, "up"][..],
    ] {
        ip(args).map_err(FastPathError::Vxlan)?;
    }
    let donor = [
        &["link", "add", HEADROOM_BRIDGE, "type", "bridge"][..],
        &["link", "add", HEADROOM_DONOR, "type", "vxlan", "id", "1", "dstport", &dstport][..],
        &["link", "set", HEADROOM_DONOR, "master", HEADROOM_BRIDGE][..],
    ];
    if let Err(e) = donor.iter().try_for_each(|args| ip(args)) {
        tracing::warn!(error = %e, "fast path: the pods' sub-interfaces get no headroom for VXLAN (slower, not wrong)");
    }
    let vxlan_ifindex = nl.index(DEVICE)?.ok_or_else(|| FastPathError::Vxlan("the device vanished".into()))?;
    let bpf_err = |e: &dyn std::fmt::Display| FastPathError::Bpf(e.to_string());
    let mut ebpf = aya::Ebpf::load(bpf::OBJECT).map_err(|e| bpf_err(&e))?;
    for name in ["fp_egress", "fp_ingress", "fp_member_out", "fp_member_in", "fp_wire"] {
        let p: &mut SchedClassifier =
            ebpf.program_mut(name).ok_or_else(|| bpf_err(&name))?.try_into().map_err(|e| bpf_err(&e))?;
        p.load().map_err(|e| bpf_err(&e))?;
    }
    let p: &mut SchedClassifier =
        ebpf.program_mut("fp_ingress").ok_or_else(|| bpf_err(&"fp_ingress"))?.try_into().map_err(|e| bpf_err(&e))?;
    let _ = aya::programs::tc::qdisc_add_clsact(DEVICE);
    p.attach(DEVICE, TcAttachType::Ingress).map_err(|e| bpf_err(&e))?;
    // The fast path's own VXLAN on the underlay (see the C file's top). Sending needs nothing
    // attached, and what it sends is plain VXLAN for any receiver: without `fp_wire` this node
    // only receives through the VXLAN device, more slowly.
    if encap == Encap::Program {
        let p: &mut SchedClassifier =
            ebpf.program_mut("fp_wire").ok_or_else(|| bpf_err(&"fp_wire"))?.try_into().map_err(|e| bpf_err(&e))?;
        let _ = aya::programs::tc::qdisc_add_clsact(device);
        if let Err(e) = p.attach(device, TcAttachType::Ingress) {
            tracing::warn!(device, error = %e, "fast path: receiving through the VXLAN device only");
        }
    }
    let take = |ebpf: &mut aya::Ebpf, name: &str| ebpf.take_map(name).ok_or_else(|| bpf_err(&name));
    let v4 = Maps::take(&mut ebpf, "egress", "ingress")?;
    let v6 = Maps::take(&mut ebpf, "egress6", "ingress6")?;
    let mut config = aya::maps::Array::try_from(take(&mut ebpf, "config")?).map_err(|e| bpf_err(&e))?;
    let patch = aya::maps::HashMap::try_from(take(&mut ebpf, "patch")?).map_err(|e| bpf_err(&e))?;
    let state = bpf::State {
        epoch: 0,
        vxlan_ifindex,
        underlay_ifindex: if encap == Encap::Program { index } else { 0 },
        local: u32::from_ne_bytes(address.octets()),
        port: port.to_be(),
        pad: 0,
    };
    config.set(0, state, 0).map_err(|e| bpf_err(&e))?;
    let inner =
        Inner { ebpf: Some(ebpf), v4, v6, config, patch, patched: HashMap::new(), state, attached: HashMap::new() };
    Ok((address, inner))
}

#[cfg(enifab_bpf)]
fn attach_egress(
    ebpf: &mut aya::Ebpf,
    devices: &[(String, u32)],
    attached: &mut HashMap<u32, aya::programs::tc::SchedClassifierLink>,
) -> Result<(), FastPathError> {
    for (name, ifindex) in devices {
        attached.insert(*ifindex, attach_one(ebpf, "fp_egress", name, TcAttachType::Egress)?);
    }
    Ok(())
}

/// Attaches program `prog` to `device` (of the calling thread's namespace); the link detaches
/// when dropped.
#[cfg(enifab_bpf)]
fn attach_one(
    ebpf: &mut aya::Ebpf,
    prog: &str,
    device: &str,
    at: TcAttachType,
) -> Result<aya::programs::tc::SchedClassifierLink, FastPathError> {
    use aya::programs::SchedClassifier;
    let bpf_err = |e: &dyn std::fmt::Display| FastPathError::Bpf(e.to_string());
    let p: &mut SchedClassifier =
        ebpf.program_mut(prog).ok_or_else(|| bpf_err(&prog))?.try_into().map_err(|e| bpf_err(&e))?;
    let _ = aya::programs::tc::qdisc_add_clsact(device);
    let id = p.attach(device, at).map_err(|e| bpf_err(&format!("{device}: {e}")))?;
    p.take_link(id).map_err(|e| bpf_err(&e))
}

/// `ip ARGS` in the calling thread's namespace; the error is its complaint.
#[cfg(enifab_bpf)]
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}
