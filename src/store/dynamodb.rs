//! The devices in the `<name>-devices` DynamoDB table: one item per device, keyed by username,
//! in the shape the authorizer reads (see README, "Device store"). Writes that must not race are
//! conditional; imports write in batches of 25 with several requests in flight.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, PutRequest, WriteRequest};
use futures::{StreamExt as _, TryStreamExt as _};

use super::{Incoming, Page, Tick, Written};
use crate::config::{Device, PreviousVerifier};
use crate::error::{AwsResultExt as _, Failure};

/// BatchWriteItem takes at most 25 put or delete requests, BatchGetItem at most 100 keys
/// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html,
/// .../API_BatchGetItem.html).
const WRITE_BATCH: usize = 25;
const READ_BATCH: usize = 100;
/// Retries of the items a batch call left unprocessed (throttled partitions), with exponential
/// backoff from 50 ms, as the API reference asks for.
const UNPROCESSED_RETRIES: u32 = 10;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

const USERNAME: &str = "username";

pub struct TableStore {
    client: Client,
    table: String,
}

impl TableStore {
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn key(username: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(
            USERNAME.to_string(),
            AttributeValue::S(username.to_string()),
        )])
    }

    /// The SDK error as the user should read it: a missing table says how to create it.
    fn error<E, R>(&self, err: SdkError<E, R>, action: &str) -> anyhow::Error
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        if err.code() == Some("ResourceNotFoundException") {
            return Failure::new(
                format!("the device table {} does not exist", self.table),
                "run `iot-custom-auth setup` with `credential_store = \"dynamodb\"` in \
                 [deployment] to create it (or check --name and --region)",
            )
            .into();
        }
        Err::<(), _>(err).aws(action).unwrap_err()
    }

    pub async fn get(&self, username: &str) -> Result<Option<Device>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(username)))
            // A device command reads its own writes.
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error(e, "dynamodb:GetItem"))?;
        out.item().map(from_item).transpose()
    }

    pub async fn insert(&self, device: &Device) -> Result<()> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(device)))
            .condition_expression("attribute_not_exists(#u)")
            .expression_attribute_names("#u", USERNAME)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => bail!(Failure::usage(
                format!(
                    "device `{}` already exists in table {}",
                    device.username, self.table
                ),
                "choose another username, or `device remove` it first"
            )),
            Err(e) => Err(self.error(e, "dynamodb:PutItem")),
        }
    }

    pub async fn update(&self, old: &Device, new: &Device) -> Result<()> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(new)))
            .condition_expression("#v = :v")
            .expression_attribute_names("#v", "verifier")
            .expression_attribute_values(":v", AttributeValue::S(old.password_verifier.clone()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => {
                bail!(super::package::changed_meanwhile(&old.username))
            }
            Err(e) => Err(self.error(e, "dynamodb:PutItem")),
        }
    }

    pub async fn remove(&self, username: &str) -> Result<bool> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(username)))
            .condition_expression("attribute_exists(#u)")
            .expression_attribute_names("#u", USERNAME)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(self.error(e, "dynamodb:DeleteItem")),
        }
    }

    /// A Scan page: in the table's (hash) order; `after` is the last username of the previous
    /// page, which is exactly the ExclusiveStartKey of a table keyed by username alone.
    pub async fn list(&self, limit: usize, after: Option<&str>) -> Result<Page> {
        let mut devices = Vec::new();
        let mut start = after.map(Self::key);
        loop {
            let want = i32::try_from(limit - devices.len()).unwrap_or(i32::MAX);
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .limit(want)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.error(e, "dynamodb:Scan"))?;
            for item in out.items() {
                devices.push(from_item(item)?);
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() || devices.len() >= limit {
                break;
            }
        }
        let next = start.and(devices.last().map(|d| d.username.clone()));
        Ok(Page { devices, next })
    }

    /// Reads the stored items 100 at a time, writes only those that differ, 25 per
    /// BatchWriteItem, `concurrency` chunks in flight.
    pub async fn put_many(
        &self,
        incoming: Vec<Incoming>,
        concurrency: usize,
        tick: Tick<'_>,
    ) -> Result<Written> {
        futures::stream::iter(read_batches(incoming))
            .map(|chunk| self.put_chunk(chunk, tick))
            .buffer_unordered(concurrency.max(1))
            .try_fold(Written::default(), |total, w| async move { Ok(total + w) })
            .await
    }

    async fn put_chunk(&self, chunk: Vec<Incoming>, tick: Tick<'_>) -> Result<Written> {
        let stored = self
            .batch_get(chunk.iter().map(|i| i.device.username.as_str()))
            .await?;
        let mut written = Written::default();
        let mut items = Vec::new();
        for item in chunk {
            match stored.get(&item.device.username) {
                Some(old) if item.same_as(old) => written.unchanged += 1,
                old => {
                    let kept = old
                        .map(|d| d.previous_verifiers.clone())
                        .unwrap_or_default();
                    items.push(to_item(&super::normalized(Device {
                        previous_verifiers: kept,
                        ..item.device
                    })));
                }
            }
        }
        tick(written.unchanged);
        for batch in items.chunks(WRITE_BATCH) {
            self.batch_write(batch.to_vec()).await?;
            written.written += batch.len();
            tick(batch.len());
        }
        Ok(written)
    }

    /// Makes the table hold exactly `devices` (already normalized, see [`super::normalized`]):
    /// writes each whose stored item differs in any field, previous verifiers and the disabled
    /// flag included, and leaves identical ones alone, so a re-run writes nothing. Unlike
    /// [`Self::put_many`] it keeps no stored previous verifier: the caller's record is the
    /// truth (`device migrate`). `concurrency` chunks of 100 are in flight at once.
    pub async fn copy_in(
        &self,
        devices: Vec<Device>,
        concurrency: usize,
        tick: Tick<'_>,
    ) -> Result<Written> {
        futures::stream::iter(read_batches(devices))
            .map(|chunk| async move {
                let stored = self
                    .batch_get(chunk.iter().map(|d| d.username.as_str()))
                    .await?;
                let mut written = Written::default();
                let mut items = Vec::new();
                for device in &chunk {
                    if stored.get(&device.username) == Some(device) {
                        written.unchanged += 1;
                    } else {
                        items.push(to_item(device));
                    }
                }
                tick(written.unchanged);
                for batch in items.chunks(WRITE_BATCH) {
                    self.batch_write(batch.to_vec()).await?;
                    written.written += batch.len();
                    tick(batch.len());
                }
                Ok::<_, anyhow::Error>(written)
            })
            .buffer_unordered(concurrency.max(1))
            .try_fold(Written::default(), |total, w| async move { Ok(total + w) })
            .await
    }

    /// The usernames among `devices` whose stored item is missing or differs from them, read
    /// with strongly consistent BatchGetItem, `concurrency` requests of 100 keys in flight.
    pub async fn differing(&self, devices: &[Device], concurrency: usize) -> Result<Vec<String>> {
        let found: Vec<Vec<String>> = futures::stream::iter(devices.chunks(READ_BATCH))
            .map(|chunk| async move {
                let stored = self
                    .batch_get(chunk.iter().map(|d| d.username.as_str()))
                    .await?;
                Ok::<_, anyhow::Error>(
                    chunk
                        .iter()
                        .filter(|d| stored.get(&d.username) != Some(*d))
                        .map(|d| d.username.clone())
                        .collect(),
                )
            })
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn batch_get<'a>(
        &self,
        usernames: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, Device>> {
        let mut keys: Vec<_> = usernames.map(Self::key).collect();
        let mut found = HashMap::new();
        let mut backoff = FIRST_BACKOFF;
        for attempt in 0..=UNPROCESSED_RETRIES {
            if keys.is_empty() {
                return Ok(found);
            }
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut keys)))
                .consistent_read(true)
                .build()
                .context("building a BatchGetItem request")?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| self.error(e, "dynamodb:BatchGetItem"))?;
            for item in out
                .responses()
                .and_then(|r| r.get(&self.table))
                .into_iter()
                .flatten()
            {
                let device = from_item(item)?;
                found.insert(device.username.clone(), device);
            }
            keys = out
                .unprocessed_keys()
                .and_then(|u| u.get(&self.table))
                .map(|k| k.keys().to_vec())
                .unwrap_or_default();
        }
        bail!(throttled(&self.table, "BatchGetItem"))
    }

    async fn batch_write(&self, items: Vec<HashMap<String, AttributeValue>>) -> Result<()> {
        let mut requests = items
            .into_iter()
            .map(|item| {
                Ok(WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build()?)
                    .build())
            })
            .collect::<Result<Vec<_>>>()?;
        let mut backoff = FIRST_BACKOFF;
        for attempt in 0..=UNPROCESSED_RETRIES {
            if requests.is_empty() {
                return Ok(());
            }
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, std::mem::take(&mut requests))
                .send()
                .await
                .map_err(|e| self.error(e, "dynamodb:BatchWriteItem"))?;
            requests = out
                .unprocessed_items()
                .and_then(|u| u.get(&self.table))
                .cloned()
                .unwrap_or_default();
        }
        bail!(throttled(&self.table, "BatchWriteItem"))
    }
}

