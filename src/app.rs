//! What every command gets: the global flags, the loaded config, AWS clients built once, and a
//! place to print progress (stderr) and results (stdout).

use anyhow::Result;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::aws::{self, Clients};
use crate::cli::{GlobalArgs, OutputFormat};
use crate::config::Config;
use crate::names::{self, Names};

pub struct App {
    pub global: GlobalArgs,
    clients: OnceCell<Clients>,
}

impl App {
    pub fn new(global: GlobalArgs) -> Self {
        Self {
            global,
            clients: OnceCell::new(),
        }
    }

    pub fn config(&self) -> Result<Config> {
        Config::load(&self.global.config)
    }

    /// Resource names from --name, else the config's `deployment.name`, else the default.
    pub fn names(&self, config: &Config) -> Result<Names> {
        let name = self
            .global
            .name
            .as_deref()
            .or(config.deployment.name.as_deref())
            .unwrap_or(names::DEFAULT_NAME);
        Ok(Names::new(name)?.with_store(config.deployment.credential_store))
    }

    pub async fn clients(&self) -> Result<&Clients> {
        self.clients
            .get_or_try_init(|| async { Clients::new(&aws::sdk_config(&self.global).await) })
            .await
    }

    pub fn json(&self) -> bool {
        self.global.output == OutputFormat::Json
    }

    /// A progress line on stderr (hidden by -q).
    pub fn progress(&self, line: impl AsRef<str>) {
        if !self.global.quiet {
            eprintln!("{}", line.as_ref());
        }
    }

    /// A bounded wait the user should see (IAM propagation, Lambda becoming Active or Updated,
    /// `logs --follow`): a live spinner with the elapsed time on a terminal, the message as one
    /// plain stderr line otherwise. It ends when the returned value is dropped.
    pub fn wait(&self, message: impl Into<String>) -> crate::progress::Wait {
        crate::progress::Wait::start(message.into(), self.global.quiet)
    }

    /// Prints a result: its `Display` as text, or itself as JSON.
    pub fn print<T: Serialize + std::fmt::Display>(&self, result: &T) {
        if self.json() {
            println!(
                "{}",
                serde_json::to_string_pretty(result).expect("results serialize")
            );
        } else {
            print!("{result}");
        }
    }
}

/// Logs go to stderr: -v shows our steps, -vv the SDK's requests too. Other crates stay quiet
/// because their debug output can include request bodies.
pub fn init_logging(global: &GlobalArgs) {
    let filter = match (global.quiet, global.verbose) {
        (true, _) => "error",
        // aws_config warns about absent optional files; that is not the user's problem.
        (_, 0) => "warn,aws_config=error,aws_runtime=error",
        (_, 1) => "warn,aws_config=error,aws_runtime=error,iot_custom_auth=debug",
        _ => "warn,iot_custom_auth=trace,aws_config=debug,aws_smithy_runtime=debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        .without_time()
        .init();
}
