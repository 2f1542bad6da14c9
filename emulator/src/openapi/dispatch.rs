//! Version → product, action → the gRPC handler that serves it.
//!
//! There is no second implementation of any action here: a request message decoded from the
//! cloud's flat parameters (`codec::params_to_message`) is transcoded to the generated proto type
//! and handed to the very `EcsService` / `VpcService` / `SlbService` / `EmulatorService` method
//! the gRPC face calls; its response is rendered with `codec::to_json`, which is the cloud's JSON because the
//! proto mirrors the cloud's names and layout. The tables below are checked against the proto
//! descriptors by a test, so an action added to the proto cannot be forgotten here.
//!
//! Routing follows the cloud's endpoints: the product is chosen by `Version` (ECS `2014-05-26`,
//! VPC `2016-04-28`, SLB `2014-05-15`); no two share a version, so the `Host` the client used is
//! not needed to tell them apart, and one emulator port can be `ECS_ENDPOINT`, `VPC_ENDPOINT` and
//! `SLB_ENDPOINT` at once. The emulator's own actions answer under the version `enifab-v1`.

use enifab_model::error::Product;
use enifab_proto::v1::ecs_server::Ecs;
use enifab_proto::v1::emulator_server::Emulator;
use enifab_proto::v1::slb_server::Slb;
use enifab_proto::v1::vpc_server::Vpc;
use prost_reflect::DynamicMessage;
use tonic::Status;

use crate::codec;
use crate::grpc::ecs::EcsService;
use crate::grpc::emulator::EmulatorService;
use crate::grpc::slb::SlbService;
use crate::grpc::vpc::VpcService;

pub const ECS_VERSION: &str = "2014-05-26";
pub const VPC_VERSION: &str = "2016-04-28";
pub const SLB_VERSION: &str = "2014-05-15";
/// The version the emulator-only actions (`enifab.v1.Emulator`) answer under.
pub const EMULATOR_VERSION: &str = "enifab-v1";

/// A product of the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Ecs,
    Vpc,
    Slb,
    Emulator,
}

impl Api {
    pub fn from_version(version: &str) -> Option<Api> {
        match version {
            ECS_VERSION => Some(Api::Ecs),
            VPC_VERSION => Some(Api::Vpc),
            SLB_VERSION => Some(Api::Slb),
            EMULATOR_VERSION => Some(Api::Emulator),
            _ => None,
        }
    }

    /// The `enifab.v1` service that serves it.
    pub fn service(self) -> &'static str {
        match self {
            Api::Ecs => "Ecs",
            Api::Vpc => "Vpc",
            Api::Slb => "Slb",
            Api::Emulator => "Emulator",
        }
    }

    /// The product code the cloud uses in `Recommend` links.
    pub fn product_code(self) -> &'static str {
        match self {
            Api::Ecs => "Ecs",
            Api::Vpc => "Vpc",
            Api::Slb => "Slb",
            Api::Emulator => "Enifab",
        }
    }

    /// `HostId` in error answers: the product's endpoint, as the gRPC face's ErrorInfo domain.
    pub fn host_id(self) -> &'static str {
        match self {
            Api::Ecs | Api::Emulator => Product::Ecs.domain(),
            Api::Vpc => Product::Vpc.domain(),
            Api::Slb => Product::Slb.domain(),
        }
    }
}

/// The handlers, the same values the gRPC routes serve.
#[derive(Clone, Debug)]
pub struct Services {
    pub ecs: EcsService,
    pub vpc: VpcService,
    pub slb: SlbService,
    pub emulator: EmulatorService,
}

/// `"Name" => method` rows: transcode the dynamic request to the method's proto type, call the
/// handler, render its response.
macro_rules! table {
    ($svc:expr, $action:expr, $msg:expr; $($name:literal => $method:ident),+ $(,)?) => {
        match $action {
            $($name => {
                let request = $msg
                    .transcode_to()
                    .map_err(|e| Status::internal(format!("{}: decoding the request: {e}", $name)))?;
                let response = $svc.$method(tonic::Request::new(request)).await?;
                Ok(codec::to_json(response.get_ref()))
            })+
            other => Err(Status::unimplemented(format!("no action {other}"))),
        }
    };
}