fn throttled(table: &str, operation: &str) -> Failure {
    Failure::new(
        format!(
            "DynamoDB kept leaving part of a {operation} on table {table} unprocessed \
             (throttled) after {UNPROCESSED_RETRIES} retries"
        ),
        "run the same command again: it skips what is already written (or lower --concurrency)",
    )
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code() == Some("ConditionalCheckFailedException")
}

/// The item for `device`, in the shape the authorizer reads (README, "Device store").
pub fn to_item(device: &Device) -> HashMap<String, AttributeValue> {
    let strings =
        |v: &[String]| AttributeValue::L(v.iter().cloned().map(AttributeValue::S).collect());
    let mut item = HashMap::from([
        (
            USERNAME.to_string(),
            AttributeValue::S(device.username.clone()),
        ),
        (
            "verifier".to_string(),
            AttributeValue::S(device.password_verifier.clone()),
        ),
        ("clientIds".to_string(), strings(&device.client_ids())),
        ("publish".to_string(), strings(&device.publish())),
        ("subscribe".to_string(), strings(&device.subscribe)),
        (
            "updatedAt".to_string(),
            AttributeValue::S(
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ),
        ),
    ]);
    if !device.previous_verifiers.is_empty() {
        let previous = device
            .previous_verifiers
            .iter()
            .map(|p| {
                AttributeValue::M(HashMap::from([
                    (
                        "verifier".to_string(),
                        AttributeValue::S(p.verifier.clone()),
                    ),
                    (
                        "expiresAt".to_string(),
                        AttributeValue::N(p.expires_at.to_string()),
                    ),
                ]))
            })
            .collect();
        item.insert("previous".to_string(), AttributeValue::L(previous));
    }
    if device.disabled {
        item.insert("disabled".to_string(), AttributeValue::Bool(true));
    }
    item
}

