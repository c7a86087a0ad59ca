//! `device add | list | remove`: edit the devices in the config file. Nothing here talks to AWS;
//! changes reach the authorizer at the next `setup`.

use std::fmt;
use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

use crate::app::App;
use crate::config::{Config, Device};
use crate::error::{Failure, exit};
use crate::verifier;

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Add a device; prints its generated password once (or reads one with --password-stdin).
    Add(AddArgs),
    /// List the declared devices (never their passwords).
    List,
    /// Remove a device.
    Remove {
        /// The device's username.
        username: String,
    },
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

pub fn run(app: &App, command: DeviceCommand) -> Result<u8> {
    match command {
        DeviceCommand::Add(args) => add(app, args),
        DeviceCommand::List => list(app),
        DeviceCommand::Remove { username } => remove(app, &username),
    }
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
    config: String,
    /// False when `setup` itself added the device and goes on to deploy it.
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

fn add(app: &App, args: AddArgs) -> Result<u8> {
    let password = if args.password_stdin {
        Some(read_password(&args.username)?)
    } else {
        None
    };
    let added = add_device(app, args, password)?;
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

/// Adds a device to the config file: with `password`, or a generated one (then shown in the
/// result, once).
pub fn add_device(app: &App, args: AddArgs, password: Option<String>) -> Result<Added> {
    let path = &app.global.config;
    let mut config = app.config()?;
    if config.device(&args.username).is_some() {
        bail!(Failure::usage(
            format!(
                "device `{}` already exists in {}",
                args.username,
                path.display()
            ),
            "choose another username, or `device remove` it first"
        ));
    }
    let generated = password.is_none();
    let password = password.unwrap_or_else(verifier::generate);
    let device = Device {
        username: args.username.clone(),
        password_verifier: verifier::make(password.as_bytes()),
        client_ids: if args.client_ids.is_empty() {
            vec![args.username.clone()]
        } else {
            args.client_ids
        },
        publish: args.publish,
        subscribe: args.subscribe,
    };
    let device = Device {
        publish: device.publish(),
        ..device
    };
    config.devices.push(device.clone());
    config.validate().map_err(|e| {
        Failure::usage(
            format!("device refused: {e:#}"),
            "fix the username, client IDs or topics",
        )
    })?;

    let mut doc = read_document(path)?;
    devices_mut(&mut doc)?.push(device_table(&device));
    write_document(path, &doc)?;

    Ok(Added {
        username: device.username.clone(),
        client_ids: device.client_ids.clone(),
        publish: device.publish.clone(),
        subscribe: device.subscribe.clone(),
        password: generated.then_some(password),
        config: path.display().to_string(),
        deploy_hint: true,
    })
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
}

#[derive(Serialize)]
struct ListedDevice {
    username: String,
    client_ids: Vec<String>,
    publish: Vec<String>,
    subscribe: Vec<String>,
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
            writeln!(f)?;
        }
        Ok(())
    }
}

fn list(app: &App) -> Result<u8> {
    let config = app.config()?;
    app.print(&Listed {
        devices: config
            .devices
            .iter()
            .map(|d| ListedDevice {
                username: d.username.clone(),
                client_ids: d.client_ids(),
                publish: d.publish(),
                subscribe: d.subscribe.clone(),
            })
            .collect(),
    });
    Ok(exit::OK)
}

#[derive(Serialize)]
struct Removed {
    username: String,
    config: String,
}

impl fmt::Display for Removed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "removed device {} from {}", self.username, self.config)?;
        writeln!(f, "Run `iot-custom-auth setup` to deploy the change.")
    }
}

fn remove(app: &App, username: &str) -> Result<u8> {
    let path = &app.global.config;
    let config: Config = app.config()?;
    let Some(index) = config.devices.iter().position(|d| d.username == username) else {
        bail!(Failure::usage(
            format!("no device `{username}` in {}", path.display()),
            "`iot-custom-auth device list` shows the declared devices"
        ));
    };
    let mut doc = read_document(path)?;
    devices_mut(&mut doc)?.remove(index);
    write_document(path, &doc)?;
    app.print(&Removed {
        username: username.to_string(),
        config: path.display().to_string(),
    });
    Ok(exit::OK)
}

fn read_document(path: &std::path::Path) -> Result<DocumentMut> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.parse()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DocumentMut::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_document(path: &std::path::Path, doc: &DocumentMut) -> Result<()> {
    crate::config::write(path, &doc.to_string())
}

fn devices_mut(doc: &mut DocumentMut) -> Result<&mut ArrayOfTables> {
    doc.entry("devices")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .context("`devices` in the config file must be an array of tables ([[devices]])")
}

fn device_table(device: &Device) -> Table {
    let strings = |v: &[String]| value(v.iter().collect::<Array>());
    let mut t = Table::new();
    t["username"] = value(&device.username);
    t["password_verifier"] = value(&device.password_verifier);
    t["client_ids"] = strings(&device.client_ids);
    t["publish"] = strings(&device.publish);
    t["subscribe"] = strings(&device.subscribe);
    t
}
