//! `enifab trace` and `Fabric.TraceFrame`: "why can't A reach B?", answered hop by hop.
//!
//! The endpoints are named the way a user knows them (a pod, an ENI, an instance, an address,
//! a load balancer) and resolved against the model; the pipeline then explains a synthetic
//! first packet from the source ENI ([`enifab_dataplane::explain`]: the same code real frames
//! take, recording its steps, committing nothing). This module turns those steps into hops the
//! way the seed article draws a path — the node and its trunk, the VLAN that selects the member
//! ENI, anti-spoof, the route, the source's egress groups, the load balancer, the destination's
//! ingress groups, delivery on a trunk and VLAN — naming every ENI's instance and pod, and for
//! a security-group verdict the group, the rule (its `SecurityGroupRuleId`, priority, policy,
//! protocol, ports and peer, as DescribeSecurityGroupAttribute shows it) or the default.
//!
//! Must not: change anything (no model call, no pipeline commit), or decide a verdict itself:
//! every verdict here is the pipeline's.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use enifab_dataplane::explain::{Probe, ProbeError, ProbeProtocol};
use enifab_dataplane::{CtLookup, Direction, Policy, SgMatch, Step, Verdict};
use enifab_model::security_group::SgRule;
use enifab_model::{ModelError, Region};
use enifab_proto::v1 as pb;

use crate::actor::ModelHandle;
use crate::fabric::FabricShell;

/// The tag enifab-cni (like Terway) puts on a pod's member ENI: `namespace/name`.
pub const POD_TAG: &str = "k8s.aliyun.com/pod";
/// The tag enifab-cni adds naming the pod's datapath (`veth` or `vlan`): the node's view.
pub const DATAPATH_TAG: &str = "enifab.io/datapath";

/// A trace request, as the RPC and the page take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceQuery {
    pub from: String,
    pub to: String,
    pub protocol: ProbeProtocol,
    pub port: u16,
    pub source_port: Option<u16>,
}

impl TraceQuery {
    /// From the RPC's fields (protocol by name, ports as `u32`).
    pub fn from_request(q: &pb::TraceFrameRequest) -> Result<TraceQuery, ModelError> {
        let protocol = match q.protocol.to_ascii_lowercase().as_str() {
            "" | "tcp" => ProbeProtocol::Tcp,
            "udp" => ProbeProtocol::Udp,
            "icmp" => ProbeProtocol::Icmp,
            other => return Err(ModelError::invalid("Protocol", format!("{other:?} is not tcp, udp or icmp"))),
        };
        let port = |v: u32, name: &'static str| {
            u16::try_from(v).map_err(|_| ModelError::invalid(name, format!("{v} is not a port")))
        };
        let dst_port = port(q.port, "Port")?;
        if dst_port == 0 && protocol != ProbeProtocol::Icmp {
            return Err(ModelError::MissingParameter("Port"));
        }
        if q.source.is_empty() {
            return Err(ModelError::MissingParameter("Source"));
        }
        if q.destination.is_empty() {
            return Err(ModelError::MissingParameter("Destination"));
        }
        let source_port = Some(port(q.source_port, "SourcePort")?).filter(|p| *p != 0);
        Ok(TraceQuery { from: q.source.clone(), to: q.destination.clone(), protocol, port: dst_port, source_port })
    }
}

/// What the model says about one ENI, for naming hops.
#[derive(Debug, Clone, Default)]
struct EniInfo {
    instance_id: String,
    instance_name: String,
    pod: Option<String>,
    /// For a member: its VLAN and trunk; for a NIC: its device index (ethN).
    vlan: Option<u16>,
    trunk: Option<String>,
    device_index: Option<u32>,
    primary_ip: Option<Ipv4Addr>,
    groups: Vec<String>,
    datapath: Option<String>,
}

/// Everything a trace needs from the model, read in one go.
#[derive(Debug)]
struct Context {
    src_eni: String,
    dst_ip: Ipv4Addr,
    enis: HashMap<String, EniInfo>,
    /// Fabric port (VNI) → the NIC it carries.
    ports: HashMap<u32, String>,
    rules: HashMap<String, SgRule>,
}

