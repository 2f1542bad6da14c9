//! IPv6 and prefix mode in the model: a VPC's /56, a vSwitch's /64 by its 8 bits, ENI IPv6
//! addresses and /80 prefixes, /28 IPv4 prefixes, the per-type quotas ("each IP prefix counts as
//! one IP address"), the error table, and "a failed call changes nothing", persistence included.

use std::net::Ipv6Addr;

use enifab_model::eni::*;
use enifab_model::instance::*;
use enifab_model::security_group::*;
use enifab_model::vpc::*;
use enifab_model::{Kind, Millis, Region, RegionConfig, TransitionDelays};

const T0: Millis = Millis(1_795_751_123_000);

struct Lab {
    r: Region,
    vpc: String,
    /// Dual stack: 10.0.4.0/24 and the VPC's /64 number 4.
    vsw: String,
    /// IPv4 only.
    vsw4: String,
    sg: String,
    node: String,
}

fn lab() -> Lab {
    let mut cfg = RegionConfig::new("cn-hongkong");
    cfg.delays = TransitionDelays::ZERO;
    let mut r = Region::new(cfg, 7);
    let vpc = r
        .create_vpc(CreateVpc { cidr_block: Some("10.0.0.0/8".into()), enable_ipv6: true, ..Default::default() }, T0)
        .unwrap()
        .vpc_id;
    let mk = |r: &mut Region, cidr: &str, v6: Option<u32>| {
        r.create_vswitch(
            CreateVSwitch {
                vpc_id: vpc.clone(),
                zone_id: "cn-hongkong-b".into(),
                cidr_block: cidr.into(),
                ipv6_cidr_block: v6,
                ..Default::default()
            },
            T0,
        )
        .unwrap()
        .v_switch_id
    };
    let vsw = mk(&mut r, "10.0.4.0/24", Some(4));
    let vsw4 = mk(&mut r, "10.0.5.0/24", None);
    let sg = r
        .create_security_group(CreateSecurityGroup { vpc_id: vpc.clone(), ..Default::default() }, T0)
        .unwrap()
        .security_group_id;
    let node = r
        .create_instance(
            CreateInstance {
                // EniPrivateIpAddressQuantity 6, EniIpv6AddressQuantity 6.
                instance_type: "ecs.g7.large".into(),
                v_switch_id: vsw.clone(),
                security_group_ids: vec![sg.clone()],
                ..Default::default()
            },
            T0,
        )
        .unwrap()
        .instance
        .instance_id;
    Lab { r, vpc, vsw, vsw4, sg, node }
}

fn eni(l: &mut Lab, vsw: &str, f: impl FnOnce(&mut CreateNetworkInterface)) -> Result<Eni, String> {
    let mut req = CreateNetworkInterface {
        v_switch_id: vsw.into(),
        security_group_ids: vec![l.sg.clone()],
        ..Default::default()
    };
    f(&mut req);
    l.r.create_network_interface(req, T0).map_err(|e| e.code().to_string())
}

fn fingerprint(r: &Region) -> String {
    let mut rows: Vec<String> = r.export_all().into_iter().map(|(k, id, body)| format!("{k:?} {id} {body}")).collect();
    rows.retain(|row| !row.starts_with("Token") && !row.starts_with("Meta"));
    rows.join("\n")
}

