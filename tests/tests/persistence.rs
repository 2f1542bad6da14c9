//! What survives a restart. (a) A graceful stop and start on the same data directory shows
//! exactly the same state through every Describe*, keeps ClientTokens and the ID generator, and
//! finishes transitions that were in flight (an ENI Attaching at shutdown becomes InUse by
//! itself, on its original schedule). (b) `kill -9` of the real `enifab serve` in the middle of a
//! write storm, three times: every write a client heard back about is there after the restart,
//! with what it was told, and the state is internally consistent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enifab_model::TransitionDelays;
use enifab_tests::v1 as pb;
use enifab_tests::*;
use tonic::transport::Channel;

type Ecs = pb::ecs_client::EcsClient<Channel>;

fn tag(k: &str, v: &str) -> pb::Tag {
    pb::Tag { key: k.into(), value: v.into() }
}

// ---- (a) graceful restart ------------------------------------------------------------------------

/// A bit of everything: custom type, second VPC, groups with rules and policies, members,
/// secondaries with assigned addresses, modified attributes, a stopped instance, tokens.
async fn rich_state(s: &TestServer) -> Topology {
    let mut emu = s.emulator();
    ok(emu
        .create_instance_type(pb::CreateInstanceTypeRequest {
            instance_type_id: "ecs.lab.persist".into(),
            eni_quantity: 3,
            eni_private_ip_address_quantity: 8,
            eni_total_quantity: 10,
            eni_trunk_supported: true,
            ..Default::default()
        })
        .await);
    let t = build_topology(s.channel()).await;
    let mut ecs = s.ecs();
    let mut vpc = s.vpc();
    let vpc2 = ok(vpc
        .create_vpc(pb::CreateVpcRequest {
            cidr_block: "192.168.0.0/16".into(),
            vpc_name: "second".into(),
            tag: vec![tag("env", "lab")],
            ..Default::default()
        })
        .await)
    .vpc_id;
    ok(vpc
        .create_v_switch(pb::CreateVSwitchRequest {
            vpc_id: vpc2.clone(),
            zone_id: "cn-hongkong-d".into(),
            cidr_block: "192.168.3.0/24".into(),
            v_switch_name: "d".into(),
            ..Default::default()
        })
        .await);
    let ent = ok(ecs
        .create_security_group(pb::CreateSecurityGroupRequest {
            vpc_id: t.vpc_id.clone(),
            security_group_name: "ent".into(),
            security_group_type: "enterprise".into(),
            ..Default::default()
        })
        .await)
    .security_group_id;
    ok(ecs
        .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
            security_group_id: t.sg_id.clone(),
            permissions: vec![
                pb::Permission {
                    ip_protocol: "TCP".into(),
                    port_range: "80/8080".into(),
                    source_cidr_ip: "10.0.0.0/8".into(),
                    priority: "7".into(),
                    description: "web".into(),
                    ..Default::default()
                },
                pb::Permission {
                    ip_protocol: "ICMP".into(),
                    port_range: "-1/-1".into(),
                    source_group_id: t.sg_id.clone(),
                    policy: "drop".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await);
    ok(ecs
        .authorize_security_group_egress(pb::AuthorizeSecurityGroupEgressRequest {
            security_group_id: ent.clone(),
            ip_protocol: "UDP".into(),
            port_range: "53/53".into(),
            dest_cidr_ip: "10.0.0.10".into(),
            ..Default::default()
        })
        .await);
    ok(ecs
        .modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest {
            security_group_id: t.sg_id.clone(),
            inner_access_policy: "Drop".into(),
            ..Default::default()
        })
        .await);
    for _ in 0..3 {
        t.create_member(&mut ecs).await;
    }
    let sec = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            v_switch_id: t.pod_vsw.clone(),
            security_group_ids: vec![t.sg_id.clone()],
            secondary_private_ip_address_count: Some(2),
            tag: vec![tag("creator", "terway"), tag("ack.aliyun.com", "c1")],
            network_interface_name: "node-eni".into(),
            client_token: "persisted-token".into(),
            ..Default::default()
        })
        .await)
    .network_interface_id;
    ok(ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            instance_id: t.instance_id.clone(),
            network_interface_id: sec.clone(),
            ..Default::default()
        })
        .await);
    ok(ecs
        .assign_private_ip_addresses(pb::AssignPrivateIpAddressesRequest {
            network_interface_id: sec.clone(),
            private_ip_address: vec!["10.0.66.66".into()],
            ..Default::default()
        })
        .await);
    ok(ecs
        .modify_network_interface_attribute(pb::ModifyNetworkInterfaceAttributeRequest {
            network_interface_id: sec,
            description: Some("changed".into()),
            source_dest_check: Some(true),
            ..Default::default()
        })
        .await);
    let ent_eni = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            v_switch_id: t.pod_vsw.clone(),
            security_group_id: ent,
            instance_type: "Trunk".into(),
            ..Default::default()
        })
        .await)
    .network_interface_id;
    assert_eq!(describe_eni(&mut ecs, &ent_eni).await.unwrap().r#type, "Trunk");
    // A second, stopped instance of the custom type.
    let i2 = ok(ecs
        .create_instance(pb::CreateInstanceRequest {
            instance_type: "ecs.lab.persist".into(),
            v_switch_id: t.node_vsw.clone(),
            security_group_ids: vec![t.sg_id.clone()],
            instance_name: "cn-hongkong.10.0.4.50".into(),
            private_ip_address: "10.0.4.50".into(),
            tag: vec![tag("role", "spare")],
            ..Default::default()
        })
        .await)
    .instance_id;
    ok(ecs.stop_instance(pb::StopInstanceRequest { instance_id: i2, ..Default::default() }).await);
    t
}

