//! Shims against an emulator that requires credentials (root): the real `enifab serve` binary
//! with an AccessKey, two nodes, and shims that sign as their nodes — one given its node token,
//! one given the AccessKey (it asks for its token itself), one with nothing (it never gets in).
//! The first binds its Geneve socket to the wildcard address and registers the address that
//! routes to the emulator. Traffic flows between the two, and again after the emulator is
//! killed and started anew (the node key is in its data directory, so the tokens still hold).

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use enifab::cli::{AccessKey as CliKey, Clients};
use enifab_proto::v1 as pb;
use enifab_shim::control::{AccessKey, ControlOptions};
use enifab_shim::{Shim, ShimOptions};
use support::{Netns, REGION, eventually, privileged};

const AK: &str = "LTAI5tShimTestKey";
const SECRET: &str = "shim-test-secret";

/// `enifab serve` requiring [`AK`], as a child process (so that it can be killed and started
/// again on the same port and data directory).
struct EmuProcess(Child);

impl EmuProcess {
    fn spawn(data_dir: &Path, grpc: SocketAddr, log: &Path) -> EmuProcess {
        let child = Command::new(enifab_binary())
            .args(["serve", "--no-delays", "--listen", &grpc.to_string(), "--fabric-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("ENIFAB_ACCESS_KEY_ID", AK)
            .env("ENIFAB_ACCESS_KEY_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
            .spawn()
            .expect("spawn enifab serve");
        EmuProcess(child)
    }
}

impl Drop for EmuProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `enifab` binary next to this test's, built if needed.
fn enifab_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap());
    build.args(["build", "--quiet", "-p", "enifab", "--bin", "enifab"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    assert!(build.status().expect("run cargo build").success(), "cargo build -p enifab failed");
    dir.join("enifab")
}

/// Clients signed with the AccessKey, once the emulator answers.
async fn admin(grpc: SocketAddr) -> Clients {
    for _ in 0..200 {
        if let Ok(ch) = enifab::cli::connect(&grpc.to_string()).await {
            return Clients::signed(ch, Some(CliKey { id: AK.into(), secret: SECRET.into() }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("enifab serve did not come up on {grpc}");
}

async fn instance(c: &Clients, vsw: &str, sg: &str, ip: &str) -> String {
    let req = pb::CreateInstanceRequest {
        region_id: REGION.into(),
        instance_type: "ecs.g7.xlarge".into(),
        v_switch_id: vsw.into(),
        security_group_ids: vec![sg.into()],
        private_ip_address: ip.into(),
        ..Default::default()
    };
    c.ecs.clone().create_instance(req).await.unwrap().into_inner().instance_id
}

fn pings(ns: &Netns, ip: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &ns.name, "ping", "-c", "1", "-W", "1", ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shims_sign_as_their_nodes_and_survive_an_emulator_restart() {
    if !privileged("shims_sign_as_their_nodes_and_survive_an_emulator_restart") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("serve.log"));
    let emu = EmuProcess::spawn(&data, grpc, &log);
    let c = admin(grpc).await;
    let vpc_id = c
        .vpc
        .clone()
        .create_vpc(pb::CreateVpcRequest {
            region_id: REGION.into(),
            cidr_block: "10.0.0.0/8".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .vpc_id;
    let vsw = c
        .vpc
        .clone()
        .create_v_switch(pb::CreateVSwitchRequest {
            region_id: REGION.into(),
            vpc_id: vpc_id.clone(),
            zone_id: "cn-hongkong-b".into(),
            cidr_block: "10.0.4.0/24".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .v_switch_id;
    let sg = c
        .ecs
        .clone()
        .create_security_group(pb::CreateSecurityGroupRequest { vpc_id, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .security_group_id;
    let (ia, ib) = (instance(&c, &vsw, &sg, "10.0.4.22").await, instance(&c, &vsw, &sg, "10.0.4.23").await);
    let token = c
        .emulator
        .clone()
        .issue_node_token(pb::IssueNodeTokenRequest { instance_id: ia.clone() })
        .await
        .unwrap()
        .into_inner()
        .node_token;

    let (na, nb) = (Netns::new("cra"), Netns::new("crb"));
    let opts = |instance: &str, ns: &Netns, listen: &str| ShimOptions {
        endpoint: grpc.to_string(),
        instance_id: instance.into(),
        netns: ns.name.clone(),
        control_socket: Some(dir.path().join(format!("{instance}.sock"))),
        geneve_listen: listen.parse().unwrap(),
        metadata: None,
        external_address: None,
        underlay: None,
        cni_state_dir: None,
    };

    // Without credentials a shim never gets its node's devices.
    let stranger = Shim::start(opts(&ia, &na, "127.0.0.1:0")).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(na.link("eth0").is_none(), "an unsigned shim registered");
    stranger.shutdown().await;

    // A with its token, on a wildcard socket; B with the AccessKey.
    let with_token = ControlOptions { node_token: Some(token), ..Default::default() };
    let shim_a = Shim::start_with(opts(&ia, &na, "0.0.0.0:0"), with_token).unwrap();
    let with_key =
        ControlOptions { access_key: Some(AccessKey { id: AK.into(), secret: SECRET.into() }), ..Default::default() };
    let shim_b = Shim::start_with(opts(&ib, &nb, "127.0.0.1:0"), with_key).unwrap();
    assert!(eventually(15, || nb.ipv4_addrs("eth0").contains(&"10.0.4.23/24".to_string()).then_some(())).is_some());
    assert!(eventually(15, || pings(&na, "10.0.4.23").then_some(())).is_some(), "A reaches B");

    // The emulator dies and comes back: the shims register again, with the same tokens.
    drop(emu);
    let emu = EmuProcess::spawn(&data, grpc, &log);
    let _ = admin(grpc).await;
    assert!(
        eventually(20, || pings(&na, "10.0.4.23").then_some(())).is_some(),
        "A reaches B after the restart; serve log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(pings(&nb, "10.0.4.22"), "and B reaches A");
    shim_a.shutdown().await;
    shim_b.shutdown().await;
    drop(emu);
}
