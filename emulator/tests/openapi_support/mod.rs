//! Shared harness of the `openapi_*` tests: an in-process enifab (model thread + `serve::run_with`)
//! on `127.0.0.1:0` with its own temporary data directory, a raw HTTP/1.1 client, and a request
//! signer written from the old Go SDK's behaviour (reference §1.2), independent of the server's
//! own `openapi::sign`, so a shared mistake cannot make the tests pass.
//!
//! The old Go SDK (`alibaba-cloud-sdk-go`, what Terway's `pkg/aliyun/client` uses) sends
//! `POST /?<every parameter>` with an empty form body and `Content-Type:
//! application/x-www-form-urlencoded`; the query carries `Action`, `Version`, `Format=JSON`,
//! `Timestamp`, `SignatureMethod=HMAC-SHA1`, `SignatureType=` (empty), `SignatureVersion=1.0`,
//! `SignatureNonce`, `AccessKeyId`, `RegionId` and the action's parameters, encoded with Go's
//! `url.QueryEscape` (space → `+`); the signature is over `POST&%2F&` + the escaped, sorted pairs
//! with `+` → `%20`, `*` → `%2A`, `%7E` → `~`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use enifab::actor::SystemClock;
use enifab::cli::Clients;
use enifab::openapi::{self, auth::Credentials};
use enifab::serve::{self, ServeConfig};
use enifab_model::{Millis, TransitionDelays};
use enifab_proto::v1 as pb;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;

pub const REGION: &str = "cn-hongkong";
pub const ECS: &str = "2014-05-26";
pub const VPC: &str = "2016-04-28";
pub const SLB: &str = "2014-05-15";
pub const EMULATOR: &str = "enifab-v1";
pub const AK: &str = "LTAI5tTerwayEmulatorKey";
pub const SECRET: &str = "terway-access-secret";

/// Transitions long enough that "Describe until InUse" really polls.
pub const DELAYS: TransitionDelays =
    TransitionDelays { attach_ms: 150, detach_ms: 150, delete_ms: 150, start_stop_ms: 0 };

/// An in-process server; stopped (and its directory removed) when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub grpc: Clients,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    /// A server that requires signatures by [`AK`]/[`SECRET`] when `signed`.
    pub async fn start(signed: bool) -> Server {
        Server::start_with(signed, DELAYS).await
    }

    pub async fn start_with(signed: bool, delays: TransitionDelays) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServeConfig { delays, ..ServeConfig::loopback(dir.path()) };
        let model = serve::open_model(&cfg, std::sync::Arc::new(SystemClock), vec![]).unwrap();
        let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let credentials =
            if signed { Credentials::new([(AK.to_string(), SECRET.to_string())]) } else { Credentials::default() };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve::run_with(listener, model, openapi::Options { credentials, node_key: None }, async move {
            let _ = stopped.await;
        }));
        // With signatures required on every face, the gRPC clients sign too.
        let key = signed.then(|| enifab::cli::AccessKey { id: AK.into(), secret: SECRET.into() });
        let grpc = Clients::signed(enifab::cli::connect(&addr.to_string()).await.unwrap(), key);
        Server { addr, grpc, _dir: dir, _stop: stop }
    }

    /// An old-Go-SDK-style signed call (`POST`, everything in the query).
    pub async fn go(&self, version: &str, action: &str, params: &[(&str, &str)]) -> Reply {
        let query = go_sdk_query(version, action, params, AK, SECRET);
        self.raw("POST", &format!("/?{query}"), &[("Content-Type", "application/x-www-form-urlencoded")], b"").await
    }

    /// An unsigned call with the parameters in a form body (what a curl user sends).
    pub async fn form(&self, version: &str, action: &str, params: &[(&str, &str)]) -> Reply {
        let mut all = vec![("Action", action), ("Version", version)];
        // As the SDKs send it: every action of the cloud's products takes the region.
        if version != EMULATOR && !params.iter().any(|(k, _)| *k == "RegionId") {
            all.push(("RegionId", REGION));
        }
        all.extend_from_slice(params);
        let body =
            all.iter().map(|(k, v)| format!("{}={}", go_query_escape(k), go_query_escape(v))).collect::<Vec<_>>();
        self.raw("POST", "/", &[("Content-Type", "application/x-www-form-urlencoded")], body.join("&").as_bytes()).await
    }

    /// Any request, as raw HTTP/1.1 over a fresh connection.
    pub async fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let (addr, method, path) = (self.addr, method.to_string(), path.to_string());
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let body = body.to_vec();
        tokio::task::spawn_blocking(move || http1(addr, &method, &path, &headers, &body)).await.unwrap()
    }
}

