//! kube-proxy's iptables mode, as a pure planner: Services and their endpoints in, the
//! `iptables-restore` text kube-proxy would write on one node out, plus the fixed jump rules it
//! keeps in the built-in chains. No I/O: [`super::services`] applies the result in a node's
//! namespace.
//!
//! It follows kube-proxy's `syncProxyRules` (Kubernetes 1.28, `pkg/proxy/iptables/proxier.go`)
//! rule for rule, with the names, comments and order that proxier writes, so `iptables-save` in
//! a lab node reads like one of a real cluster:
//!
//! - chain names `KUBE-SVC-`/`KUBE-SVL-`/`KUBE-EXT-` + the first 16 characters of
//!   base32(sha256(`<ns>/<name>[:<port name>]` + `<protocol>`)), `KUBE-SEP-` the same over
//!   `… + <protocol> + <ip>:<port>` ([`port_chain_hash`], [`endpoint_chain_hash`]);
//! - `KUBE-SERVICES` captures the cluster IP (→ `KUBE-SVC`), each external IP and each load
//!   balancer ingress IP (→ `KUBE-EXT`), and ends with the `KUBE-NODEPORTS` jump for local
//!   destinations, which must stay last;
//! - `KUBE-SVC`/`KUBE-SVL` spread new connections with `-m statistic --mode random --probability
//!   1/(n−i)` (`%0.10f`), the last endpoint without a match; each `KUBE-SEP` marks hairpin
//!   traffic for masquerade and DNATs;
//! - masquerade is a mark (`0x4000`, bit 14) set by `KUBE-MARK-MASQ` and acted on in
//!   `KUBE-POSTROUTING`; traffic to a cluster IP is marked only from outside the cluster CIDR
//!   (the local-traffic detector, `--cluster-cidr`); external destinations with
//!   `externalTrafficPolicy: Cluster` are always marked, and with `Local` pod traffic
//!   (`-s <cluster CIDR>`) short-circuits to the cluster-wide chain unmarked, host traffic is
//!   marked, and the rest goes to the node's local endpoints only — or, with none, is dropped
//!   by `KUBE-EXTERNAL-SERVICES` in the filter table;
//! - stale per-service chains are flushed and deleted (`-X`) in the same restore.
//!
//! What it leaves out, because the lab has none of it: node ports (and so `KUBE-NODEPORTS`
//! stays empty), `loadBalancerSourceRanges` (`KUBE-FW-`), session affinity, topology hints,
//! terminating endpoints, `internalTrafficPolicy: Local`, IPv6. Services come out sorted by
//! name (kube-proxy walks a map) and endpoints by address, so the text is deterministic.
//!
//! IPVS mode, which ACK often runs and the seed article describes ("NAT-ed by ipvs"), needs the
//! `ip_vs` module, which this machine's kernel does not have; iptables mode routes the DNATed
//! packet differently (see the lab's docs), and the lab says which one it reproduces.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use enifab_model::Cidr;
use sha2::{Digest, Sha256};

/// kube-proxy's default masquerade mark: bit 14 (`--iptables-masquerade-bit`).
pub const MASQ_MARK: &str = "0x4000";

/// What kube-proxy was started with.
#[derive(Debug, Clone, Default)]
pub struct Proxier {
    /// `--cluster-cidr`: `-s <cidr>` is pod traffic. `None` = no local-traffic detector.
    pub cluster_cidr: Option<Cidr>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
}

/// One port of one Service, with its ready endpoints.
#[derive(Debug, Clone)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name; part of the chain names when set.
    pub port_name: Option<String>,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `externalTrafficPolicy: Local` on a `LoadBalancer` Service.
    pub external_policy_local: bool,
    pub endpoints: Vec<Endpoint>,
}

/// A ready endpoint: where to DNAT, and whether it runs on the node being planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub local: bool,
}

