//! Shims against an emulator that requires credentials (root): the real `enifab serve` binary
//! with an AccessKey, two nodes, and shims that sign as their nodes — one given its node token,
//! one given the AccessKey (it asks for its token itself), one with nothing (it never gets in).
//! The first binds its Geneve socket to the wildcard address and registers the address that
//! routes to the emulator. Traffic flows between the two, and again after the emulator is
//! killed and started anew (the node key is in its data directory, so the tokens still hold).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use enifab::cli::{AccessKey as CliKey, Clients};
use enifab_proto::v1 as pb;
use enifab_shim::control::{AccessKey, ControlOptions};
use enifab_shim::{Shim, ShimOptions};
use support::{EmuProcess, Netns, REGION, enifab_binary, eventually, free_port, ping, privileged};

const AK: &str = "LTAI5tShimTestKey";
const SECRET: &str = "shim-test-secret";

/// `enifab serve` requiring [`AK`], as a child process (so that it can be killed and started
/// again on the same port and data directory).
fn serve(data_dir: &Path, grpc: SocketAddr, log: &Path) -> EmuProcess {
    let key = [("ENIFAB_ACCESS_KEY_ID", AK), ("ENIFAB_ACCESS_KEY_SECRET", SECRET)];
    EmuProcess::spawn(&enifab_binary(), data_dir, grpc, log, &key)
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

/// A VPC with one vSwitch (10.0.4.0/24) and one security group: (vSwitch, group).
async fn network(c: &Clients) -> (String, String) {
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
    (vsw, sg)
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

/// One echo from inside `ns` to `ip` answered.
fn pings(ns: &Netns, ip: &str) -> bool {
    !ping(&ns.path(), None, ip.parse().unwrap(), 1, Duration::from_millis(500)).is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shims_sign_as_their_nodes_and_survive_an_emulator_restart() {
    if !privileged("shims_sign_as_their_nodes_and_survive_an_emulator_restart") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let (data, log) = (dir.path().join("data"), dir.path().join("serve.log"));
    let emu = serve(&data, grpc, &log);
    let c = admin(grpc).await;
    let (vsw, sg) = network(&c).await;
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
        fast_path: None,
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
    let emu = serve(&data, grpc, &log);
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

/// One CNI invocation with `env` added to a clean environment: (success, stdout as JSON).
fn cni(command: &str, netns: &Path, conf: &serde_json::Value, env: &[(&str, &str)]) -> (bool, serde_json::Value) {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_enifab-cni"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "signed-pod")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_NETNS", netns)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("run enifab-cni");
    let _ = child.stdin.take().unwrap().write_all(conf.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json)
}

/// The CNI plugin's cloud calls (the member ENI, its attachment) are AccessKey calls: refused
/// unsigned or badly signed with the cloud's code, served when signed with the key from the
/// environment or from the configuration's `accessKeyFile`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cni_plugin_signs_its_cloud_calls() {
    if !privileged("the_cni_plugin_signs_its_cloud_calls") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let _emu = serve(&dir.path().join("data"), grpc, &dir.path().join("serve.log"));
    let c = admin(grpc).await;
    let (vsw, sg) = network(&c).await;
    let node_id = instance(&c, &vsw, &sg, "10.0.4.22").await;
    let trunk = c
        .ecs
        .clone()
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: vsw.clone(),
            security_group_ids: vec![sg.clone()],
            instance_type: "Trunk".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .network_interface_id;
    c.ecs
        .clone()
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: node_id.clone(),
            network_interface_id: trunk,
            ..Default::default()
        })
        .await
        .unwrap();
    let (node, pod) = (Netns::new("crcni"), Netns::new("crpod"));
    let socket = dir.path().join("shim.sock");
    let key = AccessKey { id: AK.into(), secret: SECRET.into() };
    let shim = Shim::start_with(
        ShimOptions {
            endpoint: grpc.to_string(),
            instance_id: node_id.clone(),
            netns: node.name.clone(),
            control_socket: Some(socket.clone()),
            geneve_listen: "127.0.0.1:0".parse().unwrap(),
            metadata: None,
            external_address: None,
            underlay: None,
            cni_state_dir: None,
            fast_path: None,
        },
        ControlOptions { access_key: Some(key), ..Default::default() },
    )
    .unwrap();
    assert!(eventually(20, || node.link("eth1")).is_some(), "the shim did not plug the trunk in");

    let mut conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "signed", "type": "enifab-cni",
        "endpoint": grpc.to_string(), "instanceId": node_id, "nodeNetns": node.path(),
        "shimSocket": socket, "datapath": "veth", "vSwitchId": vsw, "securityGroupIds": [sg],
        "stateDir": dir.path().join("cni-state"),
    });
    let (added, out) = cni("ADD", &pod.path(), &conf, &[]);
    assert!(!added);
    assert_eq!((&out["code"], &out["msg"]), (&100.into(), &"MissingAccessKeyId".into()), "{out}");
    let wrong = [("ENIFAB_ACCESS_KEY_ID", AK), ("ENIFAB_ACCESS_KEY_SECRET", "not-the-secret")];
    let (_, out) = cni("ADD", &pod.path(), &conf, &wrong);
    assert_eq!(out["msg"], "SignatureDoesNotMatch", "{out}");
    let half = [("ENIFAB_ACCESS_KEY_ID", AK)];
    let (_, out) = cni("ADD", &pod.path(), &conf, &half);
    assert_eq!(out["code"], 7, "an AccessKeyId without its secret is a configuration error: {out}");

    let right = [("ENIFAB_ACCESS_KEY_ID", AK), ("ENIFAB_ACCESS_KEY_SECRET", SECRET)];
    let (added, out) = cni("ADD", &pod.path(), &conf, &right);
    assert!(added, "signed from the environment: {out}");
    assert_eq!(out["ips"][0]["address"].as_str().map(|a| a.starts_with("10.0.4.")), Some(true), "{out}");

    // DEL with the key from a file named in the configuration, nothing in the environment.
    let keys = dir.path().join("access-key");
    std::fs::write(&keys, format!("# the cluster's key\n{AK} {SECRET}\n")).unwrap();
    conf["accessKeyFile"] = serde_json::json!(keys);
    let (deleted, out) = cni("DEL", &pod.path(), &conf, &[]);
    assert!(deleted, "signed from accessKeyFile: {out}");
    let members = c
        .ecs
        .clone()
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            region_id: REGION.into(),
            instance_id: node_id,
            r#type: "Member".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .total_count;
    assert_eq!(members, 0, "DEL released the member ENI");
    shim.shutdown().await;
}
