//! The VPC's data plane as a running thing: the Geneve UDP socket, the I/O thread around the
//! pure pipeline (`enifab-dataplane`), the registry of node shims, and the `enifab.v1.Fabric`
//! gRPC service.
//!
//! Flow of configuration: after every commit that changed the model, a hook on the model thread
//! rebuilds the pipeline's snapshot from the region and the registered shims ([`view`]) and
//! swaps it into the I/O thread ([`io`]), so the change is in force before the API call that
//! made it is answered. A shim registering (or re-registering after an emulator restart) also
//! triggers a rebuild. Shim registrations are not persisted: shims re-register by themselves.
//!
//! The internet side: a shim may plug a namespace in as an *external host* (a client on the
//! internet, with a public address and no VPC) instead of an instance. Its registration lives
//! here with the nodes'; its port takes a VNI from a range the model never hands out.
//! The I/O thread also runs the load balancers' health checks, and answers for their state.
//! Packet captures ([`capture`]) are registered with it; while one lasts its ports are marked
//! in the snapshot, so that their flows stay off the nodes' kernel fast paths.
//!
//! Addresses, both ways. Shims are told where the fabric is ([`FabricShell::address_for`]): the
//! `--fabric-advertise` address if one is set, else the bound address, else (a wildcard bind) the
//! address of this host that routes to that shim, which is also the source the kernel gives the
//! fabric's datagrams to it, so the shim's check of the sender (it takes frames only from the
//! fabric's address) holds for shims on loopback and on other hosts alike. A shim's own address
//! must be one a shim can have ([`FabricShell::check_shim_address`]): unicast, a real port, not
//! the fabric's own, of the fabric socket's family, and on loopback when the fabric listens on
//! loopback (nothing else can reach it, so anything else is a mistake or an attempt to send
//! the node's frames elsewhere). Who may register which instance is decided before this
//! (`grpc::auth`); this module takes the address it is given.

pub mod capture;
pub mod flowlog;
pub mod io;
pub mod service;
pub mod udp;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use enifab_dataplane::{BackendHealth, ExternalHostConfig, FabricConfig, StatsSnapshot, Vni};
use enifab_model::{Cidr, Mac, ModelError, Region};
use enifab_udp::AdvertiseError;
use tokio::sync::{oneshot, watch};

use crate::actor::CommitHook;
use io::IoRequest;

/// External hosts' ports: the top of the VNI space, above every port the model hands out.
pub const EXTERNAL_VNI_BASE: u32 = enifab_model::ids::MAX_PORT + 1;

/// Who is plugged in: instances' shims by instance ID, external hosts by name.
#[derive(Debug, Default)]
struct Registry {
    nodes: HashMap<String, SocketAddr>,
    /// Nodes with a kernel fast path: the address their VXLAN device is reached at.
    fast_paths: HashMap<String, Ipv4Addr>,
    external: BTreeMap<String, ExternalHostConfig>,
    /// Ports being captured, with how many captures watch each: the snapshot keeps their flows
    /// off the fast paths.
    captured: HashMap<u32, usize>,
}

/// The running fabric. Cheap to share (`Arc`).
pub struct FabricShell {
    /// What the socket is bound to (the port resolved).
    bound: SocketAddr,
    /// `--fabric-advertise`.
    advertise: Option<SocketAddr>,
    peers: Arc<Mutex<Registry>>,
    publisher: Publisher,
    requests: Mutex<std::sync::mpsc::Sender<IoRequest>>,
    /// `--fast-path=off`: fast-path addresses are not recorded, so nothing is ever granted.
    fast_path: bool,
    /// Becomes true when the server stops: node watches end, so a graceful shutdown is not held
    /// up by streams that would otherwise last forever.
    closing: watch::Sender<bool>,
    /// WatchNode streams open now (for `/metrics`).
    watches: Arc<std::sync::atomic::AtomicUsize>,
    /// Flow logs written by the I/O thread.
    pub flow_logs: Arc<flowlog::FlowLogStore>,
}

/// Who is plugged in, counted (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    /// Instances with a registered shim.
    pub nodes: usize,
    /// Registered hosts of the internet side.
    pub external_hosts: usize,
    /// Nodes whose kernel carries admitted flows.
    pub fast_path_nodes: usize,
    /// WatchNode streams open.
    pub watch_streams: usize,
}

