//! `local` at its edges, end to end with the built binary: the accept loop under file-descriptor
//! exhaustion, the TLS alert for clients without ALPN `mqtt`, the authorizer workers (deadline,
//! environment, temp dir), escaping of client text, and the hints it prints.

use std::io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_iot-custom-auth");

/// A running `local` with one device, `sensor1`, that may publish to telemetry/sensor1.
struct Gateway {
    child: Child,
    dir: TempDir,
    address: SocketAddr,
    ca_file: PathBuf,
    password: String,
    /// What `local` printed on stdout before listening (text mode only).
    banner: String,
}

/// How to start it.
#[derive(Default)]
struct Start<'a> {
    args: &'a [&'a str],
    env: &'a [(&'a str, &'a str)],
    /// `ulimit -n` to run under.
    open_files: Option<u32>,
    /// Text output instead of JSON, to read the hints.
    text: bool,
}

impl Gateway {
    fn start(how: Start) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("iot-custom-auth.toml");
        let password = add_device(&config, "sensor1");
        let log = std::fs::File::create(dir.path().join("local.log")).unwrap();
        let output = if how.text { "text" } else { "json" };
        let mut command = match how.open_files {
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), BIN]);
                sh
            }
            None => Command::new(BIN),
        };
        let mut child = command
            .args(["--config".as_ref(), config.as_os_str()])
            .args(["--output", output, "local", "--listen", "127.0.0.1:0"])
            .args(["--cert-dir".as_ref(), dir.path().join("certs").as_os_str()])
            .args(how.args)
            .envs(how.env.iter().copied())
            // The unpacked authorizer goes to the temp dir, and goes with it.
            .env("TMPDIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (address, ca_file, banner) = if how.text {
            read_banner(stdout, &dir)
        } else {
            let json = read_json(stdout, &dir);
            let address = json["address"].as_str().unwrap().parse().unwrap();
            (
                address,
                json["ca_file"].as_str().unwrap().into(),
                String::new(),
            )
        };
        Self {
            child,
            dir,
            address,
            ca_file,
            password,
            banner,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("local.log")).unwrap_or_default()
    }

    fn log_bytes(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("local.log")).unwrap_or_default()
    }

    /// `iot-custom-auth connect` against this gateway, started now.
    fn spawn_connect(&self, username: &str, password: &str, args: &[&str]) -> Child {
        let mut child = Command::new(BIN)
            .args(["--output", "json", "connect", "--host"])
            .arg(format!("localhost:{}", self.address.port()))
            .arg("--ca-file")
            .arg(&self.ca_file)
            .args(["--username", username, "--password-stdin"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child
    }

    fn connect(&self, username: &str, password: &str, args: &[&str]) -> (Value, Output) {
        let out = self
            .spawn_connect(username, password, args)
            .wait_with_output()
            .unwrap();
        summary(out)
    }

    fn sensor(&self, args: &[&str]) -> (Value, Output) {
        self.connect("sensor1", &self.password.clone(), args)
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- local's stderr ---\n{}", self.log());
        }
    }
}

fn summary(out: Output) -> (Value, Output) {
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "connect printed no summary: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (summary, out)
}

fn add_device(config: &Path, name: &str) -> String {
    let out = Command::new(BIN)
        .args(["--config".as_ref(), config.as_os_str()])
        .args(["--output", "json", "device", "add", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    added["password"].as_str().unwrap().to_string()
}

fn early_exit(dir: &TempDir) -> ! {
    let log = std::fs::read_to_string(dir.path().join("local.log")).unwrap_or_default();
    panic!("local exited before listening:\n{log}");
}

/// The pretty-printed JSON `local` writes on stdout once it listens.
fn read_json(stdout: std::process::ChildStdout, dir: &TempDir) -> Value {
    let mut text = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        text.push_str(&line);
        if line == "}" {
            return serde_json::from_str(&text).unwrap();
        }
    }
    early_exit(dir)
}

/// The text banner: address, CA file, and the whole text.
fn read_banner(stdout: std::process::ChildStdout, dir: &TempDir) -> (SocketAddr, PathBuf, String) {
    let mut text = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        text.push_str(&line);
        text.push('\n');
        if line == "Stop with Ctrl-C." {
            let address = text
                .strip_prefix("listening on ")
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap()
                .parse()
                .unwrap();
            let ca = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("CA file:"))
                .unwrap()
                .trim()
                .into();
            return (address, ca, text);
        }
    }
    early_exit(dir)
}

