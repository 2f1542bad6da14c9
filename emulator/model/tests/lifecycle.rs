//! Model scenarios with an injected clock: the ENI state machine, trunk members, limits,
//! describe filters, idempotency, and "a failed action changes nothing".

use enifab_model::eni::*;
use enifab_model::instance::*;
use enifab_model::security_group::*;
use enifab_model::vpc::*;
use enifab_model::{Millis, ModelError, Region, RegionConfig, Tag, TransitionDelays};

struct Lab {
    r: Region,
    vpc: String,
    vsw: String,
    pod_vsw: String,
    sg: String,
    node: String,
    trunk: String,
}

const T0: Millis = Millis(1_795_751_123_000);

fn region(delays: TransitionDelays) -> Region {
    let mut cfg = RegionConfig::new("cn-hongkong");
    cfg.delays = delays;
    Region::new(cfg, 42)
}

/// A VPC with a node vSwitch, a pod vSwitch, one basic group, one g7.xlarge node with a trunk.
fn lab(delays: TransitionDelays) -> Lab {
    let mut r = region(TransitionDelays::ZERO);
    let vpc =
        r.create_vpc(CreateVpc { cidr_block: Some("10.0.0.0/8".into()), ..Default::default() }, T0).unwrap().vpc_id;
    let vsw = r
        .create_vswitch(
            CreateVSwitch {
                vpc_id: vpc.clone(),
                zone_id: "cn-hongkong-b".into(),
                cidr_block: "10.0.4.0/24".into(),
                ..Default::default()
            },
            T0,
        )
        .unwrap()
        .v_switch_id;
    let pod_vsw = r
        .create_vswitch(
            CreateVSwitch {
                vpc_id: vpc.clone(),
                zone_id: "cn-hongkong-b".into(),
                cidr_block: "10.0.8.0/24".into(),
                ..Default::default()
            },
            T0,
        )
        .unwrap()
        .v_switch_id;
    let sg = r
        .create_security_group(CreateSecurityGroup { vpc_id: vpc.clone(), ..Default::default() }, T0)
        .unwrap()
        .security_group_id;
    let node = r
        .create_instance(
            CreateInstance {
                instance_type: "ecs.g7.xlarge".into(),
                v_switch_id: vsw.clone(),
                security_group_ids: vec![sg.clone()],
                private_ip_address: Some("10.0.4.22".into()),
                instance_name: Some("cn-hongkong.10.0.4.22".into()),
                ..Default::default()
            },
            T0,
        )
        .unwrap()
        .instance
        .instance_id;
    let trunk = create_eni(&mut r, &vsw, &sg, Some("Trunk"));
    r.attach_network_interface(
        AttachNetworkInterface { network_interface_id: trunk.clone(), instance_id: node.clone(), ..Default::default() },
        T0,
    )
    .unwrap();
    r.set_delays(delays);
    Lab { r, vpc, vsw, pod_vsw, sg, node, trunk }
}

fn create_eni(r: &mut Region, vsw: &str, sg: &str, kind: Option<&str>) -> String {
    r.create_network_interface(
        CreateNetworkInterface {
            v_switch_id: vsw.into(),
            security_group_ids: vec![sg.into()],
            instance_type: kind.map(str::to_string),
            ..Default::default()
        },
        T0,
    )
    .unwrap()
    .network_interface_id
}

fn status(r: &Region, id: &str) -> &'static str {
    r.eni(id).map_or("gone", |e| e.status.as_str())
}

/// Snapshot of everything a failed call must not change.
fn fingerprint(r: &Region) -> String {
    let mut out = String::new();
    for e in r.enis() {
        out.push_str(&serde_json::to_string(e).unwrap());
    }
    for g in r.security_groups() {
        out.push_str(&serde_json::to_string(g).unwrap());
    }
    for i in r.instances() {
        out.push_str(&serde_json::to_string(i).unwrap());
    }
    out
}

