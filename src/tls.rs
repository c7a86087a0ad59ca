//! TLS the way AWS IoT Core needs it for custom authentication: ALPN `mqtt`, SNI = the endpoint's
//! host name, and Mozilla's roots (they include Amazon Root CA 1-4) plus any CA the user adds.
//! Also turns network and handshake failures into one sentence and a remedy.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use rumqttc::tokio_rustls::TlsConnector;
use rumqttc::tokio_rustls::client::TlsStream;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, ProtocolVersion, RootCertStore};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::error::Failure;
use crate::resources::endpoint;

/// Where to connect: the host name doubles as the SNI value and the name the certificate must
/// carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    /// An AWS IoT data endpoint: custom authentication is only served on port 443.
    pub fn aws(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: endpoint::PORT,
        }
    }

    /// `HOST` or `HOST:PORT` (port 443 when omitted).
    pub fn parse(text: &str) -> Result<Self, Failure> {
        let text = text.trim();
        let invalid = |why: &str| {
            Failure::usage(
                format!("--host `{text}`: {why}"),
                "give a host name, optionally with a port: \
                 --host a1b2c3-ats.iot.eu-west-1.amazonaws.com or --host localhost:8883",
            )
        };
        if text.contains("://") {
            return Err(invalid("expected a host name, not a URL"));
        }
        let (host, port) = match text.split_once(':') {
            None => (text, endpoint::PORT),
            Some((_, rest)) if rest.contains(':') => {
                // rumqttc joins host and port with `:`, which an IPv6 literal cannot survive.
                return Err(invalid("IPv6 addresses are not supported, use a host name"));
            }
            Some((host, port)) => match port.parse::<u16>() {
                Ok(port) if port != 0 => (host, port),
                _ => return Err(invalid("the port must be a number from 1 to 65535")),
            },
        };
        if host.is_empty() {
            return Err(invalid("the host name is empty"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }

    fn server_name(&self) -> Result<ServerName<'static>, Failure> {
        ServerName::try_from(self.host.clone()).map_err(|_| {
            Failure::usage(
                format!("`{}` is not a valid host name", self.host),
                "check --host",
            )
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The client configuration shared by the handshake check and the MQTT connection, so the second
/// handshake can resume the first one's session.
pub fn client_config(extra_cas: &[PathBuf]) -> Result<Arc<ClientConfig>> {
    // Mozilla's roots (they include Amazon Root CA 1-4, which sign the ATS endpoints) work on
    // any machine; the system's store adds what an organisation trusts (a TLS-inspecting proxy).
    // An unreadable system store is not an error: the bundled roots still cover AWS.
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for path in extra_cas {
        add_ca_file(&mut roots, path)?;
    }
    // Name the provider: `ClientConfig::builder()` panics when a dependency enables a second one.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![endpoint::ALPN.as_bytes().to_vec()];
    Ok(Arc::new(config))
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<()> {
    let remedy = "--ca-file takes a PEM file with the CA certificate(s) that signed the \
                  broker's certificate";
    let pem =
        std::fs::read(path).with_context(|| format!("reading --ca-file {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::usage(format!("--ca-file {}: {e}", path.display()), remedy))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Failure::usage(
            format!("--ca-file {}: no usable certificate in it", path.display()),
            remedy,
        )
        .into());
    }
    Ok(())
}

/// What the server agreed to in the handshake.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// "TLS 1.3" or "TLS 1.2".
    pub version: String,
    /// The application protocol the server selected; `None` when it ignored ALPN.
    pub alpn: Option<String>,
}

/// Opens a TCP connection, completes a TLS handshake and closes it again. The MQTT client hides
/// its TLS session, so this is the only place to see which ALPN protocol the server selected and
/// to tell network, trust and ALPN failures apart.
pub async fn handshake(target: &Target, config: Arc<ClientConfig>) -> Result<Handshake, Failure> {
    let mut tls = connect(target, config).await?;
    let (_, session) = tls.get_ref();
    let handshake = Handshake {
        version: version_name(session.protocol_version()),
        alpn: session
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    };
    // Only the handshake was wanted; a failed close_notify changes nothing.
    let _ = tls.shutdown().await;
    Ok(handshake)
}

/// A TLS connection to `target`, every failure explained.
pub async fn connect(
    target: &Target,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, Failure> {
    let name = target.server_name()?;
    let tcp = tcp_connect(target).await?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| explain_handshake(&e, target))
}

fn version_name(version: Option<ProtocolVersion>) -> String {
    match version {
        Some(ProtocolVersion::TLSv1_3) => "TLS 1.3".to_string(),
        Some(ProtocolVersion::TLSv1_2) => "TLS 1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => "TLS".to_string(),
    }
}

async fn tcp_connect(target: &Target) -> Result<TcpStream, Failure> {
    let addrs = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| {
            Failure::new(
                format!("cannot resolve `{}`: {e}", target.host),
                "check the host name and your DNS/network",
            )
        })?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Small handshake records go out at once instead of waiting for ACKs (Nagle).
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    let err = last.unwrap_or_else(|| io::Error::other("the name has no addresses"));
    Err(explain_connect(&err, target))
}

/// A failure to open the TCP connection.
pub fn explain_connect(err: &io::Error, target: &Target) -> Failure {
    if err.kind() == io::ErrorKind::ConnectionRefused {
        return Failure::new(
            format!(
                "{target} refused the connection: nothing is listening on port {}",
                target.port
            ),
            "check the host and port, and that the broker is running (AWS IoT custom \
             authentication: the iot:Data-ATS endpoint on port 443)",
        );
    }
    Failure::new(
        format!("cannot reach {target}: {err}"),
        format!(
            "check the network, and that firewalls allow outbound TCP {}",
            target.port
        ),
    )
}

/// A failure during the TLS handshake: tokio-rustls wraps rustls's error in an `io::Error`.
pub fn explain_handshake(err: &io::Error, target: &Target) -> Failure {
    if let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return explain_tls(tls, target);
    }
    if matches!(
        err.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
    ) {
        return Failure::new(
            format!("{target} closed the connection during the TLS handshake"),
            "check that this port serves TLS: AWS IoT custom authentication uses the \
             iot:Data-ATS endpoint on port 443",
        );
    }
    Failure::new(
        format!("TLS handshake with {target} failed: {err}"),
        "check the host, port and network",
    )
}

fn explain_tls(err: &rustls::Error, target: &Target) -> Failure {
    let host = &target.host;
    let endpoint_hint = "AWS IoT custom authentication needs the iot:Data-ATS endpoint on port \
                         443 with ALPN `mqtt` \
                         (`aws iot describe-endpoint --endpoint-type iot:Data-ATS`)";
    match err {
        rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol) => Failure::new(
            format!("{target} refused ALPN `mqtt` (TLS alert no_application_protocol)"),
            format!("this server does not offer MQTT over ALPN `mqtt`; {endpoint_hint}"),
        ),
        rustls::Error::NoApplicationProtocol => Failure::new(
            format!("{target} selected an application protocol other than `mqtt`"),
            endpoint_hint,
        ),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => Failure::new(
            format!("the certificate of {target} is not signed by a trusted CA"),
            "for a local or private broker, pass its CA with --ca-file; AWS IoT's iot:Data-ATS \
             endpoint is signed by Amazon Root CA, which is trusted",
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => Failure::new(
            format!("the certificate of {target} is not valid for `{host}`"),
            "connect with the host name the certificate names (for AWS IoT, the iot:Data-ATS \
             endpoint: the legacy iot:Data endpoint has a different certificate)",
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => Failure::new(
            format!("the certificate of {target} is expired or not yet valid"),
            "check this machine's clock, and the broker's certificate",
        ),
        rustls::Error::InvalidCertificate(other) => Failure::new(
            format!("the certificate of {target} was rejected: {other:?}"),
            "check the broker's certificate and --ca-file",
        ),
        rustls::Error::AlertReceived(alert) => Failure::new(
            format!("{target} aborted the TLS handshake (alert {alert:?})"),
            endpoint_hint,
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            Failure::new(
                format!("{target} does not speak TLS"),
                "connect needs a TLS port (not plain MQTT on 1883); check --host",
            )
        }
        other => Failure::new(
            format!("TLS handshake with {target} failed: {other}"),
            "check the host, port and --ca-file",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn parses_hosts() {
        assert_eq!(
            Target::parse("a-ats.iot.x.amazonaws.com").unwrap(),
            target("a-ats.iot.x.amazonaws.com", 443)
        );
        assert_eq!(
            Target::parse(" localhost:8883 ").unwrap(),
            target("localhost", 8883)
        );
        assert_eq!(
            Target::parse("127.0.0.1:1").unwrap(),
            target("127.0.0.1", 1)
        );
    }

    #[test]
    fn rejects_bad_hosts() {
        for bad in [
            "",
            ":443",
            "h:0",
            "h:99999",
            "h:x",
            "mqtts://h:8883",
            "::1",
            "[::1]:443",
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(err.usage, "{bad}");
        }
    }

    #[test]
    fn explains_alpn_refusal() {
        let err = rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol);
        let failure = explain_tls(&err, &target("h", 443));
        assert!(
            failure.message.contains("refused ALPN `mqtt`"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn explains_untrusted_certificate() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let failure = explain_handshake(&io, &target("h", 8883));
        assert!(failure.message.contains("not signed by a trusted CA"));
        assert!(failure.remedy.unwrap().contains("--ca-file"));
    }

    #[test]
    fn explains_wrong_name_and_hangups() {
        let err = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(
            explain_tls(&err, &target("h", 443))
                .message
                .contains("not valid for `h`")
        );
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert!(
            explain_handshake(&eof, &target("h", 443))
                .message
                .contains("closed the connection")
        );
    }

    #[test]
    fn explains_refused_connection() {
        let err = io::Error::from(io::ErrorKind::ConnectionRefused);
        let failure = explain_connect(&err, &target("localhost", 1));
        assert_eq!(
            failure.message,
            "localhost:1 refused the connection: nothing is listening on port 1"
        );
    }

    #[test]
    fn config_offers_mqtt_alpn() {
        let config = client_config(&[]).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"mqtt".to_vec()]);
    }
}
