//! `local`: what AWS IoT Core does for a custom-auth device, on this machine. A TLS MQTT listener
//! that, like IoT on port 443, requires ALPN `mqtt`, runs the same authorizer package `setup`
//! would deploy under the local `node` on each CONNECT, and enforces the policies it returns.
//!
//! - `certs`: the throwaway CA and server certificate.
//! - `lambda`: the warm node worker, the event IoT sends, CloudWatch-style logs.
//! - `response`: the authorizer response contract.
//! - `iot_policy`: policy evaluation (pure, table-tested).
//! - `listener`: the accept loop, its connection caps and the ALPN check.
//! - `broker` / `session`: routing, and one connection's life.
//! - `codec` / `limits`: MQTT 3.1.1 and 5 on the wire, and IoT's protocol limits.

mod broker;
mod certs;
mod codec;
mod iot_policy;
mod lambda;
mod limits;
mod listener;
mod response;
mod session;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
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
    /// Authorizer invocations that may run at once, each in its own warm node process (Lambda
    /// runs concurrent invocations side by side). A new process starts when more logins wait
    /// than processes are free. A login waits for a free one, but never past IoT's 5 s limit
    /// for its authorizer call.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub authorizer_workers: u16,
    /// Most connections open at once; more are closed as soon as they are accepted. Lowered to
    /// fit the open-files limit (which `local` raises to its hard limit at start).
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most connections that have not logged in yet (TLS handshake and CONNECT still to come,
    /// or the authorizer not yet answered); more are closed as soon as they are accepted, so idle
    /// or slow clients cannot take every slot.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending: u32,
    /// Serve the authorizer only to usernames that name it (`?x-amz-customauthorizer-name=`),
    /// as IoT does when it is not the account's default [default: the config's
    /// `deployment.default_authorizer`].
    #[arg(long)]
    pub no_default: bool,
}

/// Where progress and the authorizer's logs go: stderr, unless -q.
///
/// Much of what is printed comes from clients (client IDs, usernames, topics) or from the
/// authorizer's code (its console output), so every line is made inert here, where no caller can
/// forget it: see [`inert`].
#[derive(Clone, Copy)]
pub struct Console {
    quiet: bool,
}

impl Console {
    pub fn line(&self, line: impl AsRef<str>) {
        if let Some(tap) = TAP.get() {
            let _ = tap.send(inert(line.as_ref()).into_owned());
        } else if !self.quiet {
            eprintln!("{}", inert(line.as_ref()));
        }
    }
}

/// `text` with every character that a terminal would act on instead of showing written as an
/// escape (`\u{1b}`, `\n`, `\r`...): C0 and C1 controls (ESC and CSI start the sequences that
/// move the cursor, recolour, retitle or clear the operator's screen; CR and LF forge or
/// overwrite log lines) and the Unicode bidirectional overrides (they reorder what is shown).
/// Tab stays: the CloudWatch-style lines use it as their separator.
pub fn inert(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.into()
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
    /// The name a username may ask for with `?x-amz-customauthorizer-name=`.
    authorizer_name: String,
    /// Whether a username that names no authorizer gets this one.
    default_authorizer: bool,
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
        writeln!(
            f,
            "  name:       {} ({})",
            self.authorizer_name,
            if self.default_authorizer {
                "also the default: a username need not name it"
            } else {
                "not the default: usernames must end in ?x-amz-customauthorizer-name=<name>"
            }
        )?;
        writeln!(f, "  ARNs:       {}:…", self.arn_prefix)?;
        // Hints never put a password in argv, where `ps` shows it to every user: `connect`
        // reads it from the variable, and mosquitto_pub from an options file in a private
        // directory (printf is a shell builtin, so no process gets it as an argument).
        let host = match self.address.ip() {
            ip if ip.is_loopback() || ip.is_unspecified() => "localhost".to_string(),
            ip => ip.to_string(),
        };
        let (port, ca) = (self.address.port(), self.ca_file.display());
        writeln!(
            f,
            "Connect a device from another terminal, its password in IOT_CUSTOM_AUTH_PASSWORD \
             (read -rs IOT_CUSTOM_AUTH_PASSWORD && export IOT_CUSTOM_AUTH_PASSWORD):"
        )?;
        writeln!(
            f,
            "  iot-custom-auth connect --host {host}:{port} --ca-file {ca} --username <device>"
        )?;
        writeln!(f, "or with mosquitto_pub (add -V mqttv5 for MQTT 5):")?;
        writeln!(
            f,
            "  d=$(mktemp -d) && printf -- '-P %s\\n' \"$IOT_CUSTOM_AUTH_PASSWORD\" > \"$d/mosquitto_pub\" \
             && XDG_CONFIG_HOME=\"$d\" mosquitto_pub -h {host} -p {port} --cafile {ca} \
             --tls-alpn mqtt -i <device> -u <device> -t telemetry/<device> -q 1 -m hello; \
             rm -r \"$d\""
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
    socket: TcpListener,
    gateway: Arc<broker::Gateway>,
    limits: listener::Limits,
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
        listener::serve(self.socket, self.gateway, self.limits).await;
        Ok(())
    }
}

