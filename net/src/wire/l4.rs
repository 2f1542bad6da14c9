//! The first bytes of TCP (RFC 793), UDP (RFC 768) and ICMP (RFC 792): what connection tracking,
//! security-group matching, load-balancer translation and health checks need (ports, TCP flags
//! and sequence numbers, ICMP type/code/echo id), and emitters for the few segments the fabric
//! originates itself (health-check probes and the resets that end them).
//!
//! Checksums of received segments are deliberately not looked at: a frame whose virtio-net
//! header says `NEEDS_CSUM` carries only a partial one, and the fabric leaves verification to the
//! receiving host. Where a load balancer rewrites addresses or ports, the checksum is updated
//! incrementally ([`super::checksum::adjust`]), never recomputed from a payload it did not read.

use core::net::Ipv4Addr;

use super::{BufferTooSmall, Malformed, be16, check_room, checksum};

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
pub const ICMP_HEADER_LEN: usize = 8;

/// Where the checksum field sits in a TCP header.
pub const TCP_CHECKSUM_AT: usize = 16;
/// Where the checksum field sits in a UDP header.
pub const UDP_CHECKSUM_AT: usize = 6;
pub const UDP_HEADER_LEN: usize = 8;
pub const TCP_MIN_HEADER_LEN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// Header length with options (the data offset in bytes).
    pub header_len: usize,
}

impl Tcp {
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Tcp, Malformed> {
        if buf.len() < 20 {
            return Err(Malformed("tcp header truncated"));
        }
        let data_offset = usize::from(buf[12] >> 4) * 4;
        if data_offset < 20 {
            return Err(Malformed("tcp data offset below 5"));
        }
        if data_offset > buf.len() {
            return Err(Malformed("tcp options truncated"));
        }
        Ok(Tcp {
            src_port: u16::from_be_bytes([buf[0], buf[1]]),
            dst_port: u16::from_be_bytes([buf[2], buf[3]]),
            seq: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            ack: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
            flags: buf[13],
            header_len: data_offset,
        })
    }

    #[inline]
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp {
    pub src_port: u16,
    pub dst_port: u16,
}

impl Udp {
    /// The length field is not checked: for UDP GSO super-frames it does not describe the
    /// bytes present.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Udp, Malformed> {
        match (be16(buf, 0), be16(buf, 2), buf.len() >= 8) {
            (Some(src_port), Some(dst_port), true) => Ok(Udp { src_port, dst_port }),
            _ => Err(Malformed("udp header truncated")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp<'a> {
    pub ty: u8,
    pub code: u8,
    /// Bytes 4..8: identifier and sequence for echo, unused or MTU for errors.
    pub rest: [u8; 4],
    /// After the 8-byte header: echo data, or the quoted original packet of an error.
    pub payload: &'a [u8],
}

impl<'a> Icmp<'a> {
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Icmp<'a>, Malformed> {
        let h = buf.get(..ICMP_HEADER_LEN).ok_or(Malformed("icmp header truncated"))?;
        Ok(Icmp { ty: h[0], code: h[1], rest: [h[4], h[5], h[6], h[7]], payload: &buf[ICMP_HEADER_LEN..] })
    }

    #[inline]
    pub fn is_echo(&self) -> bool {
        self.ty == ICMP_ECHO_REQUEST || self.ty == ICMP_ECHO_REPLY
    }

    /// Errors that quote the packet that caused them, which conntrack relates to its flow.
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(self.ty, ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM)
    }

    #[inline]
    pub fn echo_id(&self) -> u16 {
        u16::from_be_bytes([self.rest[0], self.rest[1]])
    }
}

/// The pseudo-header sum of RFC 793/768 for `len` bytes of `protocol` between two addresses,
/// folded but not complemented.
#[inline]
fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: usize) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = protocol;
    p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

/// A TCP segment the fabric originates (no options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload: &'a [u8],
}

