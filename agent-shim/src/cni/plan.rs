//! The pod's network as it must be, computed from the member ENI and the request: pure, no
//! syscalls, golden-tested. [`super::net`] then makes the kernel match it step by step.
//!
//! Each step prints as the `ip` command that would make it, so the plan reads as the resulting
//! kernel state. For a veth pod 10.0.4.30 on VLAN 3 of the trunk `eth1`, member vSwitch gateway
//! 10.0.4.253 (Terway's policy-router datapath, `plugin/datapath/policy_router_linux.go`):
//!
//! ```text
//! node: ip link add cali… type veth peer name tmp… gso_max_size 65000   # the pod's wire
//! node: ip link set tmp… netns <pod>
//! pod:  ip link set tmp… name eth0 up
//! pod:  ip addr add 10.0.4.30/32 dev eth0
//! pod:  ip neigh replace 169.254.1.1 lladdr <cali… MAC> dev eth0 nud permanent
//! pod:  ip route replace 169.254.1.1/32 dev eth0 scope link
//! pod:  ip route replace default via 169.254.1.1 dev eth0 onlink
//! node: ip link set cali… up
//! node: ip route replace 10.0.4.30/32 dev cali… scope link          # main: to the pod
//! node: ip rule add to 10.0.4.30/32 lookup main pref 512            # 512: to podIP lookup main
//! node: ip rule add from 10.0.4.30/32 lookup 1003 pref 2048         # 2048: from podIP lookup trunk table
//! node: ip addr add 10.0.4.22/32 dev eth1                           # the node's IP on the trunk
//! node: ip route replace default via 10.0.4.253 dev eth1 onlink table 1003
//! ```
//!
//! The node's primary IP on the trunk (Terway's `GenerateENICfgForPolicy` gives the trunk ENI
//! the host IP as a /32) is the source address the node picks for traffic it originates or
//! masquerades out of the trunk: kube-proxy's MASQUERADE of Service traffic that Terway's
//! `from <podIP>` rule sends to the trunk. Without it the kernel borrows the first global
//! address of another device, which is not what Terway's nodes do.
//!
//! The VLAN tag is not in the plan: the node shim pushes the member's tag on frames leaving the
//! trunk with the pod's source IP (Terway's tc `match src <podIP>/32 → vlan push`), because this
//! kernel has no act_vlan. For a vlan pod the shim creates `eth0` itself (the sub-interface
//! device), and the plan only addresses it:
//!
//! ```text
//! shim: create the VLAN 3 device of member eni-… as eth0 in <pod> (trunk MAC), mtu 1500
//! pod:  ip link set eth0 up
//! pod:  ip addr add 10.0.4.30/24 dev eth0
//! pod:  ip route replace default via 10.0.4.253 dev eth0 onlink
//! ```
//!
//! A dual-stack pod (its member ENI holds an IPv6 address of the vSwitch's /64) gets the same
//! shape in IPv6, after the IPv4 steps. On the veth datapath its next hop is the link-local
//! `fe80::1`, answered by a permanent neighbour entry as `169.254.1.1` is (Terway's
//! `LinkIPNetv6`), the node forwards IPv6 (`net.ipv6.conf.all.forwarding=1`, as terwayd sets it)
//! and Terway's two rules and the trunk table exist once per family:
//!
//! ```text
//! node: sysctl -w net.ipv6.conf.all.forwarding=1
//! node: sysctl -w net.ipv6.conf.cali….{accept_ra,autoconf,accept_dad}=0 disable_ipv6=0
//! pod:  sysctl -w net.ipv6.conf.eth0.{accept_ra,autoconf,accept_dad}=0 disable_ipv6=0
//! pod:  ip -6 addr add 2408:4005:3000:4::30/128 dev eth0
//! pod:  ip -6 neigh replace fe80::1 lladdr <cali… MAC> dev eth0 nud permanent
//! pod:  ip -6 route replace default via fe80::1 dev eth0 onlink
//! node: ip -6 route replace 2408:4005:3000:4::30/128 dev cali…
//! node: ip -6 rule add to 2408:4005:3000:4::30/128 lookup main pref 512
//! node: ip -6 rule add from 2408:4005:3000:4::30/128 lookup 1003 pref 2048
//! node: sysctl -w net.ipv6.conf.eth1.{accept_ra,autoconf,accept_dad}=0 disable_ipv6=0
//! node: ip -6 route replace 2408:4005:3000:4:ffff:ffff:ffff:fffd/128 dev eth1 table 1003
//! node: ip -6 route replace default via 2408:4005:3000:4:ffff:ffff:ffff:fffd dev eth1 table 1003
//! ```
//!
//! The trunk's IPv6 table names the gateway on-link with a route of its own rather than
//! `onlink`: the kernel checks an IPv6 `onlink` gateway against the main table, where the node's
//! /64 is on eth0, and refuses the mismatch.
//!
//! IPv6 is switched on statically on every link it crosses (no router advertisements, no
//! autoconfiguration, no duplicate address detection: the VPC assigns every address and the
//! fabric leaves DAD unanswered, so it would only hold the address back a second), before the
//! address is added. On the vlan datapath the pod's sub-interface gets it before it is up, then
//! the member's address on the /64 and a default route via the vSwitch's IPv6 gateway.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::conf::Datapath;