/// Counts one open WatchNode stream for as long as it lives.
pub(crate) struct WatchGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for FabricShell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FabricShell").field("bound", &self.bound).field("advertise", &self.advertise).finish()
    }
}

/// Builds snapshots and hands them to the I/O thread.
#[derive(Clone)]
struct Publisher {
    peers: Arc<Mutex<Registry>>,
    config: Arc<watch::Sender<Arc<FabricConfig>>>,
    /// Snapshot epochs: a random high half per emulator run, so that a node's fast path can
    /// never take an epoch of the previous run for the current one; a count below it.
    epoch: Arc<AtomicU64>,
    /// Which epoch every fast-path node has acknowledged.
    acks: Arc<io::Acks>,
    /// Wakes the I/O thread out of its receive, so a new snapshot is taken (and revoked on the
    /// nodes) at once rather than at the next poll.
    waker: Arc<Waker>,
}

/// An empty datagram to the fabric socket: the I/O thread skips it.
struct Waker {
    sock: UdpSocket,
    to: SocketAddr,
}

impl Waker {
    fn wake(&self) {
        let _ = self.sock.send_to(&[], self.to);
    }
}

impl Publisher {
    /// Builds the snapshot for `region` and puts it in force. With nodes that have a kernel fast
    /// path, returns only when each has acknowledged the new epoch (or [`io::ACK_TIMEOUT`]
    /// passed): from then on, no node's kernel carries a flow on a verdict of the old snapshot,
    /// so an API call that changed a group, an attachment or a listener answers after its
    /// change is in force on every node too.
    fn publish(&self, region: &Region) {
        self.publish_with(region, true);
    }

    /// [`Publisher::publish`] for a shim's registration: not waiting for acknowledgements, since
    /// the registering shim cannot acknowledge before it learns, from this very call's answer,
    /// where the fabric is (the revocation is resent until it does). Nothing is lost: a shim
    /// registering starts with an empty fast path that refuses everything until its first
    /// revocation, and the others' entries toward it are revoked within a resend.
    fn publish_registration(&self, region: &Region) {
        self.publish_with(region, false);
    }

    fn publish_with(&self, region: &Region, wait_for_nodes: bool) {
        let (nodes, fast_paths, external, captured) = {
            let r = self.peers.lock().expect("peer registry lock");
            let captured: Vec<Vni> = r.captured.keys().filter_map(|v| Vni::new(*v)).collect();
            (r.nodes.clone(), r.fast_paths.clone(), r.external.values().cloned().collect::<Vec<_>>(), captured)
        };
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let mut config = view::fabric_config(region, &nodes, &fast_paths, &external, epoch);
        config.set_captured(captured);
        let revoke = !config.fast_path_peers().is_empty();
        self.config.send_replace(Arc::new(config));
        if revoke {
            self.waker.wake();
            if wait_for_nodes {
                // A little past the I/O thread's own deadline, which decides (and marks a late
                // node silent) first.
                self.acks.wait(epoch, io::ACK_TIMEOUT + Duration::from_millis(200));
            }
        }
    }
}

/// A random 32-bit number for the epoch's high half (not a secret: it only has to differ from
/// the previous run's).
fn run_id() -> u64 {
    use std::hash::BuildHasher;
    std::hash::RandomState::new().hash_one(std::time::SystemTime::now()) & 0xffff_ffff
}

impl FabricShell {
    /// Bind the Geneve socket and start the I/O thread; shims are told `advertise` when given
    /// (see [`FabricShell::address_for`]). The returned hook must be given to the model thread so
    /// that commits reach the data plane.
    pub fn start(listen: SocketAddr, advertise: Option<SocketAddr>) -> Result<(Arc<FabricShell>, CommitHook)> {
        Self::start_with(listen, advertise, true, flowlog::FlowLogSettings::default())
    }

