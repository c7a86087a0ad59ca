//! Device passwords: generation, the strength rule, and the verifier stored instead of them.
//!
//! The verifier is `sha256:<salt>:<SHA-256(salt || password)>` (standard base64). A fast hash is
//! deliberate: the authorizer must check a login in well under a millisecond for thousands of
//! devices, and a slow KDF would dominate the Lambda's cost and IoT's 5 s budget. That is only
//! safe for passwords nobody can guess, so every password must take at least 2^128 guesses:
//! generated ones do by construction, and ones read from stdin must pass [`check_strength`].
//! Guessing a 128-bit secret is infeasible however fast the hash.
//!
//! The estimate is zxcvbn's (dictionaries, keyboard walks, repeats, sequences, dates, l33t). Two
//! details of the `zxcvbn` crate shape the code below:
//! - It counts guesses in a `u64`, which saturates at 2^64, half the bar, and past that its
//!   choice between readings follows HashMap order. A longer password is therefore read in pieces
//!   of 16 characters, each well under 2^64 and read the same on every call ([`readings`]), and
//!   the pieces' bits are added.
//! - Its brute-force rate of 10 guesses a character is meant for human text, so a random 24-character
//!   password rates as 10^24, below the bar. Machine-made secrets are therefore recognised by
//!   their format ([`MachineFormat`]): there each brute-force span counts the bits of the format's
//!   alphabet per character, while every pattern zxcvbn finds in it still counts only its guesses.

use anyhow::{Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngExt as _;
use sha2::{Digest, Sha256};
use zxcvbn::matching::patterns::MatchPattern;

pub const MIN_BITS: f64 = 128.0;
/// MQTT's password field holds at most 65535 bytes.
const MAX_LEN: usize = 65_535;
/// zxcvbn only looks at the first 100 characters; whatever follows adds nothing to the estimate.
const ANALYSED_CHARS: usize = 100;
const GENERATED_LEN: usize = 24;
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// How to make a good password, for the refusal.
pub const REMEDY: &str = "omit --password-stdin to get a generated one (24 random letters and digits, 143 bits), or pipe in a random one: `openssl rand -base64 24 | iot-custom-auth device add USERNAME --password-stdin`";

/// A random password of 24 letters and digits: 24 * log2(62) = 142.9 bits. About one in 3,000
/// contains by chance what zxcvbn reads as a pattern (a word, a sequence) long enough to put it
/// below the bar; those are drawn again, so every generated password passes [`check_strength`]
/// (skipping one in 3,000 costs far less than a bit).
pub fn generate() -> String {
    let mut rng = rand::rng();
    loop {
        let password: String = (0..GENERATED_LEN)
            .map(|_| ALPHANUMERIC[rng.random_range(0..ALPHANUMERIC.len())] as char)
            .collect();
        if strength(&password).bits >= MIN_BITS {
            return password;
        }
    }
}

/// The shapes random-secret tools print, each with the bits one character of it can carry. Only
/// these get more than zxcvbn's 10 guesses a character for what zxcvbn finds no pattern in:
/// - `Hex`: `openssl rand -hex 16`, `xxd -p`, UUIDs without dashes: 4 bits a digit (32 digits =
///   128 bits); one letter case only, as those tools print.
/// - `Alphanumeric`: this tool's generator: log2(62) = 5.95 bits (22 characters = 131 bits).
/// - `Base64`: `openssl rand -base64 N` (with `+/`) or URL-safe base64 (with `-_`), `=` padding
///   only at the end: 6 bits a character, 2 fewer for each `=` (22 characters + `==` = 16 bytes =
///   128 bits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MachineFormat {
    Hex,
    Alphanumeric,
    Base64,
}

impl MachineFormat {
    fn of(password: &str) -> Option<Self> {
        let body = password.trim_end_matches('=');
        let padding = password.len() - body.len();
        if body.is_empty() || padding > 2 {
            return None;
        }
        let hex_lower = body.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let hex_upper = body.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'));
        let alnum = body.bytes().all(|b| b.is_ascii_alphanumeric());
        let std = body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
        let url = body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        match () {
            _ if padding == 0 && (hex_lower || hex_upper) => Some(Self::Hex),
            _ if padding == 0 && alnum => Some(Self::Alphanumeric),
            _ if std || url => Some(Self::Base64),
            _ => None,
        }
    }