/// The device an item describes; an item in another shape is an error naming it.
pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Device> {
    let username = string(item, USERNAME)?;
    let parse = || -> Result<Device> {
        let previous_verifiers = match item.get("previous") {
            None => Vec::new(),
            Some(v) => v
                .as_l()
                .map_err(|_| anyhow!("`previous` is not a list"))?
                .iter()
                .map(|p| {
                    let m = p
                        .as_m()
                        .map_err(|_| anyhow!("a `previous` entry is not a map"))?;
                    Ok(PreviousVerifier {
                        verifier: string(m, "verifier")?,
                        expires_at: m
                            .get("expiresAt")
                            .and_then(|n| n.as_n().ok())
                            .and_then(|n| n.parse().ok())
                            .context("a `previous` entry has no numeric `expiresAt`")?,
                    })
                })
                .collect::<Result<_>>()?,
        };
        Ok(Device {
            username: username.clone(),
            password_verifier: string(item, "verifier")?,
            client_ids: strings(item, "clientIds")?,
            publish: strings(item, "publish")?,
            subscribe: strings(item, "subscribe")?,
            previous_verifiers,
            disabled: match item.get("disabled") {
                None => false,
                Some(v) => *v
                    .as_bool()
                    .map_err(|_| anyhow!("`disabled` is not a boolean"))?,
            },
        })
    };
    parse().with_context(|| format!("the table's item for `{username}` is malformed"))
}

fn string(item: &HashMap<String, AttributeValue>, key: &str) -> Result<String> {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .with_context(|| format!("`{key}` is missing or not a string"))
}

fn strings(item: &HashMap<String, AttributeValue>, key: &str) -> Result<Vec<String>> {
    match item.get(key) {
        None => Ok(Vec::new()),
        Some(v) => v
            .as_l()
            .map_err(|_| anyhow!("`{key}` is not a list"))?
            .iter()
            .map(|s| {
                s.as_s()
                    .cloned()
                    .map_err(|_| anyhow!("`{key}` holds a non-string"))
            })
            .collect(),
    }
}

/// `items` in chunks of [`READ_BATCH`], the most one BatchGetItem reads.
fn read_batches<T>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut rest = items.into_iter().peekable();
    let mut chunks = Vec::new();
    while rest.peek().is_some() {
        chunks.push(rest.by_ref().take(READ_BATCH).collect());
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_in_the_contracts_shape() {
        let device = Device {
            username: "s1".into(),
            password_verifier: crate::verifier::make(b"pw"),
            client_ids: vec!["c1".into()],
            publish: vec!["t/1".into()],
            subscribe: vec![],
            previous_verifiers: vec![PreviousVerifier {
                verifier: crate::verifier::make(b"old"),
                expires_at: 1_767_225_600,
            }],
            disabled: true,
        };
        let item = to_item(&device);
        assert_eq!(
            item["clientIds"],
            AttributeValue::L(vec![AttributeValue::S("c1".into())])
        );
        assert_eq!(item["disabled"], AttributeValue::Bool(true));
        let previous = item["previous"].as_l().unwrap()[0].as_m().unwrap();
        assert_eq!(
            previous["expiresAt"],
            AttributeValue::N("1767225600".into())
        );
        assert!(item["updatedAt"].as_s().unwrap().ends_with('Z'));
        assert_eq!(from_item(&item).unwrap(), device);
    }

    #[test]
    fn a_malformed_item_names_the_device() {
        let mut item = to_item(&Device {
            username: "s1".into(),
            password_verifier: "v".into(),
            client_ids: vec![],
            publish: vec![],
            subscribe: vec![],
            previous_verifiers: vec![],
            disabled: false,
        });
        item.insert("publish".into(), AttributeValue::S("t".into()));
        let err = format!("{:#}", from_item(&item).unwrap_err());
        assert!(err.contains("`s1`") && err.contains("`publish`"), "{err}");
    }
}
