//! `enifab lab up | check | down FILE.yaml` and `enifab demo`: a whole trunk-ENI cluster on one
//! Linux machine, from a topology file.
//!
//! `up` applies the file's cloud side (see [`crate::apply`]), then makes every instance a node
//! (a network namespace with ECS-like sysctls and an `enifab-shim` that plugs its ENIs in as
//! TAP devices), runs `enifab-cni ADD` for every pod (a namespace wired to a member ENI by the
//! chosen datapath), and starts the built-in responders. Every step is idempotent, so `up` can be
//! re-run after a failure. `check` runs each probe for real (rule changes applied before it and
//! undone after), reads the fabric's counters around it to say which way the traffic went, and
//! prints the table. `down` undoes everything `up` made, also after a crash: what was made is
//! recorded step by step in a state file under the state directory, and names derive from the
//! lab's id, so leftovers can be found even without it.
//!
//! The lab drives real processes and real namespaces; it needs root, `ip` (iproute2) and the
//! `enifab-shim` and `enifab-cni` binaries next to `enifab`.

pub mod demo;
pub mod netns;
pub mod probe;
pub mod rate;
pub mod responder;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use enifab_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::apply::{self, Applied};
use crate::cli::{self, Clients, describe_status};
use crate::topology::{ChangeSpec, Topology};

/// Where the lab finds its programs and keeps its state.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub endpoint: String,
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
}

impl LabOptions {
    /// Binaries are looked for next to the running `enifab`.
    pub fn new(endpoint: &str, state_dir: &Path) -> Result<LabOptions> {
        let exe = std::env::current_exe().context("locating enifab")?;
        let bin_dir = exe.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        Ok(LabOptions { endpoint: endpoint.to_string(), state_dir: state_dir.to_path_buf(), bin_dir })
    }

    fn bin(&self, name: &str) -> Result<PathBuf> {
        let p = self.bin_dir.join(name);
        if p.exists() {
            return Ok(p);
        }
        bail!(
            "{name} not found next to enifab (in {}); build the workspace: cargo build --release",
            self.bin_dir.display()
        )
    }
}

/// What a lab made, written after every step so `down` can undo it after a crash.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub id: String,
    pub topology: PathBuf,
    pub endpoint: String,
    pub nodes: BTreeMap<String, NodeState>,
    pub pods: BTreeMap<String, PodState>,
    pub responders: Vec<Responder>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub instance_id: String,
    pub netns: String,
    pub shim_pid: u32,
    pub socket: PathBuf,
    pub primary_ip: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodState {
    pub node: String,
    pub netns: String,
    pub datapath: String,
    pub ip: String,
    pub member_eni: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Responder {
    pub owner: String,
    pub netns: String,
    pub pid: u32,
}

/// A short, stable id for a topology file: namespaces and state are named after it.
pub fn lab_id(topology: &Path) -> String {
    let abs = std::fs::canonicalize(topology).unwrap_or_else(|_| topology.to_path_buf());
    let h = abs
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{:06x}", h & 0xff_ffff)
}

fn state_path(opts: &LabOptions, id: &str) -> PathBuf {
    opts.state_dir.join(format!("lab-{id}.json"))
}

fn load_state(opts: &LabOptions, id: &str) -> Result<Option<LabState>> {
    let p = state_path(opts, id);
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(Some(serde_json::from_str(&s).with_context(|| format!("reading {}", p.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn save_state(opts: &LabOptions, st: &LabState) -> Result<()> {
    std::fs::create_dir_all(&opts.state_dir)?;
    let p = state_path(opts, &st.id);
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(st)?)?;
    std::fs::rename(&tmp, &p)?;
    Ok(())
}

fn require_root() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the lab creates network namespaces, TAP devices and routes: run it as root (sudo)");
    }
    Ok(())
}

fn alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

fn stop_process(pid: u32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if !alive(pid) {
        return;
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        reap(pid);
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(50));
    }
    reap(pid);
}

/// Collect a child that exited, so it does not linger as a zombie (which still has a /proc entry).
fn reap(pid: u32) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let _ = waitpid(nix::unistd::Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
}

/// Our shims and responders whose command line mentions `needle` (a lab's namespace prefix).
fn processes_naming(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            let ours = cmd.contains("enifab-shim") || cmd.contains("responder");
            ours && cmd.contains(needle) && *pid != std::process::id()
        })
        .collect()
}

