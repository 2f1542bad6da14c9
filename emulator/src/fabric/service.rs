//! `enifab.v1.Fabric`: RegisterNode, RegisterExternalHost, WatchNode, DescribeFabricCounters
//! and CaptureFrames.
//!
//! RegisterNode and WatchNode of an instance answer its node only (the caller `grpc::auth`
//! authenticated, checked against the instance in the message by [`check_node`]), so the
//! address an instance's frames go to is changed by that instance's shim and nobody else;
//! external hosts are the AccessKey holder's. Addresses are checked by
//! [`FabricShell::check_shim_address`] before anything is recorded. CaptureFrames is the
//! AccessKey holder's (a node sees its own frames anyway; it must not see another's).
//!
//! A node's WatchNode is also how it is told to start over: when its kernel fast path lets a
//! revocation time out (`io::Late`), the stream ends with an error that says so, and its shim
//! revokes to epoch 0 and registers again.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use enifab_model::ModelError;
use enifab_model::error::Product;
use enifab_proto::v1 as pb;
use enifab_proto::v1::fabric_server::Fabric;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{FabricShell, view};
use crate::actor::ModelHandle;
use crate::grpc::auth::{check_account, check_node};
use crate::grpc::{request_id, status::refusal, status::to_status};
use crate::openapi::auth::Caller;
use crate::openapi::error::ApiError;

#[derive(Clone, Debug)]
pub struct FabricService {
    pub model: ModelHandle,
    pub shell: Arc<FabricShell>,
}

fn err(e: ModelError, rid: &str) -> Status {
    to_status(&e, Product::Ecs, rid)
}

fn denied(e: ApiError, rid: &str) -> Status {
    refusal(&e, tonic::Code::PermissionDenied, Product::Ecs, rid)
}

/// The Geneve address of a request: `ip:port` that a shim can have.
fn geneve_address(shell: &FabricShell, given: &str, rid: &str) -> Result<SocketAddr, Status> {
    let geneve: SocketAddr =
        given.parse().map_err(|_| err(ModelError::invalid("GeneveAddress", "must be ip:port"), rid))?;
    shell.check_shim_address(geneve).map_err(|e| err(e, rid))?;
    Ok(geneve)
}

/// A node's fast-path address: empty = none; else a unicast IPv4 address (its VXLAN device's).
fn fast_path_address(given: &str, rid: &str) -> Result<Option<std::net::Ipv4Addr>, Status> {
    if given.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| Err(err(ModelError::invalid("FastPathAddress", why), rid));
    match given.parse::<std::net::Ipv4Addr>() {
        Ok(a) if a.is_unspecified() || a.is_broadcast() || a.is_multicast() => {
            bad("must be a unicast IPv4 address of the node's underlay")
        }
        Ok(a) => Ok(Some(a)),
        Err(_) => bad("must be an IPv4 address"),
    }
}

impl FabricService {
    async fn node(&self, instance_id: &str) -> Result<pb::NodeConfig, ModelError> {
        let id = instance_id.to_string();
        let fabric = self.shell.address_for_node(instance_id).to_string();
        self.model
            .read(move |r| view::node_config(r, &id, &fabric))
            .await?
            .ok_or_else(|| ModelError::InstanceNotFound(instance_id.to_string()))
    }
}

type NodeStream = Pin<Box<dyn Stream<Item = Result<pb::NodeConfig, Status>> + Send>>;
type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::CapturedFrame, Status>> + Send>>;

fn captured(f: super::capture::Frame, dropped: u64) -> pb::CapturedFrame {
    use super::capture::Direction;
    let direction = match f.direction {
        Direction::FromPort => pb::CaptureDirection::FromPort,
        Direction::ToPort => pb::CaptureDirection::ToPort,
    };
    pb::CapturedFrame {
        timestamp_ns: f.timestamp_ns,
        direction: direction as i32,
        vni: f.vni,
        vlan: u32::from(f.vlan),
        data: f.data,
        dropped,
    }
}

impl FabricService {
    /// Puts the capture marks of the registry in force (the fast paths revoke what they carried
    /// of a newly captured port before this returns).
    async fn republish(&self) -> Result<(), ModelError> {
        let publisher = self.shell.publisher.clone();
        self.model.read(move |r| publisher.publish(r)).await
    }
}