impl ServicePort {
    /// `ns/name` or `ns/name:port`, kube-proxy's `ServicePortName`.
    pub fn port_name_string(&self) -> String {
        match &self.port_name {
            Some(p) if !p.is_empty() => format!("{}/{}:{p}", self.namespace, self.name),
            _ => format!("{}/{}", self.namespace, self.name),
        }
    }

    fn externally_accessible(&self) -> bool {
        !self.external_ips.is_empty() || !self.load_balancer_ips.is_empty()
    }
}

/// A rule kube-proxy keeps at the top of a built-in chain (`iptables -C`, else `-I <chain> 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jump {
    pub table: &'static str,
    /// The built-in chain.
    pub from: &'static str,
    /// The kube-proxy chain it jumps to.
    pub to: &'static str,
    pub comment: &'static str,
    /// `-m conntrack --ctstate NEW` for the filter portals.
    pub new_only: bool,
}

impl Jump {
    /// The rule's arguments after `-t <table> -C|-I <from>`.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["-m".into(), "comment".into(), "--comment".into(), self.comment.into()];
        if self.new_only {
            a.extend(["-m", "conntrack", "--ctstate", "NEW"].map(String::from));
        }
        a.extend(["-j".to_string(), self.to.to_string()]);
        a
    }
}

/// kube-proxy's `iptablesJumpChains`, in its order (each is prepended, so the last listed ends
/// up first in its chain).
pub const JUMPS: &[Jump] = &[
    Jump {
        table: "filter",
        from: "INPUT",
        to: "KUBE-EXTERNAL-SERVICES",
        comment: "kubernetes externally-visible service portals",
        new_only: true,
    },
    Jump {
        table: "filter",
        from: "FORWARD",
        to: "KUBE-EXTERNAL-SERVICES",
        comment: "kubernetes externally-visible service portals",
        new_only: true,
    },
    Jump {
        table: "filter",
        from: "INPUT",
        to: "KUBE-NODEPORTS",
        comment: "kubernetes health check service ports",
        new_only: false,
    },
    Jump {
        table: "filter",
        from: "FORWARD",
        to: "KUBE-SERVICES",
        comment: "kubernetes service portals",
        new_only: true,
    },
    Jump {
        table: "filter",
        from: "OUTPUT",
        to: "KUBE-SERVICES",
        comment: "kubernetes service portals",
        new_only: true,
    },
    Jump {
        table: "filter",
        from: "FORWARD",
        to: "KUBE-FORWARD",
        comment: "kubernetes forwarding rules",
        new_only: false,
    },
    Jump {
        table: "filter",
        from: "INPUT",
        to: "KUBE-PROXY-FIREWALL",
        comment: "kubernetes load balancer firewall",
        new_only: true,
    },
    Jump {
        table: "filter",
        from: "OUTPUT",
        to: "KUBE-PROXY-FIREWALL",
        comment: "kubernetes load balancer firewall",
        new_only: true,
    },
    Jump {
        table: "filter",
        from: "FORWARD",
        to: "KUBE-PROXY-FIREWALL",
        comment: "kubernetes load balancer firewall",
        new_only: true,
    },
    Jump { table: "nat", from: "OUTPUT", to: "KUBE-SERVICES", comment: "kubernetes service portals", new_only: false },
    Jump {
        table: "nat",
        from: "PREROUTING",
        to: "KUBE-SERVICES",
        comment: "kubernetes service portals",
        new_only: false,
    },
    Jump {
        table: "nat",
        from: "POSTROUTING",
        to: "KUBE-POSTROUTING",
        comment: "kubernetes postrouting rules",
        new_only: false,
    },
];

/// RFC 4648 base32 (standard alphabet) of `bytes`, without padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn hash16(s: &str) -> String {
    let mut h = base32(&Sha256::digest(s.as_bytes()));
    h.truncate(16);
    h
}

/// The hash in `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-` and `KUBE-FW-` names.
pub fn port_chain_hash(port_name: &str, protocol: &str) -> String {
    hash16(&format!("{port_name}{protocol}"))
}

