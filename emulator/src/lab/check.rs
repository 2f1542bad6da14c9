//! `enifab lab check`: every probe of the file run for real, one at a time, and the table.
//!
//! For each check: its group changes are made (a rule authorized or revoked, or a group's
//! `innerAccessPolicy` set with ModifySecurityGroupPolicy), the fabric's counters are read, the
//! probe runs from the source's namespace, the counters are read again, and the changes are
//! undone (the old policy restored). The counters say which way the traffic went: the fabric
//! ports (node/ethN) it entered and left by, and any drop with its reason. While the probe runs,
//! the counters are also watched: a drop that a retry cannot change (a security group, no route,
//! a load balancer with nothing to forward to) ends the probe at once as "blocked" instead of
//! waiting out its deadline, which keeps a table of many blocked checks fast.
//!
//! A check of `family: ipv6` probes the ends' IPv6 addresses (ICMPv6 echo for `icmp`) and says so
//! in its row, with the address probed; `enifab trace` follows IPv4 frames only, so such a row has
//! no trace beside it.
//!
//! A reachable check through a Service or a load balancer also shows which server answered and
//! the client address it saw (the built-in responders say both), which is where masquerading and
//! CLB's client-address preservation become visible.
//!
//! A check changes nothing but the groups it names, and puts them back; the verdict is what the
//! traffic did, never a prediction. Probes run where the node runtime puts them (in-process
//! for the local lab, on the node's agent otherwise).
//!
//! `check` may start while `up` still runs (docker-compose starts them together): it waits for
//! `up` to finish, at most `--wait` (by default three minutes with agents, not at all for a
//! local lab), saying what it waits for.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use enifab_proto::v1 as pb;

use super::process::require_root;
use super::runtime::{self, Place, Runtime};
use super::state::{self, LabState};
use super::{LabOptions, cloud, lab_id, probe, responder};
use crate::apply;
use crate::cli::{self, Clients, describe_status};
use crate::topology::{ChangeSpec, Topology};

/// The path of a probe that never reached the fabric.
const STAYED: &str = "stayed on the node (host routing, never reached the VPC)";

/// One row of `check`'s table.
#[derive(Debug, Clone)]
pub struct CheckRow {
    pub name: String,
    pub scenario: Option<u32>,
    pub what: String,
    pub path: String,
    pub expected: String,
    pub got: String,
    pub passed: bool,
    /// The responder's answer, the probe's error, or why a refusal is not a drop.
    pub detail: String,
    /// For a reachable check through an address that is not the server's own (a Service, a
    /// load balancer): who answered and whom it saw.
    pub answered: Option<String>,
    /// What `enifab trace` said of the same packet while the check's changes were in force, when
    /// the fabric sees the whole path (see [`Traced`]).
    pub trace: Option<Traced>,
}

/// The fabric's explanation of a check, for comparison with what the traffic did. Only checks
/// whose path the fabric decides end to end have one: from a pod or node to a pod or node, or
/// to a load balancer whose chosen backend is a pod. A Service's cluster IP or a backend node
/// hands the packet to the node's kube-proxy, which the fabric does not see; a path that stays
/// on the node never reaches the fabric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    /// `reachable` or `blocked`, as the table words the traffic.
    pub word: String,
    /// The hop that refused the packet, as `enifab trace` titles and explains it.
    pub refused_by: Option<String>,
}

/// Drops that mean the probe will not get through however long it waits.
const DECISIVE_DROPS: &[&str] = &[
    "security_group_egress",
    "security_group_ingress",
    "no_route",
    "spoofed",
    "unknown_vlan",
    "to_gateway",
    "lb_no_listener",
    "lb_listener_stopped",
    "lb_no_backend",
    "lb_no_healthy_backend",
    "lb_hairpin",
];

/// Drops of frames a host sends on its own account, never a probe's (which are unicast, and
/// whose neighbour resolution the fabric answers): multicast the VPC does not flood (the MLD
/// reports a kernel sends when an interface gains IPv6), neighbour discovery it consumes (router
/// solicitations, unsolicited advertisements, duplicate address detection), gratuitous ARP and
/// ARP probes. They come whenever a node or pod sets up an address, so also while a check runs
/// just after `up`; they are kept out of its path (in neither its ports nor its drops).
const BACKGROUND_DROPS: &[&str] = &["broadcast_or_multicast", "ndp_consumed", "arp_gratuitous", "arp_probe"];

