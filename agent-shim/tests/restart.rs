//! A node shim killed and started again (root): an emulator in this process, node A run by the
//! `enifab-shim` binary with one pod on each datapath wired by the real `enifab-cni`, node B by
//! an in-process shim as the far end. SIGKILL takes node A's TAPs (eth0, eth1, the vlan pod's
//! sub-interface) and the routes through them; a new shim for the same instance and namespace
//! must bring back the NICs from the NodeConfig and the pods from the CNI's state files within a
//! few seconds — traffic on both datapaths, eth0's address and default route, the metadata
//! service — skipping (and counting) a state file that is truncated and a pod whose namespace is
//! gone. While it runs, a second shim for the same node is refused and takes nothing.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use enifab_proto::v1 as pb;
use enifab_proto::v1::ecs_client::EcsClient;
use enifab_proto::v1::vpc_client::VpcClient;
use enifab_shim::driver::netns::run_in;
use enifab_shim::{Shim, ShimOptions};
use serde_json::{Value, json};
use support::{Emu, Netns, REGION, cni, eventually, ping, privileged, wait_ping};

/// How soon after the new shim starts everything must work again.
const REBUILT_WITHIN: Duration = Duration::from_secs(10);

fn ok<T>(r: Result<tonic::Response<T>, tonic::Status>) -> T {
    r.expect("API call").into_inner()
}

/// `enifab-shim` for node A as a child process; SIGKILL on drop.
struct ShimProcess {
    child: Child,
    log: PathBuf,
}

