//! A `LoadBalancer` Service end to end in the lab: the lab's CCM makes the CLB with ENI backends,
//! an external client on the internet side reaches pods on two nodes (one veth, one vlan pod)
//! through the internet VIP, and the pods see the client's own address; the health checker marks
//! a backend whose server stopped `abnormal` after the unhealthy threshold while requests keep
//! succeeding on the other, and `normal` again once the server is back — all while the backends'
//! group has no rule for 100.64.0.0/10, where the checks come from. Then the Service follows its
//! pods: a pod losing its label is removed from the vServer group and from kube-proxy's rules,
//! and comes back with it; running `up` again changes nothing else. A load balancer of the file
//! with a pod backend is applied once the pod runs, and deleted at `down` with the Service's.
//! Needs root (skips otherwise).

#[path = "support/lab_guard.rs"]
mod lab_guard;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use enifab::cli::Clients;
use enifab::lab::{self, LabOptions, LabState, ccm, probe, responder};
use enifab_proto::v1 as pb;
use enifab_tests::{FullEmulator, REGION, is_root};
use lab_guard::LabGuard;

const TOPOLOGY: &str = "region: cn-hongkong
vpcs:
  - name: vpc-slb
    cidr: 10.0.0.0/8
    vswitches: [{ name: vsw-slb, zone: cn-hongkong-b, cidr: 10.0.4.0/24 }]
securityGroups:
  - name: sg-node
    vpc: vpc-slb
    ingress: [{ protocol: ALL, peer: 10.0.0.0/8 }]
  # The backends admit the internet client and nothing else: no rule for 100.64.0.0/10.
  - name: sg-web
    vpc: vpc-slb
    ingress: [{ protocol: TCP, ports: 80/80, peer: 47.100.1.10/32 }]
instances:
  - { name: node-a, type: ecs.g7.xlarge, vswitch: vsw-slb, privateIp: 10.0.4.22, securityGroups: [sg-node],
      trunk: { vswitch: vsw-slb, securityGroups: [sg-node] } }
  - { name: node-b, type: ecs.g7.xlarge, vswitch: vsw-slb, privateIp: 10.0.4.20, securityGroups: [sg-node],
      trunk: { vswitch: vsw-slb, securityGroups: [sg-node] } }
pods:
  - { name: web-a, node: node-a, datapath: veth, securityGroups: [sg-web], ip: 10.0.4.30,
      labels: { app: web }, servers: [{ protocol: http, port: 80 }] }
  - { name: web-b, node: node-b, datapath: vlan, securityGroups: [sg-web], ip: 10.0.4.40,
      labels: { app: web }, servers: [{ protocol: http, port: 80 }] }
services:
  - name: web
    type: LoadBalancer
    clusterIP: 192.168.0.80
    selector: { app: web }
    ports: [{ protocol: TCP, port: 80, targetPort: 80 }]
    loadBalancer:
      scheduler: rr
      healthCheck: { interval: 1, timeout: 1, healthyThreshold: 2, unhealthyThreshold: 2 }
externalClients:
  - { name: internet, address: 47.100.1.10/24 }
# A load balancer of the file itself (not a Service's): the lab applies it once its pod runs.
loadBalancers:
  - name: inner
    vpc: vpc-slb
    addressType: intranet
    vswitch: vsw-slb
    address: 10.0.4.100
    listeners: [{ protocol: tcp, port: 80, backends: [{ pod: web-a, port: 80 }] }]
";

/// Who answered an HTTP request from the internet client to the VIP, and whom they saw.
async fn ask(ns: &str, vip: Ipv4Addr) -> Result<(String, String), String> {
    let ns = ns.to_string();
    let outcome = tokio::task::spawn_blocking(move || probe::probe(&ns, vip, probe::Proto::Http, 80))
        .await
        .unwrap()
        .map_err(|e| e.to_string())?;
    match &outcome {
        probe::Outcome::Reachable(words) => responder::parse_answer(words)
            .map(|(name, _, peer)| (name.to_string(), peer.to_string()))
            .ok_or_else(|| format!("not a responder's answer: {words}")),
        other => Err(format!("{other:?}")),
    }
}