/// How long `check` waits for `up` with agents, unless told.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(180);

/// `enifab lab check`: run every probe and report (what it waits for goes to stderr).
pub async fn check(opts: &LabOptions, file: &Path) -> Result<Vec<CheckRow>> {
    check_with(opts, file, &mut |line| eprintln!("{line}")).await
}

/// As [`check`], saying what it waits for to `out`.
pub async fn check_with(opts: &LabOptions, file: &Path, out: &mut dyn FnMut(String)) -> Result<Vec<CheckRow>> {
    let topo = Topology::load(file)?;
    let id = lab_id(file);
    let st = wait_for_up(opts, &id, file, out).await?;
    let rt = Runtime::for_state(opts, &st)?;
    if rt.kind() == runtime::LOCAL {
        require_root()?;
    }
    let channel = cli::connect_patiently(&opts.endpoint, Duration::from_secs(10)).await?;
    let mut c = Clients::new(channel);
    let groups = cloud::group_ids(&mut c, &topo).await?;
    let names = port_names(&mut c, &st).await?;
    let mut rows = Vec::new();
    for chk in &topo.checks {
        let v6 = chk.ipv6();
        let (from, from_ip) = source(&st, &chk.from.value, v6)?;
        let to_ip = destination(&st, &chk.to.value, v6)?;
        let proto = probe::Proto::parse(&chk.protocol.value).expect("checked by the topology");
        let port = chk.port.as_ref().map_or(0, |p| p.value);
        let mut undo = Vec::new();
        for ch in &chk.changes {
            match change(&mut c, ch, &groups).await {
                Ok(u) => undo.push(u),
                Err(e) => {
                    // Leave the groups as they were before this check.
                    for u in undo.into_iter().rev() {
                        let _ = u.run(&mut c).await;
                    }
                    return Err(e.context(format!("check {:?}", chk.name.value)));
                }
            }
        }
        let outcome = run_probe(&mut c, &rt, &st, from, to_ip, proto, port).await;
        // `enifab trace` follows IPv4 frames only: an IPv6 check has no trace to compare.
        let traced = match (&from, &from_ip, to_ip) {
            (Place::Pod(_) | Place::Node(_), Some(ip), IpAddr::V4(to)) => trace(&mut c, &st, ip, to, proto, port).await,
            _ => None,
        };
        for u in undo.into_iter().rev() {
            u.run(&mut c).await?;
        }
        let (outcome, before, after) = outcome?;
        let got = outcome.word().to_string();
        let passed = got == chk.expect.value;
        let detail = match &outcome {
            probe::Outcome::Reachable(words) => words.clone(),
            probe::Outcome::Error(e) => e.clone(),
            probe::Outcome::Refused => "connection refused: the path works, nothing listens".into(),
            probe::Outcome::Timeout => String::new(),
        };
        let answered = match &outcome {
            probe::Outcome::Reachable(words) => responder::parse_answer(words)
                .filter(|(_, local, _)| *local != to_ip.to_string())
                .map(|(name, local, peer)| {
                    let seen = if Some(peer) == from_ip.as_deref() {
                        format!("{peer}, the client itself")
                    } else {
                        peer.to_string()
                    };
                    format!("{name} ({local}), which saw the client as {seen}")
                }),
            _ => None,
        };
        let what = format!(
            "{} → {} {}{}{}",
            chk.from.value,
            chk.to.value,
            chk.protocol.value,
            if port != 0 { format!("/{port}") } else { String::new() },
            family_note(&chk.to.value, to_ip)
        );
        let path = path_summary(&before, &after, &names);
        let traced = traced.filter(|_| !path.starts_with(STAYED));
        rows.push(CheckRow {
            name: chk.name.value.clone(),
            scenario: chk.scenario,
            what,
            path,
            expected: chk.expect.value.clone(),
            got,
            passed,
            detail: if passed {
                detail
            } else {
                format!("{detail} {}", chk.why.clone().unwrap_or_default()).trim().to_string()
            },
            answered,
            trace: traced,
        });
    }
    Ok(rows)
}

