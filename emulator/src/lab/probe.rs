//! Probes: does traffic from a namespace reach an address? TCP connect, a UDP exchange, an
//! HTTP GET, or an ICMP echo (ICMPv6 for an IPv6 address), each from a thread inside the source
//! namespace, each with a short deadline. The address's family is the probe's: an IPv6 address
//! is probed over IPv6 sockets, and the kernel picks the source address of that family. A security group drops silently, so "blocked" is a timeout; a refused connection
//! means the packets got through but nothing listened, which is reported as such.
//!
//! A probe can be cut short ([`probe_until`]): the caller that sees the fabric drop the probe's
//! packets for a reason that will not change (a security group, no route) stops it, which is
//! "blocked" without waiting out the deadline. The probe's socket is closed at once, so nothing
//! of it is retransmitted into the next check.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::netns::Ns;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Http,
    Icmp,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "http" => Some(Proto::Http),
            "icmp" => Some(Proto::Icmp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Http => "http",
            Proto::Icmp => "icmp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered; the responder's words when it said any.
    Reachable(String),
    /// Nothing came back in time: dropped somewhere.
    Timeout,
    /// A reset or an ICMP error: the path works, nothing listens there.
    Refused,
    /// The probe itself could not run.
    Error(String),
}

impl Outcome {
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Reachable(_) => "reachable",
            Outcome::Timeout => "blocked",
            Outcome::Refused => "refused",
            Outcome::Error(_) => "error",
        }
    }

    /// The words of a reachable outcome, or the error of one that could not run.
    pub fn detail(&self) -> &str {
        match self {
            Outcome::Reachable(s) | Outcome::Error(s) => s,
            Outcome::Timeout | Outcome::Refused => "",
        }
    }

    /// The inverse of ([`Outcome::word`], [`Outcome::detail`]), as an agent reports a probe.
    pub fn from_word(word: &str, detail: &str) -> Option<Outcome> {
        match word {
            "reachable" => Some(Outcome::Reachable(detail.to_string())),
            "blocked" => Some(Outcome::Timeout),
            "refused" => Some(Outcome::Refused),
            "error" => Some(Outcome::Error(detail.to_string())),
            _ => None,
        }
    }
}

pub const TIMEOUT: Duration = Duration::from_millis(1500);

/// Probe `to` (either family) from inside the namespace `from_ns`.
pub fn probe(from_ns: &str, to: impl Into<IpAddr>, proto: Proto, port: u16) -> Result<Outcome> {
    probe_until(from_ns, to, proto, port, Arc::new(AtomicBool::new(false)))
}

/// As [`probe`], but `stop` set by another thread ends it as [`Outcome::Timeout`] within about
/// 50 ms (300 ms for UDP and ICMP, between attempts).
pub fn probe_until(
    from_ns: &str,
    to: impl Into<IpAddr>,
    proto: Proto,
    port: u16,
    stop: Arc<AtomicBool>,
) -> Result<Outcome> {
    probe_in(&Ns::Named(from_ns.to_string()), to, proto, port, TIMEOUT, stop)
}

/// As [`probe_until`], from any namespace and with its own deadline.
pub fn probe_in(
    from: &Ns,
    to: impl Into<IpAddr>,
    proto: Proto,
    port: u16,
    timeout: Duration,
    stop: Arc<AtomicBool>,
) -> Result<Outcome> {
    let to = to.into();
    from.run_in(move || match proto {
        Proto::Tcp => tcp(to, port, false, timeout, &stop),
        Proto::Http => tcp(to, port, true, timeout, &stop),
        Proto::Udp => udp(to, port, timeout, &stop),
        Proto::Icmp => icmp(to, timeout, &stop),
    })
}

/// A TCP connect that gives up at the deadline or when `stop` is set.
fn connect(to: SocketAddr, timeout: Duration, stop: &AtomicBool) -> Result<TcpStream, Outcome> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None).map_err(|e| Outcome::Error(e.to_string()))?;
    s.set_nonblocking(true).map_err(|e| Outcome::Error(e.to_string()))?;
    match s.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(classify(&e)),
    }
    let deadline = Instant::now() + timeout;
    loop {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return Err(Outcome::Timeout);
        }
        let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, PollTimeout::from(50u16)) {
            Ok(0) => continue,
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Outcome::Error(e.to_string())),
        }
    }
    match s.take_error() {
        Ok(None) => {}
        Ok(Some(e)) | Err(e) => return Err(classify(&e)),
    }
    s.set_nonblocking(false).map_err(|e| Outcome::Error(e.to_string()))?;
    Ok(s.into())
}

fn classify(e: &std::io::Error) -> Outcome {
    use std::io::ErrorKind::*;
    match e.kind() {
        TimedOut | WouldBlock => Outcome::Timeout,
        ConnectionRefused | ConnectionReset => Outcome::Refused,
        HostUnreachable | NetworkUnreachable => Outcome::Timeout,
        _ => Outcome::Error(e.to_string()),
    }
}

/// The most of an answer a probe reads: a responder's is one line.
const MAX_ANSWER: u64 = 64 * 1024;

