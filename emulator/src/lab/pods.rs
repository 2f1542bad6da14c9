//! Pods and their servers, whichever runtime carries them out. A pod is wired by the CNI plugin
//! `enifab-cni` as a container runtime runs one (`ADD` with the pod's name in `CNI_ARGS` and a
//! network configuration), given the member ENI's vSwitch and groups a PodNetworking would give
//! it; `DEL` undoes it. The built-in responders (`enifab lab responder`) run in pods', nodes' and
//! external clients' namespaces.
//!
//! It does not decide what a pod's network looks like (the CNI plugin does, as Terway's does),
//! nor which member ENI it gets (the cloud does), nor where the namespace is (the runtime does):
//! it asks, and records the answers.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use enifab_proto::v1 as pb;

use super::runtime::{Place, PodRequest, Runtime};
use super::state::{self, LabState, PodState};
use super::{LabOptions, Log};
use crate::apply::Applied;
use crate::cli::{Clients, describe_status};
use crate::topology::{ServerSpec, Topology};

/// Run `enifab-cni ADD` for every pod of the file (idempotent: a pod that exists is re-checked
/// and keeps its member ENI).
pub(crate) async fn up_pods(
    opts: &LabOptions,
    rt: &Runtime,
    topo: &Topology,
    applied: &Applied,
    c: &mut Clients,
    st: &mut LabState,
    log: &mut Log<'_>,
) -> Result<()> {
    let id = st.id.clone();
    for (i, pod) in topo.pods.iter().enumerate() {
        let name = &pod.name.value;
        let datapath = pod.datapath.as_ref().map_or("veth", |d| d.value.as_str()).to_string();
        let inst = topo.instance(&pod.node.value).expect("checked by the topology");
        let trunk = inst.trunk.as_ref().expect("checked by the topology");
        let vsw = pod.vswitch.as_ref().unwrap_or(&trunk.vswitch).value.clone();
        let groups: Vec<String> =
            if pod.security_groups.is_empty() { &trunk.security_groups } else { &pod.security_groups }
                .iter()
                .map(|g| applied.security_groups[&g.value].clone())
                .collect();
        let mut conf = netconf(&id, &datapath);
        conf["trunkNetworkInterfaceId"] = applied.trunks[&pod.node.value].clone().into();
        conf["vSwitchId"] = applied.vswitches[&vsw].clone().into();
        conf["securityGroupIds"] = groups.into();
        conf["tags"] = serde_json::json!({ "enifab:lab": id });
        let mut args = vec!["K8S_POD_NAMESPACE=default".to_string(), format!("K8S_POD_NAME={name}")];
        if let Some(ip) = &pod.ip {
            args.push(format!("ENIFAB_IP={}", ip.value));
        }
        let req = PodRequest {
            index: i,
            name: name.clone(),
            node: pod.node.value.clone(),
            container_id: format!("{id}-{name}"),
            cni_args: args.join(";"),
            netconf: conf,
        };
        let (ns, result) = rt.add_pod(opts, st, req).await.with_context(|| format!("CNI ADD for pod {name}"))?;
        let ip = result["ips"][0]["address"].as_str().unwrap_or("").split('/').next().unwrap_or("").to_string();
        let (member, vlan) = member_of(c, &ip).await?;
        st.pods.insert(
            name.clone(),
            PodState {
                node: pod.node.value.clone(),
                netns: ns,
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
pub(crate) async fn down_pods(
    opts: &LabOptions,
    rt: &Runtime,
    st: &LabState,
    log: &mut Log<'_>,
    problems: &mut Vec<String>,
) {
    for (i, (name, pod)) in st.pods.iter().enumerate() {
        if st.nodes.contains_key(&pod.node) {
            let req = PodRequest {
                index: i,
                name: name.clone(),
                node: pod.node.clone(),
                container_id: format!("{}-{name}", st.id),
                cni_args: format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"),
                netconf: netconf(&st.id, &pod.datapath),
            };
            if let Err(e) = rt.delete_pod(opts, st, req, &pod.netns).await {
                problems.push(format!("CNI DEL {name}: {e:#}"));
            }
        }
        log.say("pod", format!("{name} removed"));
    }
}

/// The network configuration both ADD and DEL get, but for the node's own fields (the
/// runtime's) and the cloud's (ADD's).
fn netconf(id: &str, datapath: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("enifab-{id}"),
        "type": "enifab-cni",
        "datapath": datapath,
    })
}

/// Start the built-in responders the file asks for (nodes, pods, external clients), unless they
/// run already.
pub(crate) async fn up_servers(
    opts: &LabOptions,
    rt: &Runtime,
    topo: &Topology,
    st: &mut LabState,
    log: &mut Log<'_>,
) -> Result<()> {
    let ports = |servers: &[ServerSpec]| -> Vec<(String, u16)> {
        servers.iter().map(|s| (s.protocol.value.clone(), s.port.value)).collect()
    };
    let mut wanted: Vec<(String, Vec<(String, u16)>)> = Vec::new();
    for inst in topo.instances.iter().filter(|i| !i.servers.is_empty()) {
        wanted.push((inst.name.value.clone(), ports(&inst.servers)));
    }
    for pod in topo.pods.iter().filter(|p| !p.servers.is_empty()) {
        wanted.push((pod.name.value.clone(), ports(&pod.servers)));
    }
    for x in topo.external_clients.iter().filter(|x| !x.servers.is_empty()) {
        wanted.push((x.name.value.clone(), ports(&x.servers)));
    }
    let mut started_any = false;
    for (owner, servers) in wanted {
        let place = Place::of(st, &owner).ok_or_else(|| anyhow!("{owner} is not up"))?;
        let (r, started) = rt.start_responders(opts, st, &owner, place, &servers).await?;
        st.responders.retain(|x| x.owner != owner);
        st.responders.push(r);
        state::save(opts, st)?;
        if started {
            let list: Vec<String> = servers.iter().map(|(p, n)| format!("{p}/{n}")).collect();
            log.say("server", format!("{owner:<26} {}", list.join(" ")));
            started_any = true;
        }
    }
    if started_any {
        // Give the responders a moment to bind before anyone probes them.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
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
