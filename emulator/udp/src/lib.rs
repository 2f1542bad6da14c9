//! The pieces of batched UDP I/O that both ends of a Geneve hop share: the emulator's fabric
//! socket (`enifab::fabric::udp`) and each shim's relay (`enifab_shim::sys`). Each keeps its own
//! `recvmmsg`/`sendmmsg` batch, shaped for its job (the fabric forwards between many peers from
//! borrowed buffers; a shim sends everything to one fabric from buffers with headroom); what
//! must not differ between them lives here once:
//!
//! - **which datagrams make one UDP GSO message** ([`gso_run`]): consecutive datagrams of one
//!   size, the last of a run possibly shorter, at most [`GSO_MAX_SEGMENTS`] of them and
//!   [`GSO_MAX_BYTES`] in all, as the kernel's `UDP_SEGMENT` requires;
//! - **what to do when the kernel refuses a run** ([`segment_refused`], [`after_refusal`]): a path
//!   whose MTU is below the segment size refuses the whole message, which goes again with only
//!   segments every Ethernet path carries, or none; any other failure costs only that message;
//! - the control messages: writing `UDP_SEGMENT` ([`set_gso_control`]) and reading `UDP_GRO`
//!   ([`gro_segment`]) — the only `unsafe` here, each block saying why it is sound;
//! - socket setup ([`enable_gro`], [`set_buffers`]), the address peers reach a wildcard bind at
//!   ([`reachable`]), and addresses in the kernel's layout ([`to_std`], [`unspecified`]);
//! - the rules for an address one end *advertises* to the other (`enifab serve
//!   --fabric-advertise`, `enifab-shim --geneve-advertise`): how the flag is read
//!   ([`parse_host_port`]), what may be sent to at all
//!   ([`not_unicast`]), what reaches the bound socket ([`check_advertise`]), and the source the
//!   kernel picks toward a peer ([`route_source`]), which is what a wildcard bind advertises.
//!
//! Must not: own sockets or buffers, block, or allocate on the per-datagram path.
#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;

use nix::sys::socket::{SockaddrStorage, setsockopt, sockopt};

/// Most datagrams in one UDP GSO send (`UDP_MAX_SEGMENTS` of older kernels).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one UDP GSO send (it is one IP packet until it is segmented).
pub const GSO_MAX_BYTES: usize = 65_000;
/// A segment size every Ethernet path carries (1500-byte MTU minus IP/UDP headers, with margin).
pub const SAFE_SEGMENT: usize = 1400;
/// The largest segment coalesced until the kernel refuses one: anything loopback carries.
pub const INITIAL_MAX_SEGMENT: usize = GSO_MAX_BYTES / 2;

/// Room for one `UDP_GRO`/`UDP_SEGMENT` control message (u64s for `cmsghdr` alignment).
pub type CmsgBuf = [u64; 4];

/// How many datagrams form one GSO message, starting with one of `len` bytes and followed by
/// datagrams of the lengths `next` yields (the caller ends `next` where a run must end anyway,
/// such as at a datagram for another peer). 1 means "send it alone".
pub fn gso_run(len: usize, max_segment: usize, next: impl IntoIterator<Item = usize>) -> usize {
    if len == 0 || len > max_segment {
        return 1;
    }
    let (mut count, mut total) = (1, len);
    for next in next {
        if count == GSO_MAX_SEGMENTS || next == 0 || next > len || total + next > GSO_MAX_BYTES {
            break;
        }
        count += 1;
        total += next;
        if next < len {
            break; // only the last segment may be shorter
        }
    }
    count
}

/// Whether a `sendmmsg` failure with `errno` on a message of `count` datagrams is the kernel
/// refusing the GSO segment size (a path MTU below it), which [`after_refusal`] answers, rather
/// than a failure of the datagrams themselves (a full buffer, an unreachable peer), which only
/// costs that message.
pub fn segment_refused(errno: Option<i32>, count: usize) -> bool {
    count > 1 && matches!(errno, Some(libc::EINVAL | libc::EMSGSIZE))
}

