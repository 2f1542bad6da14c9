//! Layer-4 load balancing (CLB TCP/UDP listeners, reference §11.1): which backend a new flow to
//! a VIP goes to.
//!
//! A backend is *eligible* when its weight is above 0 and its health check (if the listener has
//! one) says it is healthy. Among the eligible, the listener's scheduler picks:
//!
//! - `wrr` (the cloud's default): smooth weighted round robin, the algorithm nginx made common:
//!   every pick adds each eligible backend's weight to its running score, takes the highest
//!   score, and subtracts the total weight from the winner. Over any run of total-weight picks
//!   each backend is chosen exactly weight times, spread out rather than in bursts.
//! - `rr`: the eligible backends in turn, weights ignored.
//! - `wlc`: the fewest tracked flows per unit of weight (ties: the first in the group).
//! - `sch` / `tch`: weighted rendezvous hashing of the source address (`sch`) or of the
//!   4-tuple (`tch`): a client keeps its backend while the eligible set stays the same, and only
//!   the clients of a backend that leaves move.
//!
//! Persistence (`PersistenceTimeout`) comes first: a client whose previous new flow on this
//! listener went to a still-eligible backend less than the timeout ago goes there again.
//!
//! Decide, then commit, like the rest of the pipeline: [`pick`] only reads the runtime state
//! and says what the pick changes ([`Pick`]); [`LbRuntime::commit`] applies it once the flow is
//! really admitted, so a trace or a refused flow moves no round-robin pointer.
//!
//! Must not allocate on the frame path: per-listener state is created when a snapshot arrives
//! ([`LbRuntime::sync`]), and the persistence table is bounded and reserved up front.

use core::net::Ipv4Addr;
use std::collections::HashMap;
use std::hash::RandomState;

use crate::config::{FabricConfig, FixedMap, Listener, Scheduler, fnv1a_extend};
use crate::conntrack::Conntrack;
use crate::health::HealthTable;

/// Per-listener scheduler state, kept across snapshots while the backend list is unchanged.
#[derive(Debug, Default)]
struct ListenerState {
    /// Identity of the backend list the state below belongs to.
    fingerprint: u64,
    /// Smooth-wrr running scores, by backend index.
    scores: Vec<i64>,
    /// Round-robin position.
    next: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sticky {
    backend: Ipv4Addr,
    port: u16,
    expires: u64,
}

/// The scheduler state of every listener and the persistence table.
#[derive(Debug)]
pub(crate) struct LbRuntime {
    listeners: FixedMap<u64, ListenerState>,
    sticky: HashMap<(u64, Ipv4Addr), Sticky, RandomState>,
    sticky_max: usize,
}

/// What choosing a backend for a new flow changes, applied by [`LbRuntime::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pick {
    pub listener: u64,
    /// Index of the chosen backend in the listener's list.
    pub backend: usize,
    /// The scheduler chose (rather than persistence): its state moves.
    pub scheduled: bool,
    pub client: Ipv4Addr,
    /// When the client's persistence entry expires; 0 when the listener has none.
    pub sticky_until: u64,
}

/// Why a listener could not take a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoBackend {
    /// The group is empty or every weight is 0.
    Empty,
    /// There are backends with weight, but none is healthy.
    Unhealthy,
}

fn fingerprint(l: &Listener) -> u64 {
    l.backends.iter().fold(l.key, |h, b| {
        let h = fnv1a_extend(h, &b.ip.octets());
        fnv1a_extend(h, &[(b.port >> 8) as u8, b.port as u8, b.weight])
    })
}

impl LbRuntime {
    pub fn new(sticky_max: usize, hasher: RandomState) -> LbRuntime {
        LbRuntime {
            listeners: FixedMap::default(),
            sticky: HashMap::with_capacity_and_hasher(sticky_max, hasher),
            sticky_max,
        }
    }

    /// Creates state for the listeners of a new snapshot and forgets that of listeners gone.
    /// A listener whose backend list changed starts its rotation afresh.
    pub fn sync(&mut self, cfg: &FabricConfig) {
        let mut next = FixedMap::default();
        for l in cfg.lbs.iter().flat_map(|lb| lb.listeners.iter()) {
            let fp = fingerprint(l);
            let state = match self.listeners.remove(&l.key) {
                Some(s) if s.fingerprint == fp => s,
                _ => ListenerState { fingerprint: fp, scores: vec![0; l.backends.len()], next: 0 },
            };
            next.insert(l.key, state);
        }
        self.listeners = next;
        let live: std::collections::HashSet<u64> = self.listeners.keys().copied().collect();
        self.sticky.retain(|(l, _), _| live.contains(l));
    }