/// Start a long-running helper detached from our terminal, logging to `log`.
fn spawn_daemon(program: &Path, args: &[String], log: &Path) -> Result<u32> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(child.id())
}

struct Step<'a> {
    log: &'a mut dyn FnMut(String),
}

impl Step<'_> {
    fn say(&mut self, what: &str, detail: impl std::fmt::Display) {
        (self.log)(format!("  {what:<10} {detail}"));
    }
}

/// Sysctls of an ECS node as Terway expects them: forwarding for pod traffic, and no reverse-path
/// filter, since a pod's replies can come back on another device than its requests left by.
const NODE_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/conf/default/rp_filter", "0"),
    ("net/ipv6/conf/all/disable_ipv6", "1"),
    ("net/ipv6/conf/default/disable_ipv6", "1"),
    // Let ping-style ICMP sockets (the lab's icmp probes, `ping` without privileges) work.
    ("net/ipv4/ping_group_range", "0 2147483647"),
];

const POD_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv6/conf/all/disable_ipv6", "1"),
    ("net/ipv6/conf/default/disable_ipv6", "1"),
    ("net/ipv4/ping_group_range", "0 2147483647"),
];

/// `enifab lab up`.
pub async fn up(opts: &LabOptions, file: &Path, log: &mut dyn FnMut(String)) -> Result<LabState> {
    require_root()?;
    let topo = Topology::load(file)?;
    let id = lab_id(file);
    let mut st = load_state(opts, &id)?.unwrap_or_else(|| LabState {
        id: id.clone(),
        topology: std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf()),
        endpoint: opts.endpoint.clone(),
        ..Default::default()
    });
    st.endpoint = opts.endpoint.clone();
    save_state(opts, &st)?;
    let shim = opts.bin("enifab-shim")?;
    let cni = opts.bin("enifab-cni")?;
    let enifab = opts.bin("enifab")?;
    let channel = cli::connect_patiently(&opts.endpoint, Duration::from_secs(10)).await?;
    let mut c = Clients::new(channel);
    let mut step = Step { log };

    (step.log)(format!("lab {id}: cloud ({})", file.display()));
    let applied = apply::apply(&mut c, &topo, &mut |line| (step.log)(format!("  {line}"))).await?;

    (step.log)(format!("lab {id}: nodes"));
    for (i, inst) in topo.instances.iter().enumerate() {
        let name = &inst.name.value;
        let instance_id = applied.instances[name].clone();
        let ns = format!("efb{id}-n{i}");
        netns::create(&ns)?;
        netns::sysctls(&ns, NODE_SYSCTLS)?;
        let socket = opts.state_dir.join(format!("shim-{id}-n{i}.sock"));
        let running = st.nodes.get(name).is_some_and(|n| alive(n.shim_pid) && n.instance_id == instance_id);
        let pid = if running {
            st.nodes[name].shim_pid
        } else {
            let args = vec![
                "--endpoint".into(),
                opts.endpoint.clone(),
                "--instance-id".into(),
                instance_id.clone(),
                "--netns".into(),
                ns.clone(),
                "--control-socket".into(),
                socket.display().to_string(),
            ];
            spawn_daemon(&shim, &args, &opts.state_dir.join(format!("shim-{id}-n{i}.log")))?
        };
        let primary_ip = inst.private_ip.as_ref().map(|p| p.value.clone()).unwrap_or_default();
        st.nodes.insert(
            name.clone(),
            NodeState { instance_id: instance_id.clone(), netns: ns.clone(), shim_pid: pid, socket, primary_ip },
        );
        save_state(opts, &st)?;
        wait_for_node(&ns, &applied.trunks.get(name).cloned(), pid)
            .await
            .with_context(|| format!("node {name} did not come up"))?;
        step.say("node", format!("{name:<26} {instance_id} netns {ns} shim pid {pid}"));
    }

    (step.log)(format!("lab {id}: pods"));
    for (i, pod) in topo.pods.iter().enumerate() {
        let name = &pod.name.value;
        let node = &st.nodes[&pod.node.value];
        let ns = format!("efb{id}-p{i}");
        netns::create(&ns)?;
        netns::sysctls(&ns, POD_SYSCTLS)?;
        let datapath = pod.datapath.as_ref().map_or("veth", |d| d.value.as_str()).to_string();
        let inst = topo.instance(&pod.node.value).expect("checked by the topology");
        let trunk = inst.trunk.as_ref().expect("checked by the topology");
        let vsw = pod.vswitch.as_ref().unwrap_or(&trunk.vswitch).value.clone();
        let groups: Vec<String> =
            if pod.security_groups.is_empty() { &trunk.security_groups } else { &pod.security_groups }
                .iter()
                .map(|g| applied.security_groups[&g.value].clone())
                .collect();
        let netconf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("enifab-{id}"),
            "type": "enifab-cni",
            "endpoint": opts.endpoint,
            "instanceId": node.instance_id,
            "trunkNetworkInterfaceId": applied.trunks[&pod.node.value],
            "nodeNetns": netns::path(&node.netns),
            "shimSocket": node.socket,
            "stateDir": opts.state_dir.join("cni"),
            "datapath": datapath,
            "vSwitchId": applied.vswitches[&vsw],
            "securityGroupIds": groups,
            "tags": { "enifab:lab": id },
        });
        let mut args = vec![format!("K8S_POD_NAMESPACE=default"), format!("K8S_POD_NAME={name}")];
        if let Some(ip) = &pod.ip {
            args.push(format!("ENIFAB_IP={}", ip.value));
        }
        let result = run_cni(&cni, "ADD", &format!("{id}-{name}"), &netns::path(&ns), &args.join(";"), &netconf)
            .with_context(|| format!("CNI ADD for pod {name}"))?;
        let ip = result["ips"][0]["address"].as_str().unwrap_or("").split('/').next().unwrap_or("").to_string();
        let (member, vlan) = member_of(&mut c, &ip).await?;
        st.pods.insert(
            name.clone(),
            PodState {
                node: pod.node.value.clone(),
                netns: ns.clone(),
                datapath: datapath.clone(),
                ip: ip.clone(),
                member_eni: member.clone(),
            },
        );
        save_state(opts, &st)?;
        step.say("pod", format!("{name:<26} {ip:<12} {datapath:<5} on {} member {member} vlan {vlan}", pod.node.value));
    }

    (step.log)(format!("lab {id}: servers"));
    // (owner, namespace, [(protocol, port)])
    type Servers = Vec<(String, u16)>;
    let mut wanted: Vec<(String, String, Servers)> = Vec::new();
    for inst in &topo.instances {
        if !inst.servers.is_empty() {
            let ns = st.nodes[&inst.name.value].netns.clone();
            wanted.push((
                inst.name.value.clone(),
                ns,
                inst.servers.iter().map(|s| (s.protocol.value.clone(), s.port.value)).collect(),
            ));
        }
    }
    for pod in &topo.pods {
        if !pod.servers.is_empty() {
            let ns = st.pods[&pod.name.value].netns.clone();
            wanted.push((
                pod.name.value.clone(),
                ns,
                pod.servers.iter().map(|s| (s.protocol.value.clone(), s.port.value)).collect(),
            ));
        }
    }
    for (owner, ns, servers) in wanted {
        if st.responders.iter().any(|r| r.owner == owner && alive(r.pid)) {
            continue;
        }
        let mut args = vec![
            "lab".into(),
            "responder".into(),
            "--netns".into(),
            netns::path(&ns).display().to_string(),
            "--name".into(),
            owner.clone(),
        ];
        for (proto, port) in &servers {
            args.push(format!("--{proto}"));
            args.push(port.to_string());
        }
        let pid = spawn_daemon(&enifab, &args, &opts.state_dir.join(format!("responder-{id}-{ns}.log")))?;
        st.responders.retain(|r| r.owner != owner);
        st.responders.push(Responder { owner: owner.clone(), netns: ns, pid });
        save_state(opts, &st)?;
        let list: Vec<String> = servers.iter().map(|(p, n)| format!("{p}/{n}")).collect();
        step.say("server", format!("{owner:<26} {}", list.join(" ")));
    }
    // Give the responders a moment to bind before anyone probes them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (step.log)(format!("lab {id}: up"));
    Ok(st)
}