    /// [`FabricShell::start`]; `fast_path = false` (`enifab serve --fast-path=off`) keeps every
    /// frame on the slow path whatever the shims offer.
    pub fn start_with(
        listen: SocketAddr,
        advertise: Option<SocketAddr>,
        fast_path: bool,
        flow_logs: flowlog::FlowLogSettings,
    ) -> Result<(Arc<FabricShell>, CommitHook)> {
        if let Some(a) = advertise {
            check_advertise(listen, a)?;
        }
        let sock = UdpSocket::bind(listen).with_context(|| format!("binding the fabric socket {listen}"))?;
        let bound = sock.local_addr()?;
        let waker = {
            let to = enifab_udp::reachable(bound);
            let sock = UdpSocket::bind(SocketAddr::new(to.ip(), 0)).context("binding the fabric's waker")?;
            Arc::new(Waker { sock, to })
        };
        let (config_tx, config_rx) = watch::channel(Arc::new(FabricConfig::empty(0)));
        let (req_tx, req_rx) = std::sync::mpsc::channel();
        let acks = Arc::new(io::Acks::default());
        let logs = Arc::new(flowlog::FlowLogStore::default());
        io::spawn(sock, config_rx, req_rx, acks.clone(), waker.sock.local_addr()?, flow_logs, logs.clone())
            .context("starting the fabric thread")?;
        let peers = Arc::new(Mutex::new(Registry::default()));
        let publisher = Publisher {
            peers: peers.clone(),
            config: Arc::new(config_tx),
            epoch: Arc::new(AtomicU64::new(run_id() << 32)),
            acks,
            waker,
        };
        let hook_pub = publisher.clone();
        let hook: CommitHook = Box::new(move |region: &Region| hook_pub.publish(region));
        let shell = FabricShell {
            bound,
            advertise,
            peers,
            publisher,
            requests: Mutex::new(req_tx),
            fast_path,
            closing: watch::Sender::new(false),
            watches: Arc::default(),
            flow_logs: logs,
        };
        Ok((Arc::new(shell), hook))
    }

    /// End every WatchNode stream (the server is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Count a WatchNode stream until the guard drops.
    pub(crate) fn watching(&self) -> WatchGuard {
        self.watches.fetch_add(1, Ordering::Relaxed);
        WatchGuard(self.watches.clone())
    }

    /// The shims and streams plugged in now.
    pub fn sessions(&self) -> Sessions {
        let r = self.peers.lock().expect("peer registry lock");
        Sessions {
            nodes: r.nodes.len(),
            external_hosts: r.external.len(),
            fast_path_nodes: r.fast_paths.len(),
            watch_streams: self.watches.load(Ordering::Relaxed),
        }
    }

    /// The address the Geneve socket is bound to.
    pub fn bound(&self) -> SocketAddr {
        self.bound
    }

    /// The one address every shim is told, if there is one: `--fabric-advertise`, or a bound
    /// address that is not a wildcard.
    pub fn advertised(&self) -> Option<SocketAddr> {
        self.advertise.or_else(|| (!self.bound.ip().is_unspecified()).then_some(self.bound))
    }

    /// Where shims send their frames, when nothing is known about the shim: the advertised
    /// address, or (a wildcard bind) loopback.
    pub fn addr(&self) -> SocketAddr {
        self.advertised().unwrap_or_else(|| enifab_udp::reachable(self.bound))
    }

    /// The fabric's address for a shim at `shim`: the advertised address, or (a wildcard bind)
    /// the address of this host that routes to the shim, which is where the kernel sends the
    /// fabric's datagrams to it from; loopback when there is no route (or no shim yet).
    pub fn address_for(&self, shim: Option<SocketAddr>) -> SocketAddr {
        if let Some(a) = self.advertised() {
            return a;
        }
        match shim.and_then(|s| enifab_udp::route_source(s.ip())) {
            Some(ip) => SocketAddr::new(ip, self.bound.port()),
            None => self.addr(),
        }
    }

    /// [`FabricShell::address_for`] the shim registered for `instance_id` (or an external host
    /// of that name).
    pub fn address_for_node(&self, instance_id: &str) -> SocketAddr {
        let shim = {
            let r = self.peers.lock().expect("peer registry lock");
            r.nodes.get(instance_id).copied().or_else(|| r.external.get(instance_id).map(|h| h.peer))
        };
        self.address_for(shim)
    }