#[test]
fn a_vpc_gets_a_56_and_its_vswitches_a_64_each() {
    let mut l = lab();
    let vpc = l.r.vpc(&l.vpc).unwrap().clone();
    let block = vpc.ipv6_cidr_block.expect("EnableIpv6 gives a /56");
    assert_eq!(block.to_string(), "2408:4005:3000::/56");
    assert_eq!(l.r.vswitch(&l.vsw).unwrap().ipv6_cidr.unwrap().to_string(), "2408:4005:3000:4::/64");
    assert_eq!(l.r.vswitch(&l.vsw4).unwrap().ipv6_cidr, None);
    // A second VPC takes the next /56; without EnableIpv6 none.
    let v2 = l.r.create_vpc(CreateVpc { enable_ipv6: true, ..Default::default() }, T0).unwrap();
    assert_eq!(v2.ipv6_cidr_block.unwrap().to_string(), "2408:4005:3000:100::/56");
    let v3 = l.r.create_vpc(CreateVpc::default(), T0).unwrap();
    assert_eq!(v3.ipv6_cidr_block, None);

    let before = fingerprint(&l.r);
    let bad = |r: &mut Region, req: CreateVSwitch| r.create_vswitch(req, T0).unwrap_err().code();
    let vsw = |vpc: &str, cidr: &str, bits: u32| CreateVSwitch {
        vpc_id: vpc.into(),
        zone_id: "cn-hongkong-b".into(),
        cidr_block: cidr.into(),
        ipv6_cidr_block: Some(bits),
        ..Default::default()
    };
    assert_eq!(bad(&mut l.r, vsw(&l.vpc, "10.0.6.0/24", 4)), "InvalidCidrBlock.Overlapped", "the /64 is taken");
    assert_eq!(bad(&mut l.r, vsw(&l.vpc, "10.0.6.0/24", 256)), "InvalidParameter", "8 bits only");
    assert_eq!(bad(&mut l.r, vsw(&v3.vpc_id, "172.16.0.0/24", 1)), "InvalidParameter", "an IPv4-only VPC");
    // A named /56 must be a free /56; a block without EnableIpv6 is refused.
    let named = |r: &mut Region, enable: bool, b: &str| {
        r.create_vpc(CreateVpc { enable_ipv6: enable, ipv6_cidr_block: Some(b.into()), ..Default::default() }, T0)
            .map(|v| v.ipv6_cidr_block.unwrap().to_string())
            .map_err(|e| e.code())
    };
    assert_eq!(named(&mut l.r, true, "2408:4005:3000::/56"), Err("InvalidCidrBlock.Overlapped"));
    assert_eq!(named(&mut l.r, true, "2408:4005:3000::/64"), Err("InvalidParameter"));
    assert_eq!(named(&mut l.r, true, "2408:4005:3000::1/56"), Err("InvalidCidrBlock.Malformed"));
    assert_eq!(named(&mut l.r, false, "2001:db8::/56"), Err("InvalidParameter"));
    assert_eq!(fingerprint(&l.r), before, "failed creates changed nothing");
    assert_eq!(named(&mut l.r, true, "2001:db8:0:100::/56"), Ok("2001:db8:0:100::/56".into()));
}