/// The fabric's explanation of the check's packet, when it covers the whole path ([`Traced`]).
async fn trace(
    c: &mut Clients,
    st: &LabState,
    from: &str,
    to: Ipv4Addr,
    proto: probe::Proto,
    port: u16,
) -> Option<Traced> {
    let protocol = match proto {
        probe::Proto::Tcp | probe::Proto::Http => "tcp",
        probe::Proto::Udp => "udp",
        probe::Proto::Icmp => "icmp",
    };
    let q = pb::TraceFrameRequest {
        source: from.to_string(),
        destination: to.to_string(),
        protocol: protocol.into(),
        port: u32::from(port),
        source_port: 0,
    };
    // A trace that cannot run (a node without a shim) simply leaves the row without one.
    let r = c.fabric.trace_frame(q).await.ok()?.into_inner();
    let to = to.to_string();
    let pods: Vec<&str> = st.pods.values().map(|p| p.ip.as_str()).collect();
    let ends_here = pods.contains(&to.as_str()) || st.nodes.values().any(|n| n.primary_ip == to);
    let routed = r.hops.iter().rev().find(|h| h.kind == "route").map(|h| h.address.as_str());
    let whole = match routed {
        Some(a) => pods.contains(&a) || (ends_here && a == to),
        None => ends_here,
    };
    whole.then(|| Traced {
        word: if r.verdict == "dropped" { "blocked" } else { "reachable" }.to_string(),
        refused_by: r.hops.iter().find(|h| !h.ok).map(|h| format!("{}: {}", h.title, h.detail)),
    })
}

