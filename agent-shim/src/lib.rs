//! `enifab-shim`: makes a network namespace look like one ECS instance of the emulated VPC.
//!
//! For the instance it is given, the shim creates a TAP device inside the node's namespace for
//! every `InUse` NIC (`eth0` for the primary ENI with its address and default route, as DHCP
//! does on ECS; `eth<DeviceIndex>` for the others, the trunk ENI among them), relays their frames
//! to the emulator as Geneve over UDP, and emulates 802.1Q in userspace on the trunk, because
//! the kernels it targets have no VLAN devices or `act_vlan` (ARCHITECTURE.md §2, §3.5). For the
//! CNI it exposes members as VLAN sub-interface devices over a local gRPC API.
//!
//! ```text
//!  node netns:  eth0  eth1(trunk)      pod netns: eth0 (sub-interface of member m, VLAN m)
//!                 │     │  ▲ untagged                  │
//!  ───────────────┼─────┼──┼───────────────────────────┼─── TAP fds, host namespace ───────
//!  enifab-shim:  relay: push tag by source IP / per device; pop tag, route by VLAN
//!                 │ Geneve/UDP, VNI = the NIC's fabric port, virtio-net header in an option
//!                 ▼
//!  enifab serve (fabric_address)   ◀── gRPC: RegisterNode, WatchNode (NodeConfig stream)
//! ```
//!
//! # Layout
//! - [`view`] (pure): NodeConfig → typed [`view::NodeView`].
//! - [`plan`] (pure): view + current devices → ordered [`plan::Action`]s.
//! - [`vlan`] (pure): Terway's egress classifier (member source IP → tag).
//! - [`relay`]: the two data-plane threads; [`relay::frame`] (pure) is what they do per frame.
//! - [`node`]: the state and the reconcile that applies plans and feeds the relay.
//! - [`rebuild`]: a restarted shim's pods, wired again from the CNI's state files.
//! - [`underlay`]: inside a container, the container's own `eth0` moved aside (plan is pure).
//! - [`control`]: the gRPC session with the emulator, with reconnects.
//! - [`service`]: the `enifab.v1.Shim` API on a Unix socket.
//! - [`metadata`]: the instance metadata service at 100.100.100.200 inside the node namespace
//!   ([`metadata::routes`] is pure).
//! - [`driver`], `sys`: every syscall (netns, TAP, netlink, sysctl, mmsg); the only `unsafe`
//!   is in `sys`.

pub mod cni;
pub mod control;
pub mod driver;
pub mod fastpath;
pub mod metadata;
pub mod node;
pub mod plan;
pub mod rebuild;
pub mod relay;
pub mod service;
mod sys;
pub mod underlay;
pub mod view;
pub mod vlan;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use node::{DeviceInfo, Node, NodeError};
pub use relay::{Relay, StatsSnapshot};

/// Where the Geneve socket binds by default: loopback, any port.
pub const DEFAULT_GENEVE_LISTEN: &str = "127.0.0.1:0";

/// What `enifab-shim` is started with.
#[derive(Debug, Clone)]
pub struct ShimOptions {
    /// The emulator's gRPC address (`127.0.0.1:50051` or a URL).
    pub endpoint: String,
    pub instance_id: String,
    /// The node's network namespace: a name under `/run/netns` or a path.
    pub netns: String,
    /// The Shim API's Unix socket; default `/run/enifab/shim-<instance-id>.sock`.
    pub control_socket: Option<PathBuf>,
    pub geneve_listen: SocketAddr,
    /// The instance metadata service inside the node namespace; `None` leaves it off.
    pub metadata: Option<metadata::MetadataOptions>,
    /// Plug the namespace in as a host of the internet side instead of an instance: its public
    /// address with its segment's prefix (`47.100.1.10/24`); `instance_id` is then the host's
    /// name. Such a host is no ECS instance and has no metadata service.
    pub external_address: Option<String>,
    /// `--underlay`: move the namespace's own `eth0` (a container's) aside under this name
    /// before making the primary ENI's (see [`underlay`]).
    pub underlay: Option<String>,
    /// The CNI's state directory: the pods recorded there are rebuilt once the NICs are back
    /// (see [`rebuild`]); `None` rebuilds nothing.
    pub cni_state_dir: Option<PathBuf>,
    /// Run the kernel fast path on this underlay device (`--fast-path`, see [`fastpath`]);
    /// `None`: relay every frame.
    pub fast_path: Option<fastpath::FastPathOptions>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The Geneve UDP socket could not be bound.
    #[error("cannot bind the Geneve socket {addr}: {source}")]
    Geneve { addr: SocketAddr, source: std::io::Error },
    /// The relay threads could not start.
    #[error("cannot start the relay: {0}")]
    Relay(std::io::Error),
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The Unix socket of the Shim API could not be bound.
    #[error("cannot bind the control socket {path}: {source}")]
    ControlSocket { path: PathBuf, source: std::io::Error },
    /// The instance metadata service could not start in the node's namespace.
    #[error(transparent)]
    Metadata(#[from] metadata::MetadataError),
    /// `--geneve-advertise` cannot reach the Geneve socket.
    #[error("{0}")]
    GeneveAdvertise(String),
}

/// A running shim: relay threads, the control session, the Shim API. Must be started inside a
/// tokio runtime.
#[derive(Debug)]
pub struct Shim {
    node: Arc<Mutex<Node>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    socket_path: PathBuf,
    geneve: SocketAddr,
    metadata: Option<metadata::MetadataServer>,
}

impl Shim {
    /// A shim without credentials, registering its Geneve socket's address.
    pub fn start(opts: ShimOptions) -> Result<Shim, ShimError> {
        Shim::start_with(opts, control::ControlOptions::default())
    }

