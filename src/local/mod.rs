//! `local`: what AWS IoT Core does for a custom-auth device, on this machine. A TLS MQTT listener
//! that, like IoT on port 443, requires ALPN `mqtt`, runs the same authorizer package `setup`
//! would deploy under the local `node` on each CONNECT, and enforces the policies it returns.
//!
//! - `certs`: the throwaway CA and server certificate.
//! - `lambda`: the warm node worker, the event IoT sends, CloudWatch-style logs.
//! - `response`: the authorizer response contract.
//! - `iot_policy`: policy evaluation (pure, table-tested).
//! - `broker` / `session`: the listener, routing, and one connection's life.

mod broker;
mod certs;
mod iot_policy;
mod lambda;
mod response;
mod session;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::app::App;
use crate::bundle;
use crate::error::{Failure, exit};

/// The only ALPN protocol IoT accepts for MQTT with custom authentication.
pub const ALPN: &[u8] = b"mqtt";
/// The account in local ARNs: obviously not a real one.
const LOCAL_ACCOUNT: &str = "000000000000";
const DEFAULT_REGION: &str = "us-east-1";

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Your own authorizer (a directory or a .zip) instead of the bundled one [default: the
    /// config's `deployment.code`].
    #[arg(long, value_name = "DIR|ZIP")]
    pub code: Option<PathBuf>,
    /// Where the throwaway CA and server certificate are kept [default:
    /// `.iot-custom-auth/local` next to the config file].
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// The Node.js binary that runs the authorizer.
    #[arg(
        long,
        value_name = "PATH",
        env = "IOT_CUSTOM_AUTH_NODE",
        default_value = "node"
    )]
    pub node: PathBuf,
}

/// Where progress and the authorizer's logs go: stderr, unless -q.
#[derive(Clone, Copy)]
pub struct Console {
    quiet: bool,
}

impl Console {
    pub fn line(&self, line: impl AsRef<str>) {
        if let Some(tap) = TAP.get() {
            let _ = tap.send(line.as_ref().to_string());
        } else if !self.quiet {
            eprintln!("{}", line.as_ref());
        }
    }
}

/// Where console lines go instead of stderr once [`tap_console`] was called. A process-wide
/// sink rather than a field, so that `Console` stays a `Copy` flag for every caller.
static TAP: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<String>> =
    std::sync::OnceLock::new();

/// Sends every console line of the gateways in this process (its decisions, the authorizer's
/// logs) to the receiver instead of stderr, for `demo`, which narrates them. `None` when already
/// tapped.
pub fn tap_console() -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    TAP.set(tx).ok().map(|()| rx)
}

/// Printed on stdout once the listener is up; tests read the address from it.
#[derive(Serialize)]
struct Listening {
    address: SocketAddr,
    ca_file: PathBuf,
    authorizer: String,
    arn_prefix: String,
}

impl fmt::Display for Listening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "listening on {} (MQTT over TLS, ALPN mqtt)",
            self.address
        )?;
        writeln!(f, "  CA file:    {}", self.ca_file.display())?;
        writeln!(f, "  authorizer: {}", self.authorizer)?;
        writeln!(f, "  ARNs:       {}:…", self.arn_prefix)?;
        writeln!(f, "Connect a device from another terminal:")?;
        writeln!(
            f,
            "  iot-custom-auth connect --host {} --ca-file {} --username <device>",
            self.address,
            self.ca_file.display()
        )?;
        writeln!(f, "Stop with Ctrl-C.")
    }
}

pub async fn run(app: &App, args: LocalArgs) -> Result<u8> {
    let started = start(app, &args).await?;
    app.print(&started.listening);
    tokio::select! {
        served = started.serve() => served?,
        _ = shutdown() => app.progress("stopped"),
    }
    Ok(exit::OK)
}

/// A gateway listening and ready to serve: `run` prints it and serves until Ctrl-C; `demo`
/// serves it in a task of its own and drops it when done.
pub struct Started {
    listening: Listening,
    listener: TcpListener,
    gateway: Arc<broker::Gateway>,
    code_dir: CodeDir,
}

impl Started {
    pub fn address(&self) -> SocketAddr {
        self.listening.address
    }

    pub fn ca_file(&self) -> &Path {
        &self.listening.ca_file
    }

    /// Serves until dropped; the unpacked authorizer is removed then.
    pub async fn serve(self) -> Result<()> {
        let _code_dir = self.code_dir;
        broker::serve(self.listener, self.gateway).await
    }
}

