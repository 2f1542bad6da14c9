//! The endpoint's gateway behaviour: malformed requests get the cloud's error and change
//! nothing; signatures (RPC v1 HMAC-SHA1 and ACS3-HMAC-SHA256), timestamps and nonces are
//! checked like the cloud checks them; injected faults answer with the cloud's code and HTTP
//! status on every face; every gRPC action is reachable over HTTP; HTTPS serves the same API with
//! the CA enifab makes.

mod openapi_support;

use std::sync::Arc;

use enifab::cli::Clients;
use enifab::codec;
use enifab_model::ModelError;
use enifab_model::error::INJECTABLE_CODES;
use enifab_proto::v1 as pb;
use hmac::{Hmac, KeyInit, Mac};
use openapi_support::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Every Describe* at once, request IDs cleared: equal snapshots mean nothing changed.
async fn snapshot(c: &Clients) -> Vec<Value> {
    let (mut ecs, mut vpc) = (c.ecs.clone(), c.vpc.clone());
    let mut out = vec![
        codec::to_json(
            &ecs.describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                max_results: Some(500),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner(),
        ),
        codec::to_json(&vpc.describe_v_switches(pb::DescribeVSwitchesRequest::default()).await.unwrap().into_inner()),
        codec::to_json(&vpc.describe_vpcs(pb::DescribeVpcsRequest::default()).await.unwrap().into_inner()),
        codec::to_json(
            &ecs.describe_security_groups(pb::DescribeSecurityGroupsRequest::default()).await.unwrap().into_inner(),
        ),
        codec::to_json(&ecs.describe_instances(pb::DescribeInstancesRequest::default()).await.unwrap().into_inner()),
    ];
    for v in &mut out {
        v.as_object_mut().unwrap().remove("RequestId");
    }
    out
}

fn enc(s: &str) -> String {
    go_query_escape(s).replace('+', "%20").replace('*', "%2A").replace("%7E", "~")
}

