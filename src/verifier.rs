//! Device passwords: generation, the strength rule, and the verifier stored instead of them.
//!
//! The verifier is `sha256:<salt>:<SHA-256(salt || password)>` (standard base64). A fast hash is
//! deliberate: the authorizer must check a login in well under a millisecond for thousands of
//! devices, and a slow KDF would dominate the Lambda's cost and IoT's 5 s budget. That is only
//! safe for passwords nobody can guess, so every password is required to carry at least 128 bits
//! of entropy: generated ones do by construction, and ones read from stdin must pass
//! [`check_strength`]. Guessing a 128-bit secret is infeasible however fast the hash.

use anyhow::{Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngExt as _;
use sha2::{Digest, Sha256};

pub const MIN_BITS: f64 = 128.0;
const MIN_LEN: usize = 20;
const MIN_DISTINCT: usize = 10;
/// MQTT's password field holds at most 65535 bytes.
const MAX_LEN: usize = 65_535;
const GENERATED_LEN: usize = 24;
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A random password of 24 letters and digits: 24 * log2(62) = 142.9 bits.
pub fn generate() -> String {
    let mut rng = rand::rng();
    (0..GENERATED_LEN)
        .map(|_| ALPHANUMERIC[rng.random_range(0..ALPHANUMERIC.len())] as char)
        .collect()
}

/// Estimated entropy of a password assumed to be drawn at random from the character classes it
/// uses. An upper bound for human-chosen text, which is why length and variety are checked too.
pub fn estimated_bits(password: &str) -> f64 {
    type Class = (fn(char) -> bool, f64);
    let classes: [Class; 4] = [
        (|c| c.is_ascii_lowercase(), 26.0),
        (|c| c.is_ascii_uppercase(), 26.0),
        (|c| c.is_ascii_digit(), 10.0),
        (|c| c.is_ascii_punctuation() || c == ' ', 33.0),
    ];
    let mut pool: f64 = classes
        .iter()
        .filter(|(is, _)| password.chars().any(is))
        .map(|(_, n)| n)
        .sum();
    if !password.is_ascii() {
        pool += 100.0;
    }
    password.chars().count() as f64 * pool.max(1.0).log2()
}

/// Refuses a password that could be guessed (see the module comment for why the bar is 128 bits).
pub fn check_strength(password: &str) -> Result<()> {
    let remedy = "use the generated password (omit --password-stdin), or at least 22 random \
                  base64 characters, e.g. `openssl rand -base64 24`";
    if password.len() > MAX_LEN {
        bail!("the password is longer than MQTT's {MAX_LEN} bytes");
    }
    if password.chars().count() < MIN_LEN {
        bail!("the password is shorter than {MIN_LEN} characters; {remedy}");
    }
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT {
        bail!(
            "the password repeats too few characters ({} distinct); {remedy}",
            distinct.len()
        );
    }
    let bits = estimated_bits(password);
    if bits < MIN_BITS {
        bail!(
            "the password carries about {bits:.0} bits, below the {MIN_BITS:.0} required; {remedy}"
        );
    }
    Ok(())
}

/// A verifier for `password` with a fresh random salt.
pub fn make(password: &[u8]) -> String {
    let salt: [u8; 16] = rand::rng().random();
    format!(
        "sha256:{}:{}",
        B64.encode(salt),
        B64.encode(digest(&salt, password))
    )
}

/// Splits a verifier into salt and hash, checking its shape.
pub fn parse(verifier: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut parts = verifier.split(':');
    let (Some("sha256"), Some(salt), Some(hash), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("expected `sha256:<salt>:<hash>`");
    };
    let salt = B64.decode(salt)?;
    let hash = B64.decode(hash)?;
    if salt.len() < 16 || hash.len() != 32 {
        bail!("salt or hash has the wrong length");
    }
    Ok((salt, hash))
}

fn digest(salt: &[u8], password: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password);
    h.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_strong_and_differ() {
        let a = generate();
        assert_eq!(a.len(), GENERATED_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, generate());
    }

    #[test]
    fn verifier_is_salted_sha256() {
        let v = make(b"correct horse");
        let (salt, hash) = parse(&v).unwrap();
        assert_eq!(hash, digest(&salt, b"correct horse"));
        assert_ne!(hash, digest(&salt, b"correct horsf"));
        assert_ne!(v, make(b"correct horse"), "salt must be fresh");
        assert!(parse("md5:x:y").is_err());
    }

    #[test]
    fn weak_passwords_are_refused() {
        for weak in [
            "test",
            "password1234567890",
            &"a".repeat(60),
            "abcdefghijklmnopqrstu",
        ] {
            assert!(check_strength(weak).is_err(), "{weak}");
        }
        for strong in [
            "Qm9vdHMtYW5kLUNhdHMtMTIzNDU=",
            "3f9c2a7b5e1d4c8a9b0e6f2d1c3a5b7e",
            &generate(),
        ] {
            assert!(check_strength(strong).is_ok(), "{strong}");
        }
    }
}