/// The member ENI that holds a pod IP, and its VLAN id.
async fn member_of(c: &mut Clients, ip: &str) -> Result<(String, i32)> {
    let r = c
        .ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            private_ip_address: vec![ip.to_string()],
            r#type: "Member".into(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("DescribeNetworkInterfaces: {}", describe_status(&s)))?
        .into_inner();
    let e = r.network_interface_sets.unwrap_or_default().network_interface_set.into_iter().next();
    let e = e.ok_or_else(|| anyhow!("no member ENI holds {ip}"))?;
    Ok((e.network_interface_id, e.attachment.map_or(0, |a| a.device_index)))
}

/// A node is up when its shim has plugged eth0 (and the trunk, when there is one) in.
async fn wait_for_node(ns: &str, trunk: &Option<String>, pid: u32) -> Result<()> {
    let want = if trunk.is_some() { 2 } else { 1 };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // /sys shows the namespace it was mounted in, not the thread's: ask netlink through ip.
        let links = ["eth0", "eth1"]
            .iter()
            .filter(|d| {
                Command::new("ip").args(["-n", ns, "link", "show", d]).output().is_ok_and(|o| o.status.success())
            })
            .count();
        if links >= want {
            return Ok(());
        }
        if !alive(pid) {
            bail!("the shim (pid {pid}) exited; see its log in the state directory");
        }
        if Instant::now() > deadline {
            bail!("eth0/eth1 did not appear in {ns} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run the CNI plugin as a runtime would: the command in the environment, the network
/// configuration on stdin, the result (or a CNI error) on stdout.
fn run_cni(
    cni: &Path,
    command: &str,
    container: &str,
    pod_ns: &Path,
    args: &str,
    netconf: &serde_json::Value,
) -> Result<serde_json::Value> {
    use std::io::Write;
    let mut child = Command::new(cni)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", pod_ns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", args)
        .env("CNI_PATH", cni.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", cni.display()))?;
    // A plugin may answer without reading its configuration (a usage error): a closed pipe here
    // is not the failure to report, its answer is.
    let _ = child.stdin.take().expect("piped").write_all(netconf.to_string().as_bytes());
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err: serde_json::Value = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
        let msg = err["msg"].as_str().map(str::to_string).unwrap_or_else(|| stdout.trim().to_string());
        let details = err["details"].as_str().unwrap_or("");
        bail!("{msg} {details} (code {}) {}", err["code"], String::from_utf8_lossy(&out.stderr).trim());
    }
    if stdout.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&stdout).with_context(|| format!("the CNI's answer is not JSON: {stdout}"))
}

/// One row of `check`'s table.
#[derive(Debug, Clone)]
pub struct CheckRow {
    pub name: String,
    pub scenario: Option<u32>,
    pub what: String,
    pub path: String,
    pub expected: String,
    pub got: String,
    pub passed: bool,
    pub detail: String,
}

/// `enifab lab check`: run every probe and report.
pub async fn check(opts: &LabOptions, file: &Path) -> Result<Vec<CheckRow>> {
    require_root()?;
    let topo = Topology::load(file)?;
    let id = lab_id(file);
    let st =
        load_state(opts, &id)?.ok_or_else(|| anyhow!("lab {id} is not up: run enifab lab up {}", file.display()))?;
    let channel = cli::connect_patiently(&opts.endpoint, Duration::from_secs(10)).await?;
    let mut c = Clients::new(channel);
    let groups = group_ids(&mut c, &topo).await?;
    let names = port_names(&mut c, &st).await?;
    let mut rows = Vec::new();
    for chk in &topo.checks {
        let from_ns = match (st.pods.get(&chk.from.value), st.nodes.get(&chk.from.value)) {
            (Some(p), _) => p.netns.clone(),
            (None, Some(n)) => n.netns.clone(),
            _ => bail!("{} is not up", chk.from.value),
        };
        let to_ip: Ipv4Addr = match (st.pods.get(&chk.to.value), st.nodes.get(&chk.to.value)) {
            (Some(p), _) => p.ip.parse()?,
            (None, Some(n)) => n.primary_ip.parse()?,
            _ => {
                chk.to.value.parse().with_context(|| format!("{} is neither a pod, a node nor an IP", chk.to.value))?
            }
        };
        let proto = probe::Proto::parse(&chk.protocol.value).expect("checked by the topology");
        let port = chk.port.as_ref().map_or(0, |p| p.value);
        for ch in &chk.changes {
            change(&mut c, ch, &groups, false).await?;
        }
        let before = counters(&mut c).await?;
        let from_ns2 = from_ns.clone();
        let outcome = tokio::task::spawn_blocking(move || probe::probe(&from_ns2, to_ip, proto, port)).await??;
        // Let the last frames of the exchange be counted.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let after = counters(&mut c).await?;
        for ch in chk.changes.iter().rev() {
            change(&mut c, ch, &groups, true).await?;
        }
        let got = outcome.word().to_string();
        let passed = got == chk.expect.value;
        let detail = match &outcome {
            probe::Outcome::Reachable(words) => words.clone(),
            probe::Outcome::Error(e) => e.clone(),
            probe::Outcome::Refused => "connection refused: the path works, nothing listens".into(),
            probe::Outcome::Timeout => String::new(),
        };
        let what = format!(
            "{} → {} {}{}",
            chk.from.value,
            chk.to.value,
            chk.protocol.value,
            if port != 0 { format!("/{port}") } else { String::new() }
        );
        rows.push(CheckRow {
            name: chk.name.value.clone(),
            scenario: chk.scenario,
            what,
            path: path_summary(&before, &after, &names),
            expected: chk.expect.value.clone(),
            got,
            passed,
            detail: if passed {
                detail
            } else {
                format!("{detail} {}", chk.why.clone().unwrap_or_default()).trim().to_string()
            },
        });
    }
    Ok(rows)
}

/// Security group names of the topology → IDs, all of which must exist.
async fn group_ids(c: &mut Clients, topo: &Topology) -> Result<HashMap<String, String>> {
    let found = lookup(c, topo).await?.security_groups;
    if let Some(g) = topo.security_groups.iter().find(|g| !found.contains_key(&g.name.value)) {
        bail!("security group {} does not exist: is the lab up?", g.name.value);
    }
    Ok(found)
}

/// Authorize a change's rule (or revoke it when undoing), or the reverse for `remove`.
async fn change(c: &mut Clients, ch: &ChangeSpec, groups: &HashMap<String, String>, undo: bool) -> Result<()> {
    let sg = groups[&ch.group.value].clone();
    let (rule, authorize) = match (&ch.add, &ch.remove) {
        (Some(r), _) => (r, !undo),
        (None, Some(r)) => (r, undo),
        (None, None) => return Ok(()),
    };
    let ingress = ch.direction.value == "ingress";
    let p = apply::rule_permission(if ingress { "ingress" } else { "egress" }, rule, groups);
    let r = if authorize {
        apply::authorize(c, "", &sg, ingress, vec![p]).await
    } else {
        apply::revoke(c, "", &sg, ingress, vec![p], Vec::new()).await
    };
    r.map_err(|s| anyhow!("changing {}: {}", ch.group.value, describe_status(&s)))
}

async fn counters(c: &mut Clients) -> Result<pb::DescribeFabricCountersResponse> {
    Ok(c.fabric
        .describe_fabric_counters(pb::DescribeFabricCountersRequest::default())
        .await
        .map_err(|s| anyhow!("DescribeFabricCounters: {}", describe_status(&s)))?
        .into_inner())
}

/// ENI id → "node/ethN" for the ports of the lab's nodes.
async fn port_names(c: &mut Clients, st: &LabState) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, node) in &st.nodes {
        let r = c
            .ecs
            .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                instance_id: node.instance_id.clone(),
                max_results: Some(100),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow!("DescribeNetworkInterfaces: {}", describe_status(&s)))?
            .into_inner();
        for e in r.network_interface_sets.unwrap_or_default().network_interface_set {
            let idx = e.attachment.map_or(0, |a| a.device_index);
            out.insert(e.network_interface_id, format!("{}/eth{idx}", short_node_name(name)));
        }
    }
    Ok(out)
}

