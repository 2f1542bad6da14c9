//! The VPC's data plane as a running thing: the Geneve UDP socket, the I/O thread around the
//! pure pipeline (`enifab-dataplane`), the registry of node shims, and the `enifab.v1.Fabric`
//! gRPC service.
//!
//! Flow of configuration: after every commit that changed the model, a hook on the model thread
//! rebuilds the pipeline's snapshot from the region and the registered shims ([`view`]) and
//! swaps it into the I/O thread ([`io`]), so the change is in force before the API call that
//! made it is answered. A shim registering (or re-registering after an emulator restart) also
//! triggers a rebuild. Shim registrations are not persisted: shims re-register by themselves.

pub mod io;
pub mod service;
pub mod udp;
pub mod view;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use enifab_dataplane::{FabricConfig, StatsSnapshot};
use enifab_model::Region;
use tokio::sync::{oneshot, watch};

use crate::actor::CommitHook;
use io::IoRequest;

/// The running fabric. Cheap to share (`Arc`).
pub struct FabricShell {
    addr: SocketAddr,
    peers: Arc<Mutex<HashMap<String, SocketAddr>>>,
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
    peers: Arc<Mutex<HashMap<String, SocketAddr>>>,
    config: Arc<watch::Sender<Arc<FabricConfig>>>,
    epoch: Arc<AtomicU64>,
}

impl Publisher {
    fn publish(&self, region: &Region) {
        let peers = self.peers.lock().expect("peer registry lock").clone();
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        self.config.send_replace(Arc::new(view::fabric_config(region, &peers, epoch)));
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
        let peers = Arc::new(Mutex::new(HashMap::new()));
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
        self.peers.lock().expect("peer registry lock").insert(instance_id.to_string(), geneve);
    }

    /// The pipeline's counters, as of now.
    pub async fn stats(&self) -> Option<StatsSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.requests.lock().ok()?.send(IoRequest::Stats(tx)).ok()?;
        rx.await.ok()
    }
}
