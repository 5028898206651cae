//! Idempotency keys: what tells a retry from a different request under the same key.

/// A stable fingerprint of a request's bytes (64-bit FNV-1a, hex): the same bytes give the
/// same fingerprint in every process and release, so a stored one can be compared with a
/// retry's.
pub fn fingerprint(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a(bytes))
}

/// 64-bit FNV-1a of `bytes`: stable across processes and releases (unlike std's hasher), not
/// a security boundary.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_are_stable_and_tell_bodies_apart() {
        assert_eq!(super::fingerprint(b""), "cbf29ce484222325");
        assert_eq!(super::fingerprint(b"a"), "af63dc4c8601ec8c");
        assert_ne!(super::fingerprint(b"ab"), super::fingerprint(b"ba"));
    }
}