    /// Whether `pattern`, `len` characters long, in a string that patterns cover at most half
    /// of, is chance rather than a person's choice. Short patterns are chance in every format.
    /// In hex, digit runs read as dates or years, keypad walks and sequences are chance at any
    /// length: `openssl rand -hex 16` gives exactly 128 bits with no slack, and about one such
    /// string in 25 holds one of 5 or more characters (measured over 3,000; a–f words of that
    /// length, which still count, came up in about 1 in 230). The other formats come from
    /// generators with slack above 128 bits (24 base64 bytes are 192).
    fn is_chance(self, pattern: &MatchPattern, len: usize) -> bool {
        const SHORT: usize = 5;
        len < SHORT
            || (self == Self::Hex
                && matches!(
                    pattern,
                    MatchPattern::Date(_)
                        | MatchPattern::Spatial(_)
                        | MatchPattern::Sequence(_)
                        | MatchPattern::Regex(_)
                ))
    }

    fn bits_per_char(self) -> f64 {
        match self {
            Self::Hex => 4.0,
            Self::Alphanumeric => 62f64.log2(),
            Self::Base64 => 6.0,
        }
    }
}

/// What the strength check found.
#[derive(Debug)]
pub struct Strength {
    /// log2 of the guesses an attacker needs, by zxcvbn's model.
    pub bits: f64,
    pub format: Option<MachineFormat>,
    /// zxcvbn's warning and suggestions, when it has any.
    pub feedback: Vec<String>,
}

/// zxcvbn's estimate (see the module comment), in bits.
pub fn strength(password: &str) -> Strength {
    let format = MachineFormat::of(password);
    let analysed: String = match format {
        // Padding carries no secret; it is accounted for below.
        Some(_) => password.trim_end_matches('='),
        None => password,
    }
    .chars()
    .take(ANALYSED_CHARS)
    .collect();
    let readings = readings(&analysed, format);
    // zxcvbn only gives feedback for passwords below 10^10 guesses; what it found says why in
    // every case. Described, never quoted: a refused password may still be in use elsewhere.
    let mut feedback = Vec::new();
    let found: Vec<String> = readings
        .iter()
        .flat_map(|e| e.sequence().iter().filter_map(describe))
        .collect();
    if !found.is_empty() {
        feedback.push(format!("zxcvbn finds {}", found.join(", ")));
    }
    if let Some(f) = readings.iter().find_map(|e| e.feedback()) {
        feedback.extend(f.warning().map(|w| w.to_string()));
        feedback.extend(f.suggestions().iter().map(|s| s.to_string()));
    }
    let padding = match format {
        Some(_) => (password.len() - password.trim_end_matches('=').len()) as f64,
        None => 0.0,
    };
    let bits = total_bits(&readings, format) - 2.0 * padding;
    Strength {
        bits,
        format,
        feedback,
    }
}

/// Characters zxcvbn reads at once: a brute-force reading of 16 characters is 10^16 guesses,
/// under the 2^64 where its count saturates.
const PIECE: usize = 16;

/// zxcvbn's readings of `text`: one for the whole when its count fits zxcvbn's 64 bits, else one
/// per piece of [`PIECE`] characters. Past 2^64 zxcvbn's optimiser compares saturated (equal)
/// counts, and which reading wins then follows HashMap order, different on every call (it may
/// keep plain brute force over a word it found). A piece never saturates, so its reading is
/// zxcvbn's own and the same every time. Two cuts, half a piece apart, keep every pattern of up
/// to 8 characters whole in one of them; the lower total is taken.
fn readings(text: &str, format: Option<MachineFormat>) -> Vec<zxcvbn::Entropy> {
    let whole = zxcvbn::zxcvbn(text, &[]);
    if whole.guesses() != u64::MAX {
        return vec![whole];
    }
    let chars: Vec<char> = text.chars().collect();
    [0, PIECE / 2]
        .into_iter()
        .map(|offset| {
            let mut cuts = vec![0];
            cuts.extend((offset..chars.len()).step_by(PIECE).filter(|&c| c > 0));
            cuts.push(chars.len());
            cuts.windows(2)
                .map(|w| zxcvbn::zxcvbn(&chars[w[0]..w[1]].iter().collect::<String>(), &[]))
                .collect::<Vec<_>>()
        })
        .min_by(|a, b| total_bits(a, format).total_cmp(&total_bits(b, format)))
        .expect("two cuts")
}

fn total_bits(readings: &[zxcvbn::Entropy], format: Option<MachineFormat>) -> f64 {
    readings.iter().map(|e| reading_bits(e, format)).sum()
}

/// Bits of one zxcvbn reading.
fn reading_bits(entropy: &zxcvbn::Entropy, format: Option<MachineFormat>) -> f64 {
    match format {
        Some(format) => machine_bits(entropy.sequence(), format),
        None if entropy.guesses() != u64::MAX => entropy.guesses_log10() * 10f64.log2(),
        None => {
            sequence_bits(entropy.sequence(), 10f64.log2())
                + log2_factorial(entropy.sequence().len())
        }
    }
}