#[tokio::test]
async fn malformed_requests_get_the_clouds_error_and_change_nothing() {
    let mut server = Server::start(false).await;
    let t = topology(&mut server.grpc).await;
    let before = snapshot(&server.grpc).await;
    let create = format!("VSwitchId={}&SecurityGroupIds.1={}&RegionId={REGION}", t.pod_vsw, t.sg);
    let big_value = "x".repeat(40 * 1024);
    let big_body = format!("Action=CreateNetworkInterface&Version={ECS}&{create}&Description={}", "y".repeat(2 << 20));
    let many = (1..=2100).map(|i| format!("P{i}=1")).collect::<Vec<_>>().join("&");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    // (what, method, path, body, status, code)
    let cases: Vec<(&str, &str, String, String, u16, &str)> = vec![
        ("no Action", "POST", format!("/?Version={ECS}&{create}"), String::new(), 400, "MissingParameter"),
        (
            "no Version",
            "POST",
            format!("/?Action=CreateNetworkInterface&{create}"),
            String::new(),
            400,
            "MissingParameter",
        ),
        (
            "unknown Version",
            "POST",
            format!("/?Action=CreateNetworkInterface&Version=2099-01-01&{create}"),
            String::new(),
            400,
            "InvalidVersion",
        ),
        (
            "unknown Action",
            "POST",
            format!("/?Action=RunInstances&Version={ECS}&{create}"),
            String::new(),
            404,
            "InvalidAction.NotFound",
        ),
        (
            "a VPC action under the ECS version",
            "POST",
            format!("/?Action=CreateVSwitch&Version={ECS}&VpcId={}&ZoneId=cn-hongkong-b&CidrBlock=10.0.20.0/24", t.vpc),
            String::new(),
            404,
            "InvalidAction.NotFound",
        ),
        (
            "PUT",
            "PUT",
            format!("/?Action=CreateNetworkInterface&Version={ECS}&{create}"),
            String::new(),
            404,
            "InvalidAction.NotFound",
        ),
        (
            "list index 0",
            "POST",
            format!(
                "/?Action=CreateNetworkInterface&Version={ECS}&VSwitchId={}&SecurityGroupIds.0={}",
                t.pod_vsw, t.sg
            ),
            String::new(),
            400,
            "InvalidParameter",
        ),
        (
            "list index too large",
            "POST",
            format!("/?Action=CreateNetworkInterface&Version={ECS}&{create}&Tag.1001.Key=a"),
            String::new(),
            400,
            "InvalidParameter",
        ),
        (
            "an integer that is not",
            "POST",
            format!("/?Action=CreateNetworkInterface&Version={ECS}&{create}&SecondaryPrivateIpAddressCount=two"),
            String::new(),
            400,
            "InvalidParameter",
        ),
        (
            "a negative count",
            "POST",
            format!("/?Action=CreateNetworkInterface&Version={ECS}&{create}&SecondaryPrivateIpAddressCount=-1"),
            String::new(),
            400,
            "InvalidParameter",
        ),
        (
            "a boolean that is not",
            "POST",
            format!("/?Action=CreateNetworkInterface&Version={ECS}&{create}&SourceDestCheck=maybe"),
            String::new(),
            400,
            "InvalidParameter",
        ),
        (
            "a value on a structure",
            "POST",
            format!("/?Action=CreateNetworkInterface&Version={ECS}&{create}&Tag.1=x"),
            String::new(),
            400,
            "InvalidParameter",
        ),
        (
            "a single value twice",
            "POST",
            format!("/?Action=CreateNetworkInterface&Version={ECS}&{create}&VSwitchId={}", t.node_vsw),
            String::new(),
            400,
            "InvalidParameter",
        ),
        (
            "an oversized value",
            "POST",
            format!("/?Action=CreateNetworkInterface&Version={ECS}&{create}&Description={big_value}"),
            String::new(),
            400,
            "InvalidParameter",
        ),
        ("an oversized body", "POST", "/".to_string(), big_body, 400, "InvalidParameter"),
        (
            "too many parameters",
            "POST",
            "/".to_string(),
            format!("Action=CreateNetworkInterface&Version={ECS}&{create}&{many}"),
            400,
            "InvalidParameter",
        ),
        (
            "bad percent-encoding",
            "POST",
            format!("/?Action=CreateNetworkInterface&Version={ECS}&{create}&Description=%zz"),
            String::new(),
            400,
            "InvalidParameter",
        ),
        (
            "invalid UTF-8",
            "POST",
            format!("/?Action=CreateNetworkInterface&Version={ECS}&{create}&Description=%C3%28"),
            String::new(),
            400,
            "InvalidParameter",
        ),
        (
            "a mandatory parameter missing",
            "POST",
            format!("/?Action=CreateNetworkInterface&Version={ECS}&SecurityGroupIds.1={}&RegionId={REGION}", t.sg),
            String::new(),
            400,
            "MissingParameter",
        ),
        (
            "a tag index beyond 20",
            "POST",
            format!("/?Action=CreateNetworkInterface&Version={ECS}&{create}&Tag.1000.Key=k&Tag.1000.Value=v"),
            String::new(),
            400,
            "InvalidParameter",
        ),
        (
            "another region",
            "POST",
            format!("/?Action=CreateNetworkInterface&Version={ECS}&{}", create.replace(REGION, "cn-beijing")),
            String::new(),
            404,
            "InvalidRegionId.NotFound",
        ),
    ];
    for (what, method, path, body, status, code) in &cases {
        let r = server.raw(method, path, &form, body.as_bytes()).await;
        assert_eq!((r.status, r.json["Code"].as_str().unwrap_or("")), (*status, *code), "{what}: {}", r.json);
        r.error(*status, code);
    }
    // A JSON body is not a form.
    let r = server
        .raw(
            "POST",
            &format!("/?Action=CreateNetworkInterface&Version={ECS}"),
            &[("Content-Type", "application/json")],
            create.as_bytes(),
        )
        .await;
    r.error(400, "InvalidParameter");
    // Unknown parameters are ignored, as the cloud ignores them; the call itself is fine.
    let v = server
        .raw(
            "GET",
            &format!(
                "/?Action=DescribeVSwitches&Version={VPC}&RegionId={REGION}&VSwitchId={}&OwnerAccount=x&Bogus.3.Deep=1",
                t.pod_vsw
            ),
            &[],
            b"",
        )
        .await
        .ok();
    assert_eq!(v["TotalCount"], 1);
    // Without `RegionId` the cloud's gateway has nowhere to route the call (ECS and VPC answer
    // `MissingRegionId`); an empty one is none. Only enifab's own actions have no region.
    for region in ["", "&RegionId="] {
        for (version, action) in
            [(ECS, "DescribeNetworkInterfaces"), (VPC, "DescribeVSwitches"), (SLB, "DescribeLoadBalancers")]
        {
            let path = format!("/?Action={action}&Version={version}{region}");
            let r = server.raw("GET", &path, &[], b"").await;
            assert!(r.error(400, "MissingRegionId").contains("RegionId"), "{action}: {}", r.json);
        }
    }
    server.raw("GET", &format!("/?Action=BeginDryRun&Version={EMULATOR}"), &[], b"").await.ok();
    assert_eq!(snapshot(&server.grpc).await, before, "a malformed request changed the model");
}