    /// [`Shim::start`] with credentials and the address to register (see [`control`]).
    pub fn start_with(opts: ShimOptions, mut control: control::ControlOptions) -> Result<Shim, ShimError> {
        let sock = UdpSocket::bind(opts.geneve_listen)
            .map_err(|source| ShimError::Geneve { addr: opts.geneve_listen, source })?;
        if let Some(a) = control.geneve_advertise {
            control::check_advertise(sock.local_addr().map_err(ShimError::Relay)?, a)
                .map_err(ShimError::GeneveAdvertise)?;
        }
        let relay = Relay::start(sock).map_err(ShimError::Relay)?;
        let geneve = relay.local_addr();
        let node = Arc::new(Mutex::new(Node::new(&opts.netns, relay)?));
        {
            let mut n = node.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(name) = &opts.underlay {
                n.move_underlay(name, underlay::resolve(&opts.endpoint))?;
            }
            if let Some(dir) = &opts.cni_state_dir {
                n.rebuild_pods_from(dir.clone());
            }
            // After the underlay moved: its address is the fast path's.
            if let Some(fp) = &opts.fast_path {
                match fastpath::FastPath::start(n.netns_path(), fp) {
                    Ok(fast) => {
                        tracing::info!(address = %fast.address, device = %fp.device, "kernel fast path on");
                        control.fast_path_address = Some(fast.address);
                        n.set_fast_path(Arc::new(fast));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "kernel fast path unavailable: every frame goes through the emulator")
                    }
                }
            }
        }
        // Before the control socket, so that a failure here leaves no socket file behind.
        let metadata = match opts.metadata {
            Some(m) => {
                let (netns, config) = {
                    let n = node.lock().unwrap_or_else(|p| p.into_inner());
                    (n.netns_path().to_path_buf(), n.watch_config())
                };
                Some(metadata::MetadataServer::start(&netns, config, m)?)
            }
            None => None,
        };
        let socket_path =
            opts.control_socket.clone().unwrap_or_else(|| service::default_socket_path(&opts.instance_id));
        let listener = service::bind(&socket_path)
            .map_err(|source| ShimError::ControlSocket { path: socket_path.clone(), source })?;
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut stopped = stop.subscribe();
        let serve_node = node.clone();
        tasks.push(tokio::spawn(async move {
            let until = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = service::serve(listener, serve_node, until).await {
                tracing::error!(error = %e, "the Shim API stopped");
            }
        }));
        let who = match opts.external_address {
            Some(address) => control::Identity::External { name: opts.instance_id, address },
            None => control::Identity::Instance(opts.instance_id),
        };
        let session = control::run(opts.endpoint, who, node.clone(), geneve, control, stop.subscribe());
        tasks.push(tokio::spawn(session));
        tracing::info!(%geneve, socket = %socket_path.display(), "shim started");
        Ok(Shim { node, stop, tasks, socket_path, geneve, metadata })
    }

    /// The address the Geneve socket is bound to (registered with the emulator unless
    /// `--geneve-advertise` or a wildcard bind says otherwise).
    pub fn geneve_address(&self) -> SocketAddr {
        self.geneve
    }

    pub fn control_socket(&self) -> &Path {
        &self.socket_path
    }

    pub fn node(&self) -> Arc<Mutex<Node>> {
        self.node.clone()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.node.lock().unwrap_or_else(|p| p.into_inner()).relay_stats()
    }

    /// Stops the control session and the API, then removes every device the shim created.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Some(m) = self.metadata.take() {
            m.shutdown().await;
        }
        let node = self.node.clone();
        let _ = tokio::task::spawn_blocking(move || node.lock().unwrap_or_else(|p| p.into_inner()).shutdown()).await;
        let _ = std::fs::remove_file(&self.socket_path);
    }
}
