//! The lab plays Alibaba Cloud's cloud-controller-manager (`cloud-provider-alibaba-cloud`, CLB
//! v1 controller, ENI backends: `service.beta.kubernetes.io/backend-type: eni`, what Terway
//! clusters use) for `type: LoadBalancer` Services: it drives the SLB API over gRPC with the
//! CCM's own calls, names, tags and descriptions, so what the emulator sees is what a real CCM
//! would send it:
//!
//! 1. `DescribeNetworkInterfaces` (`VpcId`, `Status=InUse`, `PrivateIpAddress.N` of the ready
//!    pods, 100 at a time) maps each pod IP to its member ENI through `PrivateIpSets`;
//! 2. the load balancer is found by its `kubernetes.do.not.delete` tag (the `Tags` JSON), then
//!    by name — `a` + the Service UID without dashes, 32 characters;
//! 3. missing: `CreateLoadBalancer` (`AddressType`, `Address` when annotated, `VpcId` and
//!    `VSwitchId` for intranet, PayByCLCU, `DeleteProtection=on`, `ConsoleProtection` with reason
//!    `managed.by.ack`, tags `kubernetes.do.not.delete=<name>` and `ack.aliyun.com=<cluster id>`,
//!    a `ClientToken`), then `DescribeLoadBalancerAttribute`;
//! 4. per Service port a vServer group `k8s/<targetPort>/<svc>/<ns>/<clusterId>`, created empty,
//!    its backends made equal to the ready pods by difference: `AddVServerGroupBackendServers` /
//!    `RemoveVServerGroupBackendServers` with the CCM's JSON (`serverId` = member ENI, `serverIp`,
//!    `port` = targetPort, `weight` 100, `type` eni, `description` = the group's name), at most 40
//!    per call; groups of this Service no longer wanted are deleted after their listeners;
//! 5. per port a listener (`CreateLoadBalancerTCPListener`/`UDP` with the group, `Bandwidth -1`,
//!    the CCM's default scheduler `rr` unless annotated, description
//!    `k8s/<port>/<svc>/<ns>/<clusterId>`, health-check settings only when annotated), then
//!    `StartLoadBalancerListener`; a stopped one is started, one on another group or scheduler
//!    is set.
//!
//! The address read back is the Service's `status.loadBalancer.ingress[0].ip`, which kube-proxy
//! turns into its `loadbalancer IP` rule ([`super::kubeproxy`]). ENI backends ignore
//! `externalTrafficPolicy`: every ready pod is a backend, on whichever node (the CCM's ENI mode;
//! `Local` choosing one node's pods is the node-backend mode).
//!
//! Deleting (`lab down`, a Service gone from the file): found by tag, `SetLoadBalancerDeleteProtection
//! off`, `DeleteLoadBalancer` — the CCM deletes the whole instance, never its listeners one by
//! one. After a crash the same lookup finds it: names and UIDs derive from the lab, not from a
//! state file; [`sweep`] also finds any load balancer tagged with the lab's cluster id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use anyhow::{Result, anyhow, bail};
use enifab_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tonic::Status;

use super::Log;
use crate::cli::{Clients, describe_status};
use crate::topology::{HealthCheckSpec, ServiceSpec};

/// The tag the CCM finds its load balancer by (value: the default name).
pub const TAG_OWNER: &str = "kubernetes.do.not.delete";
/// The tag naming the cluster (value: the cluster id).
pub const TAG_CLUSTER: &str = "ack.aliyun.com";
/// `--sg-batch-size`: backends per Add/Remove call.
const BATCH: usize = 40;
/// The CCM's scheduler when the Service does not annotate one (not the API's `wrr`).
const DEFAULT_SCHEDULER: &str = "rr";

/// The cluster the CCM serves.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `CLUSTER_ID`.
    pub id: String,
    pub region: String,
    pub vpc_id: String,
    /// vSwitch names of the file → IDs, for intranet load balancers.
    pub vswitches: HashMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A lab's cluster id: `c` + 32 hex digits, as ACK's look, derived from the lab's id.
pub fn cluster_id(lab_id: &str) -> String {
    format!("c{}", &hex(&Sha256::digest(format!("enifab-lab/{lab_id}").as_bytes()))[..32])
}

