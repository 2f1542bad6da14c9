//! Many clients at once against one trunk, the way terway-controlplane attaches pod ENIs when a
//! deployment scales up: every call is answered, nothing is handed out twice (addresses, MACs,
//! VLAN ids), and the member limit (`EniTotalQuantity − EniQuantity`) holds exactly, even when
//! more attaches race for the last slots than there are slots.

use std::collections::BTreeSet;

use enifab_tests::v1 as pb;
use enifab_tests::*;
use tonic::transport::Channel;

/// A trunk-capable type carrying exactly 200 members: 204 − 4.
const TYPE_200: &str = "ecs.lab.trunk200";
const MEMBERS: usize = 200;

async fn node_with_200_member_slots(s: &TestServer) -> Topology {
    ok(s.emulator()
        .create_instance_type(pb::CreateInstanceTypeRequest {
            instance_type_id: TYPE_200.into(),
            cpu_core_count: 16,
            memory_size: 64.0,
            eni_quantity: 4,
            eni_private_ip_address_quantity: 10,
            eni_total_quantity: 4 + MEMBERS as i32,
            eni_trunk_supported: true,
            ..Default::default()
        })
        .await);
    build_topology_with(
        s.channel(),
        TopologyOptions { instance_type: TYPE_200.into(), pod_vsw_cidr: "10.0.64.0/22".into() },
    )
    .await
}

/// Several HTTP/2 connections, so the calls arrive on different sockets as well as streams.
async fn channels(s: &TestServer, n: usize) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(connect(s.addr()).await);
    }
    out
}

/// CreateNetworkInterface then AttachNetworkInterface(TrunkNetworkInstanceId); the ENI ID and
/// the attach outcome.
async fn create_and_attach(channel: Channel, t: Topology, i: usize) -> (String, Result<(), tonic::Status>) {
    let mut ecs = pb::ecs_client::EcsClient::new(channel);
    let id = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: t.pod_vsw.clone(),
            security_group_ids: vec![t.sg_id.clone()],
            description: "interface create by terway".into(),
            tag: vec![pb::Tag { key: "pod".into(), value: format!("pod-{i}") }],
            client_token: format!("create-pod-{i}"),
            ..Default::default()
        })
        .await)
    .network_interface_id;
    let attached = ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: id.clone(),
            trunk_network_instance_id: t.trunk_eni_id.clone(),
            ..Default::default()
        })
        .await
        .map(|_| ());
    (id, attached)
}

