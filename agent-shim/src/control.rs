//! The shim's control session with the emulator (`enifab.v1.Fabric`, gRPC client):
//! `RegisterNode` with the Geneve socket's address, apply the returned NodeConfig, then apply
//! every NodeConfig the `WatchNode` stream delivers. A shim for a host of the internet side
//! registers with `RegisterExternalHost` instead, and gets a config of the same shape.
//!
//! When the emulator goes away or restarts, the session ends and a new one starts after a
//! backoff (100 ms doubling to 2 s, reset once a registration succeeds): the shim registers
//! again with the *same* Geneve address, so the emulator's new process learns where this node
//! is, and the devices and the relay keep running all along — like an ECS instance whose NICs do
//! not blink when the control plane has a hiccup. A reconcile that left errors is retried every
//! [`RETRY`] with the latest config until it applies cleanly.
//!
//! The node's kernel fast path is another matter: what it carries are verdicts of the
//! emulator's pipeline, good only while the emulator can take them back. So the moment a
//! session ends, the fast path is revoked to epoch 0, where nothing cached is used: its flows
//! go to the relay and, like every frame with the fast path off, reach no one until an
//! emulator serves the fabric again. A new process may accept changes (a rule removed) before
//! this node finds it, and could not revoke them here; it grants afresh once the node has
//! registered again.
//!
//! Credentials (ARCHITECTURE.md §7: a node is its own principal). With an emulator that requires
//! them, RegisterNode and WatchNode are signed with the node's token as AccessKeyId
//! `node:<instance-id>` (enifab's gRPC scheme, `enifab_proto::auth`: HMAC-SHA256 over
//! `ENIFAB-HMAC-SHA256`, the AccessKeyId, the method path, the timestamp and a nonce, in
//! `x-enifab-*` metadata). The token
//! is given (`--node-token`), or, given an AccessKey instead, asked for at the start of every
//! session (`IssueNodeToken`, signed with the AccessKey). A host of the internet side signs with
//! the AccessKey. Without either, calls go unsigned, as an emulator without credentials wants.
//!
//! The address registered is `--geneve-advertise` if given, else the Geneve socket's, else (a
//! wildcard bind) this host's address toward the emulator: the source the kernel gives the
//! relay's datagrams to the fabric, which the emulator checks them against.
//!
//! Must not: touch devices itself (that is [`crate::node`], run on a blocking thread), give up
//! while the shim runs (a refused registration is retried like an unreachable emulator, and
//! logged with the cloud's code), or leave the kernel carrying flows between sessions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enifab_proto::v1 as pb;
use enifab_proto::v1::emulator_client::EmulatorClient;
use enifab_proto::v1::fabric_client::FabricClient;
use enifab_udp::AdvertiseError;
use tokio::sync::watch;
use tonic::transport::Endpoint;

use crate::node::Node;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How soon a reconcile that failed somewhere is tried again.
pub const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// `--endpoint` is not something a gRPC channel can connect to.
    #[error("bad endpoint {endpoint}: {source}")]
    Endpoint { endpoint: String, source: tonic::transport::Error },
    /// The emulator could not be reached.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect { endpoint: String, source: tonic::transport::Error },
    /// The emulator answered a call with an error.
    #[error("{call}: {status}")]
    Rpc { call: &'static str, status: tonic::Status },
    /// RegisterNode answered with a fabric address that is not `ip:port`.
    #[error("the emulator's fabric address {0:?} is not ip:port")]
    FabricAddress(String),
    /// The blocking reconcile task died.
    #[error("reconcile task: {0}")]
    Task(String),
}

/// What the shim signs with: an AccessKey, or its node's token (id `node:<instance-id>`); the
/// one implementation the emulator checks against and its CLI signs with too.
pub use enifab_proto::auth::AccessKey;

