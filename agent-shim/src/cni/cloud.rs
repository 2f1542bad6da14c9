//! The cloud side of a trunk pod, as Terway's controller does it: a Secondary ENI per pod in
//! the pod's vSwitch with the pod's security groups (tagged as Terway tags member ENIs),
//! attached to the node's trunk with `TrunkNetworkInstanceId`, waited on until `InUse`; its
//! `Attachment.DeviceIndex` is the pod's VLAN id. Release is detach, wait for `Available`,
//! delete, wait until the ENI is gone, treating "not found" as done (Terway's rule).
//!
//! These are AccessKey calls, as terwayd's are: with an emulator that requires credentials, each
//! one is signed (enifab's gRPC scheme, `enifab_proto::auth`) with the key the
//! configuration's `accessKeyFile` names, else `ENIFAB_ACCESS_KEY_ID`/`ENIFAB_ACCESS_KEY_SECRET`,
//! else `ENIFAB_ACCESS_KEY_FILE`; without any, calls go unsigned.

use std::time::{Duration, Instant};

use enifab_proto::auth::KeyFileError;
use enifab_proto::v1 as pb;
use pb::ecs_client::EcsClient;
use pb::vpc_client::VpcClient;
use rscni_plugin::error::Error;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use super::conf::{EnifabConf, IpStack, PodRequest};
use super::plan::PodIpv6;
use crate::control::{AccessKey, endpoint_url};
use enifab_net::{Cidr, Cidr6};

use crate::view::IN_USE;

/// The tag naming the datapath a member ENI's pod is wired with (`veth` or `vlan`).
pub const DATAPATH_TAG: &str = "enifab.io/datapath";

/// The tag that ties a member ENI to the container it serves.
pub const CONTAINER_TAG: &str = "enifab:container";

/// The channel every cloud call goes through, signing it when there is a key.
pub type Signed = InterceptedService<Channel, Signer>;

pub struct Cloud {
    pub ecs: EcsClient<Signed>,
    pub vpc: VpcClient<Signed>,
}

/// Signs each call for its method (`/enifab.v1.Ecs/CreateNetworkInterface`), which the generated
/// client names in the request's extensions.
#[derive(Debug, Clone)]
pub struct Signer(Option<AccessKey>);

impl Interceptor for Signer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(key) = &self.0 else { return Ok(request) };
        let path = match request.extensions().get::<tonic::GrpcMethod<'static>>() {
            Some(m) => format!("/{}/{}", m.service(), m.method()),
            None => return Err(tonic::Status::internal("a cloud call without a method name cannot be signed")),
        };
        key.sign_metadata(request.metadata_mut(), &path);
        Ok(request)
    }
}

/// The AccessKey the plugin signs with: `accessKeyFile` of the configuration, else the
/// environment (the same variables as `enifab serve`), else none. Unlike the CLI, half a key in
/// the environment is an error: a plugin has no flags to complete it, and an unsigned pod would
/// fail later and less clearly.
pub fn access_key(conf_file: Option<&std::path::Path>) -> Result<Option<AccessKey>, Error> {
    let invalid = |e: KeyFileError| Error::InvalidNetworkConfig(e.to_string());
    if let Some(p) = conf_file {
        return AccessKey::first_in_file(p).map(Some).map_err(invalid);
    }
    let set = |k| std::env::var(k).is_ok_and(|v| !v.is_empty());
    if set("ENIFAB_ACCESS_KEY_ID") != set("ENIFAB_ACCESS_KEY_SECRET") {
        return Err(Error::InvalidNetworkConfig(
            "ENIFAB_ACCESS_KEY_ID and ENIFAB_ACCESS_KEY_SECRET go together".into(),
        ));
    }
    AccessKey::from_env().map_err(invalid)
}

/// A cloud error becomes CNI error 100 with the cloud's code as the message; an unreachable
/// emulator is "try again later" (11).
pub fn cni_error(s: tonic::Status) -> Error {
    match s.get_details_error_info() {
        Some(info) => {
            let msg = s.message().strip_prefix(&format!("{}: ", info.reason)).unwrap_or(s.message()).to_string();
            Error::Custom(100, info.reason, msg)
        }
        None => Error::TryAgainLater(format!("the emulator: {}", s.message())),
    }
}

