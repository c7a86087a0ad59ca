//! The command line itself: help texts, usage errors, and the `device` commands (which edit the
//! config file and never talk to AWS).

mod common;

use common::cli::Cli;

fn cli() -> Cli {
    // No AWS at all: these commands must not need it.
    Cli::with_env(vec![("AWS_EC2_METADATA_DISABLED".into(), "true".into())])
}

#[test]
fn every_command_explains_itself() {
    let c = cli();
    let top = c.run(&["--help"]).expect(0);
    for cmd in ["setup", "status", "teardown", "device", "iam-policy"] {
        assert!(top.stdout.contains(cmd), "--help lists {cmd}");
        let help = c.run(&[cmd, "--help"]).expect(0);
        assert!(
            help.stdout.contains("Usage: iot-custom-auth"),
            "{cmd} --help"
        );
        assert!(
            help.stdout.contains("--config <FILE>"),
            "{cmd} --help shows the global options"
        );
    }
    assert!(
        top.stdout
            .contains("Exit codes: 0 success, 1 error, 2 usage error, 3 not healthy")
    );
    for sub in ["add", "list", "remove"] {
        c.run(&["device", sub, "--help"]).expect(0);
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let c = cli();
    let run = c.run(&["setup", "--no-such-flag"]).expect(2);
    assert!(run.stderr.contains("unexpected argument"), "{}", run.stderr);
    c.run(&["frobnicate"]).expect(2);
    c.run(&["status", "--output", "yaml"]).expect(2);
    c.run(&["setup", "--no-default", "--replace-default"])
        .expect(2);
}

#[test]
fn device_add_generates_a_password_shown_once_and_stores_only_a_verifier() {
    let c = cli();
    let run = c
        .run(&["device", "add", "sensor1", "--output", "json"])
        .expect(0);
    let password = run.json()["password"].as_str().unwrap().to_string();
    assert!(password.len() >= 22, "at least 128 bits: {password}");
    let config = std::fs::read_to_string(c.config_path()).unwrap();
    assert!(
        !config.contains(&password),
        "the password must never be stored"
    );
    assert!(config.contains("password_verifier = \"sha256:"), "{config}");
    assert!(config.contains("client_ids = [\"sensor1\"]"), "{config}");
    assert!(
        config.contains("publish = [\"telemetry/sensor1\"]"),
        "{config}"
    );

    let list = c.run(&["device", "list"]).expect(0);
    assert!(list.stdout.contains("sensor1"));
    assert!(!list.stdout.contains(&password) && !list.stdout.contains("sha256:"));
}

#[test]
fn device_add_text_output_prints_the_password_once_with_a_warning() {
    let c = cli();
    let run = c
        .run(&[
            "device",
            "add",
            "sensor1",
            "--client-id",
            "s1",
            "--client-id",
            "s1b",
            "--subscribe",
            "cmd/s1/#",
        ])
        .expect(0);
    assert!(run.stdout.contains("password:"), "{}", run.stdout);
    assert!(run.stdout.contains("cannot be shown again"));
    assert!(
        run.stdout.contains("telemetry/s1, telemetry/s1b"),
        "{}",
        run.stdout
    );
}

#[test]
fn weak_or_bad_devices_are_refused_and_leave_the_config_unchanged() {
    let c = cli();
    c.add_device("sensor1", &[]);
    let before = std::fs::read_to_string(c.config_path()).unwrap();
    let cases: Vec<(Vec<&str>, Option<&str>, &str)> = vec![
        (
            vec!["device", "add", "weak", "--password-stdin"],
            Some("test"),
            "shorter than 20",
        ),
        (
            vec!["device", "add", "weak", "--password-stdin"],
            Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            "too few characters",
        ),
        (vec!["device", "add", "sensor1"], None, "already exists"),
        (
            vec!["device", "add", "bad?name"],
            None,
            "must be 1 to 128 characters",
        ),
        (
            vec!["device", "add", "s-2", "--publish", "a/+/b"],
            None,
            "MQTT wildcard",
        ),
        (
            vec!["device", "add", "s-3", "--subscribe", "a/#/b"],
            None,
            "must be the last level",
        ),
        (
            vec!["device", "add", "s-4", "--publish", "a/*"],
            None,
            "wildcards or variables",
        ),
        (
            vec!["device", "add", "s-5", "--client-id", "sensor1"],
            None,
            "client ID `sensor1` is claimed",
        ),
        (vec!["device", "add", "sensor-1"], None, "principal id"),
    ];
    for (args, stdin, why) in cases {
        let run = match stdin {
            Some(s) => c.run_stdin(&args, s),
            None => c.run(&args),
        }
        .expect(2);
        assert!(
            run.stderr.contains(why),
            "{args:?}: expected `{why}` in:\n{}",
            run.stderr
        );
    }
    let mut many = vec!["device", "add", "many"];
    let topics: Vec<String> = (0..120)
        .map(|i| format!("t/{i}/{}", "x".repeat(120)))
        .collect();
    for t in &topics {
        many.extend(["--publish", t.as_str()]);
    }
    let run = c.run(&many).expect(2);
    assert!(
        run.stderr.contains("IoT accepts at most 10"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(c.config_path()).unwrap(), before);
}

#[test]
fn device_remove_keeps_the_users_comments() {
    let c = cli();
    std::fs::write(
        c.config_path(),
        "# our fleet\n[deployment]\nruntime = \"nodejs24.x\" # newest\n",
    )
    .unwrap();
    c.add_device("a", &[]);
    c.add_device("b", &[]);
    c.run(&["device", "remove", "a"]).expect(0);
    let config = std::fs::read_to_string(c.config_path()).unwrap();
    assert!(
        config.contains("# our fleet") && config.contains("# newest"),
        "{config}"
    );
    assert!(
        !config.contains("username = \"a\"") && config.contains("username = \"b\""),
        "{config}"
    );
    let run = c.run(&["device", "remove", "a"]).expect(2);
    assert!(run.stderr.contains("no device `a`"), "{}", run.stderr);
}

#[test]
fn a_config_error_points_at_the_line() {
    let c = cli();
    std::fs::write(
        c.config_path(),
        "[deployment]\nruntime = \"nodejs22.x\"\ntimeout_seconds = 30\n",
    )
    .unwrap();
    let run = c.run(&["device", "list"]).expect(2);
    assert!(
        run.stderr.contains("timeout_seconds must be 1..=5"),
        "{}",
        run.stderr
    );
    std::fs::write(
        c.config_path(),
        "[deployment]\nruntime = \"nodejs22.x\"\n\n[[devices]\n",
    )
    .unwrap();
    let run = c.run(&["device", "list"]).expect(2);
    assert!(run.stderr.contains("line 4"), "{}", run.stderr);
}
