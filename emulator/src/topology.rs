//! Topology files: the YAML a user writes to describe a VPC's cloud side (and, for the lab,
//! the nodes, pods and checks on top of it).
//!
//! Parsing is strict (`deny_unknown_fields`, so a misspelt key is an error, not a silent
//! default) and every error names its place: syntax and type errors come located from
//! serde-saphyr, and the semantic checks here (unknown references, bad CIDRs, duplicate names)
//! carry the line and column of the offending value. All checks run before anything is
//! created, so a broken file changes nothing.
//!
//! The lab's Kubernetes side (`services`, pod `labels`, `kubeProxy`) follows the Service API's own
//! validation where it matters to the lab: `externalTrafficPolicy` only on `LoadBalancer`
//! Services, a name on every port of a multi-port Service, one protocol/port pair per Service.
//!
//! Dual stack follows the cloud: a VPC with `enableIpv6` (and, optionally, the /56 it takes), a
//! vSwitch with an `ipv6CidrBlock` (its /64), an instance with `ipv6: true` (its primary ENI gets
//! one address of it), a pod with `ipStack: dual` (its member ENI gets one; `ipv6` pins it). What
//! needs IPv6 where there is none is refused at the value that asks for it, and so is a check of
//! `family: ipv6` whose ends have no IPv6 address: a topology error, not a failed probe.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::{Context, Result};
use enifab_model::Cidr;
use enifab_model::net::Cidr6;
use enifab_model::security_group::canonical_port_range;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A value with the place it was written.
pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Topology {
    /// The file it was read from, as errors name it (set by [`Topology::parse`]).
    #[serde(skip)]
    pub file: String,
    /// The region the emulator serves; apply refuses a server of another region.
    pub region: S<String>,
    #[serde(default)]
    pub instance_types: Vec<InstanceTypeSpec>,
    #[serde(default)]
    pub vpcs: Vec<VpcSpec>,
    #[serde(default)]
    pub security_groups: Vec<SecurityGroupSpec>,
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
    /// CLB instances with their listeners and backends.
    #[serde(default)]
    pub load_balancers: Vec<LoadBalancerSpec>,
    /// Lab only: pods on the nodes (a namespace and a CNI ADD each).
    #[serde(default)]
    pub pods: Vec<PodSpec>,
    /// Lab only: hosts on the internet side, clients of internet-facing load balancers.
    #[serde(default)]
    pub external_clients: Vec<ExternalClientSpec>,
    /// Lab only: Kubernetes Services, served on every node as kube-proxy's iptables mode serves
    /// them; a `LoadBalancer` one also gets a CLB, made as the cloud-controller-manager makes it.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Lab only: kube-proxy's settings.
    #[serde(default)]
    pub kube_proxy: Option<KubeProxySpec>,
    /// Lab only: probes with the verdict expected.
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceTypeSpec {
    pub id: S<String>,
    #[serde(default = "one")]
    pub cpu: u32,
    #[serde(default = "one_f")]
    pub memory_gib: f32,
    pub eni_quantity: u32,
    pub eni_private_ip_address_quantity: u32,
    pub eni_total_quantity: u32,
    #[serde(default)]
    pub eni_trunk_supported: bool,
}

fn one() -> u32 {
    1
}

fn one_f() -> f32 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VpcSpec {
    pub name: S<String>,
    pub cidr: S<String>,
    /// `CreateVpc EnableIpv6`: the VPC gets an IPv6 /56.
    #[serde(default)]
    pub enable_ipv6: Option<S<bool>>,
    /// `CreateVpc Ipv6CidrBlock`: which /56 (needs `enableIpv6`); default the lowest free one of
    /// the emulator's pool. Naming it lets the file know its vSwitches' /64s, so addresses the
    /// file pins in them are checked here, before anything is made.
    #[serde(default)]
    pub ipv6_cidr_block: Option<S<String>>,
    #[serde(default)]
    pub vswitches: Vec<VSwitchSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VSwitchSpec {
    pub name: S<String>,
    pub zone: S<String>,
    pub cidr: S<String>,
    /// `CreateVSwitch Ipv6CidrBlock`: which /64 of the VPC's /56 (0–255); needs `enableIpv6`.
    #[serde(default)]
    pub ipv6_cidr_block: Option<S<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecurityGroupSpec {
    pub name: S<String>,
    pub vpc: S<String>,
    /// `normal` (basic, default) or `enterprise`.
    #[serde(default, rename = "type")]
    pub kind: Option<S<String>>,
    /// `Accept` (default for basic groups) or `Drop`.
    #[serde(default)]
    pub inner_access_policy: Option<S<String>>,
    #[serde(default)]
    pub ingress: Vec<RuleSpec>,
    #[serde(default)]
    pub egress: Vec<RuleSpec>,
}

/// One rule. `peer` is a CIDR or an IP of either family (an IPv6 one is sent as
/// `Ipv6SourceCidrIp` / `Ipv6DestCidrIp`); `peerGroup` names a group of the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleSpec {
    pub protocol: S<String>,
    #[serde(default)]
    pub ports: Option<S<String>>,
    #[serde(default)]
    pub peer: Option<S<String>>,
    #[serde(default)]
    pub peer_group: Option<S<String>>,
    #[serde(default)]
    pub policy: Option<S<String>>,
    #[serde(default)]
    pub priority: Option<S<u32>>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceSpec {
    /// The instance name, e.g. `cn-hongkong.10.0.4.22` as ACK names nodes; also the key apply
    /// finds it by.
    pub name: S<String>,
    #[serde(rename = "type")]
    pub instance_type: S<String>,
    pub vswitch: S<String>,
    #[serde(default)]
    pub private_ip: Option<S<String>>,
    pub security_groups: Vec<S<String>>,
    /// A trunk ENI to create and attach (Terway's node daemon does this on a real cluster).
    #[serde(default)]
    pub trunk: Option<TrunkSpec>,
    /// Dual stack: the primary ENI gets one IPv6 address of its vSwitch's /64
    /// (`AssignIpv6Addresses`), which the node's shim configures on eth0. Needs a vSwitch with an
    /// `ipv6CidrBlock`.
    #[serde(default)]
    pub ipv6: Option<S<bool>>,
    /// Lab only: built-in responders to run in the node's namespace.
    #[serde(default)]
    pub servers: Vec<ServerSpec>,
}

/// A pod of the lab: its own namespace, wired by `enifab-cni` to a member ENI of its node's
/// trunk, with the vSwitch and groups a PodNetworking would give it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodSpec {
    pub name: S<String>,
    /// The instance (node) it runs on.
    pub node: S<String>,
    /// `veth` (the seed article's path: veth + policy routing + VLAN push by source IP) or
    /// `vlan` (Terway's trunk path: a VLAN sub-interface in the pod). Default `veth`.
    #[serde(default)]
    pub datapath: Option<S<String>>,
    /// The member ENI's vSwitch; default the node trunk's.
    #[serde(default)]
    pub vswitch: Option<S<String>>,
    /// The member ENI's groups; default the node trunk's.
    #[serde(default)]
    pub security_groups: Vec<S<String>>,
    /// The pod IP (the member ENI's primary IP); default: whatever the vSwitch hands out.
    #[serde(default)]
    pub ip: Option<S<String>>,
    /// `ipv4` (default) or `dual`: the member ENI also gets one IPv6 address of its vSwitch's /64,
    /// and the pod an IPv6 address and default route (`ENIFAB_IP_STACK=dual` to the CNI). Needs a
    /// vSwitch with an `ipv6CidrBlock`.
    #[serde(default)]
    pub ip_stack: Option<S<String>>,
    /// With `ipStack: dual`: the member ENI's IPv6 address (`ENIFAB_IP6`); default whatever the
    /// vSwitch hands out.
    #[serde(default)]
    pub ipv6: Option<S<String>>,
    /// What Services select it by (`app: nginx`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub servers: Vec<ServerSpec>,
}

impl InstanceSpec {
    /// Whether its primary ENI is to have an IPv6 address.
    pub fn has_ipv6(&self) -> bool {
        self.ipv6.as_ref().is_some_and(|v| v.value)
    }
}

impl PodSpec {
    /// Whether it is dual stack (`ipStack: dual`).
    pub fn dual(&self) -> bool {
        self.ip_stack.as_ref().is_some_and(|s| s.value == "dual")
    }
}

/// A host of the internet side (`enifab-shim --external-address`): its own namespace with eth0 at
/// `address`, default route via the segment's gateway (last − 2), outside every VPC. It reaches
/// internet-facing load balancers' addresses, nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalClientSpec {
    pub name: S<String>,
    /// Its public address with the segment's prefix, e.g. `47.100.1.10/24`.
    pub address: S<String>,
    #[serde(default)]
    pub servers: Vec<ServerSpec>,
}

impl ExternalClientSpec {
    /// The address and its prefix, once the file is checked.
    pub fn ip(&self) -> Option<(Ipv4Addr, u8)> {
        parse_host_prefix(&self.address.value)
    }
}

/// `a.b.c.d/nn` with host bits (an interface address, not a block).
fn parse_host_prefix(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, prefix) = s.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (1..=30).contains(&prefix).then_some(())?;
    Some((ip.parse().ok()?, prefix))
}