/// Wait (at most `opts.wait`, by default [`DEFAULT_WAIT`] with agents and nothing for a local
/// lab) until `up` has finished; the state it left. A failed `up` is waited for too (compose
/// runs it again), and its error is the answer when the time is up.
async fn wait_for_up(opts: &LabOptions, id: &str, file: &Path, out: &mut dyn FnMut(String)) -> Result<LabState> {
    let agents = !opts.agents.is_empty();
    let mut said = String::new();
    let start = std::time::Instant::now();
    loop {
        let st = state::load(opts, id)?;
        let patience = opts.wait.unwrap_or(if agents || st.as_ref().is_some_and(|s| s.runtime == runtime::AGENTS) {
            DEFAULT_WAIT
        } else {
            Duration::ZERO
        });
        let waiting = match &st {
            None => format!("lab {id} is not up: run enifab lab up {}", file.display()),
            Some(s) if s.up.status == "running" => format!("waiting for `lab up` to finish ({})", s.up.step),
            Some(s) if s.up.status == "failed" => format!("`lab up` failed: {}", s.up.error),
            Some(_) => String::new(),
        };
        match st {
            Some(s) if waiting.is_empty() => return Ok(s),
            // A local lab checked while up runs (or after it failed) is checked as it is, as before.
            Some(s) if patience.is_zero() && s.up.status == "running" => return Ok(s),
            _ if start.elapsed() >= patience => bail!("{waiting}"),
            _ => {}
        }
        if waiting != said {
            let left = patience.saturating_sub(start.elapsed()).as_secs();
            let line = if st.is_none() {
                format!("waiting for `lab up` to start ({left} s left)")
            } else {
                format!("{waiting} ({left} s left)")
            };
            out(line);
            said = waiting;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Where a probe starts, and the address it leaves with (when the lab knows it): of the check's
/// family (`v6`).
fn source<'a>(st: &LabState, name: &'a str, v6: bool) -> Result<(Place<'a>, Option<String>)> {
    let place = Place::of(st, name).ok_or_else(|| anyhow!("{name} is not up"))?;
    let ip = match (place, v6) {
        (Place::Pod(p), false) => &st.pods[p].ip,
        (Place::Pod(p), true) => &st.pods[p].ip6,
        (Place::Node(n), false) => &st.nodes[n].primary_ip,
        (Place::Node(n), true) => &st.nodes[n].primary_ip6,
        (Place::External(x), false) => &st.externals[x].address,
        (Place::External(_), true) => return Ok((place, None)),
    };
    Ok((place, Some(ip.clone()).filter(|ip| !ip.is_empty())))
}

/// The address a check probes: the named pod's, node's or external client's of the check's
/// family (`v6`), or the address written as `to`. The topology made sure the end has one; a
/// lab brought up before its file asked for IPv6 may still lack it, which is said here.
fn destination(st: &LabState, name: &str, v6: bool) -> Result<IpAddr> {
    let ip = match (st.pods.get(name), st.nodes.get(name), st.externals.get(name), v6) {
        (Some(p), _, _, false) => &p.ip,
        (Some(p), _, _, true) => &p.ip6,
        (None, Some(n), _, false) => &n.primary_ip,
        (None, Some(n), _, true) => &n.primary_ip6,
        (None, None, Some(x), _) => &x.address,
        _ => name,
    };
    let addr: IpAddr = ip.parse().with_context(|| {
        format!("{name} has no {} address in the lab's state (run lab up again?)", if v6 { "IPv6" } else { "IPv4" })
    })?;
    if addr.is_ipv6() != v6 {
        bail!("{name} ({addr}) is not an address of the check's family");
    }
    Ok(addr)
}

/// What a row adds to its description for an IPv6 check: the family, and the address probed
/// when `to` named it rather than wrote it. IPv4 rows read as they always have.
fn family_note(to: &str, addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(_) => String::new(),
        IpAddr::V6(_) if to.parse::<IpAddr>().is_ok() => " over IPv6".into(),
        IpAddr::V6(a) => format!(" over IPv6 ({a})"),
    }
}

/// Run one probe, watching the fabric's counters to cut it short on a decisive drop. Returns the
/// outcome and the counters before and after.
async fn run_probe(
    c: &mut Clients,
    rt: &Runtime,
    st: &LabState,
    from: Place<'_>,
    to: IpAddr,
    proto: probe::Proto,
    port: u16,
) -> Result<(probe::Outcome, pb::DescribeFabricCountersResponse, pb::DescribeFabricCountersResponse)> {
    let before = counters(c).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut task = rt.probe(st, from, to, proto, port, stop.clone())?;
    let outcome = loop {
        tokio::select! {
            r = &mut task => break r?,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if !stop.load(Ordering::Relaxed) && decisive_drop(&before, &counters(c).await?) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
    };
    // Let the last frames of the exchange be counted.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let after = counters(c).await?;
    Ok((outcome, before, after))
}

fn decisive_drop(before: &pb::DescribeFabricCountersResponse, now: &pb::DescribeFabricCountersResponse) -> bool {
    let total = |r: &pb::DescribeFabricCountersResponse, reason: &str| {
        r.drops.iter().filter(|d| d.reason == reason).map(|d| d.frames).sum::<u64>()
    };
    DECISIVE_DROPS.iter().any(|r| total(now, r) > total(before, r))
}

/// How to undo a change once the probe ran.
enum Undo {
    Rule { change: Box<ChangeSpec>, groups: HashMap<String, String> },
    Policy { group: String, sg: String, policy: String },
}

impl Undo {
    async fn run(self, c: &mut Clients) -> Result<()> {
        match self {
            Undo::Rule { change, groups } => rule_change(c, &change, &groups, true).await,
            Undo::Policy { group, sg, policy } => set_policy(c, &group, &sg, &policy).await,
        }
    }
}

/// Make a check's change; returns how to undo it.
async fn change(c: &mut Clients, ch: &ChangeSpec, groups: &HashMap<String, String>) -> Result<Undo> {
    let sg = groups[&ch.group.value].clone();
    if let Some(pol) = &ch.inner_access_policy {
        let attr = c
            .ecs
            .describe_security_group_attribute(pb::DescribeSecurityGroupAttributeRequest {
                security_group_id: sg.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow!("reading {}: {}", ch.group.value, describe_status(&s)))?
            .into_inner();
        set_policy(c, &ch.group.value, &sg, &pol.value).await?;
        return Ok(Undo::Policy { group: ch.group.value.clone(), sg, policy: attr.inner_access_policy });
    }
    rule_change(c, ch, groups, false).await?;
    Ok(Undo::Rule { change: Box::new(ch.clone()), groups: groups.clone() })
}

async fn set_policy(c: &mut Clients, group: &str, sg: &str, policy: &str) -> Result<()> {
    c.ecs
        .modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest {
            security_group_id: sg.into(),
            inner_access_policy: policy.into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|s| anyhow!("setting {group}'s innerAccessPolicy to {policy}: {}", describe_status(&s)))
}

/// Authorize a change's rule (or revoke it when undoing), or the reverse for `remove`.
async fn rule_change(c: &mut Clients, ch: &ChangeSpec, groups: &HashMap<String, String>, undo: bool) -> Result<()> {
    let sg = groups[&ch.group.value].clone();
    let (rule, authorize) = match (&ch.add, &ch.remove) {
        (Some(r), _) => (r, !undo),
        (None, Some(r)) => (r, undo),
        (None, None) => return Ok(()),
    };
    let ingress = ch.direction.as_ref().is_some_and(|d| d.value == "ingress");
    let p = apply::rule_permission(if ingress { "ingress" } else { "egress" }, rule, groups);
    let r = if authorize {
        apply::authorize(c, "", &sg, ingress, vec![p]).await
    } else {
        apply::revoke(c, "", &sg, ingress, vec![p], Vec::new()).await
    };
    r.map_err(|s| anyhow!("changing {}: {}", ch.group.value, describe_status(&s)))
}

async fn counters(c: &mut Clients) -> Result<pb::DescribeFabricCountersResponse> {
    Ok(c.fabric
        .describe_fabric_counters(pb::DescribeFabricCountersRequest::default())
        .await
        .map_err(|s| anyhow!("DescribeFabricCounters: {}", describe_status(&s)))?
        .into_inner())
}

/// ENI id (or an external host's name) → "node/ethN" (or the client's name) for the lab's ports.
async fn port_names(c: &mut Clients, st: &LabState) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, node) in &st.nodes {
        let r = c
            .ecs
            .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                instance_id: node.instance_id.clone(),
                max_results: Some(100),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow!("DescribeNetworkInterfaces: {}", describe_status(&s)))?
            .into_inner();
        for e in r.network_interface_sets.unwrap_or_default().network_interface_set {
            let idx = e.attachment.map_or(0, |a| a.device_index);
            out.insert(e.network_interface_id, format!("{}/eth{idx}", short_node_name(name)));
        }
    }
    for name in st.externals.keys() {
        out.insert(name.clone(), name.clone());
    }
    Ok(out)
}

