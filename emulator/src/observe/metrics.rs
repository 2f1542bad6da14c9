//! `GET /metrics`: the Prometheus text exposition (format 0.0.4) of the emulator, built with
//! `prometheus-client`.
//!
//! Two kinds of numbers, kept apart:
//! - **API calls** of both faces (gRPC `enifab.v1.*` and the cloud-compatible HTTP endpoint),
//!   counted as they pass by in one registry that lives as long as the server
//!   ([`ApiMetrics`]): `enifab_api_requests_total{product, action, code}` and the histogram
//!   `enifab_api_request_duration_seconds{product, action, code}`, where `code` is `OK` or the
//!   cloud's error code (`InvalidEniId.NotFound`, `SignatureDoesNotMatch`, …), the string a
//!   client of the cloud branches on;
//! - **the fabric's state**, read per scrape into a fresh registry ([`render`]): per-port frame
//!   and byte counters and drops by reason from the data plane's snapshot
//!   (`FabricShell::stats`, the numbers `DescribeFabricCounters` shows), conntrack entries, the
//!   load balancers' backends' health (`FabricShell::health`, what `DescribeHealthStatus`
//!   answers), and the shims plugged in (`FabricShell::sessions`).
//!
//! Must not: slow the frame path or hold anything across it. The data plane's counters are
//! plain integers of the I/O thread, which copies them out between two batches when asked;
//! a scrape waits for that copy (at most [`SNAPSHOT_TIMEOUT`]), never takes a lock the frame
//! path takes. Label values come from a closed set (known actions, the cloud's codes, the
//! model's ids), so a caller cannot grow the registry with made-up names.
//!
//! Ports: the data plane counts per port, i.e. per NIC (primary, secondary or trunk ENI) of a
//! node; a trunk's row carries its members' frames too, since members travel on their trunk's
//! port (the `vlan` label is the ENI's VLAN id when the row is a member's, empty for a NIC).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use enifab_dataplane::{BackendHealth, HealthStatus, StatsSnapshot};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tonic_types::StatusExt;

use crate::actor::ModelHandle;
use crate::fabric::{FabricShell, Sessions};

/// The path Prometheus scrapes.
pub const PATH: &str = "/metrics";

/// How long a scrape waits for the data plane's snapshot before it answers without it.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// The `code` of a call that succeeded.
pub const OK: &str = "OK";

/// The action label of a path or `Action` no product has: callers cannot add label values.
const UNKNOWN: &str = "unknown";

/// The upper bounds of the API latency buckets, in seconds: a model call that commits to SQLite
/// takes a millisecond or a few; injected delays and slow disks show up in the upper ones.
const LATENCY_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    product: String,
    action: String,
    code: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The API calls of both faces, for the life of the server.
#[derive(Debug)]
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<ApiLabels, Counter>,
    duration: Family<ApiLabels, Histogram, fn() -> Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let requests = Family::<ApiLabels, Counter>::default();
        let duration = Family::<ApiLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let mut registry = Registry::default();
        registry.register(
            "enifab_api_requests",
            "API calls of both faces (gRPC and the cloud-compatible HTTP endpoint) by product, action and outcome (OK or the cloud's error code)",
            requests.clone(),
        );
        registry.register_with_unit(
            "enifab_api_request_duration",
            "Time from a call's arrival to its answer, by product, action and outcome",
            Unit::Seconds,
            duration.clone(),
        );
        ApiMetrics { registry, requests, duration }
    }
}

impl ApiMetrics {
    pub fn new() -> Arc<ApiMetrics> {
        Arc::new(ApiMetrics::default())
    }