/// A stable stand-in for the Service's `metadata.uid` (a UUID's shape), so a lab finds its load
/// balancers again after a crash.
pub fn service_uid(cluster_id: &str, namespace: &str, name: &str) -> String {
    let h = hex(&Sha256::digest(format!("{cluster_id}/{namespace}/{name}").as_bytes()));
    format!("{}-{}-4{}-8{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

/// The CCM's default load balancer name (and owner tag value): `a` + the UID without dashes,
/// cut to 32 characters.
pub fn default_name(uid: &str) -> String {
    let mut n = format!("a{}", uid.replace('-', ""));
    n.truncate(32);
    n
}

/// `k8s/<targetPort>/<svc>/<ns>/<clusterId>`: the vServer group of a port with ENI backends.
pub fn vgroup_name(target_port: u16, svc: &str, namespace: &str, cluster: &str) -> String {
    format!("k8s/{target_port}/{svc}/{namespace}/{cluster}")
}

/// `k8s/<port>/<svc>/<ns>/<clusterId>`: a listener's description.
pub fn listener_description(port: u16, svc: &str, namespace: &str, cluster: &str) -> String {
    format!("k8s/{port}/{svc}/{namespace}/{cluster}")
}

/// Whether a group or listener name belongs to this Service (`k8s/*/<svc>/<ns>/<cluster>`).
fn owned(name: &str, svc: &str, namespace: &str, cluster: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 5 && parts[0] == "k8s" && parts[2] == svc && parts[3] == namespace && parts[4] == cluster
}

/// An ENI backend as the CCM keys it (`ServerId` + `ServerIp` + `Port`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    pub eni: String,
    pub ip: String,
    pub port: u16,
}

/// The backends to add and the current ones to remove so that `have` becomes `want`.
pub fn backend_diff<'a>(
    want: &[Backend],
    have: &'a [pb::SlbBackendServer],
) -> (Vec<Backend>, Vec<&'a pb::SlbBackendServer>) {
    let same = |w: &Backend, h: &pb::SlbBackendServer| {
        h.server_id == w.eni && h.server_ip == w.ip && h.port == i32::from(w.port)
    };
    let add = want.iter().filter(|w| !have.iter().any(|h| same(w, h))).cloned().collect();
    let remove = have.iter().filter(|h| !want.iter().any(|w| same(w, h))).collect();
    (add, remove)
}