fn pod_of(tags: &[enifab_model::Tag]) -> Option<String> {
    tags.iter().find(|t| t.key == POD_TAG).map(|t| t.value.clone())
}

/// The ENI a name stands for, as a sender.
fn resolve_source(r: &Region, name: &str) -> Result<String, ModelError> {
    if name.starts_with("eni-") {
        return r.eni(name).map(|e| e.network_interface_id.clone()).ok_or_else(|| ModelError::EniNotFound(name.into()));
    }
    if name.starts_with("i-") {
        return r
            .instance(name)
            .map(|i| i.primary_eni_id.clone())
            .ok_or_else(|| ModelError::InstanceNotFound(name.into()));
    }
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        let owners: Vec<&str> =
            r.enis().filter(|e| e.ips().any(|a| a == ip)).map(|e| e.network_interface_id.as_str()).collect();
        return match owners.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err(ModelError::invalid("Source", format!("no ENI holds {ip}"))),
            _ => Err(ModelError::invalid(
                "Source",
                format!("{ip} is held in several VPCs ({}); name the ENI", owners.join(", ")),
            )),
        };
    }
    pod_eni(r, name).map(|e| e.network_interface_id.clone())
}

/// The ENI tagged for pod `name` (`namespace/name`, or a bare name in any namespace).
fn pod_eni<'r>(r: &'r Region, name: &str) -> Result<&'r enifab_model::eni::Eni, ModelError> {
    let matches = |pod: &str| pod == name || pod.rsplit_once('/').is_some_and(|(_, n)| n == name);
    let found: Vec<_> = r.enis().filter(|e| pod_of(&e.tags).is_some_and(|p| matches(&p))).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(ModelError::invalid(
            "Source",
            format!("{name:?} is not a pod, an ENI (eni-…), an instance (i-…) or an IPv4 address"),
        )),
        _ => Err(ModelError::invalid("Source", format!("several pods are called {name:?}; say namespace/name"))),
    }
}

/// The address a name stands for, as a destination.
fn resolve_destination(r: &Region, name: &str) -> Result<Ipv4Addr, ModelError> {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Ok(ip);
    }
    if name.starts_with("eni-") {
        return r.eni(name).map(|e| e.primary_ip_address).ok_or_else(|| ModelError::EniNotFound(name.into()));
    }
    if name.starts_with("i-") {
        let i = r.instance(name).ok_or_else(|| ModelError::InstanceNotFound(name.into()))?;
        return r.eni(&i.primary_eni_id).map(|e| e.primary_ip_address).ok_or(ModelError::InternalError);
    }
    if name.starts_with("lb-") {
        return r.load_balancer(name).map(|lb| lb.address).ok_or_else(|| ModelError::LoadBalancerNotFound(name.into()));
    }
    pod_eni(r, name).map(|e| e.primary_ip_address).map_err(|e| match e {
        ModelError::InvalidParameter { detail, .. } => ModelError::invalid("Destination", detail),
        other => other,
    })
}

fn context(r: &Region, q: &TraceQuery) -> Result<Context, ModelError> {
    let src_eni = resolve_source(r, &q.from)?;
    let dst_ip = resolve_destination(r, &q.to)?;
    let names: HashMap<&str, &str> =
        r.instances().map(|i| (i.instance_id.as_str(), i.instance_name.as_str())).collect();
    let enis = r
        .enis()
        .map(|e| {
            let a = e.attachment.as_ref();
            let info = EniInfo {
                instance_id: a.map(|a| a.instance_id.clone()).unwrap_or_default(),
                instance_name: a
                    .and_then(|a| names.get(a.instance_id.as_str()))
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                pod: pod_of(&e.tags),
                vlan: e.vlan(),
                trunk: a.and_then(|a| a.trunk_network_interface_id.clone()),
                device_index: a.filter(|a| a.trunk_network_interface_id.is_none()).map(|a| a.device_index),
                primary_ip: Some(e.primary_ip_address),
                groups: e.security_group_ids.clone(),
                datapath: e.tags.iter().find(|t| t.key == DATAPATH_TAG).map(|t| t.value.clone()),
            };
            (e.network_interface_id.clone(), info)
        })
        .collect();
    let rules = r
        .security_groups()
        .flat_map(|g| g.rules.iter())
        .map(|rule| (rule.security_group_rule_id.clone(), rule.clone()))
        .collect();
    let ports = r
        .enis()
        .filter_map(|e| {
            e.attachment.as_ref().filter(|a| a.port_id != 0).map(|a| (a.port_id, e.network_interface_id.clone()))
        })
        .collect();
    Ok(Context { src_eni, dst_ip, enis, ports, rules })
}