/// ACK names nodes `<region>.<primary IP>`; in a table, `node .22` says as much. Other names
/// stay as they are.
fn short_node_name(name: &str) -> String {
    match name.split_once('.') {
        Some((_, ip)) if ip.parse::<Ipv4Addr>().is_ok() => format!("node .{}", ip.rsplit('.').next().unwrap_or(ip)),
        _ => name.to_string(),
    }
}

/// Which fabric ports the probe's frames crossed, and where any were dropped.
fn path_summary(
    before: &pb::DescribeFabricCountersResponse,
    after: &pb::DescribeFabricCountersResponse,
    names: &BTreeMap<String, String>,
) -> String {
    let prior = |vni: u32| before.ports.iter().find(|p| p.vni == vni);
    let mut ins = Vec::new();
    let mut outs = Vec::new();
    let mut drops = Vec::new();
    for p in &after.ports {
        let b = prior(p.vni);
        let name = names.get(&p.network_interface_id).cloned().unwrap_or_else(|| p.network_interface_id.clone());
        if p.rx_frames > b.map_or(0, |b| b.rx_frames) {
            ins.push(name.clone());
        }
        if p.tx_frames > b.map_or(0, |b| b.tx_frames) {
            outs.push(name.clone());
        }
        for d in &p.drops {
            let was = b.and_then(|b| b.drops.iter().find(|x| x.reason == d.reason)).map_or(0, |x| x.frames);
            if d.frames > was {
                drops.push(format!("{} (frame from {name})", d.reason));
            }
        }
    }
    if ins.is_empty() && outs.is_empty() && drops.is_empty() {
        return "stayed on the node (host routing, never reached the VPC)".into();
    }
    let mut s = format!(
        "VPC in: {} | out: {}",
        if ins.is_empty() { "-".into() } else { ins.join(", ") },
        if outs.is_empty() { "-".into() } else { outs.join(", ") }
    );
    if !drops.is_empty() {
        s.push_str(&format!(" | dropped: {}", drops.join(", ")));
    }
    s
}

