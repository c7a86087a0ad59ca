//! `connect` against real TLS servers: Debian's mosquitto for logins and delivery, and a rustls
//! listener that records what the client sends (ClientHello, MQTT CONNECT) to prove the wire format
//! AWS IoT custom authentication needs.

#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use mosquitto::{Mosquitto, Pki};
use rumqttc::tokio_rustls::TlsAcceptor;
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, Event, MqttOptions, Packet, PubAck, QoS,
    TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_iot-custom-auth");

/// Runs `connect ARGS` (split on spaces) with the password in the environment, as a CI job would.
async fn connect(password: &str, args: &str) -> Output {
    Command::new(BIN)
        .arg("connect")
        .args(args.split_whitespace())
        .env("IOT_CUSTOM_AUTH_PASSWORD", password)
        .env_remove("IOT_CUSTOM_AUTH_CONFIG")
        .output()
        .await
        .expect("running iot-custom-auth")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A subscriber on the test broker, subscribed to `telemetry/#` before this returns.
async fn subscriber(broker: &Mosquitto) -> (AsyncClient, rumqttc::EventLoop) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(broker.pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut options = MqttOptions::new("reader", "localhost", broker.port);
    options
        .set_credentials("reader", "reader-pw")
        .set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(tls))));
    let (client, mut events) = AsyncClient::new(options, 10);
    client
        .subscribe("telemetry/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !matches!(
            events.poll().await.unwrap(),
            Event::Incoming(Packet::SubAck(_))
        ) {}
    })
    .await
    .expect("subscribed");
    (client, events)
}

fn broker() -> Mosquitto {
    Mosquitto::start(&[("sensor-1", "right-pw"), ("reader", "reader-pw")])
}

