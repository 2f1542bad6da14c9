//! The official Python SDKs (alibabacloud-ecs20140526, alibabacloud-vpc20160428 and
//! alibabacloud-slb20140515 on alibabacloud-tea-openapi, from PyPI) against the real `enifab
//! serve` binary with signatures required: a trunk pod's life as Terway drives it, over HTTP
//! (ACS3-HMAC-SHA256 and HMAC-SHA1) and over HTTPS with the CA enifab generated; and one
//! LoadBalancer Service's life as the cloud-controller-manager drives it. What the SDKs made is
//! then checked over gRPC.
//!
//! The scripts are `tests/sdk/terway_sequence.py` and `tests/sdk/ccm_slb_sequence.py`. The
//! interpreter is `$ENIFAB_SDK_PYTHON` (the venv `.ci/run` builds from
//! `tests/sdk/requirements.txt`) or `python3`. Where the SDKs are not installed the tests say so
//! and pass, unless `ENIFAB_REQUIRE_SDK_TESTS=1` (CI sets it).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use enifab_proto::v1 as pb;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// gRPC clients that sign with the server's AccessKey (every face requires it).
async fn signed_clients(endpoint: &str) -> enifab::cli::Clients {
    let key = enifab::cli::AccessKey { id: AK.into(), secret: SECRET.into() };
    enifab::cli::Clients::signed(enifab::cli::connect(endpoint).await.unwrap(), Some(key))
}

fn python() -> String {
    std::env::var("ENIFAB_SDK_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Whether the SDKs can be imported; when not, whether that fails the test (in CI) or skips it.
fn sdks_installed() -> bool {
    let py = python();
    let ok = Command::new(&py)
        .args([
            "-c",
            "import alibabacloud_ecs20140526, alibabacloud_vpc20160428, alibabacloud_slb20140515, alibabacloud_tea_openapi",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let required = std::env::var("ENIFAB_REQUIRE_SDK_TESTS").is_ok_and(|v| v == "1");
        assert!(!required, "{py} cannot import the Alibaba Cloud SDKs (pip install -r tests/sdk/requirements.txt)");
        eprintln!("skipped: {py} cannot import the Alibaba Cloud SDKs (pip install -r tests/sdk/requirements.txt)");
    }
    ok
}

const AK: &str = "LTAI5tSdkTestKey";
const SECRET: &str = "sdk-test-secret";

/// `enifab serve` with signatures required (and HTTPS), on free ports; killed when dropped.
struct Server {
    _child: Killed,
    _dir: tempfile::TempDir,
    plain: String,
    https: String,
    ca: PathBuf,
    data_dir: PathBuf,
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_enifab"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--fabric-listen",
                "127.0.0.1:0",
                "--https-listen",
                "127.0.0.1:0",
            ])
            .args(["--attach-delay-ms", "100", "--detach-delay-ms", "100", "--delete-delay-ms", "100"])
            .arg("--data-dir")
            .arg(dir.path())
            .env("ENIFAB_ACCESS_KEY_ID", AK)
            .env("ENIFAB_ACCESS_KEY_SECRET", SECRET)
            .env_remove("ENIFAB_ACCESS_KEY_FILE")
            .env_remove("ENIFAB_PUBLIC_POOL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the enifab binary runs"),
    );
    // Read the addresses off stderr, and keep draining it so the child never blocks.
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut plain, mut https, mut ca) = (None, None, None);
    let mut log = Vec::new();
    while plain.is_none() || https.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no addresses; stderr:\n{}", log.join("\n")));
        if let Some((_, rest)) = line.split_once("serving on ") {
            plain = rest.split([' ', ',']).next().map(str::to_string);
        }
        if let Some((_, rest)) = line.split_once("HTTPS (OpenAPI and gRPC) on ") {
            let (addr, trust) = rest.split_once("; clients must trust ").expect("the HTTPS line names the CA");
            https = Some(addr.to_string());
            ca = Some(PathBuf::from(trust.trim()));
        }
        log.push(line);
    }
    let data_dir = dir.path().to_path_buf();
    Server { _child: child, _dir: dir, plain: plain.unwrap(), https: https.unwrap(), ca: ca.unwrap(), data_dir }
}