#[test]
fn eni_ipv6_addresses_assign_unassign_and_describe() {
    let mut l = lab();
    let vsw = l.vsw.clone();
    let e = eni(&mut l, &vsw, |r| r.ipv6_address_count = Some(2)).unwrap();
    assert_eq!(e.ipv6_addresses.len(), 2);
    assert!(e.ipv6_addresses.iter().all(|ip| l.r.vswitch(&l.vsw).unwrap().ipv6_cidr.unwrap().contains(*ip)));
    let id = e.network_interface_id.clone();
    let named: Ipv6Addr = "2408:4005:3000:4::abcd".parse().unwrap();
    let got =
        l.r.assign_ipv6_addresses(
            AssignIpv6Addresses {
                network_interface_id: id.clone(),
                ipv6_addresses: vec![named.to_string()],
                ..Default::default()
            },
            T0,
        )
        .unwrap();
    assert_eq!(got.ipv6_addresses, vec![named.to_string()]);
    assert_eq!(l.r.ip6_owner(named), Some(id.as_str()));

    // The Ipv6Address.N filter finds it, and only it.
    let (found, _) =
        l.r.describe_network_interfaces(
            &DescribeNetworkInterfaces { ipv6_addresses: vec![named.to_string()], ..Default::default() },
            T0,
        )
        .unwrap();
    assert_eq!(found.iter().map(|e| e.network_interface_id.as_str()).collect::<Vec<_>>(), [id.as_str()]);

    // Taken, reserved, outside, malformed: each refused, nothing changes.
    let before = fingerprint(&l.r);
    let assign = |r: &mut Region, ip: &str| {
        r.assign_ipv6_addresses(
            AssignIpv6Addresses {
                network_interface_id: id.clone(),
                ipv6_addresses: vec![ip.into()],
                ..Default::default()
            },
            T0,
        )
        .unwrap_err()
        .code()
    };
    assert_eq!(assign(&mut l.r, &named.to_string()), "InvalidPrivateIpAddress.Duplicated");
    assert_eq!(assign(&mut l.r, "2408:4005:3000:4::"), "InvalidVSwitchId.IpInvalid");
    assert_eq!(assign(&mut l.r, "2408:4005:3000:4:ffff:ffff:ffff:fffd"), "InvalidVSwitchId.IpInvalid");
    assert_eq!(assign(&mut l.r, "2408:4005:3000:5::1"), "InvalidVSwitchId.IpInvalid");
    assert_eq!(assign(&mut l.r, "10.0.4.9"), "InvalidPrivateIpAddress.Malformed");
    assert_eq!(fingerprint(&l.r), before);

    // Unassign: an address it does not hold is IpUnassigned and nothing leaves.
    let un = |r: &mut Region, ips: &[&str]| {
        r.unassign_ipv6_addresses(
            UnassignIpv6Addresses {
                network_interface_id: id.clone(),
                ipv6_addresses: ips.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            T0,
        )
        .map_err(|e| e.code())
    };
    assert_eq!(un(&mut l.r, &[&named.to_string(), "2408:4005:3000:4::9999"]), Err("InvalidIp.IpUnassigned"));
    assert_eq!(fingerprint(&l.r), before);
    assert_eq!(un(&mut l.r, &[&named.to_string()]), Ok(()));
    assert_eq!(l.r.ip6_owner(named), None);
    l.r.check_invariants().unwrap();
}

#[test]
fn ipv6_is_refused_where_the_vswitch_has_none() {
    let mut l = lab();
    let vsw4 = l.vsw4.clone();
    assert_eq!(eni(&mut l, &vsw4, |r| r.ipv6_address_count = Some(1)).unwrap_err(), "InvalidParameter");
    let e = eni(&mut l, &vsw4, |_| {}).unwrap();
    let err =
        l.r.assign_ipv6_addresses(
            AssignIpv6Addresses {
                network_interface_id: e.network_interface_id,
                ipv6_address_count: Some(1),
                ..Default::default()
            },
            T0,
        )
        .unwrap_err();
    assert_eq!(err.code(), "InvalidParameter");
}

#[test]
fn parameter_conflicts_and_ranges() {
    let mut l = lab();
    let vsw = l.vsw.clone();
    type Edit = Box<dyn FnOnce(&mut CreateNetworkInterface)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "InvalidParameter.Conflict",
            Box::new(|r| {
                r.ipv6_address_count = Some(1);
                r.ipv6_addresses = vec!["2408:4005:3000:4::5".into()];
            }),
        ),
        (
            "InvalidParameter.Conflict",
            Box::new(|r| {
                r.ipv6_address_count = Some(1);
                r.ipv6_prefix_count = Some(1);
            }),
        ),
        (
            "InvalidParameter.Conflict",
            Box::new(|r| {
                r.secondary_private_ip_address_count = Some(1);
                r.ipv4_prefix_count = Some(1);
            }),
        ),
        ("InvalidParameter", Box::new(|r| r.ipv4_prefix_count = Some(11))),
        ("InvalidParameter", Box::new(|r| r.ipv6_prefix_count = Some(0))),
        ("InvalidParameter", Box::new(|r| r.ipv6_address_count = Some(0))),
        ("InvalidOperation.Ipv6CountExceeded", Box::new(|r| r.ipv6_address_count = Some(51))),
        ("InvalidOperation.Ipv6CountExceeded", Box::new(|r| r.ipv6_address_count = Some(u32::MAX))),
    ];
    let before = fingerprint(&l.r);
    for (i, (code, f)) in cases.into_iter().enumerate() {
        assert_eq!(eni(&mut l, &vsw, f).unwrap_err(), code, "case {i}");
    }
    assert_eq!(fingerprint(&l.r), before);
}