#[test]
fn member_attach_detach_delete_follow_the_clock() {
    let delays = TransitionDelays { attach_ms: 500, detach_ms: 300, delete_ms: 200, start_stop_ms: 100 };
    let mut l = lab(delays);
    let m = create_eni(&mut l.r, &l.pod_vsw, &l.sg, None);
    assert_eq!(status(&l.r, &m), "Available");
    let attach = AttachNetworkInterface {
        network_interface_id: m.clone(),
        instance_id: l.node.clone(),
        trunk_network_instance_id: Some(l.trunk.clone()),
        ..Default::default()
    };
    l.r.attach_network_interface(attach.clone(), T0).unwrap();
    assert_eq!(status(&l.r, &m), "Attaching");
    assert_eq!(l.r.eni(&m).unwrap().eni_type, EniType::Member);
    // Terway re-issues Attach until it sees InUse: that must succeed.
    l.r.attach_network_interface(attach.clone(), T0.saturating_add_ms(100)).unwrap();
    l.r.advance(T0.saturating_add_ms(499));
    assert_eq!(status(&l.r, &m), "Attaching");
    l.r.advance(T0.saturating_add_ms(500));
    assert_eq!(status(&l.r, &m), "InUse");
    let att = l.r.eni(&m).unwrap().attachment.clone().unwrap();
    assert_eq!((att.device_index, att.trunk_network_interface_id.as_deref()), (1, Some(l.trunk.as_str())));

    // Delete is refused while attached.
    let err = l.r.delete_network_interface(&m, T0.saturating_add_ms(600)).unwrap_err();
    assert_eq!(err.code(), "InvalidOperation.InvalidEniState");

    let detach = DetachNetworkInterface {
        network_interface_id: m.clone(),
        instance_id: l.node.clone(),
        trunk_network_instance_id: Some(l.trunk.clone()),
    };
    let t1 = T0.saturating_add_ms(1000);
    l.r.detach_network_interface(detach.clone(), t1).unwrap();
    assert_eq!(status(&l.r, &m), "Detaching");
    l.r.detach_network_interface(detach.clone(), t1.saturating_add_ms(10)).unwrap(); // re-issue is fine
    l.r.advance(t1.saturating_add_ms(300));
    let e = l.r.eni(&m).unwrap();
    assert_eq!((e.status, e.eni_type, e.attachment.is_none()), (EniStatus::Available, EniType::Secondary, true));
    l.r.detach_network_interface(detach, t1.saturating_add_ms(400)).unwrap(); // already Available: success

    let t2 = T0.saturating_add_ms(2000);
    l.r.delete_network_interface(&m, t2).unwrap();
    assert_eq!(status(&l.r, &m), "Deleting");
    l.r.delete_network_interface(&m, t2).unwrap();
    l.r.advance(t2.saturating_add_ms(200));
    assert_eq!(status(&l.r, &m), "gone");
    assert_eq!(
        l.r.delete_network_interface(&m, t2.saturating_add_ms(300)).unwrap_err().code(),
        "InvalidEniId.NotFound"
    );
    l.r.check_invariants().unwrap();
}

