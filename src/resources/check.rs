//! The health checks `status` reports: each resource's `checks` turn desired and observed state
//! into these, without calling AWS.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ok,
    Fail,
    /// Not checked because something it depends on is missing.
    Skip,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Stable identifier, e.g. `permission.source_arn`.
    pub id: &'static str,
    pub state: State,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

pub fn ok(id: &'static str, detail: impl Into<String>) -> Check {
    Check {
        id,
        state: State::Ok,
        detail: detail.into(),
        fix: None,
    }
}

pub fn fail(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        id,
        state: State::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

pub fn skip(id: &'static str, detail: impl Into<String>) -> Check {
    Check {
        id,
        state: State::Skip,
        detail: detail.into(),
        fix: None,
    }
}

pub fn check(
    id: &'static str,
    good: bool,
    ok_detail: impl Into<String>,
    bad_detail: impl Into<String>,
    fix: &str,
) -> Check {
    if good {
        ok(id, ok_detail)
    } else {
        fail(id, bad_detail, fix)
    }
}

/// The fix for anything `setup` repairs.
pub const SETUP: &str = "run `iot-custom-auth setup`";
