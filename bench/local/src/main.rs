//! Benchmark of `iot-custom-auth local` (not a test). With N devices in the config it measures:
//! - logins per second: TCP + TLS (ALPN `mqtt`) + CONNECT + the authorizer call in the warm node
//!   worker + the policy's `iot:Connect` check + CONNACK, from C concurrent clients;
//! - publish throughput: messages per second from one device to a subscriber, each checked for
//!   `iot:Publish` on the way in and `iot:Receive` on the way out, at QoS 0 and QoS 1;
//! - each of those over MQTT 3.1.1 and MQTT 5 (rumqttc's v4 and v5 clients);
//! - QoS 1 publishes acknowledged per second while a subscriber that has stopped reading is
//!   attached (it must not slow the publisher down).
//!
//! Usage (see run.sh): local-bench BINARY [--devices 1000] [--logins 2000] [--concurrency 8]
//! [--messages 20000] [--mqtt5 0] [--stalled-messages N]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, Transport};

mod v5;
use sha2::{Digest, Sha256};

struct Options {
    binary: PathBuf,
    devices: usize,
    logins: usize,
    concurrency: usize,
    messages: usize,
    /// 0 leaves MQTT 5 out (to measure a build without it).
    mqtt5: usize,
    /// Messages for the stalled-subscriber figure (0 leaves it out).
    stalled_messages: Option<usize>,
    authorizer_workers: Option<usize>,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let binary = args
        .next()
        .expect("usage: local-bench BINARY [--devices N] ...")
        .into();
    let mut o = Options {
        binary,
        devices: 1000,
        logins: 2000,
        concurrency: 8,
        messages: 20_000,
        mqtt5: 1,
        stalled_messages: None,
        authorizer_workers: None,
    };
    while let (Some(flag), Some(value)) = (args.next(), args.next()) {
        let value: usize = value.parse().expect("a number");
        match flag.as_str() {
            "--devices" => o.devices = value,
            "--logins" => o.logins = value,
            "--concurrency" => o.concurrency = value,
            "--messages" => o.messages = value,
            "--mqtt5" => o.mqtt5 = value,
            "--stalled-messages" => o.stalled_messages = Some(value),
            "--authorizer-workers" => o.authorizer_workers = Some(value),
            _ => panic!("unknown flag {flag}"),
        }
    }
    o
}

pub fn password(i: usize) -> String {
    format!("bench-password-{i:05}-aZ9xQ2mT7kLp")
}

pub fn username(i: usize) -> String {
    format!("dev{i:05}")
}

/// The config with `n` devices, verifiers computed as `device add` does; device 0 also
/// subscribes to telemetry/#.
fn write_config(path: &Path, n: usize) {
    let mut toml = String::new();
    for i in 0..n {
        let salt = [i as u8; 16];
        let hash = Sha256::new()
            .chain_update(salt)
            .chain_update(password(i))
            .finalize();
        let verifier = format!("sha256:{}:{}", B64.encode(salt), B64.encode(hash));
        let subscribe = if i == 0 { r#"["telemetry/#"]"# } else { "[]" };
        toml.push_str(&format!(
            "[[devices]]\nusername = \"{}\"\npassword_verifier = \"{verifier}\"\nsubscribe = {subscribe}\n\n",
            username(i)
        ));
    }
    std::fs::write(path, toml).unwrap();
}

struct Gateway {
    child: Child,
    port: u16,
    ca_file: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(binary: &Path, dir: &Path, workers: Option<usize>) -> Gateway {
    let workers = workers.map(|n| ["--authorizer-workers".to_string(), n.to_string()]);
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(dir.join("bench.toml"))
        .args([
            "--output",
            "json",
            "local",
            "--listen",
            "127.0.0.1:0",
            "--cert-dir",
        ])
        .arg(dir.join("certs"))
        .args(workers.iter().flatten())
        .env("TMPDIR", dir)
        .stdout(Stdio::piped())
        // The CloudWatch-style log is written as usual (its cost counts) and thrown away.
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the gateway");
    let mut text = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        text.push_str(&line);
        if line == "}" {
            break;
        }
    }
    let listening: serde_json::Value = serde_json::from_str(&text).expect("the gateway started");
    let address: std::net::SocketAddr = listening["address"].as_str().unwrap().parse().unwrap();
    Gateway {
        child,
        port: address.port(),
        ca_file: listening["ca_file"].as_str().unwrap().into(),
    }
}

pub fn tls(ca_file: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    Arc::new(config)
}

fn client(port: u16, tls: &Arc<rustls::ClientConfig>, device: usize) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(username(device), "localhost", port);
    options.set_credentials(username(device), password(device));
    options.set_transport(Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls.clone()),
    ));
    options.set_keep_alive(Duration::from_secs(60));
    options.set_inflight(100);
    AsyncClient::new(options, 1000)
}

/// Polls until the CONNACK; panics on a refusal (every bench login must succeed).
async fn connected(events: &mut EventLoop) {
    loop {
        match events.poll().await.expect("login") {
            Event::Incoming(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
                return;
            }
            _ => continue,
        }
    }
}

async fn login_once(port: u16, tls: &Arc<rustls::ClientConfig>, device: usize) -> Duration {
    let started = Instant::now();
    let (client, mut events) = client(port, tls, device);
    connected(&mut events).await;
    let took = started.elapsed();
    client.disconnect().await.unwrap();
    while let Ok(event) = events.poll().await {
        if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
            break;
        }
    }
    took
}