/// ACS3-HMAC-SHA256 headers for an empty-bodied POST to `/?<query>`, built from the published
/// algorithm (not from the server's code).
fn acs3_headers(host: &str, action: &str, version: &str, query: &str, ak: &str, secret: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| kv.split_once('=').unwrap())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    pairs.sort();
    let canonical_query = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let payload = Sha256::digest(b"").iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        ("x-acs-action".to_string(), action.to_string()),
        ("x-acs-content-sha256".to_string(), payload.clone()),
        ("x-acs-date".to_string(), now_timestamp()),
        ("x-acs-signature-nonce".to_string(), nonce()),
        ("x-acs-version".to_string(), version.to_string()),
    ];
    headers.sort();
    let lines: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed = headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let canonical = format!("POST\n/\n{canonical_query}\n{lines}\n{signed}\n{payload}");
    let hashed = Sha256::digest(canonical.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let sts = format!("ACS3-HMAC-SHA256\n{hashed}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(sts.as_bytes());
    let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    headers.retain(|(k, _)| k != "host");
    headers.push((
        "Authorization".to_string(),
        format!("ACS3-HMAC-SHA256 Credential={ak},SignedHeaders={signed},Signature={sig}"),
    ));
    headers
}

/// Issue 10: a repeated `Action` was "the first one wins"; an `x-acs-action` header that said
/// something else was ignored; any path answered `200 application/grpc` with an empty body.
#[tokio::test]
async fn a_repeated_or_contradicted_action_and_an_unknown_path_are_refused() {
    let mut server = Server::start(false).await;
    let t = topology(&mut server.grpc).await;
    let before = snapshot(&server.grpc).await;
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let delete = format!("Action=DeleteVSwitch&VSwitchId={}", t.pod_vsw);
    // (what, path, extra headers, body)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, String);
    let cases: Vec<Case> = vec![
        ("Action twice", format!("/?Action=DescribeVSwitches&{delete}&Version={VPC}"), vec![], String::new()),
        (
            "Action in the query and the body",
            format!("/?Action=DescribeVSwitches&Version={VPC}"),
            vec![],
            delete.clone(),
        ),
        ("Version twice", format!("/?Action=DescribeVSwitches&Version={VPC}&Version={ECS}"), vec![], String::new()),
        (
            "x-acs-action says otherwise",
            format!("/?Action=DescribeVSwitches&Version={VPC}&VSwitchId={}", t.pod_vsw),
            vec![("x-acs-action", "DeleteVSwitch")],
            String::new(),
        ),
        (
            "x-acs-version says otherwise",
            format!("/?Action=DescribeVSwitches&Version={VPC}"),
            vec![("x-acs-version", ECS)],
            String::new(),
        ),
    ];
    for (what, path, extra, body) in cases {
        let mut headers = form.to_vec();
        headers.extend(extra);
        let r = server.raw("POST", &path, &headers, body.as_bytes()).await;
        let message = r.error(400, "InvalidParameter");
        assert!(message.contains("Action") || message.contains("Version"), "{what}: {message}");
    }
    assert_eq!(snapshot(&server.grpc).await, before, "nothing was deleted");

    for path in ["/favicon.ico", "/latest/meta-data/", "/enifab.v1.Vpc/DescribeVpcs", "/api/v1"] {
        server.raw("GET", path, &[], b"").await.error(404, "InvalidAction.NotFound");
    }
    // A gRPC client that asks for a service there is not learns it the gRPC way.
    let r = server.raw("POST", "/enifab.v1.Nothing/Here", &[("Content-Type", "application/grpc")], b"").await;
    assert_eq!((r.status, r.headers.get("grpc-status").map(String::as_str)), (200, Some("12")), "{r:?}");
}

#[tokio::test]
async fn signatures_timestamps_and_nonces_are_checked_like_the_cloud() {
    let mut server = Server::start(true).await;
    let t = topology(&mut server.grpc).await;
    let before = snapshot(&server.grpc).await;
    let create = [("VSwitchId", t.pod_vsw.as_str()), ("SecurityGroupIds.1", t.sg.as_str())];
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let post = |q: String| {
        let server = &server;
        async move { server.raw("POST", &format!("/?{q}"), &form, b"").await }
    };
    let at = |ts: &str, n: &str, secret: &str, ak: &str| {
        go_sdk_query_at("POST", ECS, "CreateNetworkInterface", &create, ak, secret, ts, n)
    };
    let minutes_ago = |m: i64| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        enifab_model::Millis((now - m * 60_000) as u64).to_cloud_seconds()
    };

    let r = post(at(&now_timestamp(), &nonce(), "wrong-secret", AK)).await;
    let msg = r.error(400, "SignatureDoesNotMatch");
    assert!(
        msg.starts_with(
            "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&AccessKeyId%3D"
        ),
        "{msg}"
    );
    post(at(&now_timestamp(), &nonce(), SECRET, "LTAInobody")).await.error(404, "InvalidAccessKeyId.NotFound");
    post(at(&minutes_ago(20), &nonce(), SECRET, AK)).await.error(400, "InvalidTimeStamp.Expired");
    post(at(&minutes_ago(-20), &nonce(), SECRET, AK)).await.error(400, "InvalidTimeStamp.Expired");
    post(at("2026-11-27 03:45:23", &nonce(), SECRET, AK)).await.error(400, "InvalidTimeStamp.Format");
    let tampered = format!("{}&Description=added+later", at(&now_timestamp(), &nonce(), SECRET, AK));
    post(tampered).await.error(400, "SignatureDoesNotMatch");
    let unsigned =
        format!("Action=CreateNetworkInterface&Version={ECS}&VSwitchId={}&SecurityGroupIds.1={}", t.pod_vsw, t.sg);
    post(unsigned).await.error(400, "MissingAccessKeyId");
    assert_eq!(snapshot(&server.grpc).await, before, "a refused request changed the model");

    // Within the window a signed request goes through once; its replay is refused.
    let query = at(&minutes_ago(10), &nonce(), SECRET, AK);
    post(query.clone()).await.ok();
    post(query).await.error(400, "SignatureNonceUsed");

    // GET signs "GET&…".
    let get = go_sdk_query_at(
        "GET",
        VPC,
        "DescribeVSwitches",
        &[("VSwitchId", &t.pod_vsw)],
        AK,
        SECRET,
        &now_timestamp(),
        &nonce(),
    );
    assert_eq!(server.raw("GET", &format!("/?{get}"), &[], b"").await.ok()["TotalCount"], 1);

    // ACS3-HMAC-SHA256, as the tea SDKs send it: action and version in headers, params in the query.
    let host = server.addr.to_string();
    let q = format!("RegionId={REGION}&VSwitchId={}", enc(&t.pod_vsw));
    let headers = acs3_headers(&host, "DescribeVSwitches", VPC, &q, AK, SECRET);
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let v = server.raw("POST", &format!("/?{q}"), &h, b"").await.ok();
    assert_eq!(v["VSwitches"]["VSwitch"][0]["VSwitchId"], t.pod_vsw.as_str());
    // The same headers again: the nonce is spent.
    server.raw("POST", &format!("/?{q}"), &h, b"").await.error(400, "SignatureNonceUsed");
    let bad = acs3_headers(&host, "DescribeVSwitches", VPC, &q, AK, "wrong-secret");
    let h: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let msg = server.raw("POST", &format!("/?{q}"), &h, b"").await.error(400, "SignatureDoesNotMatch");
    assert!(msg.contains("server StringToSign is [ACS3-HMAC-SHA256\n"), "{msg}");
    // A changed query is caught too.
    let good = acs3_headers(&host, "DescribeVSwitches", VPC, &q, AK, SECRET);
    let h: Vec<(&str, &str)> = good.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    server.raw("POST", &format!("/?{q}&VpcId=vpc-x"), &h, b"").await.error(400, "SignatureDoesNotMatch");
    // An x-acs-* header the signature does not cover makes the signature incomplete.
    let mut extra = acs3_headers(&host, "DescribeVSwitches", VPC, &q, AK, SECRET);
    extra.push(("x-acs-security-token".into(), "sneaked-in".into()));
    let h: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    server.raw("POST", &format!("/?{q}"), &h, b"").await.error(400, "IncompleteSignature");
}