/// A `--code` directory whose handler is `body`; `allow` is a response that lets anyone
/// connect and publish anywhere.
fn authorizer(body: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let allow = r#"{ isAuthenticated: true, principalId: "any", policyDocuments: [
        { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "iot:*", Resource: "*" }] }],
        refreshAfterInSeconds: 300, disconnectAfterInSeconds: 300 }"#;
    std::fs::write(
        dir.path().join("index.mjs"),
        format!("const allow = {allow};\nexport const handler = async (event) => {{ {body} }};\n"),
    )
    .unwrap();
    dir
}

#[test]
fn fd_exhaustion_under_a_low_ulimit_is_survived() {
    let mut gw = Gateway::start(Start {
        open_files: Some(64),
        ..Start::default()
    });
    // Far more plain TCP connections than the process has descriptors, held open.
    let mut held = Vec::new();
    for _ in 0..300 {
        if let Ok(tcp) = TcpStream::connect(gw.address) {
            held.push(tcp);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(gw.alive(), "local exited under the flood:\n{}", gw.log());
    let log = gw.log();
    assert!(log.contains("the open-files limit is 64"), "{log}");
    assert!(log.contains("turned away 127.0.0.1:"), "{log}");
    drop(held);
    // Once the flood is over, a device logs in and publishes as before.
    let (summary, out) = gw.sensor(&["--timeout", "10"]);
    assert_eq!(
        summary["outcome"],
        "accepted",
        "{summary}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(gw.alive());
}

#[test]
fn the_pending_cap_turns_away_idle_connections_but_not_logged_in_ones() {
    let gw = Gateway::start(Start {
        args: &["--max-pending", "2"],
        ..Start::default()
    });
    // A device that logged in keeps its connection while idle clients take every slot for
    // connections not yet logged in.
    let device = gw.spawn_connect(
        "sensor1",
        &gw.password,
        &["--count", "3", "--interval", "1"],
    );
    std::thread::sleep(Duration::from_millis(700));
    let mut byte = [0u8; 1];
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(gw.address).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let kind = tcp.read(&mut byte).unwrap_err().kind();
        assert!(
            matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "an idle connection within --max-pending is kept: the logged-in device holds no \
             slot ({kind:?})"
        );
        idle.push(tcp);
    }
    let mut third = TcpStream::connect(gw.address).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        third.read(&mut byte).ok(),
        Some(0),
        "the third idle connection is closed at once"
    );
    let (summary, _) = summary(device.wait_with_output().unwrap());
    assert_eq!(
        summary["outcome"], "accepted",
        "the logged-in device was not disturbed: {summary}"
    );
    drop(idle);
    assert!(gw.log().contains("--max-pending 2"), "{}", gw.log());
}

/// A rustls client config that trusts `local`'s CA and offers `alpn`.
fn client_tls(ca_file: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
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
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS handshake with `local` from rustls, offering `alpn`.
fn rustls_handshake(gw: &Gateway, alpn: &[&[u8]]) -> Result<Option<Vec<u8>>, rustls::Error> {
    let config = client_tls(&gw.ca_file, alpn);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tcp = TcpStream::connect(gw.address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e) => {
                return Err(e
                    .into_inner()
                    .and_then(|inner| inner.downcast::<rustls::Error>().ok())
                    .map(|boxed| *boxed)
                    .unwrap_or(rustls::Error::General("no TLS error".into())));
            }
        }
    }
    Ok(conn.alpn_protocol().map(<[u8]>::to_vec))
}

#[test]
fn no_alpn_gets_the_no_application_protocol_alert() {
    let gw = Gateway::start(Start::default());
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol);
    assert_eq!(rustls_handshake(&gw, &[]), Err(alert.clone()), "no ALPN");
    assert_eq!(
        rustls_handshake(&gw, &[b"x-amzn-mqtt-ca"]),
        Err(alert),
        "another protocol only"
    );
    assert_eq!(
        rustls_handshake(&gw, &[b"x-amzn-mqtt-ca", b"mqtt"]),
        Ok(Some(b"mqtt".to_vec())),
        "mqtt among others"
    );

    // OpenSSL's client, as mosquitto and paho use it, names the alert.
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &gw.address.to_string()])
        .args(["-servername", "localhost", "-CAfile"])
        .arg(&gw.ca_file)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (apt-get install openssl)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("no application protocol"), "{said}");
    let log = gw.log();
    assert!(log.contains("did not negotiate ALPN `mqtt`"), "{log}");
    assert!(
        !log.contains("START RequestId"),
        "no ALPN, no authorizer call"
    );
}