/// An HTTP answer with its body parsed as JSON.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub json: Value,
}

impl Reply {
    /// The body of a 200 answer; panics with the body otherwise.
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "expected 200, got {}: {}", self.status, self.json);
        assert_request_id(&self.json);
        self.json
    }

    /// The cloud's error shape, field by field; returns the message.
    pub fn error(&self, status: u16, code: &str) -> String {
        assert_eq!((self.status, self.json["Code"].as_str().unwrap_or("")), (status, code), "{}", self.json);
        let obj = self.json.as_object().expect("an error body is an object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["Code", "HostId", "Message", "Recommend", "RequestId"], "{}", self.json);
        assert_request_id(&self.json);
        assert!(self.json["Recommend"].as_str().unwrap().contains(&format!("q={code}")), "{}", self.json);
        assert_eq!(self.headers.get("x-acs-request-id").map(String::as_str), self.json["RequestId"].as_str());
        self.json["Message"].as_str().unwrap().to_string()
    }
}

/// `RequestId` in the cloud's shape: `473469C7-AA6F-4DC5-B3DB-A3DC0DE3C83E`.
pub fn assert_request_id(v: &Value) {
    let rid = v["RequestId"].as_str().unwrap_or_else(|| panic!("no RequestId in {v}"));
    let parts: Vec<&str> = rid.split('-').collect();
    assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{rid}");
    assert!(rid.chars().all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_uppercase()), "{rid}");
}

/// `2026-11-27T03:45:23Z`, what Terway's GC parses with layout `2006-01-02T15:04:05Z`.
pub fn assert_cloud_time(s: &str) {
    let b = s.as_bytes();
    assert_eq!(b.len(), 20, "{s}");
    for (i, c) in b.iter().enumerate() {
        match i {
            4 | 7 => assert_eq!(*c, b'-', "{s}"),
            10 => assert_eq!(*c, b'T', "{s}"),
            13 | 16 => assert_eq!(*c, b':', "{s}"),
            19 => assert_eq!(*c, b'Z', "{s}"),
            _ => assert!(c.is_ascii_digit(), "{s}"),
        }
    }
}

fn http1(addr: SocketAddr, method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer before it has read everything (an oversized body); the answer counts.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        body = dechunk(&body);
    }
    let json = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
    if status != 0 && !body.is_empty() {
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some("application/json;charset=utf-8"),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    Reply { status, headers, json }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + size]);
        b = &b[end + 4 + size..];
    }
}

/// Go's `url.QueryEscape`: unreserved bytes stay, space → `+`, the rest `%XX`.
pub fn go_query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The old Go SDK's signature encoding: QueryEscape, then `+` → `%20`, `*` → `%2A`, `%7E` → `~`.
fn go_sign_escape(s: &str) -> String {
    go_query_escape(s).replace('+', "%20").replace('*', "%2A").replace("%7E", "~")
}

/// A fresh UUID-like nonce, as the Go SDK's `utils.GetUUID()`.
pub fn nonce() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

pub fn now_timestamp() -> String {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    Millis(ms).to_cloud_seconds()
}

