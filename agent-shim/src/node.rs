//! Reconcile, second half: the node's state (the devices the shim made, the config it made them
//! from) and the code that applies a [`crate::plan`] with the drivers, then hands the relay the
//! matching [`RelayTable`]. Also the VLAN sub-interface devices the CNI asks for.
//!
//! All methods are blocking (they run driver threads and wait for the relay to acknowledge a
//! table): async callers go through `spawn_blocking`, holding the [`Node`] behind a
//! `std::sync::Mutex` so that reconciles and CNI requests are applied one at a time.
//!
//! Device lifetime follows the cloud (reference §6): a NIC's TAP exists while the NIC is `InUse`;
//! a sub-interface exists from `CreateVlanDevice` until `DeleteVlanDevice` or until its member
//! is no longer attached to that trunk with that VLAN id, whichever comes first; a failed step
//! is retried by the next reconcile, and nothing else is touched in the meantime.
//!
//! A node owns its namespace ([`netns::claim`]): a second shim for it is refused before it
//! touches anything. Two things ride on the reconcile: a shim inside a container keeps its
//! underlay routed to the emulator's fabric address before any NIC is made
//! ([`crate::underlay`]), and a restarted shim rebuilds its pods once its NICs are back
//! ([`crate::rebuild`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use enifab_net::wire::vlan::Tci;
use enifab_proto::v1 as pb;
use tokio::sync::watch;

use crate::driver::netlink::Netlink;
use crate::driver::netns;
use crate::driver::tap::{self, Tap, TapSetup};
use crate::driver::{DriverError, netns::path_of};
use crate::fastpath::{Delivery, Devices, FastPath};
use crate::plan::{self, Action, CurrentVlan, NicSpec};
use crate::rebuild::{Rebuild, Tally};
use crate::relay::{DeviceFd, Port, Relay, RelayTable, Source, SourceRule, StatsSnapshot};
use crate::sys::IFNAMSIZ_MAX;
use crate::underlay::{self, UnderlayError};
use crate::view::{DEFAULT_MTU, Mac, NicKind, NodeView, nic_name};
use crate::vlan::MemberTable;

/// How long a new shim waits for the previous holder of its namespace to finish dying (a shim
/// killed a moment ago whose fds the kernel is still closing).
pub const CLAIM_WAIT: Duration = Duration::from_secs(2);

/// Why a node operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The shim has not received the node's configuration yet.
    #[error("the node has no configuration yet: the shim is not registered with the emulator")]
    NotRegistered,
    /// The ENI is not a member of any trunk of this instance.
    #[error("{0} is not a member ENI of a trunk of this instance")]
    NotAMember(String),
    /// The member exists but does not carry traffic yet (or any more).
    #[error("member ENI {id} is {status}, not InUse")]
    MemberNotInUse { id: String, status: String },
    /// A request field is unusable.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Underlay(#[from] UnderlayError),
}

/// A NIC's device.
#[derive(Debug)]
struct NicDevice {
    spec: NicSpec,
    tap: Arc<Tap>,
}

/// A member's sub-interface device.
#[derive(Debug)]
struct VlanDevice {
    current: CurrentVlan,
    if_name: String,
    mtu: u32,
    /// The device the relay reads and writes: the pod's own end (a TAP in its namespace), or,
    /// with a kernel fast path, a TAP in the node's namespace patched to a veth pair.
    tap: Arc<Tap>,
    /// The pod's namespace.
    netns: netns::NetnsId,
    /// With a kernel fast path: the node's end of the pod's veth pair.
    veth: Option<Veth>,
}

/// The node's end of a member's veth pair (the pod's end is the sub-interface).
#[derive(Debug)]
struct Veth {
    name: String,
    ifindex: u32,
}

/// A `CreateVlanDevice` request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanRequest {
    pub member_eni_id: String,
    pub netns_path: PathBuf,
    pub if_name: String,
    pub mtu: u32,
}

