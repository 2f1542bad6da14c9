//! Helpers shared by the privileged and end-to-end tests: network namespaces with unique names
//! that are removed by a guard (also when the test panics), `ip -j` queries, frames and fds, an
//! ICMP echo sent from inside a namespace on a raw socket (no `ping` binary needed), and an
//! emulator in this process ([`Emu`]) or in a child process that can be killed ([`EmuProcess`]).
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use enifab_shim::driver::netns::run_in;
use nix::sys::socket::{self as nsock, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn};
use nix::sys::time::TimeVal;
use serde_json::Value;

/// True when the tests may create namespaces and TAP devices; otherwise says why they skip.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces, TAP devices); run `cargo test -p enifab-shim` as root");
    false
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace `esh<pid>-<n>-<tag>` (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("esh{}-{}-{tag}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let out = Command::new("ip").args(["netns", "add", &name]).output().expect("run ip");
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        let ns = Netns { name };
        // Loopback up, as a container runtime does.
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip -n NAME ARGS…`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip").args(["-n", &self.name]).args(args).output().expect("run ip");
        assert!(out.status.success(), "ip -n {} {args:?}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -n NAME -j ARGS…` parsed; `Value::Null` when the command fails (no such device).
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let out = Command::new("ip").args(["-n", &self.name, "-j"]).args(args).output().expect("run ip");
        if !out.status.success() {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The link `name` as `ip -d -s -j link show` describes it, or `None`.
    pub fn link(&self, name: &str) -> Option<Value> {
        match self.ip_json(&["-d", "-s", "link", "show", "dev", name]) {
            Value::Array(mut a) if !a.is_empty() => Some(a.remove(0)),
            _ => None,
        }
    }

    /// The IPv4 addresses of `name` as `a.b.c.d/len`.
    pub fn ipv4_addrs(&self, name: &str) -> Vec<String> {
        self.addrs(name, "inet")
    }

    pub fn addrs(&self, name: &str, family: &str) -> Vec<String> {
        let v = self.ip_json(&["addr", "show", "dev", name]);
        v.get(0)
            .and_then(|l| l["addr_info"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|a| a["family"] == family)
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
            .collect()
    }

    /// `ip -j route show` (main table) as "DST [via GW] dev DEV" lines, sorted.
    pub fn routes(&self) -> Vec<String> {
        let Value::Array(all) = self.ip_json(&["route", "show"]) else { return Vec::new() };
        let mut out: Vec<String> = all
            .iter()
            .map(|r| {
                let via = r["gateway"].as_str().map(|g| format!(" via {g}")).unwrap_or_default();
                format!("{}{via} dev {}", r["dst"].as_str().unwrap_or("?"), r["dev"].as_str().unwrap_or("?"))
            })
            .collect();
        out.sort();
        out
    }

    /// `cat PATH` inside the namespace.
    pub fn cat(&self, path: &str) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.name, "cat", path]).output().expect("run ip");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// The `enifab` binary next to this test's, built if it is not there yet.
pub fn enifab_binary() -> PathBuf {
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
    // Always asked: cargo is quick when it is up to date, and a stale binary would test old code.
    assert!(build.status().expect("run cargo build").success(), "cargo build -p enifab failed");
    dir.join("enifab")
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `secs` seconds.
pub fn eventually<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// ICMP echo from inside `ns` (from `src` when given) to `dst`: the round-trip times of the
/// replies from `dst` that came back within `timeout` each.
pub fn ping(ns: &Path, src: Option<Ipv4Addr>, dst: Ipv4Addr, count: u16, timeout: Duration) -> Vec<Duration> {
    run_in(ns, move || {
        let fd = nsock::socket(AddressFamily::Inet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Icmp)
            .expect("raw ICMP socket");
        let raw = fd.as_raw_fd();
        if let Some(s) = src {
            nsock::bind(raw, &SockaddrIn::from(SocketAddrV4::new(s, 0))).unwrap();
        }
        nsock::setsockopt(&fd, nsock::sockopt::ReceiveTimeout, &TimeVal::new(0, 50_000)).unwrap();
        // Tests ping in parallel: the id keeps one test's replies out of another's count.
        let id = (std::process::id() as u16) ^ (NEXT.fetch_add(1, Ordering::Relaxed) as u16).rotate_left(8);
        let mut rtts = Vec::new();
        for seq in 0..count {
            let mut pkt = vec![8u8, 0, 0, 0];
            pkt.extend_from_slice(&id.to_be_bytes());
            pkt.extend_from_slice(&seq.to_be_bytes());
            pkt.extend_from_slice(&[0x42; 56]);
            let c = !ones_sum(&pkt, 0);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
            let sent = Instant::now();
            if nsock::sendto(raw, &pkt, &SockaddrIn::from(SocketAddrV4::new(dst, 0)), MsgFlags::empty()).is_err() {
                std::thread::sleep(timeout);
                continue;
            }
            let mut buf = [0u8; 2048];
            while sent.elapsed() < timeout {
                let Ok((n, from)) = nsock::recvfrom::<SockaddrIn>(raw, &mut buf) else { continue };
                let icmp = &buf[(usize::from(buf[0] & 0x0f) * 4).min(n)..n];
                let from_dst = from.is_some_and(|f| f.ip() == dst);
                if from_dst
                    && icmp.len() >= 8
                    && icmp[0] == 0
                    && icmp[4..6] == id.to_be_bytes()
                    && icmp[6..8] == seq.to_be_bytes()
                {
                    rtts.push(sent.elapsed());
                    break;
                }
            }
        }
        Ok(rtts)
    })
    .unwrap()
}

/// Pings until one echo comes back within `within` (ARP, registration and the config push may
/// take a moment).
pub fn wait_ping(ns: &Path, src: Option<Ipv4Addr>, dst: Ipv4Addr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !ping(ns, src, dst, 1, Duration::from_millis(300)).is_empty() {
            return true;
        }
    }
    false
}

/// A second handle on a (non-blocking) device fd, readable with `std::io::Read`.
pub fn reader(dev: &impl AsFd) -> File {
    File::from(dev.as_fd().try_clone_to_owned().expect("dup"))
}

/// Reads one frame (with its 10-byte vnet header) from a non-blocking fd within `secs`.
pub fn read_frame(f: &mut File, secs: u64) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    eventually(secs, || match f.read(&mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    })
}

pub fn mac_str(m: [u8; 6]) -> String {
    enifab_net::Mac(m).to_string()
}

/// RFC 1071 one's-complement sum of `data`, folded, not complemented.
pub fn ones_sum(data: &[u8], mut acc: u32) -> u16 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// An Ethernet/IPv4/UDP frame `src → dst` carrying `payload`, with a correct IPv4 header
/// checksum and `udp_check` as the UDP checksum field.
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
    udp_check: u16,
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + total);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&src.ip().octets());
    ip.extend_from_slice(&dst.ip().octets());
    let c = !ones_sum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&udp_check.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The region every test cloud is in.
