//! `device …`: the devices of a deployment, in the store it uses ([`crate::store`]): the config
//! file (`credential_store = "package"`; changes reach the authorizer at the next `setup`) or the
//! DynamoDB table (`"dynamodb"`; changes take effect within `cache_seconds`, no deploy).

use std::fmt;
use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::app::App;
use crate::config::{Config, Device, PreviousVerifier};
use crate::error::{Failure, exit};
use crate::store::import::{self, Format, Refused};
use crate::store::{self, Store, package::PackageStore};
use crate::verifier;

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Add a device; prints its generated password once (or reads one with --password-stdin).
    Add(AddArgs),
    /// List the devices (never their passwords or verifiers), a page at a time.
    List(ListArgs),
    /// Show one device: client IDs, topics, whether it is disabled, and until when the password
    /// it had before its last rotation still works.
    Show {
        /// The device's username.
        username: String,
    },
    /// Remove a device.
    Remove {
        /// The device's username.
        username: String,
    },
    /// Add or update many devices from a CSV (header row) or JSON Lines file; every row is
    /// checked before anything is written, and a re-run writes nothing new.
    Import(ImportArgs),
    /// Write every device to stdout as JSON Lines or CSV (the import format), without verifiers
    /// unless --with-verifiers; never a password (the tool never keeps one).
    Export(ExportArgs),
    /// Give a device a new password (generated and printed once, or read with
    /// --password-stdin) while the old one keeps working for --overlap, so devices in the field
    /// can be re-keyed without downtime.
    Rotate(RotateArgs),
    /// Stop a device from logging in, keeping its record.
    Disable {
        /// The device's username.
        username: String,
    },
    /// Let a disabled device log in again.
    Enable {
        /// The device's username.
        username: String,
    },
    /// Move the devices to the other store (config file ⇄ DynamoDB table) and switch the
    /// deployment, with no moment in which a device cannot log in; a re-run completes a run that
    /// stopped. Needs a deployment (`setup`) and credentials for `setup` plus the device
    /// commands' DynamoDB actions; --to package reads every verifier (Scan).
    Migrate(crate::store::migrate::MigrateArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Username the device logs in with (letters, digits, `-`, `_`, `.`, `@`).
    pub username: String,
    /// Client ID the device may connect as; repeat for several [default: the username].
    #[arg(long = "client-id", value_name = "ID")]
    pub client_ids: Vec<String>,
    /// Topic the device may publish to; repeat for several [default: telemetry/<client id>].
    #[arg(long, value_name = "TOPIC")]
    pub publish: Vec<String>,
    /// Topic filter the device may subscribe to and receive from; repeat for several [default: none].
    #[arg(long, value_name = "FILTER")]
    pub subscribe: Vec<String>,
    /// Read the password from stdin instead of generating one; it must take at least 2^128
    /// guesses by zxcvbn's estimate (e.g. `openssl rand -base64 24`).
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// At most this many devices.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// Continue after this username (the `next` of the previous page).
    #[arg(long, value_name = "USERNAME")]
    pub after: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file: CSV with a header row, or JSON Lines. Columns/keys: username, password or
    /// verifier, client_ids, publish, subscribe, disabled (lists `;`-separated in CSV).
    pub file: PathBuf,
    /// The file's format [default: from its extension, .csv or .jsonl].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Import the valid rows even when some are refused (they are listed either way).
    #[arg(long)]
    pub skip_invalid: bool,
    /// Write requests in flight at once (DynamoDB store).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Include each device's current verifier (a salted hash, not the password), so that the
    /// export can be imported elsewhere with the same passwords. Treat such a file as a secret.
    #[arg(long)]
    pub with_verifiers: bool,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The device's username.
    pub username: String,
    /// How long the old password keeps working, e.g. `24h`, `7d`, `90m`, `0s` [default: 24h].
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
    pub overlap: Duration,
    /// Read the new password from stdin instead of generating one (same strength rule as `add`).
    #[arg(long)]
    pub password_stdin: bool,
}