/// The `BackendServers` JSON the CCM sends: lower-camel keys, the group's name as description.
pub fn backends_json(list: &[Backend], vgroup: &str) -> String {
    let items: Vec<serde_json::Value> = list
        .iter()
        .map(|b| {
            serde_json::json!({
                "serverId": b.eni, "serverIp": b.ip, "port": b.port, "weight": 100, "type": "eni", "description": vgroup,
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// The remove JSON, built from what the group has (as the CCM builds it).
fn remote_json(list: &[&pb::SlbBackendServer]) -> String {
    let items: Vec<serde_json::Value> = list
        .iter()
        .map(|b| {
            serde_json::json!({
                "serverId": b.server_id, "serverIp": b.server_ip, "port": b.port, "weight": b.weight,
                "type": b.r#type, "description": b.description,
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

fn api(what: &'static str) -> impl Fn(Status) -> anyhow::Error {
    move |s| anyhow!("{what}: {}", describe_status(&s))
}

/// What the CCM made for a Service.
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub load_balancer_id: String,
    pub address: String,
    pub created: bool,
    pub added: usize,
    pub removed: usize,
}

/// One reconcile of a `LoadBalancer` Service; `endpoints[i]` are the ready pod IPs of
/// `svc.ports[i]`.
pub async fn reconcile(
    c: &mut Clients,
    cluster: &Cluster,
    svc: &ServiceSpec,
    endpoints: &[Vec<Ipv4Addr>],
) -> Result<Reconciled> {
    let (ns, name) = (svc.namespace(), svc.name.value.as_str());
    let lb_name = default_name(&service_uid(&cluster.id, ns, name));
    let spec = svc.load_balancer.as_ref();

    // 1. Pod IPs → member ENIs.
    let mut ips: Vec<Ipv4Addr> = endpoints.iter().flatten().copied().collect();
    ips.sort();
    ips.dedup();
    let enis = enis_of(c, cluster, &ips).await?;
    if let Some(ip) = ips.iter().find(|ip| !enis.contains_key(&ip.to_string())) {
        // The CCM raises "can not find eniid for ip" and requeues.
        bail!("service {ns}/{name}: can not find eniid for ip {ip}");
    }

    // 2–3. Find, or create.
    let (lb, created) = match find(c, cluster, &lb_name).await? {
        Some(lb) => {
            let want = spec.and_then(|l| l.address_type.as_ref()).map_or("internet", |t| t.value.as_str());
            if lb.address_type != want {
                bail!("service {ns}/{name}: can not change LoadBalancer AddressType once created");
            }
            (lb.load_balancer_id, false)
        }
        None => (create(c, cluster, svc, &lb_name).await?, true),
    };
    let attr = c
        .slb
        .describe_load_balancer_attribute(pb::DescribeLoadBalancerAttributeRequest {
            region_id: cluster.region.clone(),
            load_balancer_id: lb.clone(),
        })
        .await
        .map_err(api("DescribeLoadBalancerAttribute"))?
        .into_inner();
    if attr.load_balancer_id != lb {
        bail!("service {ns}/{name}: DescribeLoadBalancerAttribute answered for {}", attr.load_balancer_id);
    }

    // 4. vServer groups and their backends.
    let groups = c
        .slb
        .describe_v_server_groups(pb::DescribeVServerGroupsRequest {
            region_id: cluster.region.clone(),
            load_balancer_id: lb.clone(),
            ..Default::default()
        })
        .await
        .map_err(api("DescribeVServerGroups"))?
        .into_inner()
        .v_server_groups
        .unwrap_or_default()
        .v_server_group;
    let (mut added, mut removed) = (0, 0);
    let mut group_of_port = Vec::new();
    for (port, ips) in svc.ports.iter().zip(endpoints) {
        let gname = vgroup_name(port.target_port(), name, ns, &cluster.id);
        let id = match groups.iter().find(|g| g.v_server_group_name == gname) {
            Some(g) => g.v_server_group_id.clone(),
            None => {
                c.slb
                    .create_v_server_group(pb::CreateVServerGroupRequest {
                        region_id: cluster.region.clone(),
                        load_balancer_id: lb.clone(),
                        v_server_group_name: gname.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(api("CreateVServerGroup"))?
                    .into_inner()
                    .v_server_group_id
            }
        };
        let want: Vec<Backend> = ips
            .iter()
            .map(|ip| Backend { eni: enis[&ip.to_string()].clone(), ip: ip.to_string(), port: port.target_port() })
            .collect();
        let have = c
            .slb
            .describe_v_server_group_attribute(pb::DescribeVServerGroupAttributeRequest {
                region_id: cluster.region.clone(),
                v_server_group_id: id.clone(),
            })
            .await
            .map_err(api("DescribeVServerGroupAttribute"))?
            .into_inner()
            .backend_servers
            .unwrap_or_default()
            .backend_server;
        let (add, remove) = backend_diff(&want, &have);
        for chunk in add.chunks(BATCH) {
            c.slb
                .add_v_server_group_backend_servers(pb::AddVServerGroupBackendServersRequest {
                    region_id: cluster.region.clone(),
                    v_server_group_id: id.clone(),
                    backend_servers: backends_json(chunk, &gname),
                })
                .await
                .map_err(api("AddVServerGroupBackendServers"))?;
        }
        for chunk in remove.chunks(BATCH) {
            c.slb
                .remove_v_server_group_backend_servers(pb::RemoveVServerGroupBackendServersRequest {
                    region_id: cluster.region.clone(),
                    v_server_group_id: id.clone(),
                    backend_servers: remote_json(chunk),
                })
                .await
                .map_err(api("RemoveVServerGroupBackendServers"))?;
        }
        added += add.len();
        removed += remove.len();
        group_of_port.push(id);
    }

    // 5. Listeners.
    let listeners = c
        .slb
        .describe_load_balancer_listeners(pb::DescribeLoadBalancerListenersRequest {
            region_id: cluster.region.clone(),
            load_balancer_id: vec![lb.clone()],
            max_results: Some(100),
            ..Default::default()
        })
        .await
        .map_err(api("DescribeLoadBalancerListeners"))?
        .into_inner()
        .listeners;
    // This Service's listeners on ports it no longer has go first, then their groups.
    for l in &listeners {
        let keep =
            svc.ports.iter().any(|p| p.protocol() == l.listener_protocol && i32::from(p.port.value) == l.listener_port);
        if !keep && owned(&l.description, name, ns, &cluster.id) {
            c.slb
                .delete_load_balancer_listener(pb::DeleteLoadBalancerListenerRequest {
                    region_id: cluster.region.clone(),
                    load_balancer_id: lb.clone(),
                    listener_port: Some(l.listener_port),
                    listener_protocol: l.listener_protocol.clone(),
                })
                .await
                .map_err(api("DeleteLoadBalancerListener"))?;
        }
    }
    let scheduler = spec.and_then(|l| l.scheduler.as_ref()).map_or(DEFAULT_SCHEDULER, |s| s.value.as_str());
    let health = spec.and_then(|l| l.health_check.as_ref());
    for (port, group) in svc.ports.iter().zip(&group_of_port) {
        let proto = port.protocol();
        let existing =
            listeners.iter().find(|l| l.listener_protocol == proto && l.listener_port == i32::from(port.port.value));
        match existing {
            None => {
                let description = listener_description(port.port.value, name, ns, &cluster.id);
                create_listener(c, cluster, &lb, proto, port.port.value, group, scheduler, &description, health)
                    .await?;
            }
            Some(l) if l.v_server_group_id != *group || l.scheduler != scheduler => {
                set_listener(c, cluster, &lb, proto, port.port.value, group, scheduler).await?;
            }
            Some(_) => {}
        }
        if existing.is_none_or(|l| l.status == "stopped") {
            c.slb
                .start_load_balancer_listener(pb::StartLoadBalancerListenerRequest {
                    region_id: cluster.region.clone(),
                    load_balancer_id: lb.clone(),
                    listener_port: Some(i32::from(port.port.value)),
                    listener_protocol: proto.into(),
                })
                .await
                .map_err(api("StartLoadBalancerListener"))?;
        }
    }
    // Cleanup: this Service's groups the ports no longer name.
    for g in &groups {
        if owned(&g.v_server_group_name, name, ns, &cluster.id) && !group_of_port.contains(&g.v_server_group_id) {
            c.slb
                .delete_v_server_group(pb::DeleteVServerGroupRequest {
                    region_id: cluster.region.clone(),
                    v_server_group_id: g.v_server_group_id.clone(),
                })
                .await
                .map_err(api("DeleteVServerGroup"))?;
        }
    }
    Ok(Reconciled { load_balancer_id: lb, address: attr.address, created, added, removed })
}

/// Pod IP → member ENI, as the CCM's `DescribeNetworkInterfaces` finds them.
async fn enis_of(c: &mut Clients, cluster: &Cluster, ips: &[Ipv4Addr]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for chunk in ips.chunks(100) {
        let mut token = String::new();
        loop {
            let r = c
                .ecs
                .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                    region_id: cluster.region.clone(),
                    vpc_id: cluster.vpc_id.clone(),
                    status: "InUse".into(),
                    private_ip_address: chunk.iter().map(Ipv4Addr::to_string).collect(),
                    max_results: Some(100),
                    next_token: token.clone(),
                    ..Default::default()
                })
                .await
                .map_err(api("DescribeNetworkInterfaces"))?
                .into_inner();
            let set = r.network_interface_sets.unwrap_or_default().network_interface_set;
            let full = set.len() >= 100;
            for e in set {
                // The CCM reads PrivateIpSets only, never the top-level PrivateIpAddress.
                for ip in e.private_ip_sets.unwrap_or_default().private_ip_set {
                    out.insert(ip.private_ip_address, e.network_interface_id.clone());
                }
            }
            if r.next_token.is_empty() || !full {
                break;
            }
            token = r.next_token;
        }
    }
    Ok(out)
}

/// DescribeLoadBalancers by the owner tag, then by name: 0 or 1 found, more is an error.
async fn find(c: &mut Clients, cluster: &Cluster, lb_name: &str) -> Result<Option<pb::LoadBalancerItem>> {
    let by_tag = pb::DescribeLoadBalancersRequest {
        region_id: cluster.region.clone(),
        // Go's json.Marshal of the SDK's Tag: TagValue first.
        tags: serde_json::json!([{ "TagValue": lb_name, "TagKey": TAG_OWNER }]).to_string(),
        ..Default::default()
    };
    let by_name = pb::DescribeLoadBalancersRequest {
        region_id: cluster.region.clone(),
        load_balancer_name: lb_name.into(),
        ..Default::default()
    };
    for req in [by_tag, by_name] {
        let found = c
            .slb
            .describe_load_balancers(req)
            .await
            .map_err(api("DescribeLoadBalancers"))?
            .into_inner()
            .load_balancers
            .unwrap_or_default()
            .load_balancer;
        match found.len() {
            0 => continue,
            1 => return Ok(found.into_iter().next()),
            _ => bail!("find multiple loadbalances by tag {lb_name}"),
        }
    }
    Ok(None)
}

async fn create(c: &mut Clients, cluster: &Cluster, svc: &ServiceSpec, lb_name: &str) -> Result<String> {
    let spec = svc.load_balancer.as_ref();
    let address_type = spec.and_then(|l| l.address_type.as_ref()).map_or("internet", |t| t.value.as_str());
    let intranet = address_type == "intranet";
    let tag = |k: &str, v: &str| pb::Tag { key: k.into(), value: v.into() };
    let r = c
        .slb
        .create_load_balancer(pb::CreateLoadBalancerRequest {
            region_id: cluster.region.clone(),
            address_type: address_type.into(),
            load_balancer_name: lb_name.into(),
            instance_charge_type: "PayByCLCU".into(),
            delete_protection: "on".into(),
            modification_protection_status: "ConsoleProtection".into(),
            modification_protection_reason: "managed.by.ack".into(),
            tag: vec![tag(TAG_OWNER, lb_name), tag(TAG_CLUSTER, &cluster.id)],
            client_token: client_token(),
            vpc_id: if intranet { cluster.vpc_id.clone() } else { String::new() },
            v_switch_id: spec
                .and_then(|l| l.vswitch.as_ref())
                .filter(|_| intranet)
                .map(|s| cluster.vswitches[&s.value].clone())
                .unwrap_or_default(),
            address: spec.and_then(|l| l.address.as_ref()).map(|a| a.value.clone()).unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(|s| {
            anyhow!("service {}/{}: CreateLoadBalancer: {}", svc.namespace(), svc.name.value, describe_status(&s))
        })?
        .into_inner();
    Ok(r.load_balancer_id)
}

/// A random idempotency token in a UUID's shape (the CCM's is a UUID it keeps per name).
fn client_token() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        b = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    let h = hex(&b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[allow(clippy::too_many_arguments)]
async fn create_listener(
    c: &mut Clients,
    cluster: &Cluster,
    lb: &str,
    proto: &str,
    port: u16,
    group: &str,
    scheduler: &str,
    description: &str,
    h: Option<&HealthCheckSpec>,
) -> Result<()> {
    let num = |v: Option<&crate::topology::S<u32>>| v.map(|v| v.value as i32);
    let text = |v: Option<&crate::topology::S<String>>| v.map(|v| v.value.clone()).unwrap_or_default();
    let switch = h.and_then(|h| h.enabled).map(|on| if on { "on" } else { "off" }.to_string()).unwrap_or_default();
    let connect_port = h.and_then(|h| h.port.as_ref()).map(|p| i32::from(p.value));
    let (interval, timeout) = (num(h.and_then(|h| h.interval.as_ref())), num(h.and_then(|h| h.timeout.as_ref())));
    let healthy = num(h.and_then(|h| h.healthy_threshold.as_ref()));
    let unhealthy = num(h.and_then(|h| h.unhealthy_threshold.as_ref()));
    if proto == "udp" {
        c.slb
            .create_load_balancer_udp_listener(pb::CreateLoadBalancerUdpListenerRequest {
                region_id: cluster.region.clone(),
                load_balancer_id: lb.into(),
                listener_port: Some(i32::from(port)),
                v_server_group_id: group.into(),
                bandwidth: Some(-1),
                scheduler: scheduler.into(),
                description: description.into(),
                health_check_switch: switch,
                health_check_connect_port: connect_port,
                health_check_connect_timeout: timeout,
                health_check_interval: interval,
                healthy_threshold: healthy,
                unhealthy_threshold: unhealthy,
                health_check_req: text(h.and_then(|h| h.request.as_ref())),
                health_check_exp: text(h.and_then(|h| h.expect.as_ref())),
                ..Default::default()
            })
            .await
            .map_err(api("CreateLoadBalancerUDPListener"))?;
    } else {
        c.slb
            .create_load_balancer_tcp_listener(pb::CreateLoadBalancerTcpListenerRequest {
                region_id: cluster.region.clone(),
                load_balancer_id: lb.into(),
                listener_port: Some(i32::from(port)),
                v_server_group_id: group.into(),
                bandwidth: Some(-1),
                scheduler: scheduler.into(),
                description: description.into(),
                health_check_switch: switch,
                health_check_type: text(h.and_then(|h| h.check_type.as_ref())),
                health_check_connect_port: connect_port,
                health_check_connect_timeout: timeout,
                health_check_interval: interval,
                healthy_threshold: healthy,
                unhealthy_threshold: unhealthy,
                health_check_u_r_i: text(h.and_then(|h| h.uri.as_ref())),
                health_check_domain: text(h.and_then(|h| h.domain.as_ref())),
                health_check_http_code: text(h.and_then(|h| h.http_code.as_ref())),
                ..Default::default()
            })
            .await
            .map_err(api("CreateLoadBalancerTCPListener"))?;
    }
    Ok(())
}

/// The CCM's update of a changed listener: `VServerGroup=on` with the group and scheduler.
async fn set_listener(
    c: &mut Clients,
    cluster: &Cluster,
    lb: &str,
    proto: &str,
    port: u16,
    group: &str,
    scheduler: &str,
) -> Result<()> {
    if proto == "udp" {
        c.slb
            .set_load_balancer_udp_listener_attribute(pb::SetLoadBalancerUdpListenerAttributeRequest {
                region_id: cluster.region.clone(),
                load_balancer_id: lb.into(),
                listener_port: Some(i32::from(port)),
                v_server_group: "on".into(),
                v_server_group_id: group.into(),
                scheduler: scheduler.into(),
                ..Default::default()
            })
            .await
            .map_err(api("SetLoadBalancerUDPListenerAttribute"))?;
    } else {
        c.slb
            .set_load_balancer_tcp_listener_attribute(pb::SetLoadBalancerTcpListenerAttributeRequest {
                region_id: cluster.region.clone(),
                load_balancer_id: lb.into(),
                listener_port: Some(i32::from(port)),
                v_server_group: "on".into(),
                v_server_group_id: group.into(),
                scheduler: scheduler.into(),
                ..Default::default()
            })
            .await
            .map_err(api("SetLoadBalancerTCPListenerAttribute"))?;
    }
    Ok(())
}

/// The CCM's delete of a Service's load balancer: find by tag (then name), protection off,
/// delete. Returns the id deleted, if any.
pub async fn delete(c: &mut Clients, cluster: &Cluster, namespace: &str, name: &str) -> Result<Option<String>> {
    let lb_name = default_name(&service_uid(&cluster.id, namespace, name));
    let Some(lb) = find(c, cluster, &lb_name).await? else { return Ok(None) };
    remove(c, cluster, &lb).await?;
    Ok(Some(lb.load_balancer_id))
}

async fn remove(c: &mut Clients, cluster: &Cluster, lb: &pb::LoadBalancerItem) -> Result<()> {
    if lb.delete_protection == "on" {
        c.slb
            .set_load_balancer_delete_protection(pb::SetLoadBalancerDeleteProtectionRequest {
                region_id: cluster.region.clone(),
                load_balancer_id: lb.load_balancer_id.clone(),
                delete_protection: "off".into(),
            })
            .await
            .map_err(api("SetLoadBalancerDeleteProtection"))?;
    }
    match c
        .slb
        .delete_load_balancer(pb::DeleteLoadBalancerRequest {
            region_id: cluster.region.clone(),
            load_balancer_id: lb.load_balancer_id.clone(),
        })
        .await
    {
        Ok(_) => Ok(()),
        // The CCM carries on when it is already gone.
        Err(s) if s.message().contains("LoadBalancerId does not exist") => Ok(()),
        Err(s) => Err(anyhow!("DeleteLoadBalancer {}: {}", lb.load_balancer_id, describe_status(&s))),
    }
}

/// Delete every CCM-made load balancer of the cluster whose name is not in `keep` (Services gone
/// from the file, or made by a run that crashed before recording them).
pub(crate) async fn sweep(c: &mut Clients, cluster: &Cluster, keep: &HashSet<String>, log: &mut Log<'_>) -> Result<()> {
    let found = c
        .slb
        .describe_load_balancers(pb::DescribeLoadBalancersRequest {
            region_id: cluster.region.clone(),
            tags: serde_json::json!([{ "TagValue": cluster.id, "TagKey": TAG_CLUSTER }]).to_string(),
            page_size: Some(100),
            ..Default::default()
        })
        .await
        .map_err(api("DescribeLoadBalancers"))?
        .into_inner()
        .load_balancers
        .unwrap_or_default()
        .load_balancer;
    for lb in found {
        let ours = lb.tags.as_ref().is_some_and(|t| t.tag.iter().any(|t| t.tag_key == TAG_OWNER));
        if ours && !keep.contains(&lb.load_balancer_name) {
            remove(c, cluster, &lb).await?;
            log.say(
                "clb",
                format!("{} ({}) deleted: no Service of the file owns it", lb.load_balancer_id, lb.load_balancer_name),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_ccm() {
        let cid = cluster_id("1654b1");
        assert!(cid.starts_with('c') && cid.len() == 33 && cid[1..].chars().all(|c| c.is_ascii_hexdigit()), "{cid}");
        let uid = service_uid(&cid, "default", "nginx");
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.matches('-').count(), 4);
        assert_eq!(uid, service_uid(&cid, "default", "nginx"), "stable, so a crashed lab finds it again");
        assert_ne!(uid, service_uid(&cid, "default", "nginx-cluster"));
        let name = default_name(&uid);
        assert_eq!(name.len(), 32);
        assert!(name.starts_with('a') && !name.contains('-'));
        assert_eq!(vgroup_name(80, "nginx", "default", "c1"), "k8s/80/nginx/default/c1");
        assert!(owned("k8s/8080/nginx/default/c1", "nginx", "default", "c1"));
        assert!(!owned("k8s/80/nginx/kube-system/c1", "nginx", "default", "c1"));
        assert!(!owned("enifab/tcp/80", "nginx", "default", "c1"));
    }

    fn have(eni: &str, ip: &str, port: i32) -> pb::SlbBackendServer {
        pb::SlbBackendServer {
            server_id: eni.into(),
            server_ip: ip.into(),
            port,
            weight: 100,
            r#type: "eni".into(),
            ..Default::default()
        }
    }

    #[test]
    fn backends_change_by_difference() {
        let want = vec![
            Backend { eni: "eni-a".into(), ip: "10.0.4.30".into(), port: 80 },
            Backend { eni: "eni-c".into(), ip: "10.0.4.50".into(), port: 80 },
        ];
        let current =
            vec![have("eni-a", "10.0.4.30", 80), have("eni-b", "10.0.4.31", 80), have("eni-c", "10.0.4.50", 8080)];
        let (add, remove) = backend_diff(&want, &current);
        assert_eq!(add, [want[1].clone()]);
        let gone: Vec<(&str, i32)> = remove.iter().map(|b| (b.server_id.as_str(), b.port)).collect();
        assert_eq!(gone, [("eni-b", 80), ("eni-c", 8080)]);
        let in_step = [have("eni-a", "10.0.4.30", 80), have("eni-c", "10.0.4.50", 80)];
        let (add, remove) = backend_diff(&want, &in_step);
        assert!(add.is_empty() && remove.is_empty(), "in step: nothing to do");
    }

    #[test]
    fn backends_are_sent_in_the_ccms_layout() {
        let json = backends_json(
            &[Backend { eni: "eni-a".into(), ip: "10.0.4.30".into(), port: 80 }],
            "k8s/80/nginx/default/c1",
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"serverId": "eni-a", "serverIp": "10.0.4.30", "port": 80, "weight": 100, "type": "eni", "description": "k8s/80/nginx/default/c1"}])
        );
        let token = client_token();
        assert_eq!((token.len(), token.matches('-').count()), (36, 4));
        assert_ne!(token, client_token());
    }
}
