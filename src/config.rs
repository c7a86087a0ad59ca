//! The config file: deployment settings and the devices the authorizer serves.
//!
//! Read with `toml` + serde (errors point at the line), edited with `toml_edit` so that a user's
//! comments and layout survive `device add` / `device remove`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::error::Failure;
use crate::policy;

pub const RUNTIMES: &[&str] = &["nodejs22.x", "nodejs24.x"];
pub const DEFAULT_RUNTIME: &str = "nodejs22.x";
/// IoT's limit on an authorizer function's run time.
pub const MAX_TIMEOUT_SECONDS: i32 = 5;
/// IoT's bounds for refreshAfterInSeconds and disconnectAfterInSeconds.
pub const MIN_SESSION_SECONDS: u32 = 300;
pub const MAX_SESSION_SECONDS: u32 = 86_400;
/// The retention periods CloudWatch Logs accepts for a log group (PutRetentionPolicy).
pub const LOG_RETENTION_DAYS: &[i32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];
/// The longest `cache_seconds`: a removed or disabled device must stop logging in within minutes.
pub const MAX_CACHE_SECONDS: u32 = 300;
/// Longest username / client ID we accept: IoT's principalId and client ID limits are 128.
const MAX_ID_LEN: usize = 128;
/// IoT's topic limits: 256 bytes, at most 7 forward slashes.
const MAX_TOPIC_BYTES: usize = 256;
const MAX_TOPIC_SLASHES: usize = 7;

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub deployment: Deployment,
    #[serde(default)]
    pub devices: Vec<Device>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Deployment {
    /// Deployment name (overridden by --name).
    pub name: Option<String>,
    pub runtime: String,
    pub memory_mb: i32,
    pub timeout_seconds: i32,
    pub refresh_after_seconds: u32,
    pub disconnect_after_seconds: u32,
    /// Make our authorizer the account's default (devices then need no authorizer name).
    pub default_authorizer: bool,
    /// Your own authorizer (a directory or a .zip) instead of the bundled one.
    pub code: Option<PathBuf>,
    /// Handler of your own authorizer (`file.export`).
    pub handler: String,
    /// Days CloudWatch Logs keeps the authorizer's log lines (one of [`LOG_RETENTION_DAYS`]).
    pub log_retention_days: i32,
    /// Where the devices live: in the function's package, or in a DynamoDB table.
    pub credential_store: CredentialStore,
    /// dynamodb only: how long the authorizer caches a device's item, which bounds how long a
    /// removed, disabled or expired device can still log in; 0 = no cache.
    pub cache_seconds: u32,
}

/// Where the authorizer finds the devices.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CredentialStore {
    /// `devices.json` inside the function's package (every device change redeploys it).
    #[default]
    Package,
    /// The table `<deployment>-devices`, read one item per login.
    Dynamodb,
}