pub async fn run(app: &App, command: DeviceCommand) -> Result<u8> {
    let command = match command {
        DeviceCommand::Migrate(args) => return crate::store::migrate::run(app, args).await,
        other => other,
    };
    let config = app.config()?;
    let store = Store::open(app, &config).await?;
    match command {
        DeviceCommand::Add(args) => add(app, &store, args).await,
        DeviceCommand::List(args) => list(app, &store, args).await,
        DeviceCommand::Show { username } => show(app, &store, &username).await,
        DeviceCommand::Remove { username } => remove(app, &store, &username).await,
        DeviceCommand::Import(args) => import_file(app, &store, args).await,
        DeviceCommand::Export(args) => export(&store, args).await,
        DeviceCommand::Rotate(args) => rotate(app, &store, args).await,
        DeviceCommand::Disable { username } => set_disabled(app, &store, &username, true).await,
        DeviceCommand::Enable { username } => set_disabled(app, &store, &username, false).await,
        DeviceCommand::Migrate(_) => unreachable!("handled before the store is opened"),
    }
}

/// Changes in the config file need a deploy; the table is read at each login.
fn deploy_hint(store: &Store) -> bool {
    matches!(store, Store::Package(_))
}

#[derive(Serialize)]
pub struct Added {
    username: String,
    client_ids: Vec<String>,
    publish: Vec<String>,
    subscribe: Vec<String>,
    /// Only when generated: shown this once, never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Where the device was added: the config file, or `table <name>`.
    config: String,
    /// False when `setup` itself added the device and goes on to deploy it, or for the table.
    #[serde(skip)]
    deploy_hint: bool,
}

impl fmt::Display for Added {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "added device {} to {}", self.username, self.config)?;
        writeln!(f, "  client IDs: {}", self.client_ids.join(", "))?;
        writeln!(f, "  publish:    {}", self.publish.join(", "))?;
        if !self.subscribe.is_empty() {
            writeln!(f, "  subscribe:  {}", self.subscribe.join(", "))?;
        }
        if let Some(pw) = &self.password {
            writeln!(f, "  password:   {pw}")?;
            writeln!(
                f,
                "Store this password now: it is not saved anywhere and cannot be shown again."
            )?;
        }
        if self.deploy_hint {
            writeln!(f, "Run `iot-custom-auth setup` to deploy the change.")?;
        }
        Ok(())
    }
}

async fn add(app: &App, store: &Store, args: AddArgs) -> Result<u8> {
    let password = if args.password_stdin {
        Some(read_password(&args.username)?)
    } else {
        None
    };
    let added = match store {
        Store::Package(_) => add_device(app, args, password)?,
        Store::Dynamodb(_) => {
            let (device, password) = new_device(args, password)?;
            store.insert(&device).await?;
            added(&device, password, store.describe(), false)
        }
    };
    app.print(&added);
    Ok(exit::OK)
}

/// The password piped in, without its line ending, if it is strong enough.
fn read_password(username: &str) -> Result<String> {
    let mut pw = String::new();
    std::io::stdin()
        .read_to_string(&mut pw)
        .context("reading the password from stdin")?;
    let pw = pw
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&pw)
        .to_string();
    verifier::check_strength(&pw).map_err(|e| {
        Failure::usage(
            format!("password refused: {e:#}"),
            verifier::REMEDY.replace("USERNAME", username),
        )
    })?;
    Ok(pw)
}