/// `logins` logins from `concurrency` tasks; each task owns the devices d with
/// d % concurrency == task, so no two live connections share a client ID.
async fn logins(
    o: &Options,
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    mqtt5: bool,
) -> (f64, Vec<Duration>) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..o.concurrency {
        let (tls, devices, concurrency) = (tls.clone(), o.devices, o.concurrency);
        let count = o.logins / o.concurrency;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for k in 0..count {
                let device = (task + k * concurrency) % devices;
                let took = if mqtt5 {
                    v5::login_once(port, &tls, device).await
                } else {
                    login_once(port, &tls, device).await
                };
                latencies.push(took);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    (rate, latencies)
}

/// Messages per second from device 1 to device 0 (subscribed to telemetry/#), counted when the
/// subscriber has them all.
async fn publish_rate(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    messages: usize,
    qos: QoS,
) -> (f64, usize) {
    let (subscriber, mut sub_events) = client(port, tls, 0);
    connected(&mut sub_events).await;
    subscriber
        .subscribe("telemetry/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_events.poll().await.unwrap() {
            break;
        }
    }
    let (publisher, mut pub_events) = client(port, tls, 1);
    connected(&mut pub_events).await;
    let topic = format!("telemetry/{}", username(1));
    let started = Instant::now();
    let publishing = tokio::spawn(async move {
        for i in 0..messages {
            publisher
                .publish(&topic, qos, false, i.to_string())
                .await
                .unwrap();
        }
        publisher
    });
    let driving = tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });
    let mut received = 0;
    let mut last = started;
    // Messages dropped for a subscriber that falls behind never come: two quiet seconds end
    // the wait, and the rate is counted up to the last message received.
    let quiet = Duration::from_secs(2);
    while received < messages {
        let event = tokio::time::timeout(quiet, sub_events.poll()).await;
        match event {
            Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                received += 1;
                last = Instant::now();
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    let rate = received as f64 / (last - started).as_secs_f64();
    // Messages may be dropped for a subscriber that falls behind (as IoT drops them for a client
    // with its in-flight messages unacknowledged): the count delivered is reported.
    let _ = publishing.await;
    driving.abort();
    (rate, received)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let o = options();
    let dir = std::env::temp_dir().join(format!("local-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_config(&dir.join("bench.toml"), o.devices);
    let gateway = start_gateway(&o.binary, &dir, o.authorizer_workers);
    let tls = tls(&gateway.ca_file);

    for device in 0..20 {
        login_once(gateway.port, &tls, device).await;
    }
    let versions: &[(&str, bool)] = if o.mqtt5 == 0 {
        &[("MQTT 3.1.1", false)]
    } else {
        &[("MQTT 3.1.1", false), ("MQTT 5", true)]
    };
    for &(version, mqtt5) in versions {
        let (rate, latencies) = logins(&o, gateway.port, &tls, mqtt5).await;
        println!(
            "{version} logins: {rate:.0}/s ({} logins, {} concurrent, {} devices configured); latency p50 {:.1} ms, p99 {:.1} ms",
            latencies.len(),
            o.concurrency,
            o.devices,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let (rate, received) = if mqtt5 {
                v5::publish_rate(gateway.port, &tls, o.messages, qos).await
            } else {
                publish_rate(gateway.port, &tls, o.messages, qos).await
            };
            println!(
                "{version} publish {qos:?}: {rate:.0} messages/s delivered ({received} of {} messages, publish + receive policy checks)",
                o.messages
            );
        }
    }
    let stalled = o.stalled_messages.unwrap_or(o.messages);
    if stalled > 0 {
        let (rate, acked) = stalled_rate(gateway.port, &tls, stalled).await;
        println!(
            "MQTT 3.1.1 publish AtLeastOnce with a stalled subscriber attached: {rate:.0} messages/s acknowledged ({acked} of {stalled} messages)"
        );
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

/// QoS 1 publishes acknowledged per second from device 1 while device 0, subscribed to
/// telemetry/#, has stopped reading (its event loop is no longer polled).
async fn stalled_rate(port: u16, tls: &Arc<rustls::ClientConfig>, messages: usize) -> (f64, usize) {
    let (stalled, mut stalled_events) = client(port, tls, 0);
    connected(&mut stalled_events).await;
    stalled
        .subscribe("telemetry/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = stalled_events.poll().await.unwrap() {
            break;
        }
    }
    // From here on nobody reads the stalled subscriber's socket.
    let (publisher, mut pub_events) = client(port, tls, 1);
    connected(&mut pub_events).await;
    let topic = format!("telemetry/{}", username(1));
    let payload = vec![b'x'; 1024];
    let started = Instant::now();
    let publishing = tokio::spawn(async move {
        for _ in 0..messages {
            publisher
                .publish(&topic, QoS::AtLeastOnce, false, payload.clone())
                .await
                .unwrap();
        }
        publisher
    });
    let mut acked = 0;
    while acked < messages {
        match tokio::time::timeout(Duration::from_secs(10), pub_events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    let rate = acked as f64 / started.elapsed().as_secs_f64();
    let _ = publishing.await;
    drop(stalled_events);
    (rate, acked)
}