/// A Kubernetes Service, as much of `spec` as the lab serves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    pub name: S<String>,
    /// Default `default`.
    #[serde(default)]
    pub namespace: Option<S<String>>,
    /// `ClusterIP` (default) or `LoadBalancer`. There are no node ports: a `LoadBalancer` Service
    /// here is one with `allocateLoadBalancerNodePorts: false`, which is all the CCM's ENI backends
    /// need.
    #[serde(default, rename = "type")]
    pub kind: Option<S<String>>,
    /// Required: the lab allocates no address from a service CIDR.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: S<String>,
    #[serde(default, rename = "externalIPs")]
    pub external_ips: Vec<S<String>>,
    /// Pods whose labels include all of these are its endpoints (those that serve the target
    /// port: a pod without the server is not ready).
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePortSpec>,
    /// `Cluster` (default) or `Local`; only for `LoadBalancer` Services, as the API says.
    #[serde(default)]
    pub external_traffic_policy: Option<S<String>>,
    /// What the CCM's annotations would say about the CLB; only for `LoadBalancer` Services.
    #[serde(default)]
    pub load_balancer: Option<ServiceLoadBalancerSpec>,
}

impl ServiceSpec {
    pub fn namespace(&self) -> &str {
        self.namespace.as_ref().map_or("default", |n| n.value.as_str())
    }

    pub fn is_load_balancer(&self) -> bool {
        self.kind.as_ref().is_some_and(|k| k.value == "LoadBalancer")
    }

    pub fn external_policy_local(&self) -> bool {
        self.external_traffic_policy.as_ref().is_some_and(|p| p.value == "Local")
    }

    /// The pods of the file it selects, in file order.
    pub fn selects<'a>(&'a self, topo: &'a Topology) -> impl Iterator<Item = &'a PodSpec> + 'a {
        topo.pods.iter().filter(|p| self.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePortSpec {
    /// Required when the Service has more than one port.
    #[serde(default)]
    pub name: Option<S<String>>,
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Option<S<String>>,
    pub port: S<u16>,
    /// Default: `port`. Numbers only.
    #[serde(default)]
    pub target_port: Option<S<u16>>,
}

impl ServicePortSpec {
    /// `tcp` or `udp`, as kube-proxy and the SLB API spell it.
    pub fn protocol(&self) -> &'static str {
        if self.protocol.as_ref().is_some_and(|p| p.value == "UDP") { "udp" } else { "tcp" }
    }

    pub fn target_port(&self) -> u16 {
        self.target_port.as_ref().map_or(self.port.value, |t| t.value)
    }
}

/// The CLB the cloud-controller-manager makes for a `LoadBalancer` Service: the settings its
/// annotations (`service.beta.kubernetes.io/alibaba-cloud-loadbalancer-…`) would give.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceLoadBalancerSpec {
    /// `internet` (default) or `intranet`.
    #[serde(default)]
    pub address_type: Option<S<String>>,
    /// A specific address: of the vSwitch (intranet) or of the public pool (internet).
    #[serde(default)]
    pub address: Option<S<String>>,
    /// Intranet only: the vSwitch the address comes from.
    #[serde(default)]
    pub vswitch: Option<S<String>>,
    /// `rr` (the CCM's default), `wrr`, `wlc`, `sch` or `tch`.
    #[serde(default)]
    pub scheduler: Option<S<String>>,
    /// The listeners' health check (the CCM sends these only when annotated).
    #[serde(default)]
    pub health_check: Option<HealthCheckSpec>,
}

/// kube-proxy's flags that change the rules it writes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeProxySpec {
    /// `--cluster-cidr`: the local-traffic detector (`-s <cidr>` is pod traffic). Default: the
    /// cluster's VPC CIDR, since Terway's pods take VPC addresses. What ACK itself passes to
    /// kube-proxy in Terway clusters was not found, hence the knob.
    #[serde(default, rename = "clusterCIDR")]
    pub cluster_cidr: Option<S<String>>,
}

/// A built-in responder: `tcp` answers with a line naming the pod, `udp` echoes, `http` serves
/// `GET /` with the pod's name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerSpec {
    pub protocol: S<String>,
    pub port: S<u16>,
}

/// One probe: from a pod, a node or an external client to a pod, a node, an external client or
/// an IP, and what must happen.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CheckSpec {
    pub name: S<String>,
    /// The SOP scenario it belongs to (for the table).
    #[serde(default)]
    pub scenario: Option<u32>,
    pub from: S<String>,
    pub to: S<String>,
    /// `tcp`, `udp`, `http` or `icmp`.
    pub protocol: S<String>,
    #[serde(default)]
    pub port: Option<S<u16>>,
    /// `reachable` or `blocked`.
    pub expect: S<String>,
    /// `ipv4` (default) or `ipv6`: which of the ends' addresses the probe uses (an ICMPv6 echo for
    /// `icmp`). With `ipv6` both ends need one: a dual-stack pod, an instance with `ipv6: true`,
    /// or an IPv6 address as `to`.
    #[serde(default)]
    pub family: Option<S<String>>,
    /// Rule changes made before the probe and undone after it.
    #[serde(default)]
    pub changes: Vec<ChangeSpec>,
    /// Why the expectation is what it is (printed with a failure).
    #[serde(default)]
    pub why: Option<String>,
}

impl CheckSpec {
    /// Whether it probes the ends' IPv6 addresses (`family: ipv6`).
    pub fn ipv6(&self) -> bool {
        self.family.as_ref().is_some_and(|f| f.value == "ipv6")
    }
}

/// For the duration of a check: authorize (`add`) or revoke (`remove`) one rule of a group, or
/// set the group's `innerAccessPolicy` (ModifySecurityGroupPolicy; the old policy is restored
/// after).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChangeSpec {
    pub group: S<String>,
    /// `ingress` or `egress`, for `add` and `remove`.
    #[serde(default)]
    pub direction: Option<S<String>>,
    #[serde(default)]
    pub add: Option<RuleSpec>,
    #[serde(default)]
    pub remove: Option<RuleSpec>,
    /// `Accept` or `Drop`.
    #[serde(default)]
    pub inner_access_policy: Option<S<String>>,
}

/// A load balancer: internet-facing (an address of the public pool; its VPC is where its
/// backends are) or intranet (an address of `vswitch`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancerSpec {
    /// The load balancer's name, and the key apply finds it by.
    pub name: S<String>,
    pub vpc: S<String>,
    /// `internet` (default) or `intranet`.
    #[serde(default)]
    pub address_type: Option<S<String>>,
    /// Required for intranet load balancers: the vSwitch the address comes from.
    #[serde(default)]
    pub vswitch: Option<S<String>>,
    /// A specific address (of the vSwitch, or of the emulator's public pool).
    #[serde(default)]
    pub address: Option<S<String>>,
    #[serde(default)]
    pub listeners: Vec<ListenerSpec>,
}

/// A TCP or UDP listener forwarding to its own vServer group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerSpec {
    /// `tcp` or `udp`.
    pub protocol: S<String>,
    pub port: S<u16>,
    /// `wrr` (default), `rr`, `wlc`, `sch` or `tch`.
    #[serde(default)]
    pub scheduler: Option<S<String>>,
    /// Seconds a client sticks to its backend (0–3600; 0 off).
    #[serde(default)]
    pub persistence_timeout: Option<S<u32>>,
    /// Idle seconds of a TCP connection (10–900).
    #[serde(default)]
    pub established_timeout: Option<S<u32>>,
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    #[serde(default)]
    pub health_check: Option<HealthCheckSpec>,
}

/// One backend: exactly one of `pod` (its member ENI, found by the pod's IP once the lab made
/// it), `instance` (a node, by name), `eni` (an ENI ID) or `ip` (an address of the VPC; with `eni`,
/// which of the ENI's addresses).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendSpec {
    #[serde(default)]
    pub pod: Option<S<String>>,
    #[serde(default)]
    pub instance: Option<S<String>>,
    #[serde(default)]
    pub eni: Option<S<String>>,
    #[serde(default)]
    pub ip: Option<S<String>>,
    pub port: S<u16>,
    /// 0–100, default 100.
    #[serde(default)]
    pub weight: Option<S<u32>>,
}

/// A listener's health check, in the API's units (seconds).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// TCP listeners: `tcp` (default) or `http`.
    #[serde(default, rename = "type")]
    pub check_type: Option<S<String>>,
    #[serde(default)]
    pub port: Option<S<u16>>,
    #[serde(default)]
    pub interval: Option<S<u32>>,
    #[serde(default)]
    pub timeout: Option<S<u32>>,
    #[serde(default)]
    pub healthy_threshold: Option<S<u32>>,
    #[serde(default)]
    pub unhealthy_threshold: Option<S<u32>>,
    /// HTTP checks: the path, the `Host`, the codes that mean healthy (`http_2xx,http_3xx`).
    #[serde(default)]
    pub uri: Option<S<String>>,
    #[serde(default)]
    pub domain: Option<S<String>>,
    #[serde(default)]
    pub http_code: Option<S<String>>,
    /// UDP checks: what to send and what to expect back.
    #[serde(default)]
    pub request: Option<S<String>>,
    #[serde(default)]
    pub expect: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrunkSpec {
    pub vswitch: S<String>,
    pub security_groups: Vec<S<String>>,
}

