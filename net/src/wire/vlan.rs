//! IEEE 802.1Q tag control information and the push/pop helpers for byte buffers.
//!
//! These helpers are what a node shim uses for userspace VLAN emulation on kernels without
//! 802.1Q/act_vlan (Terway's tc `vlan push id <DeviceIndex>` on egress, "pop any tag" on
//! ingress), and what the fabric's rewrite step mirrors. Every push/pop also moves the frame's
//! `virtio_net_hdr` offsets by ±4 so that a GSO super-frame's partial checksum stays pointed at
//! the right bytes. They refuse rather than guess: pushing onto a tagged frame or popping an
//! untagged one is an error the caller decides about (a shim passes already-tagged frames
//! through untouched).

use core::fmt;

use super::ethernet::{ETHERTYPE_VLAN, HEADER_LEN};
use super::vnet::VnetHdr;
use super::{BufferTooSmall, Malformed};

pub const TAG_LEN: usize = 4;
/// Highest usable VID; 0 means "priority tag only" and 4095 is reserved (802.1Q Table 9-2).
pub const MAX_VID: u16 = 4094;

/// Tag Control Information: PCP (3 bits), DEI (1), VID (12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tci(pub u16);

impl Tci {
    /// A tag for `vid` with PCP 0; `None` outside 1..=4094, which no member ENI can have.
    pub const fn from_vid(vid: u16) -> Option<Tci> {
        if vid >= 1 && vid <= MAX_VID { Some(Tci(vid)) } else { None }
    }

    pub const fn vid(self) -> u16 {
        self.0 & 0x0fff
    }

    pub const fn pcp(self) -> u8 {
        (self.0 >> 13) as u8
    }

    pub const fn dei(self) -> bool {
        self.0 & 0x1000 != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlanError {
    /// Not even an Ethernet header (or, for pop, not a whole tag).
    Truncated,
    /// `push` on a frame that already has a 0x8100 tag.
    AlreadyTagged,
    /// `pop` on a frame without a 0x8100 tag.
    NotTagged,
    BufferTooSmall(BufferTooSmall),
    /// The virtio-net offsets cannot move by 4 (they pointed into the tag or overflowed).
    Vnet(Malformed),
}

impl fmt::Display for VlanError {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VlanError::Truncated => f.write_str("frame too short"),
            VlanError::AlreadyTagged => f.write_str("frame already carries an 802.1Q tag"),
            VlanError::NotTagged => f.write_str("frame carries no 802.1Q tag"),
            VlanError::BufferTooSmall(e) => e.fmt(f),
            VlanError::Vnet(e) => e.fmt(f),
        }
    }
}

/// The 802.1Q tag of `frame`, if it has one.
#[inline]
pub fn tag_of(frame: &[u8]) -> Option<Tci> {
    if frame.len() >= HEADER_LEN + TAG_LEN && frame[12..14] == ETHERTYPE_VLAN.to_be_bytes() {
        Some(Tci(u16::from_be_bytes([frame[14], frame[15]])))
    } else {
        None
    }
}

#[inline]
fn shifted(vnet: &VnetHdr, delta: i32) -> Result<VnetHdr, VlanError> {
    let mut v = *vnet;
    v.shift(delta).map_err(VlanError::Vnet)?;
    Ok(v)
}

#[inline]
fn check_push(frame: &[u8]) -> Result<(), VlanError> {
    if frame.len() < HEADER_LEN {
        Err(VlanError::Truncated)
    } else if tag_of(frame).is_some() {
        Err(VlanError::AlreadyTagged)
    } else {
        Ok(())
    }
}

#[inline]
fn check_pop(frame: &[u8]) -> Result<Tci, VlanError> {
    if frame.len() < HEADER_LEN {
        return Err(VlanError::Truncated);
    }
    if frame[12..14] != ETHERTYPE_VLAN.to_be_bytes() {
        return Err(VlanError::NotTagged);
    }
    tag_of(frame).ok_or(VlanError::Truncated)
}

