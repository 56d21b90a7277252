//! Content digests. Pure.

use sha2::{Digest, Sha256};

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hex sha256 of a sequence of fields, each prefixed by its length, so that no two different
/// sequences hash the same bytes (`["ab", "c"]` and `["a", "bc"]` differ).
pub fn framed_sha256_hex<'a>(fields: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for field in fields {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    hex(&hasher.finalize())
}

/// Lower-case hex of bytes (a finished digest, or one computed while streaming).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_separates_fields() {
        let split = |fields: &[&str]| framed_sha256_hex(fields.iter().map(|f| f.as_bytes()));
        assert_ne!(split(&["ab", "c"]), split(&["a", "bc"]));
        assert_ne!(split(&["abc"]), split(&["abc", ""]));
        assert_eq!(split(&["a", "b"]), split(&["a", "b"]));
        assert_eq!(sha256_hex(b"").len(), 64);
    }
}
