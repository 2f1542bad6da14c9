//! The stable hash: 64-bit FNV-1a, for values that must come out the same in every process and
//! every release (names derived from ids, keys that survive a restart, backend choice that a
//! client can predict across emulator restarts).
//!
//! Must not: be used for maps whose keys come from the wire. FNV is trivially collidable, so
//! conntrack and anything keyed by packet contents take a seeded hasher from the caller instead.
//! `const` so that fixed keys are computed at compile time.

/// FNV-1a's offset basis: the hash of nothing.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// Continues hash `h` over `bytes`, so composite keys hash field by field without a buffer.
#[inline]
pub const fn fnv1a_extend(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h = (h ^ bytes[i] as u64).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// FNV-1a of `bytes`.
#[inline]
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(FNV_OFFSET, bytes)
}

/// FNV-1a of a string's bytes: a control-plane id's fixed key.
pub const fn stable_key(s: &str) -> u64 {
    fnv1a(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // FNV-1a test vectors from the algorithm's reference (draft-eastlake-fnv): "" and "a".
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_extend(fnv1a(b"vpc-"), b"a"), stable_key("vpc-a"));
        assert_ne!(stable_key("vpc-a"), stable_key("vpc-b"));
    }
}