/// Builds the package, starts the authorizer and binds the listener.
pub async fn start(app: &App, args: &LocalArgs) -> Result<Started> {
    let config = app.config()?;
    let region = app.global.region.as_deref().unwrap_or(DEFAULT_REGION);
    let arn_prefix = bundle::arn_prefix(region, LOCAL_ACCOUNT);
    let package = bundle::build(&config, args.code.as_deref(), &arn_prefix)?;
    let code_dir = CodeDir::extract(&package.zip)?;
    let cert_dir = args
        .cert_dir
        .clone()
        .unwrap_or_else(|| default_cert_dir(&app.global.config));
    let identity = certs::load_or_create(&cert_dir)?;
    if identity.created {
        app.progress(format!(
            "created a throwaway CA and server certificate in {}",
            cert_dir.display()
        ));
    }
    let ca_file = identity.ca_file.clone();
    let console = Console {
        quiet: app.global.quiet,
    };
    let spec = lambda::Spec {
        node: args.node.clone(),
        worker_script: code_dir.worker_script(),
        code_dir: code_dir.code(),
        handler: package.handler.clone(),
        env: lambda_env(app, &config, region, &code_dir.code())?,
    };
    let lambda = lambda::Lambda::start(spec, console)
        .await
        .map_err(|e| node_failure(e, &args.node))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| listen_failure(e, args.listen))?;
    let gateway = Arc::new(broker::Gateway {
        tls: tokio_rustls::TlsAcceptor::from(certs::server_config(identity)?),
        lambda,
        arn_prefix: arn_prefix.clone(),
        console,
        registry: broker::Registry::default(),
    });
    let authorizer = match args.code.as_ref().or(config.deployment.code.as_ref()) {
        Some(code) => format!("{} ({})", code.display(), package.handler),
        None => format!(
            "bundled, {} device(s) from the config",
            config.devices.len()
        ),
    };
    Ok(Started {
        listening: Listening {
            address: listener.local_addr()?,
            ca_file,
            authorizer,
            arn_prefix,
        },
        listener,
        gateway,
        code_dir,
    })
}

/// Next to the config file, so each project keeps its own CA.
fn default_cert_dir(config: &Path) -> PathBuf {
    let parent = config.parent().unwrap_or(Path::new(""));
    parent.join(".iot-custom-auth").join("local")
}

/// The variables Lambda gives a function (PATH aside, nothing of this shell leaks in, as nothing
/// of the deployer's environment reaches a Lambda).
fn lambda_env(
    app: &App,
    config: &crate::config::Config,
    region: &str,
    code: &Path,
) -> Result<Vec<(String, String)>> {
    let names = app.names(config)?;
    let mut env = vec![
        ("AWS_REGION".into(), region.to_string()),
        ("AWS_DEFAULT_REGION".into(), region.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME".into(), names.function),
        ("AWS_LAMBDA_FUNCTION_VERSION".into(), "$LATEST".into()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
            config.deployment.memory_mb.to_string(),
        ),
        ("LAMBDA_TASK_ROOT".into(), code.display().to_string()),
        ("TZ".into(), ":UTC".into()),
    ];
    if let Some(path) = std::env::var_os("PATH") {
        env.push(("PATH".into(), path.to_string_lossy().into_owned()));
    }
    Ok(env)
}

fn node_failure(err: anyhow::Error, node: &Path) -> anyhow::Error {
    Failure::new(
        format!(
            "could not start the authorizer under `{}`: {err:#}",
            node.display()
        ),
        "install Node.js 22 or 24 (the Lambda runtimes), or point IOT_CUSTOM_AUTH_NODE / --node \
         at a node binary",
    )
    .into()
}

fn listen_failure(err: std::io::Error, addr: SocketAddr) -> anyhow::Error {
    Failure::usage(
        format!("cannot listen on {addr}: {err}"),
        "pick another address with --listen (port 0 picks a free port)",
    )
    .into()
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The package unpacked for node, plus the worker script beside it (not inside, so it cannot
/// clash with the user's files). Removed when dropped.
struct CodeDir(PathBuf);

impl CodeDir {
    fn extract(zip: &[u8]) -> Result<Self> {
        let root = std::env::temp_dir().join(format!(
            "iot-custom-auth-local-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let dir = Self(root);
        std::fs::create_dir_all(dir.code())?;
        zip::ZipArchive::new(std::io::Cursor::new(zip))?
            .extract(dir.code())
            .context("unpacking the authorizer package")?;
        std::fs::write(dir.worker_script(), lambda::WORKER_SOURCE)?;
        Ok(dir)
    }

    fn code(&self) -> PathBuf {
        self.0.join("code")
    }

    fn worker_script(&self) -> PathBuf {
        self.0.join("worker.mjs")
    }
}

impl Drop for CodeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