#[test]
fn attach_checks_zone_vpc_state_and_limits() {
    let mut l = lab(TransitionDelays::ZERO);
    // Zone mismatch.
    let other_zone =
        l.r.create_vswitch(
            CreateVSwitch {
                vpc_id: l.vpc.clone(),
                zone_id: "cn-hongkong-c".into(),
                cidr_block: "10.0.9.0/24".into(),
                ..Default::default()
            },
            T0,
        )
        .unwrap()
        .v_switch_id;
    let e = create_eni(&mut l.r, &other_zone, &l.sg, None);
    let err =
        l.r.attach_network_interface(
            AttachNetworkInterface { network_interface_id: e, instance_id: l.node.clone(), ..Default::default() },
            T0,
        )
        .unwrap_err();
    assert_eq!(err.code(), "InvalidOperation.AvailabilityZoneMismatch");

    // EniQuantity of g7.xlarge is 4: primary + trunk + 2 more.
    for _ in 0..2 {
        let e = create_eni(&mut l.r, &l.vsw, &l.sg, None);
        l.r.attach_network_interface(
            AttachNetworkInterface { network_interface_id: e, instance_id: l.node.clone(), ..Default::default() },
            T0,
        )
        .unwrap();
    }
    let e = create_eni(&mut l.r, &l.vsw, &l.sg, None);
    let before = fingerprint(&l.r);
    let err =
        l.r.attach_network_interface(
            AttachNetworkInterface {
                network_interface_id: e.clone(),
                instance_id: l.node.clone(),
                ..Default::default()
            },
            T0,
        )
        .unwrap_err();
    assert_eq!(err.code(), "EniPerInstanceLimitExceeded");
    assert_eq!(fingerprint(&l.r), before, "a refused attach changes nothing");

    // Members: EniTotalQuantity − EniQuantity = 16 on g7.xlarge.
    let mut vlans = Vec::new();
    for _ in 0..16 {
        let m = create_eni(&mut l.r, &l.pod_vsw, &l.sg, None);
        l.r.attach_network_interface(
            AttachNetworkInterface {
                network_interface_id: m.clone(),
                instance_id: l.node.clone(),
                trunk_network_instance_id: Some(l.trunk.clone()),
                ..Default::default()
            },
            T0,
        )
        .unwrap();
        vlans.push(l.r.eni(&m).unwrap().vlan().unwrap());
    }
    assert_eq!(vlans, (1..=16).collect::<Vec<u16>>());
    let m = create_eni(&mut l.r, &l.pod_vsw, &l.sg, None);
    let err =
        l.r.attach_network_interface(
            AttachNetworkInterface {
                network_interface_id: m,
                instance_id: l.node.clone(),
                trunk_network_instance_id: Some(l.trunk.clone()),
                ..Default::default()
            },
            T0,
        )
        .unwrap_err();
    assert_eq!(err.code(), "EniPerInstanceLimitExceeded");

    // A trunk with members cannot be detached; the primary never.
    let err =
        l.r.detach_network_interface(
            DetachNetworkInterface {
                network_interface_id: l.trunk.clone(),
                instance_id: l.node.clone(),
                trunk_network_instance_id: None,
            },
            T0,
        )
        .unwrap_err();
    assert_eq!(err.code(), "InvalidOperation.InvalidEniState");
    let primary = l.r.instance(&l.node).unwrap().primary_eni_id.clone();
    let err =
        l.r.detach_network_interface(
            DetachNetworkInterface {
                network_interface_id: primary,
                instance_id: l.node.clone(),
                trunk_network_instance_id: None,
            },
            T0,
        )
        .unwrap_err();
    assert_eq!(err.code(), "InvalidOperation.DetachPrimaryEniNotAllowed");
    l.r.check_invariants().unwrap();
}

#[test]
fn attach_refused_while_instance_is_stopping() {
    let mut l = lab(TransitionDelays { attach_ms: 0, detach_ms: 0, delete_ms: 0, start_stop_ms: 1000 });
    l.r.stop_instance(&l.node, T0).unwrap();
    let e = create_eni(&mut l.r, &l.vsw, &l.sg, None);
    let attach = AttachNetworkInterface { network_interface_id: e, instance_id: l.node.clone(), ..Default::default() };
    let err = l.r.attach_network_interface(attach.clone(), T0.saturating_add_ms(10)).unwrap_err();
    assert_eq!(err, ModelError::InvalidEcsState("Stopping"));
    // Stopped instances take ENIs.
    l.r.attach_network_interface(attach, T0.saturating_add_ms(1000)).unwrap();
    assert_eq!(l.r.instance(&l.node).unwrap().status, InstanceStatus::Stopped);
    assert_eq!(l.r.delete_instance(&l.node, false, T0.saturating_add_ms(2000)), Ok(()));
    l.r.check_invariants().unwrap();
}

