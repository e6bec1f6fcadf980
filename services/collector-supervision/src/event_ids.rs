//! Event ids derived from what identifies a run, so that the same run sent
//! twice counts once.

/// A hex digest of length-prefixed parts (so ("ab","c") and ("a","bc") differ).
pub fn digest(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update((p.len() as u64).to_le_bytes());
        hasher.update(p.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}
