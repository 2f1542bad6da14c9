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

pub mod io;
pub mod service;
pub mod udp;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use enifab_dataplane::{BackendHealth, ExternalHostConfig, FabricConfig, Ipv4Cidr, StatsSnapshot, Vni};
use enifab_model::{Cidr, ModelError, Region};
use tokio::sync::{oneshot, watch};

use crate::actor::CommitHook;
use io::IoRequest;

/// External hosts' ports: the top of the VNI space, above every port the model hands out.
pub const EXTERNAL_VNI_BASE: u32 = enifab_model::ids::MAX_PORT + 1;

/// Who is plugged in: instances' shims by instance ID, external hosts by name.
#[derive(Debug, Default)]
struct Registry {
    nodes: HashMap<String, SocketAddr>,
    external: BTreeMap<String, ExternalHostConfig>,
}

/// The running fabric. Cheap to share (`Arc`).
pub struct FabricShell {
    addr: SocketAddr,
    peers: Arc<Mutex<Registry>>,
    publisher: Publisher,
    requests: Mutex<std::sync::mpsc::Sender<IoRequest>>,
    /// Becomes true when the server stops: node watches end, so a graceful shutdown is not held
    /// up by streams that would otherwise last forever.
    closing: watch::Sender<bool>,
}

impl std::fmt::Debug for FabricShell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FabricShell").field("addr", &self.addr).finish()
    }
}

/// Builds snapshots and hands them to the I/O thread.
#[derive(Clone)]
struct Publisher {
    peers: Arc<Mutex<Registry>>,
    config: Arc<watch::Sender<Arc<FabricConfig>>>,
    epoch: Arc<AtomicU64>,
}

impl Publisher {
    fn publish(&self, region: &Region) {
        let (nodes, external) = {
            let r = self.peers.lock().expect("peer registry lock");
            (r.nodes.clone(), r.external.values().cloned().collect::<Vec<_>>())
        };
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        self.config.send_replace(Arc::new(view::fabric_config(region, &nodes, &external, epoch)));
    }
}

impl FabricShell {
    /// Bind the Geneve socket and start the I/O thread. The returned hook must be given to the
    /// model thread so that commits reach the data plane.
    pub fn start(listen: SocketAddr) -> Result<(Arc<FabricShell>, CommitHook)> {
        let sock = UdpSocket::bind(listen).with_context(|| format!("binding the fabric socket {listen}"))?;
        // Shims need an address to send to; on a wildcard bind, loopback surely reaches us.
        let addr = enifab_udp::reachable(sock.local_addr()?);
        let (config_tx, config_rx) = watch::channel(Arc::new(FabricConfig::empty(0)));
        let (req_tx, req_rx) = std::sync::mpsc::channel();
        io::spawn(sock, config_rx, req_rx).context("starting the fabric thread")?;
        let peers = Arc::new(Mutex::new(Registry::default()));
        let publisher =
            Publisher { peers: peers.clone(), config: Arc::new(config_tx), epoch: Arc::new(AtomicU64::new(0)) };
        let hook_pub = publisher.clone();
        let hook: CommitHook = Box::new(move |region: &Region| hook_pub.publish(region));
        let shell =
            FabricShell { addr, peers, publisher, requests: Mutex::new(req_tx), closing: watch::Sender::new(false) };
        Ok((Arc::new(shell), hook))
    }

    /// End every WatchNode stream (the server is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Where shims send their frames.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Record (or move) the shim of an instance. The caller republishes through the model.
    fn register(&self, instance_id: &str, geneve: SocketAddr) {
        self.peers.lock().expect("peer registry lock").nodes.insert(instance_id.to_string(), geneve);
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
        let segment = Ipv4Cidr::new(ip, prefix).expect("prefix checked");
        let shared = Ipv4Cidr::new(Ipv4Addr::new(100, 64, 0, 0), 10).expect("constant");
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
        let host =
            ExternalHostConfig { id: name.to_string(), vni, mac: [0x02, 0x00, a, b, c, d], peer: geneve, ip, segment };
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

    /// The pipeline's counters, as of now.
    pub async fn stats(&self) -> Option<StatsSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.requests.lock().ok()?.send(IoRequest::Stats(tx)).ok()?;
        rx.await.ok()
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