/// Run `tests/sdk/<script>` with `env`; its output, which must end in "N passed, 0 failed".
async fn run_script(script: &str, env: Vec<(&'static str, String)>) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/sdk").join(script);
    let out: Output = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(python());
        cmd.arg(&script).env("ENIFAB_ACCESS_KEY_ID", AK).env("ENIFAB_ACCESS_KEY_SECRET", SECRET);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{stdout}");
    assert!(out.status.success(), "the SDK run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().last().is_some_and(|l| l.ends_with("passed, 0 failed")), "{stdout}");
    stdout
}

/// The JSON line a script prints before its count: what it made.
fn made(stdout: &str) -> serde_json::Value {
    stdout.lines().rev().nth(1).and_then(|l| serde_json::from_str(l).ok()).expect("the ids line")
}

#[tokio::test]
async fn the_official_python_sdks_drive_a_trunk_pods_life() {
    if !sdks_installed() {
        return;
    }
    let server = start_server();
    assert_eq!(server.ca, server.data_dir.join("tls").join("ca.pem"));
    let https_port = server.https.rsplit_once(':').unwrap().1.to_string();
    let stdout = run_script(
        "terway_sequence.py",
        vec![
            ("ENIFAB_ENDPOINT", server.plain.clone()),
            ("ENIFAB_HTTPS_ENDPOINT", format!("localhost:{https_port}")),
            ("ENIFAB_CA", server.ca.display().to_string()),
        ],
    )
    .await;

    // What the SDKs made is the same model the gRPC face serves.
    let made = made(&stdout);
    let mut ecs = signed_clients(&server.plain).await.ecs;
    let trunk = made["trunk"].as_str().unwrap().to_string();
    let r = ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            network_interface_id: vec![trunk.clone(), made["member"].as_str().unwrap().to_string()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let set = r.network_interface_sets.unwrap().network_interface_set;
    assert_eq!(set.len(), 1, "the member is deleted, the trunk stays: {set:?}");
    assert_eq!(
        (set[0].network_interface_id.as_str(), set[0].r#type.as_str(), set[0].status.as_str()),
        (trunk.as_str(), "Trunk", "InUse")
    );
    assert_eq!(set[0].instance_id, made["instance"].as_str().unwrap());
}

/// Dual stack and prefix mode as Terway's newer node pools call them, with the SDKs' own request
/// models; then the same ENI seen through gRPC, so both faces agree.
#[tokio::test]
async fn the_official_python_sdks_drive_dual_stack_and_prefixes() {
    if !sdks_installed() {
        return;
    }
    let server = start_server();
    let stdout = run_script("dual_stack_sequence.py", vec![("ENIFAB_ENDPOINT", server.plain.clone())]).await;
    let made = made(&stdout);
    let mut ecs = signed_clients(&server.plain).await.ecs;
    let eni = ecs
        .describe_network_interface_attribute(pb::DescribeNetworkInterfaceAttributeRequest {
            network_interface_id: made["eni"].as_str().unwrap().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let v6: Vec<String> = eni.ipv6_sets.unwrap().ipv6_set.into_iter().map(|s| s.ipv6_address).collect();
    let p4: Vec<String> = eni.ipv4_prefix_sets.unwrap().ipv4_prefix_set.into_iter().map(|s| s.ipv4_prefix).collect();
    let want = |k: &str| -> Vec<String> { serde_json::from_value(made[k].clone()).unwrap() };
    assert_eq!(v6, want("ipv6"));
    assert_eq!(p4, want("ipv4_prefixes"));
}

#[tokio::test]
async fn the_official_slb_sdk_drives_the_ccms_reconcile_of_a_service() {
    if !sdks_installed() {
        return;
    }
    let server = start_server();
    let stdout = run_script("ccm_slb_sequence.py", vec![("ENIFAB_ENDPOINT", server.plain.clone())]).await;

    // Over gRPC: the load balancers the SDK made and deleted are gone, the VPC it made is there.
    let made = made(&stdout);
    let enifab::cli::Clients { mut slb, mut vpc, .. } = signed_clients(&server.plain).await;
    for lb in made["load_balancers"].as_array().unwrap() {
        let st = slb
            .describe_load_balancer_attribute(pb::DescribeLoadBalancerAttributeRequest {
                load_balancer_id: lb.as_str().unwrap().to_string(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(enifab::grpc::status::cloud_error(&st).unwrap().0, "InvalidLoadBalancerId.NotFound");
    }
    let left = slb.describe_load_balancers(pb::DescribeLoadBalancersRequest::default()).await.unwrap().into_inner();
    assert_eq!(left.total_count, 0, "{left:?}");
    let attr = vpc
        .describe_vpc_attribute(pb::DescribeVpcAttributeRequest {
            vpc_id: made["vpc"].as_str().unwrap().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(attr.cidr_block, "10.0.0.0/8");
}