/// The largest segment to coalesce after the kernel refused a run of `segment`-byte datagrams.
pub fn after_refusal(segment: usize, max_segment: usize) -> usize {
    if segment > SAFE_SEGMENT { SAFE_SEGMENT.min(max_segment) } else { 0 }
}

/// Gives `hdr` one `UDP_SEGMENT` control message of `segment` bytes, written into `buf`, or
/// (`None`) no control data at all. `buf` must stay where it is until `hdr` has been sent.
pub fn set_gso_control(hdr: &mut libc::msghdr, buf: &mut CmsgBuf, segment: Option<u16>) {
    let Some(segment) = segment else {
        hdr.msg_control = std::ptr::null_mut();
        hdr.msg_controllen = 0;
        return;
    };
    // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic on a constant.
    let (space, clen) = unsafe { (libc::CMSG_SPACE(2), libc::CMSG_LEN(2)) };
    hdr.msg_control = buf.as_mut_ptr().cast();
    hdr.msg_controllen = space as usize;
    // SAFETY: msg_control points at `buf`, 32 bytes and 8-aligned, which holds CMSG_SPACE(2) = 24
    // bytes; CMSG_FIRSTHDR returns its start (non-null since msg_controllen ≥ the header size)
    // and CMSG_DATA the 2 bytes after the header, inside the buffer.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(hdr);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = clen as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
    }
}

/// The segment size of a `UDP_GRO` control message on a received header, if there is one (and
/// not 0): the message is a run of datagrams of that size, back to back, the last possibly
/// shorter.
pub fn gro_segment(hdr: &libc::msghdr) -> Option<usize> {
    if hdr.msg_control.is_null() || hdr.msg_controllen < std::mem::size_of::<libc::cmsghdr>() {
        return None;
    }
    // SAFETY: the kernel filled `msg_control` (the caller's buffer) with `msg_controllen` bytes
    // of control messages; CMSG_FIRSTHDR/NXTHDR stay within that length and return null at its
    // end, and a UDP_GRO message carries one int after its header.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(v).ok().filter(|s| *s > 0);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// Asks the kernel to queue runs of datagrams that were sent as one UDP GSO message as one
/// buffer (`UDP_GRO`). Kernels before 5.0 refuse; the caller then receives datagram by datagram.
pub fn enable_gro(sock: &impl AsFd) -> nix::Result<()> {
    setsockopt(sock, sockopt::UdpGroSegment, &true)
}

/// Big socket buffers, so a burst of super-frames does not overflow them: as root the `*FORCE`
/// options pass the system limits; otherwise the plain ones are capped, which is fine.
pub fn set_buffers(sock: &impl AsFd, bytes: usize) {
    if setsockopt(sock, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(sock, sockopt::RcvBuf, &bytes);
    }
    if setsockopt(sock, sockopt::SndBufForce, &bytes).is_err() {
        let _ = setsockopt(sock, sockopt::SndBuf, &bytes);
    }
}

/// The address peers should send to for a socket bound to `a`: a wildcard bind is reachable on
/// the loopback address of its family.
pub fn reachable(mut a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => a.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(ip) if ip.is_unspecified() => a.set_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        _ => {}
    }
    a
}

/// Why `a` cannot be a peer's socket, if it cannot: no port, no host, or many hosts.
pub fn not_unicast(a: SocketAddr) -> Option<&'static str> {
    let ip = a.ip();
    if a.port() == 0 {
        Some("port 0")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        Some("the broadcast address")
    } else {
        None
    }
}

/// Why an advertised address cannot reach a socket bound elsewhere; each end words it with its
/// own flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvertiseError {
    /// Not an address to send to ([`not_unicast`]'s reason).
    NotUnicast(&'static str),
    /// The socket is on loopback, which no other host reaches.
    BoundToLoopback,
    /// The socket is on one other address, so loopback does not reach it.
    NotOnLoopback,
}