impl VlanRequest {
    pub fn from_proto(r: &pb::CreateVlanDeviceRequest) -> Result<VlanRequest, NodeError> {
        let invalid = |field, reason: &str| NodeError::Invalid { field, reason: reason.to_string() };
        if r.network_interface_id.is_empty() {
            return Err(invalid("network_interface_id", "must be set"));
        }
        if r.netns_path.is_empty() {
            return Err(invalid("netns_path", "must be set"));
        }
        let n = &r.if_name;
        if n.is_empty() || n.len() > IFNAMSIZ_MAX || n == "." || n == ".." || n.contains(['/', ':', '\0']) {
            return Err(invalid("if_name", "must be 1 to 15 characters without '/', ':' or whitespace"));
        }
        if n.chars().any(char::is_whitespace) {
            return Err(invalid("if_name", "must not contain whitespace"));
        }
        let mtu = if r.mtu == 0 { DEFAULT_MTU } else { r.mtu };
        if !(68..=65_535).contains(&mtu) {
            return Err(invalid("mtu", "must be between 68 and 65535"));
        }
        Ok(VlanRequest {
            member_eni_id: r.network_interface_id.clone(),
            netns_path: PathBuf::from(&r.netns_path),
            if_name: n.clone(),
            mtu,
        })
    }
}

/// What a reconcile did.
#[derive(Debug, Default)]
pub struct Report {
    pub applied: Vec<String>,
    /// Steps that failed; the caller retries the whole reconcile later.
    pub errors: Vec<String>,
}

/// The node: its config, its devices, and the relay that moves their frames.
pub struct Node {
    netns_path: PathBuf,
    relay: Relay,
    fabric: Option<SocketAddr>,
    config: Option<pb::NodeConfig>,
    /// The config of the last reconcile, for readers that must not wait for the node lock (the
    /// metadata service).
    published: watch::Sender<Option<Arc<pb::NodeConfig>>>,
    view: NodeView,
    nics: BTreeMap<String, NicDevice>,
    vlans: BTreeMap<String, VlanDevice>,
    /// The namespace is this node's while the claim is held.
    claim: Option<netns::NetnsClaim>,
    /// The container's own interface moved aside, and what it must keep reaching.
    underlay: Option<underlay::Request>,
    /// The pods to rebuild from the CNI's state once the NICs are back; kept when done, for its
    /// tally.
    rebuild: Option<Rebuild>,
    /// The node's kernel fast path, when it runs.
    fast: Option<Arc<FastPath>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("netns", &self.netns_path)
            .field("fabric", &self.fabric)
            .field("nics", &self.nics.values().map(|n| &n.spec.name).collect::<Vec<_>>())
            .field("vlans", &self.vlans.values().map(|v| &v.if_name).collect::<Vec<_>>())
            .finish()
    }
}

/// A device as [`Node::devices`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub eni_id: String,
    pub if_name: String,
    pub ifindex: u32,
    /// `Some(vlan)` for a sub-interface device.
    pub vlan: Option<u16>,
}

impl Node {
    /// A node without devices whose NICs will live in the namespace `netns` (a name under
    /// `/run/netns` or a path). Refused while another shim holds that namespace.
    pub fn new(netns: &str, relay: Relay) -> Result<Node, NodeError> {
        let netns_path = path_of(netns);
        netns::id_of(&netns_path)?;
        let claim = netns::claim(&netns_path, CLAIM_WAIT)?;
        Ok(Node {
            netns_path,
            relay,
            fabric: None,
            config: None,
            published: watch::Sender::new(None),
            view: NodeView::default(),
            nics: BTreeMap::new(),
            vlans: BTreeMap::new(),
            claim: Some(claim),
            underlay: None,
            rebuild: None,
            fast: None,
        })
    }

    /// Rebuild the pods recorded in the CNI state directory `dir` once the NICs exist (see
    /// [`crate::rebuild`]). Call before the first reconcile.
    pub fn rebuild_pods_from(&mut self, dir: PathBuf) {
        self.rebuild = Some(Rebuild::new(dir));
    }

    /// How the rebuild went so far (`None`: no rebuild asked for).
    pub fn rebuild_tally(&self) -> Option<Tally> {
        self.rebuild.as_ref().map(Rebuild::tally)
    }