/// Backend IP → health, from DescribeHealthStatus.
async fn health(c: &mut Clients, lb: &str) -> Vec<(String, String)> {
    let r = c
        .slb
        .describe_health_status(pb::DescribeHealthStatusRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut v: Vec<(String, String)> = r
        .backend_servers
        .unwrap_or_default()
        .backend_server
        .into_iter()
        .map(|b| (b.server_ip, b.server_health_status))
        .collect();
    v.sort();
    v
}

async fn wait_health(c: &mut Clients, lb: &str, want: &[(&str, &str)], within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = health(c, lb).await;
        if got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect::<Vec<_>>() == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "health is {got:?}, not {want:?} after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The vServer group the CCM made for port 80, and its backends' IPs.
async fn group_backends(c: &mut Clients, st: &LabState, lb: &str) -> (String, Vec<String>) {
    let name = ccm::vgroup_name(80, "web", "default", &ccm::cluster_id(&st.id));
    let groups = c
        .slb
        .describe_v_server_groups(pb::DescribeVServerGroupsRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .v_server_groups
        .unwrap_or_default()
        .v_server_group;
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0].v_server_group_name, name);
    let attr = c
        .slb
        .describe_v_server_group_attribute(pb::DescribeVServerGroupAttributeRequest {
            region_id: REGION.into(),
            v_server_group_id: groups[0].v_server_group_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let backends = attr.backend_servers.unwrap_or_default().backend_server;
    for b in &backends {
        assert_eq!((b.r#type.as_str(), b.port, b.weight, b.description.as_str()), ("eni", 80, 100, name.as_str()));
        assert_eq!(
            b.server_id,
            st.pods.values().find(|p| p.ip == b.server_ip).unwrap().member_eni,
            "the pod's member ENI"
        );
    }
    let mut ips: Vec<String> = backends.into_iter().map(|b| b.server_ip).collect();
    ips.sort();
    (name, ips)
}

/// `iptables-save` of a node's namespace, without comments and chain counters.
fn save(ns: &str, table: &str) -> String {
    let out =
        std::process::Command::new("ip").args(["netns", "exec", ns, "iptables-save", "-t", table]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            if l.starts_with(':') { l.split_whitespace().take(2).collect::<Vec<_>>().join(" ") } else { l.to_string() }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn run(env: &mut FullEmulator, opts: &LabOptions, file: &Path) -> anyhow::Result<()> {
    let c = &mut env.clients;
    let st = lab::up(opts, file, &mut |_| {}).await?;
    let svc = &st.services["default/web"];
    let (lb, vip): (String, Ipv4Addr) = (svc.load_balancer_id.clone(), svc.load_balancer_ip.parse()?);
    assert!(vip.to_string().starts_with("8.210.162."), "a public address of the pool: {vip}");
    let client = st.externals["internet"].netns.clone();

    // The CCM's CLB: found by its tag, protected, tagged with the cluster; both pods' member ENIs.
    let found = c
        .slb
        .describe_load_balancers(pb::DescribeLoadBalancersRequest {
            region_id: REGION.into(),
            tags: format!(r#"[{{"TagValue":"{}","TagKey":"kubernetes.do.not.delete"}}]"#, {
                ccm::default_name(&ccm::service_uid(&ccm::cluster_id(&st.id), "default", "web"))
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .load_balancers
        .unwrap_or_default()
        .load_balancer;
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].load_balancer_id.as_str(), found[0].delete_protection.as_str()), (lb.as_str(), "on"));
    let (_, backends) = group_backends(c, &st, &lb).await;
    assert_eq!(backends, ["10.0.4.30", "10.0.4.40"]);

    // Both pods answer (rr), each seeing the internet client's own address.
    let mut answered = BTreeSet::new();
    for _ in 0..4 {
        let (name, peer) = ask(&client, vip).await.map_err(anyhow::Error::msg)?;
        assert_eq!(peer, "47.100.1.10", "CLB keeps the client's address");
        answered.insert(name);
    }
    assert_eq!(answered, BTreeSet::from(["web-a".to_string(), "web-b".to_string()]));

    // Healthy, though the backends' group has no rule for the checker's 100.64.0.0/10.
    wait_health(c, &lb, &[("10.0.4.30", "normal"), ("10.0.4.40", "normal")], Duration::from_secs(10)).await;

    // web-a's server stops: abnormal after two failed checks, one a second.
    let web_a = st.responders.iter().find(|r| r.owner == "web-a").expect("web-a's responder").pid;
    let killed = std::process::Command::new("kill").args(["-KILL", &web_a.to_string()]).status()?;
    assert!(killed.success());
    let took =
        wait_health(c, &lb, &[("10.0.4.30", "abnormal"), ("10.0.4.40", "normal")], Duration::from_secs(10)).await;
    println!("abnormal {took:.1?} after the server stopped");
    for _ in 0..4 {
        let (name, peer) = ask(&client, vip).await.map_err(anyhow::Error::msg)?;
        assert_eq!((name.as_str(), peer.as_str()), ("web-b", "47.100.1.10"), "only the healthy backend serves");
    }

    // `up` again restarts the server (and changes nothing in the cloud): normal again.
    let st = lab::up(opts, file, &mut |_| {}).await?;
    let took = wait_health(c, &lb, &[("10.0.4.30", "normal"), ("10.0.4.40", "normal")], Duration::from_secs(10)).await;
    println!("normal {took:.1?} after the server came back");
    assert_eq!(st.services["default/web"].load_balancer_id, lb, "found by tag, not made again");
    let mut answered = BTreeSet::new();
    for _ in 0..4 {
        answered.insert(ask(&client, vip).await.map_err(anyhow::Error::msg)?.0);
    }
    assert_eq!(answered.len(), 2, "both backends serve again: {answered:?}");

    // The Service follows its pods: web-b loses its label.
    let node_a = st.nodes["node-a"].netns.clone();
    let rules_before = save(&node_a, "nat");
    let text = std::fs::read_to_string(file)?;
    std::fs::write(
        file,
        text.replace("ip: 10.0.4.40,\n      labels: { app: web }", "ip: 10.0.4.40,\n      labels: { app: old }"),
    )?;
    let st = lab::up(opts, file, &mut |_| {}).await?;
    assert_eq!(group_backends(c, &st, &lb).await.1, ["10.0.4.30"]);
    assert_eq!(st.services["default/web"].endpoints, ["10.0.4.30:80"]);
    let rules = save(&node_a, "nat");
    assert!(rules.contains("--to-destination 10.0.4.30:80") && !rules.contains("10.0.4.40"), "{rules}");
    for _ in 0..3 {
        assert_eq!(ask(&client, vip).await.map_err(anyhow::Error::msg)?.0, "web-a");
    }
    // …and gets it back: the rules are as they were (stale chains deleted, jumps not repeated).
    std::fs::write(file, text)?;
    let st = lab::up(opts, file, &mut |_| {}).await?;
    assert_eq!(group_backends(c, &st, &lb).await.1, ["10.0.4.30", "10.0.4.40"]);
    assert_eq!(save(&node_a, "nat"), rules_before, "re-applying kube-proxy's rules is idempotent");
    let lbs = c
        .slb
        .describe_load_balancers(pb::DescribeLoadBalancersRequest { region_id: REGION.into(), ..Default::default() })
        .await?
        .into_inner()
        .load_balancers
        .unwrap_or_default()
        .load_balancer;
    let names: BTreeSet<&str> = lbs.iter().map(|l| l.load_balancer_name.as_str()).collect();
    assert_eq!(lbs.len(), 2, "one Service, one CLB, however often up runs; and the file's own: {names:?}");
    let inner = lbs.iter().find(|l| l.load_balancer_name == "inner").expect("the file's load balancer");
    assert_eq!((inner.address.as_str(), inner.address_type.as_str()), ("10.0.4.100", "intranet"));
    let listeners = c
        .slb
        .describe_load_balancer_listeners(pb::DescribeLoadBalancerListenersRequest {
            region_id: REGION.into(),
            load_balancer_id: vec![inner.load_balancer_id.clone()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .listeners;
    let group = c
        .slb
        .describe_v_server_group_attribute(pb::DescribeVServerGroupAttributeRequest {
            region_id: REGION.into(),
            v_server_group_id: listeners[0].v_server_group_id.clone(),
        })
        .await?
        .into_inner()
        .backend_servers
        .unwrap_or_default()
        .backend_server;
    assert_eq!(group.len(), 1);
    assert_eq!(
        (group[0].server_id.as_str(), group[0].server_ip.as_str()),
        (st.pods["web-a"].member_eni.as_str(), "10.0.4.30")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internet_client_reaches_pods_through_the_ccms_slb() {
    if !is_root() {
        eprintln!("SKIPPED: the lab needs root (network namespaces, TAP devices)");
        return;
    }
    let mut env = FullEmulator::start().await;
    let file = env.dir.path().join("slb.yaml");
    std::fs::write(&file, TOPOLOGY).unwrap();
    let guard = LabGuard::new(&file);
    let opts = env.lab_options();
    let started = Instant::now();
    let outcome = run(&mut env, &opts, &file).await;
    let down = lab::down(&opts, &file, &mut |_| {}).await;
    outcome.unwrap();
    down.unwrap();
    println!("took {:.1?}", started.elapsed());
    let lbs = env
        .clients
        .slb
        .describe_load_balancers(pb::DescribeLoadBalancersRequest { region_id: REGION.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .total_count;
    assert_eq!(lbs, 0, "the CCM's CLB and the file's are deleted at down");
    assert!(lab_guard::processes_of(&guard.id).is_empty());
}