/// Where a step happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    Node,
    Pod,
}

impl fmt::Display for Ns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ns::Node => "node:",
            Ns::Pod => "pod: ",
        })
    }
}

/// The link-local next hop a veth pod uses, answered by a static neighbour entry.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// Its IPv6 counterpart, link-local.
pub const POD_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Terway's rule priorities (policy_router_linux.go): to-pod first, then from-pod.
pub const RULE_TO_POD: u32 = 512;
pub const RULE_FROM_POD: u32 = 2048;
/// Per-member routing tables start here: 1000 + the member's VLAN id.
pub const TABLE_BASE: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Veth {
        host: String,
        peer: String,
    },
    MoveToPod {
        link: String,
    },
    RenameUp {
        from: String,
        to: String,
    },
    Up {
        ns: Ns,
        link: String,
    },
    Addr {
        ns: Ns,
        link: String,
        ip: IpAddr,
        prefix: u8,
    },
    /// A permanent neighbour whose MAC is that of `mac_of` in the node namespace.
    Neigh {
        link: String,
        ip: IpAddr,
        mac_of: String,
    },
    /// A route of the destination's family; `via` is of the same family.
    Route {
        ns: Ns,
        dst: IpAddr,
        prefix: u8,
        via: Option<IpAddr>,
        link: String,
        table: Option<u32>,
        onlink: bool,
    },
    /// A rule for one host address (/32 or /128) of either family.
    Rule {
        priority: u32,
        from: Option<IpAddr>,
        to: Option<IpAddr>,
        table: u32,
    },
    /// IPv6 on for a link, statically configured (see the module doc).
    Ipv6On {
        ns: Ns,
        link: String,
    },
    /// The node forwards IPv6.
    Forward6,
    VlanDevice {
        member: String,
        vlan: u32,
        link: String,
        mtu: u32,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Veth { host, peer } => {
                write!(f, "node: ip link add {host} type veth peer name {peer} gso_max_size 65000")
            }
            Step::MoveToPod { link } => write!(f, "node: ip link set {link} netns <pod>"),
            Step::RenameUp { from, to } => write!(f, "pod:  ip link set {from} name {to} up"),
            Step::Up { ns, link } => write!(f, "{ns} ip link set {link} up"),
            Step::Addr { ns, link, ip, prefix } => write!(f, "{ns} ip{} addr add {ip}/{prefix} dev {link}", v6(ip)),
            Step::Neigh { link, ip, mac_of } => {
                write!(f, "pod:  ip{} neigh replace {ip} lladdr <{mac_of} MAC> dev {link} nud permanent", v6(ip))
            }
            Step::Route { ns, dst, prefix, via, link, table, onlink } => {
                let family = v6(dst);
                let dst = if *prefix == 0 { "default".to_string() } else { format!("{dst}/{prefix}") };
                write!(f, "{ns} ip{family} route replace {dst}")?;
                match via {
                    Some(gw) => write!(f, " via {gw} dev {link}")?,
                    // IPv6 routes have no scope of their own.
                    None if family.is_empty() => write!(f, " dev {link} scope link")?,
                    None => write!(f, " dev {link}")?,
                }
                if *onlink {
                    f.write_str(" onlink")?;
                }
                if let Some(t) = table {
                    write!(f, " table {t}")?;
                }
                Ok(())
            }
            Step::Rule { priority, from, to, table } => {
                let family = from.or(*to).map_or("", |ip| v6(&ip));
                write!(f, "node: ip{family} rule add")?;
                if let Some(ip) = from {
                    write!(f, " from {ip}/{}", host_prefix(ip))?;
                }
                if let Some(ip) = to {
                    write!(f, " to {ip}/{}", host_prefix(ip))?;
                }
                let t = if *table == 254 { "main".to_string() } else { table.to_string() };
                write!(f, " lookup {t} pref {priority}")
            }
            Step::VlanDevice { member, vlan, link, mtu } => {
                write!(
                    f,
                    "shim: create the VLAN {vlan} device of member {member} as {link} in <pod> (trunk MAC), mtu {mtu}"
                )
            }
            Step::Ipv6On { ns, link } => {
                write!(f, "{ns} sysctl -w net.ipv6.conf.{link}.{{accept_ra,autoconf,accept_dad}}=0 disable_ipv6=0")
            }
            Step::Forward6 => f.write_str("node: sysctl -w net.ipv6.conf.all.forwarding=1"),
        }
    }
}

