//! Device passwords: generation, the strength rule, and the verifier stored instead of them.
//!
//! The verifier is `sha256:<salt>:<SHA-256(salt || password)>` (standard base64). A fast hash is
//! deliberate: the authorizer must check a login in well under a millisecond for thousands of
//! devices, and a slow KDF would dominate the Lambda's cost and IoT's 5 s budget. That is only
//! safe for passwords nobody can guess, so every password must take at least 2^128 guesses:
//! generated ones do by construction, and ones read from stdin must pass [`check_strength`].
//! Guessing a 128-bit secret is infeasible however fast the hash.
//!
//! The estimate is zxcvbn's (dictionaries, keyboard walks, repeats, sequences, dates, l33t). Three
//! details of the `zxcvbn` crate shape the code below:
//! - Its optimiser's choice among readings followed HashMap order, so one password could read as
//!   1.66e12 guesses on one call and 3.0e13 on the next; the crate is patched (`vendor/zxcvbn/PATCHED.md`)
//!   to keep the lowest reading, the same every time.
//! - It counts guesses in a `u64`, which saturates at 2^64, half the bar, and past that it
//!   compares equal "infinite" readings. A longer password is therefore read in pieces of 16
//!   characters, each well under 2^64 ([`readings`]), and the pieces' bits are added.
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
/// In hex, a word or repeat shorter than this is chance (see [`MachineFormat::is_chance`]).
const HEX_WORD: usize = 8;
/// MQTT's password field holds at most 65535 bytes.
const MAX_LEN: usize = 65_535;
/// zxcvbn only looks at the first 100 characters; whatever follows adds nothing to the estimate.
const ANALYSED_CHARS: usize = 100;
const GENERATED_LEN: usize = 24;
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// How to make a good password, for the refusal.
pub const REMEDY: &str = "omit --password-stdin to get a generated one (24 random letters and digits, 143 bits), or pipe in a random one: `openssl rand -base64 24 | iot-custom-auth device add USERNAME --password-stdin`";

/// A random password of 24 letters and digits: 24 * log2(62) = 142.9 bits. About one in 100
/// contains by chance what zxcvbn reads as a pattern (a word with l33t digits, a repeat) long
/// enough to put it below the bar (198 of 20,000 measured); those are drawn again, so every
/// generated password passes [`check_strength`] (skipping one in 100 costs far less than a bit).
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

    /// Whether `pattern`, `len` characters long, in a string that words and repeats cover at most
    /// half of, is chance rather than a person's choice. Short patterns are chance in every
    /// format. `openssl rand -hex 16` gives exactly 128 bits with no slack, so in hex more is
    /// chance: words (digits read as l33t letters: `5a1e`) and repeats under [`HEX_WORD`]
    /// characters, and whatever [`Self::is_digit_chance`] says. The other formats come from
    /// generators with slack above 128 bits (24 base64 bytes are 192), where only short patterns
    /// are chance. Measured over 20,000 random 32-digit strings (`openssl rand -hex 16`'s shape):
    /// with only patterns under 5 characters as chance, 29% were refused; with this rule, 10
    /// (a repeated 4-digit block, an 8-letter l33t word: structure that does cost bits).
    fn is_chance(self, pattern: &MatchPattern, len: usize) -> bool {
        const SHORT: usize = 5;
        len < SHORT || self.is_digit_chance(pattern) || (self == Self::Hex && len < HEX_WORD)
    }

    /// In hex, digit runs read as dates or years, keypad walks and sequences are chance at any
    /// length, and do not count towards how much of the string patterns cover: random hex is
    /// 62% digits, and zxcvbn reads a date or a sequence into most of it.
    fn is_digit_chance(self, pattern: &MatchPattern) -> bool {
        self == Self::Hex
            && matches!(
                pattern,
                MatchPattern::Date(_)
                    | MatchPattern::Spatial(_)
                    | MatchPattern::Sequence(_)
                    | MatchPattern::Regex(_)
            )
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
/// counts and keeps whichever reading it met first (it may keep plain brute force over a word it
/// found). A piece never saturates, so its reading is zxcvbn's lowest. Two cuts, half a piece
/// apart, keep every pattern of up to 8 characters whole in one of them; the lower total is taken.
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

/// Bits of the readings of the pieces of one password. In a machine format the pieces' matches
/// are taken together, as one sequence over the whole password: whether a pattern is chance
/// depends on how much of the whole password patterns cover, not of a piece (a 5-digit "date"
/// is chance in 32 hex digits, not in the 8 that a cut may leave around it).
fn total_bits(readings: &[zxcvbn::Entropy], format: Option<MachineFormat>) -> f64 {
    match format {
        Some(format) => {
            let sequence: Vec<zxcvbn::matching::Match> = readings
                .iter()
                .flat_map(|e| e.sequence().iter().cloned())
                .collect();
            machine_bits(&sequence, format)
        }
        None => readings.iter().map(reading_bits).sum(),
    }
}

/// Bits of one zxcvbn reading of text in no machine format.
fn reading_bits(entropy: &zxcvbn::Entropy) -> f64 {
    if entropy.guesses() != u64::MAX {
        entropy.guesses_log10() * 10f64.log2()
    } else {
        sequence_bits(entropy.sequence(), 10f64.log2()) + log2_factorial(entropy.sequence().len())
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
        .filter(|m| !format.is_digit_chance(&m.pattern))
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

    #[test]
    fn a_password_gets_the_same_verdict_on_every_call() {
        // The published zxcvbn read its 16-character piece `m0W3DP4L3NFiYRCH` as 1.66e12 or
        // 3.0e13 guesses depending on HashMap order; the patched crate keeps the lowest every
        // time.
        for password in [
            "m0W3DP4L3NFiYRCH015eCxNb",
            "vG7#qL2!zR9@wX4$kP8^mN3&tB6*yH5%cJ1(dF0)",
        ] {
            let first = strength(password);
            for _ in 0..20 {
                let again = strength(password);
                assert_eq!(again.bits, first.bits, "{password}");
                assert_eq!(again.feedback, first.feedback, "{password}");
            }
        }
        let piece = zxcvbn::zxcvbn("m0W3DP4L3NFiYRCH", &[]).guesses();
        for _ in 0..20 {
            assert_eq!(zxcvbn::zxcvbn("m0W3DP4L3NFiYRCH", &[]).guesses(), piece);
        }
        assert_eq!(piece, 1_660_000_000_000);
    }

    #[test]
    fn random_hex_of_128_bits_passes() {
        // The 5-digit "date" here covers more than half of the 8-character piece a cut leaves
        // around it, but not of the password: chance is judged on the whole (it was 120.8 bits).
        assert!(check_strength("7c216522d02d0f39ab1dbfadf2b7d09b").is_ok());
        // `openssl rand -hex 16`: about 1 in 2,000 holds structure that costs bits (a repeated
        // 4-digit block); 29% were refused before hex's chance rule covered words, repeats and
        // the digit patterns' share. 300 draws expect 0.15 refusals; 5 would be a regression.
        let refused = (0..300)
            .map(|_| {
                let bytes: [u8; 16] = rand::rng().random();
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            })
            .filter(|hex| check_strength(hex).is_err())
            .count();
        assert!(refused < 5, "{refused} of 300 random hex strings refused");
    }
}