/// What a pod takes from its member ENI's vSwitch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VSwitchInfo {
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
    /// The IPv6 /64's prefix length and gateway, when the vSwitch has one.
    pub ipv6: Option<(u8, std::net::Ipv6Addr)>,
}

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

impl Cloud {
    /// Connect as the configuration says: its endpoint, signed with its key (see [`access_key`]).
    pub async fn for_conf(conf: &EnifabConf) -> Result<Cloud, Error> {
        Cloud::connect(&conf.endpoint, access_key(conf.access_key_file.as_deref())?).await
    }

    pub async fn connect(endpoint: &str, key: Option<AccessKey>) -> Result<Cloud, Error> {
        let ch = tonic::transport::Endpoint::from_shared(endpoint_url(endpoint))
            .map_err(|e| Error::InvalidNetworkConfig(format!("endpoint: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| Error::TryAgainLater(format!("cannot reach the emulator at {endpoint}: {e}")))?;
        let signer = Signer(key);
        Ok(Cloud {
            ecs: EcsClient::with_interceptor(ch.clone(), signer.clone()),
            vpc: VpcClient::with_interceptor(ch, signer),
        })
    }

    async fn describe(
        &mut self,
        q: pb::DescribeNetworkInterfacesRequest,
    ) -> Result<Vec<pb::NetworkInterfaceSet>, Error> {
        Ok(self
            .ecs
            .describe_network_interfaces(q)
            .await
            .map_err(cni_error)?
            .into_inner()
            .network_interface_sets
            .unwrap_or_default()
            .network_interface_set)
    }

    pub async fn eni(&mut self, id: &str) -> Result<Option<pb::NetworkInterfaceSet>, Error> {
        Ok(self
            .describe(pb::DescribeNetworkInterfacesRequest {
                network_interface_id: vec![id.to_string()],
                ..Default::default()
            })
            .await?
            .into_iter()
            .next())
    }

    /// The member ENI made for this container, if any.
    pub async fn member_of(&mut self, container: &str) -> Result<Option<pb::NetworkInterfaceSet>, Error> {
        let tag = pb::Tag { key: CONTAINER_TAG.into(), value: container.into() };
        Ok(self
            .describe(pb::DescribeNetworkInterfacesRequest {
                tag: vec![tag],
                max_results: Some(10),
                ..Default::default()
            })
            .await?
            .into_iter()
            .next())
    }

    /// The member ENIs attached to `trunk` that this plugin made (tagged with their container),
    /// each with that container's id.
    pub async fn members_on(&mut self, trunk: &str) -> Result<Vec<(String, pb::NetworkInterfaceSet)>, Error> {
        let mut found = Vec::new();
        let mut next_token = String::new();
        loop {
            let r = self
                .ecs
                .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                    tag: vec![pb::Tag { key: CONTAINER_TAG.into(), value: String::new() }],
                    max_results: Some(100),
                    next_token: next_token.clone(),
                    ..Default::default()
                })
                .await
                .map_err(cni_error)?
                .into_inner();
            for eni in r.network_interface_sets.unwrap_or_default().network_interface_set {
                let on_trunk = eni.attachment.as_ref().is_some_and(|a| a.trunk_network_interface_id == trunk);
                let container = eni.tags.as_ref().and_then(|t| t.tag.iter().find(|t| t.tag_key == CONTAINER_TAG));
                if let (true, Some(c)) = (on_trunk, container) {
                    found.push((c.tag_value.clone(), eni));
                }
            }
            if r.next_token.is_empty() {
                return Ok(found);
            }
            next_token = r.next_token;
        }
    }

    /// The node's trunk ENI.
    pub async fn trunk(&mut self, conf: &EnifabConf) -> Result<pb::NetworkInterfaceSet, Error> {
        if let Some(id) = &conf.trunk_network_interface_id {
            return self
                .eni(id)
                .await?
                .ok_or_else(|| Error::InvalidNetworkConfig(format!("trunk ENI {id} does not exist")));
        }
        let q = pb::DescribeNetworkInterfacesRequest {
            instance_id: conf.instance_id.clone(),
            r#type: "Trunk".into(),
            ..Default::default()
        };
        self.describe(q)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::InvalidNetworkConfig(format!("instance {} has no trunk ENI", conf.instance_id)))
    }

