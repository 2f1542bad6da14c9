//! A restarted shim rebuilds its pods. The devices a shim makes are TAPs bound to its fds, so a
//! shim that dies (SIGKILL, a crash) takes with it its node's `eth0`/`eth1` — and the routes the
//! veth datapath put through `eth1` (the member tables' default routes, the node's /32 on the
//! trunk) — and every vlan pod's sub-interface. The reconcile brings the NICs back from the
//! NodeConfig; this module brings the pods' wiring back from the CNI's state files
//! ([`crate::cni::state`]), once, after the first reconcile that left every NIC in place.
//!
//! For each recorded pod of this node it re-runs the pod's whole plan ([`crate::cni::plan`]), node
//! side and pod side, through the same idempotent steps ADD uses
//! ([`crate::cni::apply_kernel_step`]; the sub-interface through [`Node::create_vlan_device`]
//! directly): what survived is left as it is, what died is made again. Like an ECS instance
//! rebooted under Terway, whose daemon re-plumbs the pods it still has on record.
//!
//! [`decide`] is pure: a pod of another node (one state directory may serve several shims), a
//! pod whose member ENI is no longer on this node's trunk with its VLAN, or whose namespace is
//! gone or is now another one, is skipped, logged and counted; so is a state file that does not
//! parse, without stopping the others. A pod whose steps fail (a dying shim's sub-interface still
//! holds its name) is tried again with the reconcile's retries, at most [`MAX_PASSES`] times.
//! Must not: remove anything (DEL does that), or call the CNI binary.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::cni::conf::Datapath;
use crate::cni::plan::{self, Inputs, Step};
use crate::cni::state::{self, PodState};
use crate::driver::netns::{self, NetnsId};
use crate::node::{Node, VlanRequest};
use crate::view::{NicKind, NodeView};

/// Passes before a pod that keeps failing is given up (one a reconcile retry, about a second
/// apart).
pub const MAX_PASSES: u32 = 10;

/// Why a recorded pod is not rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Recorded by the CNI of another node.
    OtherNode(String),
    /// Its member ENI is not an `InUse` member of a trunk of this node.
    NotAttached,
    /// The member is on this node, but with another VLAN id than the pod was wired for.
    Moved { recorded: u32, now: u16 },
    /// The state file comes from a plugin that did not record the pod's namespace.
    NoNamespaceRecorded,
    /// The pod's namespace does not exist any more.
    NamespaceGone(PathBuf),
    /// The path names another namespace than the pod's.
    NamespaceReplaced(PathBuf),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::OtherNode(i) => write!(f, "a pod of {i}"),
            Skip::NotAttached => f.write_str("its member ENI is no longer attached to this node"),
            Skip::Moved { recorded, now } => write!(f, "its member moved from VLAN {recorded} to {now}"),
            Skip::NoNamespaceRecorded => f.write_str("its state file does not name its namespace"),
            Skip::NamespaceGone(p) => write!(f, "its namespace {} is gone", p.display()),
            Skip::NamespaceReplaced(p) => write!(f, "{} is another namespace now", p.display()),
        }
    }
}

/// What to do with one recorded pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run the plan made from these inputs, with the pod's namespace at this path.
    Rebuild {
        inputs: Box<Inputs>,
        pod_netns: PathBuf,
    },
    Skip(Skip),
}

