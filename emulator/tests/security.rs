//! The API as an attacker on the same network sees it: a real `Emulator` (gRPC, the OpenAPI
//! endpoint and the Geneve fabric) with an AccessKey configured, on loopback ports.
//!
//! Who may call (every `enifab.v1` method, taken from the descriptor pool so that a new one cannot
//! be forgotten), what a node may do with its token and what it may not, which addresses a node
//! may register, what happens to frames from an address nobody registered, and how the
//! listener treats clients that connect and never finish. The attacks of issue 10 are here by
//! name: an unsigned InjectFault, a RegisterNode that takes another node's traffic, a
//! RegisterNode to 8.8.8.8.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enifab::actor::SystemClock;
use enifab::cli::{AccessKey, Clients, SignedChannel};
use enifab::codec::dynamic::DynCodec;
use enifab::grpc::status::cloud_error;
use enifab::openapi::auth::Credentials;
use enifab::openapi::listener::Limits;
use enifab::serve::{ApiConfig, Emulator, ServeConfig};
use enifab_dataplane::testkit::{Endpoint, echo_datagram};
use enifab_dataplane::wire::geneve;
use enifab_proto::v1 as pb;
use prost_reflect::DynamicMessage;
use tonic::Code;
use tonic::transport::Channel;

const AK: &str = "LTAI5tSecurityTestKey";
const SECRET: &str = "security-test-secret";

fn admin_key() -> AccessKey {
    AccessKey { id: AK.into(), secret: SECRET.into() }
}

/// A running emulator that requires [`AK`]; stopped when dropped.
struct Cloud {
    addr: SocketAddr,
    emu: Emulator,
    channel: Channel,
    /// Signed with the AccessKey.
    admin: Clients,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Cloud {
    async fn start() -> Cloud {
        Cloud::start_with(Limits::default()).await
    }

    async fn start_with(limits: Limits) -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServeConfig::loopback(dir.path());
        let emu = Emulator::open(&cfg, Arc::new(SystemClock)).unwrap();
        let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut api = ApiConfig { limits, ..Default::default() };
        api.openapi.credentials = Credentials::new([(AK.to_string(), SECRET.to_string())]);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(emu.clone().run_with(listener, api, async move {
            let _ = stopped.await;
        }));
        let channel = enifab::cli::connect(&addr.to_string()).await.unwrap();
        let admin = Clients::signed(channel.clone(), Some(admin_key()));
        Cloud { addr, emu, channel, admin, _dir: dir, _stop: stop }
    }

    /// Clients that sign as `key` (`None`: unsigned).
    fn as_(&self, key: Option<AccessKey>) -> Clients {
        Clients::signed(self.channel.clone(), key)
    }

    /// The node key of `instance` (from IssueNodeToken).
    async fn node_key(&self, instance: &str) -> AccessKey {
        let r = self
            .admin
            .emulator
            .clone()
            .issue_node_token(pb::IssueNodeTokenRequest { instance_id: instance.into() })
            .await
            .unwrap()
            .into_inner();
        AccessKey { id: r.access_key_id, secret: r.node_token }
    }
}

/// The cloud code of a refused call, with its gRPC code.
#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    match r {
        Ok(v) => panic!("expected a refusal, got {:?}", v.into_inner()),
        Err(s) => (s.code(), cloud_error(&s).unwrap_or_else(|| panic!("no cloud code in {s:?}")).0),
    }
}

fn unauthenticated(code: &str) -> (Code, String) {
    (Code::Unauthenticated, code.to_string())
}

fn forbidden() -> (Code, String) {
    (Code::PermissionDenied, "Forbidden.RAM".to_string())
}

/// The services of `enifab.v1` the emulator does not serve (others serve them, on sockets of
/// their own), so an unsigned call to them is UNIMPLEMENTED here.
const NOT_SERVED: &[&str] = &["enifab.v1.Shim", "enifab.v1.LabAgent"];