impl Default for Deployment {
    fn default() -> Self {
        Self {
            name: None,
            runtime: DEFAULT_RUNTIME.to_string(),
            memory_mb: 128,
            timeout_seconds: MAX_TIMEOUT_SECONDS,
            refresh_after_seconds: MIN_SESSION_SECONDS,
            disconnect_after_seconds: MAX_SESSION_SECONDS,
            default_authorizer: true,
            code: None,
            handler: "index.handler".to_string(),
            log_retention_days: 30,
            credential_store: CredentialStore::Package,
            cache_seconds: 60,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub username: String,
    /// `sha256:<salt base64>:<hash base64>`; never the password.
    pub password_verifier: String,
    #[serde(default)]
    pub client_ids: Vec<String>,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Verifiers from a `device rotate` that keep working until their `expires_at`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_verifiers: Vec<PreviousVerifier>,
    /// The device cannot log in.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PreviousVerifier {
    pub verifier: String,
    /// Unix seconds.
    pub expires_at: u64,
}

impl Device {
    /// Client IDs the device may connect as: the username unless listed.
    pub fn client_ids(&self) -> Vec<String> {
        if self.client_ids.is_empty() {
            vec![self.username.clone()]
        } else {
            self.client_ids.clone()
        }
    }

    /// Topics the device may publish to: `telemetry/<client id>` unless listed (the recipe's).
    pub fn publish(&self) -> Vec<String> {
        if self.publish.is_empty() {
            self.client_ids()
                .iter()
                .map(|c| format!("telemetry/{c}"))
                .collect()
        } else {
            self.publish.clone()
        }
    }
}

impl Config {
    /// Loads and validates the config file. A missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let config: Config = toml::from_str(&text).map_err(|e| {
            Failure::usage(
                format!("{} is not a valid config file: {e}", path.display()),
                "fix the file (README's \"Config reference\" lists every key)",
            )
        })?;
        config.validate().map_err(|e| {
            anyhow::Error::new(Failure::usage(
                format!("{}: {e:#}", path.display()),
                "fix the file, or use `iot-custom-auth device add/remove`",
            ))
        })?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        let d = &self.deployment;
        if !RUNTIMES.contains(&d.runtime.as_str()) {
            bail!(
                "deployment.runtime `{}` is not supported; use one of {}",
                d.runtime,
                RUNTIMES.join(", ")
            );
        }
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&d.timeout_seconds) {
            bail!(
                "deployment.timeout_seconds must be 1..={MAX_TIMEOUT_SECONDS} (IoT stops waiting for an authorizer after 5 s)"
            );
        }
        if !(128..=10_240).contains(&d.memory_mb) {
            bail!("deployment.memory_mb must be 128..=10240 (Lambda's range)");
        }
        for (key, v) in [
            ("refresh_after_seconds", d.refresh_after_seconds),
            ("disconnect_after_seconds", d.disconnect_after_seconds),
        ] {
            if !(MIN_SESSION_SECONDS..=MAX_SESSION_SECONDS).contains(&v) {
                bail!(
                    "deployment.{key} must be {MIN_SESSION_SECONDS}..={MAX_SESSION_SECONDS} (IoT's bounds)"
                );
            }
        }
        if !LOG_RETENTION_DAYS.contains(&d.log_retention_days) {
            bail!(
                "deployment.log_retention_days must be one of CloudWatch Logs' periods: {}",
                LOG_RETENTION_DAYS
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if d.cache_seconds > MAX_CACHE_SECONDS {
            bail!(
                "deployment.cache_seconds must be 0..={MAX_CACHE_SECONDS} (it bounds how long a removed or disabled device can still log in)"
            );
        }
        let mut usernames = HashMap::new();
        let mut principals = HashMap::new();
        let mut client_owner = HashMap::new();
        for device in &self.devices {
            validate_device(device).with_context(|| format!("device `{}`", device.username))?;
            if usernames.insert(device.username.as_str(), ()).is_some() {
                bail!("device `{}` is declared twice", device.username);
            }
            let principal = principal_id(&device.username);
            if let Some(other) = principals.insert(principal.clone(), device.username.as_str()) {
                bail!(
                    "devices `{other}` and `{}` would share the principal id `{principal}` \
                     (IoT allows only letters and digits in it); rename one",
                    device.username
                );
            }
            for id in device.client_ids() {
                if let Some(other) = client_owner.insert(id.clone(), device.username.as_str()) {
                    bail!(
                        "client ID `{id}` is claimed by devices `{other}` and `{}`; a second \
                         connection with the same client ID disconnects the first",
                        device.username
                    );
                }
            }
        }
        Ok(())
    }

    pub fn device(&self, username: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.username == username)
    }
}

/// Replaces the config file's contents so that a crash, a full disk or a hostile file beside it
/// never leaves a half-written, widened or redirected config:
/// - a symlinked config is followed to its target, which is updated (the link stays a link);
/// - the new text goes to a uniquely named temp file beside the target, created exclusively
///   (`O_EXCL`: never through an existing file or symlink of that name), with the target's mode
///   (a 0600 config stays 0600; a new one gets 0666 less the umask, as any new file);
/// - file, rename and directory are fsynced, so after a power cut the config is the old or the
///   new one, never empty.
pub fn write(path: &Path, contents: &str) -> Result<()> {
    let target = resolve_symlinks(path)?;
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mode = match std::fs::metadata(&target) {
        Ok(m) => Some(m.permissions()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", target.display())),
    };
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let written = (|| -> std::io::Result<()> {
        use std::io::Write as _;
        let file = tmp.as_file();
        match mode {
            Some(perms) => file.set_permissions(perms)?,
            None => set_new_file_mode(file)?,
        }
        let mut file = file;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    })();
    written.with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(&target)
        .map_err(|e| e.error)
        .with_context(|| format!("replacing {}", target.display()))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// The file a chain of symlinks ends at (which may not exist yet).
fn resolve_symlinks(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    // Linux's own limit on links followed while resolving one path.
    for _ in 0..40 {
        match std::fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&current)
                    .with_context(|| format!("reading the symlink {}", current.display()))?;
                current = match current.parent() {
                    Some(parent) => parent.join(link),
                    None => link,
                };
            }
            _ => return Ok(current),
        }
    }
    bail!("{}: too many levels of symbolic links", path.display())
}

