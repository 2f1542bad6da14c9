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
//! Must not: touch devices itself (that is [`crate::node`], run on a blocking thread), or give
//! up while the shim runs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enifab_proto::v1 as pb;
use enifab_proto::v1::fabric_client::FabricClient;
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

/// Runs sessions until `stop` turns true.
pub async fn run(
    endpoint: String,
    who: Identity,
    node: Arc<Mutex<Node>>,
    geneve: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut registered = false;
        let session = session(&endpoint, &who, &node, geneve, &mut registered);
        tokio::select! {
            r = session => match r {
                Ok(()) => tracing::warn!("the emulator ended the node watch; reconnecting"),
                Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "control session failed"),
            },
            _ = stop.wait_for(|s| *s) => return,
        }
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

async fn session(
    endpoint: &str,
    who: &Identity,
    node: &Arc<Mutex<Node>>,
    geneve: SocketAddr,
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
    let mut client = FabricClient::new(channel);
    let instance_id = who.id();
    let resp = match who {
        Identity::Instance(id) => {
            let req = pb::RegisterNodeRequest { instance_id: id.clone(), geneve_address: geneve.to_string() };
            client.register_node(req).await.map_err(|status| ControlError::Rpc { call: "RegisterNode", status })?
        }
        Identity::External { name, address } => {
            let req = pb::RegisterExternalHostRequest {
                name: name.clone(),
                address: address.clone(),
                geneve_address: geneve.to_string(),
            };
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
    let mut stream = client
        .watch_node(pb::WatchNodeRequest { instance_id: instance_id.to_string() })
        .await
        .map_err(|status| ControlError::Rpc { call: "WatchNode", status })?
        .into_inner();
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

    #[test]
    fn endpoint_urls() {
        assert_eq!(endpoint_url("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(endpoint_url("http://[::1]:1"), "http://[::1]:1");
    }
}
