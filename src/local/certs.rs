//! The gateway's TLS identity: a throwaway CA and a server certificate for localhost, 127.0.0.1
//! and ::1, written once to the cert dir and reused, so devices keep trusting the same `ca.pem`.
//!
//! The CA's private key is never written: once the server certificate is signed nobody needs it,
//! so a leaked `ca.pem` cannot be used to mint certificates that the machine's clients trust.
//!
//! Both certificates are valid for [`VALIDITY`] (30 days) only, not the centuries a generated
//! certificate gets by default: a `ca.pem` someone added to a trust store stops being trusted on
//! its own. `local` makes a new pair when the old one has less than [`RENEW_BEFORE`] left, so a
//! gateway started today keeps a valid certificate for at least that long.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const CA_FILE: &str = "ca.pem";
const CERT_FILE: &str = "server.pem";
const KEY_FILE: &str = "server.key";
const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// How long a new CA and server certificate are valid.
pub const VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// A pair with less than this left is replaced at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Backdated by this much, for clients whose clock is a little behind.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// The server's certificate chain and key, and where the CA that devices must trust lives.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub ca_file: PathBuf,
    /// Whether, and why, this start made them.
    pub made: Option<Made>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// None existed.
    New,
    /// The old ones expired, or would within [`RENEW_BEFORE`].
    Renewed,
}

/// Loads the identity from `dir`, creating it on first use and renewing it near its expiry.
pub fn load_or_create(dir: &Path) -> Result<Identity> {
    let read = |name: &str| dir.join(name);
    let made = if !read(KEY_FILE).exists() {
        Some(Made::New)
    } else if renewal_due(&read(CERT_FILE))? {
        Some(Made::Renewed)
    } else {
        None
    };
    if made.is_some() {
        create(dir).with_context(|| format!("writing certificates to {}", dir.display()))?;
    }
    let chain = CertificateDer::pem_file_iter(read(CERT_FILE))
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", read(CERT_FILE).display()))?;
    let key = PrivateKeyDer::from_pem_file(read(KEY_FILE))
        .with_context(|| format!("reading {}", read(KEY_FILE).display()))?;
    Ok(Identity {
        chain,
        key,
        ca_file: std::path::absolute(read(CA_FILE))?,
        made,
    })
}

/// Whether the server certificate in `path` expires within [`RENEW_BEFORE`].
fn renewal_due(path: &Path) -> Result<bool> {
    let unreadable = || format!("reading {} (delete the dir to renew it)", path.display());
    let pem = std::fs::read(path).with_context(unreadable)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(unreadable)?;
    let cert = pem.parse_x509().with_context(unreadable)?;
    let not_after = cert.validity().not_after.timestamp();
    let due = time::OffsetDateTime::now_utc() + RENEW_BEFORE;
    Ok(not_after <= due.unix_timestamp())
}

fn create(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let now = time::OffsetDateTime::now_utc();
    let (not_before, not_after) = (now - CLOCK_SKEW, now + VALIDITY);
    let mut ca_params = CertificateParams::default();
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "iot-custom-auth local CA (throwaway)");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(SERVER_NAMES.map(String::from).to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "iot-custom-auth local gateway");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    std::fs::write(dir.join(CA_FILE), ca_cert.pem())?;
    std::fs::write(dir.join(CERT_FILE), cert.pem())?;
    write_private(&dir.join(KEY_FILE), &key.serialize_pem())
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    Ok(file.write_all(text.as_bytes())?)
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> Result<()> {
    Ok(std::fs::write(path, text)?)
}

/// The TLS config: our identity, and ALPN `mqtt` only, as IoT requires for custom auth on 443.
/// rustls refuses a client that offers other protocols only; one that offers none is let through
/// by rustls (RFC 7301 allows it), so the gateway checks the negotiated protocol after the
/// handshake too.
pub fn server_config(identity: Identity) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .context(
            "the server certificate in the cert dir is unusable (delete the dir to renew it)",
        )?;
    config.alpn_protocols = vec![super::ALPN.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert_eq!(first.made, Some(Made::New));
        assert_eq!(first.chain.len(), 1);
        let second = load_or_create(dir.path()).unwrap();
        assert_eq!(second.made, None);
        assert_eq!(first.chain, second.chain);
        assert!(server_config(second).is_ok());
        assert!(!dir.path().join("ca.key").exists());
    }

    #[test]
    fn valid_for_30_days_only() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for file in [CA_FILE, CERT_FILE] {
            let pem = std::fs::read(dir.path().join(file)).unwrap();
            let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
            let cert = pem.parse_x509().unwrap();
            let validity = cert.validity();
            let left = validity.not_after.timestamp() - now;
            assert!(
                (29 * 86_400..=30 * 86_400).contains(&left),
                "{file}: {left} s left"
            );
            assert!(validity.not_before.timestamp() < now, "{file}");
        }
    }

    #[test]
    fn renewed_when_close_to_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        // An old pair: what the previous release wrote is valid for centuries, so write one
        // that ends in two days instead.
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = time::OffsetDateTime::now_utc() + Duration::from_secs(2 * 86_400);
        let key = KeyPair::generate().unwrap();
        std::fs::write(
            dir.path().join(CERT_FILE),
            params.self_signed(&key).unwrap().pem(),
        )
        .unwrap();
        let renewed = load_or_create(dir.path()).unwrap();
        assert_eq!(renewed.made, Some(Made::Renewed));
        assert_ne!(renewed.chain, first.chain);
        assert_eq!(load_or_create(dir.path()).unwrap().made, None);
    }
}