/// Denies the user `hang` by never answering; others wait `delay_ms`, then may connect.
fn hanging_authorizer(delay_ms: u32) -> TempDir {
    authorizer(&format!(
        r#"if (event.protocolData.mqtt.username === "hang") await new Promise(() => {{}});
           await new Promise((r) => setTimeout(r, {delay_ms}));
           return allow;"#
    ))
}

#[test]
fn a_hung_authorizer_call_does_not_delay_other_logins() {
    let code = hanging_authorizer(0);
    let gw = Gateway::start(Start {
        args: &["--code", code.path().to_str().unwrap()],
        ..Start::default()
    });
    let hung = gw.spawn_connect("hang", "x", &["--timeout", "10", "--client-id", "hang"]);
    std::thread::sleep(Duration::from_millis(500));
    // Behind one worker and no deadline this login waited out the hung call's 5 s.
    for _ in 0..3 {
        let (summary, _) = gw.sensor(&["--timeout", "3"]);
        assert_eq!(summary["outcome"], "accepted", "{summary}");
    }
    let (hung, _) = summary(hung.wait_with_output().unwrap());
    assert_eq!(hung["outcome"], "connect_refused", "{hung}");
    assert!(
        gw.log().contains("Task timed out after 5.00 seconds"),
        "{}",
        gw.log()
    );
}

/// With one worker held by a hung call, a login 300 ms behind it: refused, whatever the reason.
fn refused_behind_a_hung_call_on_one_worker(code: &TempDir) -> Gateway {
    let gw = Gateway::start(Start {
        args: &[
            "--code",
            code.path().to_str().unwrap(),
            "--authorizer-workers",
            "1",
        ],
        ..Start::default()
    });
    let hung = gw.spawn_connect("hang", "x", &["--timeout", "10", "--client-id", "hang"]);
    std::thread::sleep(Duration::from_millis(300));
    let (queued, _) = gw.sensor(&["--timeout", "10"]);
    assert_eq!(queued["outcome"], "connect_refused", "{queued}");
    let _ = hung.wait_with_output();
    gw
}

#[test]
fn a_login_queued_behind_busy_workers_is_refused_at_its_own_deadline() {
    // One worker, held by a hung call for 5 s; the next login needs 1 s of it. IoT gives it 5 s
    // from its CONNECT, queueing included, so it is refused rather than served late.
    let code = hanging_authorizer(1000);
    let gw = refused_behind_a_hung_call_on_one_worker(&code);
    // With the worker free again, the same login goes through.
    let (again, _) = gw.sensor(&["--timeout", "10"]);
    assert_eq!(again["outcome"], "accepted", "{again}");
}

#[test]
fn a_login_no_worker_can_take_in_time_is_refused_saying_so() {
    // One worker, whose process needs 1 s to start. The hung call holds it for 5 s; the login
    // 300 ms behind it would get the replacement process only 700 ms after its own deadline.
    let code = hanging_authorizer(0);
    let index = code.path().join("index.mjs");
    let source = std::fs::read_to_string(&index).unwrap();
    std::fs::write(
        &index,
        format!("await new Promise((r) => setTimeout(r, 1000));\n{source}"),
    )
    .unwrap();
    let gw = refused_behind_a_hung_call_on_one_worker(&code);
    assert!(
        gw.log().contains(
            "all 1 authorizer workers stayed busy past IoT's 5 s limit for this login (raise \
             --authorizer-workers if the authorizer is slow)"
        ),
        "{}",
        gw.log()
    );
}