/// The query string of a signed request exactly as the old Go SDK builds it.
pub fn go_sdk_query(version: &str, action: &str, params: &[(&str, &str)], ak: &str, secret: &str) -> String {
    go_sdk_query_at("POST", version, action, params, ak, secret, &now_timestamp(), &nonce())
}

#[allow(clippy::too_many_arguments)]
pub fn go_sdk_query_at(
    method: &str,
    version: &str,
    action: &str,
    params: &[(&str, &str)],
    ak: &str,
    secret: &str,
    timestamp: &str,
    nonce: &str,
) -> String {
    let mut q: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in [
        ("Action", action),
        ("Version", version),
        ("Format", "JSON"),
        ("Timestamp", timestamp),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureType", ""),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", nonce),
        ("AccessKeyId", ak),
        ("RegionId", REGION),
    ] {
        q.insert(k.into(), v.into());
    }
    for (k, v) in params {
        q.insert(k.to_string(), v.to_string());
    }
    let canonical = q.iter().map(|(k, v)| format!("{}={}", go_sign_escape(k), go_sign_escape(v))).collect::<Vec<_>>();
    let sts = format!("{method}&{}&{}", go_sign_escape("/"), go_sign_escape(&canonical.join("&")));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(format!("{secret}&").as_bytes()).unwrap();
    mac.update(sts.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    q.insert("Signature".into(), sig);
    q.iter().map(|(k, v)| format!("{}={}", go_query_escape(k), go_query_escape(v))).collect::<Vec<_>>().join("&")
}

/// The cloud topology a Terway node sits in, made over gRPC (the emulator's own face): a VPC,
/// a node vSwitch, a pod vSwitch, a security group, a node instance.
pub struct Topology {
    pub vpc: String,
    pub node_vsw: String,
    pub pod_vsw: String,
    pub sg: String,
    pub instance: String,
}

pub async fn topology(c: &mut Clients) -> Topology {
    let vpc = c
        .vpc
        .create_vpc(pb::CreateVpcRequest { cidr_block: "10.0.0.0/8".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .vpc_id;
    let vsw = |cidr: &str| pb::CreateVSwitchRequest {
        vpc_id: vpc.clone(),
        zone_id: "cn-hongkong-b".into(),
        cidr_block: cidr.into(),
        ..Default::default()
    };
    let node_vsw = c.vpc.create_v_switch(vsw("10.0.4.0/24")).await.unwrap().into_inner().v_switch_id;
    let pod_vsw = c.vpc.create_v_switch(vsw("10.0.8.0/22")).await.unwrap().into_inner().v_switch_id;
    let sg = c
        .ecs
        .create_security_group(pb::CreateSecurityGroupRequest { vpc_id: vpc.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .security_group_id;
    let instance = c
        .ecs
        .create_instance(pb::CreateInstanceRequest {
            instance_type: "ecs.g7.xlarge".into(),
            v_switch_id: node_vsw.clone(),
            security_group_ids: vec![sg.clone()],
            private_ip_address: "10.0.4.22".into(),
            instance_name: "cn-hongkong.10.0.4.22".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .instance_id;
    Topology { vpc, node_vsw, pod_vsw, sg, instance }
}

/// Poll `DescribeNetworkInterfaces NetworkInterfaceId.1=<id>` until `done` holds for the set.
pub async fn describe_until(server: &Server, eni: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut polls = 0;
    loop {
        let v = server
            .go(ECS, "DescribeNetworkInterfaces", &[("NetworkInterfaceId.1", eni), ("MaxResults", "500")])
            .await
            .ok();
        let set = v["NetworkInterfaceSets"]["NetworkInterfaceSet"].as_array().cloned().unwrap_or_default();
        polls += 1;
        if done(&set) {
            return set;
        }
        assert!(tokio::time::Instant::now() < deadline, "{eni} never reached the state after {polls} polls: {v}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}