/// `ip`'s family flag for an address: `" -6"` for IPv6, nothing for IPv4.
fn v6(ip: &IpAddr) -> &'static str {
    if ip.is_ipv6() { " -6" } else { "" }
}

/// The prefix length of one host of the address's family.
pub fn host_prefix(ip: &IpAddr) -> u8 {
    if ip.is_ipv6() { 128 } else { 32 }
}

/// A dual-stack pod's IPv6 side: its member ENI's first IPv6 address, and the vSwitch's /64 and
/// IPv6 gateway (the /64's last address − 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIpv6 {
    pub ip: Ipv6Addr,
    pub prefix: u8,
    pub gateway: Ipv6Addr,
}

/// What the plan is made from: the member ENI as the cloud describes it, the node's trunk
/// device, and what the runtime asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub datapath: Datapath,
    pub member: String,
    pub vlan: u32,
    pub pod_ip: Ipv4Addr,
    pub vswitch_prefix: u8,
    pub gateway: Ipv4Addr,
    /// The trunk's device in the node (`eth<DeviceIndex>`).
    pub trunk_dev: String,
    pub host_veth: String,
    pub ifname: String,
    pub mtu: u32,
    /// The node's primary IP (veth datapath): put on the trunk as a /32. `None`: left alone.
    pub host_ip: Option<Ipv4Addr>,
    /// A dual-stack pod's IPv6 side; `None` for an IPv4 pod.
    pub ipv6: Option<PodIpv6>,
}

impl Inputs {
    pub fn table(&self) -> u32 {
        TABLE_BASE + self.vlan
    }

    /// The temporary name of the pod end of the veth while it is still in the node.
    pub fn peer_tmp(&self) -> String {
        format!("tmp{}", &self.host_veth[4..])
    }
}

/// The steps that make the pod's network, in order: IPv4, then a dual-stack pod's IPv6.
pub fn setup(i: &Inputs) -> Vec<Step> {
    match i.datapath {
        Datapath::Veth => {
            let mut steps = vec![
                Step::Veth { host: i.host_veth.clone(), peer: i.peer_tmp() },
                Step::MoveToPod { link: i.peer_tmp() },
                Step::RenameUp { from: i.peer_tmp(), to: i.ifname.clone() },
                Step::Up { ns: Ns::Pod, link: "lo".into() },
            ];
            steps.extend(veth_family(i, i.pod_ip.into(), POD_GATEWAY.into(), i.gateway.into(), false));
            if let Some(v6) = i.ipv6 {
                steps.push(Step::Forward6);
                steps.push(Step::Ipv6On { ns: Ns::Node, link: i.host_veth.clone() });
                steps.push(Step::Ipv6On { ns: Ns::Pod, link: i.ifname.clone() });
                steps.extend(veth_family(i, v6.ip.into(), POD_GATEWAY6.into(), v6.gateway.into(), true));
            }
            steps
        }
        Datapath::Vlan => {
            let route = |gateway: IpAddr| Step::Route {
                ns: Ns::Pod,
                dst: unspecified(&gateway),
                prefix: 0,
                via: Some(gateway),
                link: i.ifname.clone(),
                table: None,
                onlink: true,
            };
            let mut steps = vec![
                Step::VlanDevice { member: i.member.clone(), vlan: i.vlan, link: i.ifname.clone(), mtu: i.mtu },
                Step::Up { ns: Ns::Pod, link: "lo".into() },
            ];
            if i.ipv6.is_some() {
                // Before the link is up, so that it sends no router solicitation.
                steps.push(Step::Ipv6On { ns: Ns::Pod, link: i.ifname.clone() });
            }
            steps.extend([
                Step::Up { ns: Ns::Pod, link: i.ifname.clone() },
                Step::Addr { ns: Ns::Pod, link: i.ifname.clone(), ip: i.pod_ip.into(), prefix: i.vswitch_prefix },
                route(i.gateway.into()),
            ]);
            if let Some(v6) = i.ipv6 {
                steps.push(Step::Addr { ns: Ns::Pod, link: i.ifname.clone(), ip: v6.ip.into(), prefix: v6.prefix });
                steps.push(route(v6.gateway.into()));
            }
            steps
        }
    }
}