#[inline]
fn write_tag(at: &mut [u8], tci: Tci) {
    at[0..2].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
    at[2..4].copy_from_slice(&tci.0.to_be_bytes());
}

/// Tags the frame in `buf[..len]` in place (moving everything after the MACs right by 4) and
/// returns the new length. `buf` needs 4 spare bytes.
#[inline]
pub fn push_in_place(buf: &mut [u8], len: usize, tci: Tci, vnet: &mut VnetHdr) -> Result<usize, VlanError> {
    let frame = buf.get(..len).ok_or(VlanError::Truncated)?;
    check_push(frame)?;
    if buf.len() < len + TAG_LEN {
        return Err(VlanError::BufferTooSmall(BufferTooSmall { needed: len + TAG_LEN, available: buf.len() }));
    }
    let v = shifted(vnet, TAG_LEN as i32)?;
    buf.copy_within(12..len, 12 + TAG_LEN);
    write_tag(&mut buf[12..16], tci);
    *vnet = v;
    Ok(len + TAG_LEN)
}

/// Untags the frame in `buf[..len]` in place (moving everything after the tag left by 4) and
/// returns the tag and the new length.
#[inline]
pub fn pop_in_place(buf: &mut [u8], len: usize, vnet: &mut VnetHdr) -> Result<(Tci, usize), VlanError> {
    let frame = buf.get(..len).ok_or(VlanError::Truncated)?;
    let tci = check_pop(frame)?;
    let v = shifted(vnet, -(TAG_LEN as i32))?;
    buf.copy_within(12 + TAG_LEN..len, 12);
    *vnet = v;
    Ok((tci, len - TAG_LEN))
}

/// Tags the frame at `buf[start..start + len]` by moving only its 12 MAC bytes 4 bytes to the
/// left, into headroom the caller left in front of it (for example by reading from the TAP at
/// offset 4). Returns the new start; the tagged frame is `buf[new_start..start + len]`.
#[inline]
pub fn push_headroom(
    buf: &mut [u8],
    start: usize,
    len: usize,
    tci: Tci,
    vnet: &mut VnetHdr,
) -> Result<usize, VlanError> {
    let end = start.checked_add(len).ok_or(VlanError::Truncated)?;
    let frame = buf.get(start..end).ok_or(VlanError::Truncated)?;
    check_push(frame)?;
    let new_start = start
        .checked_sub(TAG_LEN)
        .ok_or(VlanError::BufferTooSmall(BufferTooSmall { needed: TAG_LEN, available: start }))?;
    let v = shifted(vnet, TAG_LEN as i32)?;
    buf.copy_within(start..start + 12, new_start);
    write_tag(&mut buf[new_start + 12..new_start + 16], tci);
    *vnet = v;
    Ok(new_start)
}