/// The device `args` describe, checked alone (the rules between devices of the config file are
/// checked by its store), and its password: `password`, or a generated one (`Some` in the
/// second field only when generated).
fn new_device(args: AddArgs, password: Option<String>) -> Result<(Device, Option<String>)> {
    let generated = password.is_none();
    let password = password.unwrap_or_else(verifier::generate);
    let device = store::normalized(Device {
        username: args.username,
        password_verifier: verifier::make(password.as_bytes()),
        client_ids: args.client_ids,
        publish: args.publish,
        subscribe: args.subscribe,
        previous_verifiers: Vec::new(),
        disabled: false,
    });
    crate::config::validate_device(&device).map_err(|e| {
        Failure::usage(
            format!("device refused: {e:#}"),
            "fix the username, client IDs or topics",
        )
    })?;
    Ok((device, generated.then_some(password)))
}

fn added(device: &Device, password: Option<String>, store: String, deploy_hint: bool) -> Added {
    Added {
        username: device.username.clone(),
        client_ids: device.client_ids.clone(),
        publish: device.publish.clone(),
        subscribe: device.subscribe.clone(),
        password,
        config: store,
        deploy_hint,
    }
}

/// Adds a device to the config file: with `password`, or a generated one (then shown in the
/// result, once). Warns when the file holds more devices than the package store is meant for.
pub fn add_device(app: &App, args: AddArgs, password: Option<String>) -> Result<Added> {
    let store = PackageStore::new(app.global.config.clone());
    let (device, password) = new_device(args, password)?;
    let count = store.insert(&device)?;
    warn_if_large(app, count);
    Ok(added(
        &device,
        password,
        app.global.config.display().to_string(),
        true,
    ))
}

/// Past [`store::PACKAGE_STORE_RECOMMENDED_MAX`] devices in the config file, says to move them
/// to DynamoDB.
pub fn warn_if_large(app: &App, devices: usize) {
    if devices > store::PACKAGE_STORE_RECOMMENDED_MAX {
        app.progress(format!(
            "warning: {devices} devices in {}; past {} the package store slows the authorizer's \
             cold start and every change redeploys it. Move them to DynamoDB, \
             without downtime, with `iot-custom-auth device migrate --to dynamodb` (README, \
             \"Device store\").",
            app.global.config.display(),
            store::PACKAGE_STORE_RECOMMENDED_MAX
        ));
    }
}

impl AddArgs {
    /// A device with the defaults: client ID = username, publishes to telemetry/<username>.
    pub fn new(username: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            client_ids: Vec::new(),
            publish: Vec::new(),
            subscribe: Vec::new(),
            password_stdin: false,
        }
    }
}

/// For `setup` with a config that declares no devices: on a terminal, offers to add the first one
/// (username asked, password generated and shown once) and returns the config with it; without a
/// terminal nobody can answer, so it refuses as before, naming the ways forward.
pub fn first_device(app: &App) -> Result<Config> {
    let path = app.global.config.display().to_string();
    let refusal = || {
        Failure::usage(
            format!("{path} declares no devices, so every login would be refused"),
            "add one with `iot-custom-auth device add USERNAME` (or deploy your own authorizer \
             with --code); to see the whole flow first, without an AWS account, run \
             `iot-custom-auth demo`",
        )
    };
    if !std::io::stdin().is_terminal() {
        bail!(refusal());
    }
    eprintln!("{path} declares no devices, so every login would be refused.");
    eprintln!("Add the first one now? Its password is generated and shown once.");
    let stdin = std::io::stdin();
    // A few tries for a mistyped name; an empty answer stops.
    for _ in 0..3 {
        eprint!("Username (letters, digits, `-`, `_`, `.`, `@`; empty to stop): ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        if stdin.lock().read_line(&mut answer)? == 0 || answer.trim().is_empty() {
            break;
        }
        match add_device(app, AddArgs::new(answer.trim()), None) {
            // On stderr with the prompt, so that stdout stays the setup report (and parseable
            // with --output json); on a terminal both are on screen.
            Ok(added) => {
                eprint!(
                    "{}",
                    Added {
                        deploy_hint: false,
                        ..added
                    }
                );
                return app.config();
            }
            Err(e) => eprintln!("{e:#}"),
        }
    }
    bail!(refusal())
}

