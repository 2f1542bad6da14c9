//! Kubernetes Services in the lab: their endpoints, the CCM for `LoadBalancer` ones
//! ([`super::ccm`]), and kube-proxy's rules on every node ([`super::kubeproxy`]), applied in
//! the node's namespace by the node runtime (`iptables-restore --noflush`, and the jump rules
//! ensured with `iptables -C`/`-I`) — idempotent, so `up` can run again and the rules follow
//! the pods.
//!
//! A pod is a ready endpoint of a Service port when the selector picks it, it runs, and it serves
//! the target port with the port's protocol (a `tcp` or `http` server for TCP, `udp` for UDP):
//! the lab's stand-in for a readiness probe.
//!
//! Nothing here routes, filters or translates a packet: the node kernels do, with the rules
//! written here, and the fabric does for the CLB. The only rules touched are kube-proxy's own
//! chains and its jumps; Terway's and the shim's state is left alone.
//!
//! Where Terway's two datapaths part ways for Services (iptables mode; see the SOP example):
//!
//! - **veth** (policy routing, `cali*`): every packet of a pod enters the node on its veth, so
//!   nat PREROUTING → KUBE-SERVICES DNATs it there. Not masqueraded (a cluster IP from a pod, or
//!   an external/LB address with `externalTrafficPolicy: Local` through the pod short-circuit),
//!   it keeps the pod's source, matches `2048: from <podIP> lookup <trunk table>` and leaves by
//!   the **trunk with the client pod's VLAN**: the VPC sees the client's member ENI, so its
//!   group (egress) and the backend's (ingress, from the pod's IP) decide. Masqueraded
//!   (`externalTrafficPolicy: Cluster`), it still leaves by the trunk (routing is not redone)
//!   but with the **node's address** — the one Terway puts on the trunk ENI — which no VLAN
//!   push matches, so it goes **untagged**, as the trunk ENI's own traffic: the trunk's group
//!   (egress) and the backend's (ingress, from the node's IP) decide, and the reply, addressed to
//!   the node, comes back on **eth0**. A backend on the client's own node never leaves it.
//! - **vlan** (the pod's eth0 is a VLAN sub-interface of the trunk): a pod's packets never enter
//!   the node, so kube-proxy never sees them. A cluster IP has no route in the VPC; an external
//!   or load-balancer address leads to the internet, which this VPC has no gateway to (an
//!   internet-facing CLB address is reached from the internet side only): blocked either way.
//!   The node's own traffic still goes through its kube-proxy.
//!
//! IPVS mode, which the seed article describes, is not reproduced: this machine's kernel has no
//! `ip_vs`. There the DNATed packet is routed by destination only and leaves by eth0.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use anyhow::{Result, anyhow};

use super::ccm::{self, Cluster};
use super::host::Rule;
use super::kubeproxy::{self, Endpoint, JUMPS, Proxier, ServicePort};
use super::runtime::Runtime;
use super::state::{self, LabState, PodState, ServiceState};
use super::{LabOptions, Log};
use crate::apply::Applied;
use crate::cli::Clients;
use crate::topology::{PodSpec, ServicePortSpec, ServiceSpec, Topology};

/// A ready endpoint of a Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub pod: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// `<namespace>/<name>`.
pub fn key(svc: &ServiceSpec) -> String {
    format!("{}/{}", svc.namespace(), svc.name.value)
}

fn serves(pod: &PodSpec, port: &ServicePortSpec) -> bool {
    let protocols: &[&str] = if port.protocol() == "udp" { &["udp"] } else { &["tcp", "http"] };
    pod.servers.iter().any(|s| s.port.value == port.target_port() && protocols.contains(&s.protocol.value.as_str()))
}

/// The ready endpoints of `port` of `svc`, in file order.
pub fn ready(
    topo: &Topology,
    svc: &ServiceSpec,
    port: &ServicePortSpec,
    pods: &BTreeMap<String, PodState>,
) -> Vec<Ready> {
    svc.selects(topo)
        .filter(|p| serves(p, port))
        .filter_map(|p| {
            let st = pods.get(&p.name.value)?;
            Some(Ready {
                pod: p.name.value.clone(),
                node: st.node.clone(),
                ip: st.ip.parse().ok()?,
                port: port.target_port(),
            })
        })
        .collect()
}