/// Runs a trace.
pub async fn explain(
    model: &ModelHandle,
    shell: &FabricShell,
    q: TraceQuery,
) -> Result<pb::TraceFrameResponse, ModelError> {
    let query = q.clone();
    let ctx = model.read(move |r| context(r, &query)).await??;
    let probe = Probe {
        src_eni: ctx.src_eni.clone(),
        dst: ctx.dst_ip,
        protocol: q.protocol,
        dst_port: q.port,
        src_port: q.source_port,
    };
    let explained = match shell.explain(probe).await.ok_or(ModelError::InternalError)? {
        Ok(e) => e,
        Err(ProbeError::UnknownEni(id)) => {
            return Err(ModelError::invalid(
                "Source",
                format!("{id} is not attached to an instance, so it sends nothing"),
            ));
        }
        Err(ProbeError::NotRegistered(id)) => {
            return Err(ModelError::invalid(
                "Source",
                format!("the node of {id} has no shim registered with the fabric"),
            ));
        }
    };
    let mut hops = vec![source_hop(&ctx)];
    for step in &explained.trace.steps {
        if let Some(h) = hop(&ctx, step) {
            hops.push(h);
        }
    }
    // The receiving node's side, for a member whose datapath its CNI named.
    let routed = hops.iter().rev().find(|h| h.kind == "route").map(|h| h.network_interface_id.clone());
    if let (Some(dst), Some(last)) = (routed, hops.last_mut())
        && last.kind == "deliver"
        && let Some(info) = ctx.enis.get(&dst)
    {
        let pod = info.pod.as_deref().unwrap_or("the pod");
        match (info.datapath.as_deref(), info.vlan) {
            (Some("veth"), Some(vlan)) => last.detail.push_str(&format!(
                "; on the node, tc ingress pops VLAN {vlan} and the node routes {} to {pod}'s veth",
                info.primary_ip.map(|a| a.to_string()).unwrap_or_default()
            )),
            (Some("vlan"), Some(vlan)) => {
                last.detail.push_str(&format!("; VLAN {vlan}'s sub-interface, {pod}'s eth0, takes it"))
            }
            _ => {}
        }
    }
    let (verdict, reason) = match &explained.trace.verdict {
        Verdict::Forward { .. } => ("delivered", String::new()),
        Verdict::Reply { .. } => ("answered", String::new()),
        Verdict::Drop(reason) => {
            // A group's refusal is already its own hop; anything else gets one.
            if !hops.iter().any(|h| !h.ok) {
                hops.push(pb::TraceHop {
                    kind: "drop".into(),
                    title: format!("dropped: {}", reason.kind().as_str()),
                    detail: reason.to_string(),
                    ok: false,
                    ..Default::default()
                });
            }
            ("dropped", reason.to_string())
        }
    };
    Ok(pb::TraceFrameResponse {
        request_id: String::new(),
        verdict: verdict.into(),
        reason,
        hops,
        source_ip: explained.src_ip.to_string(),
        source_port: u32::from(explained.src_port),
        destination_ip: ctx.dst_ip.to_string(),
        protocol: protocol_name(q.protocol).into(),
        port: u32::from(q.port),
    })
}

fn protocol_name(p: ProbeProtocol) -> &'static str {
    match p {
        ProbeProtocol::Tcp => "tcp",
        ProbeProtocol::Udp => "udp",
        ProbeProtocol::Icmp => "icmp",
    }
}