#[test]
fn the_authorizer_sees_only_what_lambda_gives_a_function() {
    let code = authorizer(
        r#"const fs = await import("node:fs");
           const path = await import("node:path");
           const dir = path.dirname(process.env.LAMBDA_TASK_ROOT);
           const mode = (fs.statSync(dir).mode & 0o777).toString(8);
           console.log("ENV " + JSON.stringify({ env: process.env, mode }));
           return allow;"#,
    );
    let secrets = [
        ("AWS_ACCESS_KEY_ID", "AKIAOPERATORKEY12345"),
        ("AWS_SECRET_ACCESS_KEY", "operator-secret-key-do-not-leak"),
        ("AWS_SESSION_TOKEN", "operator-session-token"),
        ("AWS_PROFILE", "operator-profile"),
        ("IOT_CUSTOM_AUTH_PASSWORD", "device-password-do-not-leak"),
        ("HOME", "/home/operator-home"),
    ];
    let gw = Gateway::start(Start {
        args: &["--code", code.path().to_str().unwrap()],
        env: &secrets,
        ..Start::default()
    });
    let (summary, _) = gw.sensor(&[]);
    assert_eq!(summary["outcome"], "accepted", "{summary}");
    let log = gw.log();
    let line = log
        .lines()
        .find_map(|l| l.split_once("ENV ").map(|(_, json)| json))
        .unwrap_or_else(|| panic!("{log}"));
    let seen: Value = serde_json::from_str(line).unwrap();
    let env = seen["env"].as_object().unwrap();
    let lambda = [
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "LAMBDA_TASK_ROOT",
        "_HANDLER",
        "LANG",
        "TZ",
        "PATH",
    ];
    for name in env.keys() {
        assert!(lambda.contains(&name.as_str()), "{name} leaked: {env:?}");
    }
    let function = env["AWS_LAMBDA_FUNCTION_NAME"].as_str().unwrap();
    assert!(function.ends_with("-authorizer"), "{function}");
    for (name, value) in secrets {
        assert!(
            !log.contains(value),
            "{name}'s value reached the authorizer"
        );
    }
    assert_eq!(seen["mode"], "700", "the unpacked package's dir is private");
}

#[test]
fn client_text_is_escaped_before_it_reaches_the_terminal() {
    let code = authorizer(
        r#"console.log("user:", event.protocolData.mqtt.username);
           return allow;"#,
    );
    let gw = Gateway::start(Start {
        args: &["--code", code.path().to_str().unwrap()],
        ..Start::default()
    });
    let evil = "x\u{1b}]0;owned\u{7}\u{1b}[2J\rSTART RequestId: forged\n\u{9b}31m";
    let (summary, _) = gw.connect(evil, "pw", &["--client-id", "c1", "--topic", "t/c1"]);
    assert_eq!(summary["outcome"], "accepted", "{summary}");
    let log = gw.log_bytes();
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains(r"user: x\u{1b}]0;owned\u{7}\u{1b}[2J\rSTART RequestId: forged\n\u{9b}31m"),
        "{text}"
    );
    for control in [0x1b, b'\r', 0x07] {
        assert!(
            !log.contains(&control),
            "{control:#x} reached stderr: {text}"
        );
    }
    assert!(!text.contains("\u{9b}"));
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("START RequestId"))
            .count(),
        1,
        "{text}"
    );
}

#[test]
fn the_mosquitto_hint_keeps_the_password_out_of_argv_and_works() {
    let mut gw = Gateway::start(Start {
        text: true,
        ..Start::default()
    });
    let hint = gw
        .banner
        .lines()
        .find(|l| l.contains("mosquitto_pub -h"))
        .unwrap_or_else(|| panic!("{}", gw.banner))
        .trim()
        .replace("<device>", "sensor1");
    let (_, mosquitto_args) = hint.split_once("mosquitto_pub ").unwrap();
    assert!(!mosquitto_args.contains("-P"), "{hint}");
    assert!(!gw.banner.contains(&gw.password));
    let out = Command::new("sh")
        .args(["-c", &hint])
        .env("IOT_CUSTOM_AUTH_PASSWORD", &gw.password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{hint}\n{}{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    assert!(gw.alive());
}

#[test]
fn connect_over_mqtt5_against_local_shows_its_reason_codes() {
    let gw = Gateway::start(Start::default());
    let v5 = ["--mqtt-version", "5", "--interval", "0"];
    let (accepted, _) = gw.sensor(&v5);
    assert_eq!(accepted["outcome"], "accepted", "{accepted}");
    assert_eq!(accepted["mqtt_version"], "5");

    let (wrong, _) = gw.connect("sensor1", "wrong-password", &v5);
    assert_eq!(wrong["outcome"], "connect_refused", "{wrong}");
    assert_eq!(wrong["reason_code"], 0x86, "{wrong}");

    let mut outside = v5.to_vec();
    outside.extend(["--topic", "other/topic"]);
    let (refused, _) = gw.sensor(&outside);
    assert_eq!(refused["outcome"], "publish_refused", "{refused}");
    assert_eq!(refused["reason_code"], 0x87, "{refused}");
    let reason = refused["reason"].as_str().unwrap();
    assert!(
        reason.contains("(PUBACK reason code 0x87 (Not authorized)"),
        "{reason}"
    );
}
