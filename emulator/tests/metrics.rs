//! `/metrics` end to end: a real `Emulator` (gRPC, the HTTP endpoint, the Geneve socket),
//! fake shims on loopback UDP sockets, calls on both faces, frames between two nodes, and a
//! scrape over plain HTTP/1.1 read by an independent Prometheus text parser
//! (`prometheus-parse`), not by string matching. With an AccessKey configured the page needs
//! HTTP Basic auth with it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use enifab::actor::SystemClock;
use enifab::cli::Clients;
use enifab::grpc::status::cloud_error;
use enifab::openapi::auth::Credentials;
use enifab::serve::{ApiConfig, Emulator, ServeConfig};
use enifab_dataplane::testkit::echo_datagram;
use enifab_dataplane::wire::geneve;
use enifab_proto::v1 as pb;

mod fake_nodes;
use fake_nodes::{network, node};
use prometheus_parse::{Sample, Scrape, Value};

const AK: &str = "LTAI5tMetricsTestKey";
const SECRET: &str = "metrics-test-secret";

struct Server {
    addr: SocketAddr,
    clients: Clients,
    _emu: Emulator,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// An emulator on loopback ports; with `key`, every face requires that AccessKey.
async fn start(key: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServeConfig::loopback(dir.path());
    let emu = Emulator::open(&cfg, Arc::new(SystemClock)).unwrap();
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut api = ApiConfig::default();
    if key {
        api.openapi.credentials = Credentials::new([(AK.to_string(), SECRET.to_string())]);
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(emu.clone().run_with(listener, api, async move {
        let _ = stopped.await;
    }));
    let key = key.then(|| enifab::cli::AccessKey { id: AK.into(), secret: SECRET.into() });
    let clients = Clients::signed(enifab::cli::connect(&addr.to_string()).await.unwrap(), key);
    Server { addr, clients, _emu: emu, _dir: dir, _stop: stop }
}

/// One HTTP/1.1 request on a fresh connection: (status, headers lower-cased, body).
async fn http(addr: SocketAddr, request: String) -> (u16, Vec<(String, String)>, String) {
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, body.to_string())
    })
    .await
    .unwrap()
}

/// `GET /metrics`, with `Authorization: <auth>` when given.
async fn get_metrics(addr: SocketAddr, auth: Option<&str>) -> (u16, Vec<(String, String)>, String) {
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    http(addr, format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")).await
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Scrape and parse.
async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let (status, headers, body) = get_metrics(addr, None).await;
    assert_eq!(status, 200, "{body}");
    let ct = headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.as_str()).unwrap_or("");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap().samples
}

/// The value of the one sample of `metric` whose labels include all of `labels`.
fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert!(found.len() <= 1, "{metric} {labels:?} matches {found:?}");
    found.first().map(|s| match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(h) => h.iter().map(|c| c.count).fold(0.0, f64::max),
        other => panic!("{metric}: unexpected {other:?}"),
    })
}

fn counter(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    let s = samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {metric} {labels:?}"));
    assert!(matches!(s.value, Value::Counter(_)), "{metric} is typed a counter: {:?}", s.value);
    value(samples, metric, labels).unwrap()
}