#[test]
fn prefixes_are_carved_counted_and_released() {
    let mut l = lab();
    let vsw = l.vsw.clone();
    let avail = |r: &Region, v: &str| r.vswitch_view(r.vswitch(v).unwrap()).available_ip_address_count;
    let start = avail(&l.r, &vsw);
    let e = eni(&mut l, &vsw, |r| {
        r.ipv4_prefix_count = Some(2);
        r.ipv6_prefix_count = Some(1);
    })
    .unwrap();
    assert_eq!(e.ipv4_prefixes.len(), 2);
    assert!(e.ipv4_prefixes.iter().all(|p| p.prefix() == 28 && !p.contains(e.primary_ip_address)));
    assert_eq!(e.ipv6_prefixes.len(), 1);
    assert_eq!(e.ipv6_prefixes[0].prefix(), 80);
    assert_eq!(avail(&l.r, &vsw), start - 1 - 32, "the primary and two /28s");
    let id = e.network_interface_id.clone();

    // A single address is never handed out of a held prefix.
    let other = eni(&mut l, &vsw, |r| r.secondary_private_ip_address_count = Some(40)).unwrap();
    for ip in other.ips() {
        assert!(!e.ipv4_prefixes.iter().any(|p| p.contains(ip)), "{ip} is inside a prefix");
    }

    // Attached to a g7.large (6 IPv4, 6 IPv6 per ENI): 1 + 2 prefixes, so 3 more IPv4 slots.
    l.r.attach_network_interface(
        AttachNetworkInterface { network_interface_id: id.clone(), instance_id: l.node.clone(), ..Default::default() },
        T0,
    )
    .unwrap();
    let before = fingerprint(&l.r);
    let p4 = |r: &mut Region, n: u32| {
        r.assign_private_ip_addresses(
            AssignPrivateIpAddresses {
                network_interface_id: id.clone(),
                ipv4_prefix_count: Some(n),
                ..Default::default()
            },
            T0,
        )
        .map(|got| got.ipv4_prefixes.len())
        .map_err(|e| e.code())
    };
    assert_eq!(p4(&mut l.r, 4), Err("InvalidOperation.Ipv4CountExceeded"));
    assert_eq!(fingerprint(&l.r), before);
    assert_eq!(p4(&mut l.r, 3), Ok(3));
    let ip_one = l.r.assign_private_ip_addresses(
        AssignPrivateIpAddresses {
            network_interface_id: id.clone(),
            secondary_private_ip_address_count: Some(1),
            ..Default::default()
        },
        T0,
    );
    assert_eq!(ip_one.unwrap_err().code(), "InvalidOperation.Ipv4CountExceeded", "a prefix is one address");
    // IPv6: one prefix held, five more slots, addresses and prefixes together.
    let v6 = |r: &mut Region, addrs: Option<u32>, prefixes: Option<u32>| {
        r.assign_ipv6_addresses(
            AssignIpv6Addresses {
                network_interface_id: id.clone(),
                ipv6_address_count: addrs,
                ipv6_prefix_count: prefixes,
                ..Default::default()
            },
            T0,
        )
        .map_err(|e| e.code())
    };
    assert_eq!(v6(&mut l.r, Some(1), Some(1)).unwrap_err(), "InvalidParameter.Conflict");
    assert_eq!(v6(&mut l.r, Some(3), None).map(|g| g.ipv6_addresses.len()), Ok(3));
    assert_eq!(v6(&mut l.r, None, Some(3)).unwrap_err(), "InvalidOperation.Ipv6CountExceeded");
    assert_eq!(v6(&mut l.r, None, Some(2)).map(|g| g.ipv6_prefixes.len()), Ok(2));
    l.r.check_invariants().unwrap();

    // Unassign a prefix by name; a prefix it does not hold is IpUnassigned.
    let held = l.r.eni(&id).unwrap().ipv4_prefixes[0];
    let un = |r: &mut Region, p: &str| {
        r.unassign_private_ip_addresses(
            UnassignPrivateIpAddresses {
                network_interface_id: id.clone(),
                ipv4_prefixes: vec![p.into()],
                ..Default::default()
            },
            T0,
        )
        .map_err(|e| e.code())
    };
    assert_eq!(un(&mut l.r, "10.0.4.240/28"), Err("InvalidIp.IpUnassigned"));
    assert_eq!(un(&mut l.r, "10.0.4.0/24"), Err("InvalidParameter"));
    assert_eq!(un(&mut l.r, &held.to_string()), Ok(()));
    assert!(!l.r.eni(&id).unwrap().ipv4_prefixes.contains(&held));

    // Persistence: a restore rebuilds the allocators from the ENIs, prefixes included.
    let rows = l.r.export_all();
    let restored = Region::restore(l.r.config().clone(), rows.iter().map(|(k, id, b)| (*k, id.clone(), b.clone())))
        .expect("restores");
    restored.check_invariants().unwrap();
    assert_eq!(avail(&restored, &vsw), avail(&l.r, &vsw));

    // Deleting the ENI gives every block back.
    l.r.detach_network_interface(
        DetachNetworkInterface { network_interface_id: id.clone(), instance_id: l.node.clone(), ..Default::default() },
        T0,
    )
    .unwrap();
    l.r.delete_network_interface(&id, T0).unwrap();
    l.r.delete_network_interface(&other.network_interface_id, T0).unwrap();
    assert_eq!(avail(&l.r, &vsw), start);
    l.r.check_invariants().unwrap();
    let _ = Kind::Eni;
}