/// Builds the package, starts the authorizer and binds the listener.
pub async fn start(app: &App, args: &LocalArgs) -> Result<Started> {
    let config = app.config()?;
    // The bundled authorizer with the DynamoDB store reads the table, as the operator.
    let table_access = if config.deployment.credential_store
        == crate::config::CredentialStore::Dynamodb
        && args.code.is_none()
        && config.deployment.code.is_none()
    {
        Some(table_access(app).await?)
    } else {
        None
    };
    let region = match &table_access {
        Some(access) => access.region.as_str(),
        None => app.global.region.as_deref().unwrap_or(DEFAULT_REGION),
    };
    let arn_prefix = bundle::arn_prefix(region, LOCAL_ACCOUNT);
    let package = bundle::build_for(
        &config,
        &app.names(&config)?,
        args.code.as_deref(),
        &arn_prefix,
    )?;
    let code_dir = CodeDir::extract(&package.zip)?;
    if let Some(access) = &table_access {
        code_dir.link_sdk(&access.sdk_dir)?;
    }
    let cert_dir = args
        .cert_dir
        .clone()
        .unwrap_or_else(|| default_cert_dir(&app.global.config));
    let identity = certs::load_or_create(&cert_dir)?;
    match identity.made {
        Some(certs::Made::New) => app.progress(format!(
            "created a throwaway CA and server certificate in {} (valid for {} days)",
            cert_dir.display(),
            certs::VALIDITY.as_secs() / 86_400
        )),
        Some(certs::Made::Renewed) => app.progress(format!(
            "the throwaway CA in {} expires within {} days: made a new one (valid for {} days); \
             clients that copied the old ca.pem need the new one",
            cert_dir.display(),
            certs::RENEW_BEFORE.as_secs() / 86_400,
            certs::VALIDITY.as_secs() / 86_400
        )),
        None => {}
    }
    let ca_file = identity.ca_file.clone();
    let console = Console {
        quiet: app.global.quiet,
    };
    let workers = usize::from(args.authorizer_workers);
    let limits = listener::Limits::fit(
        args.max_connections as usize,
        args.max_pending as usize,
        workers,
        console,
    );
    let spec = lambda::Spec {
        node: args.node.clone(),
        worker_script: code_dir.worker_script(),
        code_dir: code_dir.code(),
        handler: package.handler.clone(),
        env: {
            let mut env = lambda_env(app, &config, region, &code_dir.code(), &package.handler)?;
            if let Some(access) = table_access {
                env.extend(access.env);
            }
            env
        },
        workers,
    };
    let lambda = lambda::Lambda::start(spec, console)
        .await
        .map_err(|e| node_failure(e, &args.node))?;
    let authorizer_name = app.names(&config)?.authorizer;
    let default_authorizer = config.deployment.default_authorizer && !args.no_default;
    let socket = TcpListener::bind(args.listen)
        .await
        .map_err(|e| listen_failure(e, args.listen))?;
    let gateway = Arc::new(broker::Gateway {
        tls: listener::Tls::new(certs::server_config(identity)?),
        lambda,
        arn_prefix: arn_prefix.clone(),
        console,
        registry: broker::Registry::default(),
        authorizer: authorizer_name.clone(),
        default_authorizer,
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
            address: socket.local_addr()?,
            ca_file,
            authorizer,
            authorizer_name,
            default_authorizer,
            arn_prefix,
        },
        socket,
        gateway,
        limits,
        code_dir,
    })
}

/// Next to the config file, so each project keeps its own CA.
fn default_cert_dir(config: &Path) -> PathBuf {
    let parent = config.parent().unwrap_or(Path::new(""));
    parent.join(".iot-custom-auth").join("local")
}