/// Whether peers sending to `advertise` reach a socket bound to `bound`: on loopback when it is
/// bound to loopback, not on loopback when it is bound to one other address. A wildcard bind
/// takes any unicast address (a NAT's outside port included).
pub fn check_advertise(bound: SocketAddr, advertise: SocketAddr) -> Result<(), AdvertiseError> {
    if let Some(why) = not_unicast(advertise) {
        return Err(AdvertiseError::NotUnicast(why));
    }
    let ip = bound.ip();
    if ip.is_loopback() && !advertise.ip().is_loopback() {
        return Err(AdvertiseError::BoundToLoopback);
    }
    if !ip.is_unspecified() && !ip.is_loopback() && advertise.ip().is_loopback() {
        return Err(AdvertiseError::NotOnLoopback);
    }
    Ok(())
}

/// The address this host sends from toward `dst`: the kernel's route lookup (connecting a UDP
/// socket sends nothing). `None` without a route.
pub fn route_source(dst: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = match dst {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = std::net::UdpSocket::bind(any).ok()?;
    sock.connect((dst, 9)).ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// `HOST:PORT` given for an advertised address: a name is resolved now, once, to its first IPv4
/// address if it has one (the Geneve sockets are IPv4 unless told otherwise); port 0 is refused.
pub fn parse_host_port(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> =
        s.to_socket_addrs().map_err(|e| format!("{s:?} is not HOST:PORT that resolves: {e}"))?.collect();
    let a = addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).copied();
    let a = a.ok_or_else(|| format!("{s} resolves to no address"))?;
    if a.port() == 0 {
        return Err(format!("{s}: port 0 is not a port"));
    }
    Ok(a)
}

/// An address for a slot nothing has been written to yet (the kernel overwrites it on receive).
pub fn unspecified() -> SockaddrStorage {
    SockaddrStorage::from(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
}

/// A kernel-written address as std's, if it is IPv4 or IPv6.
pub fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    a.as_sockaddr_in()
        .map(|v4| SocketAddrV4::from(*v4).into())
        .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddrV6::from(*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advertised_address_must_reach_the_socket() {
        let check = |b: &str, a: &str| check_advertise(b.parse().unwrap(), a.parse().unwrap());
        assert_eq!(check("0.0.0.0:6081", "10.0.0.5:6081"), Ok(()));
        assert_eq!(check("0.0.0.0:6081", "203.0.113.9:16081"), Ok(()), "NAT: another port outside");
        assert_eq!(check("127.0.0.1:0", "127.0.0.1:40000"), Ok(()));
        assert_eq!(check("127.0.0.1:6081", "10.0.0.5:6081"), Err(AdvertiseError::BoundToLoopback));
        assert_eq!(check("10.0.0.5:6081", "127.0.0.1:6081"), Err(AdvertiseError::NotOnLoopback));
        assert_eq!(check("0.0.0.0:6081", "0.0.0.0:6081"), Err(AdvertiseError::NotUnicast("an unspecified address")));
        assert_eq!(check("0.0.0.0:6081", "10.0.0.5:0"), Err(AdvertiseError::NotUnicast("port 0")));
        assert_eq!(check("0.0.0.0:6081", "239.1.1.1:6081"), Err(AdvertiseError::NotUnicast("a multicast address")));
        assert_eq!(
            check("0.0.0.0:6081", "255.255.255.255:6081"),
            Err(AdvertiseError::NotUnicast("the broadcast address"))
        );
        assert_eq!(route_source("127.0.0.1".parse().unwrap()), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(parse_host_port("localhost:6081"), Ok("127.0.0.1:6081".parse().unwrap()));
        assert_eq!(parse_host_port("10.0.0.5:0"), Err("10.0.0.5:0: port 0 is not a port".into()));
        assert!(parse_host_port("10.0.0.5").unwrap_err().starts_with("\"10.0.0.5\" is not HOST:PORT"));
    }

    #[test]
    fn runs_are_equal_sizes_with_a_shorter_tail() {
        let max = INITIAL_MAX_SEGMENT;
        assert_eq!(gso_run(100, max, [100, 100, 60, 100]), 4, "the shorter one ends the run");
        assert_eq!(gso_run(100, max, [200]), 1, "a longer one starts another");
        assert_eq!(gso_run(100, max, [0, 100]), 1, "an empty datagram is sent alone");
        assert_eq!(gso_run(0, max, [0]), 1);
        assert_eq!(gso_run(100, max, std::iter::repeat_n(100, 100)), GSO_MAX_SEGMENTS);
        assert_eq!(gso_run(3000, max, std::iter::repeat_n(3000, 100)), GSO_MAX_BYTES / 3000);
        assert_eq!(gso_run(3000, 1400, [3000]), 1, "above the allowed segment: alone");
        assert_eq!(gso_run(100, 0, [100]), 1, "coalescing off");
    }

    #[test]
    fn a_refused_run_narrows_coalescing_then_stops_it() {
        assert_eq!(after_refusal(3000, INITIAL_MAX_SEGMENT), SAFE_SEGMENT);
        assert_eq!(after_refusal(1300, SAFE_SEGMENT), 0);
    }

    /// The control message as the kernel reads it: one cmsghdr at the start of the buffer,
    /// SOL_UDP/UDP_SEGMENT, and the segment size right after the header.
    #[test]
    fn gso_control_is_laid_out_for_the_kernel() {
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut buf: CmsgBuf = [0; 4];
        set_gso_control(&mut hdr, &mut buf, Some(1448));
        assert_eq!(hdr.msg_control, buf.as_mut_ptr().cast());
        // SAFETY: arithmetic on constants.
        let (space, len) = unsafe { (libc::CMSG_SPACE(2) as usize, libc::CMSG_LEN(2) as usize) };
        assert_eq!(hdr.msg_controllen, space);
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let header = std::mem::size_of::<libc::cmsghdr>();
        // SAFETY: `buf` holds a cmsghdr at its start, written above.
        let c: libc::cmsghdr = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
        assert_eq!((c.cmsg_level, c.cmsg_type, c.cmsg_len), (libc::SOL_UDP, libc::UDP_SEGMENT, len));
        assert_eq!(u16::from_ne_bytes([bytes[header], bytes[header + 1]]), 1448);
        assert_eq!(gro_segment(&hdr), None, "UDP_SEGMENT is not UDP_GRO");
        set_gso_control(&mut hdr, &mut buf, None);
        assert!(hdr.msg_control.is_null());
        assert_eq!((hdr.msg_controllen, gro_segment(&hdr)), (0, None));
    }

    /// A UDP_GRO message as the kernel writes it (an int after the header) is found.
    #[test]
    fn gro_segment_reads_the_kernels_message() {
        let mut buf: CmsgBuf = [0; 4];
        // SAFETY: arithmetic on a constant.
        let len = unsafe { libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) } as usize;
        let c = libc::cmsghdr { cmsg_len: len, cmsg_level: libc::SOL_UDP, cmsg_type: libc::UDP_GRO };
        // SAFETY: `buf` is 32 bytes and 8-aligned; the header and the int after it fit.
        unsafe {
            std::ptr::write(buf.as_mut_ptr().cast(), c);
            let data = buf.as_mut_ptr().cast::<u8>().add(std::mem::size_of::<libc::cmsghdr>());
            std::ptr::write_unaligned(data.cast::<libc::c_int>(), 1300);
        }
        // SAFETY: all-zero is a valid msghdr.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_control = buf.as_mut_ptr().cast();
        hdr.msg_controllen = len;
        assert_eq!(gro_segment(&hdr), Some(1300));
    }

    #[test]
    fn addresses_round_trip() {
        for a in ["127.0.0.1:6081", "[::1]:9", "10.1.2.3:65535"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(to_std(&SockaddrStorage::from(a)), Some(a));
        }
        assert_eq!(to_std(&unspecified()), Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))));
        for (bound, want) in
            [("0.0.0.0:6081", "127.0.0.1:6081"), ("[::]:6081", "[::1]:6081"), ("10.0.0.1:5", "10.0.0.1:5")]
        {
            assert_eq!(reachable(bound.parse().unwrap()), want.parse::<SocketAddr>().unwrap());
        }
    }
}
