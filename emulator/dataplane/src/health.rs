//! Health checks of load-balancer backends, done by the fabric itself as CLB does them
//! (reference §11.1): probes come from an address in 100.64.0.0/10 ([`CHECKER`]), which backends'
//! security groups admit without a rule, and go through the same ports, VLANs and devices as any
//! other traffic, so a backend fails its check only when it really does not answer: no server,
//! its pod gone, its own firewall, or a group rule that explicitly drops the checker.
//!
//! - **TCP**: a SYN; a SYN-ACK is a success, answered with a RST so the backend's half-open
//!   connection goes away at once (the cloud's "SYN, SYN-ACK, RST" check); a RST, an ICMP error
//!   or silence until the timeout is a failure.
//! - **HTTP**: the handshake, then `HEAD <uri> HTTP/1.0` (`GET` when the listener says so, as
//!   `HealthCheckMethod` does) in the handshake's last ACK; the status line of the answer
//!   decides by class (`http_2xx`, …); a RST follows either way.
//! - **UDP**: a datagram with the listener's request string; an ICMP port unreachable is a
//!   failure, an answer is a success (when an expected string is set, it must contain it), and
//!   silence is a success unless an answer is expected (the cloud's UDP check works the same way,
//!   since a UDP server need not answer).
//!
//! A backend starts *unknown*, which counts as healthy, so a new listener takes traffic at once;
//! `UnhealthyThreshold` consecutive failures make it unhealthy and `HealthyThreshold` consecutive
//! successes healthy again. Probes of one backend start `HealthCheckInterval` apart; a probe
//! still unanswered after `HealthCheckConnectTimeout` is a failure.
//!
//! The table is pure state: the fabric asks it what is due ([`HealthTable::due`]), builds and
//! sends the frames, and hands it the answers ([`HealthTable::answer`], read-only) and their
//! effect ([`HealthTable::apply`]). Time comes in as nanoseconds of the caller's clock.

use core::net::Ipv4Addr;

use crate::config::{FabricConfig, FixedMap, HealthCheckConfig, HealthCheckKind, fnv1a_extend};
use crate::conntrack::BackendKey;
use crate::wire::l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// Where the fabric's health checks come from: inside 100.64.0.0/10, the range CLB checks use
/// and security groups admit by default.
pub const CHECKER: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 1);

/// The checker's source ports.
const FIRST_PORT: u16 = 1024;

/// What a check has concluded about one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// No verdict yet (just added, or checks only started); takes traffic.
    Unknown,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    /// The cloud's word (`ServerHealthStatus`): `normal`, `abnormal`; `unavailable` while
    /// nothing is known.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Unknown => "unavailable",
            HealthStatus::Healthy => "normal",
            HealthStatus::Unhealthy => "abnormal",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// SYN sent (TCP and HTTP checks).
    Syn,
    /// Handshake done and the request sent (HTTP).
    Request { next_seq: u32 },
    /// A UDP probe sent.
    Datagram,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    port: u16,
    deadline: u64,
    isn: u32,
    stage: Stage,
}

#[derive(Debug, Clone)]
struct Entry {
    check: HealthCheckConfig,
    /// The port probes go to: the check's own or the backend's.
    target_port: u16,
    status: HealthStatus,
    successes: u8,
    failures: u8,
    next_at: u64,
    probe: Option<Probe>,
    /// Why the last probe failed, for reports.
    last_failure: Option<&'static str>,
}

/// One probe to send: what to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeSpec {
    pub key: BackendKey,
    pub backend: Ipv4Addr,
    pub port: u16,
    pub checker_port: u16,
    pub kind: ProbeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    Syn { isn: u32 },
    Datagram { payload: Vec<u8> },
}

/// What to send back to a backend as part of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Respond {
    /// End the connection.
    Rst { seq: u32 },
    /// Complete the handshake with the HTTP request.
    Request { seq: u32, ack: u32 },
}

/// What an answer from a backend means; [`HealthTable::apply`] makes it so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub key: BackendKey,
    /// The probe's verdict, once there is one.
    pub verdict: Option<Result<(), &'static str>>,
    /// For HTTP after the SYN-ACK: the request is on its way.
    pub request_sent: Option<u32>,
    pub respond: Option<Respond>,
}

