//! The Lambda deployment package, built in memory and byte-for-byte deterministic: the same config
//! gives the same zip and so the same `CodeSha256`, which is how `setup` knows it has nothing to
//! upload and `status` knows the deployed code is current.

use std::collections::BTreeMap;
use std::io::{Cursor, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use crate::config::{Config, CredentialStore, Device};
use crate::error::Failure;
use crate::names::Names;

/// The bundled authorizer, compiled into the binary so the tool works from anywhere.
pub const AUTHORIZER_SOURCE: &str = include_str!("../assets/authorizer/index.mjs");
pub const BUNDLED_HANDLER: &str = "index.handler";

/// The package to deploy and how Lambda should run it.
#[derive(Clone, Debug)]
pub struct Package {
    pub zip: Vec<u8>,
    pub handler: String,
    /// base64(SHA-256(zip)), as Lambda reports `CodeSha256`.
    pub sha256: String,
}

impl Package {
    fn new(zip: Vec<u8>, handler: String) -> Self {
        let sha256 = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&zip));
        Self {
            zip,
            handler,
            sha256,
        }
    }
}

/// `devices.json`, the authorizer's data file (the format is documented in
/// `assets/authorizer/README.md`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceData<'a> {
    version: u32,
    arn_prefix: String,
    refresh_after_in_seconds: u32,
    disconnect_after_in_seconds: u32,
    /// The package store: every device, in the package.
    #[serde(skip_serializing_if = "Option::is_none")]
    devices: Option<BTreeMap<&'a str, DeviceEntry>>,
    /// The DynamoDB store: where to read them instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<Store>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Store {
    kind: &'static str,
    table: String,
    cache_seconds: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceEntry {
    verifier: String,
    client_ids: Vec<String>,
    publish: Vec<String>,
    subscribe: Vec<String>,
    /// Verifiers from `device rotate` that still work until `expiresAt` (the authorizer checks
    /// the expiry against its own clock; the device commands drop expired ones on every write).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    previous: Vec<PreviousEntry>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disabled: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PreviousEntry {
    verifier: String,
    expires_at: u64,
}

/// The ARN prefix IoT resources in this account and region start with.
pub fn arn_prefix(region: &str, account: &str) -> String {
    arn_prefix_in(crate::names::partition_of_region(region), region, account)
}

/// [`arn_prefix`] in a known partition: the caller's, from STS, for what `setup` deploys.
pub fn arn_prefix_in(partition: &str, region: &str, account: &str) -> String {
    format!("arn:{partition}:iot:{region}:{account}")
}

/// The authorizer's data file for `devices`. With the package store, verifiers live here, inside
/// the package, rather than in environment variables (4 KB in total): 10,000 devices take about
/// 2 MB, far below Lambda's 50 MB zip limit, and load once per cold start. With the DynamoDB
/// store it names the table instead and holds no device, so the package is the same bytes
/// whatever the devices and a device change never redeploys the function.
pub fn device_data(config: &Config, names: &Names, arn_prefix: &str) -> String {
    let dynamodb = config.deployment.credential_store == CredentialStore::Dynamodb;
    let store = dynamodb.then(|| Store {
        kind: "dynamodb",
        table: names.table.clone(),
        cache_seconds: config.deployment.cache_seconds,
    });
    let devices = (!dynamodb).then(|| package_devices(config));
    let data = DeviceData {
        version: 1,
        arn_prefix: arn_prefix.to_string(),
        refresh_after_in_seconds: config.deployment.refresh_after_seconds,
        disconnect_after_in_seconds: config.deployment.disconnect_after_seconds,
        devices,
        store,
    };
    serde_json::to_string(&data).expect("device data serializes")
}

fn package_devices(config: &Config) -> BTreeMap<&str, DeviceEntry> {
    config
        .devices
        .iter()
        .map(|d: &Device| {
            (
                d.username.as_str(),
                DeviceEntry {
                    verifier: d.password_verifier.clone(),
                    client_ids: d.client_ids(),
                    publish: d.publish(),
                    subscribe: d.subscribe.clone(),
                    previous: d
                        .previous_verifiers
                        .iter()
                        .map(|p| PreviousEntry {
                            verifier: p.verifier.clone(),
                            expires_at: p.expires_at,
                        })
                        .collect(),
                    disabled: d.disabled,
                },
            )
        })
        .collect()
}