#[tokio::test(flavor = "multi_thread")]
async fn good_login_publishes_and_a_subscriber_receives() {
    let broker = broker();
    let (_client, mut events) = subscriber(&broker).await;
    let args = format!(
        "--username sensor-1 --host {} --ca-file {} --count 3 --interval 0.05 --output json",
        broker.host(),
        broker.ca_file.display()
    );
    let out = connect("right-pw", &args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stderr),
        broker.log()
    );

    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["passed"], true);
    assert_eq!(summary["outcome"], "accepted");
    assert_eq!(summary["acknowledged"], 3);
    assert_eq!(summary["client_id"], "sensor-1");
    assert_eq!(summary["topic"], "telemetry/sensor-1");
    assert!(summary["first_puback_ms"].is_u64());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("PUBACK").count(), 3, "{stderr}");

    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while received.len() < 3 {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap() {
                received.push(p);
            }
        }
    })
    .await
    .expect("the subscriber got all three messages");
    assert!(received.iter().all(|p| p.topic == "telemetry/sensor-1"));
    let first: serde_json::Value = serde_json::from_slice(&received[0].payload).unwrap();
    assert_eq!(first["seq"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_not_authorized() {
    let broker = broker();
    let args = format!(
        "--username sensor-1 --host {} --ca-file {}",
        broker.host(),
        broker.ca_file.display()
    );
    let out = connect("wrong-pw", &args).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with("failed: connection refused: not authorized"),
        "{stdout}"
    );
    assert!(stdout.contains("hint: "), "{stdout}");

    let expect_deny = format!("{args} --expect-deny");
    let out = connect("wrong-pw", &expect_deny).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("ok: refused as expected"), "{stdout}");

    // And the right password under --expect-deny is a failure: it got through.
    let out = connect("right-pw", &expect_deny).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_broker_is_explained() {
    let broker = broker();
    let args = format!("--username sensor-1 --host {}", broker.host());
    let out = connect("right-pw", &args).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not signed by a trusted CA"), "{stderr}");
    assert!(stderr.contains("--ca-file"), "{stderr}");
}

/// The system's trust store counts too (an organisation's own CA, a TLS-inspecting proxy):
/// rustls-native-certs reads it from SSL_CERT_FILE, so the broker's CA there needs no --ca-file.
#[tokio::test(flavor = "multi_thread")]
async fn the_system_trust_store_is_trusted() {
    let broker = broker();
    let out = Command::new(BIN)
        .args([
            "connect",
            "--username",
            "sensor-1",
            "--host",
            &broker.host(),
        ])
        .env("IOT_CUSTOM_AUTH_PASSWORD", "right-pw")
        .env("SSL_CERT_FILE", &broker.ca_file)
        .env_remove("SSL_CERT_DIR")
        .env_remove("IOT_CUSTOM_AUTH_CONFIG")
        .output()
        .await
        .expect("running iot-custom-auth");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_listening_is_one_line() {
    let port = mosquitto::free_port();
    let host = format!("127.0.0.1:{port}");
    let args = format!("--username sensor-1 --host {host} --expect-deny");
    let out = connect("pw", &args).await;
    let stderr = text(&out.stderr);
    // --expect-deny must not turn "could not check" into a pass.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    let errors: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(
        errors,
        [format!(
            "error: {host} refused the connection: nothing is listening on port {port}"
        )]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_password_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["connect", "--username", "sensor-1", "--host", "localhost:1"])
        .env_remove("IOT_CUSTOM_AUTH_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--password-stdin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn password_from_stdin() {
    let broker = broker();
    let args = format!(
        "connect --username sensor-1 --host {} --ca-file {} --password-stdin",
        broker.host(),
        broker.ca_file.display()
    );
    // The flag wins over the environment.
    let mut child = Command::new(BIN)
        .args(args.split_whitespace())
        .env("IOT_CUSTOM_AUTH_PASSWORD", "wrong-pw")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"right-pw\n").await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

/// What a recording listener saw.
#[derive(Debug, Default)]
struct Seen {
    /// (SNI, ALPN protocols) of every ClientHello.
    hellos: Vec<(Option<String>, Vec<Vec<u8>>)>,
    /// (client ID, username, password) of every CONNECT.
    logins: Vec<(String, String, String)>,
}

#[derive(Debug)]
struct Recorder {
    key: Arc<CertifiedKey>,
    seen: Arc<Mutex<Seen>>,
}

impl ResolvesServerCert for Recorder {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let alpn = hello
            .alpn()
            .map(|protocols| protocols.map(<[u8]>::to_vec).collect())
            .unwrap_or_default();
        let sni = hello.server_name().map(str::to_string);
        self.seen.lock().unwrap().hellos.push((sni, alpn));
        Some(self.key.clone())
    }
}

/// How the recording listener answers after CONNACK.
#[derive(Clone, Copy)]
enum Broker {
    /// Acknowledges every message.
    Acknowledge,
    /// Hangs up on the first PUBLISH, as AWS IoT does when the policy denies the topic.
    HangUpOnPublish,
}

/// A TLS listener on localhost that offers ALPN `alpn`, records ClientHellos and CONNECTs, and
/// plays a minimal MQTT broker. Returns its port, CA file and what it saw.
async fn recording_listener(
    behaviour: Broker,
    alpn: &str,
) -> (u16, tempfile::NamedTempFile, Arc<Mutex<Seen>>) {
    let pki = Pki::new();
    let key = provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(pki.key_der.clone().into()))
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let resolver = Recorder {
        key: Arc::new(CertifiedKey::new(vec![pki.cert_der.clone().into()], key)),
        seen: seen.clone(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen_by_server = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let seen = seen_by_server.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    play_broker(tls, behaviour, &seen).await;
                }
            });
        }
    });
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &pki.ca_pem).unwrap();
    (port, ca, seen)
}