#[tokio::test]
async fn every_action_of_the_grpc_api_is_served_over_http() {
    let server = Server::start(false).await;
    for (service, version) in [("Ecs", ECS), ("Vpc", VPC), ("Slb", SLB), ("Emulator", EMULATOR)] {
        let actions = codec::actions(service);
        assert!(!actions.is_empty());
        for action in actions {
            let r = server.raw("POST", &format!("/?Action={action}&Version={version}"), &[], b"").await;
            assert_request_id(&r.json);
            let code = r.json["Code"].as_str().unwrap_or("");
            // Reached the handler: answered, or refused by the model's validation (never the
            // gateway's "no such action", never an emulator fault).
            assert!(
                r.status == 200 || (r.status < 500 && code != "InvalidAction.NotFound"),
                "{service}.{action}: {} {}",
                r.status,
                r.json
            );
        }
    }
}

#[tokio::test]
async fn injected_faults_answer_with_the_clouds_code_and_status() {
    let server = Server::start(false).await;
    for code in INJECTABLE_CODES {
        let status = ModelError::injectable(code).unwrap().http_status();
        server
            .form(EMULATOR, "InjectFault", &[("TargetAction", "DescribeVpcs"), ("Code", code), ("Count", "1")])
            .await
            .ok();
        let r = server.form(VPC, "DescribeVpcs", &[]).await;
        r.error(status, code);
        assert_eq!(r.json["HostId"], "vpc.aliyuncs.com");
        server.form(VPC, "DescribeVpcs", &[]).await.ok();
    }
    assert_eq!(ModelError::injectable("ServiceUnavailable").unwrap().http_status(), 503);
    assert_eq!(ModelError::injectable("InternalError").unwrap().http_status(), 500);

    // `*` fails every action; count 0 disarms.
    server
        .form(EMULATOR, "InjectFault", &[("TargetAction", "*"), ("Code", "ServiceUnavailable"), ("Count", "100")])
        .await
        .ok();
    server.form(ECS, "DescribeInstanceTypes", &[]).await.error(503, "ServiceUnavailable");
    server.form(VPC, "DescribeVSwitches", &[]).await.error(503, "ServiceUnavailable");
    let v = server.form(EMULATOR, "InjectFault", &[("TargetAction", "*"), ("Count", "0")]).await.ok();
    assert_eq!(v["Remaining"], 0);
    server.form(ECS, "DescribeInstanceTypes", &[]).await.ok();

    // Only known actions and codes can be armed.
    server
        .form(EMULATOR, "InjectFault", &[("TargetAction", "RunInstances"), ("Code", "Throttling")])
        .await
        .error(400, "InvalidParameter");
    server
        .form(EMULATOR, "InjectFault", &[("TargetAction", "DescribeVpcs"), ("Code", "Nope")])
        .await
        .error(400, "InvalidParameter");
    server.form(EMULATOR, "InjectFault", &[("Code", "Throttling")]).await.error(400, "MissingParameter");
}

