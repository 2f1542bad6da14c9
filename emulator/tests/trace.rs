//! `Fabric.TraceFrame` end to end, with fake shims: a trace's verdict is what a real first
//! packet then gets, a refusal names the rule DescribeSecurityGroupAttribute lists (by its
//! SecurityGroupRuleId), a trace changes no counter and starts no flow, and bad requests answer
//! the cloud's codes.

use std::sync::Arc;

use enifab::actor::SystemClock;
use enifab::cli::Clients;
use enifab::grpc::status::cloud_error;
use enifab::serve::{Emulator, ServeConfig};
use enifab_dataplane::testkit::tcp_datagram;
use enifab_dataplane::wire::l4::TCP_SYN;
use enifab_proto::v1 as pb;

mod fake_nodes;
use fake_nodes::{network, node, recv_frame};

async fn start() -> (Clients, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServeConfig::loopback(dir.path());
    let emu = Emulator::open(&cfg, Arc::new(SystemClock)).unwrap();
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(emu.run(listener, async move {
        let _ = rx.await;
    }));
    (Clients::new(enifab::cli::connect(&addr.to_string()).await.unwrap()), dir, tx)
}

fn query(from: &str, to: &str, protocol: &str, port: u32) -> pb::TraceFrameRequest {
    pb::TraceFrameRequest {
        source: from.into(),
        destination: to.into(),
        protocol: protocol.into(),
        port,
        source_port: 0,
    }
}

async fn trace(c: &mut Clients, q: pb::TraceFrameRequest) -> pb::TraceFrameResponse {
    c.fabric.trace_frame(q).await.unwrap().into_inner()
}

async fn code(c: &mut Clients, q: pb::TraceFrameRequest) -> String {
    let status = c.fabric.trace_frame(q).await.expect_err("an error");
    cloud_error(&status).map(|(code, _)| code).unwrap_or_else(|| format!("{:?}", status.code()))
}

