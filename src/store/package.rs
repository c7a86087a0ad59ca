//! The devices in the config file's `[[devices]]`, edited with `toml_edit` so that the user's
//! comments and layout survive. Nothing here talks to AWS; changes reach the authorizer at the
//! next `setup`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, value};

use super::{Incoming, Page, Tick, Written};
use crate::config::{Config, CredentialStore, Device};
use crate::error::Failure;

pub struct PackageStore {
    path: PathBuf,
}

impl PackageStore {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn config(&self) -> Result<Config> {
        Config::load(&self.path)
    }

    pub fn get(&self, username: &str) -> Result<Option<Device>> {
        Ok(self.config()?.device(username).cloned())
    }

    /// Adds `device`; returns how many devices the file then holds.
    pub fn insert(&self, device: &Device) -> Result<usize> {
        let mut config = self.config()?;
        if config.device(&device.username).is_some() {
            bail!(Failure::usage(
                format!(
                    "device `{}` already exists in {}",
                    device.username,
                    self.path.display()
                ),
                "choose another username, or `device remove` it first"
            ));
        }
        config.devices.push(device.clone());
        refuse_invalid(&config)?;
        let mut doc = read_document(&self.path)?;
        devices_mut(&mut doc)?.push(device_table(device));
        write_document(&self.path, &doc)?;
        Ok(config.devices.len())
    }

    pub fn update(&self, old: &Device, new: &Device) -> Result<()> {
        let mut config = self.config()?;
        let Some(index) = config
            .devices
            .iter()
            .position(|d| d.username == old.username)
            .filter(|&i| config.devices[i].password_verifier == old.password_verifier)
        else {
            bail!(changed_meanwhile(&old.username));
        };
        config.devices[index] = new.clone();
        refuse_invalid(&config)?;
        let mut doc = read_document(&self.path)?;
        replace_table(devices_mut(&mut doc)?, index, new);
        write_document(&self.path, &doc)
    }

    pub fn remove(&self, username: &str) -> Result<bool> {
        let config = self.config()?;
        let Some(index) = config.devices.iter().position(|d| d.username == username) else {
            return Ok(false);
        };
        let mut doc = read_document(&self.path)?;
        devices_mut(&mut doc)?.remove(index);
        write_document(&self.path, &doc)?;
        Ok(true)
    }

    /// In the file's order; `after` is the last username of the previous page.
    pub fn list(&self, limit: usize, after: Option<&str>) -> Result<Page> {
        let devices = self.config()?.devices;
        let start = match after {
            Some(name) => match devices.iter().position(|d| d.username == name) {
                Some(i) => i + 1,
                None => bail!(Failure::usage(
                    format!("no device `{name}` to continue after"),
                    "pass the username printed as `next` by the previous `device list`"
                )),
            },
            None => 0,
        };
        let page: Vec<Device> = devices.iter().skip(start).take(limit).cloned().collect();
        let next = (start + page.len() < devices.len())
            .then(|| page.last().map(|d| d.username.clone()))
            .flatten();
        Ok(Page {
            devices: page,
            next,
        })
    }

    /// Creates or replaces the devices that differ, checks the whole resulting config, and
    /// writes the file once.
    pub fn put_many(&self, incoming: Vec<Incoming>, tick: Tick<'_>) -> Result<Written> {
        let mut config = self.config()?;
        let mut doc = read_document(&self.path)?;
        let mut index: HashMap<String, usize> = config
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.username.clone(), i))
            .collect();
        let mut written = Written::default();
        let mut changes = Vec::new();
        for item in incoming {
            match index.get(&item.device.username) {
                Some(&i) if item.same_as(&config.devices[i]) => written.unchanged += 1,
                Some(&i) => {
                    let kept = config.devices[i].previous_verifiers.clone();
                    let device = Device {
                        previous_verifiers: kept,
                        ..item.device
                    };
                    config.devices[i] = device.clone();
                    changes.push((Some(i), device));
                    written.written += 1;
                }
                None => {
                    index.insert(item.device.username.clone(), config.devices.len());
                    config.devices.push(item.device.clone());
                    changes.push((None, item.device));
                    written.written += 1;
                }
            }
        }
        refuse_invalid(&config)?;
        let tables = devices_mut(&mut doc)?;
        let total = changes.len();
        for (i, device) in changes {
            match i {
                Some(i) => replace_table(tables, i, &device),
                None => tables.push(device_table(&device)),
            }
        }
        if written.written > 0 {
            write_document(&self.path, &doc)?;
        }
        tick(total + written.unchanged);
        Ok(written)
    }
}