/// The package `setup` deploys: the user's own code when configured, else the bundled authorizer
/// with the config's devices.
#[cfg(test)]
pub fn build(config: &Config, code: Option<&Path>, arn_prefix: &str) -> Result<Package> {
    let name = config
        .deployment
        .name
        .as_deref()
        .unwrap_or(crate::names::DEFAULT_NAME);
    let names = Names::new(name)?.with_store(config.deployment.credential_store);
    build_for(config, &names, code, arn_prefix)
}

/// [`build`] for the deployment `names` (its table, with the DynamoDB store).
pub fn build_for(
    config: &Config,
    names: &Names,
    code: Option<&Path>,
    arn_prefix: &str,
) -> Result<Package> {
    match code.or(config.deployment.code.as_deref()) {
        Some(path) => user_package(path, &config.deployment.handler),
        None => {
            let files = [
                (
                    "devices.json",
                    device_data(config, names, arn_prefix).into_bytes(),
                ),
                ("index.mjs", AUTHORIZER_SOURCE.as_bytes().to_vec()),
            ];
            Ok(Package::new(
                deterministic_zip(&files)?,
                BUNDLED_HANDLER.to_string(),
            ))
        }
    }
}

fn deterministic_zip(files: &[(&str, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    // Fixed timestamp, permissions and compression level: nothing about when or where the zip
    // was built may leak into its bytes.
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(6))
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644);
    let mut sorted: Vec<&(&str, Vec<u8>)> = files.iter().collect();
    sorted.sort_by_key(|(name, _)| *name);
    for (name, bytes) in sorted {
        writer.start_file(*name, options)?;
        writer.write_all(bytes)?;
    }
    Ok(writer.finish()?.into_inner())
}

/// The user's own authorizer: a zip used as is, or a directory zipped deterministically. Either
/// way the handler's module must be where Lambda will look for it.
fn user_package(path: &Path, handler: &str) -> Result<Package> {
    let bad_code = |why: String| {
        Failure::usage(
            format!("--code {}: {why}", path.display()),
            format!(
                "point --code at a directory or .zip whose root holds the handler's module \
                 (handler `{handler}`; change it with `deployment.handler`)"
            ),
        )
    };
    let zip = if path.is_dir() {
        let files = read_dir_files(path)?;
        let refs: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        deterministic_zip(&refs)?
    } else {
        std::fs::read(path).map_err(|e| bad_code(e.to_string()))?
    };
    let names: Vec<String> = ZipArchive::new(Cursor::new(&zip))
        .map_err(|e| bad_code(format!("not a zip file ({e})")))?
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let Some((module, export)) = handler.rsplit_once('.') else {
        bail!(bad_code(format!(
            "handler `{handler}` is not of the form `file.export`"
        )));
    };
    if export.is_empty()
        || !["mjs", "js", "cjs"]
            .iter()
            .any(|ext| names.contains(&format!("{module}.{ext}")))
    {
        bail!(bad_code(format!(
            "no {module}.mjs, {module}.js or {module}.cjs in it, so Lambda could not load handler `{handler}`"
        )));
    }
    Ok(Package::new(zip, handler.to_string()))
}