#[test]
fn attach_checks_the_ipv6_quota_of_the_type() {
    let mut l = lab();
    let vsw = l.vsw.clone();
    // Seven IPv6 addresses fit an unattached ENI, not a g7.large's six.
    let e = eni(&mut l, &vsw, |r| r.ipv6_address_count = Some(7)).unwrap();
    let err =
        l.r.attach_network_interface(
            AttachNetworkInterface {
                network_interface_id: e.network_interface_id.clone(),
                instance_id: l.node.clone(),
                ..Default::default()
            },
            T0,
        )
        .unwrap_err();
    assert_eq!(err.code(), "InvalidOperation.Ipv6CountExceeded");
    assert_eq!(l.r.eni(&e.network_interface_id).unwrap().status.as_str(), "Available");
}

#[test]
fn security_group_rules_take_ipv6_peers() {
    let mut l = lab();
    let sg = l.sg.clone();
    let perm = |proto: &str, v4: &str, v6: &str| PermissionInput {
        ip_protocol: proto.into(),
        port_range: if proto == "TCP" { "80/80".into() } else { String::new() },
        source_cidr_ip: v4.into(),
        ipv6_source_cidr_ip: v6.into(),
        ..Default::default()
    };
    let authorize = |r: &mut Region, p: PermissionInput| {
        r.authorize_security_group(
            Direction::Ingress,
            AuthorizeSecurityGroup { security_group_id: sg.clone(), permissions: vec![p], ..Default::default() },
            T0,
        )
        .map_err(|e| e.code())
    };
    assert_eq!(authorize(&mut l.r, perm("TCP", "", "2408:4005:3000::/56")), Ok(()));
    assert_eq!(authorize(&mut l.r, perm("ICMPv6", "", "2408:4005:3000:4::7")), Ok(()));
    let before = fingerprint(&l.r);
    assert_eq!(authorize(&mut l.r, perm("TCP", "10.0.0.0/8", "2408::/16")), Err("InvalidParameter.Conflict"));
    assert_eq!(authorize(&mut l.r, perm("ICMPv6", "10.0.0.0/8", "")), Err("InvalidParameter"));
    assert_eq!(authorize(&mut l.r, perm("ICMP", "", "2408::/16")), Err("InvalidParameter"));
    assert_eq!(authorize(&mut l.r, perm("TCP", "", "2408::1/16")), Err("InvalidParameter"), "host bits set");
    assert_eq!(authorize(&mut l.r, perm("TCP", "", "10.0.0.1")), Err("InvalidParameter"));
    assert_eq!(fingerprint(&l.r), before, "refusals change nothing");
    let g = l.r.security_group(&sg).unwrap();
    let v6: Vec<String> = g.rules.iter().filter_map(|r| r.ipv6_source_cidr_ip.map(|c| c.to_string())).collect();
    assert_eq!(v6, ["2408:4005:3000::/56", "2408:4005:3000:4::7/128"]);
    assert!(g.rules.iter().all(|r| r.is_ipv6()));
    // The same rule again is no second rule (the cloud's no-duplicates behaviour).
    assert_eq!(authorize(&mut l.r, perm("TCP", "", "2408:4005:3000::/56")), Ok(()));
    assert_eq!(l.r.security_group(&sg).unwrap().rules.len(), 2);
    let _ = &l.vpc;
}

