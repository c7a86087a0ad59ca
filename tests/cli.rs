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
            "at least 2^128 are required",
        ),
        (
            vec!["device", "add", "weak", "--password-stdin"],
            Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            "Repeats like \"aaa\" are easy to guess",
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

/// The two passwords a security review got past the old character-class estimate (131 and 138
/// "bits"), and one of each other kind zxcvbn knows, are refused with zxcvbn's reason and the
/// command that makes a good one; machine-made secrets are accepted.
#[test]
fn device_add_refuses_guessable_passwords_and_says_how_to_make_one() {
    let c = cli();
    for (weak, why) in [
        ("Password1234567890!@", "zxcvbn finds a common password"),
        ("Summer2024!Winter2025", "a recent year"),
        ("qwertyuiop[]asdfghjkl;'zxcvbnm,./", "a keyboard pattern"),
        (
            "C0rr3ctH0rs3B4tt3rySt4pl3!",
            "with predictable substitutions",
        ),
        ("Tr0ub4dor&3Tr0ub4dor&3Tr0ub4dor&3", "a repeat"),
    ] {
        let run = c
            .run_stdin(&["device", "add", "weak", "--password-stdin"], weak)
            .expect(2);
        assert!(
            run.stderr.contains("password refused"),
            "{weak}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("at least 2^128 are required"),
            "{weak}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(why),
            "{weak}: expected `{why}` in {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(
                "hint: omit --password-stdin to get a generated one (24 random letters and digits, \
                 143 bits), or pipe in a random one: `openssl rand -base64 24 | iot-custom-auth \
                 device add weak --password-stdin`"
            ),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains(weak), "the password is never echoed");
    }
    assert!(!c.config_path().exists(), "nothing written");
    // openssl rand -base64 24, openssl rand -hex 16, and a password this tool generated.
    let generated = c
        .run(&["device", "add", "sensor0", "--output", "json"])
        .expect(0)
        .json()["password"]
        .as_str()
        .unwrap()
        .to_string();
    for (user, strong) in [
        ("sensor1", "pZ0u8v3mYkQ2c9Lr+X7Ta/1eHs6NbWdF"),
        ("sensor2", "9e107d9d372bb6826bd81d3542a419d6"),
        ("sensor3", generated.as_str()),
    ] {
        c.run_stdin(&["device", "add", user, "--password-stdin"], strong)
            .expect(0);
    }
}

#[cfg(unix)]
mod config_files {
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    use super::cli;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_private_config_stays_private() {
        let c = cli();
        c.add_device("a", &[]);
        std::fs::set_permissions(c.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        c.add_device("b", &[]);
        assert_eq!(mode(&c.config_path()), 0o600);
        c.run(&["device", "remove", "a"]).expect(0);
        assert_eq!(mode(&c.config_path()), 0o600);
    }

    #[test]
    fn a_symlinked_config_stays_a_symlink_and_its_target_is_updated() {
        let c = cli();
        let real_dir = c.path().join("shared");
        std::fs::create_dir(&real_dir).unwrap();
        let real = real_dir.join("fleet.toml");
        std::fs::write(&real, "# the fleet's config\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        symlink("shared/fleet.toml", c.config_path()).unwrap();
        c.add_device("sensor1", &[]);
        let link = std::fs::symlink_metadata(c.config_path()).unwrap();
        assert!(
            link.file_type().is_symlink(),
            "the link was replaced by a file"
        );
        let text = std::fs::read_to_string(&real).unwrap();
        assert!(
            text.contains("# the fleet's config") && text.contains("username = \"sensor1\""),
            "{text}"
        );
        assert_eq!(mode(&real), 0o640);
        let leftovers: Vec<_> = std::fs::read_dir(&real_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("fleet.toml")]);
    }

    #[test]
    fn a_planted_temp_file_symlink_is_not_written_through() {
        let c = cli();
        let victim = c.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let planted = c.path().join("iot-custom-auth.toml.tmp");
        symlink(&victim, &planted).unwrap();
        c.add_device("sensor1", &[]);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(
            std::fs::symlink_metadata(&planted)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            std::fs::read_to_string(c.config_path())
                .unwrap()
                .contains("sensor1")
        );
    }
}
