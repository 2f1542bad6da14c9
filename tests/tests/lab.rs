//! The lab end to end, as CI runs it: the SOP example (both datapaths, and dual stack) brought
//! up for real (namespaces, shims, CNI, responders, kube-proxy's rules, the CCM's CLB, an
//! internet client), all ten scenarios checked as the example expects (1–5 over IPv6 too in the
//! dual-stack one), torn down, and nothing left: no namespace, no agent, shim or responder
//! process, no ENI, no IP, no load balancer. The same through the agents runtime (each node an
//! `enifab lab agent` started before the lab, as node containers are, reached only through its
//! API). An `up` killed mid-way (and its state file lost) is cleaned up by `down` all the same. A
//! node's shim killed with SIGKILL is started again by its agent, which rebuilds the node and its
//! pods' wiring: its pods answer again. A broken topology is refused with a located error before
//! anything is made, and so is a pod's IPv6 address pinned outside the /64 the cloud gave its
//! vSwitch, before any node is. Needs root (skips otherwise); every lab has its own id (the
//! example is copied into the test's directory) and a guard that removes its namespaces and
//! processes even when the test panics.

#[path = "support/lab_guard.rs"]
mod lab_guard;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use enifab::cli::Clients;
use enifab::lab::{self, netns, probe};
use enifab_proto::v1 as pb;
use enifab_tests::{FullEmulator, is_root, workspace_bin_dir};
use lab_guard::{LabGuard, processes_of};

fn root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: the lab needs root (network namespaces, TAP devices)");
    false
}

/// A copy of an example in the test's own directory, so its lab id (and names) are unique.
fn example_copy(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/terway-trunk-sop").join(name);
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap();
    dst
}