    /// Create the pod's member ENI (primary IP = pod IP; for a dual-stack pod, one IPv6 address
    /// too, the pinned one or the vSwitch's pick, as Terway asks with `Ipv6AddressCount`).
    pub async fn create_member(&mut self, req: &PodRequest, trunk: &pb::NetworkInterfaceSet) -> Result<String, Error> {
        let mut tags = vec![
            pb::Tag { key: "ack.aliyun.com".into(), value: req.conf.cluster_id.clone() },
            pb::Tag { key: "creator".into(), value: "terway-controller".into() },
            pb::Tag { key: CONTAINER_TAG.into(), value: req.container_id.clone() },
        ];
        if let Some(pod) = &req.pod {
            tags.push(pb::Tag { key: "k8s.aliyun.com/pod".into(), value: pod.clone() });
        }
        // Not Terway's: how the node wires the pod, so that `enifab trace` can draw the node's
        // side of the path too.
        tags.push(pb::Tag { key: DATAPATH_TAG.into(), value: req.datapath.as_str().into() });
        tags.extend(req.conf.tags.iter().map(|(k, v)| pb::Tag { key: k.clone(), value: v.clone() }));
        let groups = if req.security_group_ids.is_empty() {
            trunk.security_group_ids.as_ref().map(|g| g.security_group_id.clone()).unwrap_or_default()
        } else {
            req.security_group_ids.clone()
        };
        let r = self
            .ecs
            .create_network_interface(pb::CreateNetworkInterfaceRequest {
                v_switch_id: req.v_switch_id.clone().unwrap_or_else(|| trunk.v_switch_id.clone()),
                security_group_ids: groups,
                primary_ip_address: req.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                description: "interface create by terway".into(),
                tag: tags,
                source_dest_check: Some(false),
                ipv6_address_count: (req.ip_stack == IpStack::Dual && req.ip6.is_none()).then_some(1),
                ipv6_address: req.ip6.iter().map(|ip| ip.to_string()).collect(),
                ..Default::default()
            })
            .await
            .map_err(cni_error)?
            .into_inner();
        Ok(r.network_interface_id)
    }

    /// A dual-stack pod's IPv6 side: its member's first IPv6 address on the vSwitch's /64. A
    /// member without one (made for this container while it was IPv4 only) is assigned one
    /// first, the pinned address or the vSwitch's pick.
    pub async fn pod_ipv6(
        &mut self,
        req: &PodRequest,
        eni: &pb::NetworkInterfaceSet,
        vsw: VSwitchInfo,
    ) -> Result<PodIpv6, Error> {
        let id = &eni.network_interface_id;
        let first = |e: &pb::NetworkInterfaceSet| {
            e.ipv6_sets.as_ref().and_then(|s| s.ipv6_set.first()).map(|x| x.ipv6_address.clone())
        };
        let text = match first(eni) {
            Some(t) => t,
            None => {
                self.ecs
                    .assign_ipv6_addresses(pb::AssignIpv6AddressesRequest {
                        network_interface_id: id.clone(),
                        ipv6_address_count: req.ip6.is_none().then_some(1),
                        ipv6_address: req.ip6.iter().map(|ip| ip.to_string()).collect(),
                        ..Default::default()
                    })
                    .await
                    .map_err(cni_error)?;
                let again = self
                    .eni(id)
                    .await?
                    .ok_or_else(|| Error::Custom(100, "InvalidEniId.NotFound".into(), id.clone()))?;
                first(&again)
                    .ok_or_else(|| Error::Custom(100, "InvalidOperation.Ipv6NotAssigned".into(), id.clone()))?
            }
        };
        let ip = text.parse().map_err(|_| Error::FailedToDecode(text.clone()))?;
        let (prefix, gateway) = vsw.ipv6.ok_or_else(|| {
            Error::Custom(100, "InvalidVSwitchId.NoIpv6".into(), format!("{} has no IPv6 CIDR block", eni.v_switch_id))
        })?;
        Ok(PodIpv6 { ip, prefix, gateway })
    }

