//! The live topology page at `/ui/`: the VPC drawn as a picture (vSwitches, instances, their
//! trunk ENIs with member ENIs hanging off by VLAN id, pods, security groups, load balancers and
//! their backends' health), per-port counters that update while it is open, and a trace form
//! that draws the hops of a synthetic frame on the picture.
//!
//! The page is three files embedded in the binary (`assets/`: HTML, one script, one stylesheet;
//! vanilla JS drawing SVG), so it needs no build step and nothing from the internet. Its data
//! comes from JSON endpoints under `/ui/api/`: `topology` (the region read through the model
//! actor, as the gRPC Describe handlers read it, plus the health checker's verdicts), `counters`
//! (the pipeline's counters, as DescribeFabricCounters reports them) and `trace` (the trace
//! engine's explanation). `enifab lab check --html` writes the same page as one self-contained
//! file with the data embedded ([`report_html`]).
//!
//! Must not: change anything. Every endpoint is a read; who may read is decided in front of this
//! router (the same gate as `/metrics`), not here.
//!
//! Counters are the fabric's: one row per port (a NIC or trunk ENI a shim plugged in). A member
//! ENI's frames travel on its trunk's port, so the page shows them on the trunk, as the cloud's
//! own monitoring shows a trunk's traffic and not a member's.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use enifab_dataplane::{BackendHealth, StatsSnapshot};
use enifab_model::Region;
use enifab_model::eni::{Eni, EniType};
use enifab_model::security_group::{Direction, SgRule};
use enifab_proto::v1 as pb;
use serde::{Deserialize, Serialize};

pub mod report;

use crate::actor::ModelHandle;
use crate::fabric::FabricShell;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

use crate::trace::POD_TAG;

#[derive(Clone, Debug)]
struct Ui {
    model: ModelHandle,
    fabric: Option<Arc<FabricShell>>,
}

/// The page and its JSON, mounted by `serve` beside the API.
pub fn router(model: ModelHandle, fabric: Option<Arc<FabricShell>>) -> axum::Router {
    let state = Arc::new(Ui { model, fabric });
    axum::Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/ui/app.js", get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/ui/style.css", get(|| async { page(STYLE_CSS, "text/css; charset=utf-8") }))
        .route("/ui/api/topology", get(topology_json))
        .route("/ui/api/counters", get(counters_json))
        .route("/ui/api/trace", get(trace_json))
        .with_state(state)
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

fn unavailable(why: String) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": why }))).into_response()
}

async fn topology_json(State(ui): State<Arc<Ui>>) -> Response {
    let health = match &ui.fabric {
        Some(f) => f.health().await.unwrap_or_default(),
        None => Vec::new(),
    };
    match ui.model.read(move |r| topology(r, &health)).await {
        Ok(t) => Json(t).into_response(),
        Err(e) => unavailable(format!("the model did not answer: {e}")),
    }
}

async fn counters_json(State(ui): State<Arc<Ui>>) -> Response {
    let Some(fabric) = &ui.fabric else {
        return Json(Counters::default()).into_response();
    };
    match fabric.stats().await {
        Some(s) => Json(counters(&s)).into_response(),
        None => unavailable("the fabric's I/O thread did not answer".into()),
    }
}

/// `GET /ui/api/trace?from=…&to=…&protocol=…&port=…`.
#[derive(Debug, Deserialize)]
pub struct TraceParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub protocol: Option<String>,
    pub port: Option<String>,
}

async fn trace_json(State(ui): State<Arc<Ui>>, Query(q): Query<TraceParams>) -> Response {
    let bad = |why: String| (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": why }))).into_response();
    let Some(shell) = &ui.fabric else {
        return unavailable("this server runs no data plane to trace through".into());
    };
    let port = match q.port.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        None => 0,
        Some(p) => match p.parse::<u32>() {
            Ok(v) => v,
            Err(_) => return bad(format!("port {p:?} is not a number")),
        },
    };
    let req = pb::TraceFrameRequest {
        source: q.from.unwrap_or_default().trim().to_string(),
        destination: q.to.unwrap_or_default().trim().to_string(),
        protocol: q.protocol.unwrap_or_default(),
        port,
        source_port: 0,
    };
    let query = match crate::trace::TraceQuery::from_request(&req) {
        Ok(q) => q,
        Err(e) => return bad(e.to_string()),
    };
    match crate::trace::explain(&ui.model, shell, query).await {
        Ok(r) => Json(trace_view(&r)).into_response(),
        Err(e) => bad(e.to_string()),
    }
}