#[test]
fn prefixes_by_name_at_create() {
    let mut l = lab();
    let vsw = l.vsw.clone();
    let e = eni(&mut l, &vsw, |r| {
        r.ipv4_prefixes = vec!["10.0.4.64/28".into()];
        r.ipv6_prefixes = vec!["2408:4005:3000:4:7::/80".into()];
    })
    .unwrap();
    assert_eq!(e.ipv4_prefixes[0].to_string(), "10.0.4.64/28");
    assert_eq!(e.ipv6_prefixes[0].to_string(), "2408:4005:3000:4:7::/80");
    assert!(!e.ipv4_prefixes[0].contains(e.primary_ip_address));
    let before = fingerprint(&l.r);
    let cases: [(&str, &str, &str); 6] = [
        ("10.0.4.64/28", "", "InvalidPrivateIpAddress.Duplicated"),
        ("10.0.4.65/28", "", "InvalidParameter"),
        ("10.0.4.0/27", "", "InvalidParameter"),
        ("10.0.5.0/28", "", "InvalidVSwitchId.IpInvalid"),
        ("", "2408:4005:3000:4:7::/80", "InvalidPrivateIpAddress.Duplicated"),
        ("", "2408:4005:3000:5::/80", "InvalidVSwitchId.IpInvalid"),
    ];
    for (p4, p6, code) in cases {
        let got = eni(&mut l, &vsw, |r| {
            r.ipv4_prefixes = [p4].iter().filter(|s| !s.is_empty()).map(|s| s.to_string()).collect();
            r.ipv6_prefixes = [p6].iter().filter(|s| !s.is_empty()).map(|s| s.to_string()).collect();
        });
        assert_eq!(got.unwrap_err(), code, "{p4} {p6}");
    }
    let both = eni(&mut l, &vsw, |r| {
        r.ipv4_prefixes = vec!["10.0.4.80/28".into()];
        r.ipv4_prefix_count = Some(1);
    });
    assert_eq!(both.unwrap_err(), "InvalidParameter.Conflict");
    assert_eq!(fingerprint(&l.r), before);
    l.r.check_invariants().unwrap();
}

