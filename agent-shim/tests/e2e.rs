//! End to end (root): a real emulator in this process (gRPC on 127.0.0.1, fabric UDP on
//! 127.0.0.1), two nodes created through its API, two shims — as child processes of the
//! `enifab-shim` binary or in-process — each turning its own namespace into one instance, and
//! real traffic between the namespaces: ICMP echo, a TCP stream, a trunk member's sub-interface
//! and Terway-style source-tagged traffic on the trunk. Also: the shims survive an emulator
//! restart, and SIGTERM removes their devices.
//!
//! `bench_two_nodes` and `bench_kernel_vxlan_baseline` (ignored) measure TCP throughput,
//! small-packet rate and latency through enifab and, for reference, through kernel VXLAN:
//! `cargo test --release -p enifab-shim --test e2e -- --ignored --nocapture --test-threads 1 bench`
//! (`BENCH_SECS`, `BENCH_ONLY=tcp,pps,rr,icmp`, `BENCH_DEBUG=1` for device and relay counters).

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use enifab_proto::v1 as pb;
use enifab_proto::v1::ecs_client::EcsClient;
use enifab_proto::v1::shim_client::ShimClient;
use enifab_proto::v1::vpc_client::VpcClient;
use enifab_shim::driver::netns::run_in;
use enifab_shim::{Shim, ShimOptions};
use hyper_util::rt::TokioIo;
use support::{Emu, EmuProcess, Netns, REGION, enifab_binary, eventually, free_port, ping, privileged, wait_ping};
use tonic::transport::{Channel, Endpoint};

// ---- the cloud side -------------------------------------------------------------------------

struct Cloud {
    ecs: EcsClient<Channel>,
    node_vsw: String,
    pod_vsw: String,
    sg: String,
}