#[derive(Serialize)]
struct Listed {
    devices: Vec<ListedDevice>,
    /// Pass as --after for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

#[derive(Serialize)]
struct ListedDevice {
    username: String,
    client_ids: Vec<String>,
    publish: Vec<String>,
    subscribe: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disabled: bool,
}

impl From<&Device> for ListedDevice {
    fn from(d: &Device) -> Self {
        Self {
            username: d.username.clone(),
            client_ids: d.client_ids(),
            publish: d.publish(),
            subscribe: d.subscribe.clone(),
            disabled: d.disabled,
        }
    }
}

impl fmt::Display for Listed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.devices.is_empty() {
            return writeln!(
                f,
                "no devices; add one with `iot-custom-auth device add USERNAME`"
            );
        }
        for d in &self.devices {
            write!(
                f,
                "{}  client IDs: {}  publish: {}",
                d.username,
                d.client_ids.join(","),
                d.publish.join(",")
            )?;
            if !d.subscribe.is_empty() {
                write!(f, "  subscribe: {}", d.subscribe.join(","))?;
            }
            if d.disabled {
                write!(f, "  (disabled)")?;
            }
            writeln!(f)?;
        }
        if let Some(next) = &self.next {
            writeln!(f, "more: `iot-custom-auth device list --after {next}`")?;
        }
        Ok(())
    }
}

async fn list(app: &App, store: &Store, args: ListArgs) -> Result<u8> {
    let page = store
        .list(args.limit as usize, args.after.as_deref())
        .await?;
    app.print(&Listed {
        devices: page.devices.iter().map(ListedDevice::from).collect(),
        next: page.next,
    });
    Ok(exit::OK)
}

fn not_found(username: &str, store: &Store) -> Failure {
    Failure::usage(
        format!("no device `{username}` in {}", store.describe()),
        "`iot-custom-auth device list` shows the devices",
    )
}

async fn existing(store: &Store, username: &str) -> Result<Device> {
    match store.get(username).await? {
        Some(d) => Ok(d),
        None => bail!(not_found(username, store)),
    }
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

#[derive(Serialize)]
struct Shown {
    #[serde(flatten)]
    device: ListedDevice,
    /// When each password from before a rotation stops working (RFC 3339).
    previous_passwords_expire: Vec<String>,
    store: String,
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.device;
        writeln!(f, "device {} in {}", d.username, self.store)?;
        writeln!(f, "  client IDs: {}", d.client_ids.join(", "))?;
        writeln!(f, "  publish:    {}", d.publish.join(", "))?;
        if !d.subscribe.is_empty() {
            writeln!(f, "  subscribe:  {}", d.subscribe.join(", "))?;
        }
        writeln!(
            f,
            "  state:      {}",
            if d.disabled { "disabled" } else { "enabled" }
        )?;
        for until in &self.previous_passwords_expire {
            writeln!(f, "  previous password works until {until}")?;
        }
        Ok(())
    }
}

async fn show(app: &App, store: &Store, username: &str) -> Result<u8> {
    let device = existing(store, username).await?;
    let now = store::now();
    app.print(&Shown {
        device: ListedDevice::from(&device),
        previous_passwords_expire: device
            .previous_verifiers
            .iter()
            .filter(|p| p.expires_at > now)
            .map(|p| rfc3339(p.expires_at))
            .collect(),
        store: store.describe(),
    });
    Ok(exit::OK)
}

#[derive(Serialize)]
struct Changed {
    username: String,
    /// What happened: "removed", "disabled", "enabled", or "already disabled/enabled".
    change: String,
    store: String,
    #[serde(skip)]
    deploy_hint: bool,
}

impl fmt::Display for Changed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} device {} in {}",
            self.change, self.username, self.store
        )?;
        if self.deploy_hint {
            writeln!(f, "Run `iot-custom-auth setup` to deploy the change.")?;
        }
        Ok(())
    }
}