    /// Count one call of `product`'s `action` that answered `code` after `elapsed`. An action
    /// the product does not have is counted as `unknown`.
    pub fn record(&self, product: &str, action: &str, code: &str, elapsed: Duration) {
        let known = crate::codec::method(product, action).is_some();
        let labels = ApiLabels {
            product: if known || is_product(product) { product } else { UNKNOWN }.to_string(),
            action: if known { action } else { UNKNOWN }.to_string(),
            code: code.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }
}

/// The `enifab.v1` services (the `product` label).
fn is_product(service: &str) -> bool {
    matches!(service, "Ecs" | "Vpc" | "Slb" | "Emulator" | "Fabric")
}

/// Axum middleware for the gRPC routes: count every `enifab.v1` call with the cloud code its
/// status carries (`google.rpc.ErrorInfo.reason`, see `grpc::status`). Put it outside the
/// authentication layer so that refused calls count too.
pub async fn count_grpc(State(metrics): State<Arc<ApiMetrics>>, req: Request, next: Next) -> Response {
    let Some((product, action)) = req.uri().path().strip_prefix("/enifab.v1.").and_then(|p| p.split_once('/')) else {
        return next.run(req).await;
    };
    let (product, action) = (product.to_string(), action.to_string());
    let start = Instant::now();
    let resp = next.run(req).await;
    metrics.record(&product, &action, &grpc_outcome(resp.headers()), start.elapsed());
    resp
}

/// The outcome of a gRPC answer from its headers: a unary handler's error is a trailers-only
/// answer (`grpc-status` in the headers); a success's status follows the body, in trailers.
fn grpc_outcome(headers: &HeaderMap) -> String {
    match headers.get("grpc-status").map(HeaderValue::as_bytes) {
        None | Some(b"0") => OK.to_string(),
        Some(_) => match tonic::Status::from_header_map(headers) {
            Some(status) => match status.get_details_error_info() {
                Some(info) if !info.reason.is_empty() => info.reason,
                // Not one of ours (an unknown method, a decoding error): the gRPC code's name.
                _ => format!("{:?}", status.code()),
            },
            None => "Unknown".to_string(),
        },
    }
}

/// What a scrape reads: the API registry, and the model and fabric for the per-scrape part.
#[derive(Clone, Debug)]
pub struct Scrape {
    pub api: Arc<ApiMetrics>,
    pub model: ModelHandle,
    pub fabric: Option<Arc<FabricShell>>,
}

/// The `/metrics` route (GET); gate it with `observe::gate::require`.
pub fn router(scrape: Scrape) -> axum::Router {
    axum::Router::new().route(PATH, axum::routing::get(handle)).with_state(Arc::new(scrape))
}

async fn handle(State(scrape): State<Arc<Scrape>>) -> Response {
    let fabric = match &scrape.fabric {
        Some(f) => Some(read_fabric(&scrape.model, f).await),
        None => None,
    };
    match render(&scrape.api, fabric.as_ref()) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding /metrics");
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed\n").into_response()
        }
    }
}

/// The fabric's state at one moment, and whose its ENIs are.
#[derive(Clone, Debug, Default)]
pub struct FabricReading {
    pub stats: Option<StatsSnapshot>,
    /// ENI id → the instance it is attached to (members included).
    pub owners: std::collections::HashMap<String, String>,
    pub health: Option<Vec<BackendHealth>>,
    pub sessions: Sessions,
}