/// Every file under `root`, except dotfiles and dot-directories (`.env`, `.git`, `.aws`...):
/// they hold secrets and history that must not ship inside a Lambda package anyone with
/// lambda:GetFunction can download. What was left out is said on stderr.
fn read_dir_files(root: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut left_out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let name = path
                .strip_prefix(root)?
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                left_out.push(if path.is_dir() {
                    format!("{name}/")
                } else {
                    name
                });
            } else if path.is_dir() {
                stack.push(path);
            } else {
                out.push((name, std::fs::read(&path)?));
            }
        }
    }
    if !left_out.is_empty() {
        left_out.sort();
        tracing::warn!(
            "left out of the Lambda package from {}: {} (dotfiles are never deployed)",
            root.display(),
            left_out.join(", ")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut c = Config::default();
        c.devices.push(Device {
            username: "sensor1".into(),
            password_verifier: crate::verifier::make(b"pw"),
            client_ids: vec![],
            publish: vec![],
            subscribe: vec![],
            previous_verifiers: vec![],
            disabled: false,
        });
        c
    }

    #[test]
    fn same_config_same_bytes() {
        let c = config();
        let a = build(&c, None, "arn:aws:iot:us-east-1:1").unwrap();
        let b = build(&c, None, "arn:aws:iot:us-east-1:1").unwrap();
        assert_eq!(a.zip, b.zip);
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.handler, "index.handler");
        let other = build(&c, None, "arn:aws:iot:us-east-1:2").unwrap();
        assert_ne!(a.sha256, other.sha256);
    }

    fn names() -> Names {
        Names::new("fleet").unwrap()
    }

    #[test]
    fn with_dynamodb_the_package_names_the_table_and_holds_no_device() {
        let mut c = config();
        c.deployment.credential_store = CredentialStore::Dynamodb;
        c.deployment.cache_seconds = 30;
        let data: serde_json::Value =
            serde_json::from_str(&device_data(&c, &names(), "arn:aws:iot:r:1")).unwrap();
        assert!(data.get("devices").is_none(), "{data}");
        assert_eq!(
            data["store"],
            serde_json::json!({"kind": "dynamodb", "table": "fleet-devices", "cacheSeconds": 30})
        );
        assert_eq!(data["version"], 1);
        assert_eq!(data["arnPrefix"], "arn:aws:iot:r:1");
        // The same bytes whatever the devices: a device change never redeploys the function.
        let a = build_for(&c, &names(), None, "arn:aws:iot:r:1").unwrap();
        c.devices.clear();
        let b = build_for(&c, &names(), None, "arn:aws:iot:r:1").unwrap();
        assert_eq!(a.sha256, b.sha256);
        c.deployment.credential_store = CredentialStore::Package;
        let package = build_for(&c, &names(), None, "arn:aws:iot:r:1").unwrap();
        assert_ne!(
            a.sha256, package.sha256,
            "switching stores is a code update"
        );
    }

    #[test]
    fn device_data_applies_the_defaults() {
        let data: serde_json::Value =
            serde_json::from_str(&device_data(&config(), &names(), "arn:aws:iot:r:1")).unwrap();
        assert_eq!(data["devices"]["sensor1"]["clientIds"][0], "sensor1");
        assert_eq!(
            data["devices"]["sensor1"]["publish"][0],
            "telemetry/sensor1"
        );
        assert_eq!(data["refreshAfterInSeconds"], 300);
        assert_eq!(data["arnPrefix"], "arn:aws:iot:r:1");
        assert!(data.get("store").is_none());
    }

    #[test]
    fn dotfiles_stay_out_of_a_directory_package() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("index.mjs"), "export const handler = 1;").unwrap();
        std::fs::write(root.join(".env"), "AWS_SECRET_ACCESS_KEY=x").unwrap();
        std::fs::create_dir_all(root.join(".git/objects")).unwrap();
        std::fs::write(root.join(".git/config"), "[core]").unwrap();
        std::fs::create_dir(root.join("lib")).unwrap();
        std::fs::write(root.join("lib/util.mjs"), "").unwrap();
        std::fs::write(root.join("lib/.npmrc"), "//registry/:_authToken=x").unwrap();
        let package = user_package(root, "index.handler").unwrap();
        let mut names: Vec<String> = ZipArchive::new(Cursor::new(&package.zip))
            .unwrap()
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.into_owned()))
            .collect();
        names.sort();
        assert_eq!(names, ["index.mjs", "lib/util.mjs"]);
    }

    #[test]
    fn user_code_needs_the_handler_module() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.mjs"),
            "export const handler = async () => ({})",
        )
        .unwrap();
        let mut c = Config::default();
        let err = build(&c, Some(dir.path()), "p").unwrap_err();
        assert!(format!("{err:#}").contains("no index.mjs"), "{err:#}");
        c.deployment.handler = "main.handler".into();
        assert_eq!(
            build(&c, Some(dir.path()), "p").unwrap().handler,
            "main.handler"
        );
        let zip_path = dir.path().join("code.zip");
        std::fs::write(&zip_path, b"not a zip").unwrap();
        assert!(
            format!("{:#}", build(&c, Some(&zip_path), "p").unwrap_err()).contains("not a zip")
        );
    }
}

/// The Rust side (verifiers, device data, policy packing) against the real authorizer under the
/// real `node`: what the CLI writes, the authorizer must read the same way.
#[cfg(test)]
mod cross_language {
    use super::*;
    use crate::policy;
    use serde_json::{Value, json};
    use std::process::{Command, Stdio};

    const PREFIX: &str = "arn:aws:iot:eu-central-1:111122223333";
    const PASSWORD: &str = "Zq8x3Lr5Tb7Nc2Vm9Kd4Hw6J";

