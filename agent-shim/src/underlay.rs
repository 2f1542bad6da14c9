//! The shim inside a container (`--underlay NAME`): the node namespace is the container's own,
//! and Docker's interface already holds the name the primary ENI needs (`eth0`) and the default
//! route. This step moves it aside, as ARCHITECTURE.md §7 has it ("Docker's own interface moved
//! aside as the underlay"):
//!
//! ```text
//! before:  eth0 (veth, 172.18.0.3/16)   default via 172.18.0.1 dev eth0
//! after:   underlay0 (the same veth, same address)
//!          172.18.0.0/16 dev underlay0 proto kernel scope link     (connected: the emulator)
//!          192.0.2.10 via 172.18.0.1 dev underlay0                 (only for an emulator address
//!                                                                   off that subnet)
//!          eth0 = the shim's TAP, default via the vSwitch gateway   (made by the reconcile)
//! ```
//!
//! The shim's Geneve socket lives in this namespace too, so the emulator must stay reachable
//! through the underlay once the primary ENI's default route points into the VPC; every other
//! route through the underlay goes, so nothing of the instance's own traffic leaks around the
//! fabric (an ECS instance has no path but its ENIs).
//!
//! Split like [`crate::plan`] / [`crate::node`]: [`plan`] is pure (links, addresses and routes as
//! observed → ordered [`Action`]s), [`prepare`] is the thin driver that observes, applies, and
//! observes again after a move (taking a link down flushes its gateway routes; the second look
//! plans from what the kernel really left). Idempotent: a restarted shim finds the underlay in
//! place and at most fixes its routes. It must not touch a link the shim made (a TAP: a dying
//! shim's `eth0` goes with its process) or any link but the two names it is given, and it
//! handles IPv4 only (the VPC is IPv4 here).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::Path;

use enifab_net::Cidr;

use crate::cni::net::RouteInfo;
use crate::driver::DriverError;
use crate::driver::netlink::{AddrEntry, LinkEntry, Netlink};
use crate::driver::netns::run_in;
use crate::sys::IFNAMSIZ_MAX;

/// The kernel's main routing table.
const MAIN: u32 = 254;
/// The link kind of TAP (and TUN) devices: what the shim makes, never what a container runtime
/// hands a container.
const TAP_KIND: &str = "tun";

/// What the namespace looks like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub links: Vec<LinkEntry>,
    pub addrs: Vec<AddrEntry>,
    /// IPv4 routes (all tables; only the main one is looked at).
    pub routes: Vec<RouteInfo<Ipv4Addr>>,
}

/// What to do it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The name to free: the primary ENI's name in the guest (`eth0`).
    pub from: String,
    /// The underlay's name (`underlay0`).
    pub to: String,
    /// Addresses that must stay reachable through the underlay: the emulator's gRPC and fabric.
    pub targets: Vec<Ipv4Addr>,
    /// `targets` holds every address the emulator uses, so host routes to any other go. Not so
    /// before registration, when the fabric's address is still unknown: a restarted shim must
    /// not drop the route its predecessor made for it only to add it back a moment later.
    pub complete: bool,
    /// The old default gateway, when an earlier look found it (the default route is gone by the
    /// time the renamed link is looked at again).
    pub gateway: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `ip link set FROM down; ip link set FROM name TO; ip link set TO up`, then its addresses
    /// put back if the kernel dropped any.
    Move { index: u32, from: String, to: String, kind: String, addrs: Vec<(Ipv4Addr, u8)> },
    /// `ip route replace DST/32 via GW dev DEV`.
    HostRoute { dst: Ipv4Addr, gateway: Ipv4Addr, dev: String },
    /// `ip route del DST/PREFIX via GW dev DEV`.
    DeleteRoute { dst: Ipv4Addr, prefix: u8, gateway: Ipv4Addr, index: u32, dev: String },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Move { from, to, kind, addrs, .. } => {
                write!(f, "ip link set {from} down; ip link set {from} name {to}; ip link set {to} up ({kind}")?;
                for (a, p) in addrs {
                    write!(f, ", {a}/{p}")?;
                }
                f.write_str(")")
            }
            Action::HostRoute { dst, gateway, dev } => write!(f, "ip route replace {dst}/32 via {gateway} dev {dev}"),
            Action::DeleteRoute { dst, prefix, gateway, dev, .. } => {
                let dst = if *prefix == 0 { "default".to_string() } else { format!("{dst}/{prefix}") };
                write!(f, "ip route del {dst} via {gateway} dev {dev}")
            }
        }
    }
}