/// ACK names nodes `<region>.<primary IP>`; in a table, `node .22` says as much. Other names
/// stay as they are.
pub(crate) fn short_node_name(name: &str) -> String {
    match name.split_once('.') {
        Some((_, ip)) if ip.parse::<Ipv4Addr>().is_ok() => format!("node .{}", ip.rsplit('.').next().unwrap_or(ip)),
        _ => name.to_string(),
    }
}

/// Which fabric ports the probe's frames crossed, and where any were dropped.
fn path_summary(
    before: &pb::DescribeFabricCountersResponse,
    after: &pb::DescribeFabricCountersResponse,
    names: &BTreeMap<String, String>,
) -> String {
    let prior = |vni: u32| before.ports.iter().find(|p| p.vni == vni);
    let mut ins = Vec::new();
    let mut outs = Vec::new();
    let mut drops = Vec::new();
    for p in &after.ports {
        let b = prior(p.vni);
        let name =
            names.get(&p.network_interface_id).or_else(|| names.get(&p.instance_id)).cloned().unwrap_or_else(|| {
                if p.network_interface_id.is_empty() { p.instance_id.clone() } else { p.network_interface_id.clone() }
            });
        let mut background = 0;
        for d in &p.drops {
            let was = b.and_then(|b| b.drops.iter().find(|x| x.reason == d.reason)).map_or(0, |x| x.frames);
            let more = d.frames.saturating_sub(was);
            if BACKGROUND_DROPS.contains(&d.reason.as_str()) {
                background += more;
            } else if more > 0 {
                drops.push(format!("{} (frame from {name})", d.reason));
            }
        }
        // The frames a port took in, but for the hosts' own chatter the fabric dropped.
        if p.rx_frames.saturating_sub(b.map_or(0, |b| b.rx_frames)) > background {
            ins.push(name.clone());
        }
        if p.tx_frames > b.map_or(0, |b| b.tx_frames) {
            outs.push(name.clone());
        }
    }
    if ins.is_empty() && outs.is_empty() && drops.is_empty() {
        return STAYED.into();
    }
    let mut s = format!(
        "VPC in: {} | out: {}",
        if ins.is_empty() { "-".into() } else { ins.join(", ") },
        if outs.is_empty() { "-".into() } else { outs.join(", ") }
    );
    if !drops.is_empty() {
        s.push_str(&format!(" | dropped: {}", drops.join(", ")));
    }
    s
}