/// Σ over zxcvbn's chosen matches: brute-force spans at `brute_force_bits` a character, patterns
/// at zxcvbn's guesses. When zxcvbn saturated it may have kept the first of several equally
/// "infinite" sequences; it tries pattern matches before brute force at each position, so that
/// first one is the more structured (lower) reading.
fn sequence_bits(sequence: &[zxcvbn::matching::Match], brute_force_bits: f64) -> f64 {
    sequence
        .iter()
        .map(|m| match m.pattern {
            MatchPattern::BruteForce => m.token.chars().count() as f64 * brute_force_bits,
            _ => (m.guesses.unwrap_or(1).max(1) as f64).log2(),
        })
        .sum()
}

/// Like [`sequence_bits`], for a string in a machine format. A random string of 32 hex digits
/// holds a chance "year" (`1987`), a three-letter word (`bad`) or sequence (`abc`) more often than
/// not, and at exactly 128 bits any of them would refuse it. So the patterns
/// [`MachineFormat::is_chance`] calls chance count as random characters, unless patterns cover
/// more than half of the string: random strings are mostly unmatched, while text built of
/// short words or repeats (`deadbeefcafebabe…`, `BlueFishRunsFast…`) is mostly matched, and then
/// every pattern counts.
fn machine_bits(sequence: &[zxcvbn::matching::Match], format: MachineFormat) -> f64 {
    let bits_per_char = format.bits_per_char();
    let len = |m: &zxcvbn::matching::Match| m.token.chars().count();
    let total: usize = sequence.iter().map(len).sum();
    let matched: usize = sequence
        .iter()
        .filter(|m| !matches!(m.pattern, MatchPattern::BruteForce))
        .map(len)
        .sum();
    let chance_allowed = matched * 2 <= total;
    sequence
        .iter()
        .map(|m| match m.pattern {
            MatchPattern::BruteForce => len(m) as f64 * bits_per_char,
            _ if chance_allowed && format.is_chance(&m.pattern, len(m)) => {
                len(m) as f64 * bits_per_char
            }
            _ => (m.guesses.unwrap_or(1).max(1) as f64).log2(),
        })
        .sum()
}

/// What a match zxcvbn found is, in words (None for a brute-force span: nothing found).
fn describe(m: &zxcvbn::matching::Match) -> Option<String> {
    let n = m.token.chars().count();
    Some(match &m.pattern {
        MatchPattern::BruteForce => return None,
        MatchPattern::Dictionary(d) => {
            // The crate does not export its DictionaryType, only its Debug form.
            let kind = match format!("{:?}", d.dictionary_name).as_str() {
                "Passwords" => "a common password",
                _ => "a dictionary word",
            };
            let how = match (d.l33t, d.reversed) {
                (true, _) => " with predictable substitutions",
                (_, true) => " reversed",
                _ => "",
            };
            format!("{kind}{how} ({n} characters)")
        }
        MatchPattern::Spatial(_) => format!("a keyboard pattern ({n} keys)"),
        MatchPattern::Repeat(r) => format!(
            "a repeat ({} characters, {} times)",
            r.base_token.chars().count(),
            r.repeat_count
        ),
        MatchPattern::Sequence(_) => format!("a sequence ({n} characters)"),
        MatchPattern::Regex(r) if r.regex_name == "recent_year" => "a recent year".to_string(),
        MatchPattern::Regex(_) => format!("a pattern ({n} characters)"),
        MatchPattern::Date(_) => "a date".to_string(),
    })
}

fn log2_factorial(n: usize) -> f64 {
    (2..=n).map(|k| (k as f64).log2()).sum()
}