async fn remove(app: &App, store: &Store, username: &str) -> Result<u8> {
    if !store.remove(username).await? {
        bail!(not_found(username, store));
    }
    app.print(&Changed {
        username: username.to_string(),
        change: "removed".into(),
        store: store.describe(),
        deploy_hint: deploy_hint(store),
    });
    Ok(exit::OK)
}

async fn set_disabled(app: &App, store: &Store, username: &str, disabled: bool) -> Result<u8> {
    let device = existing(store, username).await?;
    let word = if disabled { "disabled" } else { "enabled" };
    let change = if device.disabled == disabled {
        format!("already {word}:")
    } else {
        store
            .update(
                &device,
                &Device {
                    disabled,
                    ..device.clone()
                },
            )
            .await?;
        word.to_string()
    };
    app.print(&Changed {
        username: username.to_string(),
        deploy_hint: deploy_hint(store) && device.disabled != disabled,
        change,
        store: store.describe(),
    });
    Ok(exit::OK)
}

#[derive(Serialize)]
struct Rotated {
    username: String,
    /// Only when generated: shown this once, never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    /// Until when the password it had keeps working (RFC 3339); absent with a zero overlap.
    #[serde(skip_serializing_if = "Option::is_none")]
    old_password_valid_until: Option<String>,
    store: String,
    #[serde(skip)]
    deploy_hint: bool,
}

impl fmt::Display for Rotated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "rotated the password of {} in {}",
            self.username, self.store
        )?;
        if let Some(pw) = &self.password {
            writeln!(f, "  new password: {pw}")?;
            writeln!(
                f,
                "Store this password now: it is not saved anywhere and cannot be shown again."
            )?;
        }
        match &self.old_password_valid_until {
            Some(until) => writeln!(f, "  the old password keeps working until {until}")?,
            None => writeln!(f, "  the old password no longer works")?,
        }
        if self.deploy_hint {
            writeln!(f, "Run `iot-custom-auth setup` to deploy the change.")?;
        }
        Ok(())
    }
}

async fn rotate(app: &App, store: &Store, args: RotateArgs) -> Result<u8> {
    let old = existing(store, &args.username).await?;
    let password = if args.password_stdin {
        read_password(&args.username)?
    } else {
        verifier::generate()
    };
    let until = (!args.overlap.is_zero()).then(|| {
        let end = SystemTime::now() + args.overlap;
        end.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    });
    let mut previous = old.previous_verifiers.clone();
    if let Some(expires_at) = until {
        previous.push(PreviousVerifier {
            verifier: old.password_verifier.clone(),
            expires_at,
        });
    }
    let new = Device {
        password_verifier: verifier::make(password.as_bytes()),
        previous_verifiers: previous,
        ..old.clone()
    };
    store.update(&old, &new).await?;
    app.print(&Rotated {
        username: args.username,
        password: (!args.password_stdin).then_some(password),
        old_password_valid_until: until.map(rfc3339),
        store: store.describe(),
        deploy_hint: deploy_hint(store),
    });
    Ok(exit::OK)
}

#[derive(Serialize)]
struct Imported {
    file: String,
    store: String,
    rows: usize,
    written: usize,
    unchanged: usize,
    refused: Vec<Refused>,
    #[serde(skip)]
    deploy_hint: bool,
}

impl fmt::Display for Imported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "imported {} into {}: {} rows, {} written, {} already up to date, {} refused",
            self.file,
            self.store,
            self.rows,
            self.written,
            self.unchanged,
            self.refused.len()
        )?;
        for r in &self.refused {
            writeln!(f, "  refused line {}: {}", r.line, describe_refusal(r))?;
        }
        if self.deploy_hint && self.written > 0 {
            writeln!(f, "Run `iot-custom-auth setup` to deploy the change.")?;
        }
        Ok(())
    }
}