/// The veth datapath's steps for one family, once the pod's end is in place: the pod's host
/// address and link-local next hop, the node's route and Terway's two rules, the trunk's table.
/// The node's address goes on the trunk for IPv4 only (kube-proxy's masquerading source; there
/// is no IPv6 masquerading here).
fn veth_family(i: &Inputs, pod_ip: IpAddr, next_hop: IpAddr, gateway: IpAddr, ipv6: bool) -> Vec<Step> {
    let any = unspecified(&pod_ip);
    let mut steps = vec![
        Step::Addr { ns: Ns::Pod, link: i.ifname.clone(), ip: pod_ip, prefix: host_prefix(&pod_ip) },
        Step::Neigh { link: i.ifname.clone(), ip: next_hop, mac_of: i.host_veth.clone() },
    ];
    if !ipv6 {
        // fe80::/64 is on-link by itself; 169.254.1.1 is not.
        steps.push(Step::Route {
            ns: Ns::Pod,
            dst: next_hop,
            prefix: 32,
            via: None,
            link: i.ifname.clone(),
            table: None,
            onlink: false,
        });
    }
    steps.push(Step::Route {
        ns: Ns::Pod,
        dst: any,
        prefix: 0,
        via: Some(next_hop),
        link: i.ifname.clone(),
        table: None,
        onlink: true,
    });
    if !ipv6 {
        steps.push(Step::Up { ns: Ns::Node, link: i.host_veth.clone() });
    }
    steps.extend([
        Step::Route {
            ns: Ns::Node,
            dst: pod_ip,
            prefix: host_prefix(&pod_ip),
            via: None,
            link: i.host_veth.clone(),
            table: None,
            onlink: false,
        },
        Step::Rule { priority: RULE_TO_POD, from: None, to: Some(pod_ip), table: 254 },
        Step::Rule { priority: RULE_FROM_POD, from: Some(pod_ip), to: None, table: i.table() },
    ]);
    if ipv6 {
        // The kernel checks an IPv6 `onlink` gateway against the main table, where the node's
        // own /64 is on eth0: the trunk's table names the gateway on-link itself instead.
        steps.push(Step::Ipv6On { ns: Ns::Node, link: i.trunk_dev.clone() });
        steps.push(Step::Route {
            ns: Ns::Node,
            dst: gateway,
            prefix: 128,
            via: None,
            link: i.trunk_dev.clone(),
            table: Some(i.table()),
            onlink: false,
        });
    } else if let Some(ip) = i.host_ip {
        steps.push(Step::Addr { ns: Ns::Node, link: i.trunk_dev.clone(), ip: ip.into(), prefix: 32 });
    }
    steps.push(Step::Route {
        ns: Ns::Node,
        dst: any,
        prefix: 0,
        via: Some(gateway),
        link: i.trunk_dev.clone(),
        table: Some(i.table()),
        onlink: !ipv6,
    });
    steps
}