/// The trace as the page draws it: empty strings and zero VLANs become `null`.
pub fn trace_view(r: &pb::TraceFrameResponse) -> serde_json::Value {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    serde_json::json!({
        "verdict": r.verdict,
        "reason": some(&r.reason),
        "source_ip": r.source_ip,
        "destination_ip": r.destination_ip,
        "protocol": r.protocol,
        "port": r.port,
        "hops": r.hops.iter().map(|h| serde_json::json!({
            "kind": h.kind,
            "title": h.title,
            "detail": h.detail,
            "eni": some(&h.network_interface_id),
            "instance": some(&h.instance_id),
            "vlan": (h.vlan != 0).then_some(h.vlan),
            "ok": h.ok,
            "security_group": some(&h.security_group_id),
            "rule": some(&h.security_group_rule_id),
        })).collect::<Vec<_>>(),
    })
}

// ---- the topology, as the page draws it ---------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Topology {
    pub region: String,
    pub vpcs: Vec<VpcView>,
    pub security_groups: Vec<GroupView>,
    pub instances: Vec<InstanceView>,
    /// ENIs attached to nothing (created, not yet attached, or detached).
    pub detached_enis: Vec<EniView>,
    pub load_balancers: Vec<LbView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VpcView {
    pub id: String,
    pub name: String,
    pub cidr: String,
    pub vswitches: Vec<VSwitchView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VSwitchView {
    pub id: String,
    pub name: String,
    pub cidr: String,
    pub zone: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupView {
    pub id: String,
    pub name: String,
    pub vpc_id: String,
    /// `normal` (basic) or `enterprise`.
    pub kind: String,
    pub inner_access_accept: bool,
    pub rules: Vec<RuleView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleView {
    pub id: String,
    pub direction: String,
    pub protocol: String,
    pub ports: String,
    pub peer: String,
    pub policy: String,
    pub priority: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceView {
    pub id: String,
    pub name: String,
    pub status: String,
    pub vswitch_id: String,
    /// Its NICs by DeviceIndex (primary, secondary, trunk); members hang off their trunk.
    pub enis: Vec<EniView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EniView {
    pub id: String,
    pub name: String,
    /// `Primary`, `Secondary`, `Trunk` or `Member`.
    pub kind: String,
    pub status: String,
    pub vswitch_id: String,
    pub mac: String,
    pub ips: Vec<String>,
    pub security_groups: Vec<String>,
    pub device_index: Option<u32>,
    /// Members only: the VLAN id (= the attachment's DeviceIndex).
    pub vlan: Option<u16>,
    /// Members only: the pod the CNI made it for (tag `k8s.aliyun.com/pod`).
    pub pod: Option<String>,
    /// Trunks only: their members, by VLAN id.
    pub members: Vec<EniView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LbView {
    pub id: String,
    pub name: String,
    pub address: String,
    /// `internet` or `intranet`.
    pub address_type: String,
    pub vpc_id: String,
    pub listeners: Vec<ListenerView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListenerView {
    pub protocol: String,
    pub port: u16,
    pub status: String,
    pub scheduler: String,
    pub health_check: bool,
    pub backends: Vec<BackendView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendView {
    pub server_id: String,
    pub ip: String,
    pub port: u16,
    pub weight: u8,
    /// The health checker's word: `normal`, `abnormal`, or `unavailable` (nothing known, or no
    /// check).
    pub health: String,
}

/// The region as the page draws it; `health` is the checker's view of the backends.
pub fn topology(r: &Region, health: &[BackendHealth]) -> Topology {
    let vpcs = r
        .vpcs()
        .map(|v| VpcView {
            id: v.vpc_id.clone(),
            name: v.vpc_name.clone(),
            cidr: v.cidr_block.to_string(),
            vswitches: r
                .vswitches()
                .filter(|s| s.vpc_id == v.vpc_id)
                .map(|s| VSwitchView {
                    id: s.v_switch_id.clone(),
                    name: s.v_switch_name.clone(),
                    cidr: s.cidr.to_string(),
                    zone: s.zone_id.clone(),
                })
                .collect(),
        })
        .collect();
    let security_groups = r
        .security_groups()
        .map(|g| GroupView {
            id: g.security_group_id.clone(),
            name: g.security_group_name.clone(),
            vpc_id: g.vpc_id.clone(),
            kind: g.security_group_type.as_str().to_string(),
            inner_access_accept: g.inner_access_accept,
            rules: g.rules.iter().map(rule).collect(),
        })
        .collect();
    // An instance's own NICs, by DeviceIndex; members are found through their trunk.
    let mut nics: BTreeMap<&str, Vec<&Eni>> = BTreeMap::new();
    let mut detached_enis = Vec::new();
    for e in r.enis() {
        match &e.attachment {
            Some(a) if a.trunk_network_interface_id.is_none() => {
                nics.entry(a.instance_id.as_str()).or_default().push(e)
            }
            Some(_) => {}
            None => detached_enis.push(eni(r, e)),
        }
    }
    let instances = r
        .instances()
        .map(|i| {
            let mut own = nics.remove(i.instance_id.as_str()).unwrap_or_default();
            own.sort_by_key(|e| e.attachment.as_ref().map_or(0, |a| a.device_index));
            InstanceView {
                id: i.instance_id.clone(),
                name: i.instance_name.clone(),
                status: i.status.as_str().to_string(),
                vswitch_id: i.v_switch_id.clone(),
                enis: own.into_iter().map(|e| eni(r, e)).collect(),
            }
        })
        .collect();
    let load_balancers = r
        .load_balancers()
        .map(|lb| LbView {
            id: lb.load_balancer_id.clone(),
            name: lb.load_balancer_name.clone(),
            address: lb.address.to_string(),
            address_type: lb.address_type.as_str().to_string(),
            vpc_id: lb.vpc_id.clone(),
            listeners: lb
                .listeners
                .iter()
                .map(|l| {
                    let servers = l
                        .v_server_group_id
                        .as_deref()
                        .and_then(|g| r.v_server_group(g))
                        .map(|g| g.backend_servers.as_slice())
                        .unwrap_or_default();
                    let protocol = l.protocol.as_str();
                    ListenerView {
                        protocol: protocol.to_string(),
                        port: l.listener_port,
                        status: l.status.as_str().to_string(),
                        scheduler: l.scheduler.as_str().to_string(),
                        health_check: l.health_check.enabled,
                        backends: servers
                            .iter()
                            .map(|b| BackendView {
                                server_id: b.server_id.clone(),
                                ip: b.server_ip.to_string(),
                                port: b.port,
                                weight: b.weight,
                                health: health
                                    .iter()
                                    .find(|h| {
                                        h.lb_id == lb.load_balancer_id
                                            && h.protocol.eq_ignore_ascii_case(protocol)
                                            && h.listener_port == l.listener_port
                                            && h.ip == b.server_ip
                                            && h.port == b.port
                                    })
                                    .map_or("unavailable", |h| h.status.as_str())
                                    .to_string(),
                            })
                            .collect(),
                    }
                })
                .collect(),
        })
        .collect();
    Topology { region: r.region_id().to_string(), vpcs, security_groups, instances, detached_enis, load_balancers }
}

fn eni(r: &Region, e: &Eni) -> EniView {
    let members = if e.eni_type == EniType::Trunk {
        r.trunk_members(&e.network_interface_id).filter_map(|(_, id)| r.eni(id)).map(|m| eni(r, m)).collect()
    } else {
        Vec::new()
    };
    EniView {
        id: e.network_interface_id.clone(),
        name: e.network_interface_name.clone(),
        kind: e.eni_type.as_str().to_string(),
        status: e.status.as_str().to_string(),
        vswitch_id: e.v_switch_id.clone(),
        mac: e.mac_address.to_string(),
        ips: e.ips().map(|ip| ip.to_string()).collect(),
        security_groups: e.security_group_ids.clone(),
        device_index: e.attachment.as_ref().map(|a| a.device_index),
        vlan: e.vlan(),
        pod: e.tags.iter().find(|t| t.key == POD_TAG).map(|t| t.value.clone()),
        members,
    }
}

fn rule(r: &SgRule) -> RuleView {
    let (cidr, cidr6, group) = match r.direction {
        Direction::Ingress => (&r.source_cidr_ip, &r.ipv6_source_cidr_ip, &r.source_group_id),
        Direction::Egress => (&r.dest_cidr_ip, &r.ipv6_dest_cidr_ip, &r.dest_group_id),
    };
    let peer = match (cidr, cidr6, group) {
        (Some(c), _, _) => c.to_string(),
        (None, Some(c), _) => c.to_string(),
        (None, None, Some(g)) => g.clone(),
        (None, None, None) => "0.0.0.0/0".to_string(),
    };
    RuleView {
        id: r.security_group_rule_id.clone(),
        direction: r.direction.as_str().to_string(),
        protocol: r.ip_protocol.as_str().to_string(),
        ports: r.port_range.map_or_else(|| "all".to_string(), |p| format!("{}/{}", p.from, p.to)),
        peer,
        policy: r.policy.as_str().to_string(),
        priority: r.priority,
    }
}

// ---- counters ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    pub epoch: u64,
    pub conntrack_entries: u64,
    /// By ENI ID (the port's NIC or trunk; a trunk's port carries its members' frames too).
    pub ports: BTreeMap<String, PortCounters>,
    /// Member ENIs' own counters, by ENI ID (`vni` is their trunk's port).
    #[serde(default)]
    pub members: BTreeMap<String, PortCounters>,
    /// Drops over all ports, by reason.
    pub drops: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PortCounters {
    pub vni: u32,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames dropped, by reason (non-zero only).
    pub drops: BTreeMap<String, u64>,
}

/// The pipeline's counters as the page polls them.
pub fn counters(s: &StatsSnapshot) -> Counters {
    let drops = |d: &[enifab_dataplane::DropStats]| d.iter().map(|d| (d.reason.to_string(), d.frames)).collect();
    Counters {
        epoch: s.epoch,
        conntrack_entries: s.conntrack_entries as u64,
        ports: s
            .ports
            .iter()
            .map(|p| {
                let c = PortCounters {
                    vni: p.vni,
                    rx_frames: p.rx_frames,
                    rx_bytes: p.rx_bytes,
                    tx_frames: p.tx_frames,
                    tx_bytes: p.tx_bytes,
                    drops: drops(&p.drops),
                };
                (p.eni_id.clone(), c)
            })
            .collect(),
        members: s
            .enis
            .iter()
            .filter(|e| e.vlan.is_some())
            .map(|e| {
                let c = PortCounters {
                    vni: e.vni,
                    rx_frames: e.rx_frames,
                    rx_bytes: e.rx_bytes,
                    tx_frames: e.tx_frames,
                    tx_bytes: e.tx_bytes,
                    drops: drops(&e.drops),
                };
                (e.eni_id.clone(), c)
            })
            .collect(),
        drops: drops(&s.drops),
    }
}

// ---- the self-contained report ----------------------------------------------------------------

/// The page as one file (`enifab lab check --html`): the stylesheet and script inlined, the
/// topology and `extra` (e.g. the check table) embedded as JSON, nothing polled.
pub fn report_html(
    topology: &serde_json::Value,
    extra: &serde_json::Value,
    counters: Option<&serde_json::Value>,
) -> String {
    let data = serde_json::json!({ "topology": topology, "report": extra, "counters": counters });
    // `</` would end the script element early; JSON allows `<\/` for the same string.
    let data = data.to_string().replace("</", "<\\/");
    let script = APP_JS.replace("</script", "<\\/script");
    INDEX_HTML
        .replace(r#"<link rel="stylesheet" href="style.css">"#, &format!("<style>\n{STYLE_CSS}\n</style>"))
        .replace(
            r#"<script src="app.js"></script>"#,
            &format!(
                "<script id=\"embedded\" type=\"application/json\">{data}</script>\n<script>\n{script}\n</script>"
            ),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_the_assets_the_report_inlines() {
        assert!(INDEX_HTML.contains(r#"<link rel="stylesheet" href="style.css">"#));
        assert!(INDEX_HTML.contains(r#"<script src="app.js"></script>"#));
        let t = serde_json::json!({ "region": "cn-hongkong", "note": "</script><b>" });
        let html = report_html(&t, &serde_json::json!({ "rows": [] }), None);
        assert!(!html.contains("href=\"style.css\"") && !html.contains("src=\"app.js\""), "self-contained");
        assert!(html.contains("id=\"embedded\""));
        assert!(!html.contains("</script><b>"), "embedded data cannot end its script element");
        assert!(html.contains("<\\/script><b>"));
    }

    #[test]
    fn counters_are_keyed_by_eni() {
        let s = StatsSnapshot {
            epoch: 7,
            conntrack_entries: 3,
            ports: vec![enifab_dataplane::PortStats {
                vni: 12,
                eni_id: "eni-a".into(),
                rx_frames: 5,
                rx_bytes: 500,
                tx_frames: 4,
                tx_bytes: 400,
                health_frames: 0,
                health_bytes: 0,
                drops: vec![enifab_dataplane::DropStats { reason: "security_group_ingress", frames: 2, bytes: 196 }],
            }],
            enis: vec![enifab_dataplane::EniStats {
                eni_id: "eni-m".into(),
                vni: 12,
                vlan: Some(1027),
                rx_frames: 3,
                rx_bytes: 300,
                tx_frames: 2,
                tx_bytes: 200,
                drops: vec![],
            }],
            drops: vec![],
        };
        let c = counters(&s);
        assert_eq!((c.members["eni-m"].rx_frames, c.members["eni-m"].vni), (3, 12));
        assert_eq!(c.ports["eni-a"].rx_frames, 5);
        assert_eq!(c.ports["eni-a"].drops["security_group_ingress"], 2);
        assert_eq!(c.conntrack_entries, 3);
    }
}
