//! `enifab.v1.Emulator`: actions the cloud does not have (custom instance types, fault
//! injection, node tokens). Faults live in the shell ([`super::Faults`]), not in the model, and
//! are applied by [`super::Ctx::call`]; this handler only arms them. Node tokens are derived by
//! the checker that verifies them (`openapi::auth`); this handler only checks that the instance
//! exists before handing one out.

use enifab_model::ModelError;
use enifab_model::catalog::InstanceType;
use enifab_model::error::INJECTABLE_CODES;
use enifab_proto::v1 as pb;
use enifab_proto::v1::emulator_server::Emulator;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Ctx, request_id, status};
use crate::openapi::auth::{Auth, NODE_PREFIX};

#[derive(Clone, Debug)]
pub struct EmulatorService {
    pub ctx: Ctx,
    /// The checker whose node key tokens are derived from.
    pub auth: Arc<Auth>,
    /// Open dry runs (shared with the middleware that routes calls into them).
    pub dry_runs: super::dry_run::DryRuns,
}

fn non_negative(v: i64) -> u64 {
    v.max(0) as u64
}

#[tonic::async_trait]
impl Emulator for EmulatorService {
    async fn create_instance_type(
        &self,
        req: Request<pb::CreateInstanceTypeRequest>,
    ) -> Result<Response<pb::CreateInstanceTypeResponse>, Status> {
        let q = req.into_inner();
        let rid = request_id();
        let t = InstanceType {
            instance_type_id: q.instance_type_id,
            instance_type_family: q.instance_type_family,
            cpu_core_count: non_negative(q.cpu_core_count.into()) as u32,
            memory_size_gib: q.memory_size.max(0.0),
            eni_quantity: non_negative(q.eni_quantity.into()) as u32,
            eni_private_ip_address_quantity: non_negative(q.eni_private_ip_address_quantity.into()) as u32,
            eni_ipv6_address_quantity: non_negative(q.eni_ipv6_address_quantity.into()) as u32,
            eni_total_quantity: non_negative(q.eni_total_quantity.into()) as u32,
            eni_trunk_supported: q.eni_trunk_supported,
            instance_bandwidth_rx_kbps: non_negative(q.instance_bandwidth_rx),
            instance_bandwidth_tx_kbps: non_negative(q.instance_bandwidth_tx),
            instance_pps_rx: non_negative(q.instance_pps_rx),
            instance_pps_tx: non_negative(q.instance_pps_tx),
            custom: true,
        };
        let t = self.ctx.call(&rid, "", move |r, now| r.create_instance_type(t, now)).await?;
        Ok(Response::new(pb::CreateInstanceTypeResponse { request_id: rid, instance_type_id: t.instance_type_id }))
    }

    async fn inject_fault(
        &self,
        req: Request<pb::InjectFaultRequest>,
    ) -> Result<Response<pb::InjectFaultResponse>, Status> {
        let q = req.into_inner();
        let rid = request_id();
        let fail = |e: ModelError| Err(status::to_status(&e, self.ctx.product, &rid));
        // Faults live beside the model, not in it: armed from a dry run they would fire for real.
        if super::dry_run::current().is_some() {
            return fail(ModelError::invalid("DryRunId", "faults cannot be armed in a dry run"));
        }
        if q.target_action.is_empty() {
            return fail(ModelError::MissingParameter("TargetAction"));
        }
        let known = q.target_action == "*"
            || ["Ecs", "Vpc", "Slb", "Emulator"].iter().any(|s| crate::codec::method(s, &q.target_action).is_some());
        if !known || q.target_action == "InjectFault" {
            return fail(ModelError::invalid("TargetAction", format!("{:?} is not an action", q.target_action)));
        }
        let count = match super::count("Count", q.count) {
            Ok(n) => n.unwrap_or(1),
            Err(e) => return fail(e),
        };
        let error = match ModelError::injectable(&q.code) {
            Some(e) => e,
            None if count == 0 => ModelError::InternalError,
            None => {
                return fail(ModelError::invalid("Code", format!("must be one of {}", INJECTABLE_CODES.join(", "))));
            }
        };
        let remaining = self.ctx.faults.arm(&q.target_action, error, count);
        tracing::info!(action = %q.target_action, code = %q.code, count, "fault armed");
        Ok(Response::new(pb::InjectFaultResponse {
            request_id: rid,
            target_action: q.target_action,
            code: q.code,
            remaining: remaining as i32,
        }))
    }

    async fn issue_node_token(
        &self,
        req: Request<pb::IssueNodeTokenRequest>,
    ) -> Result<Response<pb::IssueNodeTokenResponse>, Status> {
        let q = req.into_inner();
        let rid = request_id();
        if q.instance_id.is_empty() {
            return Err(status::to_status(&ModelError::MissingParameter("InstanceId"), self.ctx.product, &rid));
        }
        let id = q.instance_id.clone();
        self.ctx
            .call(&rid, "", move |r, _| match r.instance(&id) {
                Some(_) => Ok(()),
                None => Err(ModelError::InstanceNotFound(id)),
            })
            .await?;
        tracing::info!(instance = %q.instance_id, "node token issued");
        Ok(Response::new(pb::IssueNodeTokenResponse {
            request_id: rid,
            access_key_id: format!("{NODE_PREFIX}{}", q.instance_id),
            node_token: self.auth.node_token(&q.instance_id),
            instance_id: q.instance_id,
        }))
    }

    async fn begin_dry_run(
        &self,
        _req: Request<pb::BeginDryRunRequest>,
    ) -> Result<Response<pb::BeginDryRunResponse>, Status> {
        let rid = request_id();
        if super::dry_run::current().is_some() {
            let e = ModelError::invalid("DryRunId", "a dry run cannot open another");
            return Err(status::to_status(&e, self.ctx.product, &rid));
        }
        // Copied on the model thread, so the copy is the region between two calls, never a half.
        let copy = self.ctx.model.read(super::dry_run::copy).await;
        let copy = copy.and_then(|c| c).map_err(|e| status::to_status(&e, self.ctx.product, &rid))?;
        let dry_run_id = self.dry_runs.begin(copy, self.ctx.model.clock());
        tracing::debug!(%dry_run_id, "dry run opened");
        Ok(Response::new(pb::BeginDryRunResponse { request_id: rid, dry_run_id }))
    }

    async fn end_dry_run(&self, req: Request<pb::EndDryRunRequest>) -> Result<Response<pb::EndDryRunResponse>, Status> {
        self.dry_runs.end(&req.into_inner().dry_run_id);
        Ok(Response::new(pb::EndDryRunResponse { request_id: request_id() }))
    }
}
