//! The underlay step against a real namespace (root): a namespace set up the way Docker sets up
//! a container (a veth named `eth0` with an address and the default route), then
//! `enifab_shim::underlay::prepare` as `--underlay` runs it. The container's interface must be
//! renamed with its address kept, only the routes to the emulator left on it, a second run must
//! change nothing, and a shim's TAP named `eth0` must never be touched. Each test has its own
//! namespace (unique name, removed by a guard).

mod support;

use std::net::Ipv4Addr;

use enifab_shim::driver::tap::{self, TapSetup};
use enifab_shim::underlay::{self, Request, UnderlayError};
use enifab_shim::view::Ipv4Setup;
use support::{Netns, privileged};

/// A container's namespace: `eth0` (veth, 10.99.0.2/24, up), default via 10.99.0.1, and one
/// more route through it that the emulator does not need.
fn container() -> Netns {
    let ns = Netns::new("ul");
    ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "ulpeer"]);
    ns.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "ulpeer", "up"]);
    ns.ip(&["route", "add", "default", "via", "10.99.0.1", "dev", "eth0"]);
    ns.ip(&["route", "add", "10.200.0.0/16", "via", "10.99.0.1", "dev", "eth0"]);
    ns
}

fn request(targets: &[&str]) -> Request {
    Request {
        from: "eth0".into(),
        to: "underlay0".into(),
        targets: targets.iter().map(|t| t.parse().unwrap()).collect(),
        gateway: None,
        complete: true,
    }
}

#[test]
fn dockers_eth0_moves_aside_and_keeps_only_the_emulator_routed() {
    if !privileged("dockers_eth0_moves_aside_and_keeps_only_the_emulator_routed") {
        return;
    }
    let ns = container();
    let mac = ns.link("eth0").unwrap()["address"].clone();
    // The emulator's API on the container's subnet, its fabric on another host.
    let req = request(&["10.99.0.5", "192.0.2.10"]);
    let out = underlay::prepare(&ns.path(), &req).expect("underlay");
    assert_eq!(out.gateway, Some(Ipv4Addr::new(10, 99, 0, 1)), "{out:?}");

    assert!(ns.link("eth0").is_none(), "eth0 is free for the primary ENI");
    let ul = ns.link("underlay0").expect("the container's interface, renamed");
    assert_eq!(ul["address"], mac);
    assert_eq!(ul["linkinfo"]["info_kind"], "veth");
    assert!(ul["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{ul}");
    assert_eq!(ns.ipv4_addrs("underlay0"), ["10.99.0.2/24"], "its address stays");
    assert_eq!(
        ns.routes(),
        ["10.99.0.0/24 dev underlay0", "192.0.2.10 via 10.99.0.1 dev underlay0"],
        "no default route, nothing but the subnet and the emulator through the underlay"
    );

    // A restarted shim: nothing to do, and the gateway is found again without the default route.
    let again = underlay::prepare(&ns.path(), &req).expect("again");
    assert_eq!(again.applied, Vec::<String>::new());
    assert_eq!(again.gateway, Some(Ipv4Addr::new(10, 99, 0, 1)));

    // The reconcile makes eth0 the primary ENI's TAP, with the VPC's default route; learning the
    // fabric's address later adds a host route and touches neither.
    let primary = TapSetup {
        name: "eth0".into(),
        mac: enifab_net::Mac([0x00, 0x16, 0x3e, 0x00, 0x00, 0x01]),
        mtu: 1500,
        ipv4: Some(Ipv4Setup {
            address: "10.0.4.22".parse().unwrap(),
            prefix_len: 24,
            gateway: Some("10.0.4.253".parse().unwrap()),
        }),
        ipv6: None,
    };
    let tap = tap::create(&ns.path(), &primary).expect("the primary ENI's TAP");
    let later = underlay::prepare(&ns.path(), &request(&["10.99.0.5", "192.0.2.10", "192.0.2.11"])).expect("later");
    assert_eq!(later.applied, ["ip route replace 192.0.2.11/32 via 10.99.0.1 dev underlay0"]);
    assert_eq!(
        ns.routes(),
        [
            "10.0.4.0/24 dev eth0",
            "10.99.0.0/24 dev underlay0",
            "192.0.2.10 via 10.99.0.1 dev underlay0",
            "192.0.2.11 via 10.99.0.1 dev underlay0",
            "default via 10.0.4.253 dev eth0",
        ]
    );
    assert_eq!(ns.link("eth0").unwrap()["linkinfo"]["info_kind"], "tun");
    drop(tap);
}

#[test]
fn a_shims_tap_is_left_alone_and_two_candidates_are_refused() {
    if !privileged("a_shims_tap_is_left_alone_and_two_candidates_are_refused") {
        return;
    }
    // A TAP named eth0 (a shim's NIC, perhaps of a shim still dying) and no underlay: nothing moves.
    let ns = Netns::new("ultap");
    let tap = tap::create(
        &ns.path(),
        &TapSetup {
            name: "eth0".into(),
            mac: enifab_net::Mac([0x00, 0x16, 0x3e, 0, 0, 2]),
            mtu: 1500,
            ipv4: None,
            ipv6: None,
        },
    )
    .unwrap();
    let out = underlay::prepare(&ns.path(), &request(&[])).expect("nothing to do");
    assert_eq!(out.applied, Vec::<String>::new());
    assert!(ns.link("eth0").is_some() && ns.link("underlay0").is_none());
    drop(tap);

    // Docker's eth0 beside an underlay0 that is not a TAP either: which is which? Refused, and
    // both stay as they were.
    let ns = container();
    ns.ip(&["link", "add", "underlay0", "type", "veth", "peer", "name", "ulpeer2"]);
    let e = underlay::prepare(&ns.path(), &request(&[])).unwrap_err();
    assert!(matches!(e, UnderlayError::Conflict { .. }), "{e}");
    assert!(ns.link("eth0").is_some() && ns.link("underlay0").is_some());
    assert!(ns.routes().contains(&"default via 10.99.0.1 dev eth0".to_string()), "{:?}", ns.routes());
}
