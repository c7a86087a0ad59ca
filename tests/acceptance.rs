//! `scripts/acceptance`, the opt-in lifecycle against a real account, run here against the
//! stand-in so the script itself is tested. The stand-in has no MQTT data endpoint, so its
//! connect step goes to an `iot-custom-auth local` gateway the script starts
//! (`ACCEPTANCE_CONNECT=local`); everything else runs exactly as against AWS.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::standin::StandIn;

fn acceptance(env: &[(String, String)], extra: &[(&str, &str)]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/acceptance");
    Command::new("bash")
        .arg(script)
        .env_remove("IOT_CUSTOM_AUTH_ACCEPTANCE")
        .env_remove("AWS_PROFILE")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("IOT_CUSTOM_AUTH_BIN", env!("CARGO_BIN_EXE_iot-custom-auth"))
        .envs(extra.iter().copied())
        .output()
        .expect("run scripts/acceptance")
}

#[test]
fn acceptance_runs_the_whole_lifecycle_and_leaves_nothing() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let out = acceptance(
        &standin.env(),
        &[
            ("IOT_CUSTOM_AUTH_ACCEPTANCE", "yes"),
            ("ACCEPTANCE_CONNECT", "local"),
            ("ACCEPTANCE_NAME", "acceptance-test"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let named = stderr
        .find("account 123456789012, region us-east-1")
        .expect("names the account and region");
    let setup = stderr.find("==> setup").expect("runs setup");
    assert!(
        named < setup,
        "names the account before changing anything:\n{stderr}"
    );
    for step in [
        "status --probe-user",
        "connect as probe",
        "setup after the device change",
        "teardown",
    ] {
        assert!(stderr.contains(step), "{step}:\n{stderr}");
    }
    let mutating: Vec<String> = standin
        .calls()
        .into_iter()
        .filter(|c| c.mutating)
        .map(|c| c.operation)
        .collect();
    assert!(mutating.contains(&"DeleteRole".to_string()), "{mutating:?}");
}

#[test]
fn acceptance_tears_down_when_a_step_fails() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    // The probe's TestInvokeAuthorizer is refused, so `status --probe-user` fails after setup.
    standin.set_behaviour(serde_json::json!({"fail": {"iot:TestInvokeAuthorizer": {
        "code": "AccessDeniedException", "status": 403, "count": 2, "message": "denied"}}}));
    let out = acceptance(
        &standin.env(),
        &[
            ("IOT_CUSTOM_AUTH_ACCEPTANCE", "yes"),
            ("ACCEPTANCE_CONNECT", "local"),
            ("ACCEPTANCE_NAME", "acceptance-fail"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("step failed: status --probe-user"),
        "{stderr}"
    );
    assert!(
        stderr.contains("teardown of acceptance-fail (always runs)"),
        "{stderr}"
    );
    let ops: Vec<String> = standin.calls().into_iter().map(|c| c.operation).collect();
    assert!(ops.contains(&"DeleteRole".to_string()), "{ops:?}");
}

#[test]
fn acceptance_refuses_without_the_opt_in() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let out = acceptance(&standin.env(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("IOT_CUSTOM_AUTH_ACCEPTANCE=yes"));
    assert!(standin.calls().is_empty(), "it must not even look");
}
