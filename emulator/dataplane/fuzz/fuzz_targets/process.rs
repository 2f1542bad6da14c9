//! The whole pipeline on arbitrary datagrams from the lab's shims: must never panic, and
//! anything it sends must fit the buffer and parse as Geneve.
#![no_main]

use std::hash::RandomState;
use std::sync::{Arc, OnceLock};

use enifab_dataplane::testkit::{Lab, any_ip, any_ipv6, rule, split_fuzz_input};
use enifab_dataplane::wire::geneve;
use enifab_dataplane::{
    Direction, Fabric, FabricConfig, FabricOptions, Instant, MAX_GROWTH, Policy, Protocol, Verdict,
};
use libfuzzer_sys::fuzz_target;

fn config() -> Arc<FabricConfig> {
    static CONFIG: OnceLock<Arc<FabricConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            // With the load balancers and the internet side, so that VIP translation and the
            // health checker's answers are fuzzed too.
            let mut lab = Lab::with_load_balancers();
            // Open ingress a little so that random packets reach conntrack and the rewrite.
            // IPv4 and IPv6 alike: the pods are dual stack.
            for g in &mut lab.groups {
                for peer in [any_ip(), any_ipv6()] {
                    g.rules.push(rule(Direction::Ingress, 50, Policy::Accept, Protocol::All, None, peer));
                }
            }
            Arc::new(lab.build(1))
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut options = FabricOptions::new(RandomState::new());
    options.conntrack_max = 16;
    let mut fabric = Fabric::new(config(), options);
    let (from, datagram) = split_fuzz_input(data);
    let mut out = vec![0u8; datagram.len() + MAX_GROWTH];
    for now in [0, 1] {
        match fabric.process(Instant(now), from, datagram, &mut out) {
            Verdict::Forward { len, .. } | Verdict::Reply { len, .. } => {
                assert!(len <= out.len());
                geneve::Header::parse(&out[..len]).expect("emitted datagram parses");
            }
            Verdict::Drop(reason) => {
                let _ = reason.kind().as_str();
            }
        }
    }
    let _ = fabric.trace(Instant(2), from, datagram);
    let _ = fabric.stats();
});