/// "pod default/web on i-… (node-a)", or the ENI's own name.
fn who(ctx: &Context, eni: &str) -> String {
    let Some(i) = ctx.enis.get(eni) else { return eni.to_string() };
    let node = if i.instance_name.is_empty() {
        i.instance_id.clone()
    } else {
        format!("{} ({})", i.instance_id, i.instance_name)
    };
    match &i.pod {
        Some(pod) => format!("pod {pod} on {node}"),
        None if node.is_empty() => eni.to_string(),
        None => format!("{eni} of {node}"),
    }
}

fn device(ctx: &Context, eni: &str) -> String {
    ctx.enis.get(eni).and_then(|i| i.device_index).map(|d| format!("eth{d}")).unwrap_or_else(|| "?".into())
}

fn base(ctx: &Context, kind: &str, eni: &str) -> pb::TraceHop {
    let info = ctx.enis.get(eni);
    pb::TraceHop {
        kind: kind.into(),
        network_interface_id: eni.into(),
        instance_id: info.map(|i| i.instance_id.clone()).unwrap_or_default(),
        vlan: info.and_then(|i| i.vlan).map(u32::from).unwrap_or_default(),
        ok: true,
        ..Default::default()
    }
}

fn source_hop(ctx: &Context) -> pb::TraceHop {
    let eni = &ctx.src_eni;
    let info = ctx.enis.get(eni).cloned().unwrap_or_default();
    let mut h = base(ctx, "node", eni);
    h.title = format!("{} sends", who(ctx, eni));
    h.detail = match (&info.trunk, info.vlan) {
        (Some(trunk), Some(vlan)) => {
            let ip = info.primary_ip.map(|a| a.to_string()).unwrap_or_default();
            let eth = device(ctx, trunk);
            let node = match info.datapath.as_deref() {
                Some("veth") => format!(
                    "the pod's eth0 is a veth into the node; the node routes from {ip} by policy to the trunk {trunk} ({eth}), whose tc egress pushes VLAN {vlan}"
                ),
                Some("vlan") => format!(
                    "the pod's eth0 is VLAN {vlan} of the trunk {trunk} ({eth}): its frames leave tagged, never meeting the node's routes"
                ),
                _ => format!("frames leave the node on its trunk {trunk} ({eth}) tagged VLAN {vlan}"),
            };
            format!("member ENI {eni} ({ip}): {node}")
        }
        _ => format!(
            "{eni} ({}) is the node's {}",
            info.primary_ip.map(|a| a.to_string()).unwrap_or_default(),
            device(ctx, eni)
        ),
    };
    h
}