/// What a recorded pod needs, given the node as `view` has it and the identity of the namespace
/// its recorded path names now (`None`: nothing there).
pub fn decide(st: &PodState, view: &NodeView, ns_now: Option<NetnsId>) -> Decision {
    if let Some(i) = st.instance_id.as_ref().filter(|i| **i != view.instance_id) {
        return Decision::Skip(Skip::OtherNode(i.clone()));
    }
    let Some(place) = view.member_place(&st.member) else { return Decision::Skip(Skip::NotAttached) };
    if u32::from(place.vlan) != st.vlan {
        return Decision::Skip(Skip::Moved { recorded: st.vlan, now: place.vlan });
    }
    let Some(pod_netns) = st.pod_netns.clone() else { return Decision::Skip(Skip::NoNamespaceRecorded) };
    match ns_now {
        None => return Decision::Skip(Skip::NamespaceGone(pod_netns)),
        Some(now) if st.pod_netns_id.is_some_and(|then| then != now) => {
            return Decision::Skip(Skip::NamespaceReplaced(pod_netns));
        }
        Some(_) => {}
    }
    // The trunk's name and the node's address as the node has them now (what ADD read from the
    // node: the trunk's device, eth0's address).
    let trunk_dev = view.nic(&place.trunk_eni_id).map_or_else(|| st.trunk_dev.clone(), |t| t.if_name());
    let host_ip = match st.datapath {
        Datapath::Veth => view.nics.iter().find(|n| n.kind == NicKind::Primary).and_then(|n| n.ipv4).map(|v| v.address),
        Datapath::Vlan => None,
    };
    let inputs = Inputs {
        datapath: st.datapath,
        member: st.member.clone(),
        vlan: st.vlan,
        pod_ip: st.pod_ip,
        vswitch_prefix: st.prefix,
        gateway: st.gateway,
        trunk_dev,
        host_veth: st.host_veth.clone(),
        ifname: st.ifname.clone(),
        mtu: st.mtu,
        host_ip,
        ipv6: st.ipv6,
    };
    Decision::Rebuild { inputs: Box::new(inputs), pod_netns }
}

/// How a rebuild went, for the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub rebuilt: usize,
    /// Pods of this node that cannot be rebuilt (see [`Skip`]).
    pub skipped: usize,
    /// State files that do not parse.
    pub unreadable: usize,
    /// Pods given up after [`MAX_PASSES`].
    pub failed: usize,
    /// Pods of other nodes.
    pub elsewhere: usize,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rebuilt={} skipped={} unreadable={} failed={} other_nodes={}",
            self.rebuilt, self.skipped, self.unreadable, self.failed, self.elsewhere
        )
    }
}

/// The rebuild of one shim's start: the directory, and the pods still to do.
#[derive(Debug, Clone)]
pub struct Rebuild {
    dir: PathBuf,
    /// `None` before the first pass (every file); then the containers whose steps failed.
    pending: Option<BTreeSet<String>>,
    passes: u32,
    tally: Tally,
}

impl Rebuild {
    pub fn new(dir: PathBuf) -> Rebuild {
        Rebuild { dir, pending: None, passes: 0, tally: Tally::default() }
    }

    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// True once every pod is rebuilt, skipped or given up.
    pub fn done(&self) -> bool {
        self.pending.as_ref().is_some_and(BTreeSet::is_empty)
    }

    /// One pass over the pods still to do; returns the failures (the caller retries later).
    pub fn pass(&mut self, node: &mut Node) -> Vec<String> {
        let first = self.pending.is_none();
        let mut retry = BTreeSet::new();
        let mut errors = Vec::new();
        for (file, parsed) in state::load_all(&self.dir) {
            let st = match parsed {
                Ok(st) => st,
                Err(e) => {
                    if first {
                        tracing::warn!(file = %file.display(), error = %e, "unreadable CNI state file: its pod is not rebuilt");
                        self.tally.unreadable += 1;
                    }
                    continue;
                }
            };
            if self.pending.as_ref().is_some_and(|p| !p.contains(&st.container_id)) {
                continue;
            }
            let ns_now = st.pod_netns.as_deref().and_then(|p| netns::id_of(p).ok());
            match decide(&st, node.view(), ns_now) {
                Decision::Skip(Skip::OtherNode(_)) => self.tally.elsewhere += 1,
                Decision::Skip(why) => {
                    tracing::warn!(container = %st.container_id, member = %st.member, reason = %why, "pod not rebuilt");
                    self.tally.skipped += 1;
                }
                Decision::Rebuild { inputs, pod_netns } => match apply(node, &inputs, &pod_netns) {
                    Ok(()) => {
                        tracing::info!(
                            container = %st.container_id, member = %st.member, datapath = st.datapath.as_str(),
                            netns = %pod_netns.display(), "pod rebuilt"
                        );
                        self.tally.rebuilt += 1;
                    }
                    Err(e) => {
                        errors.push(format!("rebuild of pod {}: {e}", st.container_id));
                        retry.insert(st.container_id.clone());
                    }
                },
            }
        }
        self.passes += 1;
        if !retry.is_empty() && self.passes >= MAX_PASSES {
            tracing::error!(pods = ?retry, passes = self.passes, "pods given up: their wiring could not be rebuilt");
            self.tally.failed += retry.len();
            retry.clear();
            errors.clear();
        }
        self.pending = Some(retry);
        if self.done() && self.tally == Tally::default() {
            tracing::debug!(dir = %self.dir.display(), "no pods recorded in the CNI's state");
        } else if self.done() {
            tracing::info!(dir = %self.dir.display(), tally = %self.tally, "pods rebuilt from the CNI's state");
        }
        errors
    }
}

