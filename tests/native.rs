//! What makes the CLI feel native: completion scripts each shell can load, a man page `man`
//! renders, a live spinner on a terminal (plain lines without one), colour only on a terminal
//! and never with NO_COLOR, JSON wherever there is a result.

mod common;

use std::process::{Command, Stdio};

use common::cli::Cli;
use common::standin::StandIn;

const SPINNER: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Runs a shell command line, returning (success, stdout + stderr).
fn sh(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is not installed ({e}); scripts/test installs it"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn completion_script(shell: &str) -> tempfile::NamedTempFile {
    let cli = Cli::with_env(vec![]);
    let run = cli.run(&["completions", shell]).expect(0);
    assert!(
        run.stdout.contains("iot-custom-auth"),
        "{shell}: {}",
        run.stdout
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &run.stdout).unwrap();
    file
}

#[test]
fn bash_completions_parse_and_register() {
    let script = completion_script("bash");
    let path = script.path().to_str().unwrap();
    let (ok, out) = sh("bash", &["-n", path]);
    assert!(ok, "bash -n: {out}");
    let (ok, out) = sh(
        "bash",
        &[
            "-c",
            &format!("source {path} && complete -p iot-custom-auth"),
        ],
    );
    assert!(ok && out.contains("iot-custom-auth"), "{out}");
    // The subcommands, including the new ones, are offered after the program name.
    let (ok, out) = sh(
        "bash",
        &[
            "-c",
            &format!(
                "source {path}; f=$(complete -p iot-custom-auth | sed -E 's/.*-F ([^ ]+).*/\\1/'); \
                 COMP_WORDS=(iot-custom-auth l); COMP_CWORD=1; COMP_LINE='iot-custom-auth l'; \
                 COMP_POINT=${{#COMP_LINE}}; \"$f\" iot-custom-auth l iot-custom-auth; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\""
            ),
        ],
    );
    assert!(
        ok && out.lines().any(|l| l == "logs") && out.lines().any(|l| l == "local"),
        "{out}"
    );
}

#[test]
fn zsh_and_fish_completions_parse() {
    let zsh = completion_script("zsh");
    let (ok, out) = sh("zsh", &["-n", zsh.path().to_str().unwrap()]);
    assert!(ok, "zsh -n: {out}");
    let fish = completion_script("fish");
    let (ok, out) = sh("fish", &["--no-execute", fish.path().to_str().unwrap()]);
    assert!(ok, "fish --no-execute: {out}");
    // PowerShell is not packaged by Debian, and elvish checks `edit:` variables that exist only
    // in its interactive mode: their scripts are only checked to be generated.
    completion_script("powershell");
    completion_script("elvish");
}

#[test]
fn the_man_page_renders_with_man() {
    let cli = Cli::with_env(vec![]);
    let run = cli.run(&["man"]).expect(0);
    assert!(
        run.stdout.starts_with(".ie") || run.stdout.contains(".TH"),
        "{}",
        run.stdout
    );
    let page = tempfile::Builder::new().suffix(".1").tempfile().unwrap();
    std::fs::write(page.path(), &run.stdout).unwrap();
    let out = Command::new("man")
        .args(["-l", page.path().to_str().unwrap()])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "NAME",
        "iot-custom-auth",
        "SUBCOMMANDS",
        "logs",
        "completions",
    ] {
        assert!(
            text.contains(expected),
            "man page lacks {expected}:\n{text}"
        );
    }
}

#[test]
fn device_list_prints_json() {
    let cli = Cli::with_env(vec![]);
    cli.add_device("sensor1", &["--subscribe", "cmd/sensor1"]);
    let list = cli
        .run(&["device", "list", "--output", "json"])
        .expect(0)
        .json();
    let devices = list["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["username"], "sensor1");
    assert_eq!(devices[0]["client_ids"][0], "sensor1");
    assert_eq!(devices[0]["subscribe"][0], "cmd/sensor1");
    assert!(!list.to_string().contains("sha256:"), "never the verifier");
}

/// Runs the binary under `script`, which gives it a real pseudo-terminal; returns the screen.
fn on_terminal(cli: &Cli, standin: &StandIn, args: &str, extra_env: &[(&str, &str)]) -> String {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_iot-custom-auth"));
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(cli.path())
        .envs(standin.env())
        .env_remove("NO_COLOR")
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("script (util-linux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// setup waits for the new function to become Active (the stand-in keeps it Pending 1 s): on a
/// terminal that wait is a spinner with the elapsed time; without one, one plain line.
#[test]
fn waits_spin_on_a_terminal_and_stay_plain_lines_without_one() {
    let standin = StandIn::start_with(&[
        "--role-propagation-seconds",
        "0",
        "--function-pending-seconds",
        "1.5",
    ]);
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    let screen = on_terminal(&cli, &standin, "setup", &[]);
    assert!(
        screen.contains("waiting for function iot-custom-auth-authorizer to become Active"),
        "{screen}"
    );
    assert!(
        screen.contains(SPINNER),
        "no spinner frame on a terminal:\n{screen:?}"
    );
    assert!(
        screen.contains("[1s]") || screen.contains("[2s]"),
        "elapsed time:\n{screen:?}"
    );

    cli.run(&["teardown", "--yes"]).expect(0);
    let run = cli.run(&["setup"]).expect(0);
    let waits: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("to become Active"))
        .collect();
    assert_eq!(waits.len(), 1, "one plain line:\n{}", run.stderr);
    assert!(
        !run.stderr.contains(SPINNER) && !run.stderr.contains('\r') && !run.stderr.contains('\x1b')
    );
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    cli.run(&["setup"]).expect(0);
    let coloured = on_terminal(&cli, &standin, "status", &[]);
    assert!(coloured.contains("\x1b[32mok"), "{coloured:?}");
    let plain = on_terminal(&cli, &standin, "status", &[("NO_COLOR", "1")]);
    assert!(
        plain.contains("ok  ") && !plain.contains('\x1b'),
        "{plain:?}"
    );
    let piped = cli.run(&["status"]).expect(0);
    assert!(!piped.stdout.contains('\x1b'), "{}", piped.stdout);
}
