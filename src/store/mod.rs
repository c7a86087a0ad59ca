//! Where the devices live: the config file (`credential_store = "package"`, deployed inside the
//! function by `setup`) or the `<name>-devices` DynamoDB table (`"dynamodb"`, read by the
//! authorizer at each login, so changes take effect without a deploy). The device commands work
//! on either through [`Store`].

pub mod dynamodb;
pub mod import;
pub mod migrate;
pub mod package;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::app::App;
use crate::config::{Config, CredentialStore, Device};

/// Past this many devices in the config file, `device add` and `setup` recommend the DynamoDB
/// store. BENCHMARKS.md, "Authorizer": the package store's cold start costs about 7 ms of CPU per
/// 1,000 devices (699 ms at 100,000), the DynamoDB store's a fixed ~250 ms (importing the SDK);
/// they cross near 35,000 devices, where the package's cold start projects to ~3.4 s on a 128 MB
/// function, two thirds of IoT's 5 s limit. Below it the package store starts faster.
pub const PACKAGE_STORE_RECOMMENDED_MAX: usize = 30_000;

/// The store the deployment uses.
pub enum Store {
    Package(package::PackageStore),
    Dynamodb(dynamodb::TableStore),
}

/// One page of devices, in the store's order, and where the next one starts.
pub struct Page {
    pub devices: Vec<Device>,
    /// Pass as `after` to get the next page; `None` on the last one.
    pub next: Option<String>,
}

/// What an import changed.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Written {
    /// Devices created or changed.
    pub written: usize,
    /// Devices already stored exactly as the file says (a re-run writes nothing).
    pub unchanged: usize,
}

impl std::ops::Add for Written {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            written: self.written + other.written,
            unchanged: self.unchanged + other.unchanged,
        }
    }
}

/// A device to import: its record, and the password when the file gave one (to tell whether the
/// stored verifier already matches it, since every new verifier has a fresh salt).
pub struct Incoming {
    pub device: Device,
    pub password: Option<String>,
}

impl Incoming {
    /// Stored exactly as imported: same password (or verifier), client IDs, topics and state.
    /// Previous verifiers from a rotation are not compared: an import leaves them be.
    pub fn same_as(&self, stored: &Device) -> bool {
        let d = &self.device;
        let secret = match &self.password {
            Some(pw) => crate::verifier::matches(&stored.password_verifier, pw.as_bytes()),
            None => stored.password_verifier == d.password_verifier,
        };
        secret
            && stored.client_ids() == d.client_ids()
            && stored.publish() == d.publish()
            && stored.subscribe == d.subscribe
            && stored.disabled == d.disabled
    }
}

/// Progress of a long write: called with the number of devices just handled.
pub type Tick<'a> = &'a (dyn Fn(usize) + Sync);

impl Store {
    /// The store `config` names.
    pub async fn open(app: &App, config: &Config) -> Result<Self> {
        Ok(match config.deployment.credential_store {
            CredentialStore::Package => {
                Self::Package(package::PackageStore::new(app.global.config.clone()))
            }
            CredentialStore::Dynamodb => {
                let table = app.names(config)?.table;
                let client = app.clients().await?.dynamodb.clone();
                Self::Dynamodb(dynamodb::TableStore::new(client, table))
            }
        })
    }

    /// Where the devices are, for messages: the config file's path or `table <name>`.
    pub fn describe(&self) -> String {
        match self {
            Self::Package(s) => s.path().display().to_string(),
            Self::Dynamodb(s) => format!("table {}", s.table()),
        }
    }

    pub async fn get(&self, username: &str) -> Result<Option<Device>> {
        match self {
            Self::Package(s) => s.get(username),
            Self::Dynamodb(s) => s.get(username).await,
        }
    }

    /// Adds a device; refuses (usage error) when the username is taken.
    pub async fn insert(&self, device: &Device) -> Result<()> {
        let device = normalized(device.clone());
        match self {
            Self::Package(s) => s.insert(&device).map(drop),
            Self::Dynamodb(s) => s.insert(&device).await,
        }
    }