/// What arrived for the checker.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arrival<'a> {
    Tcp {
        from: Ipv4Addr,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &'a [u8],
    },
    Udp {
        from: Ipv4Addr,
        sport: u16,
        dport: u16,
        payload: &'a [u8],
    },
    /// An ICMP error quoting a probe of ours to `to:port` from our `checker_port`.
    Unreachable {
        to: Ipv4Addr,
        port: u16,
        checker_port: u16,
    },
}

/// A backend's health as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    pub lb_id: String,
    pub protocol: &'static str,
    pub listener_port: u16,
    pub server_id: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub status: HealthStatus,
    /// Why the last probe failed (`timeout`, `refused`, `http 503`, …), if one did.
    pub last_failure: Option<&'static str>,
}

/// Every checked backend of every listener.
#[derive(Debug, Default)]
pub(crate) struct HealthTable {
    entries: FixedMap<BackendKey, Entry>,
    by_port: FixedMap<u16, BackendKey>,
    next_port: u16,
    counter: u64,
}

impl HealthTable {
    /// Takes the listeners of a new snapshot: backends that stay keep their state (unless their
    /// check changed), new ones start unknown and are probed at once, gone ones are forgotten.
    pub fn sync(&mut self, cfg: &FabricConfig, now: u64) {
        let mut next = FixedMap::default();
        for l in cfg.lbs.iter().flat_map(|lb| lb.listeners.iter()) {
            let Some(check) = l.health.as_ref().filter(|_| l.running) else { continue };
            for b in l.backends.iter() {
                let key = (l.key, b.ip, b.port);
                let target_port = check.port.unwrap_or(b.port);
                let entry = match self.entries.remove(&key) {
                    Some(e) if &e.check == check && e.target_port == target_port => e,
                    _ => Entry {
                        check: check.clone(),
                        target_port,
                        status: HealthStatus::Unknown,
                        successes: 0,
                        failures: 0,
                        next_at: now,
                        probe: None,
                        last_failure: None,
                    },
                };
                next.insert(key, entry);
            }
        }
        self.entries = next;
        self.by_port.retain(|_, k| self.entries.get(k).is_some_and(|e| e.probe.is_some()));
        self.by_port.reserve(self.entries.len());
    }

    /// Whether the backend may take new flows: unknown and healthy ones may. A backend the
    /// table does not check (its listener has no health check) is not asked about.
    pub fn is_healthy(&self, key: &BackendKey) -> bool {
        self.entries.get(key).is_none_or(|e| e.status != HealthStatus::Unhealthy)
    }

    /// The earliest time something is due (a probe to start or one to give up on).
    pub fn next_deadline(&self) -> Option<u64> {
        self.entries.values().map(|e| e.probe.map_or(e.next_at, |p| p.deadline.min(e.next_at))).min()
    }

    /// Something due at `now`: a probe timed out (its failure is recorded here) or a probe to
    /// start (returned, already recorded as sent).
    pub fn due(&mut self, now: u64) -> Option<ProbeSpec> {
        loop {
            let (key, timed_out) = self.entries.iter().find_map(|(k, e)| match e.probe {
                Some(p) if p.deadline <= now => Some((*k, true)),
                None if e.next_at <= now => Some((*k, false)),
                _ => None,
            })?;
            if timed_out {
                let e = &self.entries[&key];
                // A UDP probe nobody answered: no port unreachable came back, so something
                // listens (unless an answer is required).
                let silence_ok = matches!(&e.check.kind, HealthCheckKind::Udp { expect: None, .. });
                self.apply(&Answer {
                    key,
                    verdict: Some(if silence_ok { Ok(()) } else { Err("timeout") }),
                    request_sent: None,
                    respond: None,
                });
                continue;
            }
            return Some(self.start(key, now));
        }
    }

