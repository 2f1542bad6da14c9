//! What the relay does to one frame, on the relay's own buffers, without syscalls: Geneve
//! encapsulation of a frame read from a TAP (with the userspace VLAN push decided by
//! [`crate::vlan`]), and decapsulation of a datagram from the fabric (with the VLAN pop of
//! Terway's untagger).
//!
//! Buffer layout on the way out. A TAP read puts the 10-byte virtio-net header in a small array
//! of its own and the frame at offset [`HEADROOM`] of the slot; the Geneve header (fixed 24
//! bytes: 8 + the 16-byte virtio-net option) is then written right in front of the frame, so the
//! datagram is one contiguous slice and nothing is copied but 12 MAC bytes when a tag is pushed:
//!
//! ```text
//! untagged: [ 4 spare ][ Geneve 24 ][ dst src | type | payload … ]
//! tagged:   [ Geneve 24 ][ dst src | 8100 TCI | type | payload … ]
//! ```
//!
//! The virtio-net header always travels in the Geneve option (all zero for a plain frame), and
//! its `csum_start`/`hdr_len` move by ±4 with the tag, so TSO super-frames and partial
//! checksums cross the fabric intact (ARCHITECTURE.md §3).

use std::ops::Range;

use enifab_net::Vni;
use enifab_net::wire::geneve::{self, Header};
use enifab_net::wire::vlan::{self, TAG_LEN, Tci};
use enifab_net::wire::vnet::VnetHdr;

use super::stats::DropReason;
use crate::vlan::{Egress, MemberTable, classify_trunk_egress};

/// Geneve header with the virtio-net option, as the shim always writes it.
pub const GENEVE_LEN: usize = geneve::MAX_EMIT_LEN;
/// Where a TAP read puts the frame in a slot: room for the Geneve header and one pushed tag.
pub const HEADROOM: usize = GENEVE_LEN + TAG_LEN;
/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// Largest frame a TAP hands out (a 64 KiB GSO super-frame and its Ethernet header), with margin.
pub const MAX_FRAME: usize = 65_536 + 64;
/// One relay buffer.
pub const SLOT_LEN: usize = HEADROOM + MAX_FRAME;

/// How frames from one device are tagged on their way out.
#[derive(Debug, Clone, Copy)]
pub enum EgressRule<'a> {
    /// A NIC without members: frames go as they are.
    Plain,
    /// The trunk NIC: Terway's classifier by source address.
    Trunk(&'a MemberTable),
    /// A member's VLAN sub-interface device: every frame gets this tag.
    Tag(Tci),
}

/// The datagram to send, inside the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encapsulated {
    pub datagram: Range<usize>,
    /// The tag pushed, if any.
    pub pushed: Option<Tci>,
}

/// Encapsulates the frame at `slot[HEADROOM..HEADROOM + frame_len]` for port `vni`.
pub fn encapsulate(
    slot: &mut [u8],
    frame_len: usize,
    mut vnet: VnetHdr,
    vni: Vni,
    rule: EgressRule<'_>,
) -> Result<Encapsulated, DropReason> {
    let end = HEADROOM.checked_add(frame_len).filter(|e| *e <= slot.len()).ok_or(DropReason::Oversize)?;
    let frame = &slot[HEADROOM..end];
    let tag = match rule {
        EgressRule::Plain => None,
        EgressRule::Trunk(members) => match classify_trunk_egress(frame, members) {
            Egress::Pass => None,
            Egress::Push(t) => Some(t),
        },
        EgressRule::Tag(t) => {
            if vlan::tag_of(frame).is_some() {
                return Err(DropReason::TaggedOnVlanDevice);
            }
            Some(t)
        }
    };
    let start = match tag {
        None => HEADROOM,
        Some(t) => vlan::push_headroom(slot, HEADROOM, frame_len, t, &mut vnet).map_err(|_| DropReason::VlanPush)?,
    };
    let dgram_start = start - GENEVE_LEN;
    if end - dgram_start > MAX_DATAGRAM {
        return Err(DropReason::Oversize);
    }
    let header = Header { vni, oam: false, vnet: Some(vnet) };
    header.emit(&mut slot[dgram_start..start]).map_err(|_| DropReason::Oversize)?;
    Ok(Encapsulated { datagram: dgram_start..end, pushed: tag })
}

/// A datagram from the fabric, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decapsulated {
    pub vni: Vni,
    /// The header to write in front of the frame on the TAP (zero when the option was absent).
    pub vnet: VnetHdr,
    /// The Ethernet frame inside the datagram.
    pub frame: Range<usize>,
}

/// Parses the Geneve header of `datagram`.
pub fn decapsulate(datagram: &[u8]) -> Result<Decapsulated, DropReason> {
    let (h, payload) = Header::parse(datagram).map_err(|_| DropReason::Geneve)?;
    if h.oam {
        return Err(DropReason::Oam);
    }
    let start = datagram.len() - payload.len();
    Ok(Decapsulated { vni: h.vni, vnet: h.vnet.unwrap_or_default(), frame: start..datagram.len() })
}