/// The whole environment of the authorizer's node processes: the variables Lambda gives a
/// Node.js function (nothing of this shell leaks in, as nothing of the deployer's environment
/// reaches a Lambda; above all not the operator's AWS keys or the device password variable).
/// Not set: the execution role's credentials (`AWS_ACCESS_KEY_ID`... ; there is no role
/// locally; with the DynamoDB store [`table_access`] adds the operator's instead) and `AWS_LAMBDA_RUNTIME_API` (there is no runtime API). PATH is this machine's, so
/// that a handler finds the same tools node does.
fn lambda_env(
    app: &App,
    config: &crate::config::Config,
    region: &str,
    code: &Path,
    handler: &str,
) -> Result<Vec<(String, String)>> {
    let function = app.names(config)?.function;
    let runtime = &config.deployment.runtime;
    let mut env = vec![
        ("AWS_REGION".into(), region.to_string()),
        ("AWS_DEFAULT_REGION".into(), region.to_string()),
        ("AWS_EXECUTION_ENV".into(), format!("AWS_Lambda_{runtime}")),
        ("AWS_LAMBDA_FUNCTION_NAME".into(), function.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION".into(), "$LATEST".into()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
            config.deployment.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE".into(), "on-demand".into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME".into(),
            format!("/aws/lambda/{function}"),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME".into(), "local".into()),
        ("LAMBDA_TASK_ROOT".into(), code.display().to_string()),
        ("_HANDLER".into(), handler.to_string()),
        ("LANG".into(), "en_US.UTF-8".into()),
        ("TZ".into(), ":UTC".into()),
    ];
    if let Some(path) = std::env::var_os("PATH") {
        env.push(("PATH".into(), path.to_string_lossy().into_owned()));
    }
    Ok(env)
}

/// Names the directory holding the AWS SDK for JavaScript v3 that Lambda's Node.js runtimes
/// include (`node_modules/@aws-sdk/client-dynamodb`), which the authorizer imports in DynamoDB mode.
pub const LAMBDA_SDK_VAR: &str = "IOT_CUSTOM_AUTH_LAMBDA_SDK";

/// What the authorizer needs to read the device table locally: the SDK Lambda would provide, and
/// the operator's resolved credentials, region and endpoint in Lambda's variables (in Lambda the
/// execution role's credentials come the same way).
struct TableAccess {
    sdk_dir: PathBuf,
    region: String,
    env: Vec<(String, String)>,
}

async fn table_access(app: &App) -> Result<TableAccess> {
    let sdk_dir = lambda_sdk_dir(std::env::var_os(LAMBDA_SDK_VAR).map(PathBuf::from))?;
    let region = app.clients().await?.region.clone();
    let sdk_config = crate::aws::sdk_config(&app.global).await;
    let provider = sdk_config.credentials_provider().ok_or_else(|| {
        Failure::new(
            "no AWS credentials for `local` to read the device table with",
            "configure credentials (aws configure, aws sso login, AWS_PROFILE, or \
             AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
        )
    })?;
    let credentials = {
        use aws_credential_types::provider::ProvideCredentials as _;
        provider.provide_credentials().await.map_err(|e| {
            Failure::new(
                format!("no usable AWS credentials for `local` to read the device table: {e}"),
                "configure credentials (aws configure, aws sso login, AWS_PROFILE, or \
                 AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
            )
        })?
    };
    let mut env = vec![
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            credentials.access_key_id().to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            credentials.secret_access_key().to_string(),
        ),
    ];
    if let Some(token) = credentials.session_token() {
        env.push(("AWS_SESSION_TOKEN".to_string(), token.to_string()));
    }
    // The endpoint the operator's own DynamoDB calls go to: --endpoint-url, else the SDK's
    // standard variables.
    let endpoint = app.global.endpoint_url.clone().or_else(|| {
        ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
    });
    if let Some(url) = endpoint {
        env.push(("AWS_ENDPOINT_URL_DYNAMODB".to_string(), url));
    }
    Ok(TableAccess {
        sdk_dir,
        region,
        env,
    })
}

