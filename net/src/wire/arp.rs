//! ARP for IPv4 over Ethernet (RFC 826), the only kind a VPC answers.
//!
//! The fabric is a proxy-ARP gateway: every request gets `ee:ff:ff:ff:ff:ff` back, whatever the
//! target (Alibaba Cloud VPC behaviour, reference §9.2). This module only reads and writes the
//! 28-byte packet; deciding whom to answer is the pipeline's job. Other hardware or protocol
//! types are reported as unsupported, not as malformed, so the drop reason says what happened.

use core::net::Ipv4Addr;

use super::ethernet::Mac;
use super::{BufferTooSmall, Malformed, check_room, ipv4_at};

pub const LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpError {
    Malformed(Malformed),
    /// Well formed but not Ethernet/IPv4, or an operation other than request/reply.
    Unsupported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub operation: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl Repr {
    /// Parses the first 28 bytes; Ethernet padding after them is ignored.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Repr, ArpError> {
        let b = buf.get(..LEN).ok_or(ArpError::Malformed(Malformed("arp packet truncated")))?;
        let htype = u16::from_be_bytes([b[0], b[1]]);
        let ptype = u16::from_be_bytes([b[2], b[3]]);
        let operation = u16::from_be_bytes([b[6], b[7]]);
        if htype != HTYPE_ETHERNET || ptype != PTYPE_IPV4 || b[4] != 6 || b[5] != 4 {
            return Err(ArpError::Unsupported);
        }
        if operation != OP_REQUEST && operation != OP_REPLY {
            return Err(ArpError::Unsupported);
        }
        let mut sender_mac = Mac::default();
        let mut target_mac = Mac::default();
        sender_mac.0.copy_from_slice(&b[8..14]);
        target_mac.0.copy_from_slice(&b[18..24]);
        let unspecified = Ipv4Addr::UNSPECIFIED;
        Ok(Repr {
            operation,
            sender_mac,
            sender_ip: ipv4_at(b, 14).unwrap_or(unspecified),
            target_mac,
            target_ip: ipv4_at(b, 24).unwrap_or(unspecified),
        })
    }

    /// RFC 5227 probe: "who has X?" from a host that has no address yet (sender 0.0.0.0).
    #[inline]
    pub fn is_probe(&self) -> bool {
        self.operation == OP_REQUEST && self.sender_ip.is_unspecified()
    }

    /// Gratuitous ARP / RFC 5227 announcement: a host advertising its own address.
    #[inline]
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// The answer a proxy-ARP gateway with MAC `mac` gives to this request.
    #[inline]
    pub fn reply_from(&self, mac: Mac) -> Repr {
        Repr {
            operation: OP_REPLY,
            sender_mac: mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        check_room(buf, LEN)?;
        buf[0..2].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        buf[2..4].copy_from_slice(&PTYPE_IPV4.to_be_bytes());
        buf[4] = 6;
        buf[5] = 4;
        buf[6..8].copy_from_slice(&self.operation.to_be_bytes());
        buf[8..14].copy_from_slice(&self.sender_mac.0);
        buf[14..18].copy_from_slice(&self.sender_ip.octets());
        buf[18..24].copy_from_slice(&self.target_mac.0);
        buf[24..28].copy_from_slice(&self.target_ip.octets());
        Ok(LEN)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::ethernet::GATEWAY_MAC;

    /// Who has 10.0.1.253? Tell 10.0.1.10 (00:16:3e:00:00:01).
    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet, IPv4, 6, 4, request
        0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 10, 0, 1, 10, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 1, 253, // target
    ];
    /// 10.0.1.253 is at ee:ff:ff:ff:ff:ff.
    static REPLY: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, //
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 10, 0, 1, 253, //
        0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 10, 0, 1, 10,
    ];

    fn request() -> Repr {
        Repr {
            operation: OP_REQUEST,
            sender_mac: Mac([0x00, 0x16, 0x3e, 0, 0, 1]),
            sender_ip: Ipv4Addr::new(10, 0, 1, 10),
            target_mac: Mac([0; 6]),
            target_ip: Ipv4Addr::new(10, 0, 1, 253),
        }
    }

    #[test]
    fn test_parse() {
        assert_eq!(Repr::parse(&REQUEST), Ok(request()));
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&REQUEST);
        assert_eq!(Repr::parse(&padded), Ok(request()));
    }

    #[test]
    fn test_emit_reply() {
        let mut out = [0u8; 28];
        assert_eq!(request().reply_from(GATEWAY_MAC).emit(&mut out), Ok(28));
        assert_eq!(out, REPLY);
        assert!(Repr::parse(&REPLY).unwrap().emit(&mut [0; 27]).is_err());
    }

    #[test]
    fn kinds() {
        let r = request();
        assert!(!r.is_probe() && !r.is_gratuitous());
        assert!(Repr { sender_ip: Ipv4Addr::UNSPECIFIED, ..r }.is_probe());
        assert!(Repr { target_ip: r.sender_ip, ..r }.is_gratuitous());
    }

    #[test]
    fn refused() {
        assert!(matches!(Repr::parse(&REQUEST[..27]), Err(ArpError::Malformed(_))));
        let mut ipv6 = REQUEST;
        ipv6[2..4].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(Repr::parse(&ipv6), Err(ArpError::Unsupported));
        let mut rarp = REQUEST;
        rarp[7] = 3;
        assert_eq!(Repr::parse(&rarp), Err(ArpError::Unsupported));
    }
}