fn check_server(f: &str, s: &ServerSpec, p: &mut Vec<String>) {
    if !matches!(s.protocol.value.as_str(), "tcp" | "udp" | "http") {
        p.push(at(f, &s.protocol, "a server's protocol is tcp, udp or http"));
    }
    if s.port.value == 0 {
        p.push(at(f, &s.port, "port 0 is not a port"));
    }
}

/// A number of the file within the API's range for it.
fn range(f: &str, v: &Option<S<u32>>, lo: u32, hi: u32, what: &str, p: &mut Vec<String>) {
    if let Some(v) = v
        && !(lo..=hi).contains(&v.value)
    {
        p.push(at(f, v, format!("{what} is {lo} to {hi}")));
    }
}

/// A health check of a listener (`udp`: of a UDP one) within the API's ranges.
fn check_health(f: &str, h: &HealthCheckSpec, udp: bool, p: &mut Vec<String>) {
    if let Some(t) = &h.check_type
        && (udp || !matches!(t.value.as_str(), "tcp" | "http"))
    {
        p.push(at(f, t, "a tcp listener's check type is tcp or http (udp listeners check with request/expect)"));
    }
    range(f, &h.interval, 1, 50, "interval", p);
    range(f, &h.timeout, 1, 300, "timeout", p);
    range(f, &h.healthy_threshold, 2, 10, "healthyThreshold", p);
    range(f, &h.unhealthy_threshold, 2, 10, "unhealthyThreshold", p);
    if let Some(u) = &h.uri
        && !u.value.starts_with('/')
    {
        p.push(at(f, u, "uri is a path starting with /"));
    }
    for (name, v) in [("request", &h.request), ("expect", &h.expect)] {
        if let Some(v) = v
            && (udp_probe_bad(&v.value) || !udp)
        {
            p.push(at(f, v, format!("{name} is for udp listeners: at most 64 letters and digits")));
        }
    }
}

fn udp_probe_bad(s: &str) -> bool {
    s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_alphanumeric())
}

/// A problem at a place in the file.
pub fn at<T>(file: &str, s: &S<T>, msg: impl std::fmt::Display) -> String {
    format!("{file}:{}:{}: {msg}", s.referenced.line(), s.referenced.column())
}