impl Cloud {
    /// VPC 10.0.0.0/8, node vSwitch 10.0.4.0/24, pod vSwitch 10.0.64.0/22, one basic group
    /// (members of a basic group reach each other).
    async fn build(ch: Channel) -> Cloud {
        let mut vpc = VpcClient::new(ch.clone());
        let mut ecs = EcsClient::new(ch);
        let vpc_id = vpc
            .create_vpc(pb::CreateVpcRequest {
                region_id: REGION.into(),
                cidr_block: "10.0.0.0/8".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .vpc_id;
        let vsw = |cidr: &str| {
            let req = pb::CreateVSwitchRequest {
                region_id: REGION.into(),
                vpc_id: vpc_id.clone(),
                zone_id: "cn-hongkong-b".into(),
                cidr_block: cidr.into(),
                ..Default::default()
            };
            let mut vpc = vpc.clone();
            async move { vpc.create_v_switch(req).await.unwrap().into_inner().v_switch_id }
        };
        let node_vsw = vsw("10.0.4.0/24").await;
        let pod_vsw = vsw("10.0.64.0/22").await;
        let sg = ecs
            .create_security_group(pb::CreateSecurityGroupRequest {
                region_id: REGION.into(),
                vpc_id: vpc_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .security_group_id;
        Cloud { ecs, node_vsw, pod_vsw, sg }
    }

    async fn instance(&mut self, ip: &str) -> String {
        self.ecs
            .create_instance(pb::CreateInstanceRequest {
                region_id: REGION.into(),
                instance_type: "ecs.g7.xlarge".into(),
                v_switch_id: self.node_vsw.clone(),
                security_group_ids: vec![self.sg.clone()],
                private_ip_address: ip.into(),
                instance_name: format!("cn-hongkong.{ip}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .instance_id
    }

    async fn eni(&mut self, vsw: &str, kind: &str) -> String {
        self.ecs
            .create_network_interface(pb::CreateNetworkInterfaceRequest {
                region_id: REGION.into(),
                v_switch_id: vsw.into(),
                security_group_ids: vec![self.sg.clone()],
                instance_type: kind.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .network_interface_id
    }

    async fn attach(&mut self, instance: &str, eni: &str, trunk: &str) {
        self.ecs
            .attach_network_interface(pb::AttachNetworkInterfaceRequest {
                region_id: REGION.into(),
                instance_id: instance.into(),
                network_interface_id: eni.into(),
                trunk_network_instance_id: trunk.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn detach(&mut self, instance: &str, eni: &str, trunk: &str) {
        self.ecs
            .detach_network_interface(pb::DetachNetworkInterfaceRequest {
                region_id: REGION.into(),
                instance_id: instance.into(),
                network_interface_id: eni.into(),
                trunk_network_instance_id: trunk.into(),
            })
            .await
            .unwrap();
    }
}

// ---- shims ----------------------------------------------------------------------------------

/// `enifab-shim` as a child process; SIGTERM (then SIGKILL) on drop.
struct ShimProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl ShimProcess {
    fn spawn(emu: SocketAddr, instance: &str, ns: &Netns, dir: &Path) -> ShimProcess {
        let log = dir.join(format!("shim-{instance}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_enifab-shim"))
            .args(["--endpoint", &emu.to_string(), "--instance-id", instance, "--netns", &ns.name])
            .arg("--control-socket")
            .arg(dir.join(format!("{instance}.sock")))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn enifab-shim");
        ShimProcess { child: Some(child), log }
    }

    /// SIGTERM, and the exit status.
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = eventually(10, || child.try_wait().ok().flatten());
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ShimProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A gRPC client of the Shim API on its Unix socket.
async fn shim_client(path: &Path) -> ShimClient<Channel> {
    let path = path.to_path_buf();
    let ch = Endpoint::from_static("http://shim.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
        }))
        .await
        .expect("connect to the shim socket");
    ShimClient::new(ch)
}

// ---- traffic --------------------------------------------------------------------------------

/// A TCP stream from `from` to `to_ip` (listener in `to`) for `secs`: bytes per second.
fn tcp_throughput(from: &Path, to: &Path, to_ip: Ipv4Addr, secs: f64) -> f64 {
    let listener = run_in(to, move || Ok(TcpListener::bind((to_ip, 0)).unwrap())).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 18];
        let mut n = 0u64;
        loop {
            match std::io::Read::read(&mut s, &mut buf) {
                Ok(0) | Err(_) => return n,
                Ok(k) => n += k as u64,
            }
        }
    });
    let mut c = run_in(from, move || {
        Ok(TcpStream::connect_timeout(&SocketAddr::from((to_ip, port)), Duration::from_secs(5)).unwrap())
    })
    .unwrap();
    let chunk = vec![0x17u8; 1 << 18];
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        std::io::Write::write_all(&mut c, &chunk).unwrap();
    }
    drop(c);
    let n = server.join().unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

/// Small UDP datagrams from `from` to `to_ip` as fast as one sender goes, for `secs`:
/// datagrams per second that arrived.
fn udp_rate(from: &Path, to: &Path, to_ip: Ipv4Addr, secs: f64) -> f64 {
    let sink = run_in(to, move || Ok(UdpSocket::bind((to_ip, 0)).unwrap())).unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let dst = sink.local_addr().unwrap();
    let counter = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut n = 0u64;
        while sink.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    let src = run_in(from, || Ok(UdpSocket::bind("0.0.0.0:0").unwrap())).unwrap();
    let start = Instant::now();
    let payload = [0u8; 18]; // 64-byte frames on the wire
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..64 {
            let _ = src.send_to(&payload, dst);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    counter.join().unwrap() as f64 / elapsed
}

/// UDP request/response between two namespaces: the median round trip over `n`.
fn udp_rtt(from: &Path, to: &Path, to_ip: Ipv4Addr, n: usize) -> Duration {
    let echo = run_in(to, move || Ok(UdpSocket::bind((to_ip, 0)).unwrap())).unwrap();
    echo.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let dst = echo.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((k, peer)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..k], peer);
        }
    });
    let c = run_in(from, || Ok(UdpSocket::bind("0.0.0.0:0").unwrap())).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut rtts = Vec::with_capacity(n);
    let mut buf = [0u8; 64];
    for i in 0..n {
        let t = Instant::now();
        c.send_to(&(i as u32).to_be_bytes(), dst).unwrap();
        if c.recv(&mut buf).is_ok() {
            rtts.push(t.elapsed());
        }
    }
    drop(c);
    server.join().unwrap();
    rtts.sort();
    rtts.get(rtts.len() / 2).copied().unwrap_or(Duration::MAX)
}

// ---- tests ----------------------------------------------------------------------------------

async fn wait_addr(ns: &Netns, dev: &str, addr: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ns.ipv4_addrs(dev).iter().any(|a| a == addr) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_talk_through_the_emulator() {
    if !privileged("two_nodes_talk_through_the_emulator") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = tokio::task::spawn_blocking(enifab_binary).await.unwrap();
    let (data, emu_log) = (dir.path().join("data"), dir.path().join("enifab.log"));
    let mut emu = EmuProcess::spawn(&bin, &data, free_port(), &emu_log, &[]);
    let mut cloud = Cloud::build(emu.channel().await).await;
    let (ia, ib) = (cloud.instance("10.0.4.22").await, cloud.instance("10.0.4.23").await);
    let (na, nb) = (Netns::new("e2ea"), Netns::new("e2eb"));
    let mut sa = ShimProcess::spawn(emu.grpc, &ia, &na, dir.path());
    let sb = ShimProcess::spawn(emu.grpc, &ib, &nb, dir.path());

    assert!(wait_addr(&na, "eth0", "10.0.4.22/24", 10).await, "node A's eth0 (log: {})", sa.log());
    assert!(wait_addr(&nb, "eth0", "10.0.4.23/24", 10).await, "node B's eth0 (log: {})", sb.log());
    assert_eq!(na.ip_json(&["route", "show", "default"])[0]["gateway"], "10.0.4.253");

    let (pa, pb_) = (na.path(), nb.path());
    let b_ip: Ipv4Addr = "10.0.4.23".parse().unwrap();
    let a_ip: Ipv4Addr = "10.0.4.22".parse().unwrap();
    let ok = tokio::task::spawn_blocking({
        let (pa, pb_) = (pa.clone(), pb_.clone());
        move || {
            let first = wait_ping(&pa, None, b_ip, Duration::from_secs(10));
            let rtts = ping(&pa, None, b_ip, 5, Duration::from_secs(1));
            let back = ping(&pb_, None, a_ip, 3, Duration::from_secs(1));
            let gw = ping(&pa, None, "10.0.4.253".parse().unwrap(), 1, Duration::from_secs(1));
            (first, rtts, back, gw)
        }
    })
    .await
    .unwrap();
    assert!(ok.0, "A pings B (log A: {}\nlog B: {})", sa.log(), sb.log());
    assert_eq!(ok.1.len(), 5, "every echo answered: {:?}", ok.1);
    assert_eq!(ok.2.len(), 3, "B pings A");
    assert_eq!(ok.3.len(), 1, "the vSwitch gateway answers ping");

    let rate = tokio::task::spawn_blocking({
        let (pa, pb_) = (pa.clone(), pb_.clone());
        move || tcp_throughput(&pa, &pb_, b_ip, 1.0)
    })
    .await
    .unwrap();
    eprintln!("TCP A→B through two shims and the emulator (debug build): {:.2} Gbit/s", rate * 8.0 / 1e9);
    assert!(rate > 1e6, "a TCP stream crosses: {rate} B/s");

    // The emulator dies (SIGKILL) and comes back on the same API port and data directory, with
    // a new fabric port: the shims re-register on their own, the devices stay, traffic resumes.
    emu.kill9();
    assert!(na.link("eth0").is_some(), "devices survive the emulator going away");
    let down = tokio::task::spawn_blocking({
        let pa = pa.clone();
        move || ping(&pa, None, b_ip, 1, Duration::from_millis(300))
    })
    .await
    .unwrap();
    assert!(down.is_empty(), "nothing answers while the VPC is down");
    let emu = EmuProcess::spawn(&bin, &data, emu.grpc, &emu_log, &[]);
    emu.channel().await;
    let resumed = tokio::task::spawn_blocking({
        let pa = pa.clone();
        move || wait_ping(&pa, None, b_ip, Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert!(resumed, "traffic resumes after the restart (log A: {})", sa.log());

    // SIGTERM: exit 0, devices removed.
    let status = sa.terminate().expect("the shim exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(na.link("eth0").is_none(), "the shim removed its devices");
    assert!(sa.log().contains("registered with the emulator"), "{}", sa.log());
    drop(emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_member_via_sub_interface_and_source_tagging() {
    if !privileged("trunk_member_via_sub_interface_and_source_tagging") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(&dir.path().join("data"), "127.0.0.1:0".parse().unwrap()).await;
    let mut cloud = Cloud::build(emu.channel().await).await;
    let (ia, ib) = (cloud.instance("10.0.4.22").await, cloud.instance("10.0.4.23").await);
    let node_vsw = cloud.node_vsw.clone();
    let pod_vsw = cloud.pod_vsw.clone();
    let trunk = cloud.eni(&node_vsw, "Trunk").await;
    cloud.attach(&ia, &trunk, "").await;
    let member = cloud.eni(&pod_vsw, "").await;
    cloud.attach(&ia, &member, &trunk).await;
    let (na, nb, pod) = (Netns::new("tma"), Netns::new("tmb"), Netns::new("tmpod"));
    let opts = |instance: &str, ns: &Netns| ShimOptions {
        endpoint: emu.grpc.to_string(),
        instance_id: instance.into(),
        netns: ns.name.clone(),
        control_socket: Some(dir.path().join(format!("{instance}.sock"))),
        geneve_listen: "127.0.0.1:0".parse().unwrap(),
        metadata: None,
        external_address: None,
        underlay: None,
        cni_state_dir: None,
        fast_path: None,
    };
    let shim_a = Shim::start(opts(&ia, &na)).unwrap();
    let shim_b = Shim::start(opts(&ib, &nb)).unwrap();
    assert!(wait_addr(&nb, "eth0", "10.0.4.23/24", 10).await);
    assert!(eventually(10, || na.link("eth1")).is_some(), "the trunk is eth1 on node A");

    // The CNI's view: DescribeNode, then the member as a sub-interface in the pod namespace.
    let mut api = shim_client(shim_a.control_socket()).await;
    let node = api.describe_node(pb::DescribeNodeRequest {}).await.unwrap().into_inner();
    assert_eq!(node.instance_id, ia);
    let t = node.nics.iter().find(|n| n.network_interface_id == trunk).expect("the trunk is listed");
    let m = t.members.iter().find(|m| m.network_interface_id == member).expect("the member is listed").clone();
    let dev = api
        .create_vlan_device(pb::CreateVlanDeviceRequest {
            network_interface_id: member.clone(),
            netns_path: pod.path().to_string_lossy().into_owned(),
            if_name: "eth0".into(),
            mtu: 0,
        })
        .await
        .expect("CreateVlanDevice")
        .into_inner();
    assert_eq!(
        (dev.vlan_id, dev.mac_address.as_str(), dev.trunk_network_interface_id.as_str()),
        (m.vlan_id, t.mac_address.as_str(), trunk.as_str())
    );
    let unknown = api
        .create_vlan_device(pb::CreateVlanDeviceRequest {
            network_interface_id: "eni-unknown".into(),
            netns_path: pod.path().to_string_lossy().into_owned(),
            if_name: "eth9".into(),
            mtu: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Configured the way Terway's VLAN datapath configures a pod: ENI IP with the vSwitch
    // prefix, default route via the member vSwitch's gateway, onlink.
    let prefix = m.v_switch_cidr_block.split('/').nth(1).unwrap();
    pod.ip(&["addr", "add", &format!("{}/{prefix}", m.primary_ip_address), "dev", "eth0"]);
    pod.ip(&["route", "add", "default", "via", &m.gateway, "dev", "eth0", "onlink"]);
    let b_ip: Ipv4Addr = "10.0.4.23".parse().unwrap();
    let pod_path = pod.path();
    let reached =
        tokio::task::spawn_blocking(move || wait_ping(&pod_path, None, b_ip, Duration::from_secs(10))).await.unwrap();
    assert!(reached, "the pod reaches node B through its sub-interface: {}", shim_a.stats());
    let s = shim_a.stats();
    assert!(s.tags_pushed > 0 && s.tags_popped > 0, "{s}");

    // Without the sub-interface, Terway's IPVlan/veth datapaths send a member's traffic out of
    // the trunk itself, untagged, and the shim tags it by source address:
    //   ip addr add <podIP>/32 dev eth1; ip rule add from <podIP> lookup 100;
    //   ip route add default via <gw> dev eth1 onlink table 100
    api.delete_vlan_device(pb::DeleteVlanDeviceRequest { network_interface_id: member.clone() }).await.unwrap();
    api.delete_vlan_device(pb::DeleteVlanDeviceRequest { network_interface_id: member.clone() }).await.unwrap();
    assert!(pod.link("eth0").is_none(), "DeleteVlanDevice removed it");
    let pod_ip: Ipv4Addr = m.primary_ip_address.parse().unwrap();
    na.ip(&["addr", "add", &format!("{pod_ip}/32"), "dev", "eth1"]);
    na.ip(&["rule", "add", "from", &pod_ip.to_string(), "lookup", "100"]);
    na.ip(&["route", "add", "default", "via", &m.gateway, "dev", "eth1", "onlink", "table", "100"]);
    let before = shim_a.stats().tags_pushed;
    let na_path = na.path();
    let reached = tokio::task::spawn_blocking(move || wait_ping(&na_path, Some(pod_ip), b_ip, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(reached, "member-sourced traffic on the trunk is tagged and delivered: {}", shim_a.stats());
    assert!(shim_a.stats().tags_pushed > before);

    // A sub-interface goes away when its member is detached.
    api.create_vlan_device(pb::CreateVlanDeviceRequest {
        network_interface_id: member.clone(),
        netns_path: pod.path().to_string_lossy().into_owned(),
        if_name: "eth0".into(),
        mtu: 1500,
    })
    .await
    .unwrap();
    assert!(pod.link("eth0").is_some());
    cloud.detach(&ia, &member, &trunk).await;
    assert!(eventually(10, || pod.link("eth0").is_none().then_some(())).is_some(), "removed with the member");

    shim_a.shutdown().await;
    shim_b.shutdown().await;
    assert!(na.link("eth0").is_none() && na.link("eth1").is_none(), "shutdown removes the devices");
}

/// The three numbers the benchmark reports, measured from namespace `a` to `b_ip` in `b`.
fn measure(a: &Path, b: &Path, b_ip: Ipv4Addr, label: &str) {
    let secs: f64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    // BENCH_ONLY=tcp,pps,rr,icmp picks some (for profiling one at a time).
    let only = std::env::var("BENCH_ONLY").unwrap_or_else(|_| "tcp,pps,rr,icmp".into());
    if only.contains("tcp") {
        let tcp = tcp_throughput(a, b, b_ip, secs);
        println!("bench {label}: TCP {:.2} Gbit/s", tcp * 8.0 / 1e9);
    }
    if only.contains("pps") {
        let pps = udp_rate(a, b, b_ip, secs);
        println!("bench {label}: UDP 64-byte frames delivered {:.0} pps (one sender)", pps);
    }
    if only.contains("rr") {
        let rtt = udp_rtt(a, b, b_ip, 4000);
        println!("bench {label}: UDP request/response median RTT {:?}", rtt);
    }
    if only.contains("icmp") {
        let mut icmp = ping(a, None, b_ip, 200, Duration::from_secs(1));
        icmp.sort();
        let median = icmp.get(icmp.len() / 2).copied().unwrap_or(Duration::MAX);
        println!("bench {label}: ICMP echo median RTT {median:?}");
    }
}

/// Throughput, packet rate and latency across two shims and the emulator. Numbers are printed;
/// run with `--release` for meaningful ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release -p enifab-shim --test e2e -- --ignored --nocapture bench"]
async fn bench_two_nodes() {
    if !privileged("bench_two_nodes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(&dir.path().join("data"), "127.0.0.1:0".parse().unwrap()).await;
    let mut cloud = Cloud::build(emu.channel().await).await;
    let (ia, ib) = (cloud.instance("10.0.4.22").await, cloud.instance("10.0.4.23").await);
    let (na, nb) = (Netns::new("bena"), Netns::new("benb"));
    let _sa = ShimProcess::spawn(emu.grpc, &ia, &na, dir.path());
    let _sb = ShimProcess::spawn(emu.grpc, &ib, &nb, dir.path());
    assert!(wait_addr(&na, "eth0", "10.0.4.22/24", 10).await);
    assert!(wait_addr(&nb, "eth0", "10.0.4.23/24", 10).await);
    let (pa, pb_) = (na.path(), nb.path());
    tokio::task::spawn_blocking(move || {
        let b_ip: Ipv4Addr = "10.0.4.23".parse().unwrap();
        assert!(wait_ping(&pa, None, b_ip, Duration::from_secs(10)));
        measure(&pa, &pb_, b_ip, "enifab");
    })
    .await
    .unwrap();
    if std::env::var_os("BENCH_DEBUG").is_some() {
        // Where frames were lost: the TAP queues (tx dropped) and the relays' own counters,
        // which each shim logs when it shuts down.
        for ns in [&na, &nb] {
            let l = ns.link("eth0").unwrap();
            println!("{} eth0: tx {} rx {}", ns.name, l["stats64"]["tx"], l["stats64"]["rx"]);
        }
        for shim in [_sa, _sb] {
            let mut shim = shim;
            shim.terminate();
            let log = shim.log();
            println!("{}", log.lines().filter(|l| l.contains("shut down")).collect::<Vec<_>>().join("\n"));
        }
    }
}

/// The reference: the same measurements over kernel VXLAN between two namespaces joined by a
/// veth pair (what a node-to-node overlay costs without any userspace hop).
#[test]
#[ignore = "benchmark baseline: cargo test --release -p enifab-shim --test e2e -- --ignored --nocapture bench"]
fn bench_kernel_vxlan_baseline() {
    if !privileged("bench_kernel_vxlan_baseline") {
        return;
    }
    let (na, nb) = (Netns::new("vxa"), Netns::new("vxb"));
    // Underlay: a veth pair between the two namespaces.
    na.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u0", "netns", &nb.name]);
    for (ns, local, remote, overlay) in
        [(&na, "192.168.77.1", "192.168.77.2", "10.0.4.22/24"), (&nb, "192.168.77.2", "192.168.77.1", "10.0.4.23/24")]
    {
        ns.ip(&["addr", "add", &format!("{local}/30"), "dev", "u0"]);
        ns.ip(&["link", "set", "u0", "up"]);
        ns.ip(&[
            "link", "add", "vx0", "type", "vxlan", "id", "100", "local", local, "remote", remote, "dstport", "4789",
            "dev", "u0",
        ]);
        ns.ip(&["addr", "add", overlay, "dev", "vx0"]);
        ns.ip(&["link", "set", "vx0", "up"]);
    }
    let b_ip: Ipv4Addr = "10.0.4.23".parse().unwrap();
    assert!(wait_ping(&na.path(), None, b_ip, Duration::from_secs(10)));
    measure(&na.path(), &nb.path(), b_ip, "kernel-vxlan");
}