/// tempfile creates files 0600; a brand-new config gets what any new file would (0666 less the
/// umask), since it holds no secret, only verifiers.
#[cfg(unix)]
fn set_new_file_mode(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let umask = current_umask();
    file.set_permissions(std::fs::Permissions::from_mode(0o666 & !umask))
}

#[cfg(not(unix))]
fn set_new_file_mode(_: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

/// The process umask, read from /proc (reading it with umask(2) would mean changing it, which
/// races with other threads creating files).
#[cfg(unix)]
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        // Where /proc is missing, the most common umask, and the stricter choice over 0.
        .unwrap_or(0o022)
}

/// The principal id IoT will see for a username: its letters and digits.
pub fn principal_id(username: &str) -> String {
    username
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(MAX_ID_LEN)
        .collect()
}

/// One device's own rules (the rules between devices are in [`Config::validate`]).
pub fn validate_device(device: &Device) -> Result<()> {
    validate_username(&device.username)?;
    crate::verifier::parse(&device.password_verifier)
        .context("password_verifier is not a verifier written by this tool")?;
    for previous in &device.previous_verifiers {
        crate::verifier::parse(&previous.verifier)
            .context("a previous_verifiers entry is not a verifier written by this tool")?;
    }
    for id in device.client_ids() {
        validate_client_id(&id)?;
    }
    for topic in device.publish() {
        validate_topic(&topic, false)?;
    }
    for filter in &device.subscribe {
        validate_topic(filter, true)?;
    }
    policy::check_fits(device)
}

/// Usernames reach the authorizer inside the MQTT username, before any `?query`.
pub fn validate_username(username: &str) -> Result<()> {
    let ok_chars = username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if username.is_empty() || username.len() > MAX_ID_LEN || !ok_chars {
        bail!(
            "username `{username}` must be 1 to {MAX_ID_LEN} characters of letters, digits, \
             `-`, `_`, `.` or `@` (a `?` would be cut off by the authorizer)"
        );
    }
    if !username.chars().any(|c| c.is_ascii_alphanumeric()) {
        bail!("username `{username}` needs at least one letter or digit (IoT's principal id)");
    }
    Ok(())
}

/// Client IDs end up in policy ARNs, where `*`, `?` and `${` have meanings; keep to safe ones.
pub fn validate_client_id(id: &str) -> Result<()> {
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c));
    if id.is_empty() || id.len() > MAX_ID_LEN || !ok_chars {
        bail!(
            "client ID `{id}` must be 1 to {MAX_ID_LEN} characters of letters, digits, `-`, `_`, \
             `.`, `:` or `@`"
        );
    }
    Ok(())
}