#[tokio::test]
async fn graceful_restart_keeps_everything() {
    let mut s = TestServer::start().await;
    let t = rich_state(&s).await;
    let before = Snapshot::take(s.channel()).await;
    assert_eq!(consistency_violations(&before), Vec::<String>::new());
    assert!(before.enis.len() >= 8 && before.instances.len() == 2, "{before:#?}");

    s.restart().await;
    let after = Snapshot::take(s.channel()).await;
    before.assert_same(&after, "after a graceful restart");
    // And again, on yet another port.
    s.restart().await;
    before.assert_same(&Snapshot::take(s.channel()).await, "after a second restart");

    // ClientTokens survive: the same token and request answer the ENI created before.
    let mut ecs = s.ecs();
    let replay = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            v_switch_id: t.pod_vsw.clone(),
            security_group_ids: vec![t.sg_id.clone()],
            secondary_private_ip_address_count: Some(2),
            tag: vec![tag("creator", "terway"), tag("ack.aliyun.com", "c1")],
            network_interface_name: "node-eni".into(),
            client_token: "persisted-token".into(),
            ..Default::default()
        })
        .await);
    let named: Vec<_> = before.enis.iter().filter(|e| e.network_interface_name == "node-eni").collect();
    assert_eq!(named.len(), 1);
    assert_eq!(replay.network_interface_id, named[0].network_interface_id);
    before.assert_same(&Snapshot::take(s.channel()).await, "after a token replay");

    // The ID and MAC generator continues: new resources collide with nothing old.
    for _ in 0..10 {
        t.create_member(&mut ecs).await;
    }
    let grown = Snapshot::take(s.channel()).await;
    assert_eq!(grown.enis.len(), before.enis.len() + 10);
    assert_eq!(consistency_violations(&grown), Vec::<String>::new());
    let ids: Vec<&str> = grown.enis.iter().map(|e| e.network_interface_id.as_str()).collect();
    assert_eq!(duplicates(ids), Default::default());
    s.restart().await;
    grown.assert_same(&Snapshot::take(s.channel()).await, "after the third restart");
}

