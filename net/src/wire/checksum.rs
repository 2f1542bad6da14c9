//! The Internet checksum (RFC 1071) for what the fabric originates (the gateway's echo replies,
//! health-check probes), and incremental updates (RFC 1624) for what it rewrites (a load
//! balancer's address and port translation).
//!
//! The fabric never verifies the checksums of frames it forwards, and never recomputes one from
//! a payload: frames from a TAP opened with IFF_VNET_HDR may carry only a partial checksum
//! (virtio `NEEDS_CSUM`, Linux's `CHECKSUM_PARTIAL`) that the receiving kernel completes. Such a
//! field holds the *uncomplemented* sum of the pseudo-header, so a translated address is folded
//! into it with [`adjust_partial`]; a complete checksum is updated with [`adjust`], which is
//! RFC 1624's equation 3 and, unlike the older equation, never produces a wrong `0x0000`.

/// One's-complement sum of `data` folded to 16 bits and complemented, ready to store.
#[inline]
pub fn internet(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// [`internet`] over `a` followed by `b` (`a` of even length: a pseudo-header).
#[inline]
pub fn internet2(a: &[u8], b: &[u8]) -> u16 {
    debug_assert!(a.len().is_multiple_of(2));
    !fold(sum(sum(0, a), b))
}

/// The sum of 16-bit words of `old` taken out and `new` put in, as a one's-complement delta.
#[inline]
fn delta(mut acc: u32, old: &[u8], new: &[u8]) -> u32 {
    debug_assert_eq!(old.len(), new.len());
    debug_assert!(old.len().is_multiple_of(2));
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc = acc.wrapping_add(u32::from(!u16::from_be_bytes([o[0], o[1]])));
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([n[0], n[1]])));
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// A complete (complemented) checksum after the even-length field `old` became `new`:
/// `HC' = ~(~HC + ~m + m')` (RFC 1624, eqn. 3).
#[inline]
pub fn adjust(check: u16, old: &[u8], new: &[u8]) -> u16 {
    !fold(delta(u32::from(!check), old, new))
}

/// A partial checksum (the uncomplemented pseudo-header sum a `NEEDS_CSUM` segment carries)
/// after the pseudo-header field `old` became `new`.
#[inline]
pub fn adjust_partial(sum: u16, old: &[u8], new: &[u8]) -> u16 {
    fold(delta(u32::from(sum), old, new))
}

#[inline]
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

#[inline]
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

    #[test]
    fn incremental_updates_match_recomputing() {
        let mut hdr =
            [0x45, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 0, 1, 5, 10, 0, 1, 253];
        let c = internet(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        let mut moved = hdr;
        moved[16..20].copy_from_slice(&[192, 168, 81, 92]);
        let adjusted = adjust(c, &hdr[16..20], &moved[16..20]);
        moved[10..12].copy_from_slice(&adjusted.to_be_bytes());
        assert_eq!(internet(&moved), 0);
        // A partial sum moves the other way: it is the uncomplemented sum of what changed.
        let partial = fold(sum(0, &hdr[12..20]));
        let moved_partial = fold(sum(0, &moved[12..20]));
        assert_eq!(adjust_partial(partial, &hdr[16..20], &moved[16..20]), moved_partial);
    }
}