impl Topology {
    /// Read and check a topology file.
    pub fn load(path: &Path) -> Result<Topology> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Topology::parse(&path.display().to_string(), &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Topology> {
        let mut topo: Topology = serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        topo.file = file.to_string();
        let problems = topo.check(file);
        if !problems.is_empty() {
            anyhow::bail!("{} problem(s) in the topology:\n  {}", problems.len(), problems.join("\n  "));
        }
        Ok(topo)
    }

    pub fn vswitch(&self, name: &str) -> Option<(&VpcSpec, &VSwitchSpec)> {
        self.vpcs.iter().find_map(|v| v.vswitches.iter().find(|s| s.name.value == name).map(|s| (v, s)))
    }

    pub fn security_group(&self, name: &str) -> Option<&SecurityGroupSpec> {
        self.security_groups.iter().find(|g| g.name.value == name)
    }

    pub fn instance(&self, name: &str) -> Option<&InstanceSpec> {
        self.instances.iter().find(|i| i.name.value == name)
    }

    pub fn pod(&self, name: &str) -> Option<&PodSpec> {
        self.pods.iter().find(|p| p.name.value == name)
    }

    pub fn external_client(&self, name: &str) -> Option<&ExternalClientSpec> {
        self.external_clients.iter().find(|x| x.name.value == name)
    }

    /// The vSwitch a pod's member ENI is in: its own, else its node trunk's.
    pub fn pod_vswitch<'a>(&'a self, pod: &'a PodSpec) -> Option<&'a str> {
        let trunk = self.instance(&pod.node.value).and_then(|n| n.trunk.as_ref()).map(|t| t.vswitch.value.as_str());
        pod.vswitch.as_ref().map(|v| v.value.as_str()).or(trunk)
    }

    /// Whether the vSwitch has an IPv6 /64 (`ipv6CidrBlock`).
    pub fn vswitch_has_ipv6(&self, name: &str) -> bool {
        self.vswitch(name).is_some_and(|(_, s)| s.ipv6_cidr_block.is_some())
    }

    /// The vSwitch's IPv6 /64, when the file names its VPC's /56 (otherwise only the cloud
    /// knows it, once the VPC exists).
    pub fn vswitch_ipv6(&self, name: &str) -> Option<Cidr6> {
        let (vpc, s) = self.vswitch(name)?;
        let block: Cidr6 = vpc.ipv6_cidr_block.as_ref()?.value.parse().ok()?;
        block.subnet(64, u128::from(s.ipv6_cidr_block.as_ref()?.value))
    }

    /// The VPC the cluster's nodes are in (the file's checks make it one), if there are nodes.
    pub fn cluster_vpc(&self) -> Option<&VpcSpec> {
        let first = self.instances.first()?;
        self.vswitch(&first.vswitch.value).map(|(v, _)| v)
    }

    /// kube-proxy's `--cluster-cidr`: the file's, or the cluster's VPC CIDR.
    pub fn cluster_cidr(&self) -> Option<Cidr> {
        match self.kube_proxy.as_ref().and_then(|k| k.cluster_cidr.as_ref()) {
            Some(c) => c.value.parse().ok(),
            None => self.cluster_vpc().and_then(|v| v.cidr.value.parse().ok()),
        }
    }

    /// Every semantic problem, each located.
    fn check(&self, f: &str) -> Vec<String> {
        let mut p = Vec::new();
        let mut names = HashSet::new();
        let mut unique = |p: &mut Vec<String>, what: &str, n: &S<String>| {
            if n.value.is_empty() {
                p.push(at(f, n, format!("{what} name is empty")));
            } else if !names.insert((what.to_string(), n.value.clone())) {
                p.push(at(f, n, format!("{what} {:?} is defined twice", n.value)));
            }
        };
        for t in &self.instance_types {
            unique(&mut p, "instance type", &t.id);
            if !t.id.value.starts_with("ecs.") {
                p.push(at(f, &t.id, "instance type ids look like ecs.<family>.<size>"));
            }
            if t.eni_total_quantity < t.eni_quantity {
                p.push(at(f, &t.id, "eniTotalQuantity must be at least eniQuantity"));
            }
        }
        for v in &self.vpcs {
            unique(&mut p, "vpc", &v.name);
            let vpc_cidr = v.cidr.value.parse::<Cidr>().ok();
            if vpc_cidr.is_none() {
                p.push(at(f, &v.cidr, format!("{:?} is not a CIDR block like 10.0.0.0/8", v.cidr.value)));
            }
            let mut seen: Vec<Cidr> = Vec::new();
            let mut seen6: Vec<u32> = Vec::new();
            let ipv6 = v.enable_ipv6.as_ref().is_some_and(|e| e.value);
            if let Some(b) = &v.ipv6_cidr_block {
                match b.value.parse::<Cidr6>() {
                    _ if !ipv6 => p.push(at(f, b, "an IPv6 block needs enableIpv6: true")),
                    Ok(c) if c.prefix() == 56 => {}
                    _ => p.push(at(f, b, format!("{:?} is not an IPv6 /56 like 2408:4005:3000::/56", b.value))),
                }
            }
            for s in &v.vswitches {
                unique(&mut p, "vswitch", &s.name);
                if let Some(b) = &s.ipv6_cidr_block {
                    if !ipv6 {
                        p.push(at(f, b, format!("vpc {} has no IPv6 block: add enableIpv6: true", v.name.value)));
                    } else if b.value > 255 {
                        p.push(at(f, b, "ipv6CidrBlock picks one /64 of the VPC's /56: 0 to 255"));
                    } else if seen6.contains(&b.value) {
                        p.push(at(f, b, format!("another vSwitch of the VPC has /64 number {}", b.value)));
                    }
                    seen6.push(b.value);
                }
                match s.cidr.value.parse::<Cidr>() {
                    Err(_) => {
                        p.push(at(f, &s.cidr, format!("{:?} is not a CIDR block like 10.0.4.0/24", s.cidr.value)))
                    }
                    Ok(c) => {
                        if vpc_cidr.is_some_and(|vc| !vc.covers(&c)) {
                            p.push(at(f, &s.cidr, format!("{c} is not inside the VPC's {}", v.cidr.value)));
                        }
                        if seen.iter().any(|o| o.overlaps(&c)) {
                            p.push(at(f, &s.cidr, format!("{c} overlaps another vSwitch of the VPC")));
                        }
                        seen.push(c);
                    }
                }
            }
        }
        for g in &self.security_groups {
            unique(&mut p, "security group", &g.name);
            if !self.vpcs.iter().any(|v| v.name.value == g.vpc.value) {
                p.push(at(f, &g.vpc, format!("no vpc named {:?}", g.vpc.value)));
            }
            if let Some(k) = &g.kind
                && !matches!(k.value.as_str(), "normal" | "enterprise")
            {
                p.push(at(f, k, "type is normal or enterprise"));
            }
            if let Some(k) = &g.inner_access_policy
                && !matches!(k.value.as_str(), "Accept" | "Drop")
            {
                p.push(at(f, k, "innerAccessPolicy is Accept or Drop"));
            }
            for r in g.ingress.iter().chain(&g.egress) {
                self.check_rule(f, r, &mut p);
            }
        }
        for i in &self.instances {
            unique(&mut p, "instance", &i.name);
            self.check_vswitch_ref(f, &i.vswitch, &mut p);
            self.check_groups(f, &i.security_groups, &i.name, &mut p);
            if let Some(ip) = &i.private_ip {
                match ip.value.parse::<std::net::Ipv4Addr>() {
                    Err(_) => p.push(at(f, ip, format!("{:?} is not an IPv4 address", ip.value))),
                    Ok(a) => {
                        let inside = self
                            .vswitch(&i.vswitch.value)
                            .and_then(|(_, s)| s.cidr.value.parse::<Cidr>().ok())
                            .is_none_or(|c| c.contains(a));
                        if !inside {
                            p.push(at(f, ip, format!("{a} is not in vSwitch {}", i.vswitch.value)));
                        }
                    }
                }
            }
            if let Some(t) = &i.trunk {
                self.check_vswitch_ref(f, &t.vswitch, &mut p);
                self.check_groups(f, &t.security_groups, &t.vswitch, &mut p);
            }
            if let Some(v6) = i.ipv6.as_ref().filter(|v| v.value)
                && self.vswitch(&i.vswitch.value).is_some()
                && !self.vswitch_has_ipv6(&i.vswitch.value)
            {
                p.push(at(
                    f,
                    v6,
                    format!("vSwitch {} has no IPv6 block (ipv6CidrBlock) to take an address from", i.vswitch.value),
                ));
            }
            for srv in &i.servers {
                check_server(f, srv, &mut p);
            }
        }
        for lb in &self.load_balancers {
            unique(&mut p, "load balancer", &lb.name);
            self.check_load_balancer(f, lb, &mut p);
        }
        let mut pinned6 = HashSet::new();
        for pod in &self.pods {
            unique(&mut p, "pod or instance", &pod.name);
            if self.instance(&pod.name.value).is_some() {
                p.push(at(f, &pod.name, "a pod cannot have an instance's name"));
            }
            match self.instance(&pod.node.value) {
                None => p.push(at(f, &pod.node, format!("no instance named {:?}", pod.node.value))),
                Some(i) if i.trunk.is_none() => p.push(at(f, &pod.node, "trunk pods need a node with a trunk ENI")),
                Some(_) => {}
            }
            if let Some(d) = &pod.datapath
                && !matches!(d.value.as_str(), "veth" | "vlan")
            {
                p.push(at(f, d, "datapath is veth or vlan"));
            }
            if let Some(v) = &pod.vswitch {
                self.check_vswitch_ref(f, v, &mut p);
            }
            if !pod.security_groups.is_empty() {
                self.check_groups(f, &pod.security_groups, &pod.name, &mut p);
            }
            if let Some(ip) = &pod.ip
                && ip.value.parse::<std::net::Ipv4Addr>().is_err()
            {
                p.push(at(f, ip, format!("{:?} is not an IPv4 address", ip.value)));
            }
            self.check_pod_ipv6(f, pod, &mut pinned6, &mut p);
            for srv in &pod.servers {
                check_server(f, srv, &mut p);
            }
        }
        for x in &self.external_clients {
            unique(&mut p, "pod or instance", &x.name);
            if self.instance(&x.name.value).is_some() {
                p.push(at(f, &x.name, "an external client cannot have an instance's name"));
            }
            match x.ip() {
                None => p.push(at(
                    f,
                    &x.address,
                    format!("{:?} is not an address with a prefix, like 47.100.1.10/24", x.address.value),
                )),
                Some((ip, _)) => {
                    if let Some(v) =
                        self.vpcs.iter().find(|v| v.cidr.value.parse::<Cidr>().is_ok_and(|c| c.contains(ip)))
                    {
                        p.push(at(
                            f,
                            &x.address,
                            format!("{ip} is inside vpc {}: an external client is on the internet side", v.name.value),
                        ));
                    }
                }
            }
            for srv in &x.servers {
                check_server(f, srv, &mut p);
            }
        }
        if let Some(k) = &self.kube_proxy
            && let Some(c) = &k.cluster_cidr
            && c.value.parse::<Cidr>().is_err()
        {
            p.push(at(f, c, format!("{:?} is not a CIDR block like 10.0.0.0/8", c.value)));
        }
        let mut cluster_ips = HashSet::new();
        for svc in &self.services {
            let key = S {
                value: format!("{}/{}", svc.namespace(), svc.name.value),
                referenced: svc.name.referenced,
                defined: svc.name.defined,
            };
            unique(&mut p, "service", &key);
            if let Some(cip) = svc.cluster_ip.value.parse::<Ipv4Addr>().ok()
                && !cluster_ips.insert(cip)
            {
                p.push(at(f, &svc.cluster_ip, format!("clusterIP {cip} belongs to another service")));
            }
            self.check_service(f, svc, &mut p);
        }
        if !self.services.is_empty() {
            let vpcs: HashSet<&str> = self
                .instances
                .iter()
                .filter_map(|i| self.vswitch(&i.vswitch.value))
                .map(|(v, _)| v.name.value.as_str())
                .collect();
            if vpcs.len() > 1 {
                p.push(at(f, &self.services[0].name, "services need the cluster's nodes in one vpc"));
            }
        }
        let mut check_names = HashSet::new();
        for c in &self.checks {
            if !check_names.insert(c.name.value.clone()) {
                p.push(at(f, &c.name, format!("check {:?} is defined twice", c.name.value)));
            }
            let ipv6 = match &c.family {
                Some(fam) if !matches!(fam.value.as_str(), "ipv4" | "ipv6") => {
                    p.push(at(f, fam, "family is ipv4 or ipv6"));
                    None
                }
                _ => Some(c.ipv6()),
            };
            // A probe starts in a pod, a node or an external client; it may aim at a bare IP.
            for (end, ip_allowed) in [(&c.from, false), (&c.to, true)] {
                let known = self.pod(&end.value).is_some()
                    || self.instance(&end.value).is_some()
                    || self.external_client(&end.value).is_some();
                let ip = if ip_allowed { end.value.parse::<IpAddr>().ok() } else { None };
                if !known && ip.is_none() {
                    p.push(at(f, end, format!("no pod, instance or external client named {:?}", end.value)));
                }
                if let Some(ipv6) = ipv6 {
                    self.check_end_family(f, end, ip, ipv6, &mut p);
                }
            }
            let proto = c.protocol.value.as_str();
            if !matches!(proto, "tcp" | "udp" | "http" | "icmp") {
                p.push(at(f, &c.protocol, "protocol is tcp, udp, http or icmp"));
            } else if proto != "icmp" && c.port.is_none() {
                p.push(at(f, &c.protocol, format!("a {proto} check needs a port")));
            }
            if !matches!(c.expect.value.as_str(), "reachable" | "blocked") {
                p.push(at(f, &c.expect, "expect is reachable or blocked"));
            }
            for ch in &c.changes {
                let group = self.security_group(&ch.group.value);
                if group.is_none() {
                    p.push(at(f, &ch.group, format!("no security group named {:?}", ch.group.value)));
                }
                match (&ch.add, &ch.remove, &ch.inner_access_policy) {
                    (Some(r), None, None) | (None, Some(r), None) => {
                        self.check_rule(f, r, &mut p);
                        match &ch.direction {
                            Some(d) if !matches!(d.value.as_str(), "ingress" | "egress") => {
                                p.push(at(f, d, "direction is ingress or egress"))
                            }
                            Some(_) => {}
                            None => p.push(at(f, &ch.group, "a rule change needs a direction: ingress or egress")),
                        }
                    }
                    (None, None, Some(pol)) => {
                        if !matches!(pol.value.as_str(), "Accept" | "Drop") {
                            p.push(at(f, pol, "innerAccessPolicy is Accept or Drop"));
                        }
                        if let Some(d) = &ch.direction {
                            p.push(at(f, d, "an innerAccessPolicy change has no direction"));
                        }
                        if group.is_some_and(|g| g.kind.as_ref().is_some_and(|k| k.value == "enterprise")) {
                            p.push(at(f, pol, "enterprise groups have no innerAccessPolicy to change"));
                        }
                    }
                    _ => p.push(at(f, &ch.group, "a change has exactly one of add, remove or innerAccessPolicy")),
                }
            }
        }
        p
    }

    /// A pod's `ipStack` and pinned `ipv6`: a dual-stack pod needs a vSwitch with a /64, and a
    /// pinned address must be one of it (when the file names the VPC's /56, so the /64 is known
    /// here; otherwise the lab checks it against the cloud's before any pod is made), not a
    /// reserved one, and no other pod's.
    fn check_pod_ipv6(&self, f: &str, pod: &PodSpec, pinned: &mut HashSet<Ipv6Addr>, p: &mut Vec<String>) {
        if let Some(st) = &pod.ip_stack
            && !matches!(st.value.as_str(), "ipv4" | "dual")
        {
            p.push(at(f, st, "ipStack is ipv4 or dual"));
        }
        let vsw = self.pod_vswitch(pod).filter(|v| self.vswitch(v).is_some());
        if let (true, Some(st), Some(v)) = (pod.dual(), &pod.ip_stack, vsw)
            && !self.vswitch_has_ipv6(v)
        {
            p.push(at(f, st, format!("vSwitch {v} has no IPv6 block (ipv6CidrBlock): a dual-stack pod needs one")));
        }
        let Some(ip6) = &pod.ipv6 else { return };
        if !pod.dual() {
            p.push(at(f, ip6, "an ipv6 address is for dual-stack pods: add ipStack: dual"));
        }
        let Ok(a) = ip6.value.parse::<Ipv6Addr>() else {
            p.push(at(f, ip6, format!("{:?} is not an IPv6 address", ip6.value)));
            return;
        };
        if let Some(block) = vsw.and_then(|v| self.vswitch_ipv6(v)) {
            if !block.contains(a) {
                p.push(at(f, ip6, format!("{a} is not in vSwitch {}'s {block}", vsw.unwrap_or_default())));
            } else if block.is_reserved(a) {
                p.push(at(f, ip6, format!("{a} is reserved in {block} (the VPC keeps its first and last three)")));
            }
        }
        if !pinned.insert(a) {
            p.push(at(f, ip6, format!("{a} is pinned by another pod too")));
        }
    }

    /// One end of a check against its family: an address of the other family is refused, and a
    /// named end of an IPv6 check must have an IPv6 address (a dual-stack pod, an instance with
    /// `ipv6: true`; the internet side has none).
    fn check_end_family(&self, f: &str, end: &S<String>, ip: Option<IpAddr>, ipv6: bool, p: &mut Vec<String>) {
        let name = &end.value;
        let missing = match ip {
            Some(IpAddr::V6(_)) if !ipv6 => Some(format!("{name} is an IPv6 address: the check needs family: ipv6")),
            Some(IpAddr::V4(_)) if ipv6 => Some(format!("{name} is an IPv4 address in a family: ipv6 check")),
            Some(_) => None,
            None if !ipv6 => None,
            None => match (self.pod(name), self.instance(name), self.external_client(name)) {
                (Some(pod), _, _) if !pod.dual() => {
                    Some(format!("pod {name} has no IPv6 address for a family: ipv6 check (give it ipStack: dual)"))
                }
                (None, Some(i), _) if !i.has_ipv6() => {
                    Some(format!("instance {name} has no IPv6 address for a family: ipv6 check (give it ipv6: true)"))
                }
                (None, None, Some(_)) => {
                    Some(format!("external client {name} has no IPv6 address: the internet side is IPv4"))
                }
                _ => None,
            },
        };
        if let Some(m) = missing {
            p.push(at(f, end, m));
        }
    }

    fn check_load_balancer(&self, f: &str, lb: &LoadBalancerSpec, p: &mut Vec<String>) {
        let Some(vpc) = self.vpcs.iter().find(|v| v.name.value == lb.vpc.value) else {
            p.push(at(f, &lb.vpc, format!("no vpc named {:?}", lb.vpc.value)));
            return;
        };
        let vpc_cidr = vpc.cidr.value.parse::<Cidr>().ok();
        let intranet = match &lb.address_type {
            Some(t) if !matches!(t.value.as_str(), "internet" | "intranet") => {
                p.push(at(f, t, "addressType is internet or intranet"));
                false
            }
            Some(t) => t.value == "intranet",
            None => false,
        };
        let vsw = match &lb.vswitch {
            Some(s) => match vpc.vswitches.iter().find(|v| v.name.value == s.value) {
                Some(v) => Some(v),
                None => {
                    p.push(at(f, s, format!("no vswitch named {:?} in vpc {}", s.value, vpc.name.value)));
                    None
                }
            },
            None if intranet => {
                p.push(at(f, &lb.name, "an intranet load balancer needs a vswitch"));
                None
            }
            None => None,
        };
        if let Some(a) = &lb.address {
            match a.value.parse::<std::net::Ipv4Addr>() {
                Err(_) => p.push(at(f, a, format!("{:?} is not an IPv4 address", a.value))),
                Ok(ip) if intranet => {
                    let inside = vsw.and_then(|v| v.cidr.value.parse::<Cidr>().ok()).is_none_or(|c| c.contains(ip));
                    if !inside {
                        p.push(at(f, a, format!("{ip} is not in the load balancer's vswitch")));
                    }
                }
                Ok(_) => {}
            }
        }
        let mut seen = HashSet::new();
        for l in &lb.listeners {
            let udp = l.protocol.value == "udp";
            if !matches!(l.protocol.value.as_str(), "tcp" | "udp") {
                p.push(at(f, &l.protocol, "a listener's protocol is tcp or udp"));
            }
            if l.port.value == 0 {
                p.push(at(f, &l.port, "port 0 is not a port"));
            } else if !seen.insert((l.protocol.value.clone(), l.port.value)) {
                p.push(at(f, &l.port, format!("two {} listeners on port {}", l.protocol.value, l.port.value)));
            }
            if let Some(s) = &l.scheduler
                && !matches!(s.value.as_str(), "wrr" | "rr" | "wlc" | "sch" | "tch")
            {
                p.push(at(f, s, "scheduler is wrr, rr, wlc, sch or tch"));
            }
            range(f, &l.persistence_timeout, 0, 3600, "persistenceTimeout", p);
            range(f, &l.established_timeout, 10, 900, "establishedTimeout", p);
            if udp && let Some(e) = &l.established_timeout {
                p.push(at(f, e, "establishedTimeout is for tcp listeners"));
            }
            for b in &l.backends {
                self.check_backend(f, b, vpc_cidr, p);
            }
            if let Some(h) = &l.health_check {
                check_health(f, h, udp, p);
            }
        }
    }

    fn check_service(&self, f: &str, svc: &ServiceSpec, p: &mut Vec<String>) {
        if !svc.name.value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            p.push(at(f, &svc.name, "a service name is lower-case letters, digits and '-'"));
        }
        let lb = match &svc.kind {
            Some(k) if !matches!(k.value.as_str(), "ClusterIP" | "LoadBalancer") => {
                p.push(at(f, k, "type is ClusterIP or LoadBalancer (the lab has no node ports)"));
                false
            }
            Some(k) => k.value == "LoadBalancer",
            None => false,
        };
        let vpcs: Vec<(&VpcSpec, Cidr)> =
            self.vpcs.iter().filter_map(|v| v.cidr.value.parse::<Cidr>().ok().map(|c| (v, c))).collect();
        let addr = |a: &S<String>, what: &str, p: &mut Vec<String>| match a.value.parse::<Ipv4Addr>() {
            Err(_) => p.push(at(f, a, format!("{:?} is not an IPv4 address", a.value))),
            Ok(ip) => {
                if let Some((v, _)) = vpcs.iter().find(|(_, c)| c.contains(ip)) {
                    p.push(at(
                        f,
                        a,
                        format!("{what} {ip} is inside vpc {}, where it would be an ENI's address", v.name.value),
                    ));
                }
            }
        };
        addr(&svc.cluster_ip, "clusterIP", p);
        for e in &svc.external_ips {
            addr(e, "externalIP", p);
        }
        if svc.selector.is_empty() {
            p.push(at(f, &svc.name, "a service needs a selector: the lab finds endpoints by labels only"));
        }
        if svc.ports.is_empty() {
            p.push(at(f, &svc.name, "a service needs at least one port"));
        }
        let mut seen = HashSet::new();
        let mut names = HashSet::new();
        for port in &svc.ports {
            if let Some(pr) = &port.protocol
                && !matches!(pr.value.as_str(), "TCP" | "UDP")
            {
                p.push(at(f, pr, "a service port's protocol is TCP or UDP"));
            }
            if port.port.value == 0 {
                p.push(at(f, &port.port, "port 0 is not a port"));
            } else if !seen.insert((port.protocol(), port.port.value)) {
                p.push(at(f, &port.port, format!("two {} ports {}", port.protocol(), port.port.value)));
            }
            if let Some(t) = &port.target_port
                && t.value == 0
            {
                p.push(at(f, t, "port 0 is not a port"));
            }
            match &port.name {
                None if svc.ports.len() > 1 => {
                    p.push(at(f, &port.port, "every port of a multi-port service needs a name"))
                }
                Some(n) if !names.insert(n.value.clone()) => {
                    p.push(at(f, n, format!("port name {:?} is used twice", n.value)))
                }
                _ => {}
            }
        }
        if let Some(e) = &svc.external_traffic_policy {
            if !matches!(e.value.as_str(), "Local" | "Cluster") {
                p.push(at(f, e, "externalTrafficPolicy is Local or Cluster"));
            } else if !lb {
                p.push(at(f, e, "externalTrafficPolicy may only be set on a LoadBalancer service"));
            }
        }
        let Some(l) = &svc.load_balancer else { return };
        if !lb {
            p.push(at(f, &svc.name, "loadBalancer is for services of type LoadBalancer"));
        }
        let intranet = match &l.address_type {
            Some(t) if !matches!(t.value.as_str(), "internet" | "intranet") => {
                p.push(at(f, t, "addressType is internet or intranet"));
                false
            }
            Some(t) => t.value == "intranet",
            None => false,
        };
        let vsw = match &l.vswitch {
            Some(s) if !intranet => {
                p.push(at(f, s, "a vswitch is for intranet load balancers"));
                None
            }
            Some(s) => match self.cluster_vpc().and_then(|v| v.vswitches.iter().find(|x| x.name.value == s.value)) {
                Some(v) => Some(v),
                None => {
                    p.push(at(f, s, format!("no vswitch named {:?} in the cluster's vpc", s.value)));
                    None
                }
            },
            None if intranet => {
                p.push(at(f, &svc.name, "an intranet load balancer needs a vswitch"));
                None
            }
            None => None,
        };
        if let Some(a) = &l.address {
            match a.value.parse::<Ipv4Addr>() {
                Err(_) => p.push(at(f, a, format!("{:?} is not an IPv4 address", a.value))),
                Ok(ip) if intranet => {
                    if vsw.and_then(|v| v.cidr.value.parse::<Cidr>().ok()).is_some_and(|c| !c.contains(ip)) {
                        p.push(at(f, a, format!("{ip} is not in the load balancer's vswitch")));
                    }
                }
                Ok(_) => {}
            }
        }
        if let Some(s) = &l.scheduler
            && !matches!(s.value.as_str(), "wrr" | "rr" | "wlc" | "sch" | "tch")
        {
            p.push(at(f, s, "scheduler is rr, wrr, wlc, sch or tch"));
        }
        if let Some(h) = &l.health_check {
            let udp = svc.ports.iter().all(|p| p.protocol() == "udp");
            check_health(f, h, udp, p);
        }
    }