/// What kube-proxy on `node` is given: every Service port, endpoints marked local when they run
/// on `node`, load balancer ingress addresses from the state.
pub fn service_ports(topo: &Topology, st: &LabState, node: &str) -> Vec<ServicePort> {
    let mut out = Vec::new();
    for svc in &topo.services {
        let lb_ip = st.services.get(&key(svc)).and_then(|s| s.load_balancer_ip.parse::<Ipv4Addr>().ok());
        for port in &svc.ports {
            out.push(ServicePort {
                namespace: svc.namespace().to_string(),
                name: svc.name.value.clone(),
                port_name: port.name.as_ref().map(|n| n.value.clone()),
                protocol: port.protocol(),
                cluster_ip: svc.cluster_ip.value.parse().expect("checked by the topology"),
                port: port.port.value,
                external_ips: svc.external_ips.iter().filter_map(|e| e.value.parse().ok()).collect(),
                load_balancer_ips: lb_ip.into_iter().collect(),
                external_policy_local: svc.is_load_balancer() && svc.external_policy_local(),
                endpoints: ready(topo, svc, port, &st.pods)
                    .into_iter()
                    .map(|r| Endpoint { ip: r.ip, port: r.port, local: r.node == node })
                    .collect(),
            });
        }
    }
    out
}

/// The CCM's view of the lab's cluster.
pub(crate) fn cluster(topo: &Topology, st: &LabState, applied: &Applied) -> Option<Cluster> {
    let vpc = topo.cluster_vpc()?;
    Some(Cluster {
        id: ccm::cluster_id(&st.id),
        region: topo.region.value.clone(),
        vpc_id: applied.vpcs.get(&vpc.name.value)?.clone(),
        vswitches: applied.vswitches.clone(),
    })
}

/// `up`'s Services step: load balancers for `LoadBalancer` Services (and none for the others),
/// then kube-proxy's rules on every node.
pub(crate) async fn up_services(
    opts: &LabOptions,
    rt: &Runtime,
    topo: &Topology,
    applied: &Applied,
    c: &mut Clients,
    st: &mut LabState,
    log: &mut Log<'_>,
) -> Result<()> {
    if topo.services.is_empty() && st.services.is_empty() {
        return Ok(());
    }
    let cluster = cluster(topo, st, applied).ok_or_else(|| anyhow!("services need nodes in a vpc"))?;
    let mut keep = HashSet::new();
    for svc in &topo.services {
        let per_port: Vec<Vec<Ready>> = svc.ports.iter().map(|p| ready(topo, svc, p, &st.pods)).collect();
        let mut s = ServiceState {
            endpoints: per_port.iter().flatten().map(|r| format!("{}:{}", r.ip, r.port)).collect(),
            ..Default::default()
        };
        if svc.is_load_balancer() {
            let ips: Vec<Vec<Ipv4Addr>> = per_port.iter().map(|v| v.iter().map(|r| r.ip).collect()).collect();
            let r = ccm::reconcile(c, &cluster, svc, &ips).await?;
            keep.insert(ccm::default_name(&ccm::service_uid(&cluster.id, svc.namespace(), &svc.name.value)));
            log.say(
                "clb",
                format!(
                    "{:<26} {} {} {}, backends +{} -{}",
                    key(svc),
                    r.load_balancer_id,
                    if r.created { "created" } else { "exists" },
                    r.address,
                    r.added,
                    r.removed
                ),
            );
            s.load_balancer_id = r.load_balancer_id;
            s.load_balancer_ip = r.address;
        } else if let Some(old) = st.services.get(&key(svc))
            && !old.load_balancer_id.is_empty()
        {
            // Turned into a ClusterIP Service: the CCM deletes its load balancer.
            ccm::delete(c, &cluster, svc.namespace(), &svc.name.value).await?;
        }
        st.services.insert(key(svc), s);
        state::save(opts, st)?;
    }
    // Services gone from the file: their load balancers go too.
    let wanted: HashSet<String> = topo.services.iter().map(key).collect();
    st.services.retain(|k, _| wanted.contains(k));
    ccm::sweep(c, &cluster, &keep, log).await?;
    state::save(opts, st)?;

    let proxier = Proxier { cluster_cidr: topo.cluster_cidr(), masquerade_all: false };
    let jumps: Vec<Rule> =
        JUMPS.iter().map(|j| Rule { table: j.table.into(), chain: j.from.into(), args: j.args() }).collect();
    for name in st.nodes.keys() {
        let ports = service_ports(topo, st, name);
        let existing = kubeproxy::chains_in_save(&rt.read_iptables(st, name, "nat").await?);
        let text = kubeproxy::restore(&proxier, &ports, &existing);
        rt.apply_iptables(st, name, &text, &jumps).await?;
        let endpoints: usize = ports.iter().map(|p| p.endpoints.len()).sum();
        log.say("kube-proxy", format!("{name:<26} {} service ports, {endpoints} endpoints (iptables)", ports.len()));
    }
    Ok(())
}