fn received(sock: &UdpSocket) -> bool {
    let mut buf = vec![0u8; 70_000];
    sock.recv(&mut buf).ok().is_some_and(|n| geneve::Header::parse(&buf[..n]).is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_counts_calls_by_cloud_code_frames_per_eni_flows_and_nodes() {
    let mut s = start(false).await;
    let c = &mut s.clients;
    let (vsw, sg) = network(c).await;
    let a = node(c, &vsw, &sg, "10.0.4.22").await;
    let b = node(c, &vsw, &sg, "10.0.4.20").await;

    // A failing call on each face, with a code the cloud documents.
    let missing = "eni-0metricsnotthere00";
    let e = c
        .ecs
        .delete_network_interface(pb::DeleteNetworkInterfaceRequest {
            network_interface_id: missing.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let code = cloud_error(&e).unwrap().0;
    assert_eq!(code, "InvalidEniId.NotFound");
    let (status, _, body) = http(
        s.addr,
        format!(
            "GET /?Action=DeleteNetworkInterface&Version=2014-05-26&RegionId=cn-hongkong&NetworkInterfaceId={missing} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            s.addr
        ),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("InvalidEniId.NotFound"), "{body}");

    let before = scrape(s.addr).await;
    let eni_a = [("eni", a.eth0.eni), ("instance", a.instance.as_str()), ("vlan", "")];
    let eni_b = [("eni", b.eth0.eni), ("instance", b.instance.as_str()), ("vlan", "")];
    let rx_a = counter(&before, "enifab_eni_received_frames_total", &eni_a);
    let tx_b = counter(&before, "enifab_eni_sent_frames_total", &eni_b);
    let bytes_b = counter(&before, "enifab_eni_sent_bytes_total", &eni_b);

    // Three pings from A to B (one basic group: inner access is accepted).
    for seq in 1..=3 {
        a.sock.send(&echo_datagram(&a.eth0, b.eth0.ip, 8, seq)).unwrap();
        assert!(received(&b.sock), "echo {seq} reaches B");
    }
    let after = scrape(s.addr).await;

    let calls = |face_count: f64| {
        let labels = [("product", "Ecs"), ("action", "DeleteNetworkInterface"), ("code", "InvalidEniId.NotFound")];
        assert_eq!(counter(&after, "enifab_api_requests_total", &labels), face_count, "gRPC and HTTP both count");
        let ok = [("product", "Vpc"), ("action", "CreateVpc"), ("code", "OK")];
        assert_eq!(counter(&after, "enifab_api_requests_total", &ok), 1.0);
        let latency = value(&after, "enifab_api_request_duration_seconds", &labels).expect("a latency histogram");
        assert_eq!(latency, face_count, "the +Inf bucket holds every call");
    };
    calls(2.0);
    assert_eq!(counter(&after, "enifab_eni_received_frames_total", &eni_a) - rx_a, 3.0);
    assert_eq!(counter(&after, "enifab_eni_sent_frames_total", &eni_b) - tx_b, 3.0);
    let sent = counter(&after, "enifab_eni_sent_bytes_total", &eni_b) - bytes_b;
    assert!(sent >= 3.0 * 42.0, "three echoes' bytes: {sent}");
    assert!(value(&after, "enifab_conntrack_entries", &[]).unwrap() > 0.0);
    assert_eq!(value(&after, "enifab_shim_nodes", &[]), Some(2.0), "two registered nodes");
    assert_eq!(value(&after, "enifab_shim_external_hosts", &[]), Some(0.0));

    // A drop is counted under its reason on the sender's port.
    c.ecs
        .modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest {
            security_group_id: sg.clone(),
            inner_access_policy: "Drop".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    a.sock.send(&echo_datagram(&a.eth0, b.eth0.ip, 8, 4)).unwrap();
    assert!(!received(&b.sock), "isolated now");
    let dropped = scrape(s.addr).await;
    let reason = [eni_a.as_slice(), &[("reason", "security_group_ingress")]].concat();
    assert_eq!(counter(&dropped, "enifab_eni_dropped_frames_total", &reason), 1.0);
    assert_eq!(counter(&dropped, "enifab_fabric_dropped_frames_total", &[("reason", "security_group_ingress")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_access_key_the_page_needs_basic_auth_with_it() {
    let s = start(true).await;
    let (status, headers, _) = get_metrics(s.addr, None).await;
    assert_eq!(status, 401);
    let challenge = headers.iter().find(|(k, _)| k == "www-authenticate").map(|(_, v)| v.clone());
    assert!(challenge.as_deref().is_some_and(|c| c.starts_with(r#"Basic realm="enifab""#)), "{challenge:?}");
    assert_eq!(get_metrics(s.addr, Some(&basic(AK, "not-the-secret"))).await.0, 401, "wrong secret");
    assert_eq!(get_metrics(s.addr, Some(&basic("LTAIsomeoneelse", SECRET))).await.0, 401, "unknown id");
    let (status, _, body) = get_metrics(s.addr, Some(&basic(AK, SECRET))).await;
    assert_eq!(status, 200, "{body}");
    let samples = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap().samples;
    assert_eq!(value(&samples, "enifab_shim_nodes", &[]), Some(0.0));
    // Read-only: the page takes no other method.
    let (status, _, _) = http(
        s.addr,
        format!(
            "POST /metrics HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            s.addr,
            basic(AK, SECRET)
        ),
    )
    .await;
    assert_eq!(status, 405);
    // The topology page and its JSON are behind the same gate.
    for path in ["/ui/", "/ui/api/topology", "/ui/api/trace?from=a&to=b"] {
        let get = |auth: String| format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n", s.addr);
        assert_eq!(http(s.addr, get(String::new())).await.0, 401, "{path} without credentials");
        let with = http(s.addr, get(format!("Authorization: {}\r\n", basic(AK, SECRET)))).await.0;
        assert_ne!(with, 401, "{path} with the AccessKey");
    }
}