    fn start(&mut self, key: BackendKey, now: u64) -> ProbeSpec {
        self.counter = self.counter.wrapping_add(1);
        // Initial sequence numbers differ per probe and per backend, from a counter: the
        // fabric has no randomness, and nothing here needs the unpredictability TCP wants
        // against off-path attackers.
        let isn = fnv1a_extend(key.0 ^ self.counter, &key.1.octets()) as u32;
        let port = self.free_port();
        let e = self.entries.get_mut(&key).expect("due() found it");
        let (kind, stage) = match &e.check.kind {
            HealthCheckKind::Tcp | HealthCheckKind::Http { .. } => (ProbeKind::Syn { isn }, Stage::Syn),
            HealthCheckKind::Udp { request, .. } => (ProbeKind::Datagram { payload: request.clone() }, Stage::Datagram),
        };
        e.probe = Some(Probe { port, deadline: now.saturating_add(duration_ns(e.check.timeout)), isn, stage });
        e.next_at = now.saturating_add(duration_ns(e.check.interval).max(1));
        self.by_port.insert(port, key);
        ProbeSpec { key, backend: key.1, port: e.target_port, checker_port: port, kind }
    }

    fn free_port(&mut self) -> u16 {
        loop {
            self.next_port = if self.next_port < FIRST_PORT { FIRST_PORT } else { self.next_port.wrapping_add(1) };
            if self.next_port >= FIRST_PORT && !self.by_port.contains_key(&self.next_port) {
                return self.next_port;
            }
        }
    }

    /// What an arrival for the checker means, without changing anything (`None`: it belongs to
    /// no probe in progress, e.g. a late answer to one that already timed out).
    pub fn answer(&self, a: Arrival<'_>) -> Option<Answer> {
        let (port, from) = match a {
            Arrival::Tcp { dport, from, .. } | Arrival::Udp { dport, from, .. } => (dport, from),
            Arrival::Unreachable { checker_port, to, .. } => (checker_port, to),
        };
        let key = *self.by_port.get(&port)?;
        let e = self.entries.get(&key)?;
        let p = e.probe.filter(|p| p.port == port)?;
        if from != key.1 {
            return None;
        }
        let done = |verdict| Answer { key, verdict: Some(verdict), request_sent: None, respond: None };
        match (a, p.stage) {
            (Arrival::Unreachable { port: to_port, .. }, _) if to_port == e.target_port => {
                Some(done(Err("unreachable")))
            }
            (Arrival::Tcp { sport, seq, ack, flags, payload, .. }, stage) if sport == e.target_port => {
                let our_next = p.isn.wrapping_add(1);
                if flags & TCP_RST != 0 {
                    return Some(done(Err("refused")));
                }
                match stage {
                    Stage::Syn if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK && ack == our_next => {
                        match &e.check.kind {
                            HealthCheckKind::Http { .. } => {
                                let peer_next = seq.wrapping_add(1);
                                Some(Answer {
                                    key,
                                    verdict: None,
                                    request_sent: Some(peer_next),
                                    respond: Some(Respond::Request { seq: our_next, ack: peer_next }),
                                })
                            }
                            _ => Some(Answer {
                                key,
                                verdict: Some(Ok(())),
                                request_sent: None,
                                respond: Some(Respond::Rst { seq: our_next }),
                            }),
                        }
                    }
                    Stage::Request { next_seq } => {
                        let HealthCheckKind::Http { codes, .. } = &e.check.kind else { return None };
                        let rst = Some(Respond::Rst { seq: next_seq });
                        match http_status(payload) {
                            Some(code) if codes.accepts(code) => {
                                Some(Answer { key, verdict: Some(Ok(())), request_sent: None, respond: rst })
                            }
                            Some(code) => Some(Answer {
                                key,
                                verdict: Some(Err(http_failure(code))),
                                request_sent: None,
                                respond: rst,
                            }),
                            None if flags & TCP_FIN != 0 => {
                                Some(Answer { key, verdict: Some(Err("closed")), request_sent: None, respond: rst })
                            }
                            // A bare ACK of our request: the answer is still to come.
                            None => None,
                        }
                    }
                    _ => None,
                }
            }
            (Arrival::Udp { sport, payload, .. }, Stage::Datagram) if sport == e.target_port => {
                let ok = match &e.check.kind {
                    HealthCheckKind::Udp { expect: Some(want), .. } => {
                        want.is_empty() || payload.windows(want.len()).any(|w| w == want.as_slice())
                    }
                    _ => true,
                };
                Some(done(if ok { Ok(()) } else { Err("unexpected answer") }))
            }
            _ => None,
        }
    }

