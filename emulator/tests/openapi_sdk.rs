//! The official Python SDKs (alibabacloud-ecs20140526, alibabacloud-vpc20160428 on
//! alibabacloud-tea-openapi, from PyPI) drive a trunk pod's life against the real `enifab serve`
//! binary with signatures required, over HTTP (ACS3-HMAC-SHA256 and HMAC-SHA1) and over HTTPS
//! with the CA enifab generated; then what they made is checked over gRPC.
//!
//! The script is `tests/sdk/terway_sequence.py`. The interpreter is `$ENIFAB_SDK_PYTHON` (the
//! venv `.ci/run` builds from `tests/sdk/requirements.txt`) or `python3`. Where the SDKs are not
//! installed the test says so and passes, unless `ENIFAB_REQUIRE_SDK_TESTS=1` (CI sets it).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

fn python() -> String {
    std::env::var("ENIFAB_SDK_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn sdks_installed(py: &str) -> bool {
    Command::new(py)
        .args(["-c", "import alibabacloud_ecs20140526, alibabacloud_vpc20160428, alibabacloud_tea_openapi"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn the_official_python_sdks_drive_a_trunk_pods_life() {
    let py = python();
    if !sdks_installed(&py) {
        let required = std::env::var("ENIFAB_REQUIRE_SDK_TESTS").is_ok_and(|v| v == "1");
        assert!(!required, "{py} cannot import the Alibaba Cloud SDKs (pip install -r tests/sdk/requirements.txt)");
        eprintln!("skipped: {py} cannot import the Alibaba Cloud SDKs (pip install -r tests/sdk/requirements.txt)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ak, secret) = ("LTAI5tSdkTestKey", "sdk-test-secret");
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
            .env("ENIFAB_ACCESS_KEY_ID", ak)
            .env("ENIFAB_ACCESS_KEY_SECRET", secret)
            .env_remove("ENIFAB_ACCESS_KEY_FILE")
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
    let (plain, https, ca) = (plain.unwrap(), https.unwrap(), ca.unwrap());
    assert_eq!(ca, dir.path().join("tls").join("ca.pem"));
    let https_port = https.rsplit_once(':').unwrap().1.to_string();

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/sdk/terway_sequence.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(&script)
            .env("ENIFAB_ENDPOINT", &plain)
            .env("ENIFAB_HTTPS_ENDPOINT", format!("localhost:{https_port}"))
            .env("ENIFAB_CA", &ca)
            .env("ENIFAB_ACCESS_KEY_ID", ak)
            .env("ENIFAB_ACCESS_KEY_SECRET", secret)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "the SDK run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().last().is_some_and(|l| l.ends_with("passed, 0 failed")), "{stdout}");

    // What the SDKs made is the same model the gRPC face serves.
    let made: serde_json::Value =
        stdout.lines().rev().nth(1).and_then(|l| serde_json::from_str(l).ok()).expect("the ids line");
    let plain = log.iter().find_map(|l| l.split_once("serving on ")).unwrap().1.split([' ', ',']).next().unwrap();
    let mut ecs = pb::ecs_client::EcsClient::new(enifab::cli::connect(plain).await.unwrap());
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