impl TcpRepr<'_> {
    #[inline]
    pub fn len(&self) -> usize {
        TCP_MIN_HEADER_LEN + self.payload.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the segment with its full checksum; returns its length.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let len = self.len();
        check_room(buf, len)?;
        let b = &mut buf[..len];
        b[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        b[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        b[4..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..12].copy_from_slice(&self.ack.to_be_bytes());
        b[12] = 0x50;
        b[13] = self.flags;
        b[14..16].copy_from_slice(&self.window.to_be_bytes());
        b[16..20].fill(0);
        b[20..].copy_from_slice(self.payload);
        let c = checksum::internet2(&pseudo_header(self.src, self.dst, super::ipv4::PROTO_TCP, len), b);
        b[16..18].copy_from_slice(&c.to_be_bytes());
        Ok(len)
    }
}

/// A UDP datagram the fabric originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

impl UdpRepr<'_> {
    #[inline]
    pub fn len(&self) -> usize {
        UDP_HEADER_LEN + self.payload.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let len = self.len();
        check_room(buf, len)?;
        let b = &mut buf[..len];
        b[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        b[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        b[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        b[6..8].fill(0);
        b[8..].copy_from_slice(self.payload);
        let c = checksum::internet2(&pseudo_header(self.src, self.dst, super::ipv4::PROTO_UDP, len), b);
        // RFC 768: a computed 0 is sent as all ones (0 means "no checksum").
        let c = if c == 0 { 0xffff } else { c };
        b[6..8].copy_from_slice(&c.to_be_bytes());
        Ok(len)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// 40000 → 80, SYN, data offset 5.
    static TCP_SYN_HDR: [u8; 20] = [0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0];
    /// Echo request id 0x0101 seq 1 with 2 data bytes.
    static ECHO: [u8; 10] = [0x08, 0x00, 0xf5, 0xfc, 0x01, 0x01, 0x00, 0x01, 0xab, 0xcd];

    #[test]
    fn tcp() {
        let t = Tcp::parse(&TCP_SYN_HDR).unwrap();
        assert_eq!((t.src_port, t.dst_port, t.seq, t.ack, t.header_len), (40000, 80, 1, 0, 20));
        assert!(t.has(TCP_SYN) && !t.has(TCP_ACK));
        assert!(Tcp::parse(&TCP_SYN_HDR[..19]).is_err());
        let mut bad = TCP_SYN_HDR;
        bad[12] = 0x40;
        assert!(Tcp::parse(&bad).is_err());
        bad[12] = 0x60;
        assert!(Tcp::parse(&bad).is_err(), "options beyond the buffer");
    }

    #[test]
    fn udp() {
        assert_eq!(Udp::parse(&TCP_SYN_HDR[..8]), Ok(Udp { src_port: 40000, dst_port: 80 }));
        assert!(Udp::parse(&TCP_SYN_HDR[..7]).is_err());
    }

    #[test]
    fn icmp() {
        let i = Icmp::parse(&ECHO).unwrap();
        assert!(i.is_echo() && !i.is_error());
        assert_eq!((i.ty, i.echo_id(), i.payload), (ICMP_ECHO_REQUEST, 0x0101, &[0xab, 0xcd][..]));
        assert!(Icmp::parse(&ECHO[..7]).is_err());
    }

    #[test]
    fn emitted_segments_carry_valid_checksums() {
        let (a, b) = (Ipv4Addr::new(100, 64, 1, 1), Ipv4Addr::new(10, 0, 1, 5));
        let seg = TcpRepr {
            src: a,
            dst: b,
            src_port: 1024,
            dst_port: 80,
            seq: 7,
            ack: 0,
            flags: TCP_SYN,
            window: 1024,
            payload: b"x",
        };
        let mut buf = [0u8; 64];
        let n = seg.emit(&mut buf).unwrap();
        assert_eq!(n, 21);
        assert_eq!(checksum::internet2(&pseudo_header(a, b, 6, n), &buf[..n]), 0);
        let t = Tcp::parse(&buf[..n]).unwrap();
        assert_eq!((t.seq, t.flags, t.header_len), (7, TCP_SYN, 20));
        let d = UdpRepr { src: a, dst: b, src_port: 1025, dst_port: 53, payload: b"probe" };
        let n = d.emit(&mut buf).unwrap();
        assert_eq!(checksum::internet2(&pseudo_header(a, b, 17, n), &buf[..n]), 0);
        assert!(seg.emit(&mut buf[..20]).is_err());
    }
}
