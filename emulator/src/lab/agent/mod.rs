//! `enifab lab agent`: the lab's hands on one node. It runs where the node is — as the entrypoint
//! of a node container (whose network namespace is the node), for a namespace on a host, or on
//! any machine that can reach the emulator — and does two jobs:
//!
//! 1. it supervises the node's `enifab-shim` ([`supervise`]): finds the instance (by name,
//!    waiting until the topology has been applied), starts the shim, starts it again with a
//!    backoff when it dies, follows the instance when it is replaced, and stops it on SIGTERM;
//! 2. it serves `enifab.v1.LabAgent` ([`service`]), what a lab running elsewhere needs on the
//!    node: pods (namespaces and the CNI plugin), the built-in responders, kube-proxy's iptables
//!    rules, probes. [`client`] is the lab's side of it.
//!
//! Everything it can do, it does as root, so who may ask is checked: on TCP with credentials
//! configured (the AccessKey `serve` reads: `ENIFAB_ACCESS_KEY_ID`/`…_SECRET` or a key file),
//! every call must be signed as calls to the emulator are (`x-enifab-*` metadata, the same
//! checker, [`crate::grpc::auth`]); it refuses to listen beyond loopback without credentials
//! unless told `--insecure`. On a Unix socket (how the local lab runs it) the socket file's
//! mode (0600) is the check.
//!
//! The local lab runs one agent per node too, on a Unix socket in the lab's state directory, for
//! the supervision; it does the rest in-process. Must not: decide anything about the lab (which
//! pods, which rules): it does what it is asked, on its own node only.

pub mod client;
pub mod service;
pub mod supervise;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use enifab_proto::v1::lab_agent_server::LabAgentServer;
use tokio::sync::watch;

use super::host::{HOST_SYSCTLS, NODE_SYSCTLS};
use super::netns::{self, Ns};
use crate::cli::Clients;
use crate::openapi::auth::{Auth, Credentials};
use service::{AgentService, NodeAgent};
use supervise::{Ended, Identity, ShimConfig, ShimStatus};

/// Where the agent's API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = String;

    /// `host:port` (an IP) for TCP; `unix:PATH`, or anything with a `/`, for a Unix socket.
    fn from_str(s: &str) -> Result<Listen, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(Listen::Unix(PathBuf::from(p)));
        }
        if s.contains('/') {
            return Ok(Listen::Unix(PathBuf::from(s)));
        }
        s.parse()
            .map(Listen::Tcp)
            .map_err(|_| format!("{s:?} is neither an address like 0.0.0.0:7070 nor a Unix socket path"))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What `enifab lab agent` is started with.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The emulator, as this node reaches it.
    pub endpoint: String,
    pub listen: Listen,
    pub identity: Identity,
    /// The node's network namespace.
    pub netns: Ns,
    /// Passed to the shim: the container's own interface, moved out of the node's way.
    pub underlay: Option<String>,
    pub shim_socket: PathBuf,
    /// Where the CNI plugin keeps its pods' state (the shim rebuilds them from it).
    pub cni_state_dir: PathBuf,
    /// Responders' logs.
    pub log_dir: PathBuf,
    /// Where `enifab-shim` and `enifab-cni` are (next to `enifab`).
    pub bin_dir: PathBuf,
    /// More arguments for the shim.
    pub shim_args: Vec<String>,
    /// Listen beyond loopback without credentials.
    pub insecure: bool,
    pub credentials: Credentials,
}

/// Whether serving on `listen` with `credentials` is allowed; the warning to log if it is only
/// because of `--insecure`.
pub fn check_exposure(listen: &Listen, credentials: &Credentials, insecure: bool) -> Result<Option<String>> {
    let Listen::Tcp(addr) = listen else { return Ok(None) };
    if addr.ip().is_loopback() || !credentials.is_empty() {
        return Ok(None);
    }
    if !insecure {
        bail!(
            "the agent runs everything as root: it will not listen on {addr} (beyond loopback) without credentials; \
             set ENIFAB_ACCESS_KEY_ID and ENIFAB_ACCESS_KEY_SECRET (or --access-key-file), or say --insecure"
        );
    }
    Ok(Some(format!(
        "INSECURE: the agent listens on {addr} without credentials: anyone who reaches it can run commands as root \
         on this node"
    )))
}

