//! The shim inside a container (root), with namespaces standing in for Docker: an "emulator"
//! namespace (the emulator binary, its API on 192.0.2.1 and its fabric on 192.0.2.2, both off
//! the container network, as on another host) joined by a veth to a "container" namespace whose
//! `eth0` is that veth, 172.31.0.2/24, default via 172.31.0.1 — what Docker gives a container.
//! `enifab-shim --netns /proc/self/ns/net --underlay underlay0` runs inside the container: it
//! must move `eth0` aside, keep the emulator reachable through it (the fabric's address is only
//! learnt at registration, and must be routed before eth0's default route points into the VPC,
//! or the relay's own datagrams would go round through eth0), and make the instance: eth0/eth1
//! as TAPs, Geneve through underlay0, the metadata service. A shim killed and started again in
//! the same container finds underlay0 in place. Everything lives in the test's namespaces.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use enifab_proto::v1 as pb;
use enifab_proto::v1::ecs_client::EcsClient;
use enifab_proto::v1::vpc_client::VpcClient;
use enifab_shim::driver::netns::run_in;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::{Netns, REGION, enifab_binary, eventually, privileged};
use tonic::transport::{Channel, Endpoint};

const API: &str = "192.0.2.1:50051";
const FABRIC: &str = "192.0.2.2:6081";

/// A child process (the emulator or a shim, run with `ip netns exec`, which execs: the child is
/// the program); SIGKILL on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(ns: &Netns, program: &Path, args: &[&str], log: PathBuf) -> Proc {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap())
            .spawn()
            .expect("spawn");
        Proc { child, log }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A gRPC channel to `addr` over TCP connections opened inside the namespace `ns`.