    /// Applies a pick of an admitted flow.
    pub fn commit(&mut self, p: &Pick, listener: &Listener, eligible: impl Fn(usize) -> bool) {
        if p.scheduled
            && let Some(s) = self.listeners.get_mut(&p.listener)
        {
            match listener.scheduler {
                Scheduler::Wrr if s.scores.len() == listener.backends.len() => {
                    let mut total = 0i64;
                    for (i, b) in listener.backends.iter().enumerate() {
                        if eligible(i) {
                            s.scores[i] += i64::from(b.weight);
                            total += i64::from(b.weight);
                        }
                    }
                    s.scores[p.backend] -= total;
                }
                Scheduler::Rr => s.next = s.next.wrapping_add(1),
                _ => {}
            }
        }
        if p.sticky_until != 0 {
            let key = (p.listener, p.client);
            let b = &listener.backends[p.backend];
            let entry = Sticky { backend: b.ip, port: b.port, expires: p.sticky_until };
            // Bounded: a full table refreshes what it has and forgets nothing early, so a new
            // client beyond it just goes unpinned.
            if self.sticky.len() < self.sticky_max || self.sticky.contains_key(&key) {
                self.sticky.insert(key, entry);
            }
        }
    }

    /// Forgets persistence entries that have expired; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.sticky.len();
        self.sticky.retain(|_, s| s.expires > now);
        before - self.sticky.len()
    }
}

/// The flow being scheduled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewFlow {
    pub client: Ipv4Addr,
    pub client_port: u16,
    pub vip: Ipv4Addr,
    pub vport: u16,
}

/// Chooses the backend of a new flow on `listener` (see the module docs), without changing
/// anything.
pub(crate) fn pick(
    rt: &LbRuntime,
    health: &HealthTable,
    conntrack: &Conntrack,
    listener: &Listener,
    flow: NewFlow,
    now: u64,
) -> Result<Pick, NoBackend> {
    let eligible = |i: usize| is_eligible(health, listener, i);
    let weighted = listener.backends.iter().any(|b| b.weight > 0);
    if !weighted {
        return Err(NoBackend::Empty);
    }
    let sticky_until = if listener.persistence > 0 { now.saturating_add(listener.persistence) } else { 0 };
    let make =
        |backend, scheduled| Pick { listener: listener.key, backend, scheduled, client: flow.client, sticky_until };

    if listener.persistence > 0
        && let Some(s) = rt.sticky.get(&(listener.key, flow.client)).filter(|s| s.expires > now)
        && let Some(i) = listener.backends.iter().position(|b| b.ip == s.backend && b.port == s.port)
        && eligible(i)
    {
        return Ok(make(i, false));
    }

    let candidates = || listener.backends.iter().enumerate().filter(|(i, _)| eligible(*i));
    let state = rt.listeners.get(&listener.key);
    let chosen = match listener.scheduler {
        Scheduler::Wrr => {
            let score = |i: usize| state.and_then(|s| s.scores.get(i)).copied().unwrap_or(0);
            // Highest score after adding the weights; the first on a tie.
            candidates().max_by_key(|(i, b)| (score(*i) + i64::from(b.weight), std::cmp::Reverse(*i))).map(|(i, _)| i)
        }
        Scheduler::Rr => {
            let n = candidates().count() as u64;
            let at = state.map_or(0, |s| s.next).checked_rem(n).unwrap_or(0) as usize;
            candidates().nth(at).map(|(i, _)| i)
        }
        Scheduler::Wlc => {
            let flows = |b: &crate::config::Backend| u64::from(conntrack.flows_to(&(listener.key, b.ip, b.port)));
            // flows_a / w_a < flows_b / w_b, compared without division.
            candidates()
                .min_by(|(ia, a), (ib, b)| {
                    (flows(a) * u64::from(b.weight)).cmp(&(flows(b) * u64::from(a.weight))).then(ia.cmp(ib))
                })
                .map(|(i, _)| i)
        }
        Scheduler::Sch | Scheduler::Tch => {
            let mut h = fnv1a_extend(listener.key, &flow.client.octets());
            if listener.scheduler == Scheduler::Tch {
                h = fnv1a_extend(h, &flow.client_port.to_be_bytes());
                h = fnv1a_extend(h, &flow.vip.octets());
                h = fnv1a_extend(h, &flow.vport.to_be_bytes());
            }
            candidates()
                .map(|(i, b)| (i, rendezvous(h, b)))
                .max_by(|(ia, a), (ib, b)| a.total_cmp(b).then(ib.cmp(ia)))
                .map(|(i, _)| i)
        }
    };
    chosen.map(|i| make(i, true)).ok_or(NoBackend::Unhealthy)
}

/// Weight 0 takes no new flows; an unhealthy backend takes none either.
pub(crate) fn is_eligible(health: &HealthTable, listener: &Listener, i: usize) -> bool {
    let b = &listener.backends[i];
    b.weight > 0 && (listener.health.is_none() || health.is_healthy(&(listener.key, b.ip, b.port)))
}

/// Weighted rendezvous score: `-weight / ln(u)` for a uniform `u` in (0, 1) drawn from the
/// flow's hash and the backend, so each backend wins in proportion to its weight.
fn rendezvous(h: u64, b: &crate::config::Backend) -> f64 {
    let mut x = fnv1a_extend(h, &b.ip.octets());
    x = fnv1a_extend(x, &b.port.to_be_bytes());
    // A final avalanche (splitmix64) so that nearby inputs give unrelated draws.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(b.weight) / u.ln()
}