async fn counters(c: &mut Clients) -> pb::DescribeFabricCountersResponse {
    let mut r =
        c.fabric.describe_fabric_counters(pb::DescribeFabricCountersRequest::default()).await.unwrap().into_inner();
    r.request_id.clear();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_predicts_the_first_packet_and_names_the_rule() {
    let (mut c, _dir, _stop) = start().await;
    let (vsw, sg) = network(&mut c).await;
    let a = node(&mut c, &vsw, &sg, "10.0.4.22").await;
    let b = node(&mut c, &vsw, &sg, "10.0.4.20").await;

    // Same basic group, inner access accepted: delivered, by instance or ENI or address.
    for (from, to) in [(a.instance.as_str(), "10.0.4.20"), (a.eth0.eni, b.eth0.eni), ("10.0.4.22", b.instance.as_str())]
    {
        let r = trace(&mut c, query(from, to, "tcp", 80)).await;
        assert_eq!(r.verdict, "delivered", "{from} → {to}: {r:?}");
        let kinds: Vec<&str> = r.hops.iter().map(|h| h.kind.as_str()).collect();
        assert_eq!(kinds, ["node", "port", "anti_spoof", "route", "conntrack", "sg_egress", "sg_ingress", "deliver"]);
        assert!(r.hops.iter().all(|h| h.ok));
        assert_eq!(r.hops.last().unwrap().network_interface_id, b.eth0.eni);
    }

    // Isolate the group, then allow TCP 80 from A at priority 2 and refuse it from the vSwitch at
    // priority 1: the drop rule decides.
    c.ecs
        .modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest {
            security_group_id: sg.clone(),
            inner_access_policy: "Drop".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for (priority, policy, cidr) in [("2", "accept", "10.0.4.22/32"), ("1", "drop", "10.0.4.0/24")] {
        c.ecs
            .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
                security_group_id: sg.clone(),
                ip_protocol: "tcp".into(),
                port_range: "80/80".into(),
                source_cidr_ip: cidr.into(),
                priority: priority.into(),
                policy: policy.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let described = c
        .ecs
        .describe_security_group_attribute(pb::DescribeSecurityGroupAttributeRequest {
            security_group_id: sg.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let drop_rule = described
        .permissions
        .and_then(|p| p.permission.into_iter().find(|p| p.policy.eq_ignore_ascii_case("drop")))
        .expect("the drop rule is listed")
        .security_group_rule_id;
    assert!(drop_rule.starts_with("sgr-"), "{drop_rule}");

    let before = counters(&mut c).await;
    let r = trace(&mut c, query(a.eth0.eni, b.eth0.eni, "tcp", 80)).await;
    assert_eq!(r.verdict, "dropped", "{r:?}");
    let refused: Vec<&pb::TraceHop> = r.hops.iter().filter(|h| !h.ok).collect();
    assert_eq!(refused.len(), 1, "{r:?}");
    assert_eq!(refused[0].kind, "sg_ingress");
    assert_eq!(refused[0].network_interface_id, b.eth0.eni);
    assert_eq!(refused[0].security_group_id, sg);
    assert_eq!(refused[0].security_group_rule_id, drop_rule, "the trace names the rule the API lists");
    assert!(r.reason.contains(&drop_rule), "{}", r.reason);
    // A port no rule mentions: refused by the default, named as such.
    let r = trace(&mut c, query(a.eth0.eni, b.eth0.eni, "udp", 53)).await;
    let refused = r.hops.iter().find(|h| !h.ok).expect("a refusal");
    assert_eq!((refused.kind.as_str(), refused.security_group_rule_id.as_str()), ("sg_ingress", ""));
    assert!(refused.title.contains("default"), "{refused:?}");
    assert_eq!(counters(&mut c).await, before, "tracing counted nothing and started no flow");

    // The first packet meets what the trace said: refused at B's ingress…
    a.sock.send(&tcp_datagram(&a.eth0, b.eth0.ip, 40_000, 80, TCP_SYN)).unwrap();
    assert!(recv_frame(&b.sock).is_none(), "the drop rule refuses it");
    let after = counters(&mut c).await;
    let dropped = |r: &pb::DescribeFabricCountersResponse| {
        r.drops.iter().find(|d| d.reason == "security_group_ingress").map_or(0, |d| d.frames)
    };
    assert_eq!(dropped(&after), dropped(&before) + 1);
    // …and once the drop rule goes, delivered, as the trace now says.
    c.ecs
        .revoke_security_group(pb::RevokeSecurityGroupRequest {
            security_group_id: sg.clone(),
            security_group_rule_id: vec![drop_rule.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let r = trace(&mut c, query(a.eth0.eni, b.eth0.eni, "tcp", 80)).await;
    assert_eq!(r.verdict, "delivered", "{r:?}");
    let accepted = r.hops.iter().find(|h| h.kind == "sg_ingress").unwrap();
    assert!(
        accepted.ok
            && accepted.security_group_rule_id.starts_with("sgr-")
            && accepted.security_group_rule_id != drop_rule
    );
    a.sock.send(&tcp_datagram(&a.eth0, b.eth0.ip, 40_001, 80, TCP_SYN)).unwrap();
    assert!(recv_frame(&b.sock).is_some(), "the accept rule admits it");

    // The gateway answers ping itself.
    let r = trace(&mut c, query(a.eth0.eni, "10.0.4.253", "icmp", 0)).await;
    assert_eq!(r.verdict, "answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_trace_requests_answer_the_clouds_codes() {
    let (mut c, _dir, _stop) = start().await;
    let (vsw, sg) = network(&mut c).await;
    let a = node(&mut c, &vsw, &sg, "10.0.4.22").await;
    assert_eq!(code(&mut c, query("eni-0nothere", "10.0.4.20", "tcp", 80)).await, "InvalidEniId.NotFound");
    assert_eq!(code(&mut c, query("i-0nothere", "10.0.4.20", "tcp", 80)).await, "InvalidInstanceId.NotFound");
    assert_eq!(code(&mut c, query(a.eth0.eni, "lb-0nothere", "tcp", 80)).await, "InvalidLoadBalancerId.NotFound");
    assert_eq!(code(&mut c, query(a.eth0.eni, "10.0.4.20", "sctp", 80)).await, "InvalidParameter");
    assert_eq!(code(&mut c, query(a.eth0.eni, "10.0.4.20", "tcp", 0)).await, "MissingParameter");
    assert_eq!(code(&mut c, query(a.eth0.eni, "10.0.4.20", "tcp", 70_000)).await, "InvalidParameter");
    assert_eq!(code(&mut c, query("", "10.0.4.20", "tcp", 80)).await, "MissingParameter");
    assert_eq!(code(&mut c, query("no-such-pod", "10.0.4.20", "tcp", 80)).await, "InvalidParameter");
    assert_eq!(code(&mut c, query("10.9.9.9", "10.0.4.20", "tcp", 80)).await, "InvalidParameter");
    // An instance whose node has no shim sends nothing: said so, not traced.
    let quiet = fake_nodes::instance(&mut c, &vsw, &sg, "10.0.4.30").await;
    assert_eq!(code(&mut c, query(&quiet, "10.0.4.22", "tcp", 80)).await, "InvalidParameter");
    // An address nobody holds: traced, dropped with no route.
    let r = trace(&mut c, query(a.eth0.eni, "10.0.4.99", "tcp", 80)).await;
    assert_eq!((r.verdict.as_str(), r.hops.last().unwrap().kind.as_str()), ("dropped", "drop"), "{r:?}");
    assert!(r.reason.starts_with("no_route"), "{}", r.reason);
}