pub const REGION: &str = "cn-hongkong";

/// The network most tests stand on: VPC 10.0.0.0/8, vSwitch 10.0.4.0/24 in cn-hongkong-b, one
/// security group: (vSwitch, group).
pub async fn network(
    ecs: &mut enifab_proto::v1::ecs_client::EcsClient<tonic::transport::Channel>,
    vpc: &mut enifab_proto::v1::vpc_client::VpcClient<tonic::transport::Channel>,
) -> (String, String) {
    use enifab_proto::v1 as pb;
    let vpc_id = vpc
        .create_vpc(pb::CreateVpcRequest {
            region_id: REGION.into(),
            cidr_block: "10.0.0.0/8".into(),
            ..Default::default()
        })
        .await
        .expect("CreateVpc")
        .into_inner()
        .vpc_id;
    let vsw = vpc
        .create_v_switch(pb::CreateVSwitchRequest {
            region_id: REGION.into(),
            vpc_id: vpc_id.clone(),
            zone_id: "cn-hongkong-b".into(),
            cidr_block: "10.0.4.0/24".into(),
            ..Default::default()
        })
        .await
        .expect("CreateVSwitch")
        .into_inner()
        .v_switch_id;
    let sg = ecs
        .create_security_group(pb::CreateSecurityGroupRequest {
            region_id: REGION.into(),
            vpc_id,
            ..Default::default()
        })
        .await
        .expect("CreateSecurityGroup")
        .into_inner()
        .security_group_id;
    (vsw, sg)
}

