//! The lab end to end, as CI runs it: the SOP example (both datapaths) brought up for real
//! (namespaces, shims, CNI, responders), every check as the example expects, torn down, and
//! nothing left: no namespace, no shim or responder process, no ENI, no IP. A broken topology is
//! refused with a located error before anything is made. Needs root (skips otherwise).

use std::path::{Path, PathBuf};

use enifab::lab::{self, netns};
use enifab_proto::v1 as pb;
use enifab_tests::{FullEmulator, is_root};

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

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

async fn end_to_end(example: &str) {
    let mut env = FullEmulator::start().await;
    let file = example_copy(env.dir.path(), example);
    let id = lab::lab_id(&file);
    let opts = env.lab_options();
    let mut log = Vec::new();
    let up = lab::up(&opts, &file, &mut |l| log.push(l)).await;
    let st = match up {
        Ok(st) => st,
        Err(e) => {
            let _ = lab::down(&opts, &file, &mut |_| {}).await;
            panic!("lab up failed: {e:#}\n{}", log.join("\n"));
        }
    };
    let rows = lab::check(&opts, &file).await;
    let down = lab::down(&opts, &file, &mut |_| {}).await;
    let rows = rows.expect("lab check");
    let table = lab::render(&rows);
    println!("{table}");
    assert!(rows.len() >= 9, "{table}");
    assert!(rows.iter().all(|r| r.passed), "some checks did not come out as the example expects:\n{table}");
    down.expect("lab down");

    // Nothing is left behind.
    assert!(netns::list(&format!("efb{id}-")).is_empty(), "namespaces left: {:?}", netns::list(&format!("efb{id}-")));
    for n in st.nodes.values() {
        assert!(!alive(n.shim_pid), "shim {} still running", n.shim_pid);
    }
    for r in &st.responders {
        assert!(!alive(r.pid), "responder {} still running", r.pid);
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sop_example_veth_datapath() {
    if root("the_sop_example_veth_datapath") {
        end_to_end("topology.yaml").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sop_example_vlan_datapath() {
    if root("the_sop_example_vlan_datapath") {
        end_to_end("topology-vlan.yaml").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_topology_is_located_and_creates_nothing() {
    if !root("a_broken_topology_is_located_and_creates_nothing") {
        return;
    }
    let mut env = FullEmulator::start().await;
    let file = example_copy(env.dir.path(), "topology.yaml");
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