/// Call `/service/method` with an empty message as `key` (`None`: unsigned); the status.
async fn call_any(channel: Channel, key: Option<AccessKey>, method: &prost_reflect::MethodDescriptor) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(SignedChannel::new(channel, key));
    grpc.ready().await.unwrap();
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name()).parse().unwrap();
    let codec = DynCodec { output: method.output() };
    match grpc.unary(tonic::Request::new(DynamicMessage::new(method.input())), path, codec).await {
        Ok(_) => tonic::Status::ok("answered"),
        Err(s) => s,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_refuses_callers_without_the_right_credentials() {
    let cloud = Cloud::start().await;
    let instance = create_instance(&cloud.admin, "10.0.4.22").await.0;
    let node = cloud.node_key(&instance).await;
    let strangers = [
        (None, unauthenticated("MissingAccessKeyId")),
        (
            Some(AccessKey { id: "LTAInobody".into(), secret: SECRET.into() }),
            unauthenticated("InvalidAccessKeyId.NotFound"),
        ),
        (Some(AccessKey { id: AK.into(), secret: "not-the-secret".into() }), unauthenticated("SignatureDoesNotMatch")),
        (
            Some(AccessKey { id: node.id.clone(), secret: "a-guessed-token".into() }),
            unauthenticated("SignatureDoesNotMatch"),
        ),
    ];
    let mut served = BTreeSet::new();
    let pool = enifab::codec::pool();
    for service in pool.services().filter(|s| s.package_name() == "enifab.v1") {
        for method in service.methods() {
            let name = format!("/{}/{}", service.full_name(), method.name());
            let unsigned = call_any(cloud.channel.clone(), None, &method).await;
            if unsigned.code() == Code::Unimplemented {
                assert!(NOT_SERVED.contains(&service.full_name()), "{name} is not served: {unsigned:?}");
                continue;
            }
            served.insert(service.full_name().to_string());
            for (key, want) in &strangers {
                let s = call_any(cloud.channel.clone(), key.clone(), &method).await;
                let got = (s.code(), cloud_error(&s).map(|e| e.0).unwrap_or_default());
                assert_eq!(&got, want, "{name} as {key:?}: {s:?}");
            }
            // Nodes call RegisterNode and WatchNode only (and then for their own instance: see
            // below; this empty message names none).
            let s = call_any(cloud.channel.clone(), Some(node.clone()), &method).await;
            let got = (s.code(), cloud_error(&s).map(|e| e.0).unwrap_or_default());
            assert_eq!(got, forbidden(), "{name} as node {}: {s:?}", node.id);
        }
    }
    let want: BTreeSet<String> =
        ["Ecs", "Vpc", "Slb", "Emulator", "Fabric"].iter().map(|s| format!("enifab.v1.{s}")).collect();
    assert_eq!(served, want, "the services this emulator serves, each checked");

    // Errors answer in the product's domain, as every other error of that service.
    let s = call_any(
        cloud.channel.clone(),
        None,
        &pool.get_service_by_name("enifab.v1.Vpc").unwrap().methods().next().unwrap(),
    )
    .await;
    use tonic_types::StatusExt;
    assert_eq!(s.get_details_error_info().unwrap().domain, "vpc.aliyuncs.com");

    // Health and reflection stay open: they tell nothing about the VPC.
    let mut health = tonic_health::pb::health_client::HealthClient::new(cloud.channel.clone());
    let h = health.check(tonic_health::pb::HealthCheckRequest { service: "enifab.v1.Ecs".into() }).await.unwrap();
    assert_eq!(h.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

#[tokio::test]
async fn a_signed_call_passes_once_and_in_time() {
    let cloud = Cloud::start().await;
    cloud.admin.vpc.clone().describe_vpcs(pb::DescribeVpcsRequest::default()).await.unwrap();

    // The same signature twice is a replay.
    let path = "/enifab.v1.Vpc/DescribeVpcs";
    let mut headers = tonic::codegen::http::HeaderMap::new();
    admin_key().sign(&mut headers, path);
    let mut vpc = pb::vpc_client::VpcClient::new(cloud.channel.clone());
    let request = || {
        let mut r = tonic::Request::new(pb::DescribeVpcsRequest::default());
        *r.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers.clone());
        r
    };
    vpc.describe_vpcs(request()).await.unwrap();
    assert_eq!(refused(vpc.describe_vpcs(request()).await), unauthenticated("SignatureNonceUsed"));

    // Signed for one method, sent to another: the path is signed.
    let mut ecs = pb::ecs_client::EcsClient::new(cloud.channel.clone());
    let mut r = tonic::Request::new(pb::DescribeInstancesRequest::default());
    let mut other = tonic::codegen::http::HeaderMap::new();
    admin_key().sign(&mut other, path);
    *r.metadata_mut() = tonic::metadata::MetadataMap::from_headers(other);
    assert_eq!(refused(ecs.describe_instances(r).await), unauthenticated("SignatureDoesNotMatch"));
}

/// Issue 10: with an AccessKey set, an unsigned `enifab emulator InjectFault --TargetAction
/// DescribeVpcs --Code ServiceUnavailable --Count 3` made the next three signed HTTP calls fail.
#[tokio::test]
async fn an_unsigned_inject_fault_cannot_fail_signed_calls() {
    let cloud = Cloud::start().await;
    let fault = pb::InjectFaultRequest {
        target_action: "DescribeVpcs".into(),
        code: "ServiceUnavailable".into(),
        count: Some(3),
    };
    let mut unsigned = cloud.as_(None).emulator;
    assert_eq!(refused(unsigned.inject_fault(fault.clone()).await), unauthenticated("MissingAccessKeyId"));
    for _ in 0..3 {
        let (status, body) = signed_http(cloud.addr, "2016-04-28", "DescribeVpcs").await;
        assert_eq!(status, 200, "{body}");
    }
    // Signed, it is the tool it is meant to be.
    cloud.admin.emulator.clone().inject_fault(fault).await.unwrap();
    let (status, body) = signed_http(cloud.addr, "2016-04-28", "DescribeVpcs").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ServiceUnavailable"), "{body}");
}

/// Issue 10: a RegisterNode naming node A's instance and another UDP address took node A's pod
/// traffic. Now only A's own token registers A; and A itself can move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_node_itself_can_say_where_its_frames_go() {
    let cloud = Cloud::start().await;
    let (a_id, vsw, sg) = create_instance(&cloud.admin, "10.0.4.22").await;
    let b_id = create_instance_in(&cloud.admin, &vsw, &sg, "10.0.4.20").await;
    let (a_key, b_key) = (cloud.node_key(&a_id).await, cloud.node_key(&b_id).await);
    let a = register(&cloud, &a_key, &a_id).await;
    let b = register(&cloud, &b_key, &b_id).await;
    ping(&b, &a, 1).expect("B reaches A");

    let thief = UdpSocket::bind("127.0.0.1:0").unwrap();
    thief.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let take_a = || pb::RegisterNodeRequest {
        instance_id: a_id.clone(),
        geneve_address: thief.local_addr().unwrap().to_string(),
        ..Default::default()
    };
    assert_eq!(refused(cloud.as_(None).fabric.register_node(take_a()).await), unauthenticated("MissingAccessKeyId"));
    assert_eq!(
        refused(cloud.admin.fabric.clone().register_node(take_a()).await),
        forbidden(),
        "not with the AccessKey"
    );
    assert_eq!(refused(cloud.as_(Some(b_key.clone())).fabric.register_node(take_a()).await), forbidden());
    let b_as_a = AccessKey { id: a_key.id.clone(), secret: b_key.secret.clone() };
    assert_eq!(
        refused(cloud.as_(Some(b_as_a)).fabric.register_node(take_a()).await),
        unauthenticated("SignatureDoesNotMatch")
    );
    // A's frames still go to A, none to the thief.
    ping(&b, &a, 2).expect("B still reaches A");
    let mut buf = [0u8; 2048];
    assert!(thief.recv(&mut buf).is_err(), "the thief got a frame");

    // Watching A's network is A's too.
    let watch = || pb::WatchNodeRequest { instance_id: a_id.clone() };
    assert_eq!(refused(cloud.as_(None).fabric.watch_node(watch()).await), unauthenticated("MissingAccessKeyId"));
    assert_eq!(refused(cloud.admin.fabric.clone().watch_node(watch()).await), forbidden());
    assert_eq!(refused(cloud.as_(Some(b_key.clone())).fabric.watch_node(watch()).await), forbidden());
    let mut stream = cloud.as_(Some(a_key.clone())).fabric.watch_node(watch()).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().instance_id, a_id);

    // A moves (a restarted shim on a new port): its frames follow.
    let moved = register(&cloud, &a_key, &a_id).await;
    ping(&b, &moved, 3).expect("B reaches A where it moved");
    assert!(a.sock.recv(&mut buf).is_err(), "nothing left at the old address");
}