#[tonic::async_trait]
impl Fabric for FabricService {
    async fn register_node(
        &self,
        req: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeResponse>, Status> {
        let caller = req.extensions().get::<Caller>().cloned();
        let q = req.into_inner();
        let rid = request_id();
        // Who asks comes first, as at the cloud's gateway: a node learns nothing of another's.
        check_node(caller.as_ref(), &q.instance_id).map_err(|e| denied(e, &rid))?;
        if q.instance_id.is_empty() {
            return Err(err(ModelError::MissingParameter("InstanceId"), &rid));
        }
        let geneve = geneve_address(&self.shell, &q.geneve_address, &rid)?;
        // Check the instance exists before it can claim ports.
        self.node(&q.instance_id).await.map_err(|e| err(e, &rid))?;
        let fast_path = fast_path_address(&q.fast_path_address, &rid)?;
        self.shell.register(&q.instance_id, geneve, fast_path);
        let publisher = self.shell.publisher.clone();
        self.model.read(move |r| publisher.publish_registration(r)).await.map_err(|e| err(e, &rid))?;
        // Again, now that the fabric address is the one for this shim's address.
        let config = self.node(&q.instance_id).await.map_err(|e| err(e, &rid))?;
        tracing::info!(instance = %q.instance_id, %geneve, "node registered");
        Ok(Response::new(pb::RegisterNodeResponse {
            fabric_address: self.shell.address_for(Some(geneve)).to_string(),
            config: Some(config),
        }))
    }

    async fn register_external_host(
        &self,
        req: Request<pb::RegisterExternalHostRequest>,
    ) -> Result<Response<pb::RegisterNodeResponse>, Status> {
        let caller = req.extensions().get::<Caller>().cloned();
        let q = req.into_inner();
        let rid = request_id();
        check_account(caller.as_ref()).map_err(|e| denied(e, &rid))?;
        let geneve = geneve_address(&self.shell, &q.geneve_address, &rid)?;
        let pool = self.model.read(|r| r.config().public_pool).await.map_err(|e| err(e, &rid))?;
        let host = self.shell.register_external(&q.name, &q.address, geneve, pool).map_err(|e| err(e, &rid))?;
        let publisher = self.shell.publisher.clone();
        self.model.read(move |r| publisher.publish_registration(r)).await.map_err(|e| err(e, &rid))?;
        tracing::info!(host = %q.name, address = %q.address, %geneve, "external host registered");
        let fabric = self.shell.address_for(Some(geneve)).to_string();
        Ok(Response::new(pb::RegisterNodeResponse {
            fabric_address: fabric.clone(),
            config: Some(view::external_node_config(&host, &fabric)),
        }))
    }

    type WatchNodeStream = NodeStream;

    async fn watch_node(&self, req: Request<pb::WatchNodeRequest>) -> Result<Response<NodeStream>, Status> {
        let caller = req.extensions().get::<Caller>().cloned();
        let q = req.into_inner();
        let rid = request_id();
        if let Some(host) = self.shell.external(&q.instance_id) {
            check_account(caller.as_ref()).map_err(|e| denied(e, &rid))?;
            // An external host's network never changes: one config, then the stream stays open
            // (its end would make the shim reconnect) until the server stops.
            let (tx, rx) = mpsc::channel(1);
            let mut closing = self.shell.closing();
            let config = view::external_node_config(&host, &self.shell.address_for(Some(host.peer)).to_string());
            let watching = self.shell.watching();
            tokio::spawn(async move {
                let _watching = watching;
                if tx.send(Ok(config)).await.is_ok() {
                    tokio::select! {
                        _ = closing.wait_for(|c| *c) => {}
                        _ = tx.closed() => {}
                    }
                }
            });
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        check_node(caller.as_ref(), &q.instance_id).map_err(|e| denied(e, &rid))?;
        // The revocations this stream answers for: the ones sent from now on (see `io::Late`).
        let opened = self.shell.epoch();
        let mut late = self.shell.late();
        let first = self.node(&q.instance_id).await.map_err(|e| err(e, &rid))?;
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        let mut closing = self.shell.closing();
        let watching = self.shell.watching();
        tokio::spawn(async move {
            let _watching = watching;
            let mut epochs = this.model.epochs();
            let mut last = first;
            if tx.send(Ok(last.clone())).await.is_err() {
                return;
            }
            loop {
                let overdue = tokio::select! {
                    changed = epochs.changed() => if changed.is_err() { return } else { None },
                    _ = closing.wait_for(|c| *c) => return,
                    // The node went away: the stream ends now, not at the next change.
                    _ = tx.closed() => return,
                    Ok(()) = late.changed() => {
                        let overdue = this.shell.overdue(&q.instance_id, opened, &late.borrow_and_update());
                        if overdue.is_none() {
                            continue;
                        }
                        overdue
                    }
                };
                if let Some(epoch) = overdue {
                    // Its kernel may still be carrying flows on verdicts that no longer hold: a
                    // shim that loses its watch revokes to epoch 0 first, then registers again.
                    tracing::warn!(
                        instance = %q.instance_id, epoch,
                        "a fast path did not acknowledge a revocation in time; its node's watch is ended"
                    );
                    let why = format!(
                        "this node's fast path did not acknowledge revocation of epoch {epoch} in {} ms; register again",
                        super::io::ACK_TIMEOUT.as_millis()
                    );
                    let _ = tx.send(Err(Status::unavailable(why))).await;
                    return;
                }
                match this.node(&q.instance_id).await {
                    Ok(cfg) => {
                        // Only what the node would notice; the epoch moves on every commit.
                        let changed =
                            pb::NodeConfig { epoch: 0, ..cfg.clone() } != pb::NodeConfig { epoch: 0, ..last.clone() };
                        if changed {
                            last = cfg;
                            if tx.send(Ok(last.clone())).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(err(e, &request_id()))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn describe_fabric_counters(
        &self,
        req: Request<pb::DescribeFabricCountersRequest>,
    ) -> Result<Response<pb::DescribeFabricCountersResponse>, Status> {
        let q = req.into_inner();
        let rid = request_id();
        let stats = self.shell.stats().await.ok_or_else(|| err(ModelError::InternalError, &rid))?;
        let vnis: Vec<u32> = stats.ports.iter().map(|p| p.vni).collect();
        let ids: Vec<String> = stats.enis.iter().map(|e| e.eni_id.clone()).collect();
        let (owners, eni_owners) = self
            .model
            .read(move |r| {
                let ports = vnis
                    .iter()
                    .map(|v| r.eni_by_port(*v).and_then(|e| e.instance_id()).unwrap_or_default().to_string())
                    .collect::<Vec<_>>();
                let enis = ids
                    .iter()
                    .map(|id| r.eni(id).and_then(|e| e.instance_id()).unwrap_or_default().to_string())
                    .collect::<Vec<_>>();
                (ports, enis)
            })
            .await
            .map_err(|e| err(e, &rid))?;
        let drops = |d: &[enifab_dataplane::DropStats]| {
            d.iter()
                .map(|d| pb::DropCounter { reason: d.reason.to_string(), frames: d.frames, bytes: d.bytes })
                .collect()
        };
        let ports = stats
            .ports
            .iter()
            .zip(owners)
            .filter(|(p, _)| q.vni.is_none_or(|v| v == p.vni))
            .filter(|(p, _)| q.network_interface_id.is_empty() || q.network_interface_id == p.eni_id)
            .map(|(p, instance_id)| pb::PortCounters {
                vni: p.vni,
                network_interface_id: p.eni_id.clone(),
                instance_id,
                rx_frames: p.rx_frames,
                rx_bytes: p.rx_bytes,
                tx_frames: p.tx_frames,
                tx_bytes: p.tx_bytes,
                drops: drops(&p.drops),
                health_check_frames: p.health_frames,
                health_check_bytes: p.health_bytes,
            })
            .collect();
        let network_interfaces = stats
            .enis
            .iter()
            .zip(eni_owners)
            .filter(|(e, _)| q.vni.is_none_or(|v| v == e.vni))
            .filter(|(e, _)| q.network_interface_id.is_empty() || q.network_interface_id == e.eni_id)
            .map(|(e, instance_id)| pb::EniCounters {
                network_interface_id: e.eni_id.clone(),
                instance_id,
                vni: e.vni,
                vlan: e.vlan.map(u32::from).unwrap_or_default(),
                rx_frames: e.rx_frames,
                rx_bytes: e.rx_bytes,
                tx_frames: e.tx_frames,
                tx_bytes: e.tx_bytes,
                drops: drops(&e.drops),
            })
            .collect();
        Ok(Response::new(pb::DescribeFabricCountersResponse {
            request_id: rid,
            config_epoch: stats.epoch,
            conntrack_entries: stats.conntrack_entries as u64,
            ports,
            drops: drops(&stats.drops),
            network_interfaces,
        }))
    }

    async fn trace_frame(
        &self,
        req: Request<pb::TraceFrameRequest>,
    ) -> Result<Response<pb::TraceFrameResponse>, Status> {
        let caller = req.extensions().get::<Caller>().cloned();
        let q = req.into_inner();
        let rid = request_id();
        // Read-only, but it reads every group's rules: the account's, not a node's.
        check_account(caller.as_ref()).map_err(|e| denied(e, &rid))?;
        let query = crate::trace::TraceQuery::from_request(&q).map_err(|e| err(e, &rid))?;
        let mut r = crate::trace::explain(&self.model, &self.shell, query).await.map_err(|e| err(e, &rid))?;
        r.request_id = rid;
        Ok(Response::new(r))
    }

    type CaptureFramesStream = FrameStream;

    async fn capture_frames(&self, req: Request<pb::CaptureFramesRequest>) -> Result<Response<FrameStream>, Status> {
        let caller = req.extensions().get::<Caller>().cloned();
        let q = req.into_inner();
        let rid = request_id();
        check_account(caller.as_ref()).map_err(|e| denied(e, &rid))?;
        let (eni, instance, vlan) = (q.eni_id.clone(), q.instance_id.clone(), q.vlan);
        let target = self
            .model
            .read(move |r| view::capture_target(r, &eni, &instance, vlan))
            .await
            .and_then(|t| t)
            .map_err(|e| err(e, &rid))?;
        if !self.shell.is_registered(&target.instance_id) {
            return Err(Status::failed_precondition(format!(
                "no node shim is registered for instance {}: its ports carry no frames to capture",
                target.instance_id
            )));
        }
        let mut handle = self
            .shell
            .start_capture(target.ports.clone(), target.vlan, q.outer)
            .await
            .ok_or_else(|| err(ModelError::InternalError, &rid))?;
        if let Err(e) = self.republish().await {
            self.shell.end_capture(handle);
            return Err(err(e, &rid));
        }
        tracing::info!(ports = ?target.ports, vlan = ?target.vlan, outer = q.outer, "capture started");
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        let mut closing = self.shell.closing();
        tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                let frame = tokio::select! {
                    f = handle.frames.recv() => f,
                    _ = tx.closed() => None,
                    _ = closing.wait_for(|c| *c) => None,
                };
                let Some(frame) = frame else { break };
                let dropped = handle.dropped.load(std::sync::atomic::Ordering::Relaxed);
                if tx.send(Ok(captured(frame, dropped))).await.is_err() {
                    break;
                }
                sent += 1;
                if q.max_frames != 0 && sent >= q.max_frames {
                    break;
                }
            }
            let dropped = handle.dropped.load(std::sync::atomic::Ordering::Relaxed);
            this.shell.end_capture(handle);
            tracing::info!(frames = sent, dropped, "capture ended");
            if let Err(e) = this.republish().await {
                tracing::warn!(error = %e, "republishing after a capture failed");
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DescribeFlowLogsStream = Pin<Box<dyn Stream<Item = Result<pb::FlowLogRecord, Status>> + Send>>;

    async fn describe_flow_logs(
        &self,
        req: Request<pb::DescribeFlowLogsRequest>,
    ) -> Result<Response<Self::DescribeFlowLogsStream>, Status> {
        let caller = req.extensions().get::<Caller>().cloned();
        let q = req.into_inner();
        let rid = request_id();
        check_account(caller.as_ref()).map_err(|e| denied(e, &rid))?;
        if !q.network_interface_id.is_empty() {
            let id = q.network_interface_id.clone();
            let known = self.model.read(move |r| r.eni(&id).is_some()).await.map_err(|e| err(e, &rid))?;
            if !known {
                return Err(err(ModelError::EniNotFound(q.network_interface_id.clone()), &rid));
            }
        }
        let (kept, mut rx) = self.shell.flow_logs.snapshot(&q.network_interface_id);
        let (tx, out) = mpsc::channel(256);
        let mut closing = self.shell.closing();
        tokio::spawn(async move {
            let last = kept.last().map_or(0, |r| r.seq);
            for r in kept {
                if tx.send(Ok((*r).clone())).await.is_err() {
                    return;
                }
            }
            if !q.follow {
                return;
            }
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    _ = tx.closed() => return,
                    _ = closing.wait_for(|c| *c) => return,
                };
                match next {
                    Ok(r)
                        if r.seq > last
                            && (q.network_interface_id.is_empty()
                                || r.network_interface_id == q.network_interface_id) =>
                    {
                        if tx.send(Ok((*r).clone())).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Too far behind: the records missed are gone (a gap in seq says so).
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}
