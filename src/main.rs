//! iot-custom-auth: parse, set up logging, dispatch, map the outcome to an exit code.

mod app;
mod aws;
mod bundle;
mod cli;
mod commands;
mod config;
mod error;
mod local;
mod mqtt;
mod names;
mod policy;
mod progress;
mod resources;
mod store;
mod tls;
mod verifier;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    app::init_logging(&cli.global);
    let app = app::App::new(cli.global);
    let code = match commands::run(&app, cli.command).await {
        Ok(code) => code,
        Err(err) => error::report(&err),
    };
    ExitCode::from(code)
}