async fn load_balancers(c: &mut Clients) -> Vec<pb::LoadBalancerItem> {
    c.slb
        .describe_load_balancers(pb::DescribeLoadBalancersRequest { page_size: Some(100), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .load_balancers
        .unwrap_or_default()
        .load_balancer
}

/// Nothing of lab `id` is left: namespaces, processes, ENIs, VPCs, load balancers, state.
async fn assert_nothing_left(env: &mut FullEmulator, opts: &lab::LabOptions, id: &str) {
    assert!(netns::list(&format!("efb{id}-")).is_empty(), "namespaces left: {:?}", netns::list(&format!("efb{id}-")));
    assert!(processes_of(id).is_empty(), "processes left: {:?}", processes_of(id));
    let enis = env
        .clients
        .ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .network_interface_sets
        .unwrap_or_default()
        .network_interface_set;
    assert!(enis.is_empty(), "ENIs left: {enis:?}");
    let lbs = load_balancers(&mut env.clients).await;
    assert!(lbs.is_empty(), "load balancers left: {lbs:?}");
    let vpcs = env
        .clients
        .vpc
        .describe_vpcs(pb::DescribeVpcsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .vpcs
        .unwrap_or_default()
        .vpc;
    assert!(vpcs.is_empty(), "VPCs (and so vSwitches and their IPs) left: {vpcs:?}");
    assert!(!opts.state_dir.join(format!("lab-{id}.json")).exists(), "the lab's state file is gone with it");
}

async fn end_to_end(example: &str, rows_expected: usize) -> Ran {
    let mut env = FullEmulator::start().await;
    let file = example_copy(env.dir.path(), example);
    let guard = LabGuard::new(&file);
    let opts = env.lab_options();
    let ran = run_the_example(&file, &opts, rows_expected).await;
    assert_nothing_left(&mut env, &opts, &guard.id).await;
    ran
}

/// What a run of an example leaves to look at once the lab is down.
struct Ran {
    /// The state `up` returned.
    st: lab::LabState,
    rows: Vec<lab::CheckRow>,
    /// The capture of client-web's member ENI: per frame, VLAN id, IPv4 source and destination,
    /// TCP destination and source ports, IPv6 source and destination.
    frames: Vec<Vec<String>>,
    /// client-web's member's VLAN.
    vlan: i32,
}

/// Up, check (every row as the example expects, all ten scenarios), down.
async fn run_the_example(file: &Path, opts: &lab::LabOptions, rows_expected: usize) -> Ran {
    let mut log = Vec::new();
    let started = Instant::now();
    let up = lab::up(opts, file, &mut |l| log.push(l)).await;
    let st = match up {
        Ok(st) => st,
        Err(e) => {
            let _ = lab::down(opts, file, &mut |_| {}).await;
            panic!("lab up failed: {e:#}\n{}", log.join("\n"));
        }
    };
    let up_took = started.elapsed();
    // A capture of client-web's member ENI while the checks run (scenario 4 crosses it).
    let member = st.pods["client-web"].member_eni.clone();
    let (stop_capture, stopped) = tokio::sync::oneshot::channel::<()>();
    let capture_opts = enifab::capture::CaptureOptions {
        eni: Some(member.clone()),
        node: None,
        vlan: 0,
        outer: false,
        count: None,
        duration: Some(Duration::from_secs(600)),
        write: PathBuf::from("-"),
        format: enifab::capture::Format::Pcapng,
    };
    let endpoint = opts.endpoint.clone();
    let capturing = tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.await;
        };
        enifab::capture::capture(&endpoint, &capture_opts, Vec::new(), stop, |_| {}).await
    });
    let rows = lab::check(opts, file).await;
    let check_took = started.elapsed() - up_took;
    let _ = stop_capture.send(());
    let captured = capturing.await.expect("the capture task").map(|(_, file)| file);
    let mut c = Clients::new(enifab::cli::connect(&opts.endpoint).await.unwrap());
    let q = pb::DescribeNetworkInterfaceAttributeRequest { network_interface_id: member.clone(), ..Default::default() };
    let attached = c.ecs.describe_network_interface_attribute(q).await.map(|r| r.into_inner().attachment);
    let vlan = attached.ok().flatten().map(|a| a.device_index).expect("the member is attached");
    let down = lab::down(opts, file, &mut |_| {}).await;
    let rows = rows.expect("lab check");
    let table = lab::render(&rows);
    println!("{table}\nup {up_took:.1?}, check {check_took:.1?}");
    assert_eq!(rows.len(), rows_expected, "{table}");
    let scenarios: BTreeSet<u32> = rows.iter().filter_map(|r| r.scenario).collect();
    assert_eq!(scenarios, (1..=10).collect(), "every SOP scenario is checked\n{table}");
    assert!(rows.iter().all(|r| r.passed), "some checks did not come out as the example expects:\n{table}");
    // `enifab trace`, run for each check with its changes in force, agrees with the traffic
    // wherever the fabric sees the whole path (pod to pod, across nodes, allowed and refused).
    let traced: Vec<_> = rows.iter().filter_map(|r| r.trace.as_ref().map(|t| (r, t))).collect();
    assert!(traced.len() >= 3, "too few checks were traced:\n{table}");
    for (r, t) in &traced {
        let got = if r.got == "refused" { "reachable" } else { r.got.as_str() };
        assert_eq!(t.word, got, "the trace of {:?} disagrees with the traffic\n{table}", r.name);
        assert_eq!(t.refused_by.is_some(), got == "blocked", "{:?}: {t:?}", r.name);
    }
    // The internet client's request reached nginx with its own address (CLB keeps it).
    let via_slb = rows.iter().find(|r| r.scenario == Some(10) && r.got == "reachable").expect("a reachable 10");
    assert!(
        via_slb.answered.as_deref().is_some_and(|a| a.contains("saw the client as 47.100.1.10")),
        "{:?}",
        via_slb.answered
    );
    down.expect("lab down");

    assert!(st.services["default/nginx"].load_balancer_ip == "8.210.162.178", "{:?}", st.services);
    // The capture opens in tshark: the member's frames carry its VLAN on the trunk, and its
    // HTTP exchange with nginx (scenario 4) is there both ways.
    let captured = captured.expect("the capture ran");
    let lines =
        tshark(&captured, &["vlan.id", "ip.src", "ip.dst", "tcp.dstport", "tcp.srcport", "ipv6.src", "ipv6.dst"]);
    assert!(!lines.is_empty(), "the capture of {member} holds frames");
    let ip = &st.pods["client-web"].ip;
    let nginx = &st.pods["nginx-6f545cb57c-kt7r8"].ip;
    let fields: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    assert!(
        fields.iter().filter(|f| f[1] == ip.as_str() || f[2] == ip.as_str()).all(|f| f[0] == vlan.to_string()),
        "every frame of {member} carries VLAN {vlan}:\n{}",
        lines.join("\n")
    );
    assert!(
        fields.iter().any(|f| f[1] == ip.as_str() && f[2] == nginx.as_str() && f[3] == "80"),
        "{}",
        lines.join("\n")
    );
    assert!(
        fields.iter().any(|f| f[1] == nginx.as_str() && f[2] == ip.as_str() && f[4] == "80"),
        "{}",
        lines.join("\n")
    );
    let frames = fields.iter().map(|f| f.iter().map(|x| x.to_string()).collect()).collect();
    Ran { st, rows, frames, vlan }
}