async fn read_fabric(model: &ModelHandle, fabric: &FabricShell) -> FabricReading {
    let stats = tokio::time::timeout(SNAPSHOT_TIMEOUT, fabric.stats()).await.ok().flatten();
    let health = tokio::time::timeout(SNAPSHOT_TIMEOUT, fabric.health()).await.ok().flatten();
    let owners = model
        .read(|r| {
            r.enis()
                .filter_map(|e| Some((e.network_interface_id.clone(), e.instance_id()?.to_string())))
                .collect::<std::collections::HashMap<_, _>>()
        })
        .await
        .unwrap_or_default();
    FabricReading { stats, owners, health, sessions: fabric.sessions() }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    vni: String,
    eni: String,
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EniLabels {
    eni: String,
    instance: String,
    vlan: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EniDropLabels {
    eni: String,
    instance: String,
    vlan: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    load_balancer: String,
    protocol: String,
    listener_port: String,
    server_id: String,
    backend: String,
}

/// A counter family registered in `registry` under `name` (`_total` is appended).
fn counters<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Counter>::default();
    registry.register(name, help, f.clone());
    f
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: usize) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

/// The fabric's families, built from one reading.
fn fabric_registry(reading: &FabricReading) -> Registry {
    let mut r = Registry::default();
    if let Some(stats) = &reading.stats {
        let rx_frames = counters::<EniLabels>(
            &mut r,
            "enifab_eni_received_frames",
            "Frames the ENI sent into the fabric (a member's counted apart from its trunk's)",
        );
        let rx_bytes = counters::<EniLabels>(
            &mut r,
            "enifab_eni_received_bytes",
            "Ethernet bytes the ENI sent into the fabric, as on the trunk (tag included, Geneve excluded)",
        );
        let tx_frames =
            counters::<EniLabels>(&mut r, "enifab_eni_sent_frames", "Frames the fabric delivered to the ENI");
        let tx_bytes = counters::<EniLabels>(&mut r, "enifab_eni_sent_bytes", "Ethernet bytes delivered to the ENI");
        let drop_frames = counters::<EniDropLabels>(
            &mut r,
            "enifab_eni_dropped_frames",
            "Frames the ENI sent that were dropped, by reason",
        );
        let drop_bytes = counters::<EniDropLabels>(
            &mut r,
            "enifab_eni_dropped_bytes",
            "Bytes of frames the ENI sent that were dropped, by reason",
        );
        let port_rx = counters::<PortLabels>(
            &mut r,
            "enifab_port_received_frames",
            "Frames received on a fabric port (a NIC; a trunk's port carries its members' frames too)",
        );
        let port_tx = counters::<PortLabels>(&mut r, "enifab_port_sent_frames", "Frames sent on a fabric port");
        let hc_frames = counters::<PortLabels>(
            &mut r,
            "enifab_port_health_check_frames",
            "Load balancers' health-check frames on a port, both ways (not in received/sent)",
        );
        let all_drops = counters::<ReasonLabels>(
            &mut r,
            "enifab_fabric_dropped_frames",
            "Frames the fabric dropped, by reason, over all ports and frames no port claimed",
        );
        let owner = |eni: &str| reading.owners.get(eni).cloned().unwrap_or_default();
        for e in &stats.enis {
            let eni = EniLabels {
                eni: e.eni_id.clone(),
                instance: owner(&e.eni_id),
                vlan: e.vlan.map(|v| v.to_string()).unwrap_or_default(),
            };
            rx_frames.get_or_create(&eni).inc_by(e.rx_frames);
            rx_bytes.get_or_create(&eni).inc_by(e.rx_bytes);
            tx_frames.get_or_create(&eni).inc_by(e.tx_frames);
            tx_bytes.get_or_create(&eni).inc_by(e.tx_bytes);
            for d in &e.drops {
                let labels = EniDropLabels {
                    eni: eni.eni.clone(),
                    instance: eni.instance.clone(),
                    vlan: eni.vlan.clone(),
                    reason: d.reason.to_string(),
                };
                drop_frames.get_or_create(&labels).inc_by(d.frames);
                drop_bytes.get_or_create(&labels).inc_by(d.bytes);
            }
        }
        for p in &stats.ports {
            let port = PortLabels { vni: p.vni.to_string(), eni: p.eni_id.clone(), instance: owner(&p.eni_id) };
            port_rx.get_or_create(&port).inc_by(p.rx_frames);
            port_tx.get_or_create(&port).inc_by(p.tx_frames);
            hc_frames.get_or_create(&port).inc_by(p.health_frames);
        }
        for d in &stats.drops {
            all_drops.get_or_create(&ReasonLabels { reason: d.reason.to_string() }).inc_by(d.frames);
        }
        gauge(&mut r, "enifab_conntrack_entries", "Flows in the fabric's connection table", stats.conntrack_entries);
    }
    if let Some(health) = &reading.health {
        let healthy = Family::<BackendLabels, Gauge>::default();
        r.register(
            "enifab_slb_backend_healthy",
            "1 while the listener's health check finds the backend healthy (normal), 0 while abnormal or not yet known",
            healthy.clone(),
        );
        for b in health {
            let labels = BackendLabels {
                load_balancer: b.lb_id.clone(),
                protocol: b.protocol.to_string(),
                listener_port: b.listener_port.to_string(),
                server_id: b.server_id.clone(),
                backend: format!("{}:{}", b.ip, b.port),
            };
            healthy.get_or_create(&labels).set(i64::from(b.status == HealthStatus::Healthy));
        }
    }
    let s = reading.sessions;
    gauge(&mut r, "enifab_shim_nodes", "Instances with a registered node shim", s.nodes);
    gauge(&mut r, "enifab_shim_external_hosts", "Registered hosts of the internet side", s.external_hosts);
    gauge(
        &mut r,
        "enifab_shim_fast_path_nodes",
        "Registered nodes whose kernel carries admitted flows",
        s.fast_path_nodes,
    );
    gauge(&mut r, "enifab_shim_watch_streams", "Open WatchNode streams", s.watch_streams);
    r
}

/// The whole exposition: the API registry, then (with a fabric) the reading's families.
pub fn render(api: &ApiMetrics, fabric: Option<&FabricReading>) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_text::encode(&mut text, &api.registry)?;
    if let Some(reading) = fabric {
        prometheus_text::encode(&mut text, &fabric_registry(reading))?;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use enifab_dataplane::{DropStats, EniStats, PortStats};

    use super::*;

    #[test]
    fn calls_are_counted_by_known_action_and_code() {
        let m = ApiMetrics::default();
        m.record("Ecs", "DescribeNetworkInterfaces", OK, Duration::from_millis(2));
        m.record("Ecs", "DeleteNetworkInterface", "InvalidEniId.NotFound", Duration::from_millis(1));
        m.record("Ecs", "NoSuchAction", "Unimplemented", Duration::from_millis(1));
        m.record("Nope", "Whatever", "Unimplemented", Duration::from_millis(1));
        let text = render(&m, None).unwrap();
        assert!(
            text.contains(
                r#"enifab_api_requests_total{product="Ecs",action="DeleteNetworkInterface",code="InvalidEniId.NotFound"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"enifab_api_requests_total{product="Ecs",action="unknown",code="Unimplemented"} 1"#));
        assert!(text.contains(r#"{product="unknown",action="unknown",code="Unimplemented"} 1"#));
        assert!(!text.contains("NoSuchAction") && !text.contains("Whatever"), "{text}");
        assert!(text.contains("# TYPE enifab_api_request_duration_seconds histogram"), "{text}");
    }

    #[test]
    fn a_reading_becomes_labelled_families() {
        let stats = StatsSnapshot {
            epoch: 3,
            conntrack_entries: 2,
            ports: vec![PortStats {
                vni: 7,
                eni_id: "eni-a".into(),
                rx_frames: 5,
                rx_bytes: 500,
                tx_frames: 4,
                tx_bytes: 400,
                health_frames: 0,
                health_bytes: 0,
                drops: vec![DropStats { reason: "security_group_ingress", frames: 1, bytes: 98 }],
            }],
            enis: vec![
                EniStats {
                    eni_id: "eni-a".into(),
                    vni: 7,
                    vlan: None,
                    rx_frames: 5,
                    rx_bytes: 500,
                    tx_frames: 4,
                    tx_bytes: 400,
                    drops: vec![DropStats { reason: "security_group_ingress", frames: 1, bytes: 98 }],
                },
                EniStats {
                    eni_id: "eni-m".into(),
                    vni: 7,
                    vlan: Some(1027),
                    rx_frames: 2,
                    rx_bytes: 204,
                    tx_frames: 1,
                    tx_bytes: 102,
                    drops: vec![],
                },
            ],
            drops: vec![DropStats { reason: "security_group_ingress", frames: 1, bytes: 98 }],
        };
        let reading = FabricReading {
            stats: Some(stats),
            owners: [("eni-a".to_string(), "i-a".to_string()), ("eni-m".to_string(), "i-a".to_string())].into(),
            health: Some(vec![]),
            sessions: Sessions { nodes: 2, ..Sessions::default() },
        };
        let text = render(&ApiMetrics::default(), Some(&reading)).unwrap();
        for line in [
            r#"enifab_eni_received_frames_total{eni="eni-a",instance="i-a",vlan=""} 5"#,
            r#"enifab_eni_sent_bytes_total{eni="eni-a",instance="i-a",vlan=""} 400"#,
            r#"enifab_eni_dropped_frames_total{eni="eni-a",instance="i-a",vlan="",reason="security_group_ingress"} 1"#,
            r#"enifab_eni_received_frames_total{eni="eni-m",instance="i-a",vlan="1027"} 2"#,
            r#"enifab_port_received_frames_total{vni="7",eni="eni-a",instance="i-a"} 5"#,
            r#"enifab_fabric_dropped_frames_total{reason="security_group_ingress"} 1"#,
            "enifab_conntrack_entries 2",
            "enifab_shim_nodes 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
