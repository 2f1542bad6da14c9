//! `enifab.v1.Shim`, the node-local API the CNI plugin calls, served with tonic on a Unix socket
//! (default `/run/enifab/shim-<instance-id>.sock`): `CreateVlanDevice`, `DeleteVlanDevice`,
//! `DescribeNode`.
//!
//! A Unix socket, not TCP: the API creates devices in arbitrary namespaces, so only local
//! processes that can open the socket file (root by default) may call it. Each call runs the
//! blocking [`Node`] method on a `spawn_blocking` thread. Must not hold the node lock on an
//! async worker.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use enifab_proto::v1 as pb;
use enifab_proto::v1::shim_server::{Shim, ShimServer};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::driver::DriverError;
use crate::node::{Node, NodeError, VlanRequest};

/// `/run/enifab/shim-<instance-id>.sock`.
pub fn default_socket_path(instance_id: &str) -> PathBuf {
    PathBuf::from(format!("/run/enifab/shim-{instance_id}.sock"))
}

#[derive(Debug, Clone)]
pub struct ShimService {
    node: Arc<Mutex<Node>>,
}

impl ShimService {
    pub fn new(node: Arc<Mutex<Node>>) -> ShimService {
        ShimService { node }
    }

    async fn with_node<T: Send + 'static>(&self, f: impl FnOnce(&mut Node) -> T + Send + 'static) -> Result<T, Status> {
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || f(&mut node.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|e| Status::internal(format!("shim task failed: {e}")))
    }
}

fn to_status(e: NodeError) -> Status {
    let msg = e.to_string();
    match e {
        NodeError::NotRegistered => Status::unavailable(msg),
        NodeError::NotAMember(_) => Status::not_found(msg),
        NodeError::MemberNotInUse { .. } => Status::failed_precondition(msg),
        NodeError::Invalid { .. } => Status::invalid_argument(msg),
        NodeError::Driver(DriverError::OpenNetns { .. }) => Status::invalid_argument(msg),
        NodeError::Driver(DriverError::Tap { ref source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
            Status::already_exists(msg)
        }
        NodeError::Driver(_) | NodeError::Underlay(_) => Status::internal(msg),
    }
}

#[tonic::async_trait]
impl Shim for ShimService {
    async fn create_vlan_device(
        &self,
        req: Request<pb::CreateVlanDeviceRequest>,
    ) -> Result<Response<pb::CreateVlanDeviceResponse>, Status> {
        let req = VlanRequest::from_proto(req.get_ref()).map_err(to_status)?;
        let r = self.with_node(move |n| n.create_vlan_device(&req)).await?;
        r.map(Response::new).map_err(to_status)
    }

    async fn delete_vlan_device(
        &self,
        req: Request<pb::DeleteVlanDeviceRequest>,
    ) -> Result<Response<pb::DeleteVlanDeviceResponse>, Status> {
        let id = req.into_inner().network_interface_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("invalid network_interface_id: must be set"));
        }
        self.with_node(move |n| n.delete_vlan_device(&id)).await?;
        Ok(Response::new(pb::DeleteVlanDeviceResponse {}))
    }

    async fn describe_node(&self, _: Request<pb::DescribeNodeRequest>) -> Result<Response<pb::NodeConfig>, Status> {
        let config = self.with_node(|n| n.config().cloned()).await?;
        config.map(Response::new).ok_or_else(|| to_status(NodeError::NotRegistered))
    }
}

/// Binds the Unix socket at `path` (creating its directory, replacing a stale socket file left
/// by a previous shim). A socket a live process still answers on is another shim's: refused
/// (`AddrInUse`), never taken over.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, "another shim is serving on it"));
            }
            std::fs::remove_file(path)?
        }
        Ok(_) => return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket")),
        Err(_) => {}
    }
    UnixListener::bind(path)
}

/// Serves the Shim API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: UnixListener,
    node: Arc<Mutex<Node>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(ShimServer::new(ShimService::new(node)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}