    /// `--underlay`: moves the namespace's own `eth0` (Docker's) aside as `name`, keeping only
    /// the routes to `targets` (the emulator's API addresses) through it; the fabric's address
    /// is added when registration tells it. Call before the first reconcile.
    pub fn move_underlay(&mut self, name: &str, targets: Vec<Ipv4Addr>) -> Result<(), NodeError> {
        let req =
            underlay::Request { from: nic_name(0), to: name.to_string(), targets, gateway: None, complete: false };
        let out = underlay::prepare(&self.netns_path, &req)?;
        for a in &out.applied {
            tracing::info!(action = %a, "underlay");
        }
        for n in &out.notes {
            tracing::info!(note = %n, "underlay");
        }
        self.underlay = Some(underlay::Request { gateway: out.gateway, ..req });
        Ok(())
    }

    /// Keeps the fabric address reachable through the underlay, if there is one; the first
    /// time, also drops host routes the emulator no longer needs.
    fn route_fabric_via_underlay(&mut self) -> Result<(), UnderlayError> {
        let Some(u) = &self.underlay else { return Ok(()) };
        let Some(IpAddr::V4(ip)) = self.fabric.map(|f| f.ip()) else { return Ok(()) };
        if u.complete && u.targets.contains(&ip) {
            return Ok(());
        }
        let mut want = u.clone();
        if !want.targets.contains(&ip) {
            want.targets.push(ip);
        }
        want.complete = true;
        let out = underlay::prepare(&self.netns_path, &want)?;
        for a in &out.applied {
            tracing::info!(action = %a, "underlay");
        }
        want.gateway = out.gateway.or(want.gateway);
        self.underlay = Some(want);
        Ok(())
    }

    /// The node as the last reconcile saw it.
    pub fn view(&self) -> &NodeView {
        &self.view
    }

    pub fn netns_path(&self) -> &Path {
        &self.netns_path
    }

    pub fn config(&self) -> Option<&pb::NodeConfig> {
        self.config.as_ref()
    }

    /// The config each reconcile applied, published after its devices were made, so that what
    /// a reader sees (a NIC in the metadata's MAC list) already has its device in the guest.
    pub fn watch_config(&self) -> watch::Receiver<Option<Arc<pb::NodeConfig>>> {
        self.published.subscribe()
    }

    pub fn relay_stats(&self) -> StatsSnapshot {
        self.relay.stats()
    }

    pub fn geneve_address(&self) -> SocketAddr {
        self.relay.local_addr()
    }

    pub fn devices(&self) -> Vec<DeviceInfo> {
        let nics = self.nics.values().map(|n| DeviceInfo {
            eni_id: n.spec.eni_id.clone(),
            if_name: n.spec.name.clone(),
            ifindex: n.tap.ifindex(),
            vlan: None,
        });
        let vlans = self.vlans.values().map(|v| DeviceInfo {
            eni_id: v.current.member_eni_id.clone(),
            if_name: v.if_name.clone(),
            ifindex: v.tap.ifindex(),
            vlan: Some(v.current.vlan),
        });
        nics.chain(vlans).collect()
    }