#[tokio::test]
async fn https_serves_the_same_api_with_enifabs_own_ca() {
    use enifab::openapi::tls;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let cfg = enifab::serve::ServeConfig::loopback(dir.path());
    let model = enifab::serve::open_model(&cfg, Arc::new(enifab::actor::SystemClock), vec![]).unwrap();
    let https = tls::HttpsConfig { listen: cfg.listen, cert: None, key: None, sans: vec!["ecs.emulator.test".into()] };
    let files = https.cert_files(dir.path()).unwrap();
    let ca = files.ca.clone().unwrap();
    assert_eq!(ca, dir.path().join("tls/ca.pem"));
    let app = enifab::serve::router_with(model, None, enifab::openapi::Options::default()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = enifab::openapi::listener::Limits::default();
    let task = tokio::spawn(tls::serve(listener, tls::server_config(&files).unwrap(), app, limits, async move {
        let _ = stopped.await;
    }));

    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    for name in ["localhost", "ecs.emulator.test"] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut tls = connector.connect(server_name, tcp).await.unwrap();
        let req = format!(
            "GET /?Action=DescribeInstanceTypes&Version={ECS}&RegionId={REGION}&InstanceTypes.1=ecs.g7.xlarge HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tls.read_to_string(&mut raw).await.unwrap();
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        let body = &raw[raw.find("\r\n\r\n").unwrap() + 4..];
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["InstanceTypes"]["InstanceType"][0]["EniTotalQuantity"], 20);
    }
    // A name the certificate does not carry is refused by the client.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let wrong = rustls::pki_types::ServerName::try_from("ecs.aliyuncs.com".to_string()).unwrap();
    assert!(connector.connect(wrong, tcp).await.is_err());
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// What hyper refuses before the router sees it (a URI or head too long, a byte a header may not
/// hold) answers in the cloud's error shape too, with the status hyper chose.
#[tokio::test]
async fn requests_too_long_or_malformed_to_read_get_the_clouds_error_shape() {
    let server = Server::start(false).await;
    let long = format!("/?Action=DescribeVpcs&Version={VPC}&RegionId={REGION}&VpcName={}", "a".repeat(70_000));
    server.raw("GET", &long, &[], b"").await.error(414, "RequestURITooLong");
    let big = "b".repeat(512 * 1024);
    server.raw("POST", "/", &[("X-Big", &big)], b"").await.error(431, "RequestHeaderFieldsTooLarge");
    server.raw("POST", "/", &[("X-Bad", "a\u{1}b")], b"").await.error(400, "BadRequest");
    // The router's own answers are left alone.
    server.form(VPC, "DescribeVpcs", &[]).await.ok();
}

/// A dry run joined over HTTP (`x-enifab-dry-run`) changes its copy only; once it is closed, a
/// call still naming it is refused, not run for real.
#[tokio::test]
async fn a_dry_run_over_http_changes_only_its_copy() {
    let server = Server::start(false).await;
    let id = server.form(EMULATOR, "BeginDryRun", &[]).await.ok()["DryRunId"].as_str().unwrap().to_string();
    let form = |body: &str| format!("Action={body}&RegionId={REGION}");
    let headers = [("Content-Type", "application/x-www-form-urlencoded"), ("x-enifab-dry-run", id.as_str())];
    let create = form(&format!("CreateVpc&Version={VPC}&CidrBlock=10.0.0.0/8"));
    server.raw("POST", "/", &headers, create.as_bytes()).await.ok();
    let count = |v: Value| v["TotalCount"].as_i64().unwrap();
    let seen = server.raw("POST", "/", &headers, form(&format!("DescribeVpcs&Version={VPC}")).as_bytes()).await;
    assert_eq!(count(seen.ok()), 1, "the copy has it");
    assert_eq!(count(server.form(VPC, "DescribeVpcs", &[]).await.ok()), 0, "the region does not");
    server.form(EMULATOR, "EndDryRun", &[("DryRunId", &id)]).await.ok();
    server.raw("POST", "/", &headers, create.as_bytes()).await.error(400, "InvalidParameter");
    assert_eq!(count(server.form(VPC, "DescribeVpcs", &[]).await.ok()), 0);
}