/// The actions, in the order they must be applied, and what the plan learnt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Why nothing (or not everything) is done, for the log.
    pub notes: Vec<String>,
    /// The gateway the underlay's routes go through.
    pub gateway: Option<Ipv4Addr>,
}

impl Plan {
    fn moves(&self) -> bool {
        self.actions.iter().any(|a| matches!(a, Action::Move { .. }))
    }
}

/// Why the underlay cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum UnderlayError {
    /// The name given for the underlay cannot be a link name here.
    #[error("--underlay {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    /// Both names are taken by links that are not the shim's: moving would clobber one.
    #[error(
        "both {from} ({kind}) and {to} exist in the node namespace: refusing to guess which is the underlay; remove or rename one"
    )]
    Conflict { from: String, to: String, kind: String },
    #[error("underlay: {0}")]
    Driver(#[from] DriverError),
}

fn check_name(req: &Request) -> Result<(), UnderlayError> {
    let n = &req.to;
    let bad = |reason| Err(UnderlayError::BadName { name: n.clone(), reason });
    if n.is_empty() || n.len() > IFNAMSIZ_MAX {
        return bad("must be 1 to 15 characters");
    }
    if n == "." || n == ".." || n.contains(['/', ':', '\0']) || n.chars().any(char::is_whitespace) {
        return bad("must not contain '/', ':' or whitespace");
    }
    if *n == req.from {
        return bad("is the name the primary ENI needs");
    }
    Ok(())
}

fn in_subnet(a: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    Cidr::containing(net, prefix.min(32)).is_some_and(|c| c.contains(a))
}

/// What to do in the namespace `obs` describes.
pub fn plan(obs: &Observed, req: &Request) -> Result<Plan, UnderlayError> {
    check_name(req)?;
    let link = |name: &str| obs.links.iter().find(|l| l.name == name);
    let is_tap = |l: &LinkEntry| l.kind.as_deref() == Some(TAP_KIND);
    let mut out = Plan { gateway: req.gateway, ..Plan::default() };
    let (index, moving) = match (link(&req.from), link(&req.to)) {
        (Some(e), Some(_)) if !is_tap(e) => {
            return Err(UnderlayError::Conflict {
                from: req.from.clone(),
                to: req.to.clone(),
                kind: e.kind.clone().unwrap_or_else(|| "device".into()),
            });
        }
        (Some(e), None) if !is_tap(e) => (e.index, true),
        // Moved before (a restarted shim); an `eth0` beside it is a shim's TAP.
        (_, Some(u)) => (u.index, false),
        (Some(_), None) => {
            out.notes.push(format!("{} is a TAP (a shim's NIC) and there is no {}: nothing to move", req.from, req.to));
            return Ok(out);
        }
        (None, None) => {
            out.notes.push(format!("neither {} nor {} exists: nothing to move", req.from, req.to));
            return Ok(out);
        }
    };
    let addrs: Vec<(Ipv4Addr, u8)> =
        obs.addrs.iter().filter(|a| a.index == index).map(|a| (a.address, a.prefix_len)).collect();
    let via: Vec<&RouteInfo<Ipv4Addr>> =
        obs.routes.iter().filter(|r| r.table == MAIN && r.oif == Some(index)).collect();
    // The default route's gateway; once that is gone, the one our host routes go through.
    out.gateway = via
        .iter()
        .find(|r| r.prefix == 0 && r.gateway.is_some())
        .and_then(|r| r.gateway)
        .or(out.gateway)
        .or_else(|| via.iter().find_map(|r| r.gateway));
    if moving {
        let kind = link(&req.from).and_then(|l| l.kind.clone()).unwrap_or_else(|| "device".into());
        out.actions.push(Action::Move { index, from: req.from.clone(), to: req.to.clone(), kind, addrs });
        // Its gateway routes go down with the link; the routes are planned from a second look.
        return Ok(out);
    }

    let mut wanted: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for &t in &req.targets {
        if t.is_loopback() || t.is_unspecified() || addrs.iter().any(|&(a, p)| in_subnet(t, a, p)) {
            continue;
        }
        match out.gateway {
            Some(_) => {
                wanted.insert(t);
            }
            None => out.notes.push(format!("{t} is off {}'s subnets and no gateway is known: not routed", req.to)),
        }
    }
    let mut deletes = Vec::new();
    let mut present: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for r in via {
        let Some(gw) = r.gateway else { continue };
        if r.prefix == 32 && Some(gw) == out.gateway && wanted.contains(&r.dst) {
            present.insert(r.dst);
        } else if r.prefix == 32 && !req.complete {
            // Perhaps the fabric's: decided once registration tells.
        } else {
            deletes.push(Action::DeleteRoute { dst: r.dst, prefix: r.prefix, gateway: gw, index, dev: req.to.clone() });
        }
    }
    // Host routes before deletions, so the emulator stays reachable throughout.
    if let Some(gateway) = out.gateway {
        out.actions.extend(wanted.difference(&present).map(|&dst| Action::HostRoute {
            dst,
            gateway,
            dev: req.to.clone(),
        }));
    }
    out.actions.extend(deletes);
    if out.actions.is_empty() {
        out.notes.push(format!("{} is in place, routed as it should be", req.to));
    }
    Ok(out)
}