#[tokio::test]
async fn register_node_refuses_addresses_no_shim_can_have() {
    let cloud = Cloud::start().await;
    let (id, _, _) = create_instance(&cloud.admin, "10.0.4.22").await;
    let key = cloud.node_key(&id).await;
    let mut fabric = cloud.as_(Some(key)).fabric;
    let own = cloud.emu.fabric.bound().to_string();
    for bad in [
        "8.8.8.8:6081",
        "0.0.0.0:6081",
        "127.0.0.1:0",
        "224.0.0.1:6081",
        "255.255.255.255:6081",
        own.as_str(),
        "nonsense",
    ] {
        let r = fabric
            .register_node(pb::RegisterNodeRequest {
                instance_id: id.clone(),
                geneve_address: bad.into(),
                ..Default::default()
            })
            .await;
        assert_eq!(refused(r), (Code::InvalidArgument, "InvalidParameter".to_string()), "{bad}");
    }
    // External hosts are the AccessKey's, and the same addresses are refused for them.
    let host = |geneve: &str| pb::RegisterExternalHostRequest {
        name: "client".into(),
        address: "47.100.1.10/24".into(),
        geneve_address: geneve.into(),
    };
    let mut admin = cloud.admin.fabric.clone();
    assert_eq!(refused(admin.register_external_host(host("8.8.8.8:6081")).await).1, "InvalidParameter");
    assert_eq!(refused(fabric.register_external_host(host("127.0.0.1:40000")).await), forbidden());
    admin.register_external_host(host("127.0.0.1:40000")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_from_an_unregistered_address_are_dropped_and_counted() {
    let cloud = Cloud::start().await;
    let (a_id, vsw, sg) = create_instance(&cloud.admin, "10.0.4.22").await;
    let b_id = create_instance_in(&cloud.admin, &vsw, &sg, "10.0.4.20").await;
    let a = register(&cloud, &cloud.node_key(&a_id).await, &a_id).await;
    let b = register(&cloud, &cloud.node_key(&b_id).await, &b_id).await;
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    for id in 0..3 {
        stranger.send_to(&echo_datagram(&b.eth0, a.eth0.ip, 8, id), b.fabric).unwrap();
    }
    let mut buf = [0u8; 2048];
    assert!(a.sock.recv(&mut buf).is_err(), "a frame from a stranger reached A");
    let mut counted = 0;
    for _ in 0..50 {
        let c = cloud.admin.fabric.clone().describe_fabric_counters(pb::DescribeFabricCountersRequest::default()).await;
        counted = c.unwrap().into_inner().drops.iter().filter(|d| d.reason == "unknown_peer").map(|d| d.frames).sum();
        if counted == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counted, 3);
}

#[tokio::test]
async fn node_tokens_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServeConfig::loopback(dir.path());
    let first = Emulator::open(&cfg, Arc::new(SystemClock)).unwrap().node_key.token("i-a");
    // The model thread of the first lets go of the directory once its handles are gone.
    let mut second = None;
    for _ in 0..100 {
        match Emulator::open(&cfg, Arc::new(SystemClock)) {
            Ok(e) => {
                second = Some(e.node_key.token("i-a"));
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(second.as_deref(), Some(first.as_str()));
}

// ---- the listener -----------------------------------------------------------------------------

fn short(limits: Limits) -> Limits {
    Limits { header_timeout: Duration::from_millis(400), ..limits }
}

/// How long until the server closes `stream` (reads return 0 or fail), at most `within`.
fn closed_after(mut stream: &TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
            Err(_) => return Some(start.elapsed()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_client_is_cut_off_after_the_header_timeout() {
    let cloud = Cloud::start_with(short(Limits::default())).await;
    let addr = cloud.addr;
    // A client's channel that connects and makes its first call only after the timeout: its
    // connection is asked to close (GOAWAY), and the channel connects again for the call.
    let early = enifab::cli::connect(&addr.to_string()).await.unwrap();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        // Half a request head, then nothing.
        let half = TcpStream::connect(addr).unwrap();
        (&half).write_all(b"POST /?Action=DescribeVpcs HTTP/1.1\r\nHost: enifab\r\n").unwrap();
        // Connected, then silence (not even enough bytes to tell HTTP/1.1 from HTTP/2).
        let silent = TcpStream::connect(addr).unwrap();
        // An HTTP/2 preface and no request.
        let h2 = TcpStream::connect(addr).unwrap();
        (&h2).write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        for (what, s) in [("half a head", &half), ("silence", &silent), ("a bare preface", &h2)] {
            closed_after(s, Duration::from_secs(5)).unwrap_or_else(|| panic!("{what}: still open after 5 s"));
            let t = start.elapsed();
            assert!(t >= Duration::from_millis(350), "{what}: closed after {t:?}, before the timeout");
        }
    })
    .await
    .unwrap();
    // Meanwhile and after, the API answers.
    cloud.admin.vpc.clone().describe_vpcs(pb::DescribeVpcsRequest::default()).await.unwrap();
    Clients::signed(early, Some(admin_key())).vpc.describe_vpcs(pb::DescribeVpcsRequest::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_off_after_the_request_timeout() {
    let limits = Limits { request_timeout: Duration::from_millis(400), ..Limits::default() };
    let cloud = Cloud::start_with(limits).await;
    let addr = cloud.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST / HTTP/1.1\r\nHost: enifab\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nAction=Desc",
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"Code\":\"RequestTimeout\""), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let limits = Limits { max_connections: 3, header_timeout: Duration::from_secs(2), ..Limits::default() };
    let cloud = Cloud::start_with(limits).await;
    // The test's own channel holds one connection; of three more, two fit.
    cloud.admin.vpc.clone().describe_vpcs(pb::DescribeVpcsRequest::default()).await.unwrap();
    let addr = cloud.addr;
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let watchers: Vec<_> = (0..3)
            .map(|_| {
                let s = TcpStream::connect(addr).unwrap();
                std::thread::spawn(move || closed_after(&s, Duration::from_secs(6)).map(|_| start.elapsed()))
            })
            .collect();
        let mut closed: Vec<Duration> =
            watchers.into_iter().map(|w| w.join().unwrap().expect("every silent connection is closed")).collect();
        closed.sort();
        assert!(closed[0] < Duration::from_millis(1500), "the one over the limit goes at once: {closed:?}");
        assert!(closed[1] >= Duration::from_millis(1900), "the others at the header timeout: {closed:?}");
        // Then there is room again.
        let again = TcpStream::connect(addr).unwrap();
        (&again)
            .write_all(
                b"GET /?Action=DescribeVpcs&Version=2016-04-28 HTTP/1.1\r\nHost: enifab\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        let mut answer = String::new();
        (&again).read_to_string(&mut answer).unwrap();
        assert!(answer.contains("MissingAccessKeyId"), "served, and refused for want of a signature: {answer}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let limits = Limits { idle_timeout: Duration::from_millis(400), ..Limits::default() };
    let cloud = Cloud::start_with(limits).await;
    let addr = cloud.addr;
    tokio::task::spawn_blocking(move || {
        let s = TcpStream::connect(addr).unwrap();
        (&s).write_all(b"GET /?Action=DescribeVpcs&Version=2016-04-28 HTTP/1.1\r\nHost: enifab\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 4096];
        let n = (&s).read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"));
        let t = closed_after(&s, Duration::from_secs(5)).expect("an idle keep-alive connection is closed");
        assert!(t >= Duration::from_millis(200), "{t:?}");
    })
    .await
    .unwrap();
    // A channel that was closed under it reconnects for the next call.
    tokio::time::sleep(Duration::from_millis(800)).await;
    cloud.admin.vpc.clone().describe_vpcs(pb::DescribeVpcsRequest::default()).await.unwrap();
}

// ---- helpers -------------------------------------------------------------------------------

/// A signed old-Go-SDK-style HTTP call: (status, body).
async fn signed_http(addr: SocketAddr, version: &'static str, action: &'static str) -> (u16, String) {
    tokio::task::spawn_blocking(move || signed_http_blocking(addr, version, action)).await.unwrap()
}

fn signed_http_blocking(addr: SocketAddr, version: &str, action: &str) -> (u16, String) {
    use enifab::openapi::sign;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).unwrap();
    let mut params: Vec<(String, String)> = [
        ("AccessKeyId", AK.to_string()),
        ("Action", action.to_string()),
        ("Format", "JSON".to_string()),
        ("RegionId", "cn-hongkong".to_string()),
        ("SignatureMethod", "HMAC-SHA1".to_string()),
        ("SignatureNonce", nonce.iter().map(|b| format!("{b:02x}")).collect()),
        ("SignatureVersion", "1.0".to_string()),
        ("Timestamp", enifab::openapi::auth::format_timestamp(now)),
        ("Version", version.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let sts = sign::rpc_string_to_sign("POST", &params);
    params.push(("Signature".into(), sign::rpc_signature(SECRET, &sts)));
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", sign::encode(k), sign::encode(v))).collect();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "POST /?{} HTTP/1.1\r\nHost: enifab\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", query.join("&"))
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A VPC, a vSwitch, a group and an instance with primary IP `ip`: (instance, vSwitch, group).
async fn create_instance(c: &Clients, ip: &str) -> (String, String, String) {
    let (mut vpc, mut ecs) = (c.vpc.clone(), c.ecs.clone());
    let vpc_id = vpc
        .create_vpc(pb::CreateVpcRequest { cidr_block: "10.0.0.0/8".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .vpc_id;
    let vsw = vpc
        .create_v_switch(pb::CreateVSwitchRequest {
            vpc_id: vpc_id.clone(),
            zone_id: "cn-hongkong-b".into(),
            cidr_block: "10.0.4.0/24".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .v_switch_id;
    let sg = ecs
        .create_security_group(pb::CreateSecurityGroupRequest { vpc_id, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .security_group_id;
    let id = create_instance_in(c, &vsw, &sg, ip).await;
    (id, vsw, sg)
}

async fn create_instance_in(c: &Clients, vsw: &str, sg: &str, ip: &str) -> String {
    c.ecs
        .clone()
        .create_instance(pb::CreateInstanceRequest {
            instance_type: "ecs.g7.xlarge".into(),
            v_switch_id: vsw.into(),
            security_group_ids: vec![sg.into()],
            private_ip_address: ip.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .instance_id
}

/// A fake shim: a UDP socket registered for the instance, with its node's key.
struct Shim {
    sock: UdpSocket,
    eth0: Endpoint,
    fabric: SocketAddr,
}

async fn register(cloud: &Cloud, key: &AccessKey, instance: &str) -> Shim {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let r = cloud
        .as_(Some(key.clone()))
        .fabric
        .register_node(pb::RegisterNodeRequest {
            instance_id: instance.into(),
            geneve_address: sock.local_addr().unwrap().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let fabric: SocketAddr = r.fabric_address.parse().unwrap();
    assert_eq!(fabric, cloud.emu.fabric.bound(), "a loopback fabric tells its own address");
    let nic = &r.config.unwrap().nics[0];
    let mac: enifab_model::Mac = nic.mac_address.parse().unwrap();
    let eth0 = Endpoint {
        eni: Box::leak(nic.network_interface_id.clone().into_boxed_str()),
        vni: nic.vni,
        vlan: None,
        mac,
        ip: nic.primary_ip_address.parse::<Ipv4Addr>().unwrap(),
        peer: sock.local_addr().unwrap(),
    };
    Shim { sock, eth0, fabric }
}

/// An echo request from `from` to `to` through the fabric; Some when `to` receives it.
fn ping(from: &Shim, to: &Shim, id: u16) -> Option<()> {
    from.sock.send_to(&echo_datagram(&from.eth0, to.eth0.ip, 8, id), from.fabric).unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = to.sock.recv(&mut buf).ok()?;
    let (_, inner) = geneve::Header::parse(&buf[..n]).ok()?;
    (inner.len() > 14).then_some(())
}
