//! A throwaway TLS broker for tests: a fresh CA and server certificate (rcgen), a password file,
//! and Debian's mosquitto on a random local port, killed on drop.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// A CA and a server certificate it signed, valid for `localhost` and 127.0.0.1.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

impl Pki {
    pub fn new() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "iot-custom-auth test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");

        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
        let cert = params.signed_by(&key, &ca).expect("server certificate");
        Self {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}

/// A free TCP port on 127.0.0.1 (free when this returns; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// mosquitto's tools live in /usr/sbin on Debian, which is not always on PATH.
pub fn find_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found: install it with `apt-get install -y mosquitto`")
        })
}

pub struct Mosquitto {
    pub port: u16,
    pub pki: Pki,
    pub ca_file: PathBuf,
    child: Child,
    dir: TempDir,
}

impl Mosquitto {
    /// Starts a broker that accepts only `users` (name, password) over TLS.
    pub fn start(users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki::new();
        let ca_file = write(dir.path(), "ca.pem", &pki.ca_pem);
        let cert = write(dir.path(), "server.pem", &pki.cert_pem);
        let key = write(dir.path(), "server.key", &pki.key_pem);
        let passwords = password_file(dir.path(), users);
        let port = free_port();
        let config = write(
            dir.path(),
            "mosquitto.conf",
            &format!(
                "set_tcp_nodelay true\n\
                 allow_anonymous false\n\
                 password_file {passwords}\n\
                 persistence false\n\
                 log_dest stderr\n\
                 listener {port} 127.0.0.1\n\
                 certfile {cert}\n\
                 keyfile {key}\n",
                passwords = passwords.display(),
                cert = cert.display(),
                key = key.display(),
            ),
        );
        // Started as root, mosquitto drops to the `mosquitto` user, which must read these files.
        make_readable(dir.path());
        let log = fs::File::create(dir.path().join("mosquitto.log")).expect("log file");
        let child = Command::new(find_program("mosquitto"))
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting mosquitto");
        let mut broker = Self {
            port,
            pki,
            ca_file,
            child,
            dir,
        };
        broker.wait_until_listening();
        broker
    }

    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mosquitto exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).expect("writing a broker file");
    path
}

fn password_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("passwd");
    fs::write(&path, "").expect("password file");
    for (user, password) in users {
        let status = Command::new(find_program("mosquitto_passwd"))
            .arg("-b")
            .arg(&path)
            .args([user, password])
            .stdout(Stdio::null())
            .status()
            .expect("running mosquitto_passwd");
        assert!(status.success(), "mosquitto_passwd failed for {user}");
    }
    path
}

fn make_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
    for entry in fs::read_dir(dir).expect("list dir").flatten() {
        fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o644)).expect("chmod file");
    }
}
