//! The lab end to end, as CI runs it: the SOP example (both datapaths) brought up for real
//! (namespaces, shims, CNI, responders, kube-proxy's rules, the CCM's CLB, an internet client),
//! all ten scenarios checked as the example expects, torn down, and nothing left: no namespace,
//! no shim or responder process, no ENI, no IP, no load balancer. An `up` killed mid-way (and its
//! state file lost) is cleaned up by `down` all the same. A broken topology is refused with a
//! located error before anything is made. Needs root (skips otherwise); every lab has its own
//! id (the example is copied into the test's directory) and a guard that removes its namespaces
//! and processes even when the test panics.

#[path = "support/lab_guard.rs"]
mod lab_guard;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use enifab::cli::Clients;
use enifab::lab::{self, netns};
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

async fn end_to_end(example: &str, rows_expected: usize) {
    let mut env = FullEmulator::start().await;
    let file = example_copy(env.dir.path(), example);
    let guard = LabGuard::new(&file);
    let opts = env.lab_options();
    let mut log = Vec::new();
    let started = Instant::now();
    let up = lab::up(&opts, &file, &mut |l| log.push(l)).await;
    let st = match up {
        Ok(st) => st,
        Err(e) => {
            let _ = lab::down(&opts, &file, &mut |_| {}).await;
            panic!("lab up failed: {e:#}\n{}", log.join("\n"));
        }
    };
    let up_took = started.elapsed();
    let rows = lab::check(&opts, &file).await;
    let check_took = started.elapsed() - up_took;
    let down = lab::down(&opts, &file, &mut |_| {}).await;
    let rows = rows.expect("lab check");
    let table = lab::render(&rows);
    println!("{table}\nup {up_took:.1?}, check {check_took:.1?}");
    assert_eq!(rows.len(), rows_expected, "{table}");
    let scenarios: BTreeSet<u32> = rows.iter().filter_map(|r| r.scenario).collect();
    assert_eq!(scenarios, (1..=10).collect(), "every SOP scenario is checked\n{table}");
    assert!(rows.iter().all(|r| r.passed), "some checks did not come out as the example expects:\n{table}");
    // The internet client's request reached nginx with its own address (CLB keeps it).
    let via_slb = rows.iter().find(|r| r.scenario == Some(10) && r.got == "reachable").expect("a reachable 10");
    assert!(
        via_slb.answered.as_deref().is_some_and(|a| a.contains("saw the client as 47.100.1.10")),
        "{:?}",
        via_slb.answered
    );
    down.expect("lab down");

    assert!(st.services["default/nginx"].load_balancer_ip == "8.210.162.178", "{:?}", st.services);
    assert_nothing_left(&mut env, &opts, &guard.id).await;
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
