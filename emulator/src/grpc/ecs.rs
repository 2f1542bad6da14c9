//! `enifab.v1.Ecs`: instances, instance types, ENIs and security groups.

use enifab_model::eni as m_eni;
use enifab_model::instance as m_inst;
use enifab_model::instance::parse_json_list;
use enifab_model::security_group::{self as m_sg, Direction, PermissionInput};
use enifab_proto::v1 as pb;
use enifab_proto::v1::ecs_server::Ecs;
use tonic::{Request, Response, Status};

use super::{Ctx, comma_list, count, opt, page, render, request_id, tags};

#[derive(Clone, Debug)]
pub struct EcsService {
    pub ctx: Ctx,
}

type Res<T> = Result<Response<T>, Status>;

fn permission(p: pb::Permission) -> PermissionInput {
    PermissionInput {
        ip_protocol: p.ip_protocol,
        port_range: p.port_range,
        source_port_range: p.source_port_range,
        source_cidr_ip: p.source_cidr_ip,
        source_group_id: p.source_group_id,
        dest_cidr_ip: p.dest_cidr_ip,
        dest_group_id: p.dest_group_id,
        policy: p.policy,
        priority: p.priority,
        nic_type: p.nic_type,
        description: p.description,
        ipv6_source_cidr_ip: p.ipv6_source_cidr_ip,
        ipv6_dest_cidr_ip: p.ipv6_dest_cidr_ip,
    }
}

/// The legacy flat parameters of a rule request as one permission. The four rule requests name
/// these fields alike; each has only one of the group fields (and revokes no description), so
/// the caller names those.
macro_rules! flat_permission {
    ($q:ident, source_group_id: $sg:expr, dest_group_id: $dg:expr, description: $d:expr) => {
        PermissionInput {
            ip_protocol: $q.ip_protocol,
            port_range: $q.port_range,
            source_port_range: $q.source_port_range,
            source_cidr_ip: $q.source_cidr_ip,
            source_group_id: $sg,
            dest_cidr_ip: $q.dest_cidr_ip,
            dest_group_id: $dg,
            policy: $q.policy,
            priority: $q.priority,
            nic_type: $q.nic_type,
            description: $d,
            ipv6_source_cidr_ip: $q.ipv6_source_cidr_ip,
            ipv6_dest_cidr_ip: $q.ipv6_dest_cidr_ip,
        }
    };
}

/// The legacy flat parameters describe one rule; they count only when a protocol is given.
fn with_flat(mut perms: Vec<PermissionInput>, flat: PermissionInput) -> Vec<PermissionInput> {
    if !flat.ip_protocol.is_empty() {
        perms.push(flat);
    }
    perms
}

