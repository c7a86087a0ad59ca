//! Runs the built `iot-custom-auth` binary in a scratch directory, against a stand-in.

// Each test binary uses only part of this helper.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::standin::StandIn;

/// What a run of the CLI produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The stdout parsed as JSON (for `--output json` runs).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A scratch directory holding a config file, with the stand-in's environment.
pub struct Cli {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Cli {
    pub fn new(standin: &StandIn) -> Self {
        Self::with_env(standin.env())
    }

    pub fn with_env(env: Vec<(String, String)>) -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            env,
        }
    }

    /// A scratch directory whose config file holds `config`.
    pub fn with_config(standin: &StandIn, config: &str) -> Self {
        let cli = Self::new(standin);
        std::fs::write(cli.config_path(), config).expect("writing the config");
        cli
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("iot-custom-auth.toml")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None, &[])
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        self.run_with(args, Some(stdin), &[])
    }

    /// Runs with extra environment variables; an empty value removes the variable.
    pub fn run_with(&self, args: &[&str], stdin: Option<&str>, extra_env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iot-custom-auth"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("AWS_PROFILE")
            .env_remove("IOT_CUSTOM_AUTH_PASSWORD")
            .env_remove("IOT_CUSTOM_AUTH_NAME")
            .env_remove("IOT_CUSTOM_AUTH_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().expect("run iot-custom-auth");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(input);
        let out = child.wait_with_output().expect("wait for iot-custom-auth");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Adds a device with a known password and returns the password.
    pub fn add_device(&self, username: &str, extra: &[&str]) -> String {
        let password = format!("Pw-{username}-Zq8x3Lr5Tb7Nc2Vm9Kd4");
        let mut args = vec!["device", "add", username, "--password-stdin"];
        args.extend_from_slice(extra);
        self.run_stdin(&args, &password).expect(0);
        password
    }
}