/// The table `check` prints, and its closing line: one row per check, then what was probed and
/// the way the traffic went (which fabric ports it entered and left by, and any drop).
pub fn render(rows: &[CheckRow]) -> String {
    let width = rows.iter().map(|r| r.name.chars().count()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<4} {:<width$}  {:<10} {:<10}\n", "SOP", "CHECK", "EXPECTED", "GOT");
    for r in rows {
        let sop = r.scenario.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        let verdict = if r.passed { "ok" } else { "MISMATCH" };
        out.push_str(&format!("{sop:<4} {:<width$}  {:<10} {:<10} {verdict}\n", r.name, r.expected, r.got));
        out.push_str(&format!("     {}: {}\n", r.what, r.path));
        if !r.passed && !r.detail.is_empty() {
            out.push_str(&format!("     note: {}\n", r.detail));
        }
    }
    let passed = rows.iter().filter(|r| r.passed).count();
    out.push_str(&format!("{} passed, {} failed\n", passed, rows.len() - passed));
    out
}

/// `enifab lab down`: undo what `up` made, in reverse, tolerating what is already gone.
pub async fn down(opts: &LabOptions, file: &Path, log: &mut dyn FnMut(String)) -> Result<()> {
    require_root()?;
    let id = lab_id(file);
    let st = load_state(opts, &id)?.unwrap_or_else(|| LabState { id: id.clone(), ..Default::default() });
    let cni = opts.bin("enifab-cni").ok();
    let mut problems = Vec::new();
    let topo = Topology::load(file);

    for (name, pod) in &st.pods {
        if let (Some(cni), Some(node)) = (&cni, st.nodes.get(&pod.node)) {
            let netconf = serde_json::json!({
                "cniVersion": "1.0.0",
                "name": format!("enifab-{id}"),
                "type": "enifab-cni",
                "endpoint": opts.endpoint,
                "instanceId": node.instance_id,
                "nodeNetns": netns::path(&node.netns),
                "shimSocket": node.socket,
            "stateDir": opts.state_dir.join("cni"),
                "datapath": pod.datapath,
            });
            let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}");
            if let Err(e) = run_cni(cni, "DEL", &format!("{id}-{name}"), &netns::path(&pod.netns), &args, &netconf) {
                problems.push(format!("CNI DEL {name}: {e:#}"));
            }
        }
        log(format!("  pod      {name} removed"));
    }
    for r in &st.responders {
        stop_process(r.pid);
    }
    for (name, node) in &st.nodes {
        stop_process(node.shim_pid);
        let _ = std::fs::remove_file(&node.socket);
        log(format!("  node     {name} shim stopped"));
    }
    // A crash between starting a helper and recording it leaves a process the state does not
    // know: find the lab's shims and responders by the namespaces they were given.
    for pid in processes_naming(&format!("efb{id}-")) {
        stop_process(pid);
    }
    for ns in netns::list(&format!("efb{id}-")) {
        if let Err(e) = netns::delete(&ns) {
            problems.push(format!("{e:#}"));
        }
    }
    match topo {
        Ok(topo) => match cli::connect_patiently(&opts.endpoint, Duration::from_secs(5)).await {
            Ok(channel) => {
                let mut c = Clients::new(channel);
                if let Err(e) = delete_cloud(&mut c, &topo, &id, log).await {
                    problems.push(format!("cloud: {e:#}"));
                }
            }
            Err(e) => problems.push(format!("cloud resources left (emulator unreachable): {e}")),
        },
        Err(e) => problems.push(format!("cloud resources left (topology unreadable): {e:#}")),
    }
    if problems.is_empty() {
        let _ = std::fs::remove_file(state_path(opts, &id));
        log(format!("lab {id}: down"));
        Ok(())
    } else {
        bail!("lab {id} partly down:\n  {}", problems.join("\n  "))
    }
}