    fn device(
        username: &str,
        client_ids: &[&str],
        publish: Vec<String>,
        subscribe: &[&str],
    ) -> Device {
        Device {
            username: username.into(),
            password_verifier: crate::verifier::make(PASSWORD.as_bytes()),
            client_ids: client_ids.iter().map(|s| s.to_string()).collect(),
            publish,
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            previous_verifiers: vec![],
            disabled: false,
        }
    }

    /// Unzips the package and runs each event through its handler under node.
    fn invoke(package: &Package, events: &[Value]) -> Vec<Value> {
        let dir = tempfile::tempdir().unwrap();
        ZipArchive::new(Cursor::new(&package.zip))
            .unwrap()
            .extract(dir.path())
            .unwrap();
        // console.log goes to stderr here, as Lambda sends it to CloudWatch, not the caller.
        let script = r#"
            console.log = (...a) => process.stderr.write(a.join(' ') + '\n');
            const { handler } = await import(process.argv[1]);
            let input = '';
            for await (const chunk of process.stdin) input += chunk;
            const out = [];
            for (const e of JSON.parse(input)) out.push(await handler(e, {}));
            process.stdout.write(JSON.stringify(out));
        "#;
        let node = std::env::var("IOT_CUSTOM_AUTH_NODE").unwrap_or_else(|_| "node".into());
        let index = format!("file://{}", dir.path().join("index.mjs").display());
        let mut child = Command::new(&node)
            .args(["--input-type=module", "-e", script, &index])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("running {node} (set IOT_CUSTOM_AUTH_NODE or put node on PATH): {e}")
            });
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(serde_json::to_string(events).unwrap().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "node failed");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn event(username: &str, password: &str, client_id: &str) -> Value {
        let b64 = base64::engine::general_purpose::STANDARD.encode(password);
        json!({"protocols": ["tls", "mqtt"], "protocolData": {"tls": {"serverName": "x-ats.iot.eu-central-1.amazonaws.com"},
               "mqtt": {"username": username, "password": b64, "clientId": client_id}}, "connectionMetadata": {"id": "c1"}})
    }

    #[test]
    fn the_authorizer_accepts_rust_verifiers_and_builds_the_same_policies() {
        let long_topics: Vec<String> = (0..30)
            .map(|i| format!("fleet/{i:02}/{}", "m".repeat(70)))
            .collect();
        let config = Config {
            devices: vec![
                device("sensor1", &[], vec![], &[]),
                device(
                    "gw-01.eu@fleet",
                    &["gw-01", "gw-01-backup"],
                    vec!["data/gw".into()],
                    &["cmd/+/gw-01/#"],
                ),
                device("big", &[], long_topics, &[]),
            ],
            ..Config::default()
        };
        config.validate().unwrap();
        let package = build(&config, None, PREFIX).unwrap();
        let cases = [
            ("sensor1", PASSWORD, "sensor1", true),
            (
                "sensor1?x-amz-customauthorizer-name=a&SDK=Rust",
                PASSWORD,
                "sensor1",
                true,
            ),
            ("gw-01.eu@fleet", PASSWORD, "gw-01-backup", true),
            ("big", PASSWORD, "big", true),
            ("sensor1", "Zq8x3Lr5Tb7Nc2Vm9Kd4Hw6j", "sensor1", false),
            ("sensor1", PASSWORD, "other", false),
            ("nobody", PASSWORD, "nobody", false),
        ];
        let events: Vec<Value> = cases.iter().map(|(u, p, c, _)| event(u, p, c)).collect();
        let results = invoke(&package, &events);
        for ((user, _, client_id, allowed), result) in cases.iter().zip(&results) {
            assert_eq!(
                result["isAuthenticated"], *allowed,
                "{user} as {client_id}: {result}"
            );
            if !allowed {
                assert_eq!(result, &json!({"isAuthenticated": false}));
                continue;
            }
            let base = user.split('?').next().unwrap();
            let device = config.device(base).unwrap();
            let expected: Vec<String> = policy::documents(PREFIX, client_id, device)
                .unwrap()
                .iter()
                .map(|d| d.to_json())
                .collect();
            let actual: Vec<String> = result["policyDocuments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| serde_json::to_string(d).unwrap())
                .collect();
            assert_eq!(actual, expected, "{user}: byte-for-byte policy");
            assert_eq!(result["principalId"], crate::config::principal_id(base));
            assert_eq!(result["refreshAfterInSeconds"], 300);
            assert_eq!(result["disconnectAfterInSeconds"], 86400);
        }
        assert!(
            results[3]["policyDocuments"].as_array().unwrap().len() > 1,
            "the big device must span documents"
        );
    }
}
