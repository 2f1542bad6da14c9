//! Pods and their servers, whichever runtime carries them out. A pod is wired by the CNI plugin
//! `enifab-cni` as a container runtime runs one (`ADD` with the pod's name in `CNI_ARGS` and a
//! network configuration), given the member ENI's vSwitch and groups a PodNetworking would give
//! it, and for a dual-stack pod `ENIFAB_IP_STACK=dual` (and its pinned `ENIFAB_IP6`); `DEL`
//! undoes it. The built-in responders (`enifab lab responder`) run in pods', nodes' and
//! external clients' namespaces.
//!
//! It does not decide what a pod's network looks like (the CNI plugin does, as Terway's does),
//! nor which member ENI it gets (the cloud does), nor where the namespace is (the runtime does):
//! it asks, and records the answers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use enifab_model::net::Cidr6;
use enifab_proto::v1 as pb;

use super::runtime::{Place, PodRequest, Runtime};
use super::state::{self, LabState, PodState};
use super::{LabOptions, Log};
use crate::apply::Applied;
use crate::cli::{Clients, describe_status};
use crate::topology::{ServerSpec, Topology, at};

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
        if pod.dual() {
            args.push("ENIFAB_IP_STACK=dual".into());
            if let Some(ip6) = &pod.ipv6 {
                args.push(format!("ENIFAB_IP6={}", ip6.value));
            }
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
        let (ip, ip6) = addresses(&result);
        if pod.dual() && ip6.is_empty() {
            bail!("CNI ADD for pod {name} (ENIFAB_IP_STACK=dual) answered no IPv6 address: {result}");
        }
        let (member, vlan) = member_of(c, &ip).await?;
        st.pods.insert(
            name.clone(),
            PodState {
                node: pod.node.value.clone(),
                netns: ns,
                datapath: datapath.clone(),
                ip: ip.clone(),
                ip6: ip6.clone(),
                member_eni: member.clone(),
            },
        );
        state::save(opts, st)?;
        let ip6 = if ip6.is_empty() { String::new() } else { format!(" {ip6}") };
        log.say(
            "pod",
            format!("{name:<26} {ip:<12}{ip6} {datapath:<5} on {} member {member} vlan {vlan}", pod.node.value),
        );
    }
    Ok(())
}

/// The pod's addresses in a CNI result: the IPv4 one and the IPv6 one (empty when it has none),
/// without their prefixes. `ips` is `[IPv4, IPv6]` for a dual-stack pod; each is found by its
/// family rather than by its place.
fn addresses(result: &serde_json::Value) -> (String, String) {
    let ips = result["ips"].as_array().map(Vec::as_slice).unwrap_or_default();
    let bare = |e: &serde_json::Value| e["address"].as_str().unwrap_or("").split('/').next().unwrap_or("").to_string();
    let find = |v6: bool| ips.iter().map(bare).find(|a| a.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6() == v6));
    (find(false).unwrap_or_default(), find(true).unwrap_or_default())
}

/// Pods' pinned IPv6 addresses against the /64s the cloud gave their vSwitches, before any node
/// or pod is made. The file checks them itself when it names its VPC's /56; otherwise only now,
/// with the VPC made, is the /64 known. A pin outside it is the file's error, located as the
/// file's other errors are.
pub(crate) async fn check_pinned_ipv6(c: &mut Clients, topo: &Topology, applied: &Applied) -> Result<()> {
    let mut blocks: HashMap<String, Option<Cidr6>> = HashMap::new();
    let mut problems = Vec::new();
    for pod in topo.pods.iter().filter(|p| p.dual()) {
        let (Some(pin), Some(vsw)) = (&pod.ipv6, topo.pod_vswitch(pod)) else { continue };
        let Ok(ip) = pin.value.parse::<Ipv6Addr>() else { continue };
        if topo.vswitch_ipv6(vsw).is_some() {
            continue;
        }
        let block = match blocks.get(vsw) {
            Some(b) => *b,
            None => {
                let b = vswitch_ipv6(c, &applied.vswitches[vsw]).await?;
                blocks.insert(vsw.to_string(), b);
                b
            }
        };
        if let Some(b) = block.filter(|b| !b.contains(ip) || b.is_reserved(ip)) {
            problems.push(at(
                &topo.file,
                pin,
                format!("{ip} is not an address of vSwitch {vsw}'s {b} (the cloud's /64)"),
            ));
        }
    }
    if !problems.is_empty() {
        bail!("{} problem(s) in the topology:\n  {}", problems.len(), problems.join("\n  "));
    }
    Ok(())
}

/// The vSwitch's IPv6 /64, as the cloud says.
async fn vswitch_ipv6(c: &mut Clients, vswitch_id: &str) -> Result<Option<Cidr6>> {
    let r = c
        .vpc
        .describe_v_switches(pb::DescribeVSwitchesRequest { v_switch_id: vswitch_id.into(), ..Default::default() })
        .await
        .map_err(|s| anyhow!("DescribeVSwitches: {}", describe_status(&s)))?
        .into_inner();
    let list = r.v_switches.unwrap_or_default().v_switch;
    Ok(list.first().and_then(|v| v.ipv6_cidr_block.parse().ok()))
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

#[cfg(test)]
mod tests {
    use super::addresses;

    #[test]
    fn a_result_gives_each_family_its_address() {
        let dual = serde_json::json!({ "ips": [
            { "address": "10.0.4.30/24", "gateway": "10.0.4.253" },
            { "address": "2408:4005:3000:4::30/128", "gateway": "fe80::1" },
        ]});
        assert_eq!(addresses(&dual), ("10.0.4.30".into(), "2408:4005:3000:4::30".into()));
        // Found by family, not by place.
        let swapped =
            serde_json::json!({ "ips": [{ "address": "2408:4005:3000:4::30/64" }, { "address": "10.0.4.30/24" }]});
        assert_eq!(addresses(&swapped), ("10.0.4.30".into(), "2408:4005:3000:4::30".into()));
        let v4 = serde_json::json!({ "ips": [{ "address": "10.0.4.30/24" }] });
        assert_eq!(addresses(&v4), ("10.0.4.30".into(), String::new()));
        assert_eq!(addresses(&serde_json::Value::Null), (String::new(), String::new()));
        assert_eq!(addresses(&serde_json::json!({ "ips": [{ "address": 7 }] })), (String::new(), String::new()));
    }
}