fn hop(ctx: &Context, step: &Step) -> Option<pb::TraceHop> {
    Some(match step {
        Step::Port { vni, peer, eni } => {
            let mut h = base(ctx, "port", eni);
            h.vlan = 0;
            h.title = format!("fabric port {vni} ({eni}, {})", device(ctx, eni));
            h.detail = format!("Geneve VNI {vni} from the node's shim at {peer}, the address that registered it");
            h
        }
        Step::Demux { vlan: Some(vlan), eni } if *vlan != 0 => {
            let mut h = base(ctx, "member", eni);
            h.title = format!("VLAN {vlan} → member ENI {eni}");
            h.detail =
                format!("the trunk's tag selects the member ENI attached with DeviceIndex {vlan}: {}", who(ctx, eni));
            h
        }
        Step::GatewayEcho { gateway } => {
            let mut h = base(ctx, "gateway", &ctx.src_eni);
            h.title = format!("answered by the vSwitch gateway {gateway}");
            h.detail = "the fabric answers an echo request to a gateway (or a VIP with a listener) itself".into();
            h
        }
        Step::SourceCheck { eni, enabled } => {
            let mut h = base(ctx, "anti_spoof", eni);
            h.title = if *enabled { "source check passed".into() } else { "source check off".into() };
            h.detail = if *enabled {
                format!("the source address belongs to {eni} (SourceDestCheck on)")
            } else {
                format!("{eni} has SourceDestCheck off (as Terway's member ENIs do)")
            };
            h
        }
        Step::Conntrack(lookup) => {
            let mut h = base(ctx, "conntrack", &ctx.src_eni);
            h.network_interface_id = String::new();
            h.instance_id = String::new();
            h.vlan = 0;
            (h.title, h.detail) = match lookup {
                CtLookup::New => ("new flow".into(), "no live flow: the security groups decide".into()),
                CtLookup::Established { dir, state } => (
                    "part of a live flow".into(),
                    format!("conntrack holds it ({dir:?}, {state:?}): the security groups are not asked again"),
                ),
                CtLookup::Related => ("related to a live flow".into(), "an ICMP error about a live flow".into()),
                CtLookup::Untracked => ("untracked".into(), "not a trackable packet: the groups decide alone".into()),
            };
            h
        }
        Step::LoadBalancer { lb, vip, port, scheduler, backend, backend_port, persisted } => pb::TraceHop {
            kind: "slb".into(),
            title: format!("load balancer {lb} {vip}:{port} → backend {backend}:{backend_port}"),
            detail: format!(
                "the listener's scheduler ({}) {} the backend; the client's address is kept",
                scheduler.as_str(),
                if *persisted { "was bypassed by persistence for" } else { "chose" }
            ),
            ok: true,
            address: backend.to_string(),
            ..Default::default()
        },
        Step::Route { dst, eni, vni, vlan } => {
            let mut h = base(ctx, "route", eni);
            h.address = dst.to_string();
            h.title = format!("route {dst} → {eni}");
            h.detail = match vlan {
                Some(v) => format!("{} — member of the trunk on port {vni}, VLAN {v}", who(ctx, eni)),
                None => format!("{} — port {vni}", who(ctx, eni)),
            };
            h
        }
        Step::SecurityGroup { direction, eni, decision } => sg_hop(ctx, *direction, eni, decision),
        Step::Translate { src, dst } => pb::TraceHop {
            kind: "nat".into(),
            title: format!("translated to {}:{} → {}:{}", src.0, src.1, dst.0, dst.1),
            detail: "the load balancer's rewrite (conntrack keeps it for the replies)".into(),
            ok: true,
            ..Default::default()
        },
        Step::Rewrite { vni, to, dst_mac, vlan, .. } => {
            let mac = dst_mac.to_string();
            let eni = ctx.ports.get(&vni.get()).cloned().unwrap_or_default();
            let mut h = base(ctx, "deliver", &eni);
            h.vlan = vlan.map(u32::from).unwrap_or_default();
            h.title = match vlan {
                Some(v) => format!("delivered on trunk {eni} ({}) VLAN {v}", device(ctx, &eni)),
                None => format!("delivered on {eni} ({})", device(ctx, &eni)),
            };
            h.detail = format!(
                "to {} at {to}, port {vni}: src MAC ee:ff:ff:ff:ff:ff, dst MAC {mac}{}",
                who(ctx, &eni),
                vlan.map(|v| format!(", tag {v} pushed")).unwrap_or_default()
            );
            h
        }
        _ => return None,
    })
}

