//! Whatever bytes arrive, from whichever address, into whatever output buffer: no panic, and
//! anything sent is a well-formed Geneve datagram that fits the buffer.

use proptest::prelude::*;

use super::*;
use crate::fabric::{MAX_HEADER_LEN, SplitVerdict};

fn check_verdict(v: &Verdict, out_len: usize, out: &[u8]) {
    match v {
        Verdict::Forward { len, .. } | Verdict::Reply { len, .. } => {
            assert!(*len <= out_len);
            let (h, frame) = geneve::Header::parse(&out[..*len]).expect("emitted Geneve parses");
            assert!(!h.oam);
            Frame::parse(frame).expect("emitted Ethernet parses");
        }
        Verdict::Drop(r) => {
            let _ = r.kind().as_str();
            let _ = r.to_string();
        }
    }
}

/// `process_split` on `g` sends the same bytes and counts the same as `process` on `f`, when
/// both start in the same state. Returns what `process` sent.
fn assert_split_matches(
    f: &mut Fabric,
    g: &mut Fabric,
    now: Instant,
    from: core::net::SocketAddr,
    d: &[u8],
) -> (Verdict, Vec<u8>) {
    let mut out = vec![0u8; d.len() + crate::MAX_GROWTH];
    let v = f.process(now, from, d, &mut out);
    let sent = match v {
        Verdict::Forward { len, .. } | Verdict::Reply { len, .. } => out[..len].to_vec(),
        Verdict::Drop(_) => Vec::new(),
    };
    let mut headers = vec![0u8; d.len() + crate::MAX_GROWTH];
    let split = process_split_joined(g, now, from, d, &mut headers);
    assert_eq!(split, (v.clone(), sent.clone()));
    assert_eq!(g.stats(), f.stats());
    (v, sent)
}

/// Whatever `headers_out`, `process_split` forwards a range of the input and headers that fit.
fn check_split(v: &SplitVerdict, d: &[u8], headers_len: usize) {
    match v {
        SplitVerdict::Forward { header_len, payload, .. } => {
            assert!(*header_len <= headers_len.min(MAX_HEADER_LEN));
            assert!(payload.start <= payload.end && payload.end == d.len());
        }
        SplitVerdict::Reply { len, .. } => assert!(*len <= headers_len),
        SplitVerdict::Drop(_) => {}
    }
}

fn lab_fabric() -> Fabric {
    let mut lab = Lab::with_load_balancers();
    lab.listener_mut("lb-intra", crate::LbProtocol::Tcp, 80).health_check = Some(tcp_check());
    // A rule-rich, flow-rich lab so that random packets reach the deeper steps.
    for g in &mut lab.groups {
        g.rules.push(rule(crate::Direction::Ingress, 50, crate::Policy::Accept, crate::Protocol::All, None, any_ip()));
        g.rules.push(rule(
            crate::Direction::Ingress,
            50,
            crate::Policy::Accept,
            crate::Protocol::All,
            None,
            any_ipv6(),
        ));
    }
    Fabric::new(Arc::new(lab.build(1)), FabricOptions::new(RandomState::new()))
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Truncate(usize),
    Extend(Vec<u8>),
    Set { at: usize, value: u8 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<usize>().prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
    ]
}