#[tokio::test]
async fn transitions_in_flight_finish_after_a_restart() {
    const DELAY: u64 = 800;
    let delays = TransitionDelays { attach_ms: DELAY, detach_ms: DELAY, delete_ms: DELAY, start_stop_ms: DELAY };
    let mut s = TestServer::start_with_delays(delays).await;
    let t = build_topology(s.channel()).await; // waits out the trunk's attach
    let mut ecs = s.ecs();

    // One member already InUse (to detach), one Available ENI (to delete), one to attach.
    let detaching = t.create_member(&mut ecs).await;
    let attaching = t.create_pod_eni(&mut ecs).await.network_interface_id;
    let deleting = t.create_pod_eni(&mut ecs).await.network_interface_id;
    wait_status(&mut ecs, &detaching, "InUse").await;

    let started = Instant::now();
    ok(ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            instance_id: t.instance_id.clone(),
            network_interface_id: attaching.clone(),
            trunk_network_instance_id: t.trunk_eni_id.clone(),
            ..Default::default()
        })
        .await);
    ok(ecs
        .detach_network_interface(pb::DetachNetworkInterfaceRequest {
            instance_id: t.instance_id.clone(),
            network_interface_id: detaching.clone(),
            trunk_network_instance_id: t.trunk_eni_id.clone(),
            ..Default::default()
        })
        .await);
    ok(ecs
        .delete_network_interface(pb::DeleteNetworkInterfaceRequest {
            network_interface_id: deleting.clone(),
            ..Default::default()
        })
        .await);
    let statuses = |ecs: &mut Ecs| {
        let mut ecs = ecs.clone();
        let ids = [attaching.clone(), detaching.clone(), deleting.clone()];
        async move {
            let mut out = Vec::new();
            for id in &ids {
                out.push(describe_eni(&mut ecs, id).await.map(|e| (e.status, e.r#type)));
            }
            out
        }
    };
    let pending = vec![
        Some(("Attaching".to_string(), "Member".to_string())),
        Some(("Detaching".to_string(), "Member".to_string())),
        Some(("Deleting".to_string(), "Secondary".to_string())),
    ];
    assert_eq!(statuses(&mut ecs).await, pending);

    s.restart().await;
    let mut epochs = s.epochs();
    let restarted_after = started.elapsed();
    let mut ecs = s.ecs();
    if restarted_after < Duration::from_millis(DELAY * 3 / 4) {
        // Still due later: the restored state shows the transitions pending.
        assert_eq!(statuses(&mut ecs).await, pending, "restarted after {restarted_after:?}");
    }

    // Nobody calls: the model thread wakes up by itself when the transitions fall due.
    tokio::time::timeout(Duration::from_secs(5), epochs.changed())
        .await
        .expect("no commit within 5 s of the restart")
        .expect("the model thread is alive");
    let done_after = started.elapsed();
    assert!(
        done_after >= Duration::from_millis(DELAY - 50),
        "completed after {done_after:?}, before the {DELAY} ms delay had passed"
    );
    // The three fall due a few milliseconds apart; give the timer time for all of them, still
    // without calling. Then the Describes below must find everything done: had one of them
    // completed a transition itself, it would have committed, moving the epoch.
    tokio::time::sleep((started + Duration::from_millis(DELAY + 400)).saturating_duration_since(Instant::now())).await;
    let settled = *epochs.borrow_and_update();
    assert_eq!(
        statuses(&mut ecs).await,
        vec![
            Some(("InUse".to_string(), "Member".to_string())),
            Some(("Available".to_string(), "Secondary".to_string())),
            None
        ]
    );
    assert_eq!(*epochs.borrow(), settled, "a Describe completed a transition the timer had not");
    let e = describe_eni(&mut ecs, &attaching).await.unwrap();
    assert_eq!(e.attachment.unwrap().trunk_network_interface_id, t.trunk_eni_id);
    assert!(describe_eni(&mut ecs, &detaching).await.unwrap().attachment.is_none());
    assert_eq!(consistency_violations(&Snapshot::take(s.channel()).await), Vec::<String>::new());
}

// ---- (b) kill -9 during a write storm ------------------------------------------------------------

/// What a client was told about one ENI.
#[derive(Clone, Debug, Default)]
struct Acked {
    mac: String,
    vswitch: String,
    sgs: Vec<String>,
    tags: Vec<(String, String)>,
    /// Every address acknowledged: the create's, plus acknowledged assigns.
    ips: BTreeSet<String>,
    /// Attached as a member of the trunk (acknowledged).
    member: bool,
    /// Deleted (acknowledged): must be gone.
    deleted: bool,
    /// A call on this ENI got no answer (the server died): its effect may or may not be there.
    in_flight: Option<Op>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Attach,
    Assign,
    Delete,
}

#[derive(Default)]
struct Ledger {
    enis: BTreeMap<String, Acked>,
    /// Creates that got no answer: an ENI nobody knows about may exist for each.
    unanswered_creates: usize,
    /// Answers that are neither success nor an expected refusal.
    surprises: Vec<String>,
    acks_this_round: usize,
}

struct Storm {
    t: Topology,
    ledger: Arc<Mutex<Ledger>>,
}

/// `None`: the call got no answer from the server (it is gone).
fn outcome<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Option<Result<T, tonic::Status>> {
    match r {
        Ok(resp) => Some(Ok(resp.into_inner())),
        Err(st) if enifab::grpc::status::cloud_error(&st).is_some() => Some(Err(st)),
        Err(_) => None,
    }
}

/// One client of the storm: creates ENIs (some with secondaries), attaches every third as a
/// member, assigns an address to some, deletes some unattached ones; until the server dies.
async fn storm_worker(channel: Channel, storm: Arc<Storm>, mut rng: Rng, worker: usize) {
    let mut ecs = Ecs::new(channel);
    let mut mine: Vec<String> = Vec::new();
    for n in 0usize.. {
        let count = rng.range(0, 3) as i32;
        let req = pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: storm.t.pod_vsw.clone(),
            security_group_ids: vec![storm.t.sg_id.clone()],
            secondary_private_ip_address_count: (count > 0).then_some(count),
            tag: vec![tag("worker", &worker.to_string()), tag("n", &n.to_string())],
            ..Default::default()
        };
        let Some(created) = outcome(ecs.create_network_interface(req).await) else {
            storm.ledger.lock().unwrap().unanswered_creates += 1;
            return;
        };
        let created = match created {
            Ok(c) => c,
            Err(st) => {
                storm.ledger.lock().unwrap().surprises.push(format!("create: {}", enifab::cli::describe_status(&st)));
                continue;
            }
        };
        let id = created.network_interface_id.clone();
        {
            let mut l = storm.ledger.lock().unwrap();
            l.acks_this_round += 1;
            l.enis.insert(
                id.clone(),
                Acked {
                    mac: created.mac_address.clone(),
                    vswitch: created.v_switch_id.clone(),
                    sgs: created.security_group_ids.clone().unwrap_or_default().security_group_id,
                    tags: vec![("n".into(), n.to_string()), ("worker".into(), worker.to_string())],
                    ips: created
                        .private_ip_sets
                        .clone()
                        .unwrap_or_default()
                        .private_ip_set
                        .into_iter()
                        .map(|p| p.private_ip_address)
                        .collect(),
                    ..Default::default()
                },
            );
        }
        mine.push(id.clone());

        let step = rng.range(0, 6);
        let (op, result) = match step {
            0 | 1 => {
                storm.ledger.lock().unwrap().enis.get_mut(&id).unwrap().in_flight = Some(Op::Attach);
                let r = ecs
                    .attach_network_interface(pb::AttachNetworkInterfaceRequest {
                        region_id: REGION.into(),
                        instance_id: storm.t.instance_id.clone(),
                        network_interface_id: id.clone(),
                        trunk_network_instance_id: storm.t.trunk_eni_id.clone(),
                        ..Default::default()
                    })
                    .await;
                (Op::Attach, outcome(r).map(|r| r.map(|_| Vec::new())))
            }
            2 => {
                storm.ledger.lock().unwrap().enis.get_mut(&id).unwrap().in_flight = Some(Op::Assign);
                let r = ecs
                    .assign_private_ip_addresses(pb::AssignPrivateIpAddressesRequest {
                        region_id: REGION.into(),
                        network_interface_id: id.clone(),
                        secondary_private_ip_address_count: Some(1),
                        ..Default::default()
                    })
                    .await;
                (
                    Op::Assign,
                    outcome(r).map(|r| {
                        r.map(|a| {
                            a.assigned_private_ip_addresses_set
                                .and_then(|s| s.private_ip_set)
                                .map(|s| s.private_ip_address)
                                .unwrap_or_default()
                        })
                    }),
                )
            }
            3 if mine.len() > 1 => {
                // Delete an older ENI of this worker that is not a member.
                let victim = {
                    let l = storm.ledger.lock().unwrap();
                    mine.iter().rev().skip(1).find(|v| l.enis.get(*v).is_some_and(|a| !a.member && !a.deleted)).cloned()
                };
                let Some(victim) = victim else { continue };
                storm.ledger.lock().unwrap().enis.get_mut(&victim).unwrap().in_flight = Some(Op::Delete);
                let r = ecs
                    .delete_network_interface(pb::DeleteNetworkInterfaceRequest {
                        region_id: REGION.into(),
                        network_interface_id: victim.clone(),
                    })
                    .await;
                let Some(r) = outcome(r) else { return };
                let mut l = storm.ledger.lock().unwrap();
                let a = l.enis.get_mut(&victim).unwrap();
                a.in_flight = None;
                match r {
                    Ok(_) => {
                        a.deleted = true;
                        l.acks_this_round += 1;
                    }
                    Err(st) => l.surprises.push(format!("delete: {}", enifab::cli::describe_status(&st))),
                }
                continue;
            }
            _ => continue,
        };
        let Some(result) = result else { return };
        let mut l = storm.ledger.lock().unwrap();
        let a = l.enis.get_mut(&id).unwrap();
        a.in_flight = None;
        match (op, result) {
            (Op::Attach, Ok(_)) => a.member = true,
            (Op::Assign, Ok(ips)) => a.ips.extend(ips),
            (Op::Attach, Err(st)) if code_of(&st) == "EniPerInstanceLimitExceeded" => {}
            (_, Err(st)) => {
                l.surprises.push(format!("{op:?}: {}", enifab::cli::describe_status(&st)));
                continue;
            }
            (Op::Delete, Ok(_)) => unreachable!("deletes are handled above"),
        }
        l.acks_this_round += 1;
    }
}

/// Every acknowledged write is there, with what the client was told; nothing is inconsistent.
async fn verify(channel: Channel, storm: &Storm, round: usize) {
    let snap = Snapshot::take(channel).await;
    let violations = consistency_violations(&snap);
    assert!(violations.is_empty(), "round {round}: inconsistent state after kill -9:\n{}", violations.join("\n"));
    let by_id: BTreeMap<&str, &pb::NetworkInterfaceSet> =
        snap.enis.iter().map(|e| (e.network_interface_id.as_str(), e)).collect();
    let l = storm.ledger.lock().unwrap();
    let mut problems = Vec::new();
    for (id, a) in &l.enis {
        let now = by_id.get(id.as_str());
        if a.deleted {
            if now.is_some() {
                problems.push(format!("{id}: deletion was acknowledged, the ENI is back"));
            }
            continue;
        }
        let Some(e) = now else {
            if a.in_flight != Some(Op::Delete) {
                problems.push(format!("{id}: acknowledged, gone after the restart ({a:?})"));
            }
            continue;
        };
        if e.mac_address != a.mac {
            problems.push(format!("{id}: MAC {} was acknowledged as {}", e.mac_address, a.mac));
        }
        if e.v_switch_id != a.vswitch || sgs_of(e) != a.sgs {
            problems.push(format!("{id}: vSwitch/groups changed: {e:?} vs {a:?}"));
        }
        let tags: Vec<(String, String)> = e
            .tags
            .clone()
            .unwrap_or_default()
            .tag
            .into_iter()
            .map(|t| (t.tag_key, t.tag_value))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if tags != a.tags {
            problems.push(format!("{id}: tags {tags:?}, acknowledged {:?}", a.tags));
        }
        let ips: BTreeSet<String> = ips_of(e).into_iter().collect();
        let exact = a.in_flight != Some(Op::Assign);
        if (exact && ips != a.ips) || !ips.is_superset(&a.ips) {
            problems.push(format!("{id}: addresses {ips:?}, acknowledged {:?}", a.ips));
        }
        let is_member = e.r#type == "Member";
        if a.member || (is_member && a.in_flight == Some(Op::Attach)) {
            let att = e.attachment.clone().unwrap_or_default();
            if !is_member || e.status != "InUse" || att.trunk_network_interface_id != storm.t.trunk_eni_id {
                problems.push(format!("{id}: acknowledged as a member, now {e:?}"));
            }
        } else if e.r#type != "Secondary" || e.status != "Available" || e.attachment.is_some() {
            problems.push(format!("{id}: never attached, now {} {} {:?}", e.r#type, e.status, e.attachment));
        }
    }
    // ENIs nobody was told about: at most one per unanswered create.
    let known: BTreeSet<&str> = l
        .enis
        .keys()
        .map(String::as_str)
        .chain([storm.t.primary_eni_id.as_str(), storm.t.trunk_eni_id.as_str()])
        .collect();
    let strangers: Vec<&str> = by_id.keys().copied().filter(|id| !known.contains(id)).collect();
    if strangers.len() > l.unanswered_creates {
        problems.push(format!(
            "{} unknown ENIs but only {} unanswered creates: {strangers:?}",
            strangers.len(),
            l.unanswered_creates
        ));
    }
    assert!(problems.is_empty(), "round {round}: {} problems:\n{}", problems.len(), problems.join("\n"));
    assert!(l.surprises.is_empty(), "round {round}: unexpected answers:\n{}", l.surprises.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_write_storm_loses_no_acknowledged_write() {
    const WORKERS: usize = 12;
    const KILLS: usize = 3;
    let mut rng = Rng::from_env_or_time("kill_9_during_a_write_storm");
    let dir = tempfile::Builder::new().prefix("enifab-kill9-").tempdir().unwrap();

    let server = ChildServer::spawn(dir.path(), &["--no-delays"]);
    let setup = connect(server.addr).await;
    ok(pb::emulator_client::EmulatorClient::new(setup.clone())
        .create_instance_type(pb::CreateInstanceTypeRequest {
            instance_type_id: "ecs.lab.storm".into(),
            eni_quantity: 4,
            eni_private_ip_address_quantity: 10,
            eni_total_quantity: 4 + 4000,
            eni_trunk_supported: true,
            ..Default::default()
        })
        .await);
    let t = build_topology_with(
        setup,
        TopologyOptions { instance_type: "ecs.lab.storm".into(), pod_vsw_cidr: "10.1.0.0/16".into() },
    )
    .await;
    let storm = Arc::new(Storm { t, ledger: Arc::new(Mutex::new(Ledger::default())) });

    let mut server = Some(server);
    for round in 1..=KILLS {
        let running = server.take().expect("a running server");
        storm.ledger.lock().unwrap().acks_this_round = 0;
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let channel = connect(running.addr).await;
            let worker_rng = Rng::from_seed(rng.next_u64());
            workers.push(tokio::spawn(storm_worker(channel, storm.clone(), worker_rng, w)));
        }
        // Let the storm build up, then kill -9 at a random moment in it.
        let deadline = Instant::now() + Duration::from_secs(20);
        while storm.ledger.lock().unwrap().acks_this_round < 20 {
            assert!(Instant::now() < deadline, "round {round}: the storm never got going");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 600))).await;
        assert!(workers.iter().all(|w| !w.is_finished()), "round {round}: a worker stopped before the kill");
        running.kill9();
        for w in workers {
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .expect("a worker did not notice the server was gone")
                .expect("a worker panicked");
        }
        let acked = storm.ledger.lock().unwrap().acks_this_round;
        eprintln!("round {round}: killed after {acked} acknowledged writes");

        let restarted = ChildServer::spawn(dir.path(), &["--no-delays"]);
        verify(connect(restarted.addr).await, &storm, round).await;
        server = Some(restarted);
    }

    // After the last restart the server works as usual.
    let server = server.unwrap();
    let mut ecs = Ecs::new(connect(server.addr).await);
    let id = storm.t.create_member(&mut ecs).await;
    assert_eq!(describe_eni(&mut ecs, &id).await.unwrap().r#type, "Member");
    assert_eq!(consistency_violations(&Snapshot::take(connect(server.addr).await).await), Vec::<String>::new());
    let total = storm.ledger.lock().unwrap().enis.len();
    eprintln!("{total} ENIs acknowledged over {KILLS} kills");
}