    /// Makes the devices match `config` (and the relay match the devices). `fabric`, when
    /// given, is the emulator's Geneve address from `RegisterNode`; otherwise the config's.
    pub fn reconcile(&mut self, fabric: Option<SocketAddr>, config: pb::NodeConfig) -> Report {
        let view = NodeView::from_proto(&config);
        for p in &view.problems {
            tracing::warn!(problem = %p, "node config entry ignored");
        }
        self.fabric = fabric.or(view.fabric_address).or(self.fabric);
        let current: Vec<NicSpec> = self.nics.values().map(|n| n.spec.clone()).collect();
        let vlans: Vec<CurrentVlan> = self.vlans.values().map(|v| v.current.clone()).collect();
        let actions = plan::plan(&view, &current, &vlans);
        self.view = view;
        self.config = Some(config);
        let mut report = Report::default();
        // Before any NIC: once eth0's default route points into the VPC, a fabric address the
        // underlay does not route would send the relay's own datagrams into eth0, round and round.
        if let Err(e) = self.route_fabric_via_underlay() {
            report.errors.push(e.to_string());
            return report;
        }

        // Removals first, and really gone (relay acknowledged, fds closed) before any creation
        // reuses a name.
        let mut released: Vec<Arc<Tap>> = Vec::new();
        for a in &actions {
            match a {
                Action::RemoveVlanDevice { member_eni_id, .. } => {
                    if let Some(v) = self.vlans.remove(member_eni_id) {
                        // Its veth pair too (a fast-path node's sub-interface): left behind, the
                        // pod would keep an eth0 wired to a TAP that no longer exists.
                        self.unwire_vlan(&v);
                        released.push(v.tap);
                    }
                }
                Action::RemoveNic { eni_id, .. } => released.extend(self.nics.remove(eni_id).map(|n| n.tap)),
                _ => continue,
            }
            report.applied.push(a.to_string());
        }
        if !released.is_empty() {
            self.release(released);
        }
        for a in actions {
            let result = match &a {
                Action::RemoveVlanDevice { .. } | Action::RemoveNic { .. } => continue,
                Action::RenameNic { eni_id, from, to, ipv4, ipv6 } => self.rename(eni_id, from, to, *ipv4, *ipv6),
                Action::CreateNic(spec) => self.create_nic(spec),
                Action::SetIpv4 { eni_id, name, ipv4 } => self.set_ipv4(eni_id, name, *ipv4),
                Action::SetIpv6 { eni_id, name, ipv6 } => self.set_ipv6(eni_id, name, *ipv6),
            };
            match result {
                Ok(()) => report.applied.push(a.to_string()),
                Err(e) => report.errors.push(format!("{a}: {e}")),
            }
        }
        self.publish();
        if let Some(mut r) = self.rebuild.take() {
            let nics_in_place = plan::desired_nics(&self.view)
                .iter()
                .all(|d| self.nics.get(&d.eni_id).is_some_and(|n| n.spec.name == d.name));
            if nics_in_place && !r.done() {
                report.errors.extend(r.pass(self));
            }
            self.rebuild = Some(r);
        }
        self.published.send_replace(self.config.clone().map(Arc::new));
        report
    }

    fn rename(
        &mut self,
        eni_id: &str,
        from: &str,
        to: &str,
        ipv4: Option<crate::view::Ipv4Setup>,
        ipv6: Option<crate::view::Ipv6Setup>,
    ) -> Result<(), DriverError> {
        let Some(dev) = self.nics.get_mut(eni_id) else { return Ok(()) };
        tap::rename(&self.netns_path, &dev.tap, from, to, ipv4, ipv6)?;
        dev.spec.name = to.to_string();
        dev.spec.ipv4 = ipv4;
        dev.spec.ipv6 = ipv6;
        Ok(())
    }

    fn create_nic(&mut self, spec: &NicSpec) -> Result<(), DriverError> {
        let setup =
            TapSetup { name: spec.name.clone(), mac: spec.mac, mtu: spec.mtu, ipv4: spec.ipv4, ipv6: spec.ipv6 };
        let tap = tap::create(&self.netns_path, &setup)?;
        tracing::info!(eni = %spec.eni_id, name = %spec.name, mac = %spec.mac, "NIC device created");
        self.nics.insert(spec.eni_id.clone(), NicDevice { spec: spec.clone(), tap: Arc::new(tap) });
        Ok(())
    }

    fn set_ipv4(&mut self, eni_id: &str, name: &str, ipv4: Option<crate::view::Ipv4Setup>) -> Result<(), DriverError> {
        let Some(dev) = self.nics.get_mut(eni_id) else { return Ok(()) };
        tap::ensure_ipv4(&self.netns_path, &dev.tap, name, dev.spec.ipv4, ipv4)?;
        dev.spec.ipv4 = ipv4;
        Ok(())
    }

    fn set_ipv6(&mut self, eni_id: &str, name: &str, ipv6: Option<crate::view::Ipv6Setup>) -> Result<(), DriverError> {
        let Some(dev) = self.nics.get_mut(eni_id) else { return Ok(()) };
        tap::ensure_ipv6(&self.netns_path, &dev.tap, name, dev.spec.ipv6, ipv6)?;
        dev.spec.ipv6 = ipv6;
        Ok(())
    }

    /// Publishes a table without `released` devices, then drops them: their fds close and the
    /// kernel removes the devices.
    fn release(&mut self, released: Vec<Arc<Tap>>) {
        self.publish();
        for tap in released {
            if Arc::strong_count(&tap) > 1 {
                tracing::warn!(ifindex = tap.ifindex(), "a removed device is still referenced; it goes when released");
            }
        }
    }