fn apply(d: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Flip { at, xor } if !d.is_empty() => {
            let i = at % d.len();
            d[i] ^= xor;
        }
        Mutation::Set { at, value } if !d.is_empty() => {
            let i = at % d.len();
            d[i] = *value;
        }
        Mutation::Truncate(n) => d.truncate(n % (d.len() + 1)),
        Mutation::Extend(b) => d.extend_from_slice(b),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..256), out_len in 0usize..400) {
        let mut f = lab_fabric();
        let (from, d) = split_fuzz_input(&data);
        let mut out = vec![0u8; out_len];
        let v = f.process(Instant(0), from, d, &mut out);
        check_verdict(&v, out_len, &out);
        let t = f.trace(Instant(0), from, d);
        prop_assert_eq!(&t.verdict, &f.process(Instant(0), from, d, &mut vec![0u8; d.len() + crate::MAX_GROWTH]));
        let mut headers = vec![0u8; out_len];
        check_split(&lab_fabric().process_split(Instant(0), from, d, &mut headers), d, out_len);
        assert_split_matches(&mut lab_fabric(), &mut lab_fabric(), Instant(0), from, d);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        seed in 0usize..64,
        mutations in prop::collection::vec(mutation(), 1..6),
        now in any::<u64>(),
        small_out in any::<bool>(),
    ) {
        let corpus = seed_corpus();
        let (_, base) = &corpus[seed % corpus.len()];
        let mut data = base.clone();
        for m in &mutations {
            apply(&mut data, m);
        }
        let (mut f, mut g) = (lab_fabric(), lab_fabric());
        // Prime some flows so that conntrack paths run on the mutants too (on `g` through the
        // split path, which must leave the same state).
        for (_, c) in &corpus {
            let (from, d) = split_fuzz_input(c);
            let _ = f.process(Instant(now / 2), from, d, &mut vec![0u8; d.len() + 4]);
            let _ = g.process_split(Instant(now / 2), from, d, &mut vec![0u8; d.len() + 4]);
        }
        prop_assert_eq!(g.stats(), f.stats());
        let (from, d) = split_fuzz_input(&data);
        let out_len = if small_out { d.len() / 2 } else { d.len() + crate::MAX_GROWTH };
        if small_out {
            let mut out = vec![0u8; out_len];
            let v = f.process(Instant(now), from, d, &mut out);
            check_verdict(&v, out_len, &out);
            check_split(&g.process_split(Instant(now), from, d, &mut out), d, out_len);
        } else {
            let (v, sent) = assert_split_matches(&mut f, &mut g, Instant(now), from, d);
            check_verdict(&v, out_len, &sent);
            let too_small = matches!(v, Verdict::Drop(crate::DropReason::OutputBufferTooSmall { .. }));
            prop_assert!(!too_small, "{:?}", v);
        }
    }

    /// Stateful groups: if a first packet from A to B is delivered, B's reply is delivered too,
    /// whatever B's own rules say.
    #[test]
    fn replies_of_delivered_packets_are_delivered(
        a in 0usize..6, b in 0usize..6, sport in 1u16.., dport in 1u16.., udp_flow in any::<bool>(),
        open_ingress in any::<bool>(),
    ) {
        let mut lab = Lab::new();
        if open_ingress {
            lab.group_mut("sg-node").rules.push(rule(crate::Direction::Ingress, 9, crate::Policy::Accept, crate::Protocol::All, None, any_ip()));
        }
        let mut f = Fabric::new(Arc::new(lab.build(1)), FabricOptions::new(RandomState::new()));
        let (ea, eb) = (ALL[a], ALL[b]);
        prop_assume!(ea.ip != eb.ip);
        let (fwd, back) = if udp_flow {
            (udp_datagram(&ea, eb.ip, sport, dport), udp_datagram(&eb, ea.ip, dport, sport))
        } else {
            (tcp_datagram(&ea, eb.ip, sport, dport, 0x02), tcp_datagram(&eb, ea.ip, dport, sport, 0x12))
        };
        let mut out = vec![0u8; 2048];
        if let Verdict::Forward { to, .. } = f.process(Instant(0), ea.peer, &fwd, &mut out) {
            prop_assert_eq!(to, eb.peer);
            let v = f.process(Instant(1), eb.peer, &back, &mut out);
            prop_assert!(matches!(v, Verdict::Forward { to, .. } if to == ea.peer), "{:?}", v);
        }
    }

    /// Through a VIP too: whichever client (a node, a pod, the internet), if its first packet
    /// reaches a backend, the backend's reply reaches the client from the VIP and listener port.
    #[test]
    fn replies_through_a_vip_come_back_from_the_vip(
        client in 0usize..7, sport in 1u16.., udp_flow in any::<bool>(), public in any::<bool>(),
    ) {
        let mut lab = Lab::with_load_balancers();
        for g in &mut lab.groups {
            g.rules.push(rule(crate::Direction::Ingress, 50, crate::Policy::Accept, crate::Protocol::All, None, any_ip()));
        }
        lab.lb_mut("lb-public").listeners.push(listener(crate::LbProtocol::Udp, 53, vec![backend(&POD_A2, 5353, 100)]));
        let mut f = Fabric::new(Arc::new(lab.build(1)), FabricOptions::new(RandomState::new()));
        let c = if client == 6 { EXTERNAL } else { ALL[client] };
        let (vip, vport) = match (public || client == 6, udp_flow) {
            (true, false) => (VIP_PUBLIC, 80),
            (false, false) => (VIP_INTRA, 80),
            (_, true) => (if public || client == 6 { VIP_PUBLIC } else { VIP_INTRA }, 53),
        };
        let fwd = if udp_flow { udp_datagram(&c, vip, sport, vport) } else { tcp_datagram(&c, vip, sport, vport, 0x02) };
        let mut out = vec![0u8; 2048];
        if let Verdict::Forward { to, len } = f.process(Instant(0), c.peer, &fwd, &mut out) {
            let (_, frame) = decode(&out[..len]);
            let ip = crate::wire::ipv4::Packet::parse(frame.payload, false).unwrap();
            prop_assert_eq!(ip.src, c.ip, "the client's address is kept");
            let backend = *ALL.iter().find(|e| e.ip == ip.dst && e.peer == to).expect("delivered to a backend");
            let bport = u16::from_be_bytes([ip.payload[2], ip.payload[3]]);
            let back = if udp_flow { udp_datagram(&backend, c.ip, bport, sport) } else { tcp_datagram(&backend, c.ip, bport, sport, 0x12) };
            let v = f.process(Instant(1), backend.peer, &back, &mut out);
            let Verdict::Forward { to, len } = v else { panic!("reply not delivered: {v:?}") };
            prop_assert_eq!(to, c.peer);
            let (_, frame) = decode(&out[..len]);
            let ip = crate::wire::ipv4::Packet::parse(frame.payload, false).unwrap();
            prop_assert_eq!((ip.src, ip.dst), (vip, c.ip));
            prop_assert_eq!(u16::from_be_bytes([ip.payload[0], ip.payload[1]]), vport);
        }
    }
}