/// How the shim proves who it is and says where it is.
#[derive(Debug, Clone, Default)]
pub struct ControlOptions {
    /// The node's token (`--node-token`): all a node needs.
    pub node_token: Option<String>,
    /// An AccessKey (`--access-key-id`…): to ask for the node's token, or an external host's.
    pub access_key: Option<AccessKey>,
    /// The Geneve address to register (`--geneve-advertise`); see the module docs.
    pub geneve_advertise: Option<SocketAddr>,
    /// The node's kernel fast path, when it runs: registered so the fabric grants it flows.
    pub fast_path_address: Option<std::net::Ipv4Addr>,
}

/// `--geneve-advertise` must be an address the fabric can send to that reaches the socket bound
/// at `bound`.
pub fn check_advertise(bound: SocketAddr, advertise: SocketAddr) -> Result<(), String> {
    enifab_udp::check_advertise(bound, advertise).map_err(|e| match e {
        AdvertiseError::NotUnicast(why) => {
            format!("--geneve-advertise {advertise} is {why}: the fabric needs an address to send to")
        }
        AdvertiseError::BoundToLoopback => format!(
            "--geneve-advertise {advertise}: the Geneve socket is bound to loopback ({bound}), which no other host \
             reaches; bind it to that address or to 0.0.0.0 (--geneve-listen)"
        ),
        AdvertiseError::NotOnLoopback => {
            format!("--geneve-advertise {advertise}: the Geneve socket listens on {bound} only")
        }
    })
}

/// The Geneve address to register for a socket bound to `bound` (see the module docs).
async fn advertised(bound: SocketAddr, advertise: Option<SocketAddr>, endpoint: &str) -> SocketAddr {
    if let Some(a) = advertise {
        return a;
    }
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let host = endpoint.split("://").last().unwrap_or(endpoint).split('/').next().unwrap_or_default();
    let toward = match tokio::net::lookup_host(host).await {
        Ok(mut addrs) => addrs.next().map(|a| a.ip()),
        Err(_) => None,
    };
    match toward.and_then(enifab_udp::route_source) {
        Some(ip) => SocketAddr::new(ip, bound.port()),
        None => {
            let loopback =
                if bound.is_ipv4() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V6(Ipv6Addr::LOCALHOST) };
            SocketAddr::new(loopback, bound.port())
        }
    }
}

/// `127.0.0.1:50051` → `http://127.0.0.1:50051`; URLs pass unchanged.
pub fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") }
}

/// What the shim registers as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An ECS instance, by ID.
    Instance(String),
    /// A host of the internet side: its name and its address with the segment's prefix.
    External { name: String, address: String },
}

impl Identity {
    /// The ID WatchNode knows it by.
    fn id(&self) -> &str {
        match self {
            Identity::Instance(id) => id,
            Identity::External { name, .. } => name,
        }
    }
}

