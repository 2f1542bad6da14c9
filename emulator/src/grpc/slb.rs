//! `enifab.v1.Slb`: load balancers, vServer groups and layer-4 listeners (SLB `2014-05-15`).
//!
//! Thin like the other services: proto → the model's request (JSON parameters such as
//! `BackendServers` and `Tags` are parsed off the model thread, [`Ctx::call_with`]), the model
//! action on the model thread, model → proto in the cloud's layout ([`render`]). Errors answer in
//! the `slb.aliyuncs.com` domain.
//!
//! The one thing the model cannot answer is a backend's live health: DescribeHealthStatus takes
//! the configuration (which backends of which listeners are checked) from the model and the
//! status from a [`HealthSource`] the server plugs in (the data plane's checker). A backend the
//! source does not report, or whose listener is stopped or has its check off, is `unavailable`,
//! as the cloud says before a check has finished.

use std::net::Ipv4Addr;
use std::sync::Arc;

use enifab_model::ModelError;
use enifab_model::slb::ListenerProtocol;
use enifab_model::slb::listener::{DescribeLoadBalancerListeners, HealthTarget, ListenerParams};
use enifab_model::slb::load_balancer::{self as m_lb, parse_tags_filter};
use enifab_model::slb::vserver_group::{self as m_vsg, BackendServerInput, parse_backend_servers};
use enifab_proto::v1 as pb;
use enifab_proto::v1::slb_server::Slb;
use tonic::{Request, Response, Status};

use super::{Ctx, comma_list, opt, page, render, request_id, tags};

/// One backend's live health as the data plane sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendHealthRow {
    pub lb_id: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub listener_port: u16,
    pub server_ip: Ipv4Addr,
    pub port: u16,
    /// `normal`, `abnormal` or `unavailable`.
    pub status: String,
}

/// Where DescribeHealthStatus gets live health from (the fabric's health checker).
#[tonic::async_trait]
pub trait HealthSource: Send + Sync + std::fmt::Debug {
    async fn backend_health(&self) -> Vec<BackendHealthRow>;
}

#[derive(Clone, Debug)]
pub struct SlbService {
    pub ctx: Ctx,
    /// `None` without a data plane: every backend is then `unavailable`.
    pub health: Option<Arc<dyn HealthSource>>,
}

type Res<T> = Result<Response<T>, Status>;

/// `BackendServers` and its kin: JSON, at most the per-call limit.
fn backends(param: &'static str, json: &str) -> Result<Vec<BackendServerInput>, ModelError> {
    parse_backend_servers(param, json, enifab_model::region::Limits::default().backend_servers_per_call)
}

fn int(v: Option<i32>) -> Option<i64> {
    v.map(i64::from)
}

/// The fields every listener request has, into the model's parameters; the rest is the
/// caller's (`..`).
macro_rules! listener_params {
    ($q:ident { $($extra:tt)* }) => {
        ListenerParams {
            load_balancer_id: $q.load_balancer_id,
            listener_port: int($q.listener_port),
            backend_server_port: int($q.backend_server_port),
            bandwidth: int($q.bandwidth),
            v_server_group_id: opt($q.v_server_group_id),
            scheduler: opt($q.scheduler),
            persistence_timeout: int($q.persistence_timeout),
            description: opt($q.description),
            health_check_switch: opt($q.health_check_switch),
            health_check_connect_port: int($q.health_check_connect_port),
            health_check_connect_timeout: int($q.health_check_connect_timeout),
            health_check_interval: int($q.health_check_interval),
            healthy_threshold: int($q.healthy_threshold),
            unhealthy_threshold: int($q.unhealthy_threshold),
            connection_drain: opt($q.connection_drain),
            connection_drain_timeout: int($q.connection_drain_timeout),
            proxy_protocol_v2_enabled: $q.proxy_protocol_v2_enabled,
            acl_status: opt($q.acl_status),
            $($extra)*
        }
    };
}