impl Services {
    /// Run `action` of `api` with the decoded request `msg`; the cloud's JSON on success.
    pub async fn call(&self, api: Api, action: &str, msg: DynamicMessage) -> Result<serde_json::Value, Status> {
        match api {
            Api::Ecs => table!(self.ecs, action, msg;
                "CreateInstance" => create_instance,
                "DescribeInstances" => describe_instances,
                "DeleteInstance" => delete_instance,
                "StartInstance" => start_instance,
                "StopInstance" => stop_instance,
                "DescribeInstanceTypes" => describe_instance_types,
                "CreateNetworkInterface" => create_network_interface,
                "AttachNetworkInterface" => attach_network_interface,
                "DetachNetworkInterface" => detach_network_interface,
                "DeleteNetworkInterface" => delete_network_interface,
                "DescribeNetworkInterfaces" => describe_network_interfaces,
                "DescribeNetworkInterfaceAttribute" => describe_network_interface_attribute,
                "AssignPrivateIpAddresses" => assign_private_ip_addresses,
                "UnassignPrivateIpAddresses" => unassign_private_ip_addresses,
                "AssignIpv6Addresses" => assign_ipv6_addresses,
                "UnassignIpv6Addresses" => unassign_ipv6_addresses,
                "ModifyNetworkInterfaceAttribute" => modify_network_interface_attribute,
                "CreateSecurityGroup" => create_security_group,
                "DeleteSecurityGroup" => delete_security_group,
                "DescribeSecurityGroups" => describe_security_groups,
                "DescribeSecurityGroupAttribute" => describe_security_group_attribute,
                "AuthorizeSecurityGroup" => authorize_security_group,
                "AuthorizeSecurityGroupEgress" => authorize_security_group_egress,
                "RevokeSecurityGroup" => revoke_security_group,
                "RevokeSecurityGroupEgress" => revoke_security_group_egress,
                "ModifySecurityGroupPolicy" => modify_security_group_policy,
            ),
            Api::Vpc => table!(self.vpc, action, msg;
                "CreateVpc" => create_vpc,
                "DescribeVpcs" => describe_vpcs,
                "DescribeVpcAttribute" => describe_vpc_attribute,
                "DeleteVpc" => delete_vpc,
                "CreateVSwitch" => create_v_switch,
                "DescribeVSwitches" => describe_v_switches,
                "DeleteVSwitch" => delete_v_switch,
                "ModifyVpcAttribute" => modify_vpc_attribute,
                "ModifyVSwitchAttribute" => modify_v_switch_attribute,
            ),
            Api::Slb => table!(self.slb, action, msg;
                "CreateLoadBalancer" => create_load_balancer,
                "DescribeLoadBalancers" => describe_load_balancers,
                "DescribeLoadBalancerAttribute" => describe_load_balancer_attribute,
                "SetLoadBalancerName" => set_load_balancer_name,
                "SetLoadBalancerDeleteProtection" => set_load_balancer_delete_protection,
                "SetLoadBalancerModificationProtection" => set_load_balancer_modification_protection,
                "DeleteLoadBalancer" => delete_load_balancer,
                "TagResources" => tag_resources,
                "UntagResources" => untag_resources,
                "ListTagResources" => list_tag_resources,
                "CreateVServerGroup" => create_v_server_group,
                "DescribeVServerGroups" => describe_v_server_groups,
                "DescribeVServerGroupAttribute" => describe_v_server_group_attribute,
                "AddVServerGroupBackendServers" => add_v_server_group_backend_servers,
                "RemoveVServerGroupBackendServers" => remove_v_server_group_backend_servers,
                "SetVServerGroupAttribute" => set_v_server_group_attribute,
                "ModifyVServerGroupBackendServers" => modify_v_server_group_backend_servers,
                "DeleteVServerGroup" => delete_v_server_group,
                "CreateLoadBalancerTCPListener" => create_load_balancer_tcp_listener,
                "CreateLoadBalancerUDPListener" => create_load_balancer_udp_listener,
                "SetLoadBalancerTCPListenerAttribute" => set_load_balancer_tcp_listener_attribute,
                "SetLoadBalancerUDPListenerAttribute" => set_load_balancer_udp_listener_attribute,
                "DescribeLoadBalancerTCPListenerAttribute" => describe_load_balancer_tcp_listener_attribute,
                "DescribeLoadBalancerUDPListenerAttribute" => describe_load_balancer_udp_listener_attribute,
                "DescribeLoadBalancerListeners" => describe_load_balancer_listeners,
                "StartLoadBalancerListener" => start_load_balancer_listener,
                "StopLoadBalancerListener" => stop_load_balancer_listener,
                "DeleteLoadBalancerListener" => delete_load_balancer_listener,
                "DescribeHealthStatus" => describe_health_status,
            ),
            Api::Emulator => table!(self.emulator, action, msg;
                "CreateInstanceType" => create_instance_type,
                "InjectFault" => inject_fault,
                "IssueNodeToken" => issue_node_token,
                "BeginDryRun" => begin_dry_run,
                "EndDryRun" => end_dry_run,
            ),
        }
    }
}