/// A topic (publish) or topic filter (subscribe), checked against MQTT's and IoT's rules and
/// against what would change meaning inside a policy (`*`, `?`, `${`).
pub fn validate_topic(topic: &str, filter: bool) -> Result<()> {
    let kind = if filter { "topic filter" } else { "topic" };
    if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
        bail!("{kind} `{topic}` must be 1 to {MAX_TOPIC_BYTES} bytes");
    }
    if topic.matches('/').count() > MAX_TOPIC_SLASHES {
        bail!("{kind} `{topic}` has more than {MAX_TOPIC_SLASHES} `/` (IoT's limit)");
    }
    if topic.contains(['*', '?']) || topic.contains("${") || topic.chars().any(char::is_control) {
        bail!(
            "{kind} `{topic}` contains `*`, `?`, `${{` or a control character, which IoT policies would read as wildcards or variables"
        );
    }
    let levels: Vec<&str> = topic.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wild = level.contains(['+', '#']);
        if !filter && wild {
            bail!(
                "topic `{topic}` contains an MQTT wildcard; publish topics must be exact (use --subscribe for filters)"
            );
        }
        if filter && wild {
            let whole_level = *level == "+" || (*level == "#" && i == levels.len() - 1);
            if !whole_level {
                bail!(
                    "topic filter `{topic}`: `+` must fill a whole level and `#` must be the last level"
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(username: &str) -> Device {
        Device {
            username: username.into(),
            password_verifier: crate::verifier::make("x".repeat(30).as_bytes()),
            client_ids: vec![],
            publish: vec![],
            subscribe: vec![],
            previous_verifiers: vec![],
            disabled: false,
        }
    }

    #[test]
    fn defaults_follow_the_manual_recipe() {
        let d = device("sensor1");
        assert_eq!(d.client_ids(), vec!["sensor1"]);
        assert_eq!(d.publish(), vec!["telemetry/sensor1"]);
    }

    #[test]
    fn syntax_errors_point_at_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[deployment]\nruntime = \"nodejs22.x\"\nmemory_mb = = 3\n",
        )
        .unwrap();
        let err = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("[deployment]\nruntme = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("runtme"), "{err}");
    }

    #[test]
    fn principal_collisions_and_shared_client_ids_are_refused() {
        let mut c = Config {
            devices: vec![device("a-b"), device("ab")],
            ..Config::default()
        };
        assert!(format!("{:#}", c.validate().unwrap_err()).contains("principal id"));
        let mut other = device("b");
        other.client_ids = vec!["a".into()];
        c.devices = vec![device("a"), other];
        assert!(format!("{:#}", c.validate().unwrap_err()).contains("client ID `a`"));
    }

    #[test]
    fn usernames_and_topics() {
        assert!(validate_username("sensor-01.eu@fleet").is_ok());
        for bad in ["", "a?b", "a b", "---", &"a".repeat(129)] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic("telemetry/s1", false).is_ok());
        assert!(validate_topic("$aws/things/s1/shadow/update", false).is_ok());
        assert!(validate_topic("cmd/+/x/#", true).is_ok());
        for (bad, filter) in [
            ("a/+", false),
            ("a/#/b", true),
            ("a/b+", true),
            ("a/*", false),
            ("a/${iot:ClientId}", false),
            ("a/b/c/d/e/f/g/h/i", false),
            ("", false),
        ] {
            assert!(validate_topic(bad, filter).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn session_bounds_are_iots() {
        let mut c = Config::default();
        c.deployment.refresh_after_seconds = 299;
        assert!(c.validate().is_err());
        c.deployment.refresh_after_seconds = 300;
        c.deployment.timeout_seconds = 6;
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_credential_store_and_its_cache_bound() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c.deployment.credential_store, CredentialStore::Package);
        assert_eq!(c.deployment.cache_seconds, 60);
        let mut c: Config =
            toml::from_str("[deployment]\ncredential_store = \"dynamodb\"\ncache_seconds = 0\n")
                .unwrap();
        assert_eq!(c.deployment.credential_store, CredentialStore::Dynamodb);
        assert!(c.validate().is_ok(), "0 = no cache");
        c.deployment.cache_seconds = MAX_CACHE_SECONDS;
        assert!(c.validate().is_ok());
        c.deployment.cache_seconds = MAX_CACHE_SECONDS + 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("cache_seconds") && err.contains("300"),
            "{err}"
        );
        let err = toml::from_str::<Config>("[deployment]\ncredential_store = \"s3\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("package") && err.contains("dynamodb"), "{err}");
    }

    #[test]
    fn log_retention_must_be_a_period_cloudwatch_accepts() {
        let mut c = Config::default();
        assert_eq!(c.deployment.log_retention_days, 30);
        for ok in [1, 14, 365, 3653] {
            c.deployment.log_retention_days = ok;
            assert!(c.validate().is_ok(), "{ok}");
        }
        for bad in [0, 2, 31, 10_000, -1] {
            c.deployment.log_retention_days = bad;
            let err = c.validate().unwrap_err().to_string();
            assert!(
                err.contains("log_retention_days") && err.contains("545"),
                "{err}"
            );
        }
    }
}