fn describe_refusal(r: &Refused) -> String {
    match &r.username {
        Some(u) => format!("`{u}`: {}", r.reason),
        None => r.reason.clone(),
    }
}

/// How many refused rows a refusal message lists before summing up the rest.
const REFUSALS_SHOWN: usize = 20;

async fn import_file(app: &App, store: &Store, args: ImportArgs) -> Result<u8> {
    let format = match args.format {
        Some(f) => f,
        None => Format::of(&args.file)?,
    };
    let text = std::fs::read_to_string(&args.file).map_err(|e| {
        Failure::usage(
            format!("cannot read {}: {e}", args.file.display()),
            "check the path",
        )
    })?;
    let rows = import::read(&text, format)?;
    drop(text);
    let total = rows.len();
    let (good, refused) = import::check_all(rows);
    if !refused.is_empty() && !args.skip_invalid {
        let mut listed: Vec<String> = refused
            .iter()
            .take(REFUSALS_SHOWN)
            .map(|r| format!("line {}: {}", r.line, describe_refusal(r)))
            .collect();
        if refused.len() > REFUSALS_SHOWN {
            listed.push(format!("… and {} more", refused.len() - REFUSALS_SHOWN));
        }
        bail!(Failure::usage(
            format!(
                "{} of {total} rows in {} are refused, so nothing was imported:\n  {}",
                refused.len(),
                args.file.display(),
                listed.join("\n  ")
            ),
            "fix those rows, or pass --skip-invalid to import the others"
        ));
    }
    let count = crate::progress::Count::start(good.len(), "imported", app.global.quiet);
    let tick = |n: usize| count.add(n);
    let written = store
        .put_many(good, args.concurrency as usize, &tick)
        .await?;
    drop(count);
    if let Store::Package(_) = store {
        warn_if_large(app, app.config()?.devices.len());
    }
    app.print(&Imported {
        file: args.file.display().to_string(),
        store: store.describe(),
        rows: total,
        written: written.written,
        unchanged: written.unchanged,
        refused,
        deploy_hint: deploy_hint(store),
    });
    Ok(exit::OK)
}

/// Devices per page read while exporting.
const EXPORT_PAGE: usize = 1000;

async fn export(store: &Store, args: ExportArgs) -> Result<u8> {
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut csv_out, mut json_out) = match args.format {
        ExportFormat::Csv => (Some(csv::Writer::from_writer(out)), None),
        ExportFormat::Jsonl => (None, Some(out)),
    };
    if let Some(w) = &mut csv_out {
        let mut header = vec!["username", "client_ids", "publish", "subscribe", "disabled"];
        if args.with_verifiers {
            header.push("verifier");
        }
        w.write_record(&header)?;
    }
    let mut after: Option<String> = None;
    loop {
        let page = store.list(EXPORT_PAGE, after.as_deref()).await?;
        for d in &page.devices {
            let verifier = args.with_verifiers.then(|| d.password_verifier.clone());
            if let Some(w) = &mut csv_out {
                let mut record = vec![
                    d.username.clone(),
                    d.client_ids().join(";"),
                    d.publish().join(";"),
                    d.subscribe.join(";"),
                    d.disabled.to_string(),
                ];
                record.extend(verifier);
                w.write_record(&record)?;
            } else if let Some(out) = &mut json_out {
                let row = import::Row {
                    username: d.username.clone(),
                    password: None,
                    verifier,
                    client_ids: d.client_ids(),
                    publish: d.publish(),
                    subscribe: d.subscribe.clone(),
                    disabled: d.disabled,
                };
                serde_json::to_writer(&mut *out, &row)?;
                out.write_all(b"\n")?;
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if let Some(w) = &mut csv_out {
        w.flush()?;
    }
    if let Some(out) = &mut json_out {
        out.flush()?;
    }
    Ok(exit::OK)
}