/// `enifab serve` in this process: gRPC on `grpc` (port 0 = any), the fabric on 127.0.0.1 (any
/// port), state in `data_dir`, transitions immediate; stopped on drop.
pub struct Emu {
    pub grpc: std::net::SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Emu {
    pub async fn start(data_dir: &std::path::Path, grpc: std::net::SocketAddr) -> Emu {
        let cfg = enifab::serve::ServeConfig { listen: grpc, ..enifab::serve::ServeConfig::loopback(data_dir) };
        let emu = enifab::serve::Emulator::open(&cfg, std::sync::Arc::new(enifab::actor::SystemClock))
            .expect("open the emulator");
        let listener = tokio::net::TcpListener::bind(grpc).await.expect("bind the API port");
        let grpc = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(emu.run(listener, async {
            let _ = rx.await;
        }));
        Emu { grpc, shutdown: Some(tx), task: Some(task) }
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// `enifab serve` as a child process, for what only a process can do: die (SIGKILL) and come
/// back on the same API port and data directory (with a new fabric port, which the shims learn
/// when they register again). `env` is added to its environment.
pub struct EmuProcess {
    child: std::process::Child,
    pub grpc: std::net::SocketAddr,
}

impl EmuProcess {
    pub fn spawn(
        bin: &Path,
        data_dir: &Path,
        grpc: std::net::SocketAddr,
        log: &Path,
        env: &[(&str, &str)],
    ) -> EmuProcess {
        let child = Command::new(bin)
            .args(["serve", "--no-delays", "--listen", &grpc.to_string(), "--fabric-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
            .spawn()
            .expect("spawn enifab serve");
        EmuProcess { child, grpc }
    }

    /// A channel to its API, once it answers.
    pub async fn channel(&self) -> tonic::transport::Channel {
        let url = format!("http://{}", self.grpc);
        for _ in 0..200 {
            if let Ok(ch) = tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect().await {
                return ch;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("enifab serve did not come up on {}", self.grpc);
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EmuProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A dual-stack network: VPC 10.0.0.0/8 with IPv6 (its /56), vSwitch 10.0.4.0/24 in
/// cn-hongkong-b with /64 number 4, one security group whose members reach each other by rules
/// only (inner access `Drop`): (vSwitch, group, the VPC's IPv6 /56).
/// Closes `sg` between its own members (inner access policy `Drop`): they reach each other only
/// by the rules it is given.
pub async fn close_group(ecs: &mut enifab_proto::v1::ecs_client::EcsClient<tonic::transport::Channel>, sg: &str) {
    use enifab_proto::v1 as pb;
    ecs.modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest {
        region_id: REGION.into(),
        security_group_id: sg.into(),
        inner_access_policy: "Drop".into(),
    })
    .await
    .expect("ModifySecurityGroupPolicy");
}

pub async fn dual_stack_network(
    ecs: &mut enifab_proto::v1::ecs_client::EcsClient<tonic::transport::Channel>,
    vpc: &mut enifab_proto::v1::vpc_client::VpcClient<tonic::transport::Channel>,
) -> (String, String, String) {
    use enifab_proto::v1 as pb;
    let v = vpc
        .create_vpc(pb::CreateVpcRequest {
            region_id: REGION.into(),
            cidr_block: "10.0.0.0/8".into(),
            enable_ipv6: Some(true),
            ..Default::default()
        })
        .await
        .expect("CreateVpc")
        .into_inner();
    let block = vpc
        .describe_vpc_attribute(pb::DescribeVpcAttributeRequest {
            region_id: REGION.into(),
            vpc_id: v.vpc_id.clone(),
            ..Default::default()
        })
        .await
        .expect("DescribeVpcAttribute")
        .into_inner()
        .ipv6_cidr_block;
    let vsw = vpc
        .create_v_switch(pb::CreateVSwitchRequest {
            region_id: REGION.into(),
            vpc_id: v.vpc_id.clone(),
            zone_id: "cn-hongkong-b".into(),
            cidr_block: "10.0.4.0/24".into(),
            ipv6_cidr_block: Some(4),
            ..Default::default()
        })
        .await
        .expect("CreateVSwitch")
        .into_inner()
        .v_switch_id;
    let sg = ecs
        .create_security_group(pb::CreateSecurityGroupRequest {
            region_id: REGION.into(),
            vpc_id: v.vpc_id,
            ..Default::default()
        })
        .await
        .expect("CreateSecurityGroup")
        .into_inner()
        .security_group_id;
    close_group(ecs, &sg).await;
    (vsw, sg, block)
}

/// An instance at `ip` whose primary ENI also holds one IPv6 address: (instance, its IPv6).
pub async fn dual_stack_instance(
    ecs: &mut enifab_proto::v1::ecs_client::EcsClient<tonic::transport::Channel>,
    vsw: &str,
    sg: &str,
    ip: &str,
) -> (String, std::net::Ipv6Addr) {
    use enifab_proto::v1 as pb;
    let id = ecs
        .create_instance(pb::CreateInstanceRequest {
            region_id: REGION.into(),
            instance_type: "ecs.g7.xlarge".into(),
            v_switch_id: vsw.into(),
            security_group_ids: vec![sg.into()],
            private_ip_address: ip.into(),
            ..Default::default()
        })
        .await
        .expect("CreateInstance")
        .into_inner()
        .instance_id;
    let enis = ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            region_id: REGION.into(),
            instance_id: id.clone(),
            r#type: "Primary".into(),
            ..Default::default()
        })
        .await
        .expect("DescribeNetworkInterfaces")
        .into_inner();
    let primary = enis.network_interface_sets.unwrap().network_interface_set[0].network_interface_id.clone();
    let got = ecs
        .assign_ipv6_addresses(pb::AssignIpv6AddressesRequest {
            region_id: REGION.into(),
            network_interface_id: primary,
            ipv6_address_count: Some(1),
            ..Default::default()
        })
        .await
        .expect("AssignIpv6Addresses")
        .into_inner();
    (id, got.ipv6_sets.unwrap().ipv6_address[0].parse().unwrap())
}

/// One invocation of the real `enifab-cni`, as a container runtime makes it (`CNI_*` in the
/// environment, the configuration on stdin): (exit success, stdout parsed as JSON, stderr).
pub fn cni(command: &str, container: &str, netns: Option<&Path>, args: &str, conf: &Value) -> (bool, Value, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_enifab-cni"));
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_ARGS", args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(ns) = netns {
        cmd.env("CNI_NETNS", ns);
    }
    let mut child = cmd.spawn().expect("run enifab-cni");
    // The plugin may answer before reading stdin (VERSION, a usage error): a closed pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(conf.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or(Value::String(stdout))
    };
    (out.status.success(), json, String::from_utf8_lossy(&out.stderr).to_string())
}

/// The options of an in-process shim for `instance` in `ns` against the emulator whose API is
/// on `grpc`, its control socket in `dir`, with or without a kernel fast path.
pub fn shim_options(
    grpc: std::net::SocketAddr,
    dir: &Path,
    instance: &str,
    ns: &Netns,
    fast_path: Option<enifab_shim::fastpath::FastPathOptions>,
) -> enifab_shim::ShimOptions {
    enifab_shim::ShimOptions {
        endpoint: grpc.to_string(),
        instance_id: instance.into(),
        netns: ns.name.clone(),
        control_socket: Some(dir.join(format!("{instance}.sock"))),
        geneve_listen: "127.0.0.1:0".parse().unwrap(),
        metadata: None,
        external_address: None,
        underlay: None,
        cni_state_dir: None,
        fast_path,
    }
}
