//! Probes: does traffic from a namespace reach an address? TCP connect, a UDP exchange, an
//! HTTP GET, or an ICMP echo, each from a thread inside the source namespace, each with a short
//! deadline. A security group drops silently, so "blocked" is a timeout; a refused connection
//! means the packets got through but nothing listened, which is reported as such.
//!
//! A probe can be cut short ([`probe_until`]): the caller that sees the fabric drop the probe's
//! packets for a reason that will not change (a security group, no route) stops it, which is
//! "blocked" without waiting out the deadline. The probe's socket is closed at once, so nothing
//! of it is retransmitted into the next check.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
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

/// Probe `to` from inside the namespace `from_ns`.
pub fn probe(from_ns: &str, to: Ipv4Addr, proto: Proto, port: u16) -> Result<Outcome> {
    probe_until(from_ns, to, proto, port, Arc::new(AtomicBool::new(false)))
}

/// As [`probe`], but `stop` set by another thread ends it as [`Outcome::Timeout`] within about
/// 50 ms (300 ms for UDP and ICMP, between attempts).
pub fn probe_until(from_ns: &str, to: Ipv4Addr, proto: Proto, port: u16, stop: Arc<AtomicBool>) -> Result<Outcome> {
    probe_in(&Ns::Named(from_ns.to_string()), to, proto, port, TIMEOUT, stop)
}

/// As [`probe_until`], from any namespace and with its own deadline.
pub fn probe_in(
    from: &Ns,
    to: Ipv4Addr,
    proto: Proto,
    port: u16,
    timeout: Duration,
    stop: Arc<AtomicBool>,
) -> Result<Outcome> {
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
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| Outcome::Error(e.to_string()))?;
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

fn tcp(to: Ipv4Addr, port: u16, http: bool, timeout: Duration, stop: &AtomicBool) -> Outcome {
    let s = match connect(SocketAddr::from((to, port)), timeout, stop) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let _ = s.set_read_timeout(Some(timeout));
    let mut s = s;
    if http {
        let req = format!("GET / HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n");
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

fn udp(to: Ipv4Addr, port: u16, timeout: Duration, stop: &AtomicBool) -> Outcome {
    let s = match UdpSocket::bind("0.0.0.0:0") {
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

/// An ICMP echo over a datagram ICMP socket (the kernel fills the id and checksum; allowed for
/// root whatever `ping_group_range` says).
fn icmp(to: Ipv4Addr, timeout: Duration, stop: &AtomicBool) -> Outcome {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = match Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)) {
        Ok(s) => s,
        Err(e) => return Outcome::Error(format!("ICMP socket: {e}")),
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let deadline = Instant::now() + timeout;
    let mut seq: u16 = 0;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        seq = seq.wrapping_add(1);
        let [a, b] = seq.to_be_bytes();
        let echo = [8u8, 0, 0, 0, 0, 0, a, b, b'e', b'n', b'i', b'f', b'a', b'b'];
        if let Err(e) = s.send_to(&echo, &SockAddr::from(SocketAddr::from((to, 0)))) {
            return classify(&e);
        }
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 256];
        match s.recv(&mut buf) {
            // A datagram ICMP socket only delivers replies to its own echoes.
            Ok(n) if n >= 8 => return Outcome::Reachable(String::new()),
            Ok(_) => continue,
            Err(e) if matches!(classify(&e), Outcome::Timeout) => continue,
            Err(e) => return classify(&e),
        }
    }
    Outcome::Timeout
}