    /// Replaces `old` with `new` (same username), refusing when the stored device is no longer
    /// `old`'s verifier (someone rotated or removed it meanwhile).
    pub async fn update(&self, old: &Device, new: &Device) -> Result<()> {
        let new = normalized(new.clone());
        match self {
            Self::Package(s) => s.update(old, &new),
            Self::Dynamodb(s) => s.update(old, &new).await,
        }
    }

    /// Removes a device; false when there was none.
    pub async fn remove(&self, username: &str) -> Result<bool> {
        match self {
            Self::Package(s) => s.remove(username),
            Self::Dynamodb(s) => s.remove(username).await,
        }
    }

    /// Up to `limit` devices after the username `after`.
    pub async fn list(&self, limit: usize, after: Option<&str>) -> Result<Page> {
        match self {
            Self::Package(s) => s.list(limit, after),
            Self::Dynamodb(s) => s.list(limit, after).await,
        }
    }

    /// Writes what differs among `incoming` (already validated), `concurrency` requests in flight
    /// for the table.
    pub async fn put_many(
        &self,
        incoming: Vec<Incoming>,
        concurrency: usize,
        tick: Tick<'_>,
    ) -> Result<Written> {
        let incoming = incoming
            .into_iter()
            .map(|i| Incoming {
                device: normalized(i.device),
                ..i
            })
            .collect();
        match self {
            Self::Package(s) => s.put_many(incoming, tick),
            Self::Dynamodb(s) => s.put_many(incoming, concurrency, tick).await,
        }
    }
}

/// Now, in Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A device as stored: defaults resolved (client IDs, publish topics) and expired previous
/// verifiers dropped, so every write also cleans up after past rotations.
pub fn normalized(device: Device) -> Device {
    let now = now();
    Device {
        client_ids: device.client_ids(),
        publish: device.publish(),
        previous_verifiers: device
            .previous_verifiers
            .into_iter()
            .filter(|p| p.expires_at > now)
            .collect(),
        ..device
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PreviousVerifier;

    fn device() -> Device {
        Device {
            username: "s1".into(),
            password_verifier: crate::verifier::make(b"pw-one"),
            client_ids: vec![],
            publish: vec![],
            subscribe: vec![],
            previous_verifiers: vec![],
            disabled: false,
        }
    }

    #[test]
    fn writes_resolve_defaults_and_drop_expired_verifiers() {
        let mut d = device();
        d.previous_verifiers = vec![
            PreviousVerifier {
                verifier: "old".into(),
                expires_at: now() - 1,
            },
            PreviousVerifier {
                verifier: "live".into(),
                expires_at: now() + 60,
            },
        ];
        let n = normalized(d);
        assert_eq!(n.client_ids, vec!["s1"]);
        assert_eq!(n.publish, vec!["telemetry/s1"]);
        assert_eq!(n.previous_verifiers.len(), 1);
        assert_eq!(n.previous_verifiers[0].verifier, "live");
    }

    #[test]
    fn an_imported_password_is_the_same_under_another_salt() {
        let stored = normalized(device());
        let again = Incoming {
            device: Device {
                password_verifier: crate::verifier::make(b"pw-one"),
                ..device()
            },
            password: Some("pw-one".into()),
        };
        assert_ne!(again.device.password_verifier, stored.password_verifier);
        assert!(again.same_as(&stored));
        let other = Incoming {
            password: Some("pw-two".into()),
            ..again
        };
        assert!(!other.same_as(&stored));
        let by_verifier = Incoming {
            device: stored.clone(),
            password: None,
        };
        assert!(by_verifier.same_as(&stored));
        let disabled = Incoming {
            device: Device {
                disabled: true,
                ..stored.clone()
            },
            password: None,
        };
        assert!(!disabled.same_as(&stored));
    }
}