async fn play_broker(
    mut tls: rumqttc::tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    behaviour: Broker,
    seen: &Mutex<Seen>,
) {
    let mut buf = BytesMut::new();
    loop {
        let packet = match Packet::read(&mut buf, 1 << 20) {
            Ok(packet) => packet,
            Err(rumqttc::Error::InsufficientBytes(_)) => match tls.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
            Err(e) => panic!("bad packet from the client: {e}"),
        };
        let reply = match (packet, behaviour) {
            (Packet::Connect(connect), _) => {
                let (username, password) = connect
                    .login
                    .map(|login| (login.username, login.password))
                    .unwrap_or_default();
                seen.lock()
                    .unwrap()
                    .logins
                    .push((connect.client_id, username, password));
                Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))
            }
            (Packet::Publish(_), Broker::HangUpOnPublish) => return,
            (Packet::Publish(publish), Broker::Acknowledge) => {
                Packet::PubAck(PubAck::new(publish.pkid))
            }
            (Packet::PingReq, _) => Packet::PingResp,
            _ => return,
        };
        let mut out = BytesMut::new();
        reply.write(&mut out, 1 << 20).unwrap();
        if tls.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sends_alpn_mqtt_sni_and_the_authorizer_username() {
    let (port, ca, seen) = recording_listener(Broker::Acknowledge, "mqtt").await;
    let host = format!("localhost:{port}");
    let args = format!(
        "--username sensor-1 --client-id sensor-1-a --authorizer my-auth --host {host} \
         --ca-file {}",
        ca.path().display()
    );
    let out = connect("s3cret", &args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let seen = seen.lock().unwrap();
    assert!(!seen.hellos.is_empty());
    for (sni, alpn) in &seen.hellos {
        assert_eq!(sni.as_deref(), Some("localhost"));
        assert_eq!(alpn, &[b"mqtt".to_vec()]);
    }
    assert_eq!(
        seen.logins,
        [(
            "sensor-1-a".to_string(),
            "sensor-1?x-amz-customauthorizer-name=my-auth".to_string(),
            "s3cret".to_string()
        )]
    );
    assert!(text(&out.stderr).contains("ALPN `mqtt` selected"));
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_after_publish_means_the_topic_is_not_allowed() {
    let (port, ca, _) = recording_listener(Broker::HangUpOnPublish, "mqtt").await;
    let host = format!("localhost:{port}");
    let args = format!(
        "--username sensor-1 --topic other/topic --host {host} --ca-file {}",
        ca.path().display()
    );
    let out = connect("pw", &args).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with(
            "failed: publish refused: disconnected after publishing message 1 to `other/topic`"
        ),
        "{stdout}"
    );

    let expect_deny = format!("{args} --expect-deny --output json");
    let out = connect("pw", &expect_deny).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["outcome"], "publish_refused");
    assert_eq!(summary["passed"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_alpn_is_explained() {
    // A server that only speaks another protocol answers ALPN `mqtt` with no_application_protocol.
    let (port, ca, seen) = recording_listener(Broker::Acknowledge, "x-amzn-http-ca").await;
    let host = format!("localhost:{port}");
    let args = format!(
        "--username sensor-1 --host {host} --ca-file {} --expect-deny",
        ca.path().display()
    );
    let out = connect("pw", &args).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("error: {host} refused ALPN `mqtt`")),
        "{stderr}"
    );
    assert!(seen.lock().unwrap().logins.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt5_login_publishes_to_a_real_mqtt5_broker() {
    let broker = broker();
    let (_client, mut events) = subscriber(&broker).await;
    let args = format!(
        "--username sensor-1 --host {} --ca-file {} --count 2 --interval 0.05 --mqtt-version 5 \
         --output json",
        broker.host(),
        broker.ca_file.display()
    );
    let out = connect("right-pw", &args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stderr),
        broker.log()
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["outcome"], "accepted");
    assert_eq!(summary["mqtt_version"], "5");
    assert_eq!(summary["acknowledged"], 2);
    assert!(text(&out.stderr).contains("MQTT 5 CONNECT as `sensor-1`"));
    // mosquitto logs the protocol each client spoke.
    assert!(
        broker.log().contains("(p5, c1, k30, u'sensor-1')"),
        "{}",
        broker.log()
    );
    let mut received = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        while received < 2 {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap() {
                assert_eq!(p.topic, "telemetry/sensor-1");
                received += 1;
            }
        }
    })
    .await
    .expect("the subscriber got both messages");
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt5_wrong_password_shows_the_reason_code() {
    let broker = broker();
    let args = format!(
        "--username sensor-1 --host {} --ca-file {} --mqtt-version 5",
        broker.host(),
        broker.ca_file.display()
    );
    let out = connect("wrong-pw", &args).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    // mosquitto 2.0 answers an MQTT 5 client's bad password with 0x87, no reason string.
    assert!(
        stdout.starts_with(
            "failed: connection refused: not authorized: the authorizer denied this username, \
             password or client ID (CONNACK reason code 0x87 (Not authorized))"
        ),
        "{stdout}"
    );
    let out = connect("wrong-pw", &format!("{args} --output json --expect-deny")).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["outcome"], "connect_refused");
    assert_eq!(summary["reason_code"], 0x87);
    assert_eq!(summary["mqtt_version"], "5");
}