async fn channel_in(ns: PathBuf, addr: SocketAddr) -> Channel {
    let connector = tower::service_fn(move |_| {
        let ns = ns.clone();
        async move {
            let s = run_in(&ns, move || Ok(TcpStream::connect_timeout(&addr, Duration::from_secs(1))))
                .map_err(std::io::Error::other)??;
            s.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(TokioIo::new(tokio::net::TcpStream::from_std(s)?))
        }
    });
    for _ in 0..200 {
        if let Ok(ch) = Endpoint::from_static("http://emulator.local").connect_with_connector(connector.clone()).await {
            return ch;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the emulator did not come up on {addr}");
}

fn ok<T>(r: Result<tonic::Response<T>, tonic::Status>) -> T {
    r.expect("API call").into_inner()
}

/// A datagram to the vSwitch gateway makes the kernel resolve it on eth0: the fabric answers
/// ARP for every address (proxy ARP, `ee:ff:ff:ff:ff:ff`), and the answer only comes back if
/// the relay's Geneve datagrams go out and in through the underlay.
fn gateway_reached(ns: &Netns) -> bool {
    let _ = run_in(&ns.path(), || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let _ = s.send_to(b"probe", "10.0.4.253:9");
        Ok(())
    });
    eventually(3, || {
        let Value::Array(n) = ns.ip_json(&["neigh", "show", "10.0.4.253", "dev", "eth0"]) else { return None };
        n.iter().any(|e| e["lladdr"] == "ee:ff:ff:ff:ff:ff").then_some(())
    })
    .is_some()
}

fn metadata(ns: &Path, path: &str) -> Option<String> {
    let path = path.to_string();
    run_in(ns, move || {
        let text = (|| {
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::from(([100, 100, 100, 200], 80)), Duration::from_secs(1))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(s, "GET {path} HTTP/1.1\r\nHost: 100.100.100.200\r\nConnection: close\r\n\r\n")?;
            let mut t = String::new();
            s.read_to_string(&mut t)?;
            Ok::<_, std::io::Error>(t)
        })();
        Ok(text.ok().and_then(|t| t.split_once("\r\n\r\n").map(|(_, b)| b.to_string())))
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shim_inside_a_container_moves_dockers_eth0_aside() {
    if !privileged("a_shim_inside_a_container_moves_dockers_eth0_aside") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = tokio::task::spawn_blocking(enifab_binary).await.unwrap();

    // Docker's part: the emulator's host and the container, one veth between them.
    let (emu_ns, ctr) = (Netns::new("cemu"), Netns::new("cctr"));
    emu_ns.ip(&["link", "add", "veth-ctr", "type", "veth", "peer", "name", "eth0", "netns", &ctr.name]);
    emu_ns.ip(&["addr", "add", "172.31.0.1/24", "dev", "veth-ctr"]);
    emu_ns.ip(&["link", "set", "veth-ctr", "up"]);
    emu_ns.ip(&["addr", "add", "192.0.2.1/32", "dev", "lo"]);
    emu_ns.ip(&["addr", "add", "192.0.2.2/32", "dev", "lo"]);
    ctr.ip(&["addr", "add", "172.31.0.2/24", "dev", "eth0"]);
    ctr.ip(&["link", "set", "eth0", "up"]);
    ctr.ip(&["route", "add", "default", "via", "172.31.0.1", "dev", "eth0"]);

    let help = Command::new(&bin).args(["serve", "--help"]).output().unwrap();
    let mut serve = vec!["serve", "--no-delays", "--listen", API, "--fabric-listen", FABRIC, "--data-dir"];
    let data = dir.path().join("data").display().to_string();
    serve.push(&data);
    // Beyond loopback the emulator wants credentials; this test is about routes, not keys.
    if String::from_utf8_lossy(&help.stdout).contains("--insecure") {
        serve.push("--insecure");
    }
    let emu = Proc::spawn(&emu_ns, &bin, &serve, dir.path().join("enifab.log"));
    let ch = channel_in(emu_ns.path(), API.parse().unwrap()).await;
    let (mut ecs, mut vpc) = (EcsClient::new(ch.clone()), VpcClient::new(ch));
    let (vsw, sg) = support::network(&mut ecs, &mut vpc).await;
    let instance = ok(ecs
        .create_instance(pb::CreateInstanceRequest {
            region_id: REGION.into(),
            instance_type: "ecs.g7.xlarge".into(),
            v_switch_id: vsw,
            security_group_ids: vec![sg],
            private_ip_address: "10.0.4.22".into(),
            ..Default::default()
        })
        .await)
    .instance_id;

    // The shim as a container's entrypoint runs it.
    let socket = dir.path().join("shim.sock").display().to_string();
    let shim_args = [
        "--endpoint",
        API,
        "--instance-id",
        &instance,
        "--netns",
        "/proc/self/ns/net",
        "--underlay",
        "underlay0",
        "--geneve-listen",
        "172.31.0.2:6081",
        "--control-socket",
        &socket,
    ];
    let shim_bin = PathBuf::from(env!("CARGO_BIN_EXE_enifab-shim"));
    let mut shim = Proc::spawn(&ctr, &shim_bin, &shim_args, dir.path().join("shim.log"));
    let up = eventually(20, || ctr.ipv4_addrs("eth0").contains(&"10.0.4.22/24".to_string()).then_some(()));
    assert!(up.is_some(), "the primary ENI (shim log: {}\nemulator log: {})", shim.log(), emu.log());
    let eth0 = ctr.link("eth0").unwrap();
    assert_eq!(eth0["linkinfo"]["info_kind"], "tun", "eth0 is the shim's TAP now");
    let ul = ctr.link("underlay0").expect("Docker's interface, renamed");
    assert_eq!(ul["linkinfo"]["info_kind"], "veth");
    assert_eq!(ctr.ipv4_addrs("underlay0"), ["172.31.0.2/24"]);
    let want = [
        "10.0.4.0/24 dev eth0",
        "172.31.0.0/24 dev underlay0",
        "192.0.2.1 via 172.31.0.1 dev underlay0",
        "192.0.2.2 via 172.31.0.1 dev underlay0",
        "default via 10.0.4.253 dev eth0",
    ];
    assert_eq!(ctr.routes(), want, "the API and the fabric through the underlay, the rest into the VPC");

    // Frames cross: the vSwitch's proxy ARP answers eth0 through the relay and the underlay.
    assert!(gateway_reached(&ctr), "the fabric answers (log: {})", shim.log());
    let p = ctr.path();
    let id = tokio::task::spawn_blocking(move || eventually(5, || metadata(&p, "/latest/meta-data/instance-id")))
        .await
        .unwrap();
    assert_eq!(id.as_deref(), Some(instance.as_str()), "the metadata service answers in the container");

    // Killed and started again in the same container: underlay0 is found in place.
    shim.kill9();
    let first_log = shim.log();
    assert!(ctr.link("eth0").is_none(), "the TAP died with the shim");
    let shim = Proc::spawn(&ctr, &shim_bin, &shim_args, dir.path().join("shim-again.log"));
    let up = eventually(20, || ctr.ipv4_addrs("eth0").contains(&"10.0.4.22/24".to_string()).then_some(()));
    assert!(up.is_some(), "back (log: {})", shim.log());
    assert_eq!(ctr.routes(), want);
    assert!(shim.log().contains("underlay0 is in place"), "{}", shim.log());
    let again = shim.log();
    assert!(!again.contains("ip link set eth0 name") && !again.contains("ip route del"), "no churn: {again}");
    // Shown with --nocapture (or on failure).
    eprintln!("shim log, first run:\n{}\nshim log, restarted:\n{}", first_log, shim.log());
    drop(shim);
    drop(emu);
}
