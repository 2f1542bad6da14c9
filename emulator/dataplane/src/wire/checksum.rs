//! The Internet checksum (RFC 1071), used only for headers the fabric itself originates: the
//! IPv4 header and ICMP message of an echo reply from the virtual gateway.
//!
//! The fabric never verifies or rewrites the checksums of frames it forwards: it changes no L3 or
//! L4 byte (no TTL decrement inside a VPC), and frames from a TAP opened with IFF_VNET_HDR may
//! carry only a partial checksum (virtio `NEEDS_CSUM`) that the receiving kernel completes.

/// One's-complement sum of `data` folded to 16 bits and complemented, ready to store.
pub fn internet(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so that 64 KB inputs cannot overflow the accumulator.
        acc = (acc & 0xffff) + (acc >> 16);
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // The worked example of RFC 1071 §3: the sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(internet(&[0x12, 0x34, 0x56]), internet(&[0x12, 0x34, 0x56, 0x00]));
    }

    #[test]
    fn valid_header_sums_to_zero() {
        let mut hdr =
            [0x45, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 10, 0, 1, 5, 10, 0, 1, 253];
        let c = internet(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(internet(&hdr), 0);
    }
}