/// How the MQTT 5 test broker answers.
#[derive(Clone, Copy)]
enum Broker5 {
    /// CONNACK 0x87 with a reason string.
    RefuseLogin,
    /// Accepts the login, answers every PUBLISH with PUBACK 0x87 and a reason string.
    RefusePublish,
    /// Accepts the login, then says DISCONNECT 0x8E (another client took the ID) after the
    /// first PUBACK.
    TakeOver,
}

/// A TLS listener with ALPN `mqtt` that plays an MQTT 5 broker per `behaviour`, with rumqttc's
/// v5 codec. Returns its port and CA file.
async fn mqtt5_broker(behaviour: Broker5) -> (u16, tempfile::NamedTempFile) {
    use rumqttc::v5::mqttbytes::v5::{
        ConnAck, ConnectReturnCode, Disconnect, DisconnectProperties, DisconnectReasonCode, Packet,
        PubAck, PubAckProperties, PubAckReason,
    };
    let pki = Pki::new();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert_der.clone().into()],
            PrivateKeyDer::Pkcs8(pki.key_der.clone().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                loop {
                    let packet = match Packet::read(&mut buf, None) {
                        Ok(packet) => packet,
                        Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {
                            match tls.read_buf(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) => continue,
                            }
                        }
                        Err(e) => panic!("bad MQTT 5 packet from the client: {e}"),
                    };
                    let mut replies = Vec::new();
                    match (packet, behaviour) {
                        (Packet::Connect(..), Broker5::RefuseLogin) => {
                            let properties = connack_properties("authorizer: wrong password");
                            replies.push(Packet::ConnAck(ConnAck {
                                session_present: false,
                                code: ConnectReturnCode::NotAuthorized,
                                properties: Some(properties),
                            }));
                        }
                        (Packet::Connect(..), _) => replies.push(Packet::ConnAck(ConnAck {
                            session_present: false,
                            code: ConnectReturnCode::Success,
                            properties: None,
                        })),
                        (Packet::Publish(publish), Broker5::RefusePublish) => {
                            replies.push(Packet::PubAck(PubAck {
                                pkid: publish.pkid,
                                reason: PubAckReason::NotAuthorized,
                                properties: Some(PubAckProperties {
                                    reason_string: Some("no iot:Publish on other/topic".into()),
                                    user_properties: Vec::new(),
                                }),
                            }));
                        }
                        (Packet::Publish(publish), _) => {
                            replies.push(Packet::PubAck(PubAck::new(publish.pkid, None)));
                            replies.push(Packet::Disconnect(Disconnect {
                                reason_code: DisconnectReasonCode::SessionTakenOver,
                                properties: Some(DisconnectProperties {
                                    session_expiry_interval: None,
                                    reason_string: Some("another connection took over".into()),
                                    user_properties: Vec::new(),
                                    server_reference: None,
                                }),
                            }));
                        }
                        (Packet::PingReq(_), _) => {
                            replies.push(Packet::PingResp(rumqttc::v5::mqttbytes::v5::PingResp))
                        }
                        _ => return,
                    }
                    let mut out = BytesMut::new();
                    for reply in replies {
                        reply.write(&mut out, None).unwrap();
                    }
                    if tls.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &pki.ca_pem).unwrap();
    (port, ca)
}

