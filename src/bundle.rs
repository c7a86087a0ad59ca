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

use crate::config::{Config, Device};
use crate::error::Failure;

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
    devices: BTreeMap<&'a str, DeviceEntry>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceEntry {
    verifier: String,
    client_ids: Vec<String>,
    publish: Vec<String>,
    subscribe: Vec<String>,
}

/// The ARN prefix IoT resources in this account and region start with.
pub fn arn_prefix(region: &str, account: &str) -> String {
    format!("arn:aws:iot:{region}:{account}")
}

/// The authorizer's data file for `devices`. Verifiers live here, inside the package, rather than
/// in environment variables (4 KB in total): 10,000 devices take about 2 MB, far below Lambda's
/// 50 MB zip limit, and load once per cold start.
pub fn device_data(config: &Config, arn_prefix: &str) -> String {
    let devices = config
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
                },
            )
        })
        .collect();
    let data = DeviceData {
        version: 1,
        arn_prefix: arn_prefix.to_string(),
        refresh_after_in_seconds: config.deployment.refresh_after_seconds,
        disconnect_after_in_seconds: config.deployment.disconnect_after_seconds,
        devices,
    };
    serde_json::to_string(&data).expect("device data serializes")
}

/// The package `setup` deploys: the user's own code when configured, else the bundled authorizer
/// with the config's devices.
pub fn build(config: &Config, code: Option<&Path>, arn_prefix: &str) -> Result<Package> {
    match code.or(config.deployment.code.as_deref()) {
        Some(path) => user_package(path, &config.deployment.handler),
        None => {
            let files = [
                ("devices.json", device_data(config, arn_prefix).into_bytes()),
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

fn read_dir_files(root: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path
                    .strip_prefix(root)?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((name, std::fs::read(&path)?));
            }
        }
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

    #[test]
    fn device_data_applies_the_defaults() {
        let data: serde_json::Value =
            serde_json::from_str(&device_data(&config(), "arn:aws:iot:r:1")).unwrap();
        assert_eq!(data["devices"]["sensor1"]["clientIds"][0], "sensor1");
        assert_eq!(
            data["devices"]["sensor1"]["publish"][0],
            "telemetry/sensor1"
        );
        assert_eq!(data["refreshAfterInSeconds"], 300);
        assert_eq!(data["arnPrefix"], "arn:aws:iot:r:1");
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