/// Refuses a password that could be guessed (see the module comment for why the bar is 2^128
/// guesses). The error says why, in zxcvbn's words where it has some.
pub fn check_strength(password: &str) -> Result<()> {
    if password.len() > MAX_LEN {
        bail!("the password is longer than MQTT's {MAX_LEN} bytes");
    }
    let s = strength(password);
    if s.bits >= MIN_BITS {
        return Ok(());
    }
    let mut why = format!(
        "it would fall to about 2^{:.0} guesses (zxcvbn's estimate{}), and at least 2^{MIN_BITS:.0} are required because only a fast hash of it is stored",
        s.bits.max(0.0),
        match s.format {
            Some(f) => format!(", read as {f:?} from a random generator"),
            None => String::new(),
        }
    );
    for line in &s.feedback {
        why.push_str("; ");
        why.push_str(line.trim_end_matches('.'));
    }
    bail!("{why}")
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

/// Whether `password` is the one `verifier` was made from (with the verifier's own salt). Used to
/// tell whether an imported password is already stored, since a fresh salt makes every new
/// verifier differ.
pub fn matches(verifier: &str, password: &[u8]) -> bool {
    parse(verifier).is_ok_and(|(salt, hash)| digest(&salt, password) == hash)
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

    fn refused(password: &str) -> String {
        match check_strength(password) {
            Ok(()) => panic!("{password:?} was accepted: {:?}", strength(password)),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn weak_passwords_of_every_kind_are_refused() {
        for weak in [
            // The two the security review got through, 131 and 138 "bits" by character classes.
            "Password1234567890!@",
            "Summer2024!Winter2025",
            // dictionary words, a passphrase of common words, l33t
            "correcthorsebatterystaple",
            "P@ssw0rd!P@ssw0rd!Tr0ub4dor&3",
            // keyboard walks
            "qwertyuiopasdfghjklzxcvbnm",
            "1qaz2wsx3edc4rfv5tgb6yhn",
            // repeats, long but patterned
            &"a".repeat(60),
            &"Xk9!".repeat(10),
            "abcdefghijklmnopqrstuvwxyz0123456789",
            // dates
            "1984-03-15/2001-09-11/2024-12-25!",
            // machine formats that are not random
            "00000000000000000000000000000000",
            "0123456789abcdef0123456789abcdef",
            "deadbeefdeadbeefdeadbeefdeadbeef",
            "deadbeefcafebabefacefeedbaddecaf",
            // short words only, none long enough to look deliberate on its own
            "BlueFishRunsFastOverHillsToday",
            // too short to be anything
            "test",
        ] {
            refused(weak);
        }
    }

    #[test]
    fn the_refusal_says_why_in_zxcvbns_words() {
        let why = refused("Password1234567890!@");
        assert!(why.contains("2^128"), "{why}");
        assert!(why.to_lowercase().contains("common"), "{why}");
        assert!(REMEDY.contains("openssl rand -base64 24"));
    }

    #[test]
    fn random_and_machine_made_passwords_are_accepted() {
        for strong in [
            // openssl rand -base64 24 / -base64 16 / -hex 16
            "Qm9vdHMtYW5kLUNhdHMtMTIzNDU2Nzg5MDEy",
            "k3J/9qzW+eXv2Lm8Rt1YpA==",
            "3f9c2a7b5e1d4c8a9b0e6f2d1c3a5b7e",
            "3F9C2A7B5E1D4C8A9B0E6F2D1C3A5B7E",
            // URL-safe base64
            "q7-Zk2_Wd9xLm4Rt8vYp3N",
            // 40 random characters of all classes (zxcvbn: about 10 guesses a character)
            "vG7#qL2!zR9@wX4$kP8^mN3&tB6*yH5%cJ1(dF0)",
        ] {
            if let Err(e) = check_strength(strong) {
                panic!("{strong:?} refused: {e:#} {:?}", strength(strong));
            }
        }
        for _ in 0..200 {
            let pw = generate();
            assert!(check_strength(&pw).is_ok(), "generated {pw} refused");
        }
        // `openssl rand -hex 16` is exactly 128 bits: the digit runs zxcvbn reads as a date (the
        // commonest of the chance patterns found in them) must not refuse it.
        for hex in [
            "3f9c2a7b19870315d4c8a9b0e6f2d1c3",
            "c4d8e2f1a9b7c3d5e20240611b8a7f6e",
        ] {
            let found = strength(hex).feedback.join(" ");
            assert!(
                found.contains("date") || found.contains("keyboard") || found.contains("sequence"),
                "{hex} holds no such pattern ({found}): pick another example"
            );
            if let Err(e) = check_strength(hex) {
                panic!("{hex} refused: {e:#}");
            }
        }
    }

    #[test]
    fn machine_formats_count_only_the_bits_they_carry() {
        // 31 random hex digits are 124 bits: one short.
        assert!(check_strength("3f9c2a7b5e1d4c8a9b0e6f2d1c3a5b7").is_err());
        // 21 random letters and digits are 125 bits.
        assert!(check_strength("hR4q0sVn8CzY2kLm7WbT1").is_err());
        assert_eq!(MachineFormat::of("abc=="), Some(MachineFormat::Base64));
        assert_eq!(MachineFormat::of("abc123"), Some(MachineFormat::Hex));
        assert_eq!(
            MachineFormat::of("aBc123"),
            Some(MachineFormat::Alphanumeric)
        );
        assert_eq!(MachineFormat::of("a+b/c"), Some(MachineFormat::Base64));
        assert_eq!(MachineFormat::of("a b"), None);
        assert_eq!(MachineFormat::of("a=b"), None);
    }
}