/// The table `check` prints, and its closing line: one row per check, then what was probed and
/// the way the traffic went (which fabric ports it entered and left by, and any drop), who
/// answered when a Service or load balancer was in between, and the reason of any mismatch.
pub fn render(rows: &[CheckRow]) -> String {
    let width = rows.iter().map(|r| r.name.chars().count()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<4} {:<width$}  {:<10} {:<10}\n", "SOP", "CHECK", "EXPECTED", "GOT");
    for r in rows {
        let sop = r.scenario.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        let verdict = if r.passed { "ok" } else { "MISMATCH" };
        out.push_str(&format!("{sop:<4} {:<width$}  {:<10} {:<10} {verdict}\n", r.name, r.expected, r.got));
        out.push_str(&format!("     {}: {}\n", r.what, r.path));
        if let Some(a) = &r.answered {
            out.push_str(&format!("     answered by {a}\n"));
        }
        if let Some(t) = &r.trace {
            match &t.refused_by {
                Some(hop) => out.push_str(&format!("     trace: {hop}\n")),
                None if t.word != r.got => out.push_str(&format!("     trace: says {}\n", t.word)),
                None => {}
            }
        }
        if !r.passed && !r.detail.is_empty() {
            out.push_str(&format!("     note: {}\n", r.detail));
        }
    }
    let passed = rows.iter().filter(|r| r.passed).count();
    out.push_str(&format!("{} passed, {} failed\n", passed, rows.len() - passed));
    out
}