fn tcp(to: IpAddr, port: u16, http: bool, timeout: Duration, stop: &AtomicBool) -> Outcome {
    let s = match connect(SocketAddr::from((to, port)), timeout, stop) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let _ = s.set_read_timeout(Some(timeout));
    let mut s = s;
    if http {
        // An IPv6 literal is bracketed in Host, as in a URL (RFC 7230 §5.4, RFC 3986 §3.2.2).
        let host = match to {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        if let Err(e) = s.write_all(req.as_bytes()) {
            return classify(&e);
        }
    }
    let mut buf = Vec::new();
    match (&mut s).take(MAX_ANSWER).read_to_end(&mut buf) {
        Ok(_) | Err(_) if !buf.is_empty() => {}
        Err(e) if http => return classify(&e),
        _ => {}
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    if http {
        let status_ok = text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200");
        if !status_ok {
            return Outcome::Error(format!("HTTP answer: {}", text.lines().next().unwrap_or("nothing")));
        }
        return Outcome::Reachable(text.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string());
    }
    Outcome::Reachable(text.trim().to_string())
}

fn udp(to: IpAddr, port: u16, timeout: Duration, stop: &AtomicBool) -> Outcome {
    let any: IpAddr = if to.is_ipv6() { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
    let s = match UdpSocket::bind((any, 0)) {
        Ok(s) => s,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    // UDP may lose the first datagram while neighbours resolve: ask a few times.
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        if let Err(e) = s.send_to(b"enifab-probe", (to, port)) {
            return classify(&e);
        }
        match s.recv_from(&mut buf) {
            Ok((n, _)) => return Outcome::Reachable(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            Err(e) if matches!(classify(&e), Outcome::Timeout) => continue,
            Err(e) => return classify(&e),
        }
    }
    Outcome::Timeout
}

/// An ICMP echo over a datagram ICMP socket, or an ICMPv6 one for an IPv6 address (the kernel
/// fills the id and checksum, the ICMPv6 checksum with its pseudo-header too; allowed where
/// `net.ipv4.ping_group_range`, which governs both families, admits the caller's group: the
/// lab sets it in every namespace it makes).
fn icmp(to: IpAddr, timeout: Duration, stop: &AtomicBool) -> Outcome {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let (domain, protocol, what) = match to {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, "ICMP"),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, "ICMPv6"),
    };
    let s = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(s) => s,
        Err(e) => return Outcome::Error(format!("{what} socket: {e}")),
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let deadline = Instant::now() + timeout;
    let mut seq: u16 = 0;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        seq = seq.wrapping_add(1);
        let echo = echo_request(to.is_ipv6(), seq);
        if let Err(e) = s.send_to(&echo, &SockAddr::from(SocketAddr::from((to, 0)))) {
            return classify(&e);
        }
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 256];
        match s.recv(&mut buf) {
            // A datagram ICMP socket only delivers replies to its own echoes (of its family).
            Ok(n) if n >= 8 => return Outcome::Reachable(String::new()),
            Ok(_) => continue,
            Err(e) if matches!(classify(&e), Outcome::Timeout) => continue,
            Err(e) => return classify(&e),
        }
    }
    Outcome::Timeout
}

/// An echo request as a datagram ICMP socket sends it: type (8, or 128 for ICMPv6), code 0,
/// checksum and identifier left to the kernel, then the sequence number and a short payload.
fn echo_request(v6: bool, seq: u16) -> [u8; 14] {
    let [a, b] = seq.to_be_bytes();
    let kind = if v6 { 128 } else { 8 };
    [kind, 0, 0, 0, 0, 0, a, b, b'e', b'n', b'i', b'f', b'a', b'b']
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_requests_carry_their_family_type_and_sequence() {
        assert_eq!(echo_request(false, 0x0102)[..8], [8, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(echo_request(true, 7)[..8], [128, 0, 0, 0, 0, 0, 0, 7]);
    }

    /// A probe over loopback in this very namespace, both families: no privileges needed for
    /// TCP, UDP and HTTP (ICMP may be refused by the machine's ping_group_range, so it only has
    /// to answer, not to succeed).
    #[test]
    fn probes_reach_loopback_over_both_families() {
        let stop = Arc::new(AtomicBool::new(false));
        for any in [IpAddr::from(Ipv4Addr::LOCALHOST), IpAddr::from(Ipv6Addr::LOCALHOST)] {
            let Ok(l) = std::net::TcpListener::bind((any, 0)) else {
                eprintln!("no {any} here (a kernel without IPv6?): skipped");
                continue;
            };
            let tport = l.local_addr().unwrap().port();
            let server = std::thread::spawn(move || {
                let (mut c, _) = l.accept().unwrap();
                c.write_all(b"hello").unwrap();
            });
            assert_eq!(tcp(any, tport, false, TIMEOUT, &stop), Outcome::Reachable("hello".into()), "{any}");
            server.join().unwrap();

            let u = UdpSocket::bind((any, 0)).unwrap();
            let port = u.local_addr().unwrap().port();
            let server = std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                let (n, from) = u.recv_from(&mut buf).unwrap();
                u.send_to(&buf[..n], from).unwrap();
            });
            assert_eq!(udp(any, port, TIMEOUT, &stop), Outcome::Reachable("enifab-probe".into()), "{any}");
            server.join().unwrap();

            // Its listener gone, nothing listens on the TCP port: refused, not blocked.
            assert_eq!(tcp(any, tport, true, TIMEOUT, &stop), Outcome::Refused, "{any}");
            let o = icmp(any, Duration::from_millis(600), &stop);
            assert!(matches!(o, Outcome::Reachable(_) | Outcome::Error(_)), "{any}: {o:?}");
        }
    }
}