/// Pops the frame's 802.1Q tag in place if it has one (moving the MACs over it and shifting the
/// vnet offsets), and returns its VLAN id; an untagged frame is left alone.
pub fn untag(datagram: &mut [u8], d: &mut Decapsulated) -> Result<Option<u16>, DropReason> {
    let frame = &mut datagram[d.frame.clone()];
    if vlan::tag_of(frame).is_none() {
        return Ok(None);
    }
    let tci = vlan::pop_headroom(frame, &mut d.vnet).map_err(|_| DropReason::VlanPop)?;
    d.frame.start += TAG_LEN;
    Ok(Some(tci.vid()))
}

/// What the receiving kernel's `virtio_net_hdr_to_skb` would refuse, refused here with a reason.
pub fn check_vnet(d: &Decapsulated) -> Result<(), DropReason> {
    d.vnet.check_frame(d.frame.len()).map_err(|_| DropReason::BadVnet)
}

#[cfg(test)]
mod test {
    use enifab_net::wire::vnet;

    use super::*;
    use crate::vlan::test::{ARP_FROM_MEMBER, IPV4_FROM_MEMBER, members};

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap()
    }

    /// A TCPv4 TSO header for a frame whose L4 starts at 34: csum at 34+16, headers 66 bytes.
    fn tso() -> VnetHdr {
        VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: vnet::GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    fn slot_with(frame: &[u8]) -> Vec<u8> {
        let mut s = vec![0xaa; HEADROOM + frame.len() + 8];
        s[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        s
    }

    #[test]
    fn plain_nic_frame_is_encapsulated_as_is() {
        let mut s = slot_with(&IPV4_FROM_MEMBER);
        let e = encapsulate(&mut s, IPV4_FROM_MEMBER.len(), VnetHdr::PLAIN, vni(10), EgressRule::Plain).unwrap();
        assert_eq!(e.pushed, None);
        assert_eq!(e.datagram, TAG_LEN..HEADROOM + IPV4_FROM_MEMBER.len());
        let d = &s[e.datagram];
        let (h, inner) = Header::parse(d).unwrap();
        assert_eq!((h.vni, h.oam, h.vnet), (vni(10), false, Some(VnetHdr::PLAIN)));
        assert_eq!(inner, &IPV4_FROM_MEMBER);
    }

    #[test]
    fn trunk_frame_from_member_ip_is_tagged_and_vnet_shifted() {
        let t = members();
        let mut s = slot_with(&IPV4_FROM_MEMBER);
        let e = encapsulate(&mut s, IPV4_FROM_MEMBER.len(), tso(), vni(11), EgressRule::Trunk(&t)).unwrap();
        assert_eq!(e.pushed.map(|t| t.vid()), Some(5));
        assert_eq!(e.datagram.start, 0);
        let (h, inner) = Header::parse(&s[e.datagram]).unwrap();
        assert_eq!(h.vni, vni(11));
        let v = h.vnet.unwrap();
        assert_eq!((v.csum_start, v.hdr_len, v.csum_offset, v.gso_size), (38, 70, 16, 1448));
        assert_eq!(&inner[..12], &IPV4_FROM_MEMBER[..12]);
        assert_eq!(&inner[12..16], &[0x81, 0x00, 0x00, 0x05]);
        assert_eq!(&inner[16..], &IPV4_FROM_MEMBER[12..]);
    }

    #[test]
    fn trunk_arp_from_member_is_tagged() {
        let t = members();
        let mut s = slot_with(&ARP_FROM_MEMBER);
        let e = encapsulate(&mut s, ARP_FROM_MEMBER.len(), VnetHdr::PLAIN, vni(11), EgressRule::Trunk(&t)).unwrap();
        assert_eq!(e.pushed.map(|t| t.vid()), Some(5));
        let (h, inner) = Header::parse(&s[e.datagram]).unwrap();
        assert_eq!(h.vnet, Some(VnetHdr::PLAIN), "a plain header stays plain across a push");
        assert_eq!(&inner[12..18], &[0x81, 0x00, 0x00, 0x05, 0x08, 0x06]);
    }

    #[test]
    fn trunk_frame_from_non_member_or_tagged_is_untouched() {
        let t = members();
        let mut own = IPV4_FROM_MEMBER;
        own[26..30].copy_from_slice(&[10, 0, 4, 23]);
        let mut s = slot_with(&own);
        let e = encapsulate(&mut s, own.len(), tso(), vni(11), EgressRule::Trunk(&t)).unwrap();
        assert_eq!(e.pushed, None);
        let (h, inner) = Header::parse(&s[e.datagram]).unwrap();
        assert_eq!((h.vnet, inner), (Some(tso()), &own[..]));

        let mut tagged = IPV4_FROM_MEMBER[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x09]);
        tagged.extend_from_slice(&IPV4_FROM_MEMBER[12..]);
        let mut s = slot_with(&tagged);
        let e = encapsulate(&mut s, tagged.len(), VnetHdr::PLAIN, vni(11), EgressRule::Trunk(&t)).unwrap();
        assert_eq!(e.pushed, None);
        assert_eq!(Header::parse(&s[e.datagram]).unwrap().1, &tagged[..]);
    }

    #[test]
    fn vlan_device_frames_always_get_the_member_tag() {
        let tag = Tci::from_vid(7).unwrap();
        let mut s = slot_with(&IPV4_FROM_MEMBER);
        let e = encapsulate(&mut s, IPV4_FROM_MEMBER.len(), tso(), vni(11), EgressRule::Tag(tag)).unwrap();
        assert_eq!(e.pushed, Some(tag));
        let (_, inner) = Header::parse(&s[e.datagram]).unwrap();
        assert_eq!(&inner[12..16], &[0x81, 0x00, 0x00, 0x07]);
        // Already tagged: refused, not double-tagged.
        let mut s = slot_with(inner);
        let len = inner.len();
        assert_eq!(
            encapsulate(&mut s, len, VnetHdr::PLAIN, vni(11), EgressRule::Tag(tag)),
            Err(DropReason::TaggedOnVlanDevice)
        );
    }

    #[test]
    fn runt_or_oversize_frames_are_dropped() {
        let tag = Tci::from_vid(7).unwrap();
        let mut s = slot_with(&IPV4_FROM_MEMBER[..8]);
        assert_eq!(encapsulate(&mut s, 8, VnetHdr::PLAIN, vni(1), EgressRule::Tag(tag)), Err(DropReason::VlanPush));
        let big = vec![0u8; MAX_DATAGRAM - GENEVE_LEN + 1];
        let mut s = slot_with(&big);
        assert_eq!(
            encapsulate(&mut s, big.len(), VnetHdr::PLAIN, vni(1), EgressRule::Plain),
            Err(DropReason::Oversize)
        );
        let fits = vec![0u8; MAX_DATAGRAM - GENEVE_LEN];
        let mut s = slot_with(&fits);
        assert!(encapsulate(&mut s, fits.len(), VnetHdr::PLAIN, vni(1), EgressRule::Plain).is_ok());
        let whole = s.len();
        assert_eq!(encapsulate(&mut s, whole, VnetHdr::PLAIN, vni(1), EgressRule::Plain), Err(DropReason::Oversize));
    }

    /// What the fabric delivers to a member: tagged with its VLAN, TSO offsets counted with the tag.
    fn tagged_datagram(vid: u8) -> Vec<u8> {
        let mut frame = IPV4_FROM_MEMBER[..12].to_vec();
        frame.extend_from_slice(&[0x81, 0x00, 0x00, vid]);
        frame.extend_from_slice(&IPV4_FROM_MEMBER[12..]);
        frame.extend_from_slice(&[0u8; 20]); // TCP header room so the csum offset fits
        let mut v = tso();
        v.shift(4).unwrap();
        let h = Header { vni: vni(11), oam: false, vnet: Some(v) };
        let mut d = vec![0u8; GENEVE_LEN + frame.len()];
        geneve::encapsulate(&h, &frame, &mut d).unwrap();
        d
    }

    #[test]
    fn ingress_pop_restores_the_untagged_frame_and_offsets() {
        let mut d = tagged_datagram(5);
        let mut x = decapsulate(&d).unwrap();
        assert_eq!(x.vni, vni(11));
        assert_eq!(x.vnet.csum_start, 38);
        assert_eq!(untag(&mut d, &mut x), Ok(Some(5)));
        assert_eq!(x.vnet, tso());
        let frame = &d[x.frame.clone()];
        assert_eq!(&frame[..IPV4_FROM_MEMBER.len()], &IPV4_FROM_MEMBER);
        assert_eq!(check_vnet(&x), Ok(()));
    }

    #[test]
    fn ingress_untagged_frame_is_left_alone() {
        let h = Header { vni: vni(10), oam: false, vnet: None };
        let mut d = vec![0u8; 8 + IPV4_FROM_MEMBER.len()];
        geneve::encapsulate(&h, &IPV4_FROM_MEMBER, &mut d).unwrap();
        let mut x = decapsulate(&d).unwrap();
        assert_eq!(x.vnet, VnetHdr::PLAIN, "absent option = plain frame");
        assert_eq!(untag(&mut d, &mut x), Ok(None));
        assert_eq!(&d[x.frame], &IPV4_FROM_MEMBER);
    }

    #[test]
    fn ingress_refusals() {
        assert_eq!(decapsulate(&[0u8; 7]), Err(DropReason::Geneve));
        let mut oam = tagged_datagram(5);
        oam[1] = 0x80;
        assert_eq!(decapsulate(&oam), Err(DropReason::Oam));
        // csum_start 16 after a pop would point into the MACs: refuse instead of corrupting.
        let mut d = tagged_datagram(5);
        let mut x = decapsulate(&d).unwrap();
        x.vnet.csum_start = 3;
        assert_eq!(untag(&mut d, &mut x), Err(DropReason::VlanPop));
        let mut x = decapsulate(&tagged_datagram(5)).unwrap();
        x.frame.end = x.frame.start + 40; // checksum field beyond the frame
        assert_eq!(check_vnet(&x), Err(DropReason::BadVnet));
    }
}