mod quota_arithmetic {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Ips(u32),
        V4Prefixes(u32),
        V6Ips(u32),
        V6Prefixes(u32),
        DropIp(usize),
        DropV4Prefix(usize),
        DropV6Ip(usize),
        DropV6Prefix(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..5).prop_map(Op::Ips),
            (0u32..12).prop_map(Op::V4Prefixes),
            (0u32..5).prop_map(Op::V6Ips),
            (0u32..12).prop_map(Op::V6Prefixes),
            any::<usize>().prop_map(Op::DropIp),
            any::<usize>().prop_map(Op::DropV4Prefix),
            any::<usize>().prop_map(Op::DropV6Ip),
            any::<usize>().prop_map(Op::DropV6Prefix),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever mix of addresses and prefixes is asked for and given back on an attached
        /// ENI of a g7.large: a prefix counts as one address, the type's quotas (6 and 6) are
        /// never passed, a refused call changes nothing, and every index stays consistent.
        #[test]
        fn quotas_hold_and_refusals_change_nothing(ops in proptest::collection::vec(op(), 1..40)) {
            let mut l = lab();
            let vsw = l.vsw.clone();
            let id = eni(&mut l, &vsw, |_| {}).unwrap().network_interface_id;
            l.r.attach_network_interface(
                AttachNetworkInterface { network_interface_id: id.clone(), instance_id: l.node.clone(), ..Default::default() },
                T0,
            )
            .unwrap();
            for op in ops {
                let before = fingerprint(&l.r);
                let e = l.r.eni(&id).unwrap().clone();
                let pick = |n: usize, len: usize| (len > 0).then(|| n % len);
                let res = match op {
                    Op::Ips(n) => l.r.assign_private_ip_addresses(AssignPrivateIpAddresses {
                        network_interface_id: id.clone(), secondary_private_ip_address_count: Some(n), ..Default::default()
                    }, T0).map(|_| ()),
                    Op::V4Prefixes(n) => l.r.assign_private_ip_addresses(AssignPrivateIpAddresses {
                        network_interface_id: id.clone(), ipv4_prefix_count: Some(n), ..Default::default()
                    }, T0).map(|_| ()),
                    Op::V6Ips(n) => l.r.assign_ipv6_addresses(AssignIpv6Addresses {
                        network_interface_id: id.clone(), ipv6_address_count: Some(n), ..Default::default()
                    }, T0).map(|_| ()),
                    Op::V6Prefixes(n) => l.r.assign_ipv6_addresses(AssignIpv6Addresses {
                        network_interface_id: id.clone(), ipv6_prefix_count: Some(n), ..Default::default()
                    }, T0).map(|_| ()),
                    Op::DropIp(i) => match pick(i, e.secondary_ips.len()) {
                        Some(i) => l.r.unassign_private_ip_addresses(UnassignPrivateIpAddresses {
                            network_interface_id: id.clone(), private_ip_addresses: vec![e.secondary_ips[i].to_string()], ..Default::default()
                        }, T0),
                        None => continue,
                    },
                    Op::DropV4Prefix(i) => match pick(i, e.ipv4_prefixes.len()) {
                        Some(i) => l.r.unassign_private_ip_addresses(UnassignPrivateIpAddresses {
                            network_interface_id: id.clone(), ipv4_prefixes: vec![e.ipv4_prefixes[i].to_string()], ..Default::default()
                        }, T0),
                        None => continue,
                    },
                    Op::DropV6Ip(i) => match pick(i, e.ipv6_addresses.len()) {
                        Some(i) => l.r.unassign_ipv6_addresses(UnassignIpv6Addresses {
                            network_interface_id: id.clone(), ipv6_addresses: vec![e.ipv6_addresses[i].to_string()], ..Default::default()
                        }, T0),
                        None => continue,
                    },
                    Op::DropV6Prefix(i) => match pick(i, e.ipv6_prefixes.len()) {
                        Some(i) => l.r.unassign_ipv6_addresses(UnassignIpv6Addresses {
                            network_interface_id: id.clone(), ipv6_prefixes: vec![e.ipv6_prefixes[i].to_string()], ..Default::default()
                        }, T0),
                        None => continue,
                    },
                };
                let after = l.r.eni(&id).unwrap();
                match res {
                    Ok(()) => {}
                    Err(err) => {
                        prop_assert_eq!(&fingerprint(&l.r), &before, "{} changed state", err.code());
                        let expected = [
                            "InvalidOperation.Ipv4CountExceeded",
                            "InvalidOperation.Ipv6CountExceeded",
                            "InvalidParameter",
                        ];
                        prop_assert!(expected.contains(&err.code()), "unexpected {}", err.code());
                    }
                }
                prop_assert!(after.ipv4_slots() <= 6, "IPv4 slots {}", after.ipv4_slots());
                prop_assert!(after.ipv6_slots() <= 6, "IPv6 slots {}", after.ipv6_slots());
                let held: Vec<_> = after.ips().collect();
                for p in &after.ipv4_prefixes {
                    prop_assert!(!held.iter().any(|ip| p.contains(*ip)), "{p} holds an address");
                }
                for p in &after.ipv6_prefixes {
                    prop_assert!(!after.ipv6_addresses.iter().any(|ip| p.contains(*ip)), "{p} holds an address");
                }
                prop_assert!(l.r.check_invariants().is_ok(), "{:?}", l.r.check_invariants());
            }
        }
    }
}

