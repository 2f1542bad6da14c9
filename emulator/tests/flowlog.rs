//! Flow logs end to end, with fake shims: a known exchange gives the records the cloud's flow
//! logs would (per ENI and direction, packets, bytes) with the rule that decided, refusals are
//! logged as REJECT with theirs, and a follower sees records as their windows close.

use std::sync::Arc;
use std::time::Duration;

use enifab::actor::SystemClock;
use enifab::cli::Clients;
use enifab::fabric::flowlog::FlowLogSettings;
use enifab::serve::{CloudOptions, Emulator, ServeConfig};
use enifab_dataplane::testkit::{tcp_datagram, udp_datagram};
use enifab_dataplane::wire::l4::TCP_SYN;
use enifab_proto::v1 as pb;

mod fake_nodes;
use fake_nodes::{network, node, recv_frame};

async fn start() -> (Clients, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServeConfig::loopback(dir.path());
    let logs = FlowLogSettings { enabled: true, window: Duration::from_millis(200) };
    let cloud = CloudOptions { flow_logs: Some(logs), ..CloudOptions::default() };
    let emu = Emulator::open_with(&cfg, Arc::new(SystemClock), &cloud).unwrap();
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(emu.run(listener, async move {
        let _ = rx.await;
    }));
    (Clients::new(enifab::cli::connect(&addr.to_string()).await.unwrap()), dir, tx)
}

async fn records(c: &mut Clients, eni: &str) -> Vec<pb::FlowLogRecord> {
    let q = pb::DescribeFlowLogsRequest { network_interface_id: eni.into(), follow: false };
    let mut s = c.fabric.describe_flow_logs(q).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.message().await.unwrap() {
        out.push(r);
    }
    out
}

/// The records of `eni` once `want` of them are there (windows close about every second).
async fn wait_for(c: &mut Clients, eni: &str, want: impl Fn(&[pb::FlowLogRecord]) -> bool) -> Vec<pb::FlowLogRecord> {
    for _ in 0..50 {
        let r = records(c, eni).await;
        if want(&r) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("flow-log records of {eni} never came: {:?}", records(c, eni).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_exchange_is_logged_both_ways_and_a_refusal_as_reject() {
    let (mut c, _dir, _stop) = start().await;
    let (vsw, sg) = network(&mut c).await;
    let a = node(&mut c, &vsw, &sg, "10.0.4.22").await;
    let b = node(&mut c, &vsw, &sg, "10.0.4.20").await;
    let mut follow = c
        .fabric
        .describe_flow_logs(pb::DescribeFlowLogsRequest { network_interface_id: b.eth0.eni.into(), follow: true })
        .await
        .unwrap()
        .into_inner();

    // Three datagrams A → B, two answers B → A.
    for _ in 0..3 {
        a.sock.send(&udp_datagram(&a.eth0, b.eth0.ip, 5000, 53)).unwrap();
        assert!(recv_frame(&b.sock).is_some());
    }
    for _ in 0..2 {
        b.sock.send(&udp_datagram(&b.eth0, a.eth0.ip, 53, 5000)).unwrap();
        assert!(recv_frame(&a.sock).is_some());
    }
    let inner = format!("inner-access:{sg}");
    let got = wait_for(&mut c, a.eth0.eni, |r| r.len() >= 2).await;
    let summary: Vec<_> = got
        .iter()
        .map(|r| {
            (
                r.direction.as_str(),
                r.src_addr.as_str(),
                r.src_port,
                r.dst_addr.as_str(),
                r.dst_port,
                r.protocol,
                r.action.as_str(),
                r.packets,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("out", "10.0.4.22", 5000, "10.0.4.20", 53, 17, "ACCEPT", 3),
            ("in", "10.0.4.20", 53, "10.0.4.22", 5000, 17, "ACCEPT", 2),
        ]
    );
    assert!(got.iter().all(|r| r.security_group_rule_id == inner), "{got:?}");
    // The bytes are the frames' (each datagram the same size both ways here).
    assert_eq!(got[0].bytes * 2, got[1].bytes * 3);
    assert!(got[0].start_ms <= got[0].end_ms && got[0].end_ms > 1_700_000_000_000);
    let at_b = wait_for(&mut c, b.eth0.eni, |r| r.len() >= 2).await;
    assert_eq!(at_b.iter().map(|r| (r.direction.as_str(), r.packets)).collect::<Vec<_>>(), [("in", 3), ("out", 2)]);

    // Isolated: B refuses A's SYNs by its default, logged at B's ingress as REJECT.
    c.ecs
        .modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest {
            security_group_id: sg.clone(),
            inner_access_policy: "Drop".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in 0..4 {
        a.sock.send(&tcp_datagram(&a.eth0, b.eth0.ip, 41_000, 80, TCP_SYN)).unwrap();
    }
    let at_b = wait_for(&mut c, b.eth0.eni, |r| r.iter().any(|r| r.action == "REJECT")).await;
    let reject = at_b.iter().find(|r| r.action == "REJECT").unwrap();
    assert_eq!(
        (reject.direction.as_str(), reject.src_port, reject.dst_port, reject.protocol, reject.packets),
        ("in", 41_000, 80, 6, 4)
    );
    assert_eq!(reject.security_group_rule_id, "default");

    // The follower saw B's records as they were written, in order.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let r = tokio::time::timeout(Duration::from_secs(5), follow.message()).await.unwrap().unwrap().unwrap();
        seen.push(r);
    }
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(seen.iter().all(|r| r.network_interface_id == b.eth0.eni));
    assert_eq!(seen.last().unwrap().action, "REJECT");

    // An unknown ENI is the cloud's NotFound.
    let status = c
        .fabric
        .describe_flow_logs(pb::DescribeFlowLogsRequest { network_interface_id: "eni-0nothere".into(), follow: false })
        .await
        .expect_err("unknown ENI");
    let code = enifab::grpc::status::cloud_error(&status).map(|(c, _)| c);
    assert_eq!(code.as_deref(), Some("InvalidEniId.NotFound"));
}