/// Untags `frame` by moving only its 12 MAC bytes 4 bytes to the right, over the tag. Returns
/// the tag; the untagged frame is `frame[TAG_LEN..]`.
#[inline]
pub fn pop_headroom(frame: &mut [u8], vnet: &mut VnetHdr) -> Result<Tci, VlanError> {
    let tci = check_pop(frame)?;
    let v = shifted(vnet, -(TAG_LEN as i32))?;
    frame.copy_within(0..12, TAG_LEN);
    *vnet = v;
    Ok(tci)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::vnet;

    /// 00:16:3e:00:00:02 ← 00:16:3e:00:00:01, IPv4, 4 payload bytes.
    static UNTAGGED: [u8; 18] =
        [0x00, 0x16, 0x3e, 0x00, 0x00, 0x02, 0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 0x08, 0x00, 0xde, 0xad, 0xbe, 0xef];
    /// The same frame tagged with VID 1001 (0x3e9).
    static TAGGED_1001: [u8; 22] = [
        0x00, 0x16, 0x3e, 0x00, 0x00, 0x02, 0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 0x81, 0x00, 0x03, 0xe9, 0x08, 0x00,
        0xde, 0xad, 0xbe, 0xef,
    ];

    fn csum_hdr(start: u16) -> VnetHdr {
        VnetHdr { flags: vnet::F_NEEDS_CSUM, csum_start: start, csum_offset: 16, hdr_len: 54, ..VnetHdr::PLAIN }
    }

    #[test]
    fn tci_fields() {
        let t = Tci(0b1011_0000_0000_0111);
        assert_eq!((t.pcp(), t.dei(), t.vid()), (5, true, 7));
        assert_eq!(Tci::from_vid(0), None);
        assert_eq!(Tci::from_vid(4095), None);
        assert_eq!(Tci::from_vid(4094), Some(Tci(4094)));
    }

    #[test]
    fn push_and_pop_in_place() {
        let mut buf = [0u8; 22];
        buf[..18].copy_from_slice(&UNTAGGED);
        let mut v = csum_hdr(34);
        let n = push_in_place(&mut buf, 18, Tci::from_vid(1001).unwrap(), &mut v).unwrap();
        assert_eq!(&buf[..n], &TAGGED_1001);
        assert_eq!((v.csum_start, v.hdr_len, v.csum_offset), (38, 58, 16));
        let (tci, n) = pop_in_place(&mut buf, n, &mut v).unwrap();
        assert_eq!(tci.vid(), 1001);
        assert_eq!(&buf[..n], &UNTAGGED);
        assert_eq!(v, csum_hdr(34));
    }

    #[test]
    fn push_and_pop_with_headroom() {
        let mut buf = [0u8; 22];
        buf[4..].copy_from_slice(&UNTAGGED);
        let mut v = VnetHdr::PLAIN;
        let start = push_headroom(&mut buf, 4, 18, Tci::from_vid(1001).unwrap(), &mut v).unwrap();
        assert_eq!((start, &buf[..]), (0, &TAGGED_1001[..]));
        assert!(v.is_plain(), "a plain header stays plain");
        let mut frame = TAGGED_1001;
        let mut v = csum_hdr(38);
        assert_eq!(pop_headroom(&mut frame, &mut v).unwrap().vid(), 1001);
        assert_eq!(&frame[TAG_LEN..], &UNTAGGED);
        assert_eq!(v.csum_start, 34);
    }

    #[test]
    fn refusals_leave_everything_unchanged() {
        let mut buf = TAGGED_1001;
        let mut v = csum_hdr(38);
        assert_eq!(push_in_place(&mut buf, 22, Tci(5), &mut v), Err(VlanError::AlreadyTagged));
        let mut buf2 = UNTAGGED;
        assert_eq!(pop_in_place(&mut buf2, 18, &mut v), Err(VlanError::NotTagged));
        assert!(matches!(push_in_place(&mut buf2, 18, Tci(5), &mut v), Err(VlanError::BufferTooSmall(_))));
        assert!(matches!(push_headroom(&mut buf2, 0, 18, Tci(5), &mut v), Err(VlanError::BufferTooSmall(_))));
        assert_eq!(pop_in_place(&mut buf2, 13, &mut v), Err(VlanError::Truncated));
        assert_eq!(pop_in_place(&mut buf2, 40, &mut v), Err(VlanError::Truncated));
        let mut cut = [0u8; 16];
        cut.copy_from_slice(&TAGGED_1001[..16]);
        assert_eq!(pop_headroom(&mut cut, &mut v), Err(VlanError::Truncated));
        let mut bad = VnetHdr { csum_start: 2, ..csum_hdr(2) };
        let mut buf3 = TAGGED_1001;
        assert!(matches!(pop_in_place(&mut buf3, 22, &mut bad), Err(VlanError::Vnet(_))));
        assert_eq!(buf3, TAGGED_1001);
        assert_eq!((v, bad.csum_start), (csum_hdr(38), 2));
        assert_eq!(buf, TAGGED_1001);
        assert_eq!(buf2, UNTAGGED);
    }
}