/// Check the members of the trunk as every view shows them; returns their IDs.
async fn check_members(s: &TestServer, t: &Topology, want: &BTreeSet<String>) {
    let mut ecs = s.ecs();
    let listed = all_enis_where(
        &mut ecs,
        pb::DescribeNetworkInterfacesRequest {
            region_id: REGION.into(),
            r#type: "Member".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed.len(), want.len());
    let mut vlans = BTreeSet::new();
    for e in &listed {
        assert!(want.contains(&e.network_interface_id), "unexpected member {e:?}");
        assert_eq!(e.status, "InUse", "{e:?}");
        assert_eq!(e.instance_id, t.instance_id);
        let a = e.attachment.as_ref().expect("a member is attached");
        assert_eq!(a.instance_id, t.instance_id);
        assert_eq!(a.trunk_network_interface_id, t.trunk_eni_id);
        assert!((1..=4094).contains(&a.device_index), "VLAN {} out of range", a.device_index);
        assert!(vlans.insert(a.device_index), "VLAN {} given twice", a.device_index);
    }
    let attr = ok(ecs
        .describe_network_interface_attribute(pb::DescribeNetworkInterfaceAttributeRequest {
            region_id: REGION.into(),
            network_interface_id: t.trunk_eni_id.clone(),
            ..Default::default()
        })
        .await);
    let on_trunk: BTreeSet<String> = attr
        .attachment
        .unwrap()
        .member_network_interface_ids
        .unwrap()
        .member_network_interface_id
        .into_iter()
        .collect();
    assert_eq!(&on_trunk, want, "the trunk's MemberNetworkInterfaceIds");
    // The instance's own NICs are still just the primary and the trunk.
    let nics = all_enis_where(
        &mut ecs,
        pb::DescribeNetworkInterfacesRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            ..Default::default()
        },
    )
    .await;
    let nic_ids: BTreeSet<String> = nics.into_iter().map(|e| e.network_interface_id).collect();
    assert_eq!(nic_ids, [t.primary_eni_id.clone(), t.trunk_eni_id.clone()].into_iter().collect());

    // Across every ENI: no address, MAC or VLAN twice; free-address counts exact.
    let snap = Snapshot::take(s.channel()).await;
    assert_eq!(consistency_violations(&snap), Vec::<String>::new());
    let ips: Vec<String> = snap.enis.iter().flat_map(ips_of).collect();
    assert_eq!(duplicates(ips.iter().map(String::as_str)), Default::default());
    assert_eq!(duplicates(snap.enis.iter().map(|e| e.mac_address.as_str())), Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_member_attaches_fill_the_trunk_exactly() {
    let s = TestServer::start().await;
    let t = node_with_200_member_slots(&s).await;
    let mut vpc = s.vpc();
    let pod0 = vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count;
    let chans = channels(&s, 4).await;

    let results = concurrently(MEMBERS, |i| create_and_attach(chans[i % chans.len()].clone(), t.clone(), i)).await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|e| format!("{id}: {}", enifab::cli::describe_status(e))))
        .collect();
    assert!(failed.is_empty(), "{} attaches failed: {failed:#?}", failed.len());
    let members: BTreeSet<String> = results.into_iter().map(|(id, _)| id).collect();
    assert_eq!(members.len(), MEMBERS);
    assert_eq!(vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count, pod0 - MEMBERS as i64);
    check_members(&s, &t, &members).await;

    // The 201st: created fine, but the attach is refused and changes nothing.
    let mut ecs = s.ecs();
    let extra = t.create_pod_eni(&mut ecs).await.network_interface_id;
    let before = Snapshot::take(s.channel()).await;
    let st = assert_code(
        ecs.attach_network_interface(pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: extra.clone(),
            trunk_network_instance_id: t.trunk_eni_id.clone(),
            ..Default::default()
        })
        .await,
        "EniPerInstanceLimitExceeded",
    );
    assert_eq!(domain_of(&st), "ecs.aliyuncs.com");
    before.assert_same(&Snapshot::take(s.channel()).await, "the refused 201st attach");
    let e = describe_eni(&mut ecs, &extra).await.unwrap();
    assert_eq!((e.r#type.as_str(), e.status.as_str()), ("Secondary", "Available"));

    // A slot freed by a detach goes to the next attach, with the freed VLAN.
    let victim = members.iter().next().unwrap().clone();
    let vlan = describe_eni(&mut ecs, &victim).await.unwrap().attachment.unwrap().device_index;
    ok(ecs
        .detach_network_interface(pb::DetachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: victim.clone(),
            trunk_network_instance_id: t.trunk_eni_id.clone(),
        })
        .await);
    ok(ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: extra.clone(),
            trunk_network_instance_id: t.trunk_eni_id.clone(),
            ..Default::default()
        })
        .await);
    let e = describe_eni(&mut ecs, &extra).await.unwrap();
    assert_eq!(e.r#type, "Member");
    assert_eq!(e.attachment.unwrap().device_index, vlan, "the freed VLAN is reused");
    let mut now: BTreeSet<String> = members;
    now.remove(&victim);
    now.insert(extra);
    check_members(&s, &t, &now).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_for_the_last_slots_never_overfills_the_trunk() {
    let s = TestServer::start().await;
    let t = node_with_200_member_slots(&s).await;
    let chans = channels(&s, 4).await;
    const TRIES: usize = MEMBERS + 30;

    let results = concurrently(TRIES, |i| create_and_attach(chans[i % chans.len()].clone(), t.clone(), i)).await;
    let mut won = BTreeSet::new();
    let mut lost = BTreeSet::new();
    for (id, r) in results {
        match r {
            Ok(()) => {
                won.insert(id);
            }
            Err(st) => {
                assert_eq!(code_of(&st), "EniPerInstanceLimitExceeded", "{st:?}");
                lost.insert(id);
            }
        }
    }
    assert_eq!((won.len(), lost.len()), (MEMBERS, TRIES - MEMBERS));
    check_members(&s, &t, &won).await;
    let mut ecs = s.ecs();
    for id in &lost {
        let e = describe_eni(&mut ecs, id).await.unwrap();
        assert_eq!((e.r#type.as_str(), e.status.as_str()), ("Secondary", "Available"), "{e:?}");
        assert!(e.attachment.is_none());
    }
}