/// Rewrites the config file at `path` in one atomic write ([`crate::config::write`]) to use
/// `store` and hold exactly `devices` as `[[devices]]` (none: the key is removed), keeping
/// every other setting and comment. `device migrate`'s last step.
pub fn switch_store(path: &Path, store: CredentialStore, devices: &[Device]) -> Result<()> {
    let mut doc = read_document(path)?;
    let name = match store {
        CredentialStore::Package => "package",
        CredentialStore::Dynamodb => "dynamodb",
    };
    doc["deployment"]["credential_store"] = value(name);
    if devices.is_empty() {
        doc.remove("devices");
    } else {
        let mut tables = ArrayOfTables::new();
        for device in devices {
            tables.push(device_table(device));
        }
        doc["devices"] = Item::ArrayOfTables(tables);
    }
    write_document(path, &doc)
}

fn refuse_invalid(config: &Config) -> Result<()> {
    config.validate().map_err(|e| {
        Failure::usage(
            format!("device refused: {e:#}"),
            "fix the username, client IDs or topics",
        )
        .into()
    })
}

pub fn changed_meanwhile(username: &str) -> Failure {
    Failure::new(
        format!("device `{username}` was changed or removed while this command ran"),
        "run the command again",
    )
}

fn read_document(path: &Path) -> Result<DocumentMut> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.parse()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DocumentMut::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_document(path: &Path, doc: &DocumentMut) -> Result<()> {
    crate::config::write(path, &doc.to_string())
}

fn devices_mut(doc: &mut DocumentMut) -> Result<&mut ArrayOfTables> {
    doc.entry("devices")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .context("`devices` in the config file must be an array of tables ([[devices]])")
}

/// Replaces the keys we own in the `index`th `[[devices]]`, keeping its comments.
fn replace_table(tables: &mut ArrayOfTables, index: usize, device: &Device) {
    let fresh = device_table(device);
    if let Some(table) = tables.get_mut(index) {
        for key in [
            "password_verifier",
            "client_ids",
            "publish",
            "subscribe",
            "previous_verifiers",
            "disabled",
        ] {
            match fresh.get(key) {
                Some(item) => {
                    table.insert(key, item.clone());
                }
                None => {
                    table.remove(key);
                }
            }
        }
    }
}

fn device_table(device: &Device) -> Table {
    let strings = |v: &[String]| value(v.iter().collect::<Array>());
    let mut t = Table::new();
    t["username"] = value(&device.username);
    t["password_verifier"] = value(&device.password_verifier);
    t["client_ids"] = strings(&device.client_ids);
    t["publish"] = strings(&device.publish);
    t["subscribe"] = strings(&device.subscribe);
    if !device.previous_verifiers.is_empty() {
        let previous: Array = device
            .previous_verifiers
            .iter()
            .map(|p| {
                let mut entry = InlineTable::new();
                entry.insert("verifier", p.verifier.as_str().into());
                entry.insert(
                    "expires_at",
                    i64::try_from(p.expires_at).unwrap_or(i64::MAX).into(),
                );
                toml_edit::Value::InlineTable(entry)
            })
            .collect();
        t["previous_verifiers"] = value(previous);
    }
    if device.disabled {
        t["disabled"] = value(true);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(username: &str) -> Device {
        Device {
            username: username.into(),
            password_verifier: crate::verifier::make(username.as_bytes()),
            client_ids: vec![username.into()],
            publish: vec![format!("telemetry/{username}")],
            subscribe: vec![],
            previous_verifiers: vec![],
            disabled: false,
        }
    }

    #[test]
    fn switching_the_store_rewrites_only_the_store_and_the_devices() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let verifier = crate::verifier::make(b"a");
        std::fs::write(
            &path,
            format!(
                "# ours\n[deployment]\nname = \"fleet\" # keep\n\n[[devices]]\nusername = \"a\"\npassword_verifier = \"{verifier}\"\n"
            ),
        )
        .unwrap();
        switch_store(&path, CredentialStore::Dynamodb, &[]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# ours\n"), "{text}");
        assert!(text.contains("name = \"fleet\" # keep"), "{text}");
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.deployment.credential_store,
            CredentialStore::Dynamodb
        );
        assert!(config.devices.is_empty());

        let back = [device("b"), device("c")];
        switch_store(&path, CredentialStore::Package, &back).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.deployment.credential_store, CredentialStore::Package);
        assert_eq!(config.devices, back);
        assert_eq!(config.deployment.name.as_deref(), Some("fleet"));
    }
}