#[test]
fn ipv6_is_switched_on_for_an_existing_vpc_and_vswitch() {
    let mut l = lab();
    let r = &mut l.r;
    let plain =
        r.create_vpc(CreateVpc { cidr_block: Some("192.168.0.0/16".into()), ..Default::default() }, T0).unwrap();
    let vsw = r
        .create_vswitch(
            CreateVSwitch {
                vpc_id: plain.vpc_id.clone(),
                zone_id: "cn-hongkong-b".into(),
                cidr_block: "192.168.1.0/24".into(),
                ..Default::default()
            },
            T0,
        )
        .unwrap()
        .v_switch_id;
    let modify_vsw = |r: &mut Region, f: &dyn Fn(&mut ModifyVSwitch)| {
        let mut q = ModifyVSwitch { v_switch_id: vsw.clone(), ..Default::default() };
        f(&mut q);
        r.modify_vswitch_attribute(q, T0).map_err(|e| e.code().to_string())
    };
    // The vSwitch cannot have a /64 before its VPC has a /56.
    assert_eq!(modify_vsw(r, &|q| q.enable_ipv6 = Some(true)), Err("InvalidParameter".into()));
    assert_eq!(r.vswitch(&vsw).unwrap().ipv6_cidr, None);

    let on = ModifyVpc { vpc_id: plain.vpc_id.clone(), enable_ipv6: Some(true), ..Default::default() };
    r.modify_vpc_attribute(on.clone(), T0).unwrap();
    let block = r.vpc(&plain.vpc_id).unwrap().ipv6_cidr_block.expect("a /56");
    assert_eq!(block.prefix(), 56);
    assert_ne!(Some(block), r.vpc(&l.vpc).unwrap().ipv6_cidr_block, "not the other VPC's");
    // Again: no change. Another block: refused, the block kept.
    r.modify_vpc_attribute(on, T0).unwrap();
    let other = ModifyVpc {
        vpc_id: plain.vpc_id.clone(),
        enable_ipv6: Some(true),
        ipv6_cidr_block: Some("2408:4005:30ff:ff00::/56".into()),
        ..Default::default()
    };
    assert_eq!(r.modify_vpc_attribute(other, T0).map_err(|e| e.code()), Err("InvalidParameter"));
    assert_eq!(r.vpc(&plain.vpc_id).unwrap().ipv6_cidr_block, Some(block));

    // EnableIPv6 alone gives the lowest free /64; naming it again is no change; another is refused.
    modify_vsw(r, &|q| q.enable_ipv6 = Some(true)).unwrap();
    let v6 = r.vswitch(&vsw).unwrap().ipv6_cidr.expect("a /64");
    assert_eq!(Some(v6), block.subnet(64, 0));
    modify_vsw(r, &|q| q.ipv6_cidr_block = Some(0)).unwrap();
    assert_eq!(modify_vsw(r, &|q| q.ipv6_cidr_block = Some(9)), Err("InvalidParameter".into()));
    assert_eq!(r.vswitch(&vsw).unwrap().ipv6_cidr, Some(v6));

    // The /64 allocates: an ENI of the vSwitch gets an IPv6 address of it.
    let sg = r
        .create_security_group(CreateSecurityGroup { vpc_id: plain.vpc_id.clone(), ..Default::default() }, T0)
        .unwrap()
        .security_group_id;
    let e = r
        .create_network_interface(
            CreateNetworkInterface {
                v_switch_id: vsw.clone(),
                security_group_ids: vec![sg],
                ipv6_address_count: Some(1),
                ..Default::default()
            },
            T0,
        )
        .unwrap();
    assert!(v6.contains(e.ipv6_addresses[0]), "{:?}", e.ipv6_addresses);

    // Given up only when nothing holds an address of it, and the VPC's only when no vSwitch has a /64.
    assert_eq!(modify_vsw(r, &|q| q.enable_ipv6 = Some(false)), Err("DependencyViolation".into()));
    let off = ModifyVpc { vpc_id: plain.vpc_id.clone(), enable_ipv6: Some(false), ..Default::default() };
    assert_eq!(r.modify_vpc_attribute(off.clone(), T0).map_err(|e| e.code()), Err("DependencyViolation"));
    r.delete_network_interface(&e.network_interface_id, T0).unwrap();
    modify_vsw(r, &|q| q.enable_ipv6 = Some(false)).unwrap();
    assert_eq!(r.vswitch(&vsw).unwrap().ipv6_cidr, None);
    r.modify_vpc_attribute(off, T0).unwrap();
    assert_eq!(r.vpc(&plain.vpc_id).unwrap().ipv6_cidr_block, None);

    // Names and descriptions change alone; bad ones change nothing.
    let named = ModifyVpc { vpc_id: plain.vpc_id.clone(), vpc_name: Some("renamed".into()), ..Default::default() };
    r.modify_vpc_attribute(named, T0).unwrap();
    assert_eq!(r.vpc(&plain.vpc_id).unwrap().vpc_name, "renamed");
    assert_eq!(modify_vsw(r, &|q| q.v_switch_name = Some("bad\u{7}name".into())), Err("InvalidParameter".into()));
    let missing = ModifyVSwitch { v_switch_id: "vsw-nope".into(), ..Default::default() };
    assert_eq!(r.modify_vswitch_attribute(missing, T0).map_err(|e| e.code()), Err("InvalidVSwitchId.NotFound"));
    r.check_invariants().unwrap();
}
