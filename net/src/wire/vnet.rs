//! The 10-byte `virtio_net_hdr` that a TAP opened with `IFF_VNET_HDR` puts in front of every
//! frame (virtio 1.2 §5.1.6, `struct virtio_net_hdr` without `num_buffers`), fields little-endian.
//!
//! It is what lets a TSO/GSO super-frame (up to ~64 KB, with only a partial L4 checksum) cross
//! the fabric whole instead of being cut into MTU-sized frames by the sending kernel. The fabric
//! carries it in a Geneve option (see [`super::geneve`]) and only ever *moves* it: when an 802.1Q
//! tag is pushed or popped, the offsets that point into the frame shift by 4. It must never
//! compute or check an L4 checksum on a frame whose header says `NEEDS_CSUM`.

use super::Malformed;

/// Length of the header on the TAP and inside the Geneve option.
pub const LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is partial; the receiver must fold
/// `csum_start..` into the field at `csum_start + csum_offset`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
pub const F_DATA_VALID: u8 = 2;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// Flag bit on `gso_type`, not a type of its own.
pub const GSO_ECN: u8 = 0x80;

/// One parsed `virtio_net_hdr`. All-zero is a plain frame, which is what an absent Geneve option
/// means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub const PLAIN: VnetHdr =
        VnetHdr { flags: 0, gso_type: GSO_NONE, hdr_len: 0, gso_size: 0, csum_start: 0, csum_offset: 0 };

    #[inline]
    pub fn parse(buf: &[u8]) -> Result<VnetHdr, Malformed> {
        let b: &[u8; LEN] =
            buf.get(..LEN).and_then(|b| b.try_into().ok()).ok_or(Malformed("virtio-net header truncated"))?;
        Ok(VnetHdr::from_bytes(b))
    }

    #[inline]
    pub fn from_bytes(b: &[u8; LEN]) -> VnetHdr {
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_le_bytes([b[2], b[3]]),
            gso_size: u16::from_le_bytes([b[4], b[5]]),
            csum_start: u16::from_le_bytes([b[6], b[7]]),
            csum_offset: u16::from_le_bytes([b[8], b[9]]),
        }
    }

    #[inline]
    pub fn to_bytes(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    #[inline]
    pub fn is_plain(&self) -> bool {
        *self == VnetHdr::PLAIN
    }

    #[inline]
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// A segmentation-offload super-frame: its IPv4 total length may be 0 or disagree with the
    /// bytes present, and it may exceed the MTU.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// Moves the offsets that point into the frame by `delta` bytes (+4 after a tag push, −4
    /// after a pop). A zero offset means "unused" in virtio and stays zero; that is also what
    /// makes the shift a no-op for plain frames.
    #[inline]
    pub fn shift(&mut self, delta: i32) -> Result<(), Malformed> {
        #[inline]
        fn moved(v: u16, delta: i32) -> Result<u16, Malformed> {
            if v == 0 {
                return Ok(0);
            }
            u16::try_from(i32::from(v) + delta)
                .ok()
                .filter(|v| *v != 0)
                .ok_or(Malformed("virtio-net offset moves outside the frame"))
        }
        let csum_start = moved(self.csum_start, delta)?;
        let hdr_len = moved(self.hdr_len, delta)?;
        self.csum_start = csum_start;
        self.hdr_len = hdr_len;
        Ok(())
    }

    /// What the receiving kernel's `virtio_net_hdr_to_skb` would refuse: a checksum location
    /// beyond the frame. Checked so that a bad header is dropped here, with a reason, rather
    /// than as an unexplained `EINVAL` on the far node's TAP write.
    #[inline]
    pub fn check_frame(&self, frame_len: usize) -> Result<(), Malformed> {
        if self.needs_csum() {
            let end = usize::from(self.csum_start) + usize::from(self.csum_offset) + 2;
            if end > frame_len {
                return Err(Malformed("virtio-net checksum location beyond the frame"));
            }
        }
        if self.is_gso() && self.gso_size == 0 {
            return Err(Malformed("virtio-net GSO frame with gso_size 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// TCPv4 GSO, NEEDS_CSUM, hdr_len 66, gso_size 1448, csum_start 34 (14 + 20), csum_offset 16.
    static TSO_HDR: [u8; LEN] = [0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00];

    #[test]
    fn test_parse() {
        let h = VnetHdr::parse(&TSO_HDR).unwrap();
        assert_eq!(
            h,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16
            }
        );
        assert!(h.needs_csum() && h.is_gso() && !h.is_plain());
    }

    #[test]
    fn test_emit() {
        assert_eq!(VnetHdr::parse(&TSO_HDR).unwrap().to_bytes(), TSO_HDR);
    }

    #[test]
    fn truncated() {
        assert!(VnetHdr::parse(&TSO_HDR[..9]).is_err());
    }

    #[test]
    fn shift_moves_nonzero_offsets_only() {
        let mut h = VnetHdr::parse(&TSO_HDR).unwrap();
        h.shift(4).unwrap();
        assert_eq!((h.csum_start, h.hdr_len, h.csum_offset), (38, 70, 16));
        h.shift(-4).unwrap();
        assert_eq!(h, VnetHdr::parse(&TSO_HDR).unwrap());
        let mut plain = VnetHdr::PLAIN;
        plain.shift(-4).unwrap();
        assert!(plain.is_plain());
    }

    #[test]
    fn shift_refuses_to_underflow() {
        let mut h = VnetHdr { csum_start: 3, flags: F_NEEDS_CSUM, ..VnetHdr::PLAIN };
        assert!(h.shift(-4).is_err());
        assert_eq!(h.csum_start, 3, "a failed shift leaves the header unchanged");
        let mut h = VnetHdr { csum_start: 65534, ..VnetHdr::PLAIN };
        assert!(h.shift(4).is_err());
    }

    #[test]
    fn check_frame_bounds() {
        let h = VnetHdr::parse(&TSO_HDR).unwrap();
        assert!(h.check_frame(52).is_ok()); // 34 + 16 + 2
        assert!(h.check_frame(51).is_err());
        let bad_gso = VnetHdr { gso_size: 0, ..h };
        assert!(bad_gso.check_frame(1000).is_err());
    }
}
