//! IPv4 header view (RFC 791) and the emitter for packets the virtual gateway originates.
//!
//! The fabric routes on the destination address and never rewrites a forwarded IPv4 header (no
//! TTL decrement inside a VPC, reference §9.2), so it neither verifies nor recomputes the header
//! checksum of forwarded packets: the receiving host does. The total-length check is relaxed for
//! GSO super-frames, whose total length may be 0 (BIG TCP) or describe the whole super-frame.

use core::net::Ipv4Addr;

use super::{BufferTooSmall, Malformed, check_room, checksum, ipv4_at};

pub const MIN_HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_GRE: u8 = 47;

/// A checked view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header_len: usize,
    pub tos: u8,
    pub total_len: u16,
    pub ident: u16,
    pub more_frags: bool,
    /// In 8-byte units.
    pub frag_offset: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// The L4 bytes: up to the total length for normal packets, to the end of the buffer for
    /// GSO super-frames and ICMP-embedded headers.
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parses a packet as received; `gso` relaxes the total-length check (see module docs).
    #[inline]
    pub fn parse(buf: &'a [u8], gso: bool) -> Result<Packet<'a>, Malformed> {
        let mut p = Self::parse_header(buf)?;
        if !gso {
            let total = usize::from(p.total_len);
            if total < p.header_len {
                return Err(Malformed("ipv4 total length shorter than its header"));
            }
            // Trailing bytes are Ethernet padding; fewer bytes than announced is a cut packet.
            p.payload = buf.get(p.header_len..total).ok_or(Malformed("ipv4 packet shorter than its total length"))?;
        }
        Ok(p)
    }

    /// Parses the copy of an original header quoted inside an ICMP error (RFC 792), which is
    /// followed by only the first 8 bytes of its payload, so the total length is not checked.
    #[inline]
    pub fn parse_quoted(buf: &'a [u8]) -> Result<Packet<'a>, Malformed> {
        Self::parse_header(buf)
    }

    #[inline]
    fn parse_header(buf: &'a [u8]) -> Result<Packet<'a>, Malformed> {
        if buf.len() < MIN_HEADER_LEN {
            return Err(Malformed("ipv4 header truncated"));
        }
        if buf[0] >> 4 != 4 {
            return Err(Malformed("ip version is not 4"));
        }
        let header_len = usize::from(buf[0] & 0x0f) * 4;
        if header_len < MIN_HEADER_LEN {
            return Err(Malformed("ipv4 IHL below 5"));
        }
        let payload = buf.get(header_len..).ok_or(Malformed("ipv4 IHL beyond the packet"))?;
        let frag = u16::from_be_bytes([buf[6], buf[7]]);
        let unspecified = Ipv4Addr::UNSPECIFIED;
        Ok(Packet {
            header_len,
            tos: buf[1],
            total_len: u16::from_be_bytes([buf[2], buf[3]]),
            ident: u16::from_be_bytes([buf[4], buf[5]]),
            more_frags: frag & 0x2000 != 0,
            frag_offset: frag & 0x1fff,
            ttl: buf[8],
            protocol: buf[9],
            src: ipv4_at(buf, 12).unwrap_or(unspecified),
            dst: ipv4_at(buf, 16).unwrap_or(unspecified),
            payload,
        })
    }

    /// Part of a fragmented datagram: only the first one carries the L4 ports.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.more_frags || self.frag_offset != 0
    }
}

/// A header the fabric writes itself (option-less, DF clear, checksum computed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    pub payload_len: usize,
}

impl Repr {
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        check_room(buf, MIN_HEADER_LEN)?;
        let total = u16::try_from(MIN_HEADER_LEN + self.payload_len).unwrap_or(u16::MAX);
        let h = &mut buf[..MIN_HEADER_LEN];
        h[0] = 0x45;
        h[1] = self.tos;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&self.ident.to_be_bytes());
        h[6..8].fill(0);
        h[8] = self.ttl;
        h[9] = self.protocol;
        h[10..12].fill(0);
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::internet(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        Ok(MIN_HEADER_LEN)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// 10.0.1.10 → 10.0.2.20, ICMP, ttl 64, id 0x1234, DF, 4 payload bytes.
    static ICMP_PACKET: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 10, 0, 1, 10, 10, 0, 2, 20, 0x08, 0x00,
        0xf7, 0xff,
    ];

    #[test]
    fn test_parse() {
        let p = Packet::parse(&ICMP_PACKET, false).unwrap();
        assert_eq!(p.header_len, 20);
        assert_eq!((p.total_len, p.ident, p.ttl, p.protocol), (24, 0x1234, 64, PROTO_ICMP));
        assert_eq!((p.src, p.dst), (Ipv4Addr::new(10, 0, 1, 10), Ipv4Addr::new(10, 0, 2, 20)));
        assert!(!p.is_fragment());
        assert_eq!(p.payload, &ICMP_PACKET[20..]);
    }

    #[test]
    fn test_emit() {
        let p = Packet::parse(&ICMP_PACKET, false).unwrap();
        let r = Repr { src: p.src, dst: p.dst, protocol: p.protocol, ttl: 64, tos: 0, ident: 0x1234, payload_len: 4 };
        let mut out = [0u8; 20];
        r.emit(&mut out).unwrap();
        // Our emitter clears DF; apart from that and the checksum it is the fixture.
        let mut expect = ICMP_PACKET;
        expect[6] = 0;
        assert_eq!(out[..10], expect[..10]);
        assert_eq!(out[12..], expect[12..20]);
        assert_eq!(checksum::internet(&out), 0);
    }

    #[test]
    fn padding_is_trimmed_and_gso_keeps_all() {
        let mut padded = [0u8; 30];
        padded[..24].copy_from_slice(&ICMP_PACKET);
        assert_eq!(Packet::parse(&padded, false).unwrap().payload.len(), 4);
        let mut gso = padded;
        gso[2..4].fill(0); // BIG TCP style total length
        assert!(Packet::parse(&gso, false).is_err());
        assert_eq!(Packet::parse(&gso, true).unwrap().payload.len(), 10);
    }

    #[test]
    fn malformed() {
        assert!(Packet::parse(&ICMP_PACKET[..19], false).is_err());
        let mut v6 = ICMP_PACKET;
        v6[0] = 0x65;
        assert!(Packet::parse(&v6, false).is_err());
        let mut ihl4 = ICMP_PACKET;
        ihl4[0] = 0x44;
        assert_eq!(Packet::parse(&ihl4, false), Err(Malformed("ipv4 IHL below 5")));
        let mut ihl15 = ICMP_PACKET;
        ihl15[0] = 0x4f;
        assert_eq!(Packet::parse(&ihl15, false), Err(Malformed("ipv4 IHL beyond the packet")));
        let mut long = ICMP_PACKET;
        long[3] = 0x40;
        assert!(Packet::parse(&long, false).is_err());
        let mut short = ICMP_PACKET;
        short[3] = 0x10;
        assert!(Packet::parse(&short, false).is_err());
    }

    #[test]
    fn fragments() {
        let mut mf = ICMP_PACKET;
        mf[6] = 0x20;
        assert!(Packet::parse(&mf, false).unwrap().is_fragment());
        let mut later = ICMP_PACKET;
        later[7] = 0x01;
        assert!(Packet::parse(&later, false).unwrap().is_fragment());
    }
}
