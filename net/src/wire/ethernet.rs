//! Ethernet II with at most one IEEE 802.1Q tag: the inner frame of every Geneve packet.
//!
//! A trunk ENI's wire carries its members as 802.1Q VLANs (TPID 0x8100, VID = the member's
//! `DeviceIndex`). Alibaba's trunking uses a single C-tag, so stacked tags (QinQ: an inner
//! 0x8100/0x88a8) and the S-tag TPIDs are reported as [`L2Error::Tpid`] for the caller to drop;
//! no MAC-address policy lives here.

use super::vlan::Tci;
use super::{BufferTooSmall, Malformed, check_room};

pub use crate::mac::Mac;

pub const HEADER_LEN: usize = 14;
pub const TAGGED_HEADER_LEN: usize = 18;

/// [`Mac::GATEWAY`] under the name the pipeline's many call sites use.
pub const GATEWAY_MAC: Mac = Mac::GATEWAY;
pub const BROADCAST: Mac = Mac::BROADCAST;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Pre-standard S-tag TPIDs some switches still emit.
const LEGACY_STAG: [u16; 2] = [0x9100, 0x9200];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L2Error {
    /// Shorter than the untagged header.
    Ethernet(Malformed),
    /// Carries a 0x8100 tag but is cut inside it.
    Vlan(Malformed),
    /// Stacked or service tag: a TPID enifab does not carry.
    Tpid(u16),
}

/// A checked view of an Ethernet frame's header and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub dst: Mac,
    pub src: Mac,
    pub tag: Option<Tci>,
    /// The EtherType after the tag, if any.
    pub ethertype: u16,
    /// 14 or 18.
    pub header_len: usize,
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Frame<'a>, L2Error> {
        if buf.len() < HEADER_LEN {
            return Err(L2Error::Ethernet(Malformed("ethernet header truncated")));
        }
        let mut dst = Mac::default();
        let mut src = Mac::default();
        dst.0.copy_from_slice(&buf[0..6]);
        src.0.copy_from_slice(&buf[6..12]);
        let outer = u16::from_be_bytes([buf[12], buf[13]]);
        if outer == ETHERTYPE_QINQ || LEGACY_STAG.contains(&outer) {
            return Err(L2Error::Tpid(outer));
        }
        if outer != ETHERTYPE_VLAN {
            return Ok(Frame {
                dst,
                src,
                tag: None,
                ethertype: outer,
                header_len: HEADER_LEN,
                payload: &buf[HEADER_LEN..],
            });
        }
        if buf.len() < TAGGED_HEADER_LEN {
            return Err(L2Error::Vlan(Malformed("802.1Q tag truncated")));
        }
        let tci = Tci(u16::from_be_bytes([buf[14], buf[15]]));
        let inner = u16::from_be_bytes([buf[16], buf[17]]);
        if inner == ETHERTYPE_VLAN || inner == ETHERTYPE_QINQ || LEGACY_STAG.contains(&inner) {
            return Err(L2Error::Tpid(inner));
        }
        Ok(Frame {
            dst,
            src,
            tag: Some(tci),
            ethertype: inner,
            header_len: TAGGED_HEADER_LEN,
            payload: &buf[TAGGED_HEADER_LEN..],
        })
    }
}

/// Writes an Ethernet header (with a 0x8100 tag when `tag` is set) and returns its length.
#[inline]
pub fn emit_header(
    dst: Mac,
    src: Mac,
    tag: Option<Tci>,
    ethertype: u16,
    buf: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let len = if tag.is_some() { TAGGED_HEADER_LEN } else { HEADER_LEN };
    check_room(buf, len)?;
    buf[0..6].copy_from_slice(&dst.0);
    buf[6..12].copy_from_slice(&src.0);
    let mut at = 12;
    if let Some(t) = tag {
        buf[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        buf[14..16].copy_from_slice(&t.0.to_be_bytes());
        at = 16;
    }
    buf[at..at + 2].copy_from_slice(&ethertype.to_be_bytes());
    Ok(len)
}

#[cfg(test)]
mod test {
    use super::*;

    /// ee:ff:ff:ff:ff:ff ← 00:16:3e:00:00:01, VLAN 5 (PCP 3), IPv4, 2 payload bytes.
    static TAGGED: [u8; 20] = [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 0x81, 0x00, 0x60, 0x05, 0x08, 0x00,
        0xab, 0xcd,
    ];

    #[test]
    fn test_parse_tagged() {
        let f = Frame::parse(&TAGGED).unwrap();
        assert_eq!(f.dst, GATEWAY_MAC);
        assert_eq!(f.src, [0x00, 0x16, 0x3e, 0, 0, 1]);
        assert_eq!(f.tag.map(|t| (t.vid(), t.pcp())), Some((5, 3)));
        assert_eq!((f.ethertype, f.header_len, f.payload), (ETHERTYPE_IPV4, 18, &[0xab, 0xcd][..]));
    }

    #[test]
    fn test_emit_tagged() {
        let f = Frame::parse(&TAGGED).unwrap();
        let mut out = [0u8; 20];
        let n = emit_header(f.dst, f.src, f.tag, f.ethertype, &mut out).unwrap();
        out[n..].copy_from_slice(f.payload);
        assert_eq!(out, TAGGED);
        assert!(emit_header(f.dst, f.src, f.tag, f.ethertype, &mut [0; 17]).is_err());
    }

    #[test]
    fn untagged_and_truncations() {
        let mut untagged = [0u8; 14];
        untagged[12..14].copy_from_slice(&[0x08, 0x06]);
        let f = Frame::parse(&untagged).unwrap();
        assert_eq!((f.tag, f.ethertype, f.payload.len()), (None, ETHERTYPE_ARP, 0));
        assert!(matches!(Frame::parse(&untagged[..13]), Err(L2Error::Ethernet(_))));
        assert!(matches!(Frame::parse(&TAGGED[..17]), Err(L2Error::Vlan(_))));
    }

    #[test]
    fn stacked_and_service_tags() {
        let mut qinq = TAGGED;
        qinq[16..18].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(Frame::parse(&qinq), Err(L2Error::Tpid(0x8100)));
        let mut stag = TAGGED;
        stag[12..14].copy_from_slice(&[0x88, 0xa8]);
        assert_eq!(Frame::parse(&stag), Err(L2Error::Tpid(0x88a8)));
    }
}