/// A TCP listener request's own fields.
macro_rules! tcp_fields {
    ($q:ident) => {
        ListenerParams {
            established_timeout: int($q.established_timeout),
            health_check_type: opt($q.health_check_type),
            health_check_uri: opt($q.health_check_u_r_i),
            health_check_domain: opt($q.health_check_domain),
            health_check_http_code: opt($q.health_check_http_code),
            health_check_method: opt($q.health_check_method),
            ..Default::default()
        }
    };
}

/// A UDP listener request's own fields.
macro_rules! udp_fields {
    ($q:ident) => {
        ListenerParams {
            health_check_req: opt($q.health_check_req),
            health_check_exp: opt($q.health_check_exp),
            ..Default::default()
        }
    };
}

/// The live status of each target: what the source says of a checked one, `unavailable` else.
fn health_rows(targets: Vec<HealthTarget>, live: &[BackendHealthRow]) -> Vec<pb::HealthBackendServer> {
    targets
        .into_iter()
        .map(|t| {
            let b = &t.backend;
            let status = live
                .iter()
                .find(|r| {
                    t.checked
                        && r.lb_id == t.load_balancer_id
                        && r.protocol == t.protocol.as_str()
                        && r.listener_port == t.listener_port
                        && r.server_ip == b.server_ip
                        && r.port == b.port
                })
                .map_or("unavailable", |r| r.status.as_str());
            pb::HealthBackendServer {
                server_id: b.server_id.clone(),
                server_ip: b.server_ip.to_string(),
                port: i32::from(b.port),
                listener_port: i32::from(t.listener_port),
                protocol: t.protocol.as_str().into(),
                server_health_status: status.into(),
                r#type: b.server_type.clone(),
                vpc_id: String::new(),
            }
        })
        .collect()
}