/// Run the agent until SIGTERM or SIGINT (or, for a node that is a named namespace, until that
/// namespace is deleted).
pub async fn run(opts: AgentOptions) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    if let Some(warning) = check_exposure(&opts.listen, &opts.credentials, opts.insecure)? {
        tracing::warn!("{warning}");
    }
    check_node_namespace(&opts)?;
    let sysctls = if matches!(opts.identity, Identity::External { .. }) { HOST_SYSCTLS } else { NODE_SYSCTLS };
    netns::sysctls_in(&opts.netns, sysctls).context("setting the node's sysctls")?;

    let bin = |name: &str| -> Result<PathBuf> {
        let p = opts.bin_dir.join(name);
        if !p.exists() {
            bail!("{name} not found next to enifab (in {})", opts.bin_dir.display());
        }
        Ok(p)
    };
    let shim_cfg = ShimConfig {
        program: bin("enifab-shim")?,
        endpoint: opts.endpoint.clone(),
        identity: opts.identity.clone(),
        netns: opts.netns.clone(),
        socket: opts.shim_socket.clone(),
        underlay: opts.underlay.clone(),
        cni_state_dir: Some(opts.cni_state_dir.clone()),
        extra: opts.shim_args.clone(),
        // A node container's shim: the emulator is on the other side of Docker's network.
        geneve_on_route: opts.netns == Ns::Own,
    };
    let status = Arc::new(Mutex::new(ShimStatus { state: "waiting", ..Default::default() }));
    let node = Arc::new(NodeAgent {
        identity: opts.identity.clone(),
        endpoint: opts.endpoint.clone(),
        netns: opts.netns.clone(),
        shim_socket: opts.shim_socket.clone(),
        cni_state_dir: opts.cni_state_dir.clone(),
        log_dir: opts.log_dir.clone(),
        enifab: std::env::current_exe().context("locating enifab")?,
        cni: bin("enifab-cni")?,
        shim: status.clone(),
        responders: Mutex::new(Default::default()),
    });

    let cloud = Clients::new(lazy_channel(&opts.endpoint)?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut supervisor = tokio::spawn(supervise::supervise(shim_cfg, cloud, status, stop_rx));
    let (serve_stop_tx, serve_stop) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(serve(opts.listen.clone(), opts.credentials.clone(), node.clone(), async move {
        let _ = serve_stop.await;
    }));
    tracing::info!(node = %opts.identity.name(), netns = %opts.netns, "agent started");

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let why = tokio::select! {
        _ = term.recv() => "SIGTERM".to_string(),
        _ = int.recv() => "SIGINT".to_string(),
        r = &mut supervisor => match r {
            Ok(Ok(Ended::NodeGone)) => "the node's namespace is gone".into(),
            Ok(Ok(Ended::Stopped)) => "supervision ended".into(),
            Ok(Err(e)) => format!("supervision failed: {e:#}"),
            Err(e) => format!("supervision failed: {e}"),
        },
        r = &mut server => match r {
            Ok(Ok(())) => "the API server ended".into(),
            Ok(Err(e)) => format!("the API server failed: {e:#}"),
            Err(e) => format!("the API server failed: {e}"),
        },
    };
    tracing::info!("{why}: stopping");
    let _ = stop_tx.send(true);
    if !supervisor.is_finished() {
        let _ = supervisor.await;
    }
    let _ = serve_stop_tx.send(());
    let stopped = tokio::task::spawn_blocking(move || node.stop_responders()).await.unwrap_or(0);
    if stopped > 0 {
        tracing::info!(stopped, "responders stopped");
    }
    if !server.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(6), server).await;
    }
    if let Listen::Unix(p) = &opts.listen {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// In its own namespace (a container), the agent's shim takes `eth0`: if the namespace has one
/// already (Docker's), it must be moved aside (`--underlay`), or the node would lose its way to
/// the emulator. On a host, give the agent a namespace of its own (`--netns NAME`).
fn check_node_namespace(opts: &AgentOptions) -> Result<()> {
    if opts.netns == Ns::Own && opts.underlay.is_none() && nix::net::if_::if_nametoindex("eth0").is_ok() {
        bail!(
            "this namespace has an eth0 already, which the node's primary ENI takes: in a container, pass \
             --underlay underlay0 (the shim moves Docker's interface aside); on a host, run the agent for a \
             namespace of its own (--netns NAME)"
        );
    }
    Ok(())
}

/// A channel to `endpoint` that connects on first use (the emulator may start after us).
fn lazy_channel(endpoint: &str) -> Result<tonic::transport::Channel> {
    let url = if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") };
    Ok(tonic::transport::Endpoint::from_shared(url)
        .with_context(|| format!("the endpoint {endpoint:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy())
}

/// Serve the API on `listen` until `shutdown`.
async fn serve(
    listen: Listen,
    credentials: Credentials,
    node: Arc<NodeAgent>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let svc = LabAgentServer::new(AgentService::new(node));
    match listen {
        Listen::Unix(path) => {
            let listener = bind_unix(&path)?;
            tracing::info!("agent API listening on unix:{}", path.display());
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), shutdown)
                .await
                .context("serving the agent API")
        }
        Listen::Tcp(addr) => {
            use crate::openapi::listener::{self, Limits};
            let auth = Arc::new(Auth::new(credentials));
            let app = tonic::service::Routes::new(svc)
                .into_axum_router()
                .layer(axum::middleware::from_fn_with_state(auth, crate::grpc::auth::authenticate));
            let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
            tracing::info!("agent API listening on {}", tcp.local_addr()?);
            // A CNI ADD waits for the cloud and the shim, a probe up to a minute: more than the
            // emulator's 30 s per request.
            let limits = Limits { request_timeout: Duration::from_secs(180), ..Limits::default() };
            listener::serve(tcp, app, limits, None, shutdown).await;
            Ok(())
        }
    }
}

/// Bind a Unix socket only root can use, replacing a stale one.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => bail!("{} exists and is not a socket", path.display()),
        Err(_) => {}
    }
    let l = tokio::net::UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_and_sockets() {
        assert_eq!("0.0.0.0:7070".parse::<Listen>(), Ok(Listen::Tcp("0.0.0.0:7070".parse().unwrap())));
        assert_eq!("unix:a.sock".parse::<Listen>(), Ok(Listen::Unix("a.sock".into())));
        assert_eq!("/run/enifab/agent.sock".parse::<Listen>(), Ok(Listen::Unix("/run/enifab/agent.sock".into())));
        assert!("node-a:7070".parse::<Listen>().is_err(), "a name is not an address to bind");
    }

    #[test]
    fn beyond_loopback_needs_credentials_or_insecure() {
        let none = Credentials::default();
        let some = Credentials::new([("LTAI1".to_string(), "s".to_string())]);
        let wide: Listen = "0.0.0.0:7070".parse().unwrap();
        let lo: Listen = "127.0.0.1:7070".parse().unwrap();
        let unix: Listen = "/tmp/a.sock".parse().unwrap();
        assert!(check_exposure(&wide, &none, false).is_err());
        assert!(check_exposure(&wide, &none, true).unwrap().is_some_and(|w| w.contains("INSECURE")));
        assert_eq!(check_exposure(&wide, &some, false).unwrap(), None);
        assert_eq!(check_exposure(&lo, &none, false).unwrap(), None);
        assert_eq!(check_exposure(&unix, &none, false).unwrap(), None);
    }
}