/// Runs sessions until `stop` turns true. `geneve` is the address the Geneve socket is bound to.
pub async fn run(
    endpoint: String,
    who: Identity,
    node: Arc<Mutex<Node>>,
    geneve: SocketAddr,
    control: ControlOptions,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut registered = false;
        let session = session(&endpoint, &who, &node, geneve, &control, &mut registered);
        tokio::select! {
            r = session => match r {
                Ok(()) => tracing::warn!("the emulator ended the node watch; reconnecting"),
                Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "control session failed"),
            },
            _ = stop.wait_for(|s| *s) => return,
        }
        let node = node.clone();
        let _ = tokio::task::spawn_blocking(move || forget_verdicts(&node)).await;
        if registered {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Puts the node's fast path, if any, at epoch 0 (see the module docs); says so once per loss,
/// not at every failed attempt to reconnect.
fn forget_verdicts(node: &Mutex<Node>) {
    let fast = node.lock().unwrap_or_else(|p| p.into_inner()).fast_path().cloned();
    let Some(fast) = fast else { return };
    let epoch = fast.epoch();
    match fast.revoke(0) {
        Ok(()) if epoch != 0 => {
            tracing::warn!(epoch, "lost the emulator: the kernel fast path carries nothing until it speaks again")
        }
        Ok(()) => {}
        Err(e) => tracing::error!(error = %e, "lost the emulator, and the kernel fast path cannot be revoked"),
    }
}

/// What the calls of this session are signed with (see the module docs).
async fn session_key(
    channel: &tonic::transport::Channel,
    who: &Identity,
    control: &ControlOptions,
) -> Result<Option<AccessKey>, ControlError> {
    match (who, &control.node_token, &control.access_key) {
        (Identity::Instance(id), Some(token), _) => Ok(Some(AccessKey::node(id, token))),
        (Identity::Instance(id), None, Some(ak)) => {
            let mut req = tonic::Request::new(pb::IssueNodeTokenRequest { instance_id: id.clone() });
            ak.sign_metadata(req.metadata_mut(), "/enifab.v1.Emulator/IssueNodeToken");
            let r = EmulatorClient::new(channel.clone())
                .issue_node_token(req)
                .await
                .map_err(|status| ControlError::Rpc { call: "IssueNodeToken", status })?
                .into_inner();
            Ok(Some(AccessKey { id: r.access_key_id, secret: r.node_token }))
        }
        (Identity::External { .. }, _, ak) => Ok(ak.clone()),
        (Identity::Instance(_), None, None) => Ok(None),
    }
}

/// `request` signed with `key` for `path`, or as it is without one.
fn signed<T>(key: &Option<AccessKey>, request: T, path: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(request);
    if let Some(k) = key {
        k.sign_metadata(request.metadata_mut(), path);
    }
    request
}

async fn session(
    endpoint: &str,
    who: &Identity,
    node: &Arc<Mutex<Node>>,
    bound: SocketAddr,
    control: &ControlOptions,
    registered: &mut bool,
) -> Result<(), ControlError> {
    let url = endpoint_url(endpoint);
    let channel = Endpoint::from_shared(url.clone())
        .map_err(|source| ControlError::Endpoint { endpoint: url.clone(), source })?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        // A dead emulator is noticed by the keepalive even when no config changes flow.
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|source| ControlError::Connect { endpoint: url.clone(), source })?;
    let key = session_key(&channel, who, control).await?;
    let geneve = advertised(bound, control.geneve_advertise, endpoint).await;
    let mut client = FabricClient::new(channel);
    let instance_id = who.id();
    let resp = match who {
        Identity::Instance(id) => {
            let req = pb::RegisterNodeRequest {
                instance_id: id.clone(),
                geneve_address: geneve.to_string(),
                fast_path_address: control.fast_path_address.map(|a| a.to_string()).unwrap_or_default(),
            };
            let req = signed(&key, req, "/enifab.v1.Fabric/RegisterNode");
            client.register_node(req).await.map_err(|status| ControlError::Rpc { call: "RegisterNode", status })?
        }
        Identity::External { name, address } => {
            let req = pb::RegisterExternalHostRequest {
                name: name.clone(),
                address: address.clone(),
                geneve_address: geneve.to_string(),
            };
            let req = signed(&key, req, "/enifab.v1.Fabric/RegisterExternalHost");
            client
                .register_external_host(req)
                .await
                .map_err(|status| ControlError::Rpc { call: "RegisterExternalHost", status })?
        }
    }
    .into_inner();
    let fabric: SocketAddr =
        resp.fabric_address.parse().map_err(|_| ControlError::FabricAddress(resp.fabric_address.clone()))?;
    *registered = true;
    tracing::info!(instance = %instance_id, %geneve, %fabric, "registered with the emulator");
    let mut latest = resp.config;
    let mut clean = match &latest {
        Some(c) => apply(node, fabric, c.clone()).await?,
        None => true,
    };
    let watch =
        signed(&key, pb::WatchNodeRequest { instance_id: instance_id.to_string() }, "/enifab.v1.Fabric/WatchNode");
    let mut stream =
        client.watch_node(watch).await.map_err(|status| ControlError::Rpc { call: "WatchNode", status })?.into_inner();
    loop {
        tokio::select! {
            msg = stream.message() => {
                match msg.map_err(|status| ControlError::Rpc { call: "WatchNode", status })? {
                    // The stream opens with the config RegisterNode already gave: after a clean
                    // apply of that, nothing is left to do (only the epoch may differ).
                    Some(c) if clean && latest.as_ref().is_some_and(|l| same_but_epoch(l, &c)) => latest = Some(c),
                    Some(c) => {
                        clean = apply(node, fabric, c.clone()).await?;
                        latest = Some(c);
                    }
                    None => return Ok(()),
                }
            }
            _ = tokio::time::sleep(RETRY), if !clean => {
                if let Some(c) = &latest {
                    clean = apply(node, fabric, c.clone()).await?;
                }
            }
        }
    }
}

