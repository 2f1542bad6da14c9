//! The lab's node runtime, first half: machines. Each ECS instance of the topology becomes a
//! network namespace (`efb<id>-n<i>`) with an ECS node's sysctls and an `enifab-shim` that plugs
//! its NICs in as TAP devices (eth0 = primary ENI, eth1 = trunk); each external client becomes a
//! namespace (`efb<id>-x<i>`) whose shim plugs it into the internet side (`--external-address`:
//! eth0 with the public address, default route via the segment's gateway, no metadata service).
//!
//! This and [`super::pods`] are the only places that know a node is a namespace with a shim
//! process: a container runtime would replace these two and keep the state's names.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::process::{alive, spawn_daemon};
use super::state::{self, ExternalState, LabState, NodeState};
use super::{LabOptions, Log, netns};
use crate::apply::Applied;
use crate::topology::Topology;

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

/// A pod's or an external client's namespace: no IPv6 (the fabric is IPv4), unprivileged ping.
pub(crate) const HOST_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv6/conf/all/disable_ipv6", "1"),
    ("net/ipv6/conf/default/disable_ipv6", "1"),
    ("net/ipv4/ping_group_range", "0 2147483647"),
];

/// Make every instance a node: namespace, sysctls, shim; wait until its NICs are plugged in.
pub(crate) async fn up_nodes(
    opts: &LabOptions,
    topo: &Topology,
    applied: &Applied,
    st: &mut LabState,
    log: &mut Log<'_>,
) -> Result<()> {
    let shim = opts.bin("enifab-shim")?;
    let id = st.id.clone();
    for (i, inst) in topo.instances.iter().enumerate() {
        let name = &inst.name.value;
        let instance_id = applied.instances[name].clone();
        let ns = format!("efb{id}-n{i}");
        netns::create(&ns)?;
        netns::sysctls(&ns, NODE_SYSCTLS)?;
        let socket = state::file(opts, &format!("shim-{id}-n{i}.sock"));
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
            spawn_daemon(&shim, &args, &state::file(opts, &format!("shim-{id}-n{i}.log")))?
        };
        let primary_ip = inst.private_ip.as_ref().map(|p| p.value.clone()).unwrap_or_default();
        st.nodes.insert(
            name.clone(),
            NodeState { instance_id: instance_id.clone(), netns: ns.clone(), shim_pid: pid, socket, primary_ip },
        );
        state::save(opts, st)?;
        let links: &[&str] = if applied.trunks.contains_key(name) { &["eth0", "eth1"] } else { &["eth0"] };
        wait_for_links(&ns, links, pid).await.with_context(|| format!("node {name} did not come up"))?;
        log.say("node", format!("{name:<26} {instance_id} netns {ns} shim pid {pid}"));
    }
    Ok(())
}

/// Plug every external client into the internet side.
pub(crate) async fn up_externals(
    opts: &LabOptions,
    topo: &Topology,
    st: &mut LabState,
    log: &mut Log<'_>,
) -> Result<()> {
    if topo.external_clients.is_empty() {
        return Ok(());
    }
    let shim = opts.bin("enifab-shim")?;
    let id = st.id.clone();
    for (i, x) in topo.external_clients.iter().enumerate() {
        let name = &x.name.value;
        let (ip, _) = x.ip().expect("checked by the topology");
        let ns = format!("efb{id}-x{i}");
        netns::create(&ns)?;
        netns::sysctls(&ns, HOST_SYSCTLS)?;
        let socket = state::file(opts, &format!("shim-{id}-x{i}.sock"));
        let running = st.externals.get(name).is_some_and(|e| alive(e.shim_pid) && e.address == ip.to_string());
        let pid = if running {
            st.externals[name].shim_pid
        } else {
            let args = vec![
                "--endpoint".into(),
                opts.endpoint.clone(),
                "--instance-id".into(),
                name.clone(),
                "--external-address".into(),
                x.address.value.clone(),
                "--netns".into(),
                ns.clone(),
                "--control-socket".into(),
                socket.display().to_string(),
            ];
            spawn_daemon(&shim, &args, &state::file(opts, &format!("shim-{id}-x{i}.log")))?
        };
        st.externals
            .insert(name.clone(), ExternalState { netns: ns.clone(), shim_pid: pid, socket, address: ip.to_string() });
        state::save(opts, st)?;
        wait_for_links(&ns, &["eth0"], pid).await.with_context(|| format!("external client {name} did not come up"))?;
        log.say("external", format!("{name:<26} {} netns {ns} shim pid {pid}", x.address.value));
    }
    Ok(())
}

/// A machine is up when its shim has plugged in the devices named.
async fn wait_for_links(ns: &str, links: &[&str], pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // /sys shows the namespace it was mounted in, not the thread's: ask netlink through ip.
        let present = links
            .iter()
            .filter(|d| {
                Command::new("ip").args(["-n", ns, "link", "show", d]).output().is_ok_and(|o| o.status.success())
            })
            .count();
        if present == links.len() {
            return Ok(());
        }
        if !alive(pid) {
            bail!("the shim (pid {pid}) exited; see its log in the state directory");
        }
        if Instant::now() > deadline {
            bail!("{} did not appear in {ns} within 20 s", links.join("/"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
