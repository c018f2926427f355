//! API tokens: how they are made, stored (as hashes) and compared.

use sha2::Digest as _;

/// A fresh random token: `mesh_` and 48 hex digits (192 bits).
pub fn new_token() -> String {
    let mut bytes = [0u8; 24];
    // The OS random source failing means the machine cannot make secrets at
    // all; there is nothing sensible to fall back to.
    getrandom::fill(&mut bytes).expect("the OS random number source works");
    format!("mesh_{}", hex::encode(bytes))
}

/// The hash under which a token is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_compare() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("mesh_") && a.len() == 53);
        assert!(constant_time_eq(&a, &a.clone()));
        assert!(!constant_time_eq(&a, &b));
        assert!(!constant_time_eq(&a, "short"));
        assert_eq!(token_hash(&a).len(), 64);
    }
}
