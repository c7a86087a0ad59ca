//! One module per subcommand; each reads top to bottom like the manual step it replaces.

pub mod connect;
pub mod demo;
pub mod device;
pub mod iam_policy;
pub mod logs;
pub mod setup;
pub mod status;
pub mod teardown;

use anyhow::Result;

use crate::app::App;
use crate::cli::Command;

/// Runs a command and returns its exit code.
pub async fn run(app: &App, command: Command) -> Result<u8> {
    match command {
        Command::Setup(args) => setup::run(app, args).await,
        Command::Status(args) => status::run(app, args).await,
        Command::Teardown(args) => teardown::run(app, args).await,
        Command::Device(cmd) => device::run(app, cmd).await,
        Command::IamPolicy(args) => iam_policy::run(app, args).await,
        Command::Connect(args) => connect::run(app, args).await,
        Command::Local(args) => crate::local::run(app, args).await,
        Command::Logs(args) => logs::run(app, args).await,
        Command::Completions(args) => {
            crate::cli::print_completions(&args);
            Ok(crate::error::exit::OK)
        }
        Command::Man => {
            crate::cli::print_man()?;
            Ok(crate::error::exit::OK)
        }
        Command::Demo(args) => demo::run(app, args).await,
    }
}