/// The hash in a `KUBE-SEP-` name; `endpoint` is `ip:port`.
pub fn endpoint_chain_hash(port_name: &str, protocol: &str, endpoint: &str) -> String {
    hash16(&format!("{port_name}{protocol}{endpoint}"))
}

/// Prefixes of the chains kube-proxy owns per Service and deletes when stale.
const SERVICE_CHAIN_PREFIXES: &[&str] = &["KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"];

/// The `iptables-restore --noflush` input kube-proxy writes for `services` on one node.
/// `existing_nat_chains` are the nat chains the node has now (from `iptables-save -t nat`): the
/// per-Service ones no longer needed are flushed and deleted.
pub fn restore(proxier: &Proxier, services: &[ServicePort], existing_nat_chains: &[String]) -> String {
    let mut services: Vec<&ServicePort> = services.iter().collect();
    services.sort_by_key(|s| (s.port_name_string(), s.protocol));
    let mut filter_rules = String::new();
    let mut nat_chains = String::new();
    let mut nat_rules = String::new();
    let mut active = BTreeSet::new();
    for chain in ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"] {
        let _ = writeln!(nat_chains, ":{chain} - [0:0]");
    }
    let _ = writeln!(nat_rules, "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN");
    // Clear the mark so a packet re-traversing the stack (through a tunnel, say) is not
    // masqueraded again.
    let _ = writeln!(nat_rules, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
    let _ = writeln!(
        nat_rules,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    );
    let _ = writeln!(nat_rules, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");

    for sp in services {
        write_service(proxier, sp, &mut filter_rules, &mut nat_chains, &mut nat_rules, &mut active);
    }

    let _ = writeln!(
        nat_rules,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    );
    let mut stale: Vec<&String> = existing_nat_chains
        .iter()
        .filter(|c| SERVICE_CHAIN_PREFIXES.iter().any(|p| c.starts_with(p)) && !active.contains(c.as_str()))
        .collect();
    stale.sort();
    stale.dedup();
    for chain in stale {
        // Declaring it flushes it, so nothing jumps out of it while it is deleted.
        let _ = writeln!(nat_chains, ":{chain} - [0:0]");
        let _ = writeln!(nat_rules, "-X {chain}");
    }

    let mut out = String::from("*filter\n");
    for chain in ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    out.push_str(&filter_rules);
    let _ = writeln!(out, "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP");
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"
    );
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    out.push_str("COMMIT\n*nat\n");
    out.push_str(&nat_chains);
    out.push_str(&nat_rules);
    out.push_str("COMMIT\n");
    out
}