/// The exit code of `check`: non-zero on any mismatch.
pub fn exit_code(rows: &[CheckRow]) -> ExitCode {
    if rows.iter().all(|r| r.passed) { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_shorten_only_when_they_end_in_an_address() {
        assert_eq!(short_node_name("cn-hongkong.10.0.4.22"), "node .22");
        assert_eq!(short_node_name("node-a"), "node-a");
        assert_eq!(short_node_name("a.b"), "a.b");
    }

    fn row(name: &str, passed: bool) -> CheckRow {
        CheckRow {
            name: name.into(),
            scenario: Some(4),
            what: "a → b http/80".into(),
            path: "stayed on the node (host routing, never reached the VPC)".into(),
            expected: "reachable".into(),
            got: if passed { "reachable".into() } else { "blocked".into() },
            passed,
            detail: "why it differs".into(),
            answered: None,
            trace: None,
        }
    }

    #[test]
    fn ipv6_rows_say_so_and_name_the_address_probed() {
        let six: IpAddr = "2408:4005:3000:4::30".parse().unwrap();
        assert_eq!(family_note("nginx", six), " over IPv6 (2408:4005:3000:4::30)");
        assert_eq!(family_note("2408:4005:3000:4::30", six), " over IPv6");
        assert_eq!(family_note("nginx", "10.0.4.30".parse().unwrap()), "");
    }

    fn lab_state() -> LabState {
        let mut st = LabState::default();
        let pod = |ip: &str, ip6: &str| state::PodState {
            node: "n".into(),
            netns: "efbx-p0".into(),
            datapath: "veth".into(),
            ip: ip.into(),
            ip6: ip6.into(),
            member_eni: String::new(),
        };
        st.pods.insert("dual".into(), pod("10.0.4.30", "2408:4005:3000:4::30"));
        st.pods.insert("v4".into(), pod("10.0.4.31", ""));
        st
    }

    #[test]
    fn ends_are_taken_in_the_checks_family() {
        let st = lab_state();
        assert_eq!(destination(&st, "dual", false).unwrap().to_string(), "10.0.4.30");
        assert_eq!(destination(&st, "dual", true).unwrap().to_string(), "2408:4005:3000:4::30");
        assert_eq!(destination(&st, "2408:4005:3000:4::1", true).unwrap().to_string(), "2408:4005:3000:4::1");
        let e = destination(&st, "v4", true).unwrap_err().to_string();
        assert!(e.contains("v4 has no IPv6 address"), "{e}");
        assert!(destination(&st, "10.0.4.9", true).is_err(), "an IPv4 address in an IPv6 check");
        assert_eq!(source(&st, "dual", true).unwrap().1.as_deref(), Some("2408:4005:3000:4::30"));
        assert_eq!(source(&st, "v4", true).unwrap().1, None);
        assert_eq!(source(&st, "v4", false).unwrap().1.as_deref(), Some("10.0.4.31"));
    }

    #[test]
    fn the_table_closes_with_the_counts() {
        let t = render(&[row("first", true), row("second", false)]);
        assert!(t.ends_with("1 passed, 1 failed\n"), "{t}");
        assert!(t.contains("MISMATCH") && t.contains("note: why it differs"), "{t}");
        assert_eq!(exit_code(&[row("x", true)]), ExitCode::SUCCESS);
        assert_eq!(exit_code(&[row("x", false)]), ExitCode::from(1));
    }

    #[test]
    fn a_translated_answer_gets_its_own_line() {
        let mut r = row("via the SLB", true);
        r.answered = Some("nginx (10.0.4.30), which saw the client as 47.100.1.10, the client itself".into());
        let t = render(&[r]);
        assert!(t.contains("\n     answered by nginx (10.0.4.30), which saw the client as 47.100.1.10"), "{t}");
    }

    fn counters(drops: &[(&str, u64)]) -> pb::DescribeFabricCountersResponse {
        pb::DescribeFabricCountersResponse {
            drops: drops
                .iter()
                .map(|(r, n)| pb::DropCounter { reason: r.to_string(), frames: *n, ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    fn port(vni: u32, eni: &str, rx: u64, tx: u64, drops: &[(&str, u64)]) -> pb::PortCounters {
        pb::PortCounters {
            vni,
            network_interface_id: eni.into(),
            rx_frames: rx,
            tx_frames: tx,
            drops: drops
                .iter()
                .map(|(r, n)| pb::DropCounter { reason: r.to_string(), frames: *n, ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_hosts_own_chatter_is_not_in_a_checks_path() {
        let names: BTreeMap<String, String> =
            [("eni-a", "node .22/eth1"), ("eni-b", "node .20/eth1")].map(|(k, v)| (k.into(), v.into())).into();
        let at = |ports| pb::DescribeFabricCountersResponse { ports, ..Default::default() };
        let before = at(vec![port(1, "eni-a", 10, 10, &[]), port(2, "eni-b", 5, 5, &[("broadcast_or_multicast", 1)])]);
        // Node B's kernel reports its multicast groups while a probe stays on node A.
        let after = at(vec![
            port(1, "eni-a", 10, 10, &[]),
            port(2, "eni-b", 8, 5, &[("broadcast_or_multicast", 3), ("ndp_consumed", 1)]),
        ]);
        assert_eq!(path_summary(&before, &after, &names), STAYED);
        // Its own frames beside them still count, and real drops are still said.
        let after = at(vec![
            port(1, "eni-a", 12, 11, &[]),
            port(2, "eni-b", 9, 5, &[("broadcast_or_multicast", 3), ("security_group_ingress", 1)]),
        ]);
        assert_eq!(
            path_summary(&before, &after, &names),
            "VPC in: node .22/eth1, node .20/eth1 | out: node .22/eth1 | dropped: security_group_ingress (frame from \
             node .20/eth1)"
        );
    }

    #[test]
    fn only_drops_that_retries_cannot_change_cut_a_probe_short() {
        let before = counters(&[("arp_reply", 3), ("security_group_ingress", 1)]);
        assert!(!decisive_drop(&before, &counters(&[("arp_reply", 9), ("security_group_ingress", 1)])));
        assert!(!decisive_drop(&before, &counters(&[("health_check_answer", 4), ("security_group_ingress", 1)])));
        assert!(decisive_drop(&before, &counters(&[("security_group_ingress", 2)])));
        assert!(decisive_drop(&before, &counters(&[("security_group_ingress", 1), ("no_route", 1)])));
    }
}