#[tonic::async_trait]
impl Ecs for EcsService {
    async fn create_instance(&self, req: Request<pb::CreateInstanceRequest>) -> Res<pb::CreateInstanceResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let m = m_inst::CreateInstance {
            instance_type: q.instance_type,
            zone_id: opt(q.zone_id),
            v_switch_id: q.v_switch_id,
            security_group_ids: q.security_group_ids.into_iter().chain(opt(q.security_group_id)).collect(),
            private_ip_address: opt(q.private_ip_address),
            instance_name: opt(q.instance_name),
            host_name: opt(q.host_name),
            description: q.description,
            tags: tags(q.tag),
            client_token: opt(q.client_token),
        };
        let v = self.ctx.call(&rid, &q.region_id, move |r, now| r.create_instance(m, now)).await?;
        Ok(Response::new(pb::CreateInstanceResponse { request_id: rid, instance_id: v.instance.instance_id }))
    }

    async fn describe_instances(
        &self,
        req: Request<pb::DescribeInstancesRequest>,
    ) -> Res<pb::DescribeInstancesResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let region = self.ctx.model.region_id().to_string();
        let (items, info) = self
            .ctx
            .call_with(
                &rid,
                &q.region_id,
                move || {
                    Ok(m_inst::DescribeInstances {
                        instance_ids: parse_json_list("InstanceIds", &q.instance_ids)?,
                        vpc_id: opt(q.vpc_id),
                        v_switch_id: opt(q.v_switch_id),
                        zone_id: opt(q.zone_id),
                        instance_name: opt(q.instance_name),
                        instance_type: opt(q.instance_type),
                        status: opt(q.status),
                        private_ip_addresses: parse_json_list("PrivateIpAddresses", &q.private_ip_addresses)?,
                        tags: tags(q.tag),
                        page: page(q.page_number, q.page_size, q.max_results.map(i64::from), q.next_token),
                    })
                },
                |r, now, m| r.describe_instances(&m, now),
            )
            .await?;
        Ok(Response::new(pb::DescribeInstancesResponse {
            request_id: rid,
            total_count: info.total_count as i32,
            page_number: info.page_number as i32,
            page_size: info.page_size as i32,
            next_token: info.next_token,
            instances: Some(pb::InstanceList {
                instance: items.iter().map(|v| render::instance_item(&region, v)).collect(),
            }),
        }))
    }

    async fn delete_instance(&self, req: Request<pb::DeleteInstanceRequest>) -> Res<pb::DeleteInstanceResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let force = q.force.unwrap_or(false);
        self.ctx.call(&rid, &q.region_id, move |r, now| r.delete_instance(&q.instance_id, force, now)).await?;
        Ok(Response::new(pb::DeleteInstanceResponse { request_id: rid }))
    }

    async fn start_instance(&self, req: Request<pb::StartInstanceRequest>) -> Res<pb::StartInstanceResponse> {
        let q = req.into_inner();
        let rid = request_id();
        self.ctx.call(&rid, &q.region_id, move |r, now| r.start_instance(&q.instance_id, now)).await?;
        Ok(Response::new(pb::StartInstanceResponse { request_id: rid }))
    }

    async fn stop_instance(&self, req: Request<pb::StopInstanceRequest>) -> Res<pb::StopInstanceResponse> {
        let q = req.into_inner();
        let rid = request_id();
        self.ctx.call(&rid, &q.region_id, move |r, now| r.stop_instance(&q.instance_id, now)).await?;
        Ok(Response::new(pb::StopInstanceResponse { request_id: rid }))
    }

    async fn describe_instance_types(
        &self,
        req: Request<pb::DescribeInstanceTypesRequest>,
    ) -> Res<pb::DescribeInstanceTypesResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let m = m_inst::DescribeInstanceTypes {
            instance_types: q.instance_types,
            instance_type_family: opt(q.instance_type_family),
            page: page(None, None, q.max_results, q.next_token),
        };
        let (items, info) = self.ctx.call(&rid, &q.region_id, move |r, now| r.describe_instance_types(&m, now)).await?;
        Ok(Response::new(pb::DescribeInstanceTypesResponse {
            request_id: rid,
            next_token: info.next_token,
            instance_types: Some(pb::InstanceTypeList {
                instance_type: items.iter().map(render::instance_type_item).collect(),
            }),
        }))
    }

    async fn create_network_interface(
        &self,
        req: Request<pb::CreateNetworkInterfaceRequest>,
    ) -> Res<pb::CreateNetworkInterfaceResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let eni = self
            .ctx
            .call_with(
                &rid,
                &q.region_id,
                move || {
                    Ok(m_eni::CreateNetworkInterface {
                        v_switch_id: q.v_switch_id,
                        security_group_id: opt(q.security_group_id),
                        security_group_ids: q.security_group_ids,
                        instance_type: opt(q.instance_type),
                        primary_ip_address: opt(q.primary_ip_address),
                        private_ip_addresses: q.private_ip_address,
                        secondary_private_ip_address_count: count(
                            "SecondaryPrivateIpAddressCount",
                            q.secondary_private_ip_address_count,
                        )?,
                        ipv6_address_count: count("Ipv6AddressCount", q.ipv6_address_count)?,
                        ipv6_addresses: q.ipv6_address,
                        ipv4_prefix_count: count("Ipv4PrefixCount", q.ipv4_prefix_count)?,
                        ipv6_prefix_count: count("Ipv6PrefixCount", q.ipv6_prefix_count)?,
                        ipv4_prefixes: q.ipv4_prefix,
                        ipv6_prefixes: q.ipv6_prefix,
                        network_interface_name: q.network_interface_name,
                        description: q.description,
                        tags: tags(q.tag),
                        delete_on_release: q.delete_on_release,
                        source_dest_check: q.source_dest_check,
                        network_interface_traffic_mode: opt(q.network_interface_traffic_mode),
                        resource_group_id: q.resource_group_id,
                        client_token: opt(q.client_token),
                    })
                },
                |r, now, m| r.create_network_interface(m, now),
            )
            .await?;
        Ok(Response::new(render::create_eni_response(rid, &eni)))
    }

    async fn attach_network_interface(
        &self,
        req: Request<pb::AttachNetworkInterfaceRequest>,
    ) -> Res<pb::AttachNetworkInterfaceResponse> {
        let q = req.into_inner();
        let rid = request_id();
        self.ctx
            .call_with(
                &rid,
                &q.region_id,
                move || {
                    Ok(m_eni::AttachNetworkInterface {
                        network_interface_id: q.network_interface_id,
                        instance_id: q.instance_id,
                        trunk_network_instance_id: opt(q.trunk_network_instance_id),
                        network_card_index: count("NetworkCardIndex", q.network_card_index)?,
                    })
                },
                |r, now, m| r.attach_network_interface(m, now),
            )
            .await?;
        Ok(Response::new(pb::AttachNetworkInterfaceResponse { request_id: rid }))
    }

    async fn detach_network_interface(
        &self,
        req: Request<pb::DetachNetworkInterfaceRequest>,
    ) -> Res<pb::DetachNetworkInterfaceResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let m = m_eni::DetachNetworkInterface {
            network_interface_id: q.network_interface_id,
            instance_id: q.instance_id,
            trunk_network_instance_id: opt(q.trunk_network_instance_id),
        };
        self.ctx.call(&rid, &q.region_id, move |r, now| r.detach_network_interface(m, now)).await?;
        Ok(Response::new(pb::DetachNetworkInterfaceResponse { request_id: rid }))
    }

    async fn delete_network_interface(
        &self,
        req: Request<pb::DeleteNetworkInterfaceRequest>,
    ) -> Res<pb::DeleteNetworkInterfaceResponse> {
        let q = req.into_inner();
        let rid = request_id();
        self.ctx
            .call(&rid, &q.region_id, move |r, now| r.delete_network_interface(&q.network_interface_id, now))
            .await?;
        Ok(Response::new(pb::DeleteNetworkInterfaceResponse { request_id: rid }))
    }

    async fn describe_network_interfaces(
        &self,
        req: Request<pb::DescribeNetworkInterfacesRequest>,
    ) -> Res<pb::DescribeNetworkInterfacesResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let m = m_eni::DescribeNetworkInterfaces {
            vpc_id: opt(q.vpc_id),
            v_switch_id: opt(q.v_switch_id),
            instance_id: opt(q.instance_id),
            r#type: opt(q.r#type),
            status: opt(q.status),
            network_interface_ids: q.network_interface_id,
            private_ip_addresses: q.private_ip_address,
            ipv6_addresses: q.ipv6_address,
            primary_ip_address: opt(q.primary_ip_address),
            security_group_id: opt(q.security_group_id),
            network_interface_name: opt(q.network_interface_name),
            resource_group_id: opt(q.resource_group_id),
            tags: tags(q.tag),
            page: page(q.page_number, q.page_size, q.max_results.map(i64::from), q.next_token),
        };
        let (items, info) =
            self.ctx.call(&rid, &q.region_id, move |r, now| r.describe_network_interfaces(&m, now)).await?;
        Ok(Response::new(pb::DescribeNetworkInterfacesResponse {
            request_id: rid,
            total_count: info.total_count as i32,
            page_number: info.page_number as i32,
            page_size: info.page_size as i32,
            next_token: info.next_token,
            network_interface_sets: Some(pb::NetworkInterfaceSets {
                network_interface_set: items.iter().map(render::network_interface_set).collect(),
            }),
        }))
    }

    async fn describe_network_interface_attribute(
        &self,
        req: Request<pb::DescribeNetworkInterfaceAttributeRequest>,
    ) -> Res<pb::DescribeNetworkInterfaceAttributeResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let a = self
            .ctx
            .call(&rid, &q.region_id, move |r, now| {
                r.describe_network_interface_attribute(&q.network_interface_id, now)
            })
            .await?;
        Ok(Response::new(render::eni_attribute(rid, &a.eni, a.member_network_interface_ids)))
    }

    async fn assign_private_ip_addresses(
        &self,
        req: Request<pb::AssignPrivateIpAddressesRequest>,
    ) -> Res<pb::AssignPrivateIpAddressesResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let got = self
            .ctx
            .call_with(
                &rid,
                &q.region_id,
                move || {
                    Ok(m_eni::AssignPrivateIpAddresses {
                        network_interface_id: q.network_interface_id,
                        secondary_private_ip_address_count: count(
                            "SecondaryPrivateIpAddressCount",
                            q.secondary_private_ip_address_count,
                        )?,
                        private_ip_addresses: q.private_ip_address,
                        ipv4_prefix_count: count("Ipv4PrefixCount", q.ipv4_prefix_count)?,
                        ipv4_prefixes: q.ipv4_prefix,
                        client_token: opt(q.client_token),
                    })
                },
                |r, now, m| r.assign_private_ip_addresses(m, now),
            )
            .await?;
        Ok(Response::new(pb::AssignPrivateIpAddressesResponse {
            request_id: rid,
            assigned_private_ip_addresses_set: Some(pb::AssignedPrivateIpAddressesSet {
                network_interface_id: got.network_interface_id,
                private_ip_set: Some(pb::AssignedPrivateIpList { private_ip_address: got.private_ip_addresses }),
                ipv4_prefix_set: Some(pb::AssignedIpv4PrefixList { ipv4_prefixes: got.ipv4_prefixes }),
            }),
        }))
    }

    async fn unassign_private_ip_addresses(
        &self,
        req: Request<pb::UnassignPrivateIpAddressesRequest>,
    ) -> Res<pb::UnassignPrivateIpAddressesResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let m = m_eni::UnassignPrivateIpAddresses {
            network_interface_id: q.network_interface_id,
            private_ip_addresses: q.private_ip_address,
            ipv4_prefixes: q.ipv4_prefix,
        };
        self.ctx.call(&rid, &q.region_id, move |r, now| r.unassign_private_ip_addresses(m, now)).await?;
        Ok(Response::new(pb::UnassignPrivateIpAddressesResponse { request_id: rid }))
    }

    async fn assign_ipv6_addresses(
        &self,
        req: Request<pb::AssignIpv6AddressesRequest>,
    ) -> Res<pb::AssignIpv6AddressesResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let got = self
            .ctx
            .call_with(
                &rid,
                &q.region_id,
                move || {
                    Ok(m_eni::AssignIpv6Addresses {
                        network_interface_id: q.network_interface_id,
                        ipv6_address_count: count("Ipv6AddressCount", q.ipv6_address_count)?,
                        ipv6_addresses: q.ipv6_address,
                        ipv6_prefix_count: count("Ipv6PrefixCount", q.ipv6_prefix_count)?,
                        ipv6_prefixes: q.ipv6_prefix,
                        client_token: opt(q.client_token),
                    })
                },
                |r, now, m| r.assign_ipv6_addresses(m, now),
            )
            .await?;
        Ok(Response::new(pb::AssignIpv6AddressesResponse {
            request_id: rid,
            network_interface_id: got.network_interface_id,
            ipv6_sets: Some(pb::AssignedIpv6List { ipv6_address: got.ipv6_addresses }),
            ipv6_prefix_sets: Some(pb::AssignedIpv6PrefixList { ipv6_prefix: got.ipv6_prefixes }),
        }))
    }

    async fn unassign_ipv6_addresses(
        &self,
        req: Request<pb::UnassignIpv6AddressesRequest>,
    ) -> Res<pb::UnassignIpv6AddressesResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let m = m_eni::UnassignIpv6Addresses {
            network_interface_id: q.network_interface_id,
            ipv6_addresses: q.ipv6_address,
            ipv6_prefixes: q.ipv6_prefix,
        };
        self.ctx.call(&rid, &q.region_id, move |r, now| r.unassign_ipv6_addresses(m, now)).await?;
        Ok(Response::new(pb::UnassignIpv6AddressesResponse { request_id: rid }))
    }

    async fn modify_network_interface_attribute(
        &self,
        req: Request<pb::ModifyNetworkInterfaceAttributeRequest>,
    ) -> Res<pb::ModifyNetworkInterfaceAttributeResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let m = m_eni::ModifyNetworkInterfaceAttribute {
            network_interface_id: q.network_interface_id,
            security_group_ids: q.security_group_id,
            network_interface_name: q.network_interface_name,
            description: q.description,
            delete_on_release: q.delete_on_release,
            source_dest_check: q.source_dest_check,
        };
        self.ctx.call(&rid, &q.region_id, move |r, now| r.modify_network_interface_attribute(m, now)).await?;
        Ok(Response::new(pb::ModifyNetworkInterfaceAttributeResponse { request_id: rid }))
    }

    async fn create_security_group(
        &self,
        req: Request<pb::CreateSecurityGroupRequest>,
    ) -> Res<pb::CreateSecurityGroupResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let m = m_sg::CreateSecurityGroup {
            vpc_id: q.vpc_id,
            security_group_name: q.security_group_name,
            description: q.description,
            security_group_type: q.security_group_type,
            resource_group_id: q.resource_group_id,
            tags: tags(q.tag),
            client_token: opt(q.client_token),
        };
        let sg = self.ctx.call(&rid, &q.region_id, move |r, now| r.create_security_group(m, now)).await?;
        Ok(Response::new(pb::CreateSecurityGroupResponse { request_id: rid, security_group_id: sg.security_group_id }))
    }

    async fn delete_security_group(
        &self,
        req: Request<pb::DeleteSecurityGroupRequest>,
    ) -> Res<pb::DeleteSecurityGroupResponse> {
        let q = req.into_inner();
        let rid = request_id();
        self.ctx.call(&rid, &q.region_id, move |r, now| r.delete_security_group(&q.security_group_id, now)).await?;
        Ok(Response::new(pb::DeleteSecurityGroupResponse { request_id: rid }))
    }

    async fn describe_security_groups(
        &self,
        req: Request<pb::DescribeSecurityGroupsRequest>,
    ) -> Res<pb::DescribeSecurityGroupsResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let region = self.ctx.model.region_id().to_string();
        let (items, info) = self
            .ctx
            .call_with(
                &rid,
                &q.region_id,
                move || {
                    let mut ids = parse_json_list("SecurityGroupIds", &q.security_group_ids)?;
                    ids.extend(comma_list(&q.security_group_id));
                    Ok(m_sg::DescribeSecurityGroups {
                        vpc_id: opt(q.vpc_id),
                        security_group_ids: ids,
                        security_group_name: opt(q.security_group_name),
                        security_group_type: opt(q.security_group_type),
                        network_interface_id: None,
                        tags: tags(q.tag),
                        page: page(q.page_number, q.page_size, q.max_results.map(i64::from), q.next_token),
                    })
                },
                |r, now, m| r.describe_security_groups(&m, now),
            )
            .await?;
        Ok(Response::new(pb::DescribeSecurityGroupsResponse {
            request_id: rid,
            region_id: region,
            total_count: info.total_count as i32,
            page_number: info.page_number as i32,
            page_size: info.page_size as i32,
            next_token: info.next_token,
            security_groups: Some(pb::SecurityGroupList {
                security_group: items.iter().map(render::security_group_item).collect(),
            }),
        }))
    }

    async fn describe_security_group_attribute(
        &self,
        req: Request<pb::DescribeSecurityGroupAttributeRequest>,
    ) -> Res<pb::DescribeSecurityGroupAttributeResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let region = self.ctx.model.region_id().to_string();
        let dir = opt(q.direction);
        let (sg, rules) = self
            .ctx
            .call(&rid, &q.region_id, move |r, now| {
                r.describe_security_group_attribute(&q.security_group_id, dir.as_deref(), now)
            })
            .await?;
        Ok(Response::new(pb::DescribeSecurityGroupAttributeResponse {
            request_id: rid,
            region_id: region,
            security_group_id: sg.security_group_id,
            security_group_name: sg.security_group_name,
            description: sg.description,
            vpc_id: sg.vpc_id,
            inner_access_policy: if sg.inner_access_accept { "Accept".into() } else { "Drop".into() },
            permissions: Some(pb::PermissionList { permission: rules.iter().map(render::permission_item).collect() }),
        }))
    }

    async fn authorize_security_group(
        &self,
        req: Request<pb::AuthorizeSecurityGroupRequest>,
    ) -> Res<pb::AuthorizeSecurityGroupResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let flat = flat_permission!(q, source_group_id: q.source_group_id, dest_group_id: String::new(), description: q.description);
        let m = m_sg::AuthorizeSecurityGroup {
            security_group_id: q.security_group_id,
            permissions: with_flat(q.permissions.into_iter().map(permission).collect(), flat),
            client_token: opt(q.client_token),
        };
        self.ctx.call(&rid, &q.region_id, move |r, now| r.authorize_security_group(Direction::Ingress, m, now)).await?;
        Ok(Response::new(pb::AuthorizeSecurityGroupResponse { request_id: rid }))
    }

    async fn authorize_security_group_egress(
        &self,
        req: Request<pb::AuthorizeSecurityGroupEgressRequest>,
    ) -> Res<pb::AuthorizeSecurityGroupEgressResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let flat = flat_permission!(q, source_group_id: String::new(), dest_group_id: q.dest_group_id, description: q.description);
        let m = m_sg::AuthorizeSecurityGroup {
            security_group_id: q.security_group_id,
            permissions: with_flat(q.permissions.into_iter().map(permission).collect(), flat),
            client_token: opt(q.client_token),
        };
        self.ctx.call(&rid, &q.region_id, move |r, now| r.authorize_security_group(Direction::Egress, m, now)).await?;
        Ok(Response::new(pb::AuthorizeSecurityGroupEgressResponse { request_id: rid }))
    }

    async fn revoke_security_group(
        &self,
        req: Request<pb::RevokeSecurityGroupRequest>,
    ) -> Res<pb::RevokeSecurityGroupResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let flat = flat_permission!(q, source_group_id: q.source_group_id, dest_group_id: String::new(), description: String::new());
        let m = m_sg::RevokeSecurityGroup {
            security_group_id: q.security_group_id,
            security_group_rule_ids: q.security_group_rule_id,
            permissions: with_flat(q.permissions.into_iter().map(permission).collect(), flat),
        };
        self.ctx.call(&rid, &q.region_id, move |r, now| r.revoke_security_group(Direction::Ingress, m, now)).await?;
        Ok(Response::new(pb::RevokeSecurityGroupResponse { request_id: rid }))
    }

    async fn revoke_security_group_egress(
        &self,
        req: Request<pb::RevokeSecurityGroupEgressRequest>,
    ) -> Res<pb::RevokeSecurityGroupEgressResponse> {
        let q = req.into_inner();
        let rid = request_id();
        let flat = flat_permission!(q, source_group_id: String::new(), dest_group_id: q.dest_group_id, description: String::new());
        let m = m_sg::RevokeSecurityGroup {
            security_group_id: q.security_group_id,
            security_group_rule_ids: q.security_group_rule_id,
            permissions: with_flat(q.permissions.into_iter().map(permission).collect(), flat),
        };
        self.ctx.call(&rid, &q.region_id, move |r, now| r.revoke_security_group(Direction::Egress, m, now)).await?;
        Ok(Response::new(pb::RevokeSecurityGroupEgressResponse { request_id: rid }))
    }

    async fn modify_security_group_policy(
        &self,
        req: Request<pb::ModifySecurityGroupPolicyRequest>,
    ) -> Res<pb::ModifySecurityGroupPolicyResponse> {
        let q = req.into_inner();
        let rid = request_id();
        self.ctx
            .call(&rid, &q.region_id, move |r, now| {
                r.modify_security_group_policy(&q.security_group_id, &q.inner_access_policy, now)
            })
            .await?;
        Ok(Response::new(pb::ModifySecurityGroupPolicyResponse { request_id: rid }))
    }
}