    /// Records an answer (or a timeout): the probe ends when there is a verdict, and the
    /// backend's status moves when a threshold is reached.
    pub fn apply(&mut self, a: &Answer) {
        let Some(e) = self.entries.get_mut(&a.key) else { return };
        if let (Some(next_seq), Some(p)) = (a.request_sent, e.probe.as_mut()) {
            let request_len = match &e.check.kind {
                HealthCheckKind::Http { uri, host, get, .. } => {
                    http_request(uri, host.as_deref(), *get, a.key.1).len() as u32
                }
                _ => 0,
            };
            let _ = next_seq;
            p.stage = Stage::Request { next_seq: p.isn.wrapping_add(1).wrapping_add(request_len) };
        }
        let Some(verdict) = a.verdict else { return };
        if let Some(p) = e.probe.take() {
            self.by_port.remove(&p.port);
        }
        match verdict {
            Ok(()) => {
                e.successes = e.successes.saturating_add(1);
                e.failures = 0;
                if e.status != HealthStatus::Healthy
                    && (e.status == HealthStatus::Unknown || e.successes >= e.check.healthy_threshold)
                {
                    e.status = HealthStatus::Healthy;
                }
            }
            Err(why) => {
                e.failures = e.failures.saturating_add(1);
                e.successes = 0;
                e.last_failure = Some(why);
                if e.status != HealthStatus::Unhealthy && e.failures >= e.check.unhealthy_threshold {
                    e.status = HealthStatus::Unhealthy;
                }
            }
        }
    }

    /// The request an HTTP check sends after the handshake.
    pub fn request_of(&self, key: &BackendKey) -> Option<String> {
        match &self.entries.get(key)?.check.kind {
            HealthCheckKind::Http { uri, host, get, .. } => Some(http_request(uri, host.as_deref(), *get, key.1)),
            _ => None,
        }
    }

    /// Every checked backend's status, with the snapshot's names for it.
    pub fn report(&self, cfg: &FabricConfig) -> Vec<BackendHealth> {
        let mut out = Vec::new();
        for lb in &cfg.lbs {
            for l in lb.listeners.iter() {
                for b in l.backends.iter() {
                    if let Some(e) = self.entries.get(&(l.key, b.ip, b.port)) {
                        out.push(BackendHealth {
                            lb_id: lb.id.to_string(),
                            protocol: l.protocol.as_str(),
                            listener_port: l.port,
                            server_id: b.server_id.to_string(),
                            ip: b.ip,
                            port: b.port,
                            status: e.status,
                            last_failure: e.last_failure,
                        });
                    }
                }
            }
        }
        out
    }
}

fn duration_ns(d: core::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `HEAD <uri> HTTP/1.0` (or `GET`) with the check's host (default: the backend's address), as
/// CLB sends it: HTTP/1.0, so the backend closes after answering.
pub(crate) fn http_request(uri: &str, host: Option<&str>, get: bool, backend: Ipv4Addr) -> String {
    let uri = if uri.is_empty() { "/" } else { uri };
    let method = if get { "GET" } else { "HEAD" };
    let agent = "User-Agent: enifab-health-check\r\n\r\n";
    match host {
        Some(h) if !h.is_empty() => format!("{method} {uri} HTTP/1.0\r\nHost: {h}\r\n{agent}"),
        _ => format!("{method} {uri} HTTP/1.0\r\nHost: {backend}\r\n{agent}"),
    }
}

/// The status code of an HTTP status line at the start of `payload`.
fn http_status(payload: &[u8]) -> Option<u16> {
    let rest = payload.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
}

fn http_failure(code: u16) -> &'static str {
    match code / 100 {
        2 => "http 2xx",
        3 => "http 3xx",
        4 => "http 4xx",
        5 => "http 5xx",
        _ => "http status",
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(http_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(http_status(b"HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(http_status(b"HTTP/2 200"), None);
        assert_eq!(http_status(b"HTTP/1.1 2x0"), None);
        assert_eq!(http_status(b""), None);
        let backend = Ipv4Addr::new(10, 0, 1, 5);
        let get = http_request("/healthz", None, true, backend);
        assert!(get.starts_with("GET /healthz HTTP/1.0\r\nHost: 10.0.1.5\r\n"), "{get}");
        let head = http_request("", Some("example.com"), false, backend);
        assert!(head.starts_with("HEAD / HTTP/1.0\r\nHost: example.com\r\n"), "{head}");
    }
}