    /// Whether a shim can be at `geneve` (see the module docs).
    pub fn check_shim_address(&self, geneve: SocketAddr) -> Result<(), ModelError> {
        let bad = |why: String| Err(ModelError::invalid("GeneveAddress", why));
        if let Some(why) = enifab_udp::not_unicast(geneve) {
            return bad(format!("{geneve} is {why}, not a shim's socket"));
        }
        if self.bound.is_ipv4() && geneve.is_ipv6() {
            return bad(format!("the fabric socket {} is IPv4 and cannot reach {geneve}", self.bound));
        }
        if self.bound.ip().is_loopback() && !geneve.ip().is_loopback() {
            return bad(format!(
                "the fabric listens on loopback ({}): a shim at {geneve} could not reach it (is the address one the \
                 shim has? see --geneve-advertise; listen elsewhere with --fabric-listen)",
                self.bound
            ));
        }
        if geneve == self.bound || Some(geneve) == self.advertise || geneve == self.addr() {
            return bad(format!("{geneve} is the fabric's own socket"));
        }
        Ok(())
    }

    /// Record (or move) the shim of an instance; the caller has checked who asks and the address
    /// ([`FabricShell::check_shim_address`]), and republishes through the model.
    /// `fast_path` is the address of the node's VXLAN device when it has a kernel fast path
    /// (recorded only while the fabric allows fast paths).
    fn register(&self, instance_id: &str, geneve: SocketAddr, fast_path: Option<Ipv4Addr>) {
        let mut r = self.peers.lock().expect("peer registry lock");
        r.nodes.insert(instance_id.to_string(), geneve);
        match fast_path.filter(|_| self.fast_path) {
            Some(a) => r.fast_paths.insert(instance_id.to_string(), a),
            None => r.fast_paths.remove(instance_id),
        };
    }

    /// Whether the fabric grants flows to nodes' fast paths (`--fast-path`).
    pub fn fast_path_enabled(&self) -> bool {
        self.fast_path
    }