/// What [`prepare`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The actions applied, as `ip` commands.
    pub applied: Vec<String>,
    pub notes: Vec<String>,
    pub gateway: Option<Ipv4Addr>,
}

fn observe(nl: &Netlink) -> Result<Observed, DriverError> {
    Ok(Observed {
        links: nl.links()?,
        addrs: nl.ipv4_addrs()?,
        routes: nl.routes(MAIN)?.into_iter().filter_map(RouteInfo::v4).collect(),
    })
}

fn apply(nl: &Netlink, plan: &Plan) -> Result<Vec<String>, DriverError> {
    let mut done = Vec::new();
    for a in &plan.actions {
        match a {
            Action::Move { index, from, to, addrs, .. } => {
                nl.set_up(*index, from, false)?;
                if let Err(e) = nl.rename(*index, from, to) {
                    // Leave it as it was, up under its old name, rather than cut off.
                    let _ = nl.set_up(*index, from, true);
                    return Err(e);
                }
                nl.set_up(*index, to, true)?;
                let now: Vec<(Ipv4Addr, u8)> = nl
                    .ipv4_addrs()?
                    .into_iter()
                    .filter(|x| x.index == *index)
                    .map(|x| (x.address, x.prefix_len))
                    .collect();
                for &(addr, prefix) in addrs.iter().filter(|x| !now.contains(x)) {
                    nl.ensure_address(*index, to, addr, prefix)?;
                }
            }
            Action::HostRoute { dst, gateway, dev } => {
                nl.replace_route((*dst).into(), 32, Some((*gateway).into()), dev, None, false)?
            }
            Action::DeleteRoute { dst, prefix, gateway, index, .. } => {
                nl.delete_route(*dst, *prefix, Some(*gateway), *index, MAIN)?
            }
        }
        done.push(a.to_string());
    }
    Ok(done)
}