/// An answer that says the resource is already gone is as good as success when tearing down.
fn tolerate_gone<T>(r: Result<T, tonic::Status>, what: impl FnOnce() -> String) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(s) if crate::grpc::status::cloud_error(&s).is_some_and(|(code, _)| code.ends_with(".NotFound")) => Ok(()),
        Err(s) => Err(anyhow!("{}: {}", what(), describe_status(&s))),
    }
}

/// Delete the topology's cloud resources (found by name), members and trunks first.
async fn delete_cloud(c: &mut Clients, topo: &Topology, id: &str, log: &mut dyn FnMut(String)) -> Result<()> {
    let enis =
        |r: pb::DescribeNetworkInterfacesResponse| r.network_interface_sets.unwrap_or_default().network_interface_set;
    // Member ENIs the CNI could not remove (tagged by the lab), then the trunks.
    let tagged = c
        .ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            tag: vec![pb::Tag { key: "enifab:lab".into(), value: id.into() }],
            max_results: Some(500),
            ..Default::default()
        })
        .await
        .map(|r| enis(r.into_inner()))
        .unwrap_or_default();
    let trunks = c
        .ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            r#type: "Trunk".into(),
            max_results: Some(500),
            ..Default::default()
        })
        .await
        .map(|r| enis(r.into_inner()))
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.tags.as_ref().is_some_and(|t| {
                t.tag.iter().any(|t| t.tag_key == apply::TRUNK_TAG && topo.instance(&t.tag_value).is_some())
            })
        })
        .collect::<Vec<_>>();
    // Members first: a trunk cannot be detached while it still carries any.
    for group in [&tagged, &trunks] {
        for e in group.iter() {
            if e.instance_id.is_empty() {
                continue;
            }
            let trunk = e.attachment.as_ref().map(|a| a.trunk_network_interface_id.clone()).unwrap_or_default();
            let r = c
                .ecs
                .detach_network_interface(pb::DetachNetworkInterfaceRequest {
                    instance_id: e.instance_id.clone(),
                    network_interface_id: e.network_interface_id.clone(),
                    trunk_network_instance_id: trunk,
                    ..Default::default()
                })
                .await;
            tolerate_gone(r, || format!("detaching {}", e.network_interface_id))?;
        }
        for e in group.iter() {
            wait_eni(c, &e.network_interface_id, "Available").await?;
            let r = c
                .ecs
                .delete_network_interface(pb::DeleteNetworkInterfaceRequest {
                    network_interface_id: e.network_interface_id.clone(),
                    ..Default::default()
                })
                .await;
            tolerate_gone(r, || format!("deleting {}", e.network_interface_id))?;
            // Deleting takes a moment in the cloud too; its groups stay in use until it is gone.
            wait_eni(c, &e.network_interface_id, "").await?;
            log(format!("  eni      {} deleted", e.network_interface_id));
        }
    }
    let applied = lookup(c, topo).await?;
    for (name, iid) in &applied.instances {
        let r = c
            .ecs
            .delete_instance(pb::DeleteInstanceRequest {
                instance_id: iid.clone(),
                force: Some(true),
                ..Default::default()
            })
            .await;
        tolerate_gone(r, || format!("deleting instance {name}"))?;
        log(format!("  instance {name} deleted"));
    }
    // Rules may name other groups of the file: empty every group before deleting any.
    for sg in applied.security_groups.values() {
        let attr = c
            .ecs
            .describe_security_group_attribute(pb::DescribeSecurityGroupAttributeRequest {
                security_group_id: sg.clone(),
                ..Default::default()
            })
            .await;
        if let Ok(attr) = attr {
            let perms = attr.into_inner().permissions.unwrap_or_default().permission;
            let (ing, eg): (Vec<_>, Vec<_>) = perms.into_iter().partition(|p| p.direction == "ingress");
            let ids = |v: Vec<pb::PermissionItem>| v.into_iter().map(|p| p.security_group_rule_id).collect();
            // Best effort: a group that cannot be emptied fails its own delete below, with a reason.
            let _ = apply::revoke(c, "", sg, true, Vec::new(), ids(ing)).await;
            let _ = apply::revoke(c, "", sg, false, Vec::new(), ids(eg)).await;
        }
    }
    for (name, sg) in &applied.security_groups {
        let r = c
            .ecs
            .delete_security_group(pb::DeleteSecurityGroupRequest {
                security_group_id: sg.clone(),
                ..Default::default()
            })
            .await;
        tolerate_gone(r, || format!("deleting security group {name}"))?;
        log(format!("  group    {name} deleted"));
    }
    for (name, vsw) in &applied.vswitches {
        let r =
            c.vpc.delete_v_switch(pb::DeleteVSwitchRequest { v_switch_id: vsw.clone(), ..Default::default() }).await;
        tolerate_gone(r, || format!("deleting vswitch {name}"))?;
    }
    for (name, vpc) in &applied.vpcs {
        let r = c.vpc.delete_vpc(pb::DeleteVpcRequest { vpc_id: vpc.clone(), ..Default::default() }).await;
        tolerate_gone(r, || format!("deleting vpc {name}"))?;
        log(format!("  vpc      {name} deleted"));
    }
    Ok(())
}