    /// Record (or move) an external host: `address` is its public address with the prefix of the
    /// segment it believes it is on (`47.100.1.10/24`). Public addresses only, outside the
    /// region's public pool (those are the load balancers'), and one host per address. A host
    /// that registers again keeps its port. The caller republishes through the model.
    fn register_external(
        &self,
        name: &str,
        address: &str,
        geneve: SocketAddr,
        public_pool: Cidr,
    ) -> Result<ExternalHostConfig, ModelError> {
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(ModelError::invalid("Name", "1 to 64 letters, digits, '.', '_' or '-'"));
        }
        let (ip, prefix) = address
            .split_once('/')
            .and_then(|(a, p)| Some((a.parse::<Ipv4Addr>().ok()?, p.parse::<u8>().ok()?)))
            .filter(|(_, p)| (8..=30).contains(p))
            .ok_or_else(|| {
                ModelError::invalid("Address", "an IPv4 address with its prefix, /8 to /30: 47.100.1.10/24")
            })?;
        let segment = Cidr::containing(ip, prefix).expect("prefix checked");
        let shared = Cidr::containing(Ipv4Addr::new(100, 64, 0, 0), 10).expect("constant");
        if ip.is_private()
            || ip.is_loopback()
            || ip.is_link_local()
            || ip.is_multicast()
            || ip.is_broadcast()
            || ip.is_unspecified()
            || shared.contains(ip)
        {
            return Err(ModelError::invalid("Address", "an internet host needs a public address"));
        }
        if public_pool.contains(ip) {
            return Err(ModelError::invalid("Address", format!("{ip} is in the load balancers' pool {public_pool}")));
        }
        if segment.gateway() == Some(ip) {
            return Err(ModelError::invalid("Address", format!("{ip} is its segment's gateway")));
        }
        let mut r = self.peers.lock().expect("peer registry lock");
        if let Some((other, _)) = r.external.iter().find(|(n, h)| h.ip == ip && n.as_str() != name) {
            return Err(ModelError::invalid("Address", format!("{ip} is already host {other}'s")));
        }
        let vni = match r.external.get(name) {
            Some(h) => h.vni,
            None => {
                let used: std::collections::HashSet<u32> = r.external.values().map(|h| h.vni.get()).collect();
                let n = (EXTERNAL_VNI_BASE..=Vni::MAX).find(|v| !used.contains(v)).ok_or(ModelError::InternalError)?;
                Vni::new(n).expect("in range")
            }
        };
        let [a, b, c, d] = ip.octets();
        // A locally administered MAC, derived from the address so that it survives restarts.
        let host = ExternalHostConfig {
            id: name.to_string(),
            vni,
            mac: Mac([0x02, 0x00, a, b, c, d]),
            peer: geneve,
            ip,
            segment,
        };
        r.external.insert(name.to_string(), host.clone());
        Ok(host)
    }

    /// A registered external host.
    fn external(&self, name: &str) -> Option<ExternalHostConfig> {
        self.peers.lock().expect("peer registry lock").external.get(name).cloned()
    }

    /// The load balancers' backends as their health checks see them, as of now.
    pub async fn health(&self) -> Option<Vec<BackendHealth>> {
        let (tx, rx) = oneshot::channel();
        self.requests.lock().ok()?.send(IoRequest::Health(tx)).ok()?;
        rx.await.ok()
    }

    /// The newest snapshot epoch handed out: a revocation sent after this call is of a later
    /// one.
    pub(crate) fn epoch(&self) -> u64 {
        self.publisher.epoch.load(Ordering::Relaxed)
    }

    /// The fast-path nodes that let a revocation time out, as that changes ([`io::Late`]).
    pub(crate) fn late(&self) -> watch::Receiver<io::Late> {
        self.publisher.acks.late()
    }

    /// The epoch of a revocation newer than `since` that the node now registered for
    /// `instance_id` let time out, if it did ([`io::Late`]).
    pub(crate) fn overdue(&self, instance_id: &str, since: u64, late: &io::Late) -> Option<u64> {
        let at = *self.peers.lock().expect("peer registry lock").nodes.get(instance_id)?;
        late.get(&at).copied().filter(|epoch| *epoch > since)
    }

    /// Whether the shim of `instance_id` is registered (its ports carry frames).
    pub fn is_registered(&self, instance_id: &str) -> bool {
        self.peers.lock().expect("peer registry lock").nodes.contains_key(instance_id)
    }

    /// Starts capturing `ports` (narrowed to `vlan`): returns once the I/O thread copies their
    /// frames. The caller republishes so that the ports' flows leave the fast paths, and calls
    /// [`FabricShell::end_capture`] when it is done (dropping the handle's receiver ends the
    /// copying).
    pub async fn start_capture(&self, ports: Vec<u32>, vlan: Option<u16>, outer: bool) -> Option<CaptureHandle> {
        let (tx, frames) = tokio::sync::mpsc::channel(CAPTURE_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        let tap = capture::Tap { ports: sorted, vlan, outer, tx, dropped: dropped.clone() };
        let (ready, ready_rx) = oneshot::channel();
        self.requests.lock().ok()?.send(IoRequest::Capture(tap, ready)).ok()?;
        self.publisher.waker.wake();
        ready_rx.await.ok()?;
        let mut r = self.peers.lock().expect("peer registry lock");
        for p in &ports {
            *r.captured.entry(*p).or_default() += 1;
        }
        Some(CaptureHandle { frames, dropped, ports })
    }

    /// The capture of `handle` is over: its ports go back on the fast paths once no other
    /// capture watches them (the caller republishes).
    pub fn end_capture(&self, handle: CaptureHandle) {
        let CaptureHandle { frames, ports, .. } = handle;
        drop(frames);
        self.publisher.waker.wake();
        let mut r = self.peers.lock().expect("peer registry lock");
        for p in &ports {
            if let Some(n) = r.captured.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    r.captured.remove(p);
                }
            }
        }
    }

    /// The pipeline's counters, as of now.
    pub async fn stats(&self) -> Option<StatsSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.requests.lock().ok()?.send(IoRequest::Stats(tx)).ok()?;
        rx.await.ok()
    }

    /// What the pipeline would do with `probe` now (`None`: the I/O thread has stopped).
    pub async fn explain(
        &self,
        probe: enifab_dataplane::explain::Probe,
    ) -> Option<Result<enifab_dataplane::explain::Explained, enifab_dataplane::explain::ProbeError>> {
        let (tx, rx) = oneshot::channel();
        self.requests.lock().ok()?.send(IoRequest::Explain(probe, tx)).ok()?;
        // Wake the thread out of its receive: a trace should not wait for the next poll.
        self.publisher.waker.wake();
        rx.await.ok()
    }
}

/// How many captured frames wait for a slow reader before the next ones are dropped.
pub const CAPTURE_QUEUE: usize = 4096;

/// A capture in force (see [`FabricShell::start_capture`]).
#[derive(Debug)]
pub struct CaptureHandle {
    pub frames: tokio::sync::mpsc::Receiver<capture::Frame>,
    /// Frames lost to a full queue, so far.
    pub dropped: Arc<AtomicU64>,
    ports: Vec<u32>,
}

