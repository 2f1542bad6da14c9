//! `enifab apply`: the SOP example twice gives the same state; a broken file is refused with a
//! located error and creates nothing.

use std::path::PathBuf;

use enifab::apply::apply_file;
use enifab_tests::{Snapshot, TestServer};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/terway-trunk-sop").join(name)
}

#[tokio::test]
async fn applying_the_sop_example_twice_changes_nothing_the_second_time() {
    let s = TestServer::start().await;
    let endpoint = s.addr().to_string();
    let first = apply_file(&endpoint, &example("cloud.yaml")).await.expect("first apply");
    assert_eq!(first.created, 12, "a VPC, 2 vSwitches, 3 groups, 3 instances and their trunks");
    let after_first = Snapshot::take(s.channel()).await;
    let second = apply_file(&endpoint, &example("cloud.yaml")).await.expect("second apply");
    assert_eq!(second.created, 0);
    assert_eq!(second.instances, first.instances);
    assert_eq!(second.trunks, first.trunks);
    assert_eq!(Snapshot::take(s.channel()).await, after_first, "the second apply changed the state");
    // The lab topologies are supersets of the cloud file: applying them adds nothing either.
    let third = apply_file(&endpoint, &example("topology.yaml")).await.expect("lab topology");
    assert_eq!(third.created, 0);
    assert_eq!(Snapshot::take(s.channel()).await, after_first);

    let nodes: Vec<&String> = after_first.instances.iter().map(|i| &i.instance_name).collect();
    for name in ["cn-hongkong.10.0.4.22", "cn-hongkong.10.0.4.20", "cn-hongkong.10.0.4.244"] {
        assert!(nodes.contains(&&name.to_string()), "{name} missing: {nodes:?}");
    }
    let trunks = after_first.enis.iter().filter(|e| e.r#type == "Trunk" && e.status == "InUse").count();
    assert_eq!(trunks, 3);
}

#[tokio::test]
async fn a_broken_file_is_located_and_creates_nothing() {
    let s = TestServer::start().await;
    let before = Snapshot::take(s.channel()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example("cloud.yaml")).unwrap().replacen(
        "vswitch: vsw-hk-b",
        "vswitch: vsw-nowhere",
        1,
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, &text).unwrap();
    let line = text.lines().position(|l| l.contains("vsw-nowhere")).unwrap() + 1;
    let err = apply_file(&s.addr().to_string(), &bad).await.unwrap_err().to_string();
    assert!(err.contains(&format!("bad.yaml:{line}:")) && err.contains("no vswitch named \"vsw-nowhere\""), "{err}");
    assert_eq!(Snapshot::take(s.channel()).await, before);
}