/// The rules of one Service port, in the order `syncProxyRules` writes them.
fn write_service(
    proxier: &Proxier,
    sp: &ServicePort,
    filter: &mut String,
    nat_chains: &mut String,
    nat: &mut String,
    active: &mut BTreeSet<String>,
) {
    let proto = sp.protocol;
    let name = sp.port_name_string();
    let hash = port_chain_hash(&name, proto);
    let cluster_chain = format!("KUBE-SVC-{hash}");
    let local_chain = format!("KUBE-SVL-{hash}");
    let external_chain = format!("KUBE-EXT-{hash}");
    let port = sp.port;

    let mut endpoints = sp.endpoints.clone();
    endpoints.sort();
    endpoints.dedup();
    let local: Vec<Endpoint> = endpoints.iter().copied().filter(|e| e.local).collect();
    let accessible = sp.externally_accessible();
    // `internalTrafficPolicy` is always Cluster here: every ready endpoint serves the cluster IP.
    let has_endpoints = !endpoints.is_empty();
    let uses_cluster_chain = has_endpoints;
    let uses_local_chain = !local.is_empty() && sp.external_policy_local && accessible;
    let (external_policy_chain, has_external_endpoints) =
        if sp.external_policy_local { (&local_chain, !local.is_empty()) } else { (&cluster_chain, has_endpoints) };
    // Needed whenever there are endpoints, even none local: the pod and host short-circuits live
    // there.
    let uses_external_chain = has_endpoints && accessible;

    let (external_filter_target, external_filter_comment) = if !has_endpoints {
        ("REJECT", format!("\"{name} has no endpoints\""))
    } else {
        ("DROP", format!("\"{name} has no local endpoints\""))
    };
    let capture = |comment: &str, ip: Ipv4Addr| {
        format!("-m comment --comment {comment} -m {proto} -p {proto} -d {ip} --dport {port}")
    };

    // The cluster IP.
    if has_endpoints {
        let _ = writeln!(
            nat,
            "-A KUBE-SERVICES {} -j {cluster_chain}",
            capture(&format!("\"{name} cluster IP\""), sp.cluster_ip)
        );
    } else {
        let _ = writeln!(
            filter,
            "-A KUBE-SERVICES {} -j REJECT",
            capture(&format!("\"{name} has no endpoints\""), sp.cluster_ip)
        );
    }
    // External IPs.
    for &ip in &sp.external_ips {
        if has_endpoints {
            let _ = writeln!(
                nat,
                "-A KUBE-SERVICES {} -j {external_chain}",
                capture(&format!("\"{name} external IP\""), ip)
            );
        }
        if !has_external_endpoints {
            let _ = writeln!(
                filter,
                "-A KUBE-EXTERNAL-SERVICES {} -j {external_filter_target}",
                capture(&external_filter_comment, ip)
            );
        }
    }
    // Load balancer ingress IPs.
    for &ip in &sp.load_balancer_ips {
        if has_endpoints {
            let _ = writeln!(
                nat,
                "-A KUBE-SERVICES {} -j {external_chain}",
                capture(&format!("\"{name} loadbalancer IP\""), ip)
            );
        }
    }
    if !has_external_endpoints {
        for &ip in &sp.load_balancer_ips {
            let _ = writeln!(
                filter,
                "-A KUBE-EXTERNAL-SERVICES {} -j {external_filter_target}",
                capture(&external_filter_comment, ip)
            );
        }
    }

    // Chains, declared in the order this proxier version declares them.
    if uses_cluster_chain {
        let _ = writeln!(nat_chains, ":{cluster_chain} - [0:0]");
        active.insert(cluster_chain.clone());
    }
    if uses_local_chain {
        let _ = writeln!(nat_chains, ":{local_chain} - [0:0]");
        active.insert(local_chain.clone());
    }
    if uses_external_chain {
        let _ = writeln!(nat_chains, ":{external_chain} - [0:0]");
        active.insert(external_chain.clone());
    }

    // Internal traffic: masquerade what comes from outside the cluster, so a reply cannot
    // bypass this node.
    let internal_args = capture(&format!("\"{name} cluster IP\""), sp.cluster_ip);
    if has_endpoints {
        if proxier.masquerade_all {
            let _ = writeln!(nat, "-A {cluster_chain} {internal_args} -j KUBE-MARK-MASQ");
        } else if let Some(cidr) = proxier.cluster_cidr {
            let _ = writeln!(nat, "-A {cluster_chain} {internal_args} ! -s {cidr} -j KUBE-MARK-MASQ");
        }
    }

    // External traffic.
    if uses_external_chain {
        if !sp.external_policy_local {
            // Any endpoint may be on another node: masquerade so the reply comes back here.
            let _ = writeln!(
                nat,
                "-A {external_chain} -m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ"
            );
        } else {
            if let Some(cidr) = proxier.cluster_cidr {
                // Pod traffic to an external address behaves as if it went out to the load
                // balancer and came back: neither traffic policy applies.
                let _ = writeln!(
                    nat,
                    "-A {external_chain} -m comment --comment \"pod traffic for {name} external destinations\" -s {cidr} -j {cluster_chain}"
                );
            }
            // The host's own traffic takes a local source address: masquerade it, and let it use
            // every endpoint.
            let _ = writeln!(
                nat,
                "-A {external_chain} -m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(
                nat,
                "-A {external_chain} -m comment --comment \"route LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {cluster_chain}"
            );
        }
        if has_external_endpoints {
            let _ = writeln!(nat, "-A {external_chain} -j {external_policy_chain}");
        }
    }

    let sep = |e: &Endpoint| format!("KUBE-SEP-{}", endpoint_chain_hash(&name, proto, &format!("{}:{}", e.ip, e.port)));
    let spread = |chain: &str, eps: &[Endpoint], nat: &mut String| {
        let n = eps.len();
        for (i, e) in eps.iter().enumerate() {
            let comment = format!("\"{name} -> {}:{}\"", e.ip, e.port);
            if i + 1 < n {
                let p = 1.0 / (n - i) as f64;
                let _ = writeln!(
                    nat,
                    "-A {chain} -m comment --comment {comment} -m statistic --mode random --probability {p:.10} -j {}",
                    sep(e)
                );
            } else {
                let _ = writeln!(nat, "-A {chain} -m comment --comment {comment} -j {}", sep(e));
            }
        }
    };
    if uses_cluster_chain {
        spread(&cluster_chain, &endpoints, nat);
    }
    if uses_local_chain {
        spread(&local_chain, &local, nat);
    }

    // One chain per endpoint reachable from here (all of them, since the cluster chain is used).
    for e in &endpoints {
        let chain = sep(e);
        let _ = writeln!(nat_chains, ":{chain} - [0:0]");
        active.insert(chain.clone());
        // A pod reaching itself through the Service: masquerade, or its reply would go straight
        // back to itself.
        // (The Service's name goes unquoted: it has no spaces.)
        let _ = writeln!(nat, "-A {chain} -m comment --comment {name} -s {} -j KUBE-MARK-MASQ", e.ip);
        let _ = writeln!(
            nat,
            "-A {chain} -m comment --comment {name} -m {proto} -p {proto} -j DNAT --to-destination {}:{}",
            e.ip, e.port
        );
    }
}