/// `--fabric-advertise` must be an address shims can send to that reaches the socket.
fn check_advertise(listen: SocketAddr, advertise: SocketAddr) -> Result<()> {
    match enifab_udp::check_advertise(listen, advertise) {
        Ok(()) => Ok(()),
        Err(AdvertiseError::NotUnicast(why)) => {
            anyhow::bail!("--fabric-advertise {advertise} is {why}: shims need an address they can send to")
        }
        Err(AdvertiseError::BoundToLoopback) => anyhow::bail!(
            "--fabric-advertise {advertise}: the fabric listens on loopback ({listen}), which no other host reaches; \
             listen on that address or on 0.0.0.0 (--fabric-listen)"
        ),
        Err(AdvertiseError::NotOnLoopback) => {
            anyhow::bail!("--fabric-advertise {advertise}: the fabric listens on {listen} only, not on loopback")
        }
    }
}

/// `DescribeHealthStatus` asks the data plane's checker.
#[tonic::async_trait]
impl crate::grpc::slb::HealthSource for FabricShell {
    async fn backend_health(&self) -> Vec<crate::grpc::slb::BackendHealthRow> {
        self.health()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|b| crate::grpc::slb::BackendHealthRow {
                lb_id: b.lb_id,
                protocol: b.protocol.to_string(),
                listener_port: b.listener_port,
                server_ip: b.ip,
                port: b.port,
                status: b.status.as_str().to_string(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(listen: &str, advertise: Option<&str>) -> Arc<FabricShell> {
        FabricShell::start(listen.parse().unwrap(), advertise.map(|a| a.parse().unwrap())).unwrap().0
    }

    #[test]
    fn a_shim_address_must_be_one_a_shim_can_have() {
        let s = shell("127.0.0.1:0", None);
        let code = |a: &str| s.check_shim_address(a.parse().unwrap()).map_err(|e| e.to_string());
        assert_eq!(code("127.0.0.1:40000"), Ok(()));
        assert_eq!(code("127.0.0.2:40000"), Ok(()));
        for bad in
            ["8.8.8.8:6081", "0.0.0.0:6081", "127.0.0.1:0", "224.0.0.1:6081", "255.255.255.255:6081", "[::1]:6081"]
        {
            assert!(code(bad).is_err(), "{bad}");
        }
        assert!(code(&s.bound().to_string()).unwrap_err().contains("fabric's own"));

        let wild = shell("0.0.0.0:0", None);
        assert_eq!(wild.check_shim_address("8.8.8.8:6081".parse().unwrap()), Ok(()), "a shim on another host");
        assert!(wild.check_shim_address("0.0.0.0:6081".parse().unwrap()).is_err());
    }

    #[test]
    fn shims_are_told_the_address_that_reaches_them() {
        let wild = shell("0.0.0.0:0", None);
        let port = wild.bound().port();
        assert_eq!(wild.advertised(), None);
        assert_eq!(wild.addr(), SocketAddr::from(([127, 0, 0, 1], port)), "nothing known: loopback");
        let local: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        assert_eq!(wild.address_for(Some(local)), SocketAddr::from(([127, 0, 0, 1], port)));
        let fixed = shell("0.0.0.0:0", Some("192.0.2.7:16081"));
        assert_eq!(fixed.address_for(Some(local)), "192.0.2.7:16081".parse().unwrap());
        let lo = shell("127.0.0.1:0", None);
        assert_eq!(lo.address_for(Some(local)), lo.bound());
    }

    #[test]
    fn the_fabric_words_a_bad_advertised_address_with_its_flags() {
        let err = |listen: &str, adv: &str| check_advertise(listen.parse().unwrap(), adv.parse().unwrap());
        assert!(err("0.0.0.0:6081", "10.0.0.5:6081").is_ok());
        let e = err("127.0.0.1:6081", "10.0.0.5:6081").unwrap_err().to_string();
        assert!(e.contains("--fabric-listen"), "{e}");
        let e = err("0.0.0.0:6081", "0.0.0.0:6081").unwrap_err().to_string();
        assert!(e.starts_with("--fabric-advertise 0.0.0.0:6081 is an unspecified address"), "{e}");
    }
}