    fn check_backend(&self, f: &str, b: &BackendSpec, vpc_cidr: Option<Cidr>, p: &mut Vec<String>) {
        let named = [b.pod.is_some(), b.instance.is_some(), b.eni.is_some()].iter().filter(|x| **x).count();
        if named > 1 || (named == 0 && b.ip.is_none()) || (b.ip.is_some() && (b.pod.is_some() || b.instance.is_some()))
        {
            p.push(at(f, &b.port, "a backend is one of pod, instance, eni or ip (ip may come with eni)"));
        }
        if let Some(pod) = &b.pod
            && self.pod(&pod.value).is_none()
        {
            p.push(at(f, pod, format!("no pod named {:?}", pod.value)));
        }
        if let Some(i) = &b.instance
            && self.instance(&i.value).is_none()
        {
            p.push(at(f, i, format!("no instance named {:?}", i.value)));
        }
        if let Some(e) = &b.eni
            && !e.value.starts_with("eni-")
        {
            p.push(at(f, e, "an ENI ID looks like eni-…"));
        }
        if let Some(ip) = &b.ip {
            match ip.value.parse::<std::net::Ipv4Addr>() {
                Err(_) => p.push(at(f, ip, format!("{:?} is not an IPv4 address", ip.value))),
                Ok(a) if vpc_cidr.is_some_and(|c| !c.contains(a)) => {
                    p.push(at(f, ip, format!("{a} is not in the load balancer's vpc")))
                }
                Ok(_) => {}
            }
        }
        if b.port.value == 0 {
            p.push(at(f, &b.port, "port 0 is not a port"));
        }
        range(f, &b.weight, 0, 100, "weight", p);
    }