fn sg_hop(ctx: &Context, direction: Direction, eni: &str, decision: &SgMatch) -> pb::TraceHop {
    let kind = match direction {
        Direction::Egress => "sg_egress",
        Direction::Ingress => "sg_ingress",
    };
    let mut h = base(ctx, kind, eni);
    let way = match direction {
        Direction::Egress => "egress of",
        Direction::Ingress => "ingress of",
    };
    match decision {
        SgMatch::Rule { sg, id, index, priority, policy } => {
            h.ok = *policy == Policy::Accept;
            h.security_group_id = sg.to_string();
            h.security_group_rule_id = id.to_string();
            h.title = format!("{} by {sg} rule {id} ({way} {eni})", verdict_word(*policy));
            h.detail = match ctx.rules.get(id.as_ref()) {
                Some(r) => describe_rule(r),
                None => format!("rule #{index}, priority {priority}, {policy:?}"),
            };
        }
        SgMatch::Default { policy } => {
            h.ok = *policy == Policy::Accept;
            h.title = format!("{} by the default ({way} {eni})", verdict_word(*policy));
            let groups = ctx.enis.get(eni).map(|i| i.groups.join(", ")).filter(|g| !g.is_empty());
            let groups = groups.map_or("no group".to_string(), |g| format!("no rule of {g}"));
            h.detail = match (direction, policy) {
                (Direction::Ingress, _) => format!("{groups} matched: inbound is denied"),
                (Direction::Egress, Policy::Accept) => format!("{groups} matched: basic groups allow outbound"),
                (Direction::Egress, Policy::Drop) => format!("{groups} matched: enterprise groups deny outbound"),
            };
        }
        SgMatch::InnerAccess { sg } => {
            h.security_group_id = sg.to_string();
            h.title = format!("accepted: both ENIs are in {sg} ({way} {eni})");
            h.detail = "a basic group with InnerAccessPolicy=Accept lets its members reach each other".into();
        }
        SgMatch::HealthCheck => {
            h.title = format!("accepted: health check ({way} {eni})");
            h.detail = "100.64.0.0/10 (the load balancers' checkers) needs no rule".into();
        }
    }
    h
}

fn verdict_word(p: Policy) -> &'static str {
    match p {
        Policy::Accept => "accepted",
        Policy::Drop => "DROPPED",
    }
}

/// A rule the way DescribeSecurityGroupAttribute lists it.
fn describe_rule(r: &SgRule) -> String {
    let ports = r.port_range.map(|p| format!("{}/{}", p.from, p.to)).unwrap_or_else(|| "-1/-1".into());
    let peer = match r.direction {
        enifab_model::security_group::Direction::Ingress => r
            .source_cidr_ip
            .map(|c| format!("from {c}"))
            .or_else(|| r.ipv6_source_cidr_ip.map(|c| format!("from {c}")))
            .or_else(|| r.source_group_id.as_ref().map(|g| format!("from group {g}")))
            .unwrap_or_else(|| "from anywhere".into()),
        enifab_model::security_group::Direction::Egress => r
            .dest_cidr_ip
            .map(|c| format!("to {c}"))
            .or_else(|| r.ipv6_dest_cidr_ip.map(|c| format!("to {c}")))
            .or_else(|| r.dest_group_id.as_ref().map(|g| format!("to group {g}")))
            .unwrap_or_else(|| "to anywhere".into()),
    };
    format!(
        "{} {} {ports} {peer}, priority {}, {}{}",
        r.security_group_rule_id,
        r.ip_protocol.as_str(),
        r.priority,
        match r.policy {
            enifab_model::security_group::Policy::Accept => "Accept",
            enifab_model::security_group::Policy::Drop => "Drop",
        },
        if r.description.is_empty() { String::new() } else { format!(" ({})", r.description) }
    )
}

/// The trace as text: a header, one numbered line per hop (✗ marks the refusing one) with its
/// detail beneath, and the verdict.
pub fn render(r: &pb::TraceFrameResponse, from: &str, to: &str) -> String {
    let port = if r.protocol == "icmp" { String::new() } else { format!("/{}", r.port) };
    let mut out = format!(
        "trace {from} ({}:{}) → {to} ({}) {}{port}\n\n",
        r.source_ip, r.source_port, r.destination_ip, r.protocol
    );
    for (i, h) in r.hops.iter().enumerate() {
        let mark = if h.ok { ' ' } else { '✗' };
        out.push_str(&format!("{mark} {:>2}. {:<11} {}\n", i + 1, h.kind, h.title));
        if !h.detail.is_empty() {
            out.push_str(&format!("{:<17}{}\n", "", h.detail));
        }
    }
    out.push('\n');
    match r.verdict.as_str() {
        "dropped" => out.push_str(&format!("verdict: DROPPED — {}\n", r.reason)),
        v => out.push_str(&format!("verdict: {v}\n")),
    }
    out
}