/// Wait until an ENI is `status`, or gone (which also satisfies an empty `status`).
async fn wait_eni(c: &mut Clients, eni: &str, status: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .ecs
            .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                network_interface_id: vec![eni.to_string()],
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow!("{}", describe_status(&s)))?
            .into_inner();
        match r.network_interface_sets.unwrap_or_default().network_interface_set.first() {
            None => return Ok(()),
            Some(e) if e.status == status => return Ok(()),
            Some(e) if Instant::now() > deadline => bail!("{eni} stuck in {}", e.status),
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Find the topology's resources by name without creating anything, as `apply` finds them.
async fn lookup(c: &mut Clients, topo: &Topology) -> Result<Applied> {
    let region = &topo.region.value;
    let mut out = Applied::default();
    for v in &topo.vpcs {
        let Some(vpc) = apply::find_vpc(c, region, &v.name.value).await? else { continue };
        for s in &v.vswitches {
            if let Some(vsw) = apply::find_vswitch(c, region, &vpc.vpc_id, &s.name.value).await? {
                out.vswitches.insert(s.name.value.clone(), vsw.v_switch_id);
            }
        }
        out.vpcs.insert(v.name.value.clone(), vpc.vpc_id);
    }
    for g in &topo.security_groups {
        let Some(vpc_id) = out.vpcs.get(&g.vpc.value) else { continue };
        if let Some(sg) = apply::find_group(c, region, vpc_id, &g.name.value).await? {
            out.security_groups.insert(g.name.value.clone(), sg.security_group_id);
        }
    }
    for i in &topo.instances {
        if let Some(inst) = apply::find_instance(c, region, &i.name.value).await? {
            out.instances.insert(i.name.value.clone(), inst.instance_id);
        }
    }
    Ok(out)
}

/// The exit code of `check`: non-zero on any mismatch.
pub fn exit_code(rows: &[CheckRow]) -> ExitCode {
    if rows.iter().all(|r| r.passed) { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_shorten_only_when_they_end_in_an_address() {
        assert_eq!(short_node_name("cn-hongkong.10.0.4.22"), "node .22");
        assert_eq!(short_node_name("node-a"), "node-a");
        assert_eq!(short_node_name("a.b"), "a.b");
    }

    #[test]
    fn the_table_closes_with_the_counts() {
        let row = |name: &str, passed: bool| CheckRow {
            name: name.into(),
            scenario: Some(4),
            what: "a → b http/80".into(),
            path: "stayed on the node (host routing, never reached the VPC)".into(),
            expected: "reachable".into(),
            got: if passed { "reachable".into() } else { "blocked".into() },
            passed,
            detail: "why it differs".into(),
        };
        let t = render(&[row("first", true), row("second", false)]);
        assert!(t.ends_with("1 passed, 1 failed\n"), "{t}");
        assert!(t.contains("MISMATCH") && t.contains("note: why it differs"), "{t}");
        assert_eq!(exit_code(&[row("x", true)]), ExitCode::SUCCESS);
        assert_eq!(exit_code(&[row("x", false)]), ExitCode::from(1));
    }
}