/// The SDK directory named by [`LAMBDA_SDK_VAR`], if it holds the DynamoDB client.
fn lambda_sdk_dir(dir: Option<PathBuf>) -> Result<PathBuf> {
    let remedy = format!(
        "install the SDK that Lambda's Node.js runtimes include and name its directory: \
         `npm install --prefix ~/.cache/iot-custom-auth/lambda-sdk @aws-sdk/client-dynamodb` then \
         `export {LAMBDA_SDK_VAR}=~/.cache/iot-custom-auth/lambda-sdk`"
    );
    match dir {
        Some(dir) if dir.join("node_modules/@aws-sdk/client-dynamodb").is_dir() => Ok(dir),
        Some(dir) => bail!(Failure::usage(
            format!(
                "{LAMBDA_SDK_VAR}={} has no node_modules/@aws-sdk/client-dynamodb, which the \
                 authorizer imports with credential_store = \"dynamodb\"",
                dir.display()
            ),
            remedy
        )),
        None => bail!(Failure::usage(
            format!(
                "{LAMBDA_SDK_VAR} is not set: with credential_store = \"dynamodb\" the \
                 authorizer imports @aws-sdk/client-dynamodb, which Lambda's runtime provides"
            ),
            remedy
        )),
    }
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
/// clash with the user's files). The directory is created afresh, readable by this user only: the
/// package holds the devices' verifiers. Removed when dropped.
struct CodeDir(PathBuf);

impl CodeDir {
    fn extract(zip: &[u8]) -> Result<Self> {
        let root = std::env::temp_dir().join(format!(
            "iot-custom-auth-local-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        private_dir(&root).with_context(|| format!("creating the temp dir {}", root.display()))?;
        let dir = Self(root);
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

    /// Makes the SDK importable from the function's ES module the way node resolves bare
    /// specifiers (NODE_PATH does not apply to `import`): a `node_modules` on a parent path of
    /// the code, here a link beside `code/` to the SDK's.
    #[cfg(unix)]
    fn link_sdk(&self, sdk_dir: &Path) -> Result<()> {
        let target = std::fs::canonicalize(sdk_dir.join("node_modules"))
            .with_context(|| format!("resolving {}", sdk_dir.display()))?;
        std::os::unix::fs::symlink(target, self.0.join("node_modules"))
            .context("linking the Lambda SDK beside the authorizer")
    }

    #[cfg(not(unix))]
    fn link_sdk(&self, _sdk_dir: &Path) -> Result<()> {
        bail!("the DynamoDB store in `local` needs a Unix system")
    }
}

/// Creates `dir` with mode 0700; fails if it exists, so nobody can have prepared it.
#[cfg(unix)]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir(dir)
}

impl Drop for CodeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lambda_sdk_must_be_installed_and_named() {
        let unset = format!("{:#}", lambda_sdk_dir(None).unwrap_err());
        assert!(unset.contains(LAMBDA_SDK_VAR), "{unset}");
        let dir = tempfile::tempdir().unwrap();
        let empty = format!(
            "{:#}",
            lambda_sdk_dir(Some(dir.path().to_path_buf())).unwrap_err()
        );
        assert!(empty.contains("@aws-sdk/client-dynamodb"), "{empty}");
        std::fs::create_dir_all(dir.path().join("node_modules/@aws-sdk/client-dynamodb")).unwrap();
        assert_eq!(
            lambda_sdk_dir(Some(dir.path().to_path_buf())).unwrap(),
            dir.path()
        );
    }

    #[test]
    fn client_text_cannot_drive_the_terminal() {
        let cases = [
            ("sensor-1 on telemetry/a", "sensor-1 on telemetry/a"),
            // Retitle the window, then clear the screen.
            ("\x1b]0;owned\x07\x1b[2J", "\\u{1b}]0;owned\\u{7}\\u{1b}[2J"),
            // A forged log line, and a line overwritten from its start.
            ("a\nSTART RequestId: x", "a\\nSTART RequestId: x"),
            ("ok\rdenied", "ok\\rdenied"),
            // The one-byte CSI of C1, and DEL.
            ("\u{9b}31mred\u{7f}", "\\u{9b}31mred\\u{7f}"),
            // A right-to-left override that shows `exe.txt` as `txt.exe`.
            ("a\u{202e}txt.exe", "a\\u{202e}txt.exe"),
            ("INFO\tkept\ttabs", "INFO\tkept\ttabs"),
            ("ünïcödé ✓ 温度", "ünïcödé ✓ 温度"),
        ];
        for (raw, shown) in cases {
            assert_eq!(inert(raw), shown, "{raw:?}");
        }
    }
}