    /// Hands the node its kernel fast path: from the next publication on, the relay installs
    /// the fabric's grants in it.
    pub fn set_fast_path(&mut self, fast: Arc<FastPath>) {
        self.fast = Some(fast);
        self.publish();
    }

    pub fn fast_path(&self) -> Option<&Arc<FastPath>> {
        self.fast.as_ref()
    }

    /// Where the fabric's ports are in the node namespace's kernel, for the fast path. Devices
    /// in another namespace (a sub-interface made in a pod's) are left out: the fast path cannot
    /// deliver there, so their flows stay on the slow path.
    fn fast_devices(&self) -> Devices {
        let mut d = Devices::default();
        let here = netns::id_of(&self.netns_path).ok();
        for dev in self.nics.values() {
            let Some(nic) = self.view.nic(&dev.spec.eni_id) else { continue };
            let Some(vni) = nic.vni else { continue };
            if Some(dev.tap.netns()) != here {
                continue;
            }
            let ifindex = dev.tap.ifindex();
            d.attach.insert(dev.spec.name.clone(), ifindex);
            d.egress.insert((vni, 0), ifindex);
            d.ingress.insert((vni, 0), Delivery { ifindex, push: 0, egress: false });
            if nic.kind == NicKind::Trunk {
                // Untagged on the trunk device: frames leave it untagged (the relay tags them by
                // source) and arrive untagged (the relay's untagger).
                for m in &nic.members {
                    d.egress.insert((vni, m.vlan), ifindex);
                    d.ingress.insert((vni, m.vlan), Delivery { ifindex, push: 0, egress: false });
                }
            }
        }
        for v in self.vlans.values() {
            let Some(place) = self.view.member_place(&v.current.member_eni_id) else { continue };
            let Some(vni) = place.trunk_vni else { continue };
            match &v.veth {
                // The pod's frames meet the fast path at the node's end of its veth; carried
                // frames go out of it, into the pod.
                Some(veth) if Some(v.tap.netns()) == here => {
                    d.egress.insert((vni, place.vlan), veth.ifindex);
                    d.ingress.insert((vni, place.vlan), Delivery { ifindex: veth.ifindex, push: 0, egress: true });
                }
                _ => {
                    // A TAP in the pod's namespace: not reachable from here, and neither
                    // direction may use the trunk instead.
                    d.egress.remove(&(vni, place.vlan));
                    d.ingress.remove(&(vni, place.vlan));
                }
            }
        }
        d
    }

    /// The relay table for the current devices and view.
    fn table(&self) -> RelayTable {
        let mut t = RelayTable { fabric: self.fabric, ..RelayTable::default() };
        if let Some(fast) = &self.fast {
            let devices = self.fast_devices();
            if let Err(e) = fast.attach(&devices) {
                tracing::warn!(error = %e, "fast path: cannot attach to the node's devices; their flows stay on the slow path");
            }
            t.fast = Some((fast.clone(), Arc::new(devices)));
        }
        for dev in self.nics.values() {
            let Some(nic) = self.view.nic(&dev.spec.eni_id) else { continue };
            let device: DeviceFd = dev.tap.clone();
            let trunk = nic.kind == NicKind::Trunk;
            let rule =
                if trunk { SourceRule::Trunk(Arc::new(MemberTable::new(&nic.members))) } else { SourceRule::Plain };
            t.sources.push(Source { device: device.clone(), vni: nic.vni, rule });
            if let Some(vni) = nic.vni {
                let port = t.ports.entry(vni).or_default();
                port.device = Some(device);
                port.untag = trunk;
            }
        }
        for v in self.vlans.values() {
            let Some(place) = self.view.member_place(&v.current.member_eni_id) else { continue };
            let Some(tci) = Tci::from_vid(place.vlan) else { continue };
            let device: DeviceFd = v.tap.clone();
            t.sources.push(Source { device: device.clone(), vni: place.trunk_vni, rule: SourceRule::Tag(tci) });
            if let Some(vni) = place.trunk_vni {
                let port = t.ports.entry(vni).or_insert_with(|| Port { untag: true, ..Port::default() });
                port.untag = true;
                port.vlans.insert(place.vlan, device);
            }
        }
        t
    }

    fn publish(&self) {
        self.relay.publish(self.table());
    }