/// Moves `req.from` aside as `req.to` in the namespace at `netns` and keeps only the routes the
/// emulator needs through it. Idempotent.
pub fn prepare(netns: &Path, req: &Request) -> Result<Outcome, UnderlayError> {
    let req = req.clone();
    run_in(netns, move || {
        let nl = Netlink::open()?;
        let mut out = Outcome::default();
        let first = match plan(&observe(&nl)?, &req) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        out.applied.extend(apply(&nl, &first)?);
        out.notes.extend(first.notes.iter().cloned());
        out.gateway = first.gateway;
        if first.moves() {
            let again = Request { gateway: first.gateway, ..req.clone() };
            let second = match plan(&observe(&nl)?, &again) {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            out.applied.extend(apply(&nl, &second)?);
            out.notes.extend(second.notes);
            out.gateway = second.gateway;
        }
        Ok(Ok(out))
    })?
}

/// The host of a gRPC endpoint (`127.0.0.1:50051`, `http://emulator:50051/`): `host:port`.
pub fn endpoint_authority(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// The IPv4 addresses an endpoint resolves to (DNS included); none when it does not resolve,
/// which the caller logs: in a container the emulator is usually on the connected subnet anyway.
pub fn resolve(endpoint: &str) -> Vec<Ipv4Addr> {
    let authority = endpoint_authority(endpoint);
    let found = match authority.to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(_) => (authority, 0).to_socket_addrs().map(|a| a.collect()).unwrap_or_default(),
    };
    let mut ips: Vec<Ipv4Addr> = found
        .into_iter()
        .filter_map(|a| match a.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod test {
    use super::*;

    const VETH: u32 = 12;
    const GW: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);

    fn link(index: u32, name: &str, kind: Option<&str>) -> LinkEntry {
        LinkEntry {
            index,
            name: name.into(),
            kind: kind.map(Into::into),
            mac: Some(enifab_net::Mac([2, 0x42, 0xac, 0x12, 0, 3])),
        }
    }

    fn route(dst: &str, prefix: u8, gateway: Option<Ipv4Addr>, oif: u32) -> RouteInfo<Ipv4Addr> {
        RouteInfo { dst: dst.parse().unwrap(), prefix, gateway, oif: Some(oif), table: MAIN }
    }

    /// A Docker container: `lo`, `eth0` (veth 172.18.0.3/16), default via 172.18.0.1.
    fn docker() -> Observed {
        Observed {
            links: vec![link(1, "lo", None), link(VETH, "eth0", Some("veth"))],
            addrs: vec![
                AddrEntry { index: 1, address: Ipv4Addr::LOCALHOST, prefix_len: 8 },
                AddrEntry { index: VETH, address: Ipv4Addr::new(172, 18, 0, 3), prefix_len: 16 },
            ],
            routes: vec![route("0.0.0.0", 0, Some(GW), VETH), route("172.18.0.0", 16, None, VETH)],
        }
    }

    /// `docker()` after the move: renamed, the default route flushed with the link.
    fn moved() -> Observed {
        let mut o = docker();
        o.links[1].name = "underlay0".into();
        o.routes.remove(0);
        o
    }

    fn req(targets: &[&str]) -> Request {
        Request {
            from: "eth0".into(),
            to: "underlay0".into(),
            targets: targets.iter().map(|t| t.parse().unwrap()).collect(),
            gateway: None,
            complete: true,
        }
    }

    fn names(p: &Plan) -> Vec<String> {
        p.actions.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn dockers_eth0_is_moved_aside_with_its_address() {
        let p = plan(&docker(), &req(&["172.18.0.2"])).unwrap();
        assert_eq!(
            names(&p),
            ["ip link set eth0 down; ip link set eth0 name underlay0; ip link set underlay0 up (veth, 172.18.0.3/16)"]
        );
        assert_eq!(p.gateway, Some(GW), "the old default gateway is remembered for the second look");
    }

    #[test]
    fn after_the_move_an_emulator_on_the_subnet_needs_no_route() {
        let r = Request { gateway: Some(GW), ..req(&["172.18.0.2", "127.0.0.1"]) };
        let p = plan(&moved(), &r).unwrap();
        assert_eq!(p.actions, []);
        assert_eq!(p.notes, ["underlay0 is in place, routed as it should be"]);
    }

    #[test]
    fn an_emulator_off_the_subnet_gets_a_host_route_via_the_old_gateway() {
        let r = Request { gateway: Some(GW), ..req(&["192.0.2.10", "172.18.0.2", "192.0.2.10"]) };
        let p = plan(&moved(), &r).unwrap();
        assert_eq!(names(&p), ["ip route replace 192.0.2.10/32 via 172.18.0.1 dev underlay0"]);
        // Without the hint (the default route already gone) and no host route yet: said, not done.
        let p = plan(&moved(), &req(&["192.0.2.10"])).unwrap();
        assert_eq!(p.actions, []);
        assert!(p.notes[0].contains("no gateway is known"), "{:?}", p.notes);
    }

    #[test]
    fn a_restarted_shim_changes_nothing_and_finds_the_gateway_again() {
        let mut o = moved();
        o.routes.push(route("192.0.2.10", 32, Some(GW), VETH));
        // A shim's eth0 TAP beside it, dying or new, is none of the underlay's business.
        o.links.push(link(30, "eth0", Some("tun")));
        let p = plan(&o, &req(&["192.0.2.10"])).unwrap();
        assert_eq!(p.actions, []);
        assert_eq!(p.gateway, Some(GW));
        // A new target (the fabric address, learnt at registration) is routed the same way.
        let p = plan(&o, &req(&["192.0.2.10", "192.0.2.11"])).unwrap();
        assert_eq!(names(&p), ["ip route replace 192.0.2.11/32 via 172.18.0.1 dev underlay0"]);
    }

    #[test]
    fn only_routes_to_the_emulator_stay_on_the_underlay() {
        let mut o = moved();
        o.routes.push(route("0.0.0.0", 0, Some(GW), VETH));
        o.routes.push(route("10.200.0.0", 16, Some(GW), VETH));
        o.routes.push(route("198.51.100.7", 32, Some(GW), VETH));
        // Routes through other links and other tables are not the underlay's.
        o.routes.push(route("0.0.0.0", 0, Some(Ipv4Addr::new(10, 0, 4, 253)), 30));
        o.routes.push(RouteInfo { table: 1003, ..route("0.0.0.0", 0, Some(GW), VETH) });
        let p = plan(&o, &req(&["192.0.2.10"])).unwrap();
        assert_eq!(
            names(&p),
            [
                "ip route replace 192.0.2.10/32 via 172.18.0.1 dev underlay0",
                "ip route del default via 172.18.0.1 dev underlay0",
                "ip route del 10.200.0.0/16 via 172.18.0.1 dev underlay0",
                "ip route del 198.51.100.7/32 via 172.18.0.1 dev underlay0",
            ]
        );
    }

    #[test]
    fn before_registration_host_routes_stay_for_the_fabric() {
        let mut o = moved();
        o.routes.push(route("192.0.2.11", 32, Some(GW), VETH));
        o.routes.push(route("0.0.0.0", 0, Some(GW), VETH));
        let early = Request { complete: false, ..req(&["192.0.2.10"]) };
        assert_eq!(
            names(&plan(&o, &early).unwrap()),
            [
                "ip route replace 192.0.2.10/32 via 172.18.0.1 dev underlay0",
                "ip route del default via 172.18.0.1 dev underlay0",
            ]
        );
        let registered = Request { complete: true, ..req(&["192.0.2.10"]) };
        assert!(
            names(&plan(&o, &registered).unwrap())
                .contains(&"ip route del 192.0.2.11/32 via 172.18.0.1 dev underlay0".into())
        );
    }

    #[test]
    fn a_tap_named_eth0_is_never_moved() {
        let mut o = docker();
        o.links[1].kind = Some("tun".into());
        let p = plan(&o, &req(&[])).unwrap();
        assert_eq!(p.actions, []);
        assert!(p.notes[0].contains("TAP"), "{:?}", p.notes);
        let p = plan(&Observed::default(), &req(&[])).unwrap();
        assert_eq!((p.actions.len(), p.notes.len()), (0, 1));
    }

    #[test]
    fn two_candidates_or_bad_names_are_refused() {
        let mut o = docker();
        o.links.push(link(40, "underlay0", Some("veth")));
        assert!(matches!(plan(&o, &req(&[])), Err(UnderlayError::Conflict { .. })));
        for bad in ["", "eth0", "a/b", "way-too-long-name0", "a b", ".."] {
            let r = Request { to: bad.into(), ..req(&[]) };
            assert!(matches!(plan(&docker(), &r), Err(UnderlayError::BadName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn subnets_and_endpoints() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(in_subnet(ip("172.18.200.1"), ip("172.18.0.3"), 16));
        assert!(!in_subnet(ip("172.19.0.1"), ip("172.18.0.3"), 16));
        assert!(in_subnet(ip("8.8.8.8"), ip("172.18.0.3"), 0));
        assert!(in_subnet(ip("172.18.0.3"), ip("172.18.0.3"), 32));
        assert_eq!(endpoint_authority("http://emulator:50051/"), "emulator:50051");
        assert_eq!(endpoint_authority("10.0.0.1:50051"), "10.0.0.1:50051");
        assert_eq!(resolve("127.0.0.1:50051"), [Ipv4Addr::LOCALHOST]);
        assert_eq!(resolve("https://127.0.0.1"), [Ipv4Addr::LOCALHOST]);
        assert_eq!(resolve("[::1]:50051"), Vec::<Ipv4Addr>::new(), "IPv4 only");
    }
}