#[test]
fn ips_are_unique_and_counted() {
    let mut l = lab(TransitionDelays::ZERO);
    let vsw = |r: &Region, id: &str| r.vswitch_view(r.vswitch(id).unwrap()).available_ip_address_count;
    let before = vsw(&l.r, &l.vsw);
    // 10.0.4.22 is node A's primary IP: taken.
    let err =
        l.r.create_network_interface(
            CreateNetworkInterface {
                v_switch_id: l.vsw.clone(),
                security_group_ids: vec![l.sg.clone()],
                primary_ip_address: Some("10.0.4.22".into()),
                ..Default::default()
            },
            T0,
        )
        .unwrap_err();
    assert_eq!(err.code(), "InvalidPrivateIpAddress.Duplicated");
    for reserved in ["10.0.4.0", "10.0.4.253", "10.0.4.255", "10.0.5.1"] {
        let err =
            l.r.create_network_interface(
                CreateNetworkInterface {
                    v_switch_id: l.vsw.clone(),
                    security_group_ids: vec![l.sg.clone()],
                    primary_ip_address: Some(reserved.into()),
                    ..Default::default()
                },
                T0,
            )
            .unwrap_err();
        assert_eq!(err.code(), "InvalidVSwitchId.IpInvalid", "{reserved}");
    }
    assert_eq!(vsw(&l.r, &l.vsw), before);
    let e =
        l.r.create_network_interface(
            CreateNetworkInterface {
                v_switch_id: l.vsw.clone(),
                security_group_ids: vec![l.sg.clone()],
                primary_ip_address: Some("10.0.4.30".into()),
                secondary_private_ip_address_count: Some(2),
                ..Default::default()
            },
            T0,
        )
        .unwrap();
    assert_eq!(e.ip_count(), 3);
    assert_eq!(vsw(&l.r, &l.vsw), before - 3);
    let got =
        l.r.assign_private_ip_addresses(
            AssignPrivateIpAddresses {
                network_interface_id: e.network_interface_id.clone(),
                private_ip_addresses: vec!["10.0.4.100".into()],
                ..Default::default()
            },
            T0,
        )
        .unwrap();
    assert_eq!(got.private_ip_addresses, vec!["10.0.4.100"]);
    // The primary cannot be unassigned, nor an address the ENI does not hold.
    for ip in ["10.0.4.30", "10.0.4.101"] {
        let err =
            l.r.unassign_private_ip_addresses(
                UnassignPrivateIpAddresses {
                    network_interface_id: e.network_interface_id.clone(),
                    private_ip_addresses: vec![ip.into()],
                    ..Default::default()
                },
                T0,
            )
            .unwrap_err();
        assert_eq!(err.code(), "InvalidIp.IpUnassigned");
    }
    l.r.unassign_private_ip_addresses(
        UnassignPrivateIpAddresses {
            network_interface_id: e.network_interface_id.clone(),
            private_ip_addresses: vec!["10.0.4.100".into()],
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    assert_eq!(vsw(&l.r, &l.vsw), before - 3);
    // A /29 runs dry after four addresses.
    let tiny =
        l.r.create_vswitch(
            CreateVSwitch {
                vpc_id: l.vpc.clone(),
                zone_id: "cn-hongkong-b".into(),
                cidr_block: "10.0.10.0/29".into(),
                ..Default::default()
            },
            T0,
        )
        .unwrap()
        .v_switch_id;
    for _ in 0..4 {
        create_eni(&mut l.r, &tiny, &l.sg, None);
    }
    let err =
        l.r.create_network_interface(
            CreateNetworkInterface {
                v_switch_id: tiny.clone(),
                security_group_ids: vec![l.sg.clone()],
                ..Default::default()
            },
            T0,
        )
        .unwrap_err();
    assert_eq!(err, ModelError::VSwitchIpNotEnough(tiny));
    l.r.check_invariants().unwrap();
}

#[test]
fn client_token_replays_and_refuses_mismatch() {
    let mut l = lab(TransitionDelays::ZERO);
    let req = CreateNetworkInterface {
        v_switch_id: l.pod_vsw.clone(),
        security_group_ids: vec![l.sg.clone()],
        tags: vec![Tag { key: "creator".into(), value: "terway-controller".into() }],
        client_token: Some("tok-1".into()),
        ..Default::default()
    };
    let a = l.r.create_network_interface(req.clone(), T0).unwrap();
    let b = l.r.create_network_interface(req.clone(), T0.saturating_add_ms(5)).unwrap();
    assert_eq!(a.network_interface_id, b.network_interface_id);
    assert_eq!(l.r.enis().count(), 3, "primary, trunk, and one ENI");
    let mut other = req.clone();
    other.description = "different".into();
    assert_eq!(l.r.create_network_interface(other, T0).unwrap_err().code(), "IdempotentParameterMismatch");
    // Failures are not remembered: the same token works once the cause is gone.
    let mut bad = req.clone();
    bad.client_token = Some("tok-2".into());
    bad.v_switch_id = "vsw-nope".into();
    assert_eq!(l.r.create_network_interface(bad.clone(), T0).unwrap_err().code(), "InvalidVSwitchId.NotFound");
    bad.v_switch_id = l.pod_vsw.clone();
    let fixed = l.r.create_network_interface(bad.clone(), T0).unwrap();
    assert_eq!(l.r.create_network_interface(bad, T0).unwrap().network_interface_id, fixed.network_interface_id);
    l.r.check_invariants().unwrap();
}

#[test]
fn describe_filters_and_and_or() {
    let mut l = lab(TransitionDelays::ZERO);
    let mut members = Vec::new();
    for _ in 0..3 {
        let m = create_eni(&mut l.r, &l.pod_vsw, &l.sg, None);
        l.r.attach_network_interface(
            AttachNetworkInterface {
                network_interface_id: m.clone(),
                instance_id: l.node.clone(),
                trunk_network_instance_id: Some(l.trunk.clone()),
                ..Default::default()
            },
            T0,
        )
        .unwrap();
        members.push(m);
    }
    let free = create_eni(&mut l.r, &l.pod_vsw, &l.sg, None);
    let d = |r: &mut Region, req: DescribeNetworkInterfaces| -> Vec<String> {
        r.describe_network_interfaces(&req, T0).unwrap().0.into_iter().map(|e| e.network_interface_id).collect()
    };
    // InstanceId leaves members out: primary + trunk.
    let by_inst = d(&mut l.r, DescribeNetworkInterfaces { instance_id: Some(l.node.clone()), ..Default::default() });
    assert_eq!(by_inst.len(), 2);
    assert!(by_inst.contains(&l.trunk));
    let by_type = d(
        &mut l.r,
        DescribeNetworkInterfaces { r#type: Some("Member".into()), status: Some("InUse".into()), ..Default::default() },
    );
    assert_eq!(by_type.len(), 3);
    // PrivateIpAddress.N matches primary IPs too, ORed inside the list, ANDed with Status.
    let ip_of = |r: &Region, id: &str| r.eni(id).unwrap().primary_ip_address.to_string();
    let ips = vec![ip_of(&l.r, &members[0]), ip_of(&l.r, &free)];
    let got = d(&mut l.r, DescribeNetworkInterfaces { private_ip_addresses: ips.clone(), ..Default::default() });
    assert_eq!(got.len(), 2);
    let got = d(
        &mut l.r,
        DescribeNetworkInterfaces { private_ip_addresses: ips, status: Some("InUse".into()), ..Default::default() },
    );
    assert_eq!(got, vec![members[0].clone()]);
    // Unknown IDs: empty, not an error.
    assert!(
        d(
            &mut l.r,
            DescribeNetworkInterfaces { network_interface_ids: vec!["eni-unknown".into()], ..Default::default() }
        )
        .is_empty()
    );
    let err =
        l.r.describe_network_interfaces(
            &DescribeNetworkInterfaces { r#type: Some("Bogus".into()), ..Default::default() },
            T0,
        )
        .unwrap_err();
    assert_eq!(err.code(), "InvalidParameter");
}

#[test]
fn security_group_rules_validate_and_dedupe() {
    let mut l = lab(TransitionDelays::ZERO);
    let ok = PermissionInput {
        ip_protocol: "tcp".into(),
        port_range: "80/80".into(),
        source_cidr_ip: "10.0.0.0/8".into(),
        priority: "1".into(),
        ..Default::default()
    };
    let auth = |r: &mut Region, p: PermissionInput| {
        r.authorize_security_group(
            Direction::Ingress,
            AuthorizeSecurityGroup { security_group_id: l.sg.clone(), permissions: vec![p], client_token: None },
            T0,
        )
    };
    auth(&mut l.r, ok.clone()).unwrap();
    auth(&mut l.r, ok.clone()).unwrap();
    assert_eq!(l.r.security_group(&l.sg).unwrap().rules.len(), 1, "identical rule not duplicated");
    let before = fingerprint(&l.r);
    let cases: Vec<(PermissionInput, &str)> = vec![
        (PermissionInput { priority: "0".into(), ..ok.clone() }, "InvalidPriority.Malformed"),
        (PermissionInput { priority: "101".into(), ..ok.clone() }, "InvalidPriority.Malformed"),
        (PermissionInput { ip_protocol: "SCTP".into(), ..ok.clone() }, "InvalidIpProtocol.Malformed"),
        (PermissionInput { port_range: "80".into(), ..ok.clone() }, "InvalidIpPortRange.Malformed"),
        (PermissionInput { port_range: "90/80".into(), ..ok.clone() }, "InvalidIpPortRange.Malformed"),
        (
            PermissionInput { ip_protocol: "ICMP".into(), port_range: "1/2".into(), ..ok.clone() },
            "InvalidIpPortRange.Malformed",
        ),
        (PermissionInput { source_cidr_ip: "10.0.0.0/33".into(), ..ok.clone() }, "InvalidSourceCidrIp.Malformed"),
        (PermissionInput { source_cidr_ip: String::new(), ..ok.clone() }, "MissingParameter"),
        (PermissionInput { policy: "reject".into(), ..ok.clone() }, "InvalidPolicy.Malformed"),
        (
            PermissionInput { source_cidr_ip: String::new(), source_group_id: "sg-nope".into(), ..ok.clone() },
            "InvalidSourceGroupId.NotFound",
        ),
    ];
    for (p, code) in cases {
        assert_eq!(auth(&mut l.r, p.clone()).unwrap_err().code(), code, "{p:?}");
    }
    assert_eq!(fingerprint(&l.r), before);
    // In use by ENIs: cannot be deleted.
    assert_eq!(l.r.delete_security_group(&l.sg, T0).unwrap_err().code(), "DependencyViolation");
    // Enterprise groups cannot change their inner policy and cannot be mixed with basic ones.
    let ent =
        l.r.create_security_group(
            CreateSecurityGroup {
                vpc_id: l.vpc.clone(),
                security_group_type: "enterprise".into(),
                ..Default::default()
            },
            T0,
        )
        .unwrap()
        .security_group_id;
    assert_eq!(
        l.r.modify_security_group_policy(&ent, "Accept", T0).unwrap_err().code(),
        "InvalidSecurityGroupType.NotSupported"
    );
    let err =
        l.r.create_network_interface(
            CreateNetworkInterface {
                v_switch_id: l.vsw.clone(),
                security_group_ids: vec![l.sg.clone(), ent.clone()],
                ..Default::default()
            },
            T0,
        )
        .unwrap_err();
    assert_eq!(err.code(), "InvalidOperation.MultiGroupType");
    // Six groups are one too many.
    let six: Vec<String> = (0..6)
        .map(|_| {
            l.r.create_security_group(CreateSecurityGroup { vpc_id: l.vpc.clone(), ..Default::default() }, T0)
                .unwrap()
                .security_group_id
        })
        .collect();
    let err =
        l.r.create_network_interface(
            CreateNetworkInterface { v_switch_id: l.vsw.clone(), security_group_ids: six, ..Default::default() },
            T0,
        )
        .unwrap_err();
    assert_eq!(err.code(), "JoinedGroupLimitExceed");
    // Names: only a URL-like prefix is refused, as for every other resource.
    let named = |name: &str| CreateSecurityGroup {
        vpc_id: l.vpc.clone(),
        security_group_name: name.into(),
        ..Default::default()
    };
    assert!(l.r.create_security_group(named("httpd-servers"), T0).is_ok());
    for bad in ["http://sg", "https://sg", &"x".repeat(129)] {
        let err = l.r.create_security_group(named(bad), T0).unwrap_err();
        assert_eq!(err.code(), "InvalidParameter", "{bad}");
    }
    // Revoke by content removes the rule; revoking again is a no-op.
    let revoke =
        RevokeSecurityGroup { security_group_id: l.sg.clone(), permissions: vec![ok.clone()], ..Default::default() };
    l.r.revoke_security_group(Direction::Ingress, revoke.clone(), T0).unwrap();
    assert!(l.r.security_group(&l.sg).unwrap().rules.is_empty());
    l.r.revoke_security_group(Direction::Ingress, revoke, T0).unwrap();
    l.r.check_invariants().unwrap();
}

#[test]
fn restore_finishes_transitions_in_flight() {
    let mut l = lab(TransitionDelays { attach_ms: 1000, detach_ms: 1000, delete_ms: 1000, start_stop_ms: 1000 });
    let m = create_eni(&mut l.r, &l.pod_vsw, &l.sg, None);
    l.r.attach_network_interface(
        AttachNetworkInterface {
            network_interface_id: m.clone(),
            instance_id: l.node.clone(),
            trunk_network_instance_id: Some(l.trunk.clone()),
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    let rows = l.r.export_all();
    let mut back = Region::restore(l.r.config().clone(), rows).unwrap();
    back.check_invariants().unwrap();
    assert_eq!(status(&back, &m), "Attaching");
    back.advance(T0.saturating_add_ms(5000));
    assert_eq!(status(&back, &m), "InUse");
    // New IDs after restore do not collide with old ones.
    let again = create_eni(&mut back, &l.pod_vsw, &l.sg, None);
    assert!(l.r.eni(&again).is_none());
    back.check_invariants().unwrap();
}

#[test]
fn delete_instance_releases_everything() {
    let mut l = lab(TransitionDelays::ZERO);
    let m = create_eni(&mut l.r, &l.pod_vsw, &l.sg, None);
    l.r.attach_network_interface(
        AttachNetworkInterface {
            network_interface_id: m.clone(),
            instance_id: l.node.clone(),
            trunk_network_instance_id: Some(l.trunk.clone()),
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    assert_eq!(l.r.delete_instance(&l.node, false, T0).unwrap_err().code(), "IncorrectInstanceStatus");
    l.r.delete_instance(&l.node, true, T0).unwrap();
    assert!(l.r.instance(&l.node).is_none());
    let member = l.r.eni(&m).unwrap();
    assert_eq!((member.status, member.eni_type), (EniStatus::Available, EniType::Secondary));
    assert_eq!(status(&l.r, &l.trunk), "Available");
    assert!(l.r.ip_owner_in_vpc(&l.vpc, "10.0.4.22".parse().unwrap()).is_none(), "primary ENI's IP released");
    l.r.check_invariants().unwrap();
}