/// Runs a pod's plan: the kernel's steps as ADD runs them, the sub-interface by the node itself.
fn apply(node: &mut Node, inputs: &Inputs, pod: &Path) -> Result<(), String> {
    let node_ns = node.netns_path().to_path_buf();
    for step in plan::setup(inputs) {
        let text = step.to_string();
        let r = match step {
            Step::VlanDevice { member, link, mtu, .. } => {
                let req = VlanRequest { member_eni_id: member, netns_path: pod.to_path_buf(), if_name: link, mtu };
                node.create_vlan_device(&req).map(drop).map_err(|e| e.to_string())
            }
            step => crate::cni::apply_kernel_step(step, &node_ns, pod).map_err(|e| e.to_string()),
        };
        r.map_err(|e| format!("{text}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::view::test::config;

    const NS: NetnsId = NetnsId { dev: 4, ino: 4026532001 };

    /// A pod wired on `config()`'s node: member eni-m5 on VLAN 5 of eni-trunk (eth1).
    fn pod(datapath: Datapath) -> PodState {
        PodState {
            container_id: "c-web".into(),
            member: "eni-m5".into(),
            vlan: 5,
            pod_ip: Ipv4Addr::new(10, 0, 8, 5),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 0, 8, 253),
            datapath,
            host_veth: "cali0123456789a".into(),
            trunk_dev: "eth1".into(),
            ifname: "eth0".into(),
            table: 1005,
            instance_id: Some("i-node".into()),
            pod_netns: Some("/run/netns/pod".into()),
            pod_netns_id: Some(NS),
            mtu: 1500,
            ipv6: None,
        }
    }

    fn view() -> NodeView {
        NodeView::from_proto(&config())
    }

    fn rebuilt(d: Decision) -> (Inputs, PathBuf) {
        match d {
            Decision::Rebuild { inputs, pod_netns } => (*inputs, pod_netns),
            other => panic!("not rebuilt: {other:?}"),
        }
    }

    #[test]
    fn a_veth_pod_is_replanned_from_its_record_and_the_node() {
        let (i, ns) = rebuilt(decide(&pod(Datapath::Veth), &view(), Some(NS)));
        assert_eq!(ns, PathBuf::from("/run/netns/pod"));
        assert_eq!(
            (i.member.as_str(), i.vlan, i.trunk_dev.as_str(), i.host_ip, i.table()),
            ("eni-m5", 5, "eth1", Some(Ipv4Addr::new(10, 0, 4, 22)), 1005)
        );
        // The same plan ADD made, node side (the trunk's table and /32) included.
        let text = plan::render(&plan::setup(&i));
        assert!(text.contains("node: ip route replace default via 10.0.8.253 dev eth1 onlink table 1005"), "{text}");
        assert!(text.contains("node: ip addr add 10.0.4.22/32 dev eth1"), "{text}");
    }

    #[test]
    fn a_vlan_pod_gets_its_sub_interface_back() {
        let mut st = pod(Datapath::Vlan);
        st.mtu = 1400;
        let (i, _) = rebuilt(decide(&st, &view(), Some(NS)));
        assert_eq!(i.host_ip, None);
        let steps = plan::setup(&i);
        assert_eq!(steps[0], Step::VlanDevice { member: "eni-m5".into(), vlan: 5, link: "eth0".into(), mtu: 1400 });
    }

    #[test]
    fn a_dual_stack_pod_gets_its_ipv6_side_back_too() {
        let v6 = plan::PodIpv6 {
            ip: "2408:4005:3000:8::5".parse().unwrap(),
            prefix: 64,
            gateway: "2408:4005:3000:8:ffff:ffff:ffff:fffd".parse().unwrap(),
        };
        for datapath in [Datapath::Veth, Datapath::Vlan] {
            let st = PodState { ipv6: Some(v6), ..pod(datapath) };
            let (i, _) = rebuilt(decide(&st, &view(), Some(NS)));
            assert_eq!(i.ipv6, Some(v6));
            let text = plan::render(&plan::setup(&i));
            assert!(text.contains("ip -6 addr add 2408:4005:3000:8::5/"), "{text}");
            assert!(text.contains("pod:  sysctl -w net.ipv6.conf.eth0."), "{text}");
        }
    }

    #[test]
    fn the_trunk_is_named_as_the_node_names_it_now() {
        let mut c = config();
        c.nics[1].device_index = 3;
        let (i, _) = rebuilt(decide(&pod(Datapath::Veth), &NodeView::from_proto(&c), Some(NS)));
        assert_eq!(i.trunk_dev, "eth3");
    }

    #[test]
    fn pods_that_cannot_be_rebuilt_say_why() {
        let v = view();
        let st = pod(Datapath::Veth);
        let other = PodState { instance_id: Some("i-other".into()), ..st.clone() };
        assert_eq!(decide(&other, &v, Some(NS)), Decision::Skip(Skip::OtherNode("i-other".into())));
        let gone = PodState { member: "eni-gone".into(), ..st.clone() };
        assert_eq!(decide(&gone, &v, Some(NS)), Decision::Skip(Skip::NotAttached));
        let moved = PodState { vlan: 7, ..st.clone() };
        assert_eq!(decide(&moved, &v, Some(NS)), Decision::Skip(Skip::Moved { recorded: 7, now: 5 }));
        let old = PodState { pod_netns: None, pod_netns_id: None, ..st.clone() };
        assert_eq!(decide(&old, &v, Some(NS)), Decision::Skip(Skip::NoNamespaceRecorded));
        assert_eq!(decide(&st, &v, None), Decision::Skip(Skip::NamespaceGone("/run/netns/pod".into())));
        let elsewhere = NetnsId { ino: 4026532999, ..NS };
        assert_eq!(decide(&st, &v, Some(elsewhere)), Decision::Skip(Skip::NamespaceReplaced("/run/netns/pod".into())));
        // A member that is Detaching has lost its place on the trunk.
        let mut c = config();
        c.nics[1].members[0].status = "Detaching".into();
        assert_eq!(decide(&st, &NodeView::from_proto(&c), Some(NS)), Decision::Skip(Skip::NotAttached));
    }

    #[test]
    fn an_old_record_without_node_or_namespace_identity_is_judged_by_its_member() {
        // No instance id: a member on this node's trunk makes it this node's pod.
        let st = PodState { instance_id: None, pod_netns_id: None, ..pod(Datapath::Veth) };
        assert!(matches!(decide(&st, &view(), Some(NS)), Decision::Rebuild { .. }));
        let elsewhere = PodState { member: "eni-of-another-node".into(), ..st };
        assert_eq!(decide(&elsewhere, &view(), Some(NS)), Decision::Skip(Skip::NotAttached));
    }
}