/// CONNACK properties with only a reason string (rumqttc has no constructor for them).
fn connack_properties(reason: &str) -> rumqttc::v5::mqttbytes::v5::ConnAckProperties {
    rumqttc::v5::mqttbytes::v5::ConnAckProperties {
        session_expiry_interval: None,
        receive_max: None,
        max_qos: None,
        retain_available: None,
        max_packet_size: None,
        assigned_client_identifier: None,
        topic_alias_max: None,
        reason_string: Some(reason.into()),
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        subscription_identifiers_available: None,
        shared_subscription_available: None,
        server_keep_alive: None,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt5_refusals_show_the_brokers_reason_string() {
    let cases = [
        (
            Broker5::RefuseLogin,
            "failed: connection refused: not authorized: the authorizer denied this username, \
             password or client ID (CONNACK reason code 0x87 (Not authorized), reason string \
             \"authorizer: wrong password\")",
            0x87,
        ),
        (
            Broker5::RefusePublish,
            "failed: publish refused: message 1 to `other/topic` was refused (PUBACK reason code \
             0x87 (Not authorized), reason string \"no iot:Publish on other/topic\"): the policy \
             does not allow this client to publish to that topic",
            0x87,
        ),
        (
            Broker5::TakeOver,
            "failed: the broker closed the connection between messages, after 1 acknowledged \
             (DISCONNECT reason code 0x8E (Session taken over), reason string \"another \
             connection took over\"): another client connected with the same client ID, or the \
             authorizer's disconnectAfterInSeconds elapsed",
            0x8E,
        ),
    ];
    for (behaviour, headline, code) in cases {
        let (port, ca) = mqtt5_broker(behaviour).await;
        let args = format!(
            "--username sensor-1 --topic other/topic --count 2 --interval 0.2 --mqtt-version 5 \
             --host localhost:{port} --ca-file {}",
            ca.path().display()
        );
        let out = connect("pw", &args).await;
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
        assert_eq!(stdout.lines().next(), Some(headline), "{stdout}");
        let out = connect("pw", &format!("{args} --output json")).await;
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["reason_code"], code, "{summary}");
        assert!(summary["reason_string"].is_string(), "{summary}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt5_to_an_mqtt311_only_broker_says_which_version_to_use() {
    // What an MQTT 3.1.1 broker answers a CONNECT of an unknown protocol level (MQTT 3.1.1
    // §3.1.2.2): CONNACK return code 1, then it hangs up.
    let pki = Pki::new();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert_der.clone().into()],
            PrivateKeyDer::Pkcs8(pki.key_der.clone().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                // The whole CONNECT (one small record), so closing sends no reset.
                let mut connect = [0u8; 1024];
                if let Ok(1..) = tls.read(&mut connect).await {
                    let _ = tls.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
                    let _ = tls.flush().await;
                    // Until the client hangs up.
                    let _ = tls.read(&mut connect).await;
                }
            }
        }
    });
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &pki.ca_pem).unwrap();
    let args = format!(
        "--username sensor-1 --mqtt-version 5 --host localhost:{port} --ca-file {}",
        ca.path().display()
    );
    let out = connect("pw", &args).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with(
            "failed: the broker does not accept MQTT 5 (CONNACK return code 1 (Unacceptable \
             protocol version))"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("hint: try --mqtt-version 3.1.1"),
        "{stdout}"
    );
}
