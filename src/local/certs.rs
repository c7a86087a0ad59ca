//! The gateway's TLS identity: a throwaway CA and a server certificate for localhost, 127.0.0.1
//! and ::1, written once to the cert dir and reused, so devices keep trusting the same `ca.pem`.
//!
//! The CA's private key is never written: once the server certificate is signed nobody needs it,
//! so a leaked `ca.pem` cannot be used to mint certificates that the machine's clients trust.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The server's certificate chain and key, and where the CA that devices must trust lives.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub ca_file: PathBuf,
    /// Whether this start created them.
    pub created: bool,
}

/// Loads the identity from `dir`, creating it on first use.
pub fn load_or_create(dir: &Path) -> Result<Identity> {
    let created = !dir.join(KEY_FILE).exists();
    if created {
        create(dir).with_context(|| format!("writing certificates to {}", dir.display()))?;
    }
    let read = |name: &str| dir.join(name);
    let chain = CertificateDer::pem_file_iter(read(CERT_FILE))
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", read(CERT_FILE).display()))?;
    let key = PrivateKeyDer::from_pem_file(read(KEY_FILE))
        .with_context(|| format!("reading {}", read(KEY_FILE).display()))?;
    Ok(Identity {
        chain,
        key,
        ca_file: std::path::absolute(read(CA_FILE))?,
        created,
    })
}

fn create(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut ca_params = CertificateParams::default();
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
        assert!(first.created);
        assert_eq!(first.chain.len(), 1);
        let second = load_or_create(dir.path()).unwrap();
        assert!(!second.created);
        assert_eq!(first.chain, second.chain);
        assert!(server_config(second).is_ok());
        assert!(!dir.path().join("ca.key").exists());
    }
}