    fn check_vswitch_ref(&self, f: &str, r: &S<String>, p: &mut Vec<String>) {
        if self.vswitch(&r.value).is_none() {
            p.push(at(f, r, format!("no vswitch named {:?}", r.value)));
        }
    }

    fn check_groups(&self, f: &str, groups: &[S<String>], owner: &S<String>, p: &mut Vec<String>) {
        if groups.is_empty() {
            p.push(at(f, owner, "needs at least one security group"));
        }
        if groups.len() > 5 {
            p.push(at(f, &groups[5], "an ENI joins at most 5 security groups"));
        }
        for g in groups {
            if self.security_group(&g.value).is_none() {
                p.push(at(f, g, format!("no security group named {:?}", g.value)));
            }
        }
    }

    fn check_rule(&self, f: &str, r: &RuleSpec, p: &mut Vec<String>) {
        let proto = r.protocol.value.to_ascii_uppercase();
        let known = matches!(proto.as_str(), "TCP" | "UDP" | "ICMP" | "ICMPV6" | "GRE" | "ALL");
        if !known {
            p.push(at(f, &r.protocol, "protocol is TCP, UDP, ICMP, ICMPv6, GRE or ALL"));
        }
        if matches!(proto.as_str(), "TCP" | "UDP") && r.ports.is_none() {
            p.push(at(f, &r.protocol, "TCP and UDP rules need ports: \"80/80\" or \"1/65535\""));
        }
        // The model's own check, here, so that a bad range stops the file before anything exists.
        if let Some(ports) = &r.ports
            && known
            && let Err(e) = canonical_port_range(&proto, &ports.value)
        {
            p.push(at(
                f,
                ports,
                format!("{}: {e} (\"80/80\" or \"1/65535\"; \"-1/-1\" for ICMP, GRE and ALL)", e.code()),
            ));
        }
        match (&r.peer, &r.peer_group) {
            (None, None) => p.push(at(f, &r.protocol, "a rule needs a peer (CIDR) or a peerGroup")),
            (Some(c), _)
                if enifab_model::net::parse_peer_cidr(&c.value).is_none()
                    && enifab_model::net::parse_peer_cidr6(&c.value).is_none() =>
            {
                p.push(at(f, c, format!("{:?} is not a CIDR block or an IP", c.value)))
            }
            (_, Some(g)) if self.security_group(&g.value).is_none() => {
                p.push(at(f, g, format!("no security group named {:?}", g.value)))
            }
            _ => {}
        }
        if let Some(pr) = &r.priority
            && !(1..=100).contains(&pr.value)
        {
            p.push(at(f, pr, "priority is 1 to 100"));
        }
        if let Some(pol) = &r.policy
            && !matches!(pol.value.to_ascii_lowercase().as_str(), "accept" | "drop")
        {
            p.push(at(f, pol, "policy is accept or drop"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "region: cn-hongkong
vpcs:
  - name: v
    cidr: 10.0.0.0/8
    vswitches:
      - { name: s, zone: cn-hongkong-b, cidr: 10.0.4.0/24 }
securityGroups:
  - name: g
    vpc: v
    ingress:
      - { protocol: TCP, ports: 80/80, peer: 10.0.0.0/8 }
instances:
  - { name: n1, type: ecs.g7.xlarge, vswitch: s, privateIp: 10.0.4.22, securityGroups: [g], trunk: { vswitch: s, securityGroups: [g] } }
";

    #[test]
    fn a_good_file_parses() {
        let t = Topology::parse("t.yaml", GOOD).unwrap();
        assert_eq!(t.instances[0].private_ip.as_ref().unwrap().value, "10.0.4.22");
    }

    const LB: &str = "loadBalancers:
  - name: web
    vpc: v
    address: 8.210.162.178
    listeners:
      - { protocol: tcp, port: 80, scheduler: rr, backends: [{ instance: n1, port: 30080 }, { ip: 10.0.4.50, port: 80, weight: 50 }],
          healthCheck: { type: http, uri: /healthz, interval: 2 } }
      - { protocol: udp, port: 53, backends: [{ eni: eni-j6c0000000000000000, port: 53 }], healthCheck: { request: ping, expect: pong } }
  - { name: inner, vpc: v, addressType: intranet, vswitch: s, address: 10.0.4.100 }
";

    #[test]
    fn load_balancers_parse_and_their_errors_are_located() {
        let t = Topology::parse("t.yaml", &format!("{GOOD}{LB}")).unwrap();
        assert_eq!(t.load_balancers.len(), 2);
        assert_eq!(t.load_balancers[0].listeners[0].backends[1].weight.as_ref().unwrap().value, 50);
        let bad = |from: &str, to: &str| {
            let text = format!("{GOOD}{}", LB.replacen(from, to, 1));
            Topology::parse("t.yaml", &text).unwrap_err().to_string()
        };
        let e = bad("vpc: v\n    address", "vpc: nope\n    address");
        assert!(e.contains("t.yaml:16:10:") && e.contains("no vpc named \"nope\""), "{e}");
        let e = bad("instance: n1", "instance: n9");
        assert!(e.contains("no instance named \"n9\""), "{e}");
        let e = bad("ip: 10.0.4.50", "ip: 192.168.0.1");
        assert!(e.contains("not in the load balancer's vpc"), "{e}");
        let e = bad("scheduler: rr", "scheduler: qch");
        assert!(e.contains("scheduler is wrr"), "{e}");
        let e = bad("interval: 2", "interval: 51");
        assert!(e.contains("interval is 1 to 50"), "{e}");
        let e = bad("protocol: udp, port: 53", "protocol: tcp, port: 80");
        assert!(e.contains("two tcp listeners on port 80"), "{e}");
        let e = bad("request: ping", "request: \"p i n g\"");
        assert!(e.contains("request is for udp listeners"), "{e}");
        let e = bad("addressType: intranet, vswitch: s,", "addressType: intranet,");
        assert!(e.contains("an intranet load balancer needs a vswitch"), "{e}");
        let e = bad("address: 10.0.4.100", "address: 10.0.9.1");
        assert!(e.contains("not in the load balancer's vswitch"), "{e}");
        let e = bad("{ instance: n1, port: 30080 }", "{ instance: n1, eni: eni-x, port: 30080 }");
        assert!(e.contains("a backend is one of pod, instance, eni or ip"), "{e}");
        let e = bad("{ instance: n1, port: 30080 }", "{ pod: p1, port: 30080 }");
        assert!(e.contains("no pod named \"p1\""), "{e}");
        let e = bad("name: inner", "name: web");
        assert!(e.contains("load balancer \"web\" is defined twice"), "{e}");
    }

    const K8S: &str = "pods:
  - { name: web, node: n1, labels: { app: web }, servers: [{ protocol: http, port: 80 }] }
services:
  - name: web
    type: LoadBalancer
    clusterIP: 192.168.81.92
    selector: { app: web }
    externalTrafficPolicy: Local
    ports: [{ protocol: TCP, port: 80, targetPort: 80 }]
    loadBalancer: { address: 8.210.162.178, scheduler: wrr, healthCheck: { interval: 1, healthyThreshold: 2 } }
  - name: web-ext
    namespace: shop
    clusterIP: 192.168.81.93
    externalIPs: [8.210.162.179]
    selector: { app: web }
    ports: [{ name: http, port: 80 }, { name: dns, protocol: UDP, port: 53 }]
kubeProxy: { clusterCIDR: 10.0.0.0/8 }
externalClients:
  - { name: internet, address: 47.100.1.10/24, servers: [{ protocol: tcp, port: 7 }] }
checks:
  - { name: in, from: internet, to: 8.210.162.178, protocol: http, port: 80, expect: reachable,
      changes: [{ group: g, innerAccessPolicy: Drop }] }
";

    #[test]
    fn services_external_clients_and_their_errors_are_located() {
        let t = Topology::parse("t.yaml", &format!("{GOOD}{K8S}")).unwrap();
        assert_eq!(t.services.len(), 2);
        let (web, ext) = (&t.services[0], &t.services[1]);
        assert!(web.is_load_balancer() && web.external_policy_local() && web.namespace() == "default");
        assert_eq!(web.selects(&t).map(|p| p.name.value.as_str()).collect::<Vec<_>>(), ["web"]);
        assert_eq!((ext.namespace(), ext.ports[1].protocol(), ext.ports[1].target_port()), ("shop", "udp", 53));
        assert_eq!(t.cluster_cidr().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(t.external_client("internet").unwrap().ip(), Some(("47.100.1.10".parse().unwrap(), 24)));
        assert_eq!(t.checks[0].changes[0].inner_access_policy.as_ref().unwrap().value, "Drop");
        // Without the knob, the detector is the cluster's VPC.
        let no_knob = format!("{GOOD}{}", K8S.replace("kubeProxy: { clusterCIDR: 10.0.0.0/8 }\n", ""));
        assert_eq!(Topology::parse("t.yaml", &no_knob).unwrap().cluster_cidr().unwrap().to_string(), "10.0.0.0/8");

        let bad = |from: &str, to: &str| {
            let text = format!("{GOOD}{}", K8S.replacen(from, to, 1));
            Topology::parse("t.yaml", &text).unwrap_err().to_string()
        };
        let e = bad(
            "    selector: { app: web }\n    ports: [{ name",
            "    externalTrafficPolicy: Local\n    selector: { app: web }\n    ports: [{ name",
        );
        assert!(e.contains("t.yaml:28:28:") && e.contains("only be set on a LoadBalancer service"), "{e}");
        let e = bad("clusterIP: 192.168.81.93", "clusterIP: 10.0.9.9");
        assert!(e.contains("t.yaml:26:16:") && e.contains("inside vpc v"), "{e}");
        let e = bad("clusterIP: 192.168.81.93", "clusterIP: 192.168.81.92");
        assert!(e.contains("belongs to another service"), "{e}");
        let e = bad("{ name: http, port: 80 }", "{ port: 80 }");
        assert!(e.contains("every port of a multi-port service needs a name"), "{e}");
        let e = bad("name: dns, protocol: UDP, port: 53", "name: dns, protocol: SCTP, port: 53");
        assert!(e.contains("protocol is TCP or UDP"), "{e}");
        let e = bad("type: LoadBalancer", "type: NodePort");
        assert!(e.contains("type is ClusterIP or LoadBalancer"), "{e}");
        let e = bad("scheduler: wrr", "scheduler: qch");
        assert!(e.contains("scheduler is rr, wrr"), "{e}");
        let e = bad("interval: 1,", "interval: 0,");
        assert!(e.contains("interval is 1 to 50"), "{e}");
        let e = bad("selector: { app: web }", "selector: {}");
        assert!(e.contains("needs a selector"), "{e}");
        let e = bad("address: 47.100.1.10/24", "address: 10.0.4.77/24");
        assert!(e.contains("inside vpc v: an external client is on the internet side"), "{e}");
        let e = bad("address: 47.100.1.10/24", "address: 47.100.1.10");
        assert!(e.contains("not an address with a prefix"), "{e}");
        let e = bad("from: internet", "from: nobody");
        assert!(e.contains("no pod, instance or external client named \"nobody\""), "{e}");
        let e =
            bad("{ group: g, innerAccessPolicy: Drop }", "{ group: g, direction: ingress, innerAccessPolicy: Drop }");
        assert!(e.contains("an innerAccessPolicy change has no direction"), "{e}");
        let e = bad("{ group: g, innerAccessPolicy: Drop }", "{ group: g, innerAccessPolicy: Deny }");
        assert!(e.contains("innerAccessPolicy is Accept or Drop"), "{e}");
        let e = bad(
            "{ group: g, innerAccessPolicy: Drop }",
            "{ group: g, add: { protocol: TCP, ports: 80/80, peer: 10.0.0.0/8 } }",
        );
        assert!(e.contains("a rule change needs a direction"), "{e}");
        let e = bad("clusterCIDR: 10.0.0.0/8 }", "clusterCIDR: 10.0.0.0/33 }");
        assert!(e.contains("not a CIDR"), "{e}");
        let e = bad("name: web-ext\n    namespace: shop", "name: web\n    namespace: default");
        assert!(e.contains("service \"default/web\" is defined twice"), "{e}");
    }

    const DUAL: &str = "region: cn-hongkong
vpcs:
  - name: v
    cidr: 10.0.0.0/8
    enableIpv6: true
    ipv6CidrBlock: 2408:4005:3000::/56
    vswitches:
      - { name: s, zone: cn-hongkong-b, cidr: 10.0.4.0/24, ipv6CidrBlock: 4 }
      - { name: s4, zone: cn-hongkong-b, cidr: 10.0.8.0/24 }
securityGroups:
  - name: g
    vpc: v
    ingress:
      - { protocol: ALL, peer: 2408:4005:3000:4::/64 }
instances:
  - { name: n1, type: ecs.g7.xlarge, vswitch: s, privateIp: 10.0.4.22, ipv6: true, securityGroups: [g], trunk: { vswitch: s, securityGroups: [g] } }
  - { name: n2, type: ecs.g7.xlarge, vswitch: s4, privateIp: 10.0.8.22, securityGroups: [g], trunk: { vswitch: s4, securityGroups: [g] } }
pods:
  - name: web
    node: n1
    ipStack: dual
    ipv6: 2408:4005:3000:4::30
    servers: [{ protocol: http, port: 80 }]
  - { name: web2, node: n1, ipStack: dual, ipv6: \"2408:4005:3000:4::31\" }
  - { name: v4, node: n2 }
checks:
  - { name: six, from: n1, to: web, protocol: icmp, family: ipv6, expect: reachable }
  - { name: lit, from: web, to: \"2408:4005:3000:4::1\", protocol: tcp, port: 80, family: ipv6, expect: reachable }
  - { name: four, from: web, to: v4, protocol: tcp, port: 80, expect: reachable }
";

    /// The 1-based line of the first line of `text` containing `needle`.
    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).expect("the needle is in the text") + 1
    }

    #[test]
    fn dual_stack_parses() {
        let t = Topology::parse("t.yaml", DUAL).unwrap();
        assert_eq!(t.vswitch_ipv6("s").unwrap().to_string(), "2408:4005:3000:4::/64");
        assert_eq!(t.vswitch_ipv6("s4"), None);
        assert!(t.instances[0].has_ipv6() && !t.instances[1].has_ipv6());
        assert!(t.pods[0].dual() && t.pods[1].dual() && !t.pods[2].dual());
        assert_eq!(t.pods[0].ipv6.as_ref().unwrap().value, "2408:4005:3000:4::30");
        assert_eq!(t.pods[1].ipv6.as_ref().unwrap().value, "2408:4005:3000:4::31");
        assert!(t.checks[0].ipv6() && t.checks[1].ipv6() && !t.checks[2].ipv6());
        // Without the VPC's /56 the /64 is the cloud's to say: pins are not checked here.
        let unnamed = DUAL.replace("    ipv6CidrBlock: 2408:4005:3000::/56\n", "");
        let t = Topology::parse("t.yaml", &unnamed).unwrap();
        assert_eq!(t.vswitch_ipv6("s"), None);
        assert!(t.vswitch_has_ipv6("s") && !t.vswitch_has_ipv6("s4"));
    }

    #[test]
    fn dual_stack_errors_are_located() {
        let bad = |from: &str, to: &str| {
            let text = DUAL.replacen(from, to, 1);
            assert_ne!(text, DUAL, "{from:?} is in the fixture");
            (Topology::parse("t.yaml", &text).unwrap_err().to_string(), text)
        };
        let (e, text) = bad("{ name: v4, node: n2 }", "{ name: v4, node: n2, ipStack: dual }");
        let l = line_of(&text, "name: v4");
        assert!(e.contains(&format!("t.yaml:{l}:")) && e.contains("vSwitch s4 has no IPv6 block"), "{e}");
        let (e, text) = bad("vswitch: s4, privateIp: 10.0.8.22,", "vswitch: s4, privateIp: 10.0.8.22, ipv6: true,");
        let l = line_of(&text, "ipv6: true, securityGroups: [g], trunk: { vswitch: s4");
        assert!(e.contains(&format!("t.yaml:{l}:")) && e.contains("vSwitch s4 has no IPv6 block"), "{e}");
        let (e, text) = bad("ipv6: 2408:4005:3000:4::30", "ipv6: 2408:4005:3000:5::30");
        let l = line_of(&text, "3000:5::30");
        assert!(
            e.contains(&format!("t.yaml:{l}:11:")) && e.contains("is not in vSwitch s's 2408:4005:3000:4::/64"),
            "{e}"
        );
        let (e, _) = bad("ipv6: 2408:4005:3000:4::30", "ipv6: \"2408:4005:3000:4::\"");
        assert!(e.contains("reserved in 2408:4005:3000:4::/64"), "{e}");
        let (e, _) = bad("ipv6: 2408:4005:3000:4::30", "ipv6: 10.0.4.30");
        assert!(e.contains("\"10.0.4.30\" is not an IPv6 address"), "{e}");
        let (e, _) = bad("ipv6: 2408:4005:3000:4::30", "ipv6: 2408:4005:3000:4::31");
        assert!(e.contains("pinned by another pod too"), "{e}");
        let (e, text) = bad("    ipStack: dual\n", "");
        let l = line_of(&text, "ipv6: 2408:4005:3000:4::30");
        assert!(e.contains(&format!("t.yaml:{l}:")) && e.contains("add ipStack: dual"), "{e}");
        let (e, _) = bad("    ipStack: dual\n", "    ipStack: triple\n");
        assert!(e.contains("ipStack is ipv4 or dual"), "{e}");
        let (e, _) = bad("family: ipv6, expect", "family: ipv7, expect");
        assert!(e.contains("family is ipv4 or ipv6"), "{e}");
        // A check of family ipv6 needs IPv6 at both ends, said at the end that lacks it.
        let (e, text) = bad("{ name: four, from: web, to: v4,", "{ name: four, from: web, to: v4, family: ipv6,");
        let l = line_of(&text, "name: four");
        assert!(e.contains(&format!("t.yaml:{l}:")) && e.contains("pod v4 has no IPv6 address"), "{e}");
        let (e, _) = bad("{ name: six, from: n1,", "{ name: six, from: n2,");
        assert!(e.contains("instance n2 has no IPv6 address for a family: ipv6 check"), "{e}");
        let (e, _) = bad(
            "to: \"2408:4005:3000:4::1\", protocol: tcp, port: 80, family: ipv6,",
            "to: \"2408:4005:3000:4::1\", protocol: tcp, port: 80,",
        );
        assert!(e.contains("is an IPv6 address: the check needs family: ipv6"), "{e}");
        let (e, _) = bad("to: \"2408:4005:3000:4::1\"", "to: 10.0.4.1");
        assert!(e.contains("10.0.4.1 is an IPv4 address in a family: ipv6 check"), "{e}");
        let ext = format!("{DUAL}externalClients:\n  - {{ name: x, address: 47.100.1.10/24 }}\n")
            .replace("{ name: six, from: n1,", "{ name: six, from: x,");
        let e = Topology::parse("t.yaml", &ext).unwrap_err().to_string();
        assert!(e.contains("external client x has no IPv6 address"), "{e}");
        // The VPC's block: a /56, and only with enableIpv6.
        let (e, text) = bad("ipv6CidrBlock: 2408:4005:3000::/56", "ipv6CidrBlock: 2408:4005:3000::/48");
        let l = line_of(&text, "3000::/48");
        assert!(e.contains(&format!("t.yaml:{l}:20:")) && e.contains("is not an IPv6 /56"), "{e}");
        let (e, _) = bad("    enableIpv6: true\n", "");
        assert!(e.contains("an IPv6 block needs enableIpv6: true"), "{e}");
    }

    #[test]
    fn the_examples_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/terway-trunk-sop/");
        for name in ["topology.yaml", "topology-vlan.yaml", "topology-dual.yaml", "cloud.yaml"] {
            Topology::load(Path::new(&format!("{dir}{name}"))).unwrap_or_else(|e| panic!("{e:#}"));
        }
        // The benchmarks' labs are topology files too.
        let bench = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/");
        for name in ["topology.yaml", "topology-dual.yaml", "slb-topology.yaml"] {
            Topology::load(Path::new(&format!("{bench}{name}"))).unwrap_or_else(|e| panic!("{e:#}"));
        }
        let dual = Topology::load(Path::new(&format!("{dir}topology-dual.yaml"))).unwrap();
        assert!(dual.pods.iter().all(PodSpec::dual) && dual.instances.iter().all(InstanceSpec::has_ipv6));
        // Scenarios 1–5 over both families, 6–10 over IPv4 only.
        for c in &dual.checks {
            let s = c.scenario.expect("every check has its scenario");
            assert!(!c.ipv6() || s <= 5, "{} is an IPv6 check of scenario {s}", c.name.value);
        }
        for s in 1..=5 {
            assert!(dual.checks.iter().any(|c| c.scenario == Some(s) && c.ipv6()), "scenario {s} over IPv6");
            assert!(dual.checks.iter().any(|c| c.scenario == Some(s) && !c.ipv6()), "scenario {s} over IPv4");
        }
    }

    #[test]
    fn errors_are_located() {
        let bad = GOOD.replace("vswitch: s, privateIp", "vswitch: nope, privateIp");
        let e = Topology::parse("t.yaml", &bad).unwrap_err().to_string();
        assert!(e.contains("t.yaml:13:47:") && e.contains("no vswitch named \"nope\""), "{e}");
        let bad = GOOD.replace("cidr: 10.0.4.0/24", "cidr: 10.0.4.7/24");
        let e = Topology::parse("t.yaml", &bad).unwrap_err().to_string();
        assert!(e.contains("t.yaml:6:") && e.contains("not a CIDR"), "{e}");
        let bad = GOOD.replace("protocol: TCP, ports", "protocl: TCP, ports");
        let e = Topology::parse("t.yaml", &bad).unwrap_err().to_string();
        assert!(e.contains("line 11 column 11: unknown field `protocl`"), "{e}");
        // Port ranges are checked as the model checks them, before anything is created.
        for bad in ["ports: 80-90", "ports: 90/80", "ports: 0/80"] {
            let file = GOOD.replace("ports: 80/80", bad);
            let e = Topology::parse("t.yaml", &file).unwrap_err().to_string();
            assert!(e.contains("t.yaml:11:") && e.contains("InvalidIpPortRange.Malformed"), "{bad}: {e}");
        }
        let icmp = GOOD.replace("protocol: TCP, ports: 80/80", "protocol: ICMP, ports: 80/80");
        let e = Topology::parse("t.yaml", &icmp).unwrap_err().to_string();
        assert!(e.contains("InvalidIpPortRange.Malformed"), "{e}");
        let icmp = GOOD.replace("protocol: TCP, ports: 80/80", "protocol: ICMP, ports: -1/-1");
        Topology::parse("t.yaml", &icmp).unwrap();
    }
}