#[cfg(test)]
mod test {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::config::{
        BackendConfig, FabricSpec, LbNetwork, LbProtocol, ListenerConfig, LoadBalancerConfig, Scheduler,
    };

    fn one_listener(weights: &[u8], scheduler: Scheduler) -> Arc<FabricConfig> {
        let backends = weights
            .iter()
            .enumerate()
            .map(|(i, w)| BackendConfig {
                server_id: format!("eni-{i}"),
                ip: Ipv4Addr::new(10, 0, 1, 10 + i as u8),
                port: 80,
                weight: *w,
            })
            .collect();
        let lb = LoadBalancerConfig {
            id: "lb-1".into(),
            vpc_id: "vpc-1".into(),
            network: LbNetwork::Intranet,
            address: Ipv4Addr::new(10, 0, 1, 100),
            listeners: vec![ListenerConfig {
                protocol: LbProtocol::Tcp,
                port: 80,
                running: true,
                scheduler,
                persistence: core::time::Duration::ZERO,
                established_timeout: core::time::Duration::from_secs(900),
                backends,
                health_check: None,
            }],
        };
        let spec = FabricSpec { load_balancers: vec![lb], ..FabricSpec::default() };
        Arc::new(FabricConfig::build(1, spec).unwrap())
    }

    /// Picks `n` flows from distinct client ports, committing each, and counts per backend.
    fn run(cfg: &FabricConfig, n: usize) -> Vec<usize> {
        let mut rt = LbRuntime::new(16, RandomState::new());
        rt.sync(cfg);
        let health = HealthTable::default();
        let ct = Conntrack::new(1, RandomState::new());
        let listener = &cfg.lbs[0].listeners[0];
        let mut counts = vec![0usize; listener.backends.len()];
        for i in 0..n {
            let flow = NewFlow {
                client: Ipv4Addr::new(10, 0, 0, 1),
                client_port: i as u16,
                vip: Ipv4Addr::new(10, 0, 1, 100),
                vport: 80,
            };
            let p = pick(&rt, &health, &ct, listener, flow, 0).unwrap();
            counts[p.backend] += 1;
            rt.commit(&p, listener, |i| is_eligible(&health, listener, i));
        }
        counts
    }

    proptest! {
        /// wrr gives each backend exactly its weight's share of every cycle of total-weight flows,
        /// and never strays by a whole flow from its share in between; weight 0 gets nothing.
        #[test]
        fn wrr_matches_the_weights(weights in proptest::collection::vec(0u8..=100, 1..6), cycles in 1usize..4) {
            prop_assume!(weights.iter().any(|w| *w > 0));
            let cfg = one_listener(&weights, Scheduler::Wrr);
            let total: usize = weights.iter().map(|w| usize::from(*w)).sum();
            let counts = run(&cfg, total * cycles);
            for (w, c) in weights.iter().zip(&counts) {
                prop_assert_eq!(*c, usize::from(*w) * cycles);
            }
            // Any prefix: within one flow of the exact share.
            let n = total + total / 2;
            let counts = run(&cfg, n);
            for (w, c) in weights.iter().zip(&counts) {
                let share = n as f64 * f64::from(*w) / total as f64;
                prop_assert!((*c as f64 - share).abs() < 1.0 + 1e-9, "weight {} got {} of {} (share {:.2})", w, c, n, share);
            }
        }

        /// sch spreads clients over the backends in proportion to the weights (within 10 points
        /// over 2,000 clients) and sends one client to one backend.
        #[test]
        fn source_hash_follows_the_weights(weights in proptest::collection::vec(1u8..=100, 2..5)) {
            let cfg = one_listener(&weights, Scheduler::Sch);
            let rt = { let mut r = LbRuntime::new(16, RandomState::new()); r.sync(&cfg); r };
            let health = HealthTable::default();
            let ct = Conntrack::new(1, RandomState::new());
            let listener = &cfg.lbs[0].listeners[0];
            let mut counts = vec![0usize; weights.len()];
            for c in 0..2000u32 {
                let client = Ipv4Addr::from(0x0a00_0000 + c);
                let flow = |port| NewFlow { client, client_port: port, vip: Ipv4Addr::new(10, 0, 1, 100), vport: 80 };
                let a = pick(&rt, &health, &ct, listener, flow(1), 0).unwrap().backend;
                let b = pick(&rt, &health, &ct, listener, flow(2), 0).unwrap().backend;
                prop_assert_eq!(a, b);
                counts[a] += 1;
            }
            let total: f64 = weights.iter().map(|w| f64::from(*w)).sum();
            for (w, c) in weights.iter().zip(&counts) {
                let share = f64::from(*w) / total;
                prop_assert!((*c as f64 / 2000.0 - share).abs() < 0.10, "weight {} got {} of 2000", w, c);
            }
        }
    }
}