/// The nat chains named in `iptables-save -t nat` output.
pub fn chains_in_save(save: &str) -> Vec<String> {
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn nginx(endpoints: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            namespace: "default".into(),
            name: "nginx".into(),
            port_name: None,
            protocol: "tcp",
            cluster_ip: ip("192.168.81.92"),
            port: 80,
            external_ips: vec![ip("8.210.162.178")],
            load_balancer_ips: vec![],
            external_policy_local: true,
            endpoints,
        }
    }

    fn ep(addr: &str, local: bool) -> Endpoint {
        Endpoint { ip: ip(addr), port: 80, local }
    }

    fn detector() -> Proxier {
        Proxier { cluster_cidr: Some("10.0.0.0/8".parse().unwrap()), masquerade_all: false }
    }

    #[test]
    fn chain_names_are_kube_proxys_hashes() {
        // The values the research notes computed with kube-proxy's own function.
        assert_eq!(port_chain_hash("default/nginx", "tcp"), "2CMXP7HKUVJN7L6M");
        assert_eq!(endpoint_chain_hash("default/nginx", "tcp", "10.0.4.30:80"), "EBHGYWAAFSIT3F54");
        assert_eq!(endpoint_chain_hash("default/nginx", "tcp", "10.0.4.31:80"), "QXJX2GWTWWUWCKLR");
        // RFC 4648's test vectors.
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    /// The research notes' hand-written example (node B, no local endpoint; eTP Local; two
    /// endpoints on node A; `--cluster-cidr 10.0.0.0/8`), byte for byte.
    #[test]
    fn node_without_local_endpoints_matches_the_hand_written_example() {
        let golden = r#"*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-EXTERNAL-SERVICES -m comment --comment "default/nginx has no local endpoints" -m tcp -p tcp -d 8.210.162.178 --dport 80 -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-2CMXP7HKUVJN7L6M - [0:0]
:KUBE-EXT-2CMXP7HKUVJN7L6M - [0:0]
:KUBE-SEP-EBHGYWAAFSIT3F54 - [0:0]
:KUBE-SEP-QXJX2GWTWWUWCKLR - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SERVICES -m comment --comment "default/nginx cluster IP" -m tcp -p tcp -d 192.168.81.92 --dport 80 -j KUBE-SVC-2CMXP7HKUVJN7L6M
-A KUBE-SERVICES -m comment --comment "default/nginx external IP" -m tcp -p tcp -d 8.210.162.178 --dport 80 -j KUBE-EXT-2CMXP7HKUVJN7L6M
-A KUBE-SVC-2CMXP7HKUVJN7L6M -m comment --comment "default/nginx cluster IP" -m tcp -p tcp -d 192.168.81.92 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-EXT-2CMXP7HKUVJN7L6M -m comment --comment "pod traffic for default/nginx external destinations" -s 10.0.0.0/8 -j KUBE-SVC-2CMXP7HKUVJN7L6M
-A KUBE-EXT-2CMXP7HKUVJN7L6M -m comment --comment "masquerade LOCAL traffic for default/nginx external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-2CMXP7HKUVJN7L6M -m comment --comment "route LOCAL traffic for default/nginx external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-2CMXP7HKUVJN7L6M
-A KUBE-SVC-2CMXP7HKUVJN7L6M -m comment --comment "default/nginx -> 10.0.4.30:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-EBHGYWAAFSIT3F54
-A KUBE-SVC-2CMXP7HKUVJN7L6M -m comment --comment "default/nginx -> 10.0.4.31:80" -j KUBE-SEP-QXJX2GWTWWUWCKLR
-A KUBE-SEP-EBHGYWAAFSIT3F54 -m comment --comment default/nginx -s 10.0.4.30 -j KUBE-MARK-MASQ
-A KUBE-SEP-EBHGYWAAFSIT3F54 -m comment --comment default/nginx -m tcp -p tcp -j DNAT --to-destination 10.0.4.30:80
-A KUBE-SEP-QXJX2GWTWWUWCKLR -m comment --comment default/nginx -s 10.0.4.31 -j KUBE-MARK-MASQ
-A KUBE-SEP-QXJX2GWTWWUWCKLR -m comment --comment default/nginx -m tcp -p tcp -j DNAT --to-destination 10.0.4.31:80
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"#;
        let got = restore(&detector(), &[nginx(vec![ep("10.0.4.31", false), ep("10.0.4.30", false)])], &[]);
        assert_eq!(got, golden, "\n{got}");
    }

    /// The notes' variants: node A with a local endpoint gets the SVL chain and the EXT chain's
    /// last rule; eTP Cluster always masquerades external traffic and never drops it.
    #[test]
    fn local_endpoints_and_cluster_policy_variants() {
        let svc = nginx(vec![ep("10.0.4.30", true), ep("10.0.4.31", true)]);
        let a = restore(&detector(), &[svc], &[]);
        assert!(a.contains(":KUBE-SVL-2CMXP7HKUVJN7L6M - [0:0]\n"), "{a}");
        assert!(a.contains("-A KUBE-EXT-2CMXP7HKUVJN7L6M -j KUBE-SVL-2CMXP7HKUVJN7L6M\n"), "{a}");
        assert!(a.contains(
            "-A KUBE-SVL-2CMXP7HKUVJN7L6M -m comment --comment \"default/nginx -> 10.0.4.30:80\" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-EBHGYWAAFSIT3F54\n"
        ));
        assert!(!a.contains("KUBE-EXTERNAL-SERVICES -m"), "local endpoints: nothing dropped\n{a}");

        let mut cluster = nginx(vec![ep("10.0.4.30", false), ep("10.0.4.31", false)]);
        cluster.external_policy_local = false;
        let c = restore(&detector(), &[cluster], &[]);
        let ext: Vec<&str> = c.lines().filter(|l| l.starts_with("-A KUBE-EXT-")).collect();
        assert_eq!(
            ext,
            [
                "-A KUBE-EXT-2CMXP7HKUVJN7L6M -m comment --comment \"masquerade traffic for default/nginx external destinations\" -j KUBE-MARK-MASQ",
                "-A KUBE-EXT-2CMXP7HKUVJN7L6M -j KUBE-SVC-2CMXP7HKUVJN7L6M",
            ]
        );
        assert!(
            !c.contains("-j DROP\n-A KUBE-FORWARD -m conntrack --ctstate INVALID") && !c.contains("no local endpoints")
        );
    }

    /// Without `--cluster-cidr` there is no pod short-circuit and no cluster-IP masquerade: pod
    /// traffic to the external IP on a node without local endpoints is dropped.
    #[test]
    fn without_a_detector_pods_lose_the_short_circuit() {
        let t = restore(&Proxier::default(), &[nginx(vec![ep("10.0.4.30", false)])], &[]);
        assert!(!t.contains("pod traffic for") && !t.contains("! -s"), "{t}");
        assert!(t.contains("has no local endpoints\" -m tcp -p tcp -d 8.210.162.178 --dport 80 -j DROP"), "{t}");
    }

    #[test]
    fn load_balancer_ips_no_endpoints_and_stale_chains() {
        let mut svc = nginx(vec![]);
        svc.external_ips.clear();
        svc.load_balancer_ips = vec![ip("8.210.162.178")];
        let t = restore(&detector(), &[svc.clone()], &["KUBE-SEP-OLD".into(), "KUBE-SERVICES".into()]);
        assert!(t.contains(
            "-A KUBE-SERVICES -m comment --comment \"default/nginx has no endpoints\" -m tcp -p tcp -d 192.168.81.92 --dport 80 -j REJECT\n"
        ));
        assert!(t.contains(
            "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"default/nginx has no endpoints\" -m tcp -p tcp -d 8.210.162.178 --dport 80 -j REJECT\n"
        ));
        assert!(!t.contains("KUBE-SVC-"), "no endpoints, no chains\n{t}");
        assert!(t.contains(":KUBE-SEP-OLD - [0:0]\n") && t.contains("-X KUBE-SEP-OLD\n"), "{t}");
        assert!(!t.contains("-X KUBE-SERVICES"));

        svc.endpoints = vec![ep("10.0.4.50", false), ep("10.0.4.30", false), ep("10.0.4.31", false)];
        svc.port_name = Some("http".into());
        let t = restore(&detector(), &[svc], &[]);
        let h = port_chain_hash("default/nginx:http", "tcp");
        assert!(t.contains(&format!(
            "-A KUBE-SERVICES -m comment --comment \"default/nginx:http loadbalancer IP\" -m tcp -p tcp -d 8.210.162.178 --dport 80 -j KUBE-EXT-{h}\n"
        )));
        let probabilities: Vec<&str> = t.lines().filter_map(|l| l.split("--probability ").nth(1)).collect();
        assert_eq!(probabilities.len(), 2, "{t}");
        assert!(probabilities[0].starts_with("0.3333333333 ") && probabilities[1].starts_with("0.5000000000 "));
        // The last rule of KUBE-SERVICES is still the node-port jump.
        let last = t.lines().rfind(|l| l.starts_with("-A KUBE-SERVICES ")).unwrap();
        assert!(last.ends_with("-j KUBE-NODEPORTS"), "{last}");
    }

    #[test]
    fn jumps_render_as_kube_proxy_keeps_them() {
        let nat_prerouting = JUMPS.iter().find(|j| j.table == "nat" && j.from == "PREROUTING").unwrap();
        assert_eq!(nat_prerouting.args().join(" "), "-m comment --comment kubernetes service portals -j KUBE-SERVICES");
        let filter_fwd = JUMPS.iter().find(|j| j.from == "FORWARD" && j.to == "KUBE-SERVICES").unwrap();
        assert_eq!(
            filter_fwd.args().join(" "),
            "-m comment --comment kubernetes service portals -m conntrack --ctstate NEW -j KUBE-SERVICES"
        );
        assert_eq!(
            chains_in_save("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SEP-X - [0:0]\n-A X\n"),
            ["PREROUTING", "KUBE-SEP-X"]
        );
    }
}