/// Delete the load balancers the lab's CCM made (found by tag, so also after a crash).
pub(crate) async fn down_services(
    c: &mut Clients,
    topo: &Topology,
    st: &LabState,
    applied: &Applied,
    log: &mut Log<'_>,
) -> Result<()> {
    let Some(cluster) = cluster(topo, st, applied) else { return Ok(()) };
    for svc in topo.services.iter().filter(|s| s.is_load_balancer()) {
        if let Some(id) = ccm::delete(c, &cluster, svc.namespace(), &svc.name.value).await? {
            log.say("clb", format!("{:<26} {id} deleted", key(svc)));
        }
    }
    ccm::sweep(c, &cluster, &HashSet::new(), log).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::state::NodeState;

    const TOPO: &str = "region: cn-hongkong
vpcs: [{ name: v, cidr: 10.0.0.0/8, vswitches: [{ name: s, zone: z, cidr: 10.0.4.0/24 }] }]
securityGroups: [{ name: g, vpc: v }]
instances:
  - { name: a, type: ecs.g7.xlarge, vswitch: s, securityGroups: [g], trunk: { vswitch: s, securityGroups: [g] } }
  - { name: b, type: ecs.g7.xlarge, vswitch: s, securityGroups: [g], trunk: { vswitch: s, securityGroups: [g] } }
pods:
  - { name: web-a, node: a, labels: { app: web }, servers: [{ protocol: http, port: 80 }] }
  - { name: web-b, node: b, labels: { app: web, tier: x }, servers: [{ protocol: tcp, port: 80 }] }
  - { name: idle, node: b, labels: { app: web } }
  - { name: other, node: a, labels: { app: db }, servers: [{ protocol: tcp, port: 80 }] }
services:
  - name: web
    type: LoadBalancer
    clusterIP: 192.168.0.10
    selector: { app: web }
    externalTrafficPolicy: Local
    ports: [{ name: http, port: 8080, targetPort: 80 }, { name: dns, protocol: UDP, port: 53 }]
";

    fn state() -> LabState {
        let pod = |node: &str, ip: &str| PodState {
            node: node.into(),
            netns: String::new(),
            datapath: "veth".into(),
            ip: ip.into(),
            ip6: String::new(),
            member_eni: String::new(),
        };
        let mut st = LabState::default();
        for (name, node, ip) in [("web-a", "a", "10.0.4.30"), ("web-b", "b", "10.0.4.31"), ("idle", "b", "10.0.4.32")] {
            st.pods.insert(name.into(), pod(node, ip));
        }
        for n in ["a", "b"] {
            st.nodes.insert(
                n.into(),
                NodeState {
                    instance_id: String::new(),
                    netns: String::new(),
                    shim_pid: 0,
                    socket: "".into(),
                    primary_ip: String::new(),
                    primary_ip6: String::new(),
                    agent_pid: 0,
                    agent: String::new(),
                },
            );
        }
        st.services.insert(
            "default/web".into(),
            ServiceState { load_balancer_ip: "8.210.162.178".into(), ..Default::default() },
        );
        st
    }

    #[test]
    fn ready_endpoints_are_selected_running_and_serving() {
        let topo = Topology::parse("t.yaml", TOPO).unwrap();
        let st = state();
        let svc = &topo.services[0];
        let http: Vec<String> = ready(&topo, svc, &svc.ports[0], &st.pods).into_iter().map(|r| r.pod).collect();
        assert_eq!(http, ["web-a", "web-b"], "idle serves nothing, other is not selected");
        assert!(ready(&topo, svc, &svc.ports[1], &st.pods).is_empty(), "nobody serves udp/53");
        let mut fewer = st.pods.clone();
        fewer.remove("web-b");
        assert_eq!(ready(&topo, svc, &svc.ports[0], &fewer).len(), 1, "a pod that does not run is no endpoint");
    }

    #[test]
    fn each_node_sees_its_own_endpoints_as_local() {
        let topo = Topology::parse("t.yaml", TOPO).unwrap();
        let st = state();
        let on_b = service_ports(&topo, &st, "b");
        assert_eq!(on_b.len(), 2);
        let http = &on_b[0];
        assert_eq!((http.port, http.port_name.as_deref(), http.protocol), (8080, Some("http"), "tcp"));
        assert!(http.external_policy_local);
        assert_eq!(http.load_balancer_ips, [Ipv4Addr::new(8, 210, 162, 178)]);
        let local: Vec<(String, bool)> = http.endpoints.iter().map(|e| (e.ip.to_string(), e.local)).collect();
        assert_eq!(local, [("10.0.4.30".to_string(), false), ("10.0.4.31".to_string(), true)]);
        assert!(http.endpoints.iter().all(|e| e.port == 80));
        let text = kubeproxy::restore(&Proxier::default(), &on_b, &[]);
        assert!(
            text.contains("default/web:http loadbalancer IP\" -m tcp -p tcp -d 8.210.162.178 --dport 8080"),
            "{text}"
        );
        assert!(
            text.contains("default/web:dns has no endpoints\" -m udp -p udp -d 192.168.0.10 --dport 53 -j REJECT"),
            "{text}"
        );
    }
}