/// `0.0.0.0` or `::`, the family of `ip`.
fn unspecified(ip: &IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// Render a plan as the list of commands (for tests, logs and `CHECK` messages).
pub fn render(steps: &[Step]) -> String {
    steps.iter().map(|s| format!("{s}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(datapath: Datapath) -> Inputs {
        Inputs {
            datapath,
            member: "eni-member".into(),
            vlan: 3,
            pod_ip: Ipv4Addr::new(10, 0, 4, 30),
            vswitch_prefix: 24,
            gateway: Ipv4Addr::new(10, 0, 4, 253),
            trunk_dev: "eth1".into(),
            host_veth: "cali0123456789a".into(),
            ifname: "eth0".into(),
            mtu: 1500,
            host_ip: Some(Ipv4Addr::new(10, 0, 4, 22)),
            ipv6: None,
        }
    }

    fn dual(datapath: Datapath) -> Inputs {
        Inputs {
            ipv6: Some(PodIpv6 {
                ip: "2408:4005:3000:4::30".parse().unwrap(),
                prefix: 64,
                gateway: "2408:4005:3000:4:ffff:ffff:ffff:fffd".parse().unwrap(),
            }),
            ..inputs(datapath)
        }
    }

    #[test]
    fn veth_plan_is_terways_policy_router() {
        let golden = "\
node: ip link add cali0123456789a type veth peer name tmp0123456789a gso_max_size 65000
node: ip link set tmp0123456789a netns <pod>
pod:  ip link set tmp0123456789a name eth0 up
pod:  ip link set lo up
pod:  ip addr add 10.0.4.30/32 dev eth0
pod:  ip neigh replace 169.254.1.1 lladdr <cali0123456789a MAC> dev eth0 nud permanent
pod:  ip route replace 169.254.1.1/32 dev eth0 scope link
pod:  ip route replace default via 169.254.1.1 dev eth0 onlink
node: ip link set cali0123456789a up
node: ip route replace 10.0.4.30/32 dev cali0123456789a scope link
node: ip rule add to 10.0.4.30/32 lookup main pref 512
node: ip rule add from 10.0.4.30/32 lookup 1003 pref 2048
node: ip addr add 10.0.4.22/32 dev eth1
node: ip route replace default via 10.0.4.253 dev eth1 onlink table 1003
";
        assert_eq!(render(&setup(&inputs(Datapath::Veth))), golden);
    }

    #[test]
    fn vlan_plan_addresses_the_sub_interface() {
        let golden = "\
shim: create the VLAN 3 device of member eni-member as eth0 in <pod> (trunk MAC), mtu 1500
pod:  ip link set lo up
pod:  ip link set eth0 up
pod:  ip addr add 10.0.4.30/24 dev eth0
pod:  ip route replace default via 10.0.4.253 dev eth0 onlink
";
        assert_eq!(render(&setup(&inputs(Datapath::Vlan))), golden);
    }

    #[test]
    fn a_dual_stack_veth_pod_gets_both_families_of_the_policy_router() {
        let plan = render(&setup(&dual(Datapath::Veth)));
        let ipv4 = render(&setup(&inputs(Datapath::Veth)));
        assert!(plan.starts_with(&ipv4), "the IPv4 steps come first, unchanged:\n{plan}");
        let golden = "\
node: sysctl -w net.ipv6.conf.all.forwarding=1
node: sysctl -w net.ipv6.conf.cali0123456789a.{accept_ra,autoconf,accept_dad}=0 disable_ipv6=0
pod:  sysctl -w net.ipv6.conf.eth0.{accept_ra,autoconf,accept_dad}=0 disable_ipv6=0
pod:  ip -6 addr add 2408:4005:3000:4::30/128 dev eth0
pod:  ip -6 neigh replace fe80::1 lladdr <cali0123456789a MAC> dev eth0 nud permanent
pod:  ip -6 route replace default via fe80::1 dev eth0 onlink
node: ip -6 route replace 2408:4005:3000:4::30/128 dev cali0123456789a
node: ip -6 rule add to 2408:4005:3000:4::30/128 lookup main pref 512
node: ip -6 rule add from 2408:4005:3000:4::30/128 lookup 1003 pref 2048
node: sysctl -w net.ipv6.conf.eth1.{accept_ra,autoconf,accept_dad}=0 disable_ipv6=0
node: ip -6 route replace 2408:4005:3000:4:ffff:ffff:ffff:fffd/128 dev eth1 table 1003
node: ip -6 route replace default via 2408:4005:3000:4:ffff:ffff:ffff:fffd dev eth1 table 1003
";
        assert_eq!(&plan[ipv4.len()..], golden);
    }

    #[test]
    fn a_dual_stack_vlan_pod_has_ipv6_on_before_its_sub_interface_is_up() {
        let golden = "\
shim: create the VLAN 3 device of member eni-member as eth0 in <pod> (trunk MAC), mtu 1500
pod:  ip link set lo up
pod:  sysctl -w net.ipv6.conf.eth0.{accept_ra,autoconf,accept_dad}=0 disable_ipv6=0
pod:  ip link set eth0 up
pod:  ip addr add 10.0.4.30/24 dev eth0
pod:  ip route replace default via 10.0.4.253 dev eth0 onlink
pod:  ip -6 addr add 2408:4005:3000:4::30/64 dev eth0
pod:  ip -6 route replace default via 2408:4005:3000:4:ffff:ffff:ffff:fffd dev eth0 onlink
";
        assert_eq!(render(&setup(&dual(Datapath::Vlan))), golden);
    }
}
