//! The lab's node runtime, second half: pods and their servers. A pod is a namespace
//! (`efb<id>-p<i>`) wired by `enifab-cni ADD` run as a container runtime runs a CNI plugin (the
//! command in the environment, the network configuration on stdin, the result on stdout), with
//! the member ENI's vSwitch and groups a PodNetworking would give it; `DEL` undoes it. The
//! built-in responders (`enifab lab responder`) run in pods', nodes' and external clients'
//! namespaces.
//!
//! It does not decide what a pod's network looks like (the CNI plugin does, as Terway's does) nor
//! which member ENI it gets (the cloud does): it asks, and records the answer.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use enifab_proto::v1 as pb;

use super::nodes::HOST_SYSCTLS;
use super::process::{alive, spawn_daemon, stop};
use super::state::{self, LabState, PodState, Responder};
use super::{LabOptions, Log, netns};
use crate::apply::Applied;
use crate::cli::{Clients, describe_status};
use crate::topology::{ServerSpec, Topology};

/// Run `enifab-cni ADD` for every pod of the file (idempotent: a pod that exists is re-checked
/// and keeps its member ENI).
pub(crate) async fn up_pods(
    opts: &LabOptions,
    topo: &Topology,
    applied: &Applied,
    c: &mut Clients,
    st: &mut LabState,
    log: &mut Log<'_>,
) -> Result<()> {
    let cni = opts.bin("enifab-cni")?;
    let id = st.id.clone();
    for (i, pod) in topo.pods.iter().enumerate() {
        let name = &pod.name.value;
        let node = &st.nodes[&pod.node.value];
        let ns = format!("efb{id}-p{i}");
        netns::create(&ns)?;
        netns::sysctls(&ns, HOST_SYSCTLS)?;
        let datapath = pod.datapath.as_ref().map_or("veth", |d| d.value.as_str()).to_string();
        let inst = topo.instance(&pod.node.value).expect("checked by the topology");
        let trunk = inst.trunk.as_ref().expect("checked by the topology");
        let vsw = pod.vswitch.as_ref().unwrap_or(&trunk.vswitch).value.clone();
        let groups: Vec<String> =
            if pod.security_groups.is_empty() { &trunk.security_groups } else { &pod.security_groups }
                .iter()
                .map(|g| applied.security_groups[&g.value].clone())
                .collect();
        let mut conf = netconf(opts, &id, &node.instance_id, &node.netns, &node.socket, &datapath);
        conf["trunkNetworkInterfaceId"] = applied.trunks[&pod.node.value].clone().into();
        conf["vSwitchId"] = applied.vswitches[&vsw].clone().into();
        conf["securityGroupIds"] = groups.into();
        conf["tags"] = serde_json::json!({ "enifab:lab": id });
        let mut args = vec!["K8S_POD_NAMESPACE=default".to_string(), format!("K8S_POD_NAME={name}")];
        if let Some(ip) = &pod.ip {
            args.push(format!("ENIFAB_IP={}", ip.value));
        }
        let result = run_cni(&cni, "ADD", &format!("{id}-{name}"), &netns::path(&ns), &args.join(";"), &conf)
            .with_context(|| format!("CNI ADD for pod {name}"))?;
        let ip = result["ips"][0]["address"].as_str().unwrap_or("").split('/').next().unwrap_or("").to_string();
        let (member, vlan) = member_of(c, &ip).await?;
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
        state::save(opts, st)?;
        log.say("pod", format!("{name:<26} {ip:<12} {datapath:<5} on {} member {member} vlan {vlan}", pod.node.value));
    }
    Ok(())
}

/// `enifab-cni DEL` for every pod the state knows; problems are collected, not fatal.
pub(crate) fn down_pods(opts: &LabOptions, st: &LabState, log: &mut Log<'_>, problems: &mut Vec<String>) {
    let cni = opts.bin("enifab-cni").ok();
    for (name, pod) in &st.pods {
        if let (Some(cni), Some(node)) = (&cni, st.nodes.get(&pod.node)) {
            let conf = netconf(opts, &st.id, &node.instance_id, &node.netns, &node.socket, &pod.datapath);
            let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}");
            if let Err(e) = run_cni(cni, "DEL", &format!("{}-{name}", st.id), &netns::path(&pod.netns), &args, &conf) {
                problems.push(format!("CNI DEL {name}: {e:#}"));
            }
        }
        log.say("pod", format!("{name} removed"));
    }
}

/// The network configuration both ADD and DEL get.
fn netconf(
    opts: &LabOptions,
    id: &str,
    instance_id: &str,
    node_ns: &str,
    socket: &Path,
    datapath: &str,
) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("enifab-{id}"),
        "type": "enifab-cni",
        "endpoint": opts.endpoint,
        "instanceId": instance_id,
        "nodeNetns": netns::path(node_ns),
        "shimSocket": socket,
        "stateDir": opts.state_dir.join("cni"),
        "datapath": datapath,
    })
}

/// Start the built-in responders the file asks for (nodes, pods, external clients), unless they
/// run already.
pub(crate) async fn up_servers(opts: &LabOptions, topo: &Topology, st: &mut LabState, log: &mut Log<'_>) -> Result<()> {
    let enifab = opts.bin("enifab")?;
    let ports = |servers: &[ServerSpec]| -> Vec<(String, u16)> {
        servers.iter().map(|s| (s.protocol.value.clone(), s.port.value)).collect()
    };
    // (owner, namespace, [(protocol, port)])
    type Wanted = Vec<(String, String, Vec<(String, u16)>)>;
    let mut wanted: Wanted = Vec::new();
    for inst in topo.instances.iter().filter(|i| !i.servers.is_empty()) {
        wanted.push((inst.name.value.clone(), st.nodes[&inst.name.value].netns.clone(), ports(&inst.servers)));
    }
    for pod in topo.pods.iter().filter(|p| !p.servers.is_empty()) {
        wanted.push((pod.name.value.clone(), st.pods[&pod.name.value].netns.clone(), ports(&pod.servers)));
    }
    for x in topo.external_clients.iter().filter(|x| !x.servers.is_empty()) {
        wanted.push((x.name.value.clone(), st.externals[&x.name.value].netns.clone(), ports(&x.servers)));
    }
    let mut started = false;
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
        let pid = spawn_daemon(&enifab, &args, &state::file(opts, &format!("responder-{}-{ns}.log", st.id)))?;
        st.responders.retain(|r| r.owner != owner);
        st.responders.push(Responder { owner: owner.clone(), netns: ns, pid });
        state::save(opts, st)?;
        let list: Vec<String> = servers.iter().map(|(p, n)| format!("{p}/{n}")).collect();
        log.say("server", format!("{owner:<26} {}", list.join(" ")));
        started = true;
    }
    if started {
        // Give the responders a moment to bind before anyone probes them.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

pub(crate) fn stop_servers(st: &LabState) {
    for r in &st.responders {
        stop(r.pid);
    }
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
