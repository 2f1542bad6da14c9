//! The first bytes of TCP (RFC 793), UDP (RFC 768) and ICMP (RFC 792): what connection tracking
//! and security-group matching need (ports, TCP flags, ICMP type/code/echo id), nothing more.
//!
//! Checksums are deliberately not looked at: a frame whose virtio-net header says `NEEDS_CSUM`
//! carries only a partial one, and the fabric leaves verification to the receiving host.

use super::{Malformed, be16};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    pub src_port: u16,
    pub dst_port: u16,
    pub flags: u8,
}

impl Tcp {
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
            flags: buf[13],
        })
    }

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
    pub fn parse(buf: &'a [u8]) -> Result<Icmp<'a>, Malformed> {
        let h = buf.get(..ICMP_HEADER_LEN).ok_or(Malformed("icmp header truncated"))?;
        Ok(Icmp { ty: h[0], code: h[1], rest: [h[4], h[5], h[6], h[7]], payload: &buf[ICMP_HEADER_LEN..] })
    }

    pub fn is_echo(&self) -> bool {
        self.ty == ICMP_ECHO_REQUEST || self.ty == ICMP_ECHO_REPLY
    }

    /// Errors that quote the packet that caused them, which conntrack relates to its flow.
    pub fn is_error(&self) -> bool {
        matches!(self.ty, ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM)
    }

    pub fn echo_id(&self) -> u16 {
        u16::from_be_bytes([self.rest[0], self.rest[1]])
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
        assert_eq!((t.src_port, t.dst_port), (40000, 80));
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
}
