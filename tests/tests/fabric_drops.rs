//! The data plane's drops, end to end: two nodes (namespaces with real shims), two trunk pods on
//! different nodes — one behind the shim's VLAN sub-interface device, one tagged by source IP on
//! its node's trunk — that ping and talk TCP and UDP across the VPC; then a spoofed source (with
//! SourceDestCheck on) and a frame tagged with a VLAN no member owns are dropped and counted.
//! Needs root (skips otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use enifab::cli::Clients;
use enifab::lab::{self, netns};
use enifab_proto::v1 as pb;
use enifab_tests::{FullEmulator, is_root};

async fn drops(c: &mut Clients, reason: &str) -> u64 {
    let r = c.fabric.describe_fabric_counters(pb::DescribeFabricCountersRequest::default()).await.unwrap().into_inner();
    r.drops.iter().filter(|d| d.reason == reason).map(|d| d.frames).sum()
}

/// Run a short Python program inside a namespace (raw frames and bound sources without unsafe
/// code or an 802.1Q-capable kernel).
fn python_in(ns: &str, program: &str) -> anyhow::Result<()> {
    let out = Command::new("ip").args(["netns", "exec", ns, "python3", "-c", program]).output()?;
    anyhow::ensure!(out.status.success(), "python in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_across_nodes_talk_and_bad_frames_are_counted() {
    if !is_root() {
        eprintln!("SKIPPED: needs root (network namespaces, TAP devices)");
        return;
    }
    let env = FullEmulator::start().await;
    let mut c = env.clients.clone();
    let file: PathBuf = env.dir.path().join("two-nodes.yaml");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/two-nodes.yaml"), &file).unwrap();
    let opts = env.lab_options();

    let outcome = async {
        let st = lab::up(&opts, &file, &mut |_| {}).await?;
        let rows = lab::check(&opts, &file).await?;
        let table = lab::render(&rows);
        // No panics before `down`: a failed expectation is an error, so the lab is still torn down.
        anyhow::ensure!(rows.iter().all(|r| r.passed), "pods do not talk across nodes:\n{table}");

        // A spoofed source from pod-a, whose member ENI now checks sources.
        let member_a = st.pods["pod-a"].member_eni.clone();
        c.ecs
            .modify_network_interface_attribute(pb::ModifyNetworkInterfaceAttributeRequest {
                network_interface_id: member_a,
                source_dest_check: Some(true),
                ..Default::default()
            })
            .await?;
        let before = drops(&mut c, "spoofed").await;
        let pod_a = st.pods["pod-a"].netns.clone();
        netns::ip(&["-n", &pod_a, "addr", "add", "10.0.4.99/32", "dev", "eth0"])?;
        python_in(
            &pod_a,
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.0.4.99',0))\n\
             for _ in range(3): s.sendto(b'spoofed',('10.0.4.40',7))",
        )?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = drops(&mut c, "spoofed").await;
        anyhow::ensure!(after >= before + 3, "spoofed frames not counted: {before} → {after}");

        // A frame on node-a's trunk tagged with a VLAN no member owns.
        let before = drops(&mut c, "unknown_vlan").await;
        let node_a = st.nodes["node-a"].netns.clone();
        python_in(
            &node_a,
            "import socket,struct\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('eth1',0))\n\
             src=s.getsockname()[4]\n\
             frame=b'\\xee\\xff\\xff\\xff\\xff\\xff'+src+struct.pack('!HH',0x8100,3999)+struct.pack('!H',0x0800)+bytes(40)\n\
             for _ in range(2): s.send(frame)",
        )?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = drops(&mut c, "unknown_vlan").await;
        anyhow::ensure!(after >= before + 2, "frames on an unknown VLAN not counted: {before} → {after}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let down = lab::down(&opts, &file, &mut |_| {}).await;
    outcome.unwrap();
    down.unwrap();
}