impl ShimProcess {
    fn spawn(args: &[String], log: PathBuf) -> ShimProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_enifab-shim"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap())
            .spawn()
            .expect("spawn enifab-shim");
        ShimProcess { child, log }
    }

    /// SIGKILL, and wait until the process is gone (its fds closed by the kernel).
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ShimProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// GET a metadata path from inside `ns`: the body of a 200 reply.
fn metadata(ns: &Path, path: &str) -> Option<String> {
    let path = path.to_string();
    run_in(ns, move || {
        let reply = (|| {
            let addr = SocketAddr::from(([100, 100, 100, 200], 80));
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(s, "GET {path} HTTP/1.1\r\nHost: 100.100.100.200\r\nConnection: close\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok::<_, std::io::Error>(text)
        })();
        Ok(reply.ok().and_then(|t| {
            let (head, body) = t.split_once("\r\n\r\n")?;
            head.starts_with("HTTP/1.1 200").then(|| body.to_string())
        }))
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_shim_rebuilds_its_node_and_pods() {
    if !privileged("a_restarted_shim_rebuilds_its_node_and_pods") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(&dir.path().join("data"), "127.0.0.1:0".parse().unwrap()).await;
    let ch = emu.channel().await;
    let (mut ecs, mut vpc) = (EcsClient::new(ch.clone()), VpcClient::new(ch));
    let (vsw, sg) = support::network(&mut ecs, &mut vpc).await;
    let mut instance = async |ip: &str| {
        ok(ecs
            .create_instance(pb::CreateInstanceRequest {
                region_id: REGION.into(),
                instance_type: "ecs.g7.xlarge".into(),
                v_switch_id: vsw.clone(),
                security_group_ids: vec![sg.clone()],
                private_ip_address: ip.into(),
                ..Default::default()
            })
            .await)
        .instance_id
    };
    let (ia, ib) = (instance("10.0.4.22").await, instance("10.0.4.23").await);
    let trunk = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: vsw.clone(),
            security_group_ids: vec![sg.clone()],
            instance_type: "Trunk".into(),
            ..Default::default()
        })
        .await)
    .network_interface_id;
    ok(ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: ia.clone(),
            network_interface_id: trunk,
            ..Default::default()
        })
        .await);

    let (na, nb, other) = (Netns::new("rsa"), Netns::new("rsb"), Netns::new("rso"));
    // What a node needs for veth pods (the lab sets the same): forwarding, no reverse-path
    // filter (replies to a pod come back on the trunk, not on eth0).
    run_in(&na.path(), || {
        for (knob, v) in
            [("ipv4/ip_forward", "1"), ("ipv4/conf/all/rp_filter", "0"), ("ipv4/conf/default/rp_filter", "0")]
        {
            std::fs::write(format!("/proc/sys/net/{knob}"), v).expect("sysctl");
        }
        Ok(())
    })
    .unwrap();
    let (pod_veth, pod_vlan) = (Netns::new("rspv"), Netns::new("rspl"));
    let shim_b = Shim::start(ShimOptions {
        endpoint: emu.grpc.to_string(),
        instance_id: ib.clone(),
        netns: nb.name.clone(),
        control_socket: Some(dir.path().join("b.sock")),
        geneve_listen: "127.0.0.1:0".parse().unwrap(),
        metadata: None,
        external_address: None,
        underlay: None,
        cni_state_dir: None,
        fast_path: None,
    })
    .unwrap();
    let state_dir = dir.path().join("cni-state");
    let socket = dir.path().join("a.sock");
    let args_a = |ns: &Netns| -> Vec<String> {
        let mut a: Vec<String> = ["--endpoint", &emu.grpc.to_string(), "--instance-id", &ia, "--netns", &ns.name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--control-socket".into(), socket.display().to_string()]);
        a.extend(["--cni-state-dir".into(), state_dir.display().to_string()]);
        a
    };
    let mut shim_a = ShimProcess::spawn(&args_a(&na), dir.path().join("shim-a.log"));
    assert!(eventually(20, || na.link("eth1")).is_some(), "node A's trunk (log: {})", shim_a.log());

    // One pod on each datapath, wired by the real plugin.
    let conf = |datapath: &str| {
        json!({
            "cniVersion": "1.0.0", "name": "enifab-restart", "type": "enifab-cni",
            "endpoint": emu.grpc.to_string(), "instanceId": ia, "nodeNetns": na.path(),
            "shimSocket": socket, "datapath": datapath, "vSwitchId": vsw,
            "securityGroupIds": [sg], "stateDir": state_dir,
        })
    };
    let (veth_ip, vlan_ip, b_ip): (Ipv4Addr, Ipv4Addr, Ipv4Addr) =
        ("10.0.4.30".parse().unwrap(), "10.0.4.31".parse().unwrap(), "10.0.4.23".parse().unwrap());
    let (ok_veth, out, _) =
        cni("ADD", "c-veth", Some(&pod_veth.path()), &format!("ENIFAB_IP={veth_ip}"), &conf("veth"));
    assert!(ok_veth, "ADD veth: {out}");
    let (ok_vlan, out, _) =
        cni("ADD", "c-vlan", Some(&pod_vlan.path()), &format!("ENIFAB_IP={vlan_ip}"), &conf("vlan"));
    assert!(ok_vlan, "ADD vlan: {out}");
    let (pv, pl, pa) = (pod_veth.path(), pod_vlan.path(), na.path());
    let both = {
        let (pv, pl) = (pv.clone(), pl.clone());
        move |within: Duration| (wait_ping(&pv, None, b_ip, within), wait_ping(&pl, None, b_ip, within))
    };
    let before = tokio::task::spawn_blocking({
        let both = both.clone();
        move || both(Duration::from_secs(10))
    })
    .await
    .unwrap();
    assert_eq!(before, (true, true), "both pods reach node B before the kill (log: {})", shim_a.log());

    // Two more records: a truncated file, and a pod on this node whose namespace is gone.
    std::fs::write(state_dir.join("c-torn.json"), b"{\"container_id\": \"c-torn\", \"member\": ").unwrap();
    let mut ghost: Value = serde_json::from_slice(&std::fs::read(state_dir.join("c-vlan.json")).unwrap()).unwrap();
    ghost["container_id"] = json!("c-ghost");
    ghost["pod_netns"] = json!(format!("/run/netns/{}-gone", pod_vlan.name));
    std::fs::write(state_dir.join("c-ghost.json"), serde_json::to_vec(&ghost).unwrap()).unwrap();

    // SIGKILL: the TAPs go with the process, and with them the node's address, its routes
    // through eth1 and the vlan pod's interface.
    shim_a.kill9();
    assert!(na.link("eth0").is_none() && na.link("eth1").is_none(), "the TAPs died with the shim");
    assert!(pod_vlan.link("eth0").is_none(), "the sub-interface died with the shim");
    let broken = tokio::task::spawn_blocking({
        let pv = pv.clone();
        move || !ping(&pv, None, b_ip, 1, Duration::from_millis(500)).is_empty()
    })
    .await
    .unwrap();
    assert!(!broken, "the veth pod is cut off while no shim runs");

    // A new shim for the same instance and namespace.
    let started = Instant::now();
    let shim_a = ShimProcess::spawn(&args_a(&na), dir.path().join("shim-a-again.log"));
    let after = tokio::task::spawn_blocking({
        let both = both.clone();
        move || both(REBUILT_WITHIN)
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(after, (true, true), "both pods reach node B again (log: {})", shim_a.log());
    assert!(took < REBUILT_WITHIN, "rebuilt in {took:?}");
    eprintln!("node and pods rebuilt, traffic back on both datapaths {took:?} after the restart");
    assert_eq!(na.ipv4_addrs("eth0"), ["10.0.4.22/24"]);
    let default = na.ip_json(&["route", "show", "default"]);
    assert_eq!((default[0]["gateway"].as_str(), default[0]["dev"].as_str()), (Some("10.0.4.253"), Some("eth0")));
    let id = tokio::task::spawn_blocking(move || eventually(5, || metadata(&pa, "/latest/meta-data/instance-id")))
        .await
        .unwrap();
    assert_eq!(id.as_deref(), Some(ia.as_str()), "the metadata service answers");
    assert_eq!(pod_vlan.ipv4_addrs("eth0"), [format!("{vlan_ip}/24")], "the sub-interface is addressed again");
    let summary = eventually(5, || shim_a.log().lines().find(|l| l.contains("pods rebuilt from")).map(String::from))
        .unwrap_or_else(|| panic!("no rebuild summary: {}", shim_a.log()));
    assert!(summary.contains("rebuilt=2 skipped=1 unreadable=1 failed=0"), "{summary}");
    assert!(shim_a.log().contains("c-ghost"), "the skipped pod is named in the log");

    // A second shim for the same node while this one runs: refused, and it takes nothing.
    let second = Command::new(env!("CARGO_BIN_EXE_enifab-shim")).args(args_a(&na)).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success() && err.contains("another enifab-shim already runs"), "{err}");
    // Same control socket, another namespace: refused too, the socket is left to its owner.
    let third = Command::new(env!("CARGO_BIN_EXE_enifab-shim")).args(args_a(&other)).output().unwrap();
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(!third.status.success() && err.contains("another shim is serving on it"), "{err}");
    assert!(other.link("eth0").is_none(), "the refused shim made nothing");
    let still = tokio::task::spawn_blocking({
        let both = both.clone();
        move || both(Duration::from_secs(5))
    })
    .await
    .unwrap();
    assert_eq!(still, (true, true), "the running shim kept its devices and frames");

    // Killed and started again at once, without waiting for the dead one to be gone: the new
    // shim waits for the namespace, and retries device names the dying one still holds.
    let mut shim_a = shim_a;
    let _ =
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim_a.child.id() as i32), nix::sys::signal::Signal::SIGKILL);
    let quick = ShimProcess::spawn(&args_a(&na), dir.path().join("shim-a-quick.log"));
    let started = Instant::now();
    let after = tokio::task::spawn_blocking(move || both(REBUILT_WITHIN)).await.unwrap();
    assert_eq!(after, (true, true), "back again after a quick restart (log: {})", quick.log());
    eprintln!("quick restart: traffic back on both datapaths after {:?}", started.elapsed());
    shim_a.kill9();
    // Shown with --nocapture (or on failure).
    eprintln!("log of the quick restart:\n{}", quick.log());
    drop(quick);
    shim_b.shutdown().await;
}
