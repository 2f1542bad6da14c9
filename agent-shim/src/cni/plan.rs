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

use std::fmt;
use std::net::Ipv4Addr;

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
        ip: Ipv4Addr,
        prefix: u8,
    },
    /// A permanent neighbour whose MAC is that of `mac_of` in the node namespace.
    Neigh {
        link: String,
        ip: Ipv4Addr,
        mac_of: String,
    },
    Route {
        ns: Ns,
        dst: Ipv4Addr,
        prefix: u8,
        via: Option<Ipv4Addr>,
        link: String,
        table: Option<u32>,
        onlink: bool,
    },
    Rule {
        priority: u32,
        from: Option<Ipv4Addr>,
        to: Option<Ipv4Addr>,
        table: u32,
    },
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
            Step::Addr { ns, link, ip, prefix } => write!(f, "{ns} ip addr add {ip}/{prefix} dev {link}"),
            Step::Neigh { link, ip, mac_of } => {
                write!(f, "pod:  ip neigh replace {ip} lladdr <{mac_of} MAC> dev {link} nud permanent")
            }
            Step::Route { ns, dst, prefix, via, link, table, onlink } => {
                let dst = if *prefix == 0 { "default".to_string() } else { format!("{dst}/{prefix}") };
                write!(f, "{ns} ip route replace {dst}")?;
                match via {
                    Some(gw) => write!(f, " via {gw} dev {link}")?,
                    None => write!(f, " dev {link} scope link")?,
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
                f.write_str("node: ip rule add")?;
                if let Some(ip) = from {
                    write!(f, " from {ip}/32")?;
                }
                if let Some(ip) = to {
                    write!(f, " to {ip}/32")?;
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
        }
    }
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

/// The steps that make the pod's network, in order.
pub fn setup(i: &Inputs) -> Vec<Step> {
    match i.datapath {
        Datapath::Veth => vec![
            Step::Veth { host: i.host_veth.clone(), peer: i.peer_tmp() },
            Step::MoveToPod { link: i.peer_tmp() },
            Step::RenameUp { from: i.peer_tmp(), to: i.ifname.clone() },
            Step::Up { ns: Ns::Pod, link: "lo".into() },
            Step::Addr { ns: Ns::Pod, link: i.ifname.clone(), ip: i.pod_ip, prefix: 32 },
            Step::Neigh { link: i.ifname.clone(), ip: POD_GATEWAY, mac_of: i.host_veth.clone() },
            Step::Route {
                ns: Ns::Pod,
                dst: POD_GATEWAY,
                prefix: 32,
                via: None,
                link: i.ifname.clone(),
                table: None,
                onlink: false,
            },
            Step::Route {
                ns: Ns::Pod,
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                via: Some(POD_GATEWAY),
                link: i.ifname.clone(),
                table: None,
                onlink: true,
            },
            Step::Up { ns: Ns::Node, link: i.host_veth.clone() },
            Step::Route {
                ns: Ns::Node,
                dst: i.pod_ip,
                prefix: 32,
                via: None,
                link: i.host_veth.clone(),
                table: None,
                onlink: false,
            },
            Step::Rule { priority: RULE_TO_POD, from: None, to: Some(i.pod_ip), table: 254 },
            Step::Rule { priority: RULE_FROM_POD, from: Some(i.pod_ip), to: None, table: i.table() },
        ]
        .into_iter()
        .chain(i.host_ip.map(|ip| Step::Addr { ns: Ns::Node, link: i.trunk_dev.clone(), ip, prefix: 32 }))
        .chain([Step::Route {
            ns: Ns::Node,
            dst: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            via: Some(i.gateway),
            link: i.trunk_dev.clone(),
            table: Some(i.table()),
            onlink: true,
        }])
        .collect(),
        Datapath::Vlan => vec![
            Step::VlanDevice { member: i.member.clone(), vlan: i.vlan, link: i.ifname.clone(), mtu: i.mtu },
            Step::Up { ns: Ns::Pod, link: "lo".into() },
            Step::Up { ns: Ns::Pod, link: i.ifname.clone() },
            Step::Addr { ns: Ns::Pod, link: i.ifname.clone(), ip: i.pod_ip, prefix: i.vswitch_prefix },
            Step::Route {
                ns: Ns::Pod,
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                via: Some(i.gateway),
                link: i.ifname.clone(),
                table: None,
                onlink: true,
            },
        ],
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
}