    pub async fn attach(&mut self, req: &PodRequest, member: &str, trunk: &str) -> Result<(), Error> {
        self.ecs
            .attach_network_interface(pb::AttachNetworkInterfaceRequest {
                instance_id: req.conf.instance_id.clone(),
                network_interface_id: member.into(),
                trunk_network_instance_id: trunk.into(),
                ..Default::default()
            })
            .await
            .map_err(cni_error)?;
        Ok(())
    }

    /// Poll until the ENI has `status` (or is gone, when `status` is empty).
    pub async fn wait(&mut self, id: &str, status: &str) -> Result<Option<pb::NetworkInterfaceSet>, Error> {
        let deadline = Instant::now() + WAIT;
        loop {
            let e = self.eni(id).await?;
            match &e {
                None if status.is_empty() => return Ok(None),
                Some(x) if x.status == status => return Ok(e),
                _ if Instant::now() > deadline => {
                    return Err(Error::TryAgainLater(format!("{id} did not become {status} within {WAIT:?}")));
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// A vSwitch's blocks as a pod needs them: prefix lengths and gateways.
    pub async fn vswitch(&mut self, id: &str) -> Result<VSwitchInfo, Error> {
        let r = self
            .vpc
            .describe_v_switches(pb::DescribeVSwitchesRequest { v_switch_id: id.into(), ..Default::default() })
            .await
            .map_err(cni_error)?
            .into_inner();
        let v = r
            .v_switches
            .unwrap_or_default()
            .v_switch
            .into_iter()
            .next()
            .ok_or_else(|| Error::Custom(100, "InvalidVSwitchId.NotFound".into(), id.into()))?;
        let block = Cidr::parse_lenient(&v.cidr_block).ok_or_else(|| Error::FailedToDecode(v.cidr_block.clone()))?;
        let gateway = block.gateway().ok_or_else(|| Error::FailedToDecode(v.cidr_block.clone()))?;
        let ipv6 = match v.ipv6_cidr_block.as_str() {
            "" => None,
            text => {
                let b6 = Cidr6::parse_lenient(text).ok_or_else(|| Error::FailedToDecode(text.to_string()))?;
                Some((b6.prefix(), b6.gateway().ok_or_else(|| Error::FailedToDecode(text.to_string()))?))
            }
        };
        Ok(VSwitchInfo { prefix: block.prefix(), gateway, ipv6 })
    }

    /// Detach (if attached), wait for Available, delete, wait until gone. "Not found" at any
    /// point means someone finished the job.
    pub async fn release(&mut self, eni: &pb::NetworkInterfaceSet) -> Result<(), Error> {
        let gone = |e: &Error| matches!(e, Error::Custom(_, code, _) if code.ends_with(".NotFound"));
        let id = eni.network_interface_id.clone();
        if eni.status == IN_USE || eni.status == "Attaching" {
            if eni.status == "Attaching" {
                self.wait(&id, IN_USE).await?;
            }
            let r = self
                .ecs
                .detach_network_interface(pb::DetachNetworkInterfaceRequest {
                    instance_id: eni.instance_id.clone(),
                    network_interface_id: id.clone(),
                    trunk_network_instance_id: eni
                        .attachment
                        .as_ref()
                        .map(|a| a.trunk_network_interface_id.clone())
                        .unwrap_or_default(),
                    ..Default::default()
                })
                .await
                .map_err(cni_error);
            match r {
                Err(e) if gone(&e) => return Ok(()),
                r => r?,
            };
        }
        if self.wait(&id, "Available").await?.is_none() {
            return Ok(());
        }
        match self
            .ecs
            .delete_network_interface(pb::DeleteNetworkInterfaceRequest {
                network_interface_id: id.clone(),
                ..Default::default()
            })
            .await
            .map_err(cni_error)
        {
            Err(e) if gone(&e) => return Ok(()),
            r => {
                r?;
            }
        }
        self.wait(&id, "").await?;
        Ok(())
    }
}