#[tonic::async_trait]
impl Slb for SlbService {
    async fn create_load_balancer(
        &self,
        req: Request<pb::CreateLoadBalancerRequest>,
    ) -> Res<pb::CreateLoadBalancerResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let m = m_lb::CreateLoadBalancer {
            load_balancer_name: opt(q.load_balancer_name),
            address_type: opt(q.address_type),
            vpc_id: opt(q.vpc_id),
            v_switch_id: opt(q.v_switch_id),
            address: opt(q.address),
            address_ip_version: opt(q.address_i_p_version),
            internet_charge_type: opt(q.internet_charge_type),
            bandwidth: int(q.bandwidth),
            master_zone_id: opt(q.master_zone_id),
            slave_zone_id: opt(q.slave_zone_id),
            load_balancer_spec: opt(q.load_balancer_spec),
            instance_charge_type: opt(q.instance_charge_type),
            pay_type: opt(q.pay_type),
            resource_group_id: opt(q.resource_group_id),
            delete_protection: opt(q.delete_protection),
            modification_protection_status: opt(q.modification_protection_status),
            modification_protection_reason: opt(q.modification_protection_reason),
            tags: tags(q.tag),
            client_token: opt(q.client_token),
        };
        let l = self.ctx.call(&rid, &q.region_id, move |r, now| r.create_load_balancer(m, now)).await?;
        Ok(Response::new(pb::CreateLoadBalancerResponse {
            request_id: rid,
            load_balancer_id: l.load_balancer_id.clone(),
            load_balancer_name: l.load_balancer_name.clone(),
            address: l.address.to_string(),
            address_i_p_version: "ipv4".into(),
            network_type: l.network_type().into(),
            vpc_id: l.vpc_id,
            v_switch_id: l.v_switch_id,
            resource_group_id: l.resource_group_id,
            order_id: 0,
        }))
    }

    async fn describe_load_balancers(
        &self,
        req: Request<pb::DescribeLoadBalancersRequest>,
    ) -> Res<pb::DescribeLoadBalancersResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let region = self.ctx.model.region_id().to_string();
        let (items, info) = self
            .ctx
            .call_with(
                &rid,
                &q.region_id,
                move || {
                    let mut filter = parse_tags_filter(&q.tags)?;
                    filter.extend(tags(q.tag));
                    Ok(m_lb::DescribeLoadBalancers {
                        load_balancer_ids: comma_list(&q.load_balancer_id),
                        load_balancer_names: comma_list(&q.load_balancer_name),
                        tags: filter,
                        address_type: opt(q.address_type),
                        vpc_id: opt(q.vpc_id),
                        v_switch_id: opt(q.v_switch_id),
                        address: opt(q.address),
                        network_type: opt(q.network_type),
                        load_balancer_status: opt(q.load_balancer_status),
                        page: page(q.page_number, q.page_size, None, String::new()),
                    })
                },
                |r, now, m| r.describe_load_balancers(&m, now),
            )
            .await?;
        Ok(Response::new(pb::DescribeLoadBalancersResponse {
            request_id: rid,
            page_number: info.page_number as i32,
            page_size: info.page_size as i32,
            total_count: info.total_count as i32,
            load_balancers: Some(pb::LoadBalancerList {
                load_balancer: items.iter().map(|l| render::load_balancer_item(&region, l)).collect(),
            }),
        }))
    }

    async fn describe_load_balancer_attribute(
        &self,
        req: Request<pb::DescribeLoadBalancerAttributeRequest>,
    ) -> Res<pb::DescribeLoadBalancerAttributeResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let region = self.ctx.model.region_id().to_string();
        let id = q.load_balancer_id;
        let l = self.ctx.call(&rid, &q.region_id, move |r, now| r.describe_load_balancer_attribute(&id, now)).await?;
        Ok(Response::new(render::load_balancer_attribute(rid, &region, &l)))
    }

    async fn set_load_balancer_name(
        &self,
        req: Request<pb::SetLoadBalancerNameRequest>,
    ) -> Res<pb::SetLoadBalancerNameResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let (id, name) = (q.load_balancer_id, q.load_balancer_name);
        self.ctx.call(&rid, &q.region_id, move |r, now| r.set_load_balancer_name(&id, &name, now)).await?;
        Ok(Response::new(pb::SetLoadBalancerNameResponse { request_id: rid }))
    }

    async fn set_load_balancer_delete_protection(
        &self,
        req: Request<pb::SetLoadBalancerDeleteProtectionRequest>,
    ) -> Res<pb::SetLoadBalancerDeleteProtectionResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let (id, on) = (q.load_balancer_id, q.delete_protection);
        self.ctx.call(&rid, &q.region_id, move |r, now| r.set_load_balancer_delete_protection(&id, &on, now)).await?;
        Ok(Response::new(pb::SetLoadBalancerDeleteProtectionResponse { request_id: rid }))
    }

    async fn set_load_balancer_modification_protection(
        &self,
        req: Request<pb::SetLoadBalancerModificationProtectionRequest>,
    ) -> Res<pb::SetLoadBalancerModificationProtectionResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let (id, status, reason) =
            (q.load_balancer_id, q.modification_protection_status, q.modification_protection_reason);
        self.ctx
            .call(&rid, &q.region_id, move |r, now| {
                r.set_load_balancer_modification_protection(&id, &status, &reason, now)
            })
            .await?;
        Ok(Response::new(pb::SetLoadBalancerModificationProtectionResponse { request_id: rid }))
    }

    async fn delete_load_balancer(
        &self,
        req: Request<pb::DeleteLoadBalancerRequest>,
    ) -> Res<pb::DeleteLoadBalancerResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let id = q.load_balancer_id;
        self.ctx.call(&rid, &q.region_id, move |r, now| r.delete_load_balancer(&id, now)).await?;
        Ok(Response::new(pb::DeleteLoadBalancerResponse { request_id: rid }))
    }

    async fn tag_resources(&self, req: Request<pb::TagResourcesRequest>) -> Res<pb::TagResourcesResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let m = m_lb::TagResources { resource_type: q.resource_type, resource_ids: q.resource_id, tags: tags(q.tag) };
        self.ctx.call(&rid, &q.region_id, move |r, now| r.tag_resources(&m, now)).await?;
        Ok(Response::new(pb::TagResourcesResponse { request_id: rid }))
    }

    async fn untag_resources(&self, req: Request<pb::UntagResourcesRequest>) -> Res<pb::UntagResourcesResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let m = m_lb::UntagResources {
            resource_type: q.resource_type,
            resource_ids: q.resource_id,
            tag_keys: q.tag_key,
            all: q.all.unwrap_or(false),
        };
        self.ctx.call(&rid, &q.region_id, move |r, now| r.untag_resources(&m, now)).await?;
        Ok(Response::new(pb::UntagResourcesResponse { request_id: rid }))
    }

    async fn list_tag_resources(&self, req: Request<pb::ListTagResourcesRequest>) -> Res<pb::ListTagResourcesResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let m =
            m_lb::ListTagResources { resource_type: q.resource_type, resource_ids: q.resource_id, tags: tags(q.tag) };
        let rows = self.ctx.call(&rid, &q.region_id, move |r, now| r.list_tag_resources(&m, now)).await?;
        Ok(Response::new(pb::ListTagResourcesResponse {
            request_id: rid,
            next_token: String::new(),
            tag_resources: Some(pb::TagResourceList {
                tag_resource: rows
                    .into_iter()
                    .map(|t| pb::TagResourceItem {
                        resource_id: t.resource_id,
                        resource_type: t.resource_type,
                        tag_key: t.tag.key,
                        tag_value: t.tag.value,
                    })
                    .collect(),
            }),
        }))
    }

    async fn create_v_server_group(
        &self,
        req: Request<pb::CreateVServerGroupRequest>,
    ) -> Res<pb::CreateVServerGroupResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let g = self
            .ctx
            .call_with(
                &rid,
                &q.region_id,
                move || {
                    Ok(m_vsg::CreateVServerGroup {
                        load_balancer_id: q.load_balancer_id,
                        v_server_group_name: q.v_server_group_name,
                        backend_servers: backends("BackendServers", &q.backend_servers)?,
                    })
                },
                |r, now, m| r.create_vserver_group(m, now),
            )
            .await?;
        Ok(Response::new(pb::CreateVServerGroupResponse {
            request_id: rid,
            v_server_group_id: g.v_server_group_id,
            backend_servers: Some(render::backend_servers(&g.backend_servers)),
        }))
    }

    async fn describe_v_server_groups(
        &self,
        req: Request<pb::DescribeVServerGroupsRequest>,
    ) -> Res<pb::DescribeVServerGroupsResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let (id, name) = (q.load_balancer_id, opt(q.description));
        let groups = self
            .ctx
            .call(&rid, &q.region_id, move |r, now| r.describe_vserver_groups(&id, name.as_deref(), now))
            .await?;
        Ok(Response::new(pb::DescribeVServerGroupsResponse {
            request_id: rid,
            v_server_groups: Some(pb::VServerGroupList {
                v_server_group: groups.iter().map(render::vserver_group_item).collect(),
            }),
        }))
    }

    async fn describe_v_server_group_attribute(
        &self,
        req: Request<pb::DescribeVServerGroupAttributeRequest>,
    ) -> Res<pb::DescribeVServerGroupAttributeResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let id = q.v_server_group_id;
        let g = self.ctx.call(&rid, &q.region_id, move |r, now| r.describe_vserver_group_attribute(&id, now)).await?;
        Ok(Response::new(pb::DescribeVServerGroupAttributeResponse {
            request_id: rid,
            v_server_group_id: g.v_server_group_id,
            v_server_group_name: g.v_server_group_name,
            load_balancer_id: g.load_balancer_id,
            create_time: g.creation_time.to_cloud_minutes(),
            backend_servers: Some(render::backend_servers(&g.backend_servers)),
            tags: Some(pb::ResourceTags::default()),
        }))
    }

    async fn add_v_server_group_backend_servers(
        &self,
        req: Request<pb::AddVServerGroupBackendServersRequest>,
    ) -> Res<pb::AddVServerGroupBackendServersResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let id = q.v_server_group_id;
        let g = self
            .ctx
            .call_with(
                &rid,
                &q.region_id,
                move || backends("BackendServers", &q.backend_servers),
                move |r, now, b| r.add_vserver_group_backend_servers(&id, &b, now),
            )
            .await?;
        Ok(Response::new(pb::AddVServerGroupBackendServersResponse {
            request_id: rid,
            v_server_group_id: g.v_server_group_id,
            backend_servers: Some(render::backend_servers(&g.backend_servers)),
        }))
    }

    async fn remove_v_server_group_backend_servers(
        &self,
        req: Request<pb::RemoveVServerGroupBackendServersRequest>,
    ) -> Res<pb::RemoveVServerGroupBackendServersResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let id = q.v_server_group_id;
        let g = self
            .ctx
            .call_with(
                &rid,
                &q.region_id,
                move || backends("BackendServers", &q.backend_servers),
                move |r, now, b| r.remove_vserver_group_backend_servers(&id, &b, now),
            )
            .await?;
        Ok(Response::new(pb::RemoveVServerGroupBackendServersResponse {
            request_id: rid,
            v_server_group_id: g.v_server_group_id,
            backend_servers: Some(render::backend_servers(&g.backend_servers)),
        }))
    }

    async fn set_v_server_group_attribute(
        &self,
        req: Request<pb::SetVServerGroupAttributeRequest>,
    ) -> Res<pb::SetVServerGroupAttributeResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let g = self
            .ctx
            .call_with(
                &rid,
                &q.region_id,
                move || {
                    Ok(m_vsg::SetVServerGroupAttribute {
                        v_server_group_id: q.v_server_group_id,
                        v_server_group_name: q.v_server_group_name,
                        backend_servers: q.backend_servers.map(|json| backends("BackendServers", &json)).transpose()?,
                    })
                },
                |r, now, m| r.set_vserver_group_attribute(&m, now),
            )
            .await?;
        Ok(Response::new(pb::SetVServerGroupAttributeResponse {
            request_id: rid,
            v_server_group_id: g.v_server_group_id,
            v_server_group_name: g.v_server_group_name,
            backend_servers: Some(render::backend_servers(&g.backend_servers)),
        }))
    }

    async fn modify_v_server_group_backend_servers(
        &self,
        req: Request<pb::ModifyVServerGroupBackendServersRequest>,
    ) -> Res<pb::ModifyVServerGroupBackendServersResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let id = q.v_server_group_id;
        let g = self
            .ctx
            .call_with(
                &rid,
                &q.region_id,
                move || {
                    Ok((
                        backends("OldBackendServers", &q.old_backend_servers)?,
                        backends("NewBackendServers", &q.new_backend_servers)?,
                    ))
                },
                move |r, now, (old, new)| r.modify_vserver_group_backend_servers(&id, &old, &new, now),
            )
            .await?;
        Ok(Response::new(pb::ModifyVServerGroupBackendServersResponse {
            request_id: rid,
            v_server_group_id: g.v_server_group_id,
            backend_servers: Some(render::backend_servers(&g.backend_servers)),
        }))
    }

    async fn delete_v_server_group(
        &self,
        req: Request<pb::DeleteVServerGroupRequest>,
    ) -> Res<pb::DeleteVServerGroupResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let id = q.v_server_group_id;
        self.ctx.call(&rid, &q.region_id, move |r, now| r.delete_vserver_group(&id, now)).await?;
        Ok(Response::new(pb::DeleteVServerGroupResponse { request_id: rid }))
    }

    async fn create_load_balancer_tcp_listener(
        &self,
        req: Request<pb::CreateLoadBalancerTcpListenerRequest>,
    ) -> Res<pb::CreateLoadBalancerTcpListenerResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let region = q.region_id.clone();
        let p = listener_params!(q { ..tcp_fields!(q) });
        self.ctx
            .call(&rid, &region, move |r, now| r.create_load_balancer_listener(ListenerProtocol::Tcp, &p, now))
            .await?;
        Ok(Response::new(pb::CreateLoadBalancerTcpListenerResponse { request_id: rid }))
    }

    async fn create_load_balancer_udp_listener(
        &self,
        req: Request<pb::CreateLoadBalancerUdpListenerRequest>,
    ) -> Res<pb::CreateLoadBalancerUdpListenerResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let region = q.region_id.clone();
        let p = listener_params!(q { ..udp_fields!(q) });
        self.ctx
            .call(&rid, &region, move |r, now| r.create_load_balancer_listener(ListenerProtocol::Udp, &p, now))
            .await?;
        Ok(Response::new(pb::CreateLoadBalancerUdpListenerResponse { request_id: rid }))
    }

    async fn set_load_balancer_tcp_listener_attribute(
        &self,
        req: Request<pb::SetLoadBalancerTcpListenerAttributeRequest>,
    ) -> Res<pb::SetLoadBalancerTcpListenerAttributeResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let region = q.region_id.clone();
        let p = listener_params!(q { v_server_group: opt(q.v_server_group), ..tcp_fields!(q) });
        self.ctx
            .call(&rid, &region, move |r, now| r.set_load_balancer_listener_attribute(ListenerProtocol::Tcp, &p, now))
            .await?;
        Ok(Response::new(pb::SetLoadBalancerTcpListenerAttributeResponse { request_id: rid }))
    }

    async fn set_load_balancer_udp_listener_attribute(
        &self,
        req: Request<pb::SetLoadBalancerUdpListenerAttributeRequest>,
    ) -> Res<pb::SetLoadBalancerUdpListenerAttributeResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let region = q.region_id.clone();
        let p = listener_params!(q { v_server_group: opt(q.v_server_group), ..udp_fields!(q) });
        self.ctx
            .call(&rid, &region, move |r, now| r.set_load_balancer_listener_attribute(ListenerProtocol::Udp, &p, now))
            .await?;
        Ok(Response::new(pb::SetLoadBalancerUdpListenerAttributeResponse { request_id: rid }))
    }

    async fn describe_load_balancer_tcp_listener_attribute(
        &self,
        req: Request<pb::DescribeLoadBalancerTcpListenerAttributeRequest>,
    ) -> Res<pb::DescribeLoadBalancerTcpListenerAttributeResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let (id, port) = (q.load_balancer_id.clone(), int(q.listener_port));
        let l = self
            .ctx
            .call(&rid, &q.region_id, move |r, now| {
                r.describe_load_balancer_listener_attribute(ListenerProtocol::Tcp, &id, port, now)
            })
            .await?;
        Ok(Response::new(render::tcp_listener_attribute(rid, &q.load_balancer_id, &l)))
    }

    async fn describe_load_balancer_udp_listener_attribute(
        &self,
        req: Request<pb::DescribeLoadBalancerUdpListenerAttributeRequest>,
    ) -> Res<pb::DescribeLoadBalancerUdpListenerAttributeResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let (id, port) = (q.load_balancer_id.clone(), int(q.listener_port));
        let l = self
            .ctx
            .call(&rid, &q.region_id, move |r, now| {
                r.describe_load_balancer_listener_attribute(ListenerProtocol::Udp, &id, port, now)
            })
            .await?;
        Ok(Response::new(render::udp_listener_attribute(rid, &q.load_balancer_id, &l)))
    }

    async fn describe_load_balancer_listeners(
        &self,
        req: Request<pb::DescribeLoadBalancerListenersRequest>,
    ) -> Res<pb::DescribeLoadBalancerListenersResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let m = DescribeLoadBalancerListeners {
            load_balancer_ids: q.load_balancer_id,
            listener_protocol: opt(q.listener_protocol),
            listener_port: int(q.listener_port),
            description: opt(q.description),
            max_results: int(q.max_results),
            next_token: opt(q.next_token),
        };
        let (items, info) =
            self.ctx.call(&rid, &q.region_id, move |r, now| r.describe_load_balancer_listeners(&m, now)).await?;
        Ok(Response::new(pb::DescribeLoadBalancerListenersResponse {
            request_id: rid,
            next_token: info.next_token,
            total_count: info.total_count as i32,
            max_results: info.page_size as i32,
            listeners: items.iter().map(|(lb, l)| render::listener_item(lb, l)).collect(),
        }))
    }

    async fn start_load_balancer_listener(
        &self,
        req: Request<pb::StartLoadBalancerListenerRequest>,
    ) -> Res<pb::StartLoadBalancerListenerResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let (id, port, proto) = (q.load_balancer_id, int(q.listener_port), opt(q.listener_protocol));
        self.ctx
            .call(&rid, &q.region_id, move |r, now| r.start_load_balancer_listener(&id, port, proto.as_deref(), now))
            .await?;
        Ok(Response::new(pb::StartLoadBalancerListenerResponse { request_id: rid }))
    }

    async fn stop_load_balancer_listener(
        &self,
        req: Request<pb::StopLoadBalancerListenerRequest>,
    ) -> Res<pb::StopLoadBalancerListenerResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let (id, port, proto) = (q.load_balancer_id, int(q.listener_port), opt(q.listener_protocol));
        self.ctx
            .call(&rid, &q.region_id, move |r, now| r.stop_load_balancer_listener(&id, port, proto.as_deref(), now))
            .await?;
        Ok(Response::new(pb::StopLoadBalancerListenerResponse { request_id: rid }))
    }

    async fn delete_load_balancer_listener(
        &self,
        req: Request<pb::DeleteLoadBalancerListenerRequest>,
    ) -> Res<pb::DeleteLoadBalancerListenerResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let (id, port, proto) = (q.load_balancer_id, int(q.listener_port), opt(q.listener_protocol));
        self.ctx
            .call(&rid, &q.region_id, move |r, now| r.delete_load_balancer_listener(&id, port, proto.as_deref(), now))
            .await?;
        Ok(Response::new(pb::DeleteLoadBalancerListenerResponse { request_id: rid }))
    }

    async fn describe_health_status(
        &self,
        req: Request<pb::DescribeHealthStatusRequest>,
    ) -> Res<pb::DescribeHealthStatusResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let (id, port, proto) = (q.load_balancer_id, int(q.listener_port), opt(q.listener_protocol));
        let targets =
            self.ctx.call(&rid, &q.region_id, move |r, now| r.health_targets(&id, port, proto.as_deref(), now)).await?;
        // Asked only when something is checked: the source may have to gather its rows.
        let live = match &self.health {
            Some(source) if targets.iter().any(|t| t.checked) => source.backend_health().await,
            _ => Vec::new(),
        };
        Ok(Response::new(pb::DescribeHealthStatusResponse {
            request_id: rid,
            backend_servers: Some(pb::HealthBackendServerList { backend_server: health_rows(targets, &live) }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use enifab_model::slb::BackendServer;

    use super::*;

    fn target(port: u16, checked: bool) -> HealthTarget {
        HealthTarget {
            load_balancer_id: "lb-1".into(),
            protocol: ListenerProtocol::Tcp,
            listener_port: 80,
            checked,
            backend: BackendServer {
                server_id: "eni-1".into(),
                server_ip: Ipv4Addr::new(10, 0, 8, 3),
                port,
                weight: 100,
                server_type: "eni".into(),
                description: String::new(),
            },
        }
    }

    #[test]
    fn unreported_or_unchecked_backends_are_unavailable() {
        let live = vec![BackendHealthRow {
            lb_id: "lb-1".into(),
            protocol: "tcp".into(),
            listener_port: 80,
            server_ip: Ipv4Addr::new(10, 0, 8, 3),
            port: 8080,
            status: "abnormal".into(),
        }];
        let rows = health_rows(vec![target(8080, true), target(8081, true), target(8080, false)], &live);
        let got: Vec<(&str, i32)> = rows.iter().map(|r| (r.server_health_status.as_str(), r.port)).collect();
        assert_eq!(got, [("abnormal", 8080), ("unavailable", 8081), ("unavailable", 8080)]);
        assert_eq!(
            (rows[0].listener_port, rows[0].protocol.as_str(), rows[0].server_ip.as_str()),
            (80, "tcp", "10.0.8.3")
        );
    }
}
