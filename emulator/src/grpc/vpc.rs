//! `enifab.v1.Vpc`: VPCs and vSwitches.

use enifab_model::vpc as m;
use enifab_proto::v1 as pb;
use enifab_proto::v1::vpc_server::Vpc;
use tonic::{Request, Response, Status};

use super::{Ctx, comma_list, opt, page, render, request_id, tags};

#[derive(Clone, Debug)]
pub struct VpcService {
    pub ctx: Ctx,
}

type Res<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Vpc for VpcService {
    async fn create_vpc(&self, req: Request<pb::CreateVpcRequest>) -> Res<pb::CreateVpcResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let req = m::CreateVpc {
            cidr_block: opt(q.cidr_block),
            enable_ipv6: q.enable_ipv6.unwrap_or(false),
            ipv6_cidr_block: opt(q.ipv6_cidr_block),
            vpc_name: q.vpc_name,
            description: q.description,
            resource_group_id: q.resource_group_id,
            tags: tags(q.tag),
            client_token: opt(q.client_token),
        };
        let v = self.ctx.call(&rid, &q.region_id, move |r, now| r.create_vpc(req, now)).await?;
        Ok(Response::new(pb::CreateVpcResponse {
            request_id: rid,
            vpc_id: v.vpc_id,
            v_router_id: v.v_router_id,
            route_table_id: v.route_table_id,
            resource_group_id: v.resource_group_id,
        }))
    }

    async fn describe_vpcs(&self, req: Request<pb::DescribeVpcsRequest>) -> Res<pb::DescribeVpcsResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let region = self.ctx.model.region_id().to_string();
        let (items, info) = self
            .ctx
            .call(&rid, &q.region_id, move |r, now| {
                let req = m::DescribeVpcs {
                    vpc_ids: comma_list(&q.vpc_id),
                    vpc_name: opt(q.vpc_name),
                    page: page(q.page_number, q.page_size, None, String::new()),
                };
                let (vpcs, info) = r.describe_vpcs(&req, now)?;
                let items: Vec<_> = vpcs
                    .into_iter()
                    .map(|v| {
                        let vs = r.vswitch_ids_of(&v.vpc_id);
                        (v, vs)
                    })
                    .collect();
                Ok((items, info))
            })
            .await?;
        Ok(Response::new(pb::DescribeVpcsResponse {
            request_id: rid,
            total_count: info.total_count as i32,
            page_number: info.page_number as i32,
            page_size: info.page_size as i32,
            vpcs: Some(pb::VpcList {
                vpc: items.into_iter().map(|(v, vs)| render::vpc_item(&region, &v, vs)).collect(),
            }),
        }))
    }

    async fn describe_vpc_attribute(
        &self,
        req: Request<pb::DescribeVpcAttributeRequest>,
    ) -> Res<pb::DescribeVpcAttributeResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let region = self.ctx.model.region_id().to_string();
        let id = q.vpc_id;
        let a = self.ctx.call(&rid, &q.region_id, move |r, now| r.describe_vpc_attribute(&id, now)).await?;
        let item = render::vpc_item(&region, &a.vpc, a.v_switch_ids);
        Ok(Response::new(pb::DescribeVpcAttributeResponse {
            request_id: rid,
            vpc_id: item.vpc_id,
            vpc_name: item.vpc_name,
            status: item.status,
            region_id: item.region_id,
            cidr_block: item.cidr_block,
            ipv6_cidr_block: item.ipv6_cidr_block,
            v_router_id: item.v_router_id,
            description: item.description,
            resource_group_id: item.resource_group_id,
            creation_time: item.creation_time,
            is_default: item.is_default,
            classic_link_enabled: false,
            owner_id: render::OWNER_ID.parse().unwrap_or_default(),
            v_switch_ids: item.v_switch_ids,
            user_cidrs: Some(pb::UserCidrList::default()),
            // A VPC has its one block here; the CCM reads this list too.
            secondary_cidr_blocks: Some(pb::SecondaryCidrBlockList::default()),
            ipv6_cidr_blocks: item.ipv6_cidr_blocks,
            tags: item.tags,
        }))
    }

    async fn delete_vpc(&self, req: Request<pb::DeleteVpcRequest>) -> Res<pb::DeleteVpcResponse> {
        let q = req.into_inner();
        let rid = request_id();
        self.ctx.call(&rid, &q.region_id, move |r, now| r.delete_vpc(&q.vpc_id, now)).await?;
        Ok(Response::new(pb::DeleteVpcResponse { request_id: rid }))
    }

    async fn create_v_switch(&self, req: Request<pb::CreateVSwitchRequest>) -> Res<pb::CreateVSwitchResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let req = m::CreateVSwitch {
            vpc_id: q.vpc_id,
            zone_id: q.zone_id,
            cidr_block: q.cidr_block,
            ipv6_cidr_block: q.ipv6_cidr_block.map(|b| u32::try_from(b).unwrap_or(u32::MAX)),
            v_switch_name: q.v_switch_name,
            description: q.description,
            tags: tags(q.tag),
            client_token: opt(q.client_token),
        };
        let v = self.ctx.call(&rid, &q.region_id, move |r, now| r.create_vswitch(req, now)).await?;
        Ok(Response::new(pb::CreateVSwitchResponse { request_id: rid, v_switch_id: v.v_switch_id }))
    }

    async fn describe_v_switches(
        &self,
        req: Request<pb::DescribeVSwitchesRequest>,
    ) -> Res<pb::DescribeVSwitchesResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let (items, info) = self
            .ctx
            .call(&rid, &q.region_id, move |r, now| {
                let req = m::DescribeVSwitches {
                    v_switch_ids: comma_list(&q.v_switch_id),
                    vpc_id: opt(q.vpc_id),
                    zone_id: opt(q.zone_id),
                    v_switch_name: opt(q.v_switch_name),
                    tags: tags(q.tag),
                    page: page(q.page_number, q.page_size, None, String::new()),
                };
                r.describe_vswitches(&req, now)
            })
            .await?;
        Ok(Response::new(pb::DescribeVSwitchesResponse {
            request_id: rid,
            total_count: info.total_count as i32,
            page_number: info.page_number as i32,
            page_size: info.page_size as i32,
            v_switches: Some(pb::VSwitchList { v_switch: items.iter().map(render::vswitch_item).collect() }),
        }))
    }

    async fn delete_v_switch(&self, req: Request<pb::DeleteVSwitchRequest>) -> Res<pb::DeleteVSwitchResponse> {
        let q = req.into_inner();
        let rid = request_id();
        self.ctx.call(&rid, &q.region_id, move |r, now| r.delete_vswitch(&q.v_switch_id, now)).await?;
        Ok(Response::new(pb::DeleteVSwitchResponse { request_id: rid }))
    }

    async fn modify_vpc_attribute(
        &self,
        req: Request<pb::ModifyVpcAttributeRequest>,
    ) -> Res<pb::ModifyVpcAttributeResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let req = m::ModifyVpc {
            vpc_id: q.vpc_id,
            vpc_name: q.vpc_name,
            description: q.description,
            enable_ipv6: q.enable_i_pv6,
            ipv6_cidr_block: opt(q.ipv6_cidr_block),
        };
        self.ctx.call(&rid, &q.region_id, move |r, now| r.modify_vpc_attribute(req, now)).await?;
        Ok(Response::new(pb::ModifyVpcAttributeResponse { request_id: rid }))
    }

    async fn modify_v_switch_attribute(
        &self,
        req: Request<pb::ModifyVSwitchAttributeRequest>,
    ) -> Res<pb::ModifyVSwitchAttributeResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let req = m::ModifyVSwitch {
            v_switch_id: q.v_switch_id,
            v_switch_name: q.v_switch_name,
            description: q.description,
            ipv6_cidr_block: q.ipv6_cidr_block.map(|b| u32::try_from(b).unwrap_or(u32::MAX)),
            enable_ipv6: q.enable_i_pv6,
        };
        self.ctx.call(&rid, &q.region_id, move |r, now| r.modify_vswitch_attribute(req, now)).await?;
        Ok(Response::new(pb::ModifyVSwitchAttributeResponse { request_id: rid }))
    }
}