    /// `CreateVlanDevice`: a TAP in `req.netns_path` with the trunk's MAC that behaves like the
    /// VLAN sub-interface `<trunk>.<vlan>`. Idempotent: the same request again returns the same
    /// device; a different namespace, name or MTU for the same member replaces it.
    pub fn create_vlan_device(&mut self, req: &VlanRequest) -> Result<pb::CreateVlanDeviceResponse, NodeError> {
        let config = self.config.as_ref().ok_or(NodeError::NotRegistered)?;
        let Some(place) = self.view.member_place(&req.member_eni_id) else {
            let status = config
                .nics
                .iter()
                .flat_map(|n| &n.members)
                .find(|m| m.network_interface_id == req.member_eni_id)
                .map(|m| m.status.clone());
            return Err(match status {
                Some(status) => NodeError::MemberNotInUse { id: req.member_eni_id.clone(), status },
                None => NodeError::NotAMember(req.member_eni_id.clone()),
            });
        };
        let response = pb::CreateVlanDeviceResponse {
            if_name: req.if_name.clone(),
            mac_address: place.trunk_mac.to_string(),
            vlan_id: u32::from(place.vlan),
            trunk_network_interface_id: place.trunk_eni_id.clone(),
        };
        let netns = netns::id_of(&req.netns_path)?;
        let current = CurrentVlan {
            member_eni_id: req.member_eni_id.clone(),
            trunk_eni_id: place.trunk_eni_id.clone(),
            vlan: place.vlan,
        };
        if let Some(v) = self.vlans.get(&req.member_eni_id) {
            if v.netns == netns && v.if_name == req.if_name && v.mtu == req.mtu && v.current == current {
                return Ok(response);
            }
            if let Some(old) = self.vlans.remove(&req.member_eni_id) {
                self.remove_vlan(old);
            }
        }
        let patched = match self.fast.clone() {
            Some(fast) => match self.patched_vlan(&fast, req, place.trunk_mac, place.vlan) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, member = %req.member_eni_id, "fast path: a plain sub-interface instead");
                    None
                }
            },
            None => None,
        };
        let (tap, veth) = match patched {
            Some((tap, veth)) => (tap, Some(veth)),
            None => {
                let setup =
                    TapSetup { name: req.if_name.clone(), mac: place.trunk_mac, mtu: req.mtu, ipv4: None, ipv6: None };
                (tap::create(&req.netns_path, &setup)?, None)
            }
        };
        tracing::info!(
            member = %req.member_eni_id, vlan = place.vlan, name = %req.if_name,
            netns = %req.netns_path.display(), fast_path = veth.is_some(), "VLAN sub-interface device created"
        );
        self.vlans.insert(
            req.member_eni_id.clone(),
            VlanDevice { current, if_name: req.if_name.clone(), mtu: req.mtu, tap: Arc::new(tap), netns, veth },
        );
        self.publish();
        Ok(response)
    }

    /// A sub-interface the kernel fast path can reach: the pod's end of a veth pair (named and
    /// addressed as the sub-interface), the node's end `fpv<vlan>`, and a TAP `fpt<vlan>` in the
    /// node's namespace for the relay, the two wired by the fast path's programs. Any half-made
    /// part is removed on failure.
    fn patched_vlan(&self, fast: &FastPath, req: &VlanRequest, mac: Mac, vlan: u16) -> Result<(Tap, Veth), String> {
        let (node_end, tap_name) = (format!("fpv{vlan}"), format!("fpt{vlan}"));
        let setup = TapSetup { name: tap_name.clone(), mac, mtu: req.mtu, ipv4: None, ipv6: None };
        let tap = tap::create(&self.netns_path, &setup).map_err(|e| e.to_string())?;
        let veth = veth_pair(&self.netns_path, &node_end, &req.netns_path, &req.if_name, mac, req.mtu)?;
        if let Err(e) = fast.patch((&node_end, veth.ifindex), (&tap_name, tap.ifindex())) {
            fast.unpatch(veth.ifindex, tap.ifindex());
            delete_link(&self.netns_path, &node_end);
            return Err(e.to_string());
        }
        Ok((tap, veth))
    }

    /// Removes a sub-interface: its wiring, its veth pair, its TAP (with the relay's handle).
    fn remove_vlan(&mut self, v: VlanDevice) {
        self.unwire_vlan(&v);
        self.release(vec![v.tap]);
    }

    /// A sub-interface's fast-path wiring and veth pair (the pod's end goes with the node's).
    fn unwire_vlan(&self, v: &VlanDevice) {
        if let (Some(veth), Some(fast)) = (&v.veth, &self.fast) {
            fast.unpatch(veth.ifindex, v.tap.ifindex());
        }
        if let Some(veth) = &v.veth {
            delete_link(&self.netns_path, &veth.name);
        }
    }

    /// `DeleteVlanDevice`: idempotent; returns whether there was a device.
    pub fn delete_vlan_device(&mut self, member_eni_id: &str) -> bool {
        match self.vlans.remove(member_eni_id) {
            Some(v) => {
                tracing::info!(member = %member_eni_id, name = %v.if_name, "VLAN sub-interface device deleted");
                self.remove_vlan(v);
                true
            }
            None => false,
        }
    }

    /// Stops the relay and removes every device (their fds close).
    pub fn shutdown(&mut self) {
        self.relay.stop();
        if let Some(fast) = self.fast.take() {
            let [carried, slow, delivered, refused] = fast.counters();
            tracing::info!(carried, slow, delivered, refused, "fast path stopped");
        }
        let n = self.nics.len() + self.vlans.len();
        self.nics.clear();
        for v in std::mem::take(&mut self.vlans).into_values() {
            if let Some(veth) = &v.veth {
                delete_link(&self.netns_path, &veth.name);
            }
        }
        // The devices are gone: the namespace is free for the next shim.
        self.claim = None;
        tracing::info!(devices = n, stats = %self.relay.stats(), "node shut down, devices removed");
    }
}

