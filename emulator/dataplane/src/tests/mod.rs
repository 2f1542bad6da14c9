//! Scenario tests in the OPTE style: build a small lab, push datagrams in, assert the verdict,
//! the exact output bytes and the counter deltas. `proptests` throws arbitrary and mutated
//! bytes at the pipeline. The harness runs every datagram through a twin fabric with
//! [`Fabric::process_split`] too, and checks that it sends the same bytes and counts the same.

mod alloc;
mod fastpath;
mod ipv6;
mod malformed;
mod proptests;
mod scenarios;
mod sg_reference;
mod slb;

use core::net::SocketAddr;
use std::hash::RandomState;
use std::sync::Arc;

use crate::fabric::{MAX_HEADER_LEN, SplitVerdict};
use crate::testkit::*;
use crate::wire::ethernet::Frame;
use crate::wire::geneve;
use crate::{DropKind, Fabric, FabricConfig, FabricOptions, Instant, StatsSnapshot, Verdict, Vni};

pub(crate) struct Harness {
    pub fabric: Fabric,
    pub out: Vec<u8>,
    pub now: Instant,
    /// Same configuration and history as `fabric`, fed through `process_split`.
    split: Fabric,
    headers: Vec<u8>,
}

impl Harness {
    pub fn new(lab: &Lab) -> Harness {
        Self::with_options(lab, FabricOptions::new(RandomState::new()))
    }

    pub fn with_options(lab: &Lab, options: FabricOptions) -> Harness {
        let config = Arc::new(lab.build(1));
        Harness {
            fabric: Fabric::new(config.clone(), options.clone()),
            out: vec![0; 70_000],
            now: Instant(0),
            split: Fabric::new(config, options),
            headers: vec![0; 70_000],
        }
    }

    pub fn set_config(&mut self, config: FabricConfig) {
        let config = Arc::new(config);
        self.fabric.set_config(config.clone());
        self.split.set_config(config);
    }

    pub fn expire(&mut self) -> usize {
        let n = self.fabric.expire(self.now);
        assert_eq!(self.split.expire(self.now), n);
        n
    }

    /// Sends `d` from the shim address of `from` and returns the verdict and any output bytes.
    pub fn send(&mut self, from: &Endpoint, d: &[u8]) -> (Verdict, Vec<u8>) {
        self.send_raw(from.peer, d)
    }

    pub fn send_raw(&mut self, from: SocketAddr, d: &[u8]) -> (Verdict, Vec<u8>) {
        let v = self.fabric.process(self.now, from, d, &mut self.out);
        let out = match v {
            Verdict::Forward { len, .. } | Verdict::Reply { len, .. } => self.out[..len].to_vec(),
            Verdict::Drop(_) => Vec::new(),
        };
        let split = process_split_joined(&mut self.split, self.now, from, d, &mut self.headers);
        assert_eq!(split, (v.clone(), out.clone()), "process_split sends what process sends");
        assert_eq!(self.split.stats(), self.fabric.stats(), "process_split counts what process counts");
        (v, out)
    }

    /// Sends and expects delivery to `to`; returns the output datagram.
    pub fn forwarded(&mut self, from: &Endpoint, d: &[u8], to: &Endpoint) -> Vec<u8> {
        let (v, out) = self.send(from, d);
        assert!(
            matches!(v, Verdict::Forward { to: t, .. } if t == to.peer),
            "expected forward to {}, got {v:?}",
            to.eni
        );
        let (h, f) = decode(&out);
        assert_eq!(h.vni.get(), to.vni, "delivered on the receiver's port");
        assert_eq!(f.tag.map(|t| t.vid()), to.vlan, "receiver's VLAN");
        assert_eq!(f.dst, to.mac, "dst MAC is the receiving device's");
        assert_eq!(f.src, crate::wire::ethernet::GATEWAY_MAC);
        out
    }

    pub fn dropped(&mut self, from: &Endpoint, d: &[u8]) -> crate::DropReason {
        match self.send(from, d).0 {
            Verdict::Drop(r) => r,
            v => panic!("expected a drop, got {v:?}"),
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.fabric.stats()
    }

    /// [`Fabric::poll_health`] on both fabrics: the checker's probes are part of the state the
    /// twins must share.
    pub fn poll_health(&mut self, out: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let sent = self.fabric.poll_health(self.now, out);
        let mut twin = vec![0u8; out.len()];
        let twin_sent = self.split.poll_health(self.now, &mut twin);
        assert_eq!(sent, twin_sent, "both fabrics probe alike");
        if let Some((_, len)) = sent {
            assert_eq!(out[..len], twin[..len]);
        }
        sent
    }

    pub fn advance_secs(&mut self, s: u64) {
        self.now = Instant(self.now.0 + s * 1_000_000_000);
    }
}

/// Runs [`Fabric::process_split`] and puts together what it would send, as [`Fabric::process`]
/// reports it: the verdict and the datagram's bytes.
pub(crate) fn process_split_joined(
    f: &mut Fabric,
    now: Instant,
    from: SocketAddr,
    d: &[u8],
    headers_out: &mut [u8],
) -> (Verdict, Vec<u8>) {
    match f.process_split(now, from, d, headers_out) {
        SplitVerdict::Forward { to, header_len, payload } => {
            assert!(header_len <= MAX_HEADER_LEN, "{header_len} bytes of headers");
            let mut out = headers_out[..header_len].to_vec();
            out.extend_from_slice(&d[payload]);
            (Verdict::Forward { to, len: out.len() }, out)
        }
        SplitVerdict::Reply { to, len } => (Verdict::Reply { to, len }, headers_out[..len].to_vec()),
        SplitVerdict::Drop(reason) => (Verdict::Drop(reason), Vec::new()),
    }
}

pub(crate) fn decode(datagram: &[u8]) -> (geneve::Header, Frame<'_>) {
    let (h, frame) = geneve::Header::parse(datagram).expect("output is Geneve");
    (h, Frame::parse(frame).expect("output is Ethernet"))
}

pub(crate) fn drops_of(s: &StatsSnapshot, kind: DropKind) -> u64 {
    s.drops(kind)
}

pub(crate) fn port(s: &StatsSnapshot, v: u32) -> &crate::PortStats {
    s.port(Vni::new(v).unwrap()).expect("port row")
}

/// The fuzz seeds in `fuzz/corpus/process/` are `testkit::seed_corpus()`; set
/// `ENIFAB_WRITE_CORPUS=1` to rewrite them after changing the fixtures.
#[test]
fn fuzz_seed_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/process");
    let write = std::env::var_os("ENIFAB_WRITE_CORPUS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut h = Harness::new(&Lab::with_load_balancers());
    for (name, bytes) in seed_corpus() {
        let path = dir.join(format!("seed-{name}.bin"));
        if write {
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert_eq!(on_disk, bytes, "{} is stale: rerun with ENIFAB_WRITE_CORPUS=1", path.display());
        // Every seed gets past decap and port lookup, so the fuzzer starts deep.
        let (from, d) = split_fuzz_input(&bytes);
        let v = h.send_raw(from, d).0;
        assert!(
            !matches!(
                v,
                Verdict::Drop(
                    crate::DropReason::Malformed { .. }
                        | crate::DropReason::UnknownPeer { .. }
                        | crate::DropReason::UnknownPort { .. }
                )
            ),
            "{name}: {v:?}"
        );
    }
}