fn same_but_epoch(a: &pb::NodeConfig, b: &pb::NodeConfig) -> bool {
    pb::NodeConfig { epoch: b.epoch, ..a.clone() } == *b
}

/// Reconciles on a blocking thread; true when every step succeeded.
async fn apply(node: &Arc<Mutex<Node>>, fabric: SocketAddr, config: pb::NodeConfig) -> Result<bool, ControlError> {
    let node = node.clone();
    let epoch = config.epoch;
    let report = tokio::task::spawn_blocking(move || {
        let mut n = node.lock().unwrap_or_else(|p| p.into_inner());
        n.reconcile(Some(fabric), config)
    })
    .await
    .map_err(|e| ControlError::Task(e.to_string()))?;
    for a in &report.applied {
        tracing::info!(epoch, action = %a, "reconcile");
    }
    for e in &report.errors {
        tracing::warn!(epoch, error = %e, "reconcile step failed; will retry");
    }
    Ok(report.errors.is_empty())
}

#[cfg(test)]
mod test {
    use super::*;

    /// The shim's own wrapping of the shared signer (`enifab_proto::auth`, which pins the
    /// signature to a known answer); the end-to-end tests sign against the emulator for real.
    #[test]
    fn requests_are_signed_when_there_is_a_key() {
        let key = Some(AccessKey::node("i-a", " token\n"));
        let r = signed(&key, (), "/enifab.v1.Fabric/RegisterNode");
        let md = r.metadata();
        assert_eq!(md.get("x-enifab-access-key-id").unwrap(), "node:i-a");
        assert_eq!(md.get("x-enifab-signature").unwrap().len(), 64);
        assert_eq!(md.get("x-enifab-signature-nonce").unwrap().len(), 32);
        assert!(signed(&None, (), "/enifab.v1.Fabric/RegisterNode").metadata().is_empty());
    }

    #[test]
    fn an_advertised_address_must_reach_the_socket() {
        let ok = |b: &str, a: &str| check_advertise(b.parse().unwrap(), a.parse().unwrap()).is_ok();
        assert!(ok("0.0.0.0:6081", "10.0.0.7:6081"));
        assert!(ok("127.0.0.1:0", "127.0.0.1:40000"));
        assert!(!ok("127.0.0.1:0", "10.0.0.7:6081"));
        assert!(!ok("10.0.0.7:6081", "127.0.0.1:6081"));
        assert!(!ok("0.0.0.0:6081", "0.0.0.0:6081"));
        assert!(!ok("0.0.0.0:6081", "10.0.0.7:0"));
    }

    #[tokio::test]
    async fn a_wildcard_socket_advertises_the_address_toward_the_emulator() {
        let bound: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        assert_eq!(advertised(bound, None, "127.0.0.1:50051").await, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(advertised(bound, None, "http://localhost:50051").await.port(), 7000);
        let fixed: SocketAddr = "192.0.2.9:16081".parse().unwrap();
        assert_eq!(advertised(bound, Some(fixed), "127.0.0.1:50051").await, fixed);
        let specific: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        assert_eq!(advertised(specific, None, "10.9.9.9:50051").await, specific);
    }

    #[test]
    fn endpoint_urls() {
        assert_eq!(endpoint_url("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(endpoint_url("http://[::1]:1"), "http://[::1]:1");
    }
}