/// `tshark -r FILE -T fields -e …`, one line per packet.
fn tshark(file: &[u8], fields: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.pcapng");
    std::fs::write(&path, file).unwrap();
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(&path).args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs (apt-get install tshark; .ci/run installs it)");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sop_example_veth_datapath() {
    if root("the_sop_example_veth_datapath") {
        end_to_end("topology.yaml", 23).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sop_example_vlan_datapath() {
    if root("the_sop_example_vlan_datapath") {
        end_to_end("topology-vlan.yaml", 17).await;
    }
}

/// The SOP example made dual stack (topology-dual.yaml): every pod and node with an IPv6
/// address beside its IPv4 one, scenarios 1–5 checked over both families (IPv6 rules naming the
/// pods' pinned /128s; tcp, udp, http and ICMPv6 echo through the VPC; two vlan-datapath pods),
/// 6–10 over IPv4 as before, all as the file expects. The pods got the addresses the file pins,
/// the nodes theirs from the vSwitch's /64, and client-web's IPv6 exchange with nginx crossed
/// its member ENI tagged with its VLAN, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sop_example_dual_stack() {
    if !root("the_sop_example_dual_stack") {
        return;
    }
    let Ran { st, rows, frames, vlan } = end_to_end("topology-dual.yaml", 42).await;
    let table = lab::render(&rows);
    let six: Vec<&lab::CheckRow> = rows.iter().filter(|r| r.what.contains(" over IPv6")).collect();
    assert_eq!(six.len(), 19, "{table}");
    let scenarios: BTreeSet<u32> = six.iter().filter_map(|r| r.scenario).collect();
    assert_eq!(scenarios, (1..=5).collect(), "scenarios 1–5 over IPv6, no other\n{table}");
    for proto in ["http/80", "tcp/7", "udp/53", "icmp"] {
        assert!(six.iter().any(|r| r.what.contains(proto) && r.got == "reachable"), "{proto} over IPv6\n{table}");
    }
    assert!(six.iter().any(|r| r.got == "blocked" && r.path.contains("security_group")), "{table}");
    for (pod, want) in [("nginx-6f545cb57c-kt7r8", "2408:4005:3000:4::30"), ("client-vlan", "2408:4005:3000:4::42")] {
        assert_eq!(st.pods[pod].ip6, want, "{pod}");
    }
    let block: enifab_model::net::Cidr6 = "2408:4005:3000:4::/64".parse().unwrap();
    for (name, node) in &st.nodes {
        let ip6: std::net::Ipv6Addr = node.primary_ip6.parse().unwrap_or_else(|_| panic!("{name}: {node:?}"));
        assert!(block.contains(ip6), "{name}'s {ip6}");
    }
    let (client, nginx) = (&st.pods["client-web"].ip6, &st.pods["nginx-6f545cb57c-kt7r8"].ip6);
    let six_frames: Vec<&Vec<String>> = frames.iter().filter(|f| f[5] == *client || f[6] == *client).collect();
    assert!(six_frames.iter().all(|f| f[0] == vlan.to_string()), "every IPv6 frame of client-web carries its VLAN");
    assert!(six_frames.iter().any(|f| f[5] == *client && f[6] == *nginx), "client-web → nginx over IPv6 captured");
    assert!(six_frames.iter().any(|f| f[5] == *nginx && f[6] == *client), "nginx → client-web over IPv6 captured");
}

/// `enifab lab up` (the real binary) is killed with SIGKILL once the CCM's load balancer exists —
/// pods, shims, responders and the CLB made, kube-proxy's rules half written — and its state file
/// is deleted, as if the crash came before it was written. `down` still finds everything by the
/// lab's names and tags and removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_up_killed_mid_way_is_cleaned_up_by_down() {
    if !root("an_up_killed_mid_way_is_cleaned_up_by_down") {
        return;
    }
    let mut env = FullEmulator::start().await;
    let file = example_copy(env.dir.path(), "topology.yaml");
    let guard = LabGuard::new(&file);
    let opts = env.lab_options();
    let mut up = Command::new(workspace_bin_dir().join("enifab"))
        .args(["--endpoint", &env.endpoint, "lab", "up"])
        .arg(&file)
        .env("ENIFAB_LAB_DIR", &opts.state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if !load_balancers(&mut env.clients).await.is_empty() {
            break;
        }
        if let Some(status) = up.try_wait().unwrap() {
            panic!("lab up ended ({status}) before the CLB existed");
        }
        assert!(Instant::now() < deadline, "no CLB after 90 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    up.kill().unwrap();
    up.wait().unwrap();
    assert!(!netns::list(&format!("efb{}-", guard.id)).is_empty(), "the crash left namespaces to clean up");
    assert!(!processes_of(&guard.id).is_empty(), "the crash left shims and responders running");
    std::fs::remove_file(opts.state_dir.join(format!("lab-{}.json", guard.id))).unwrap();

    lab::down(&opts, &file, &mut |_| {}).await.expect("down after a crash");
    assert_nothing_left(&mut env, &opts, &guard.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_topology_is_located_and_creates_nothing() {
    if !root("a_broken_topology_is_located_and_creates_nothing") {
        return;
    }
    let mut env = FullEmulator::start().await;
    let file = example_copy(env.dir.path(), "topology.yaml");
    let _guard = LabGuard::new(&file);
    let text = std::fs::read_to_string(&file).unwrap().replacen(
        "node: cn-hongkong.10.0.4.20",
        "node: cn-hongkong.10.0.4.99",
        1,
    );
    std::fs::write(&file, &text).unwrap();
    let line = text.lines().position(|l| l.contains("cn-hongkong.10.0.4.99")).unwrap() + 1;
    let id = lab::lab_id(&file);
    let opts = env.lab_options();
    let err = lab::up(&opts, &file, &mut |_| {}).await.unwrap_err().to_string();
    assert!(err.contains(&format!("topology.yaml:{line}:")) && err.contains("no instance named"), "{err}");
    assert!(netns::list(&format!("efb{id}-")).is_empty());
    let vpcs = env
        .clients
        .vpc
        .describe_vpcs(pb::DescribeVpcsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .vpcs
        .unwrap_or_default()
        .vpc;
    assert!(vpcs.is_empty(), "{vpcs:?}");
}

/// `enifab lab agent` processes standing in for node containers: each node (and the external
/// client) a namespace `efb<id>-a<i>` with an agent started before the lab, as compose starts
/// node containers; stopped (SIGTERM, which stops their shims) when dropped.
struct NodeAgents {
    children: Vec<Child>,
    /// Name in the topology → the agent's address.
    addresses: BTreeMap<String, String>,
}

impl NodeAgents {
    fn start(endpoint: &str, dir: &Path, id: &str, nodes: &[&str], externals: &[(&str, &str)]) -> NodeAgents {
        let mut agents = NodeAgents { children: Vec::new(), addresses: BTreeMap::new() };
        let mut who: Vec<(String, Vec<String>)> =
            nodes.iter().map(|n| (n.to_string(), vec!["--instance-name".into(), n.to_string()])).collect();
        who.extend(externals.iter().map(|(n, a)| {
            (n.to_string(), vec!["--external".into(), n.to_string(), "--external-address".into(), a.to_string()])
        }));
        for (i, (name, args)) in who.into_iter().enumerate() {
            let ns = format!("efb{id}-a{i}");
            netns::create(&ns).unwrap();
            let sock = dir.join(format!("agent-a{i}.sock"));
            let log = std::fs::File::create(dir.join(format!("agent-a{i}.log"))).unwrap();
            let child = Command::new(workspace_bin_dir().join("enifab"))
                .args(["--endpoint", endpoint, "lab", "agent", "--netns", &ns])
                .args(&args)
                .arg("--listen")
                .arg(&sock)
                .arg("--shim-socket")
                .arg(dir.join(format!("shim-a{i}.sock")))
                .arg("--cni-state-dir")
                .arg(dir.join("agents-cni"))
                .arg("--log-dir")
                .arg(dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            agents.children.push(child);
            agents.addresses.insert(name, format!("unix:{}", sock.display()));
        }
        agents
    }
}

impl Drop for NodeAgents {
    fn drop(&mut self) {
        for c in &self.children {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        for c in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The SOP example through the agents runtime: the agents find their instances by name once
/// `up` has applied the file, the lab wires pods, starts responders, writes kube-proxy's rules
/// and runs every probe through them. `check` starts before `up`, as `docker compose up -d &&
/// docker compose run --rm check` may: it waits for `up` to finish, saying so, and then finds
/// the agents in the state; so does `down`. After `down`, the agents are still there (they are
/// the nodes'), and nothing of the lab is left on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sop_example_through_agents() {
    if !root("the_sop_example_through_agents") {
        return;
    }
    let env = FullEmulator::start().await;
    let file = example_copy(env.dir.path(), "topology.yaml");
    let guard = LabGuard::new(&file);
    let dir = env.dir.path().join("nodes");
    std::fs::create_dir_all(&dir).unwrap();
    let nodes = ["cn-hongkong.10.0.4.22", "cn-hongkong.10.0.4.20", "cn-hongkong.10.0.4.244"];
    let externals = [("client-internet", "47.100.1.10/24")];
    let agents = NodeAgents::start(&env.endpoint, &dir, &guard.id, &nodes, &externals);
    let mut opts = env.lab_options();
    opts.agents = agents.addresses.clone();
    // check and down are given nothing but the file, the state directory and a wait.
    let mut later = env.lab_options();
    later.wait = Some(Duration::from_secs(120));

    let (mut log, mut waited) = (Vec::new(), Vec::new());
    let (mut to_log, mut to_waited) = (|l| log.push(l), |l| waited.push(l));
    let started = Instant::now();
    let (up, rows) = tokio::join!(lab::up(&opts, &file, &mut to_log), lab::check_with(&later, &file, &mut to_waited));
    let took = started.elapsed();
    let down = lab::down(&later, &file, &mut |_| {}).await;
    up.unwrap_or_else(|e| panic!("lab up failed: {e:#}\n{}", log.join("\n")));
    let rows = rows.expect("lab check");
    let table = lab::render(&rows);
    println!("{table}\nup and check {took:.1?}; check said: {waited:?}");
    assert!(log.iter().any(|l| l.contains("nodes (agents runtime)")), "{log:?}");
    assert!(waited.iter().any(|l| l.contains("waiting for `lab up`")), "{waited:?}");
    assert_eq!(rows.len(), 23, "{table}");
    assert!(rows.iter().all(|r| r.passed), "some checks did not come out as the example expects:\n{table}");
    // `enifab trace`, run for each check with its changes in force, agrees with the traffic
    // wherever the fabric sees the whole path (pod to pod, across nodes, allowed and refused).
    let traced: Vec<_> = rows.iter().filter_map(|r| r.trace.as_ref().map(|t| (r, t))).collect();
    assert!(traced.len() >= 3, "too few checks were traced:\n{table}");
    for (r, t) in &traced {
        let got = if r.got == "refused" { "reachable" } else { r.got.as_str() };
        assert_eq!(t.word, got, "the trace of {:?} disagrees with the traffic\n{table}", r.name);
        assert_eq!(t.refused_by.is_some(), got == "blocked", "{:?}: {t:?}", r.name);
    }
    down.expect("lab down");

    assert!(!opts.state_dir.join(format!("lab-{}.json", guard.id)).exists(), "the state is gone with the lab");
    let pods: Vec<String> = netns::list(&format!("efb{}-p", guard.id));
    assert!(pods.is_empty(), "pod namespaces left: {pods:?}");
    assert_eq!(netns::list(&format!("efb{}-a", guard.id)).len(), 4, "the nodes' own namespaces stay");
    drop(agents);
    assert!(processes_of(&guard.id).is_empty(), "processes left: {:?}", processes_of(&guard.id));
}

/// A small lab whose node A carries a veth pod and a vlan pod, and node B a client.
const TWO_NODES: &str = "region: cn-hongkong
vpcs:
  - name: vpc-sup
    cidr: 10.0.0.0/8
    vswitches: [{ name: vsw-sup, zone: cn-hongkong-b, cidr: 10.0.4.0/24 }]
securityGroups:
  - name: sg-all
    vpc: vpc-sup
    ingress: [{ protocol: ALL, peer: 10.0.0.0/8 }]
instances:
  - { name: node-a, type: ecs.g7.xlarge, vswitch: vsw-sup, privateIp: 10.0.4.22, securityGroups: [sg-all],
      trunk: { vswitch: vsw-sup, securityGroups: [sg-all] } }
  - { name: node-b, type: ecs.g7.xlarge, vswitch: vsw-sup, privateIp: 10.0.4.20, securityGroups: [sg-all],
      trunk: { vswitch: vsw-sup, securityGroups: [sg-all] } }
pods:
  - { name: web-veth, node: node-a, datapath: veth, ip: 10.0.4.30, servers: [{ protocol: http, port: 80 }] }
  - { name: web-vlan, node: node-a, datapath: vlan, ip: 10.0.4.31, servers: [{ protocol: http, port: 80 }] }
  - { name: client, node: node-b, datapath: veth, ip: 10.0.4.40 }
";

/// Whether `from` (a namespace) gets an HTTP answer from `to`.
async fn answers(from: &str, to: &str) -> bool {
    let (from, to): (String, Ipv4Addr) = (from.to_string(), to.parse().unwrap());
    let o = tokio::task::spawn_blocking(move || probe::probe(&from, to, probe::Proto::Http, 80)).await.unwrap();
    matches!(o, Ok(probe::Outcome::Reachable(_)))
}

/// The shim of node A is killed with SIGKILL (its TAPs, and with them the node's eth0/eth1, the
/// routes through them and the vlan pod's sub-interface, go with it). Its agent starts it again
/// at once, the new shim rebuilds the node from the cloud's view and the pods' wiring from the
/// CNI's records, and both pods answer the client on node B again within 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shim_is_started_again_and_its_pods_answer() {
    if !root("a_killed_shim_is_started_again_and_its_pods_answer") {
        return;
    }
    let mut env = FullEmulator::start().await;
    let file = env.dir.path().join("two-nodes.yaml");
    std::fs::write(&file, TWO_NODES).unwrap();
    let guard = LabGuard::new(&file);
    let opts = env.lab_options();
    let st = match lab::up(&opts, &file, &mut |_| {}).await {
        Ok(st) => st,
        Err(e) => {
            let _ = lab::down(&opts, &file, &mut |_| {}).await;
            panic!("lab up failed: {e:#}");
        }
    };
    let client = st.pods["client"].netns.clone();
    let result = async move {
        for pod in ["web-veth", "web-vlan"] {
            assert!(answers(&client, &st.pods[pod].ip).await, "{pod} answers before the kill");
        }
        let node = &st.nodes["node-a"];
        let mut agent = lab::agent::client::connect(&node.agent).unwrap();
        let before = agent.describe_agent(pb::DescribeAgentRequest {}).await.unwrap().into_inner();
        assert_eq!((before.state.as_str(), before.shim_restarts), ("running", 0), "{before:?}");
        assert_eq!(before.shim_pid, node.shim_pid);
        Command::new("kill").args(["-KILL", &before.shim_pid.to_string()]).status().unwrap();
        let killed = Instant::now();

        let deadline = killed + Duration::from_secs(30);
        let mut back = BTreeMap::new();
        while back.len() < 2 {
            assert!(Instant::now() < deadline, "after 30 s only {back:?} answer again");
            for pod in ["web-veth", "web-vlan"] {
                if !back.contains_key(pod) && answers(&client, &st.pods[pod].ip).await {
                    back.insert(pod, killed.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = agent.describe_agent(pb::DescribeAgentRequest {}).await.unwrap().into_inner();
        assert_eq!(after.state, "running", "{after:?}");
        assert_eq!(after.shim_restarts, 1, "{after:?}");
        assert_ne!(after.shim_pid, before.shim_pid);
        assert!(after.interfaces.iter().any(|i| i.name == "eth1"), "{after:?}");
        println!("answering again after the kill: {back:?}");
    };
    let outcome = tokio::spawn(result).await;
    lab::down(&opts, &file, &mut |_| {}).await.expect("lab down");
    assert_nothing_left(&mut env, &opts, &guard.id).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A dual-stack lab whose file leaves the VPC's /56 to the cloud, with a pod's IPv6 address
/// pinned outside the /64 the cloud then gives its vSwitch.
const MISPINNED: &str = "region: cn-hongkong
vpcs:
  - name: v
    cidr: 10.0.0.0/8
    enableIpv6: true
    vswitches: [{ name: s, zone: cn-hongkong-b, cidr: 10.0.4.0/24, ipv6CidrBlock: 4 }]
securityGroups:
  - { name: g, vpc: v, ingress: [{ protocol: ALL, peer: 10.0.0.0/8 }] }
instances:
  - { name: node-a, type: ecs.g7.xlarge, vswitch: s, privateIp: 10.0.4.22, securityGroups: [g],
      trunk: { vswitch: s, securityGroups: [g] } }
pods:
  - { name: web, node: node-a, ipStack: dual, ipv6: \"2408:4005:3001:4::30\" }
";

/// Only the cloud knows that /64 (the file does not name the /56), so the file alone cannot
/// refuse the pin: `up` does, once the VPC exists, at the pin's line and before any node or pod
/// is made; `down` removes the cloud side it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_ipv6_address_outside_the_clouds_64_stops_up_at_its_line() {
    if !root("a_pinned_ipv6_address_outside_the_clouds_64_stops_up_at_its_line") {
        return;
    }
    let mut env = FullEmulator::start().await;
    let file = env.dir.path().join("mispinned.yaml");
    std::fs::write(&file, MISPINNED).unwrap();
    let guard = LabGuard::new(&file);
    let opts = env.lab_options();
    let err = format!("{:#}", lab::up(&opts, &file, &mut |_| {}).await.expect_err("a pin outside the /64"));
    let line = MISPINNED.lines().position(|l| l.contains("3001:4::30")).unwrap() + 1;
    assert!(
        err.contains(&format!("mispinned.yaml:{line}:"))
            && err.contains("2408:4005:3001:4::30 is not an address of vSwitch s's 2408:4005:3000:4::/64"),
        "{err}"
    );
    assert!(netns::list(&format!("efb{}-", guard.id)).is_empty(), "no node or pod was made");
    lab::down(&opts, &file, &mut |_| {}).await.expect("lab down");
    assert_nothing_left(&mut env, &opts, &guard.id).await;
}