/// `ip link add NODE_END type veth peer name POD_END address MAC netns POD` in the node's
/// namespace, both ends with `mtu`, IPv6 off and up; the node's end without ARP (the pod's
/// frames never meet the node's stack: the fast path's programs take them first). A leftover
/// of a shim that was killed is replaced.
fn veth_pair(node: &Path, node_end: &str, pod: &Path, pod_end: &str, mac: Mac, mtu: u32) -> Result<Veth, String> {
    let name = node_end.to_string();
    let (node_name, peer_name, pod_path) = (name.clone(), pod_end.to_string(), pod.display().to_string());
    let ifindex = netns::run_in(node, move || {
        let ip = |args: &[&str]| -> Result<(), DriverError> {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| DriverError::Thread(format!("running ip: {e}")))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(DriverError::Thread(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        };
        let _ = ip(&["link", "del", &node_name]);
        let (mtu, mac) = (mtu.to_string(), mac.to_string());
        ip(&[
            "link", "add", &node_name, "mtu", &mtu, "type", "veth", "peer", "name", &peer_name, "address", &mac, "mtu",
            &mtu, "netns", &pod_path,
        ])?;
        let configured = Netlink::open().and_then(|nl| nl.index_of(&node_name)).and_then(|i| {
            crate::driver::netlink::disable_ipv6(&node_name)?;
            ip(&["link", "set", &node_name, "arp", "off", "up"])?;
            Ok(i)
        });
        if configured.is_err() {
            let _ = ip(&["link", "del", &node_name]);
        }
        configured
    })
    .map_err(|e| e.to_string())?;
    // The pod's end, as a TAP sub-interface is made: IPv6 off before it is up.
    let peer_name = pod_end.to_string();
    let pod_end_up = netns::run_in(pod, move || {
        crate::driver::netlink::disable_ipv6(&peer_name)?;
        let nl = Netlink::open()?;
        let i = nl.index_of(&peer_name)?;
        nl.set_up(i, &peer_name, true)
    });
    if let Err(e) = pod_end_up {
        delete_link(node, &name);
        return Err(e.to_string());
    }
    Ok(Veth { name, ifindex })
}

/// `ip link del NAME` in the namespace (a veth takes its peer with it); gone already is fine.
fn delete_link(netns_path: &Path, name: &str) {
    let name = name.to_string();
    let _ = netns::run_in(netns_path, move || {
        let _ = std::process::Command::new("ip").args(["link", "del", &name]).output();
        Ok(())
    });
}
