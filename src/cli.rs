//! Command-line interface: the options every command shares and one variant per subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands::{connect, demo, device, iam_policy, logs, setup, status, teardown};

/// The config file used when --config is not given.
pub const DEFAULT_CONFIG: &str = "iot-custom-auth.toml";

#[derive(Debug, Parser)]
#[command(
    name = "iot-custom-auth",
    version,
    about = "Set up, check and tear down AWS IoT Core custom authentication (MQTT username/password)",
    long_about = "Set up, check and tear down AWS IoT Core custom authentication: MQTT devices log in \
with a username and password, checked by a Lambda authorizer, instead of X.509 certificates.\n\n\
Typical use: `demo` to see it work without an AWS account, `device add` to declare devices, \
`setup` to deploy, `status` in CI, `teardown` when done.",
    after_help = "Exit codes: 0 success, 1 error, 2 usage error, 3 not healthy (status, connect, demo).\n\
AWS credentials and region come from the usual places (environment, profile, SSO); \
AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> are honoured."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Config file declaring the devices and deployment settings.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = DEFAULT_CONFIG,
        env = "IOT_CUSTOM_AUTH_CONFIG"
    )]
    pub config: PathBuf,

    /// Deployment name; every AWS resource name is derived from it [default: the config's
    /// `deployment.name`, else `iot-custom-auth`].
    #[arg(long, global = true, value_name = "NAME", env = "IOT_CUSTOM_AUTH_NAME")]
    pub name: Option<String>,

    /// AWS region (otherwise AWS_REGION or the profile's region).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,

    /// AWS named profile (otherwise AWS_PROFILE).
    #[arg(long, global = true, value_name = "PROFILE")]
    pub profile: Option<String>,

    /// Send every AWS API call to this endpoint (a local stand-in, a proxy). AWS_ENDPOINT_URL and
    /// AWS_ENDPOINT_URL_<SERVICE> work too.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// Result format on stdout.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// More detail on stderr (-v: our steps, -vv: AWS SDK requests).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update everything custom authentication needs (idempotent).
    Setup(setup::SetupArgs),
    /// Check the deployment without changing anything; exit 3 when something is wrong.
    Status(status::StatusArgs),
    /// Remove everything `setup` created for this deployment.
    Teardown(teardown::TeardownArgs),
    /// Declare the devices (username, password verifier, client IDs, topics) in the config file.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Print the least-privilege IAM policy an operator needs to run a command.
    IamPolicy(iam_policy::IamPolicyArgs),
    /// Log in and publish like a device (MQTT over TLS, port 443, ALPN `mqtt`); exit 3 when
    /// refused.
    Connect(connect::ConnectArgs),
    /// Run IoT Core's custom-auth gateway on this machine: a TLS MQTT listener (ALPN `mqtt`)
    /// that checks each login with the authorizer under the local `node` and enforces the
    /// policies it returns. No AWS account needed.
    Local(crate::local::LocalArgs),
    /// Try the whole flow on this machine, no AWS account needed: devices with generated
    /// passwords, the `local` gateway with the bundled authorizer, and the connection test (right
    /// password publishes, subscriber receives; wrong password, other client ID, other topic
    /// refused), each step with the gateway's and the authorizer's reasons. Exit 3 when an
    /// expectation fails.
    Demo(demo::DemoArgs),
    /// Show the authorizer's login decisions (who was let in or refused, and why) from
    /// CloudWatch Logs, newest last.
    Logs(logs::LogsArgs),
    /// Print a shell completion script, e.g. `iot-custom-auth completions bash >
    /// ~/.local/share/bash-completion/completions/iot-custom-auth`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `iot-custom-auth man > ~/.local/share/man/man1/iot-custom-auth.1`.
    Man,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Writes the completion script for `shell` to stdout.
pub fn print_completions(args: &CompletionsArgs) {
    use clap::CommandFactory as _;
    let mut command = Cli::command();
    let name = command.get_name().to_string();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
}

/// Writes the man page to stdout.
pub fn print_man() -> std::io::Result<()> {
    use clap::CommandFactory as _;
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())
}
