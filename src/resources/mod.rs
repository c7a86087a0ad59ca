//! One module per AWS resource, each with the same verbs: `read` (observe), `plan` (a pure diff of
//! desired against observed), `apply` (make it so), `delete` (already gone is success).
//! `setup`, `status` and `teardown` are compositions of these.

pub mod authorizer;
pub mod default_authorizer;
pub mod endpoint;
pub mod function;
pub mod log_group;
pub mod permission;
pub mod role;

use anyhow::Result;
use serde::Serialize;

use crate::aws::{Clients, Identity};
use crate::bundle::{self, Package};
use crate::config::Config;
use crate::names::Names;

/// What `setup` and `status` want to exist.
#[derive(Clone, Debug)]
pub struct Desired {
    pub names: Names,
    pub account: String,
    pub region: String,
    pub package: Package,
    pub runtime: String,
    pub memory_mb: i32,
    pub timeout_seconds: i32,
    pub default_authorizer: bool,
    pub log_retention_days: i32,
}

impl Desired {
    /// The desired state from the config: what `setup` deploys and `status` checks against.
    pub fn new(
        config: &Config,
        names: Names,
        identity: &Identity,
        region: &str,
        code: Option<&std::path::Path>,
        default_authorizer: bool,
    ) -> Result<Self> {
        let package = bundle::build(config, code, &bundle::arn_prefix(region, &identity.account))?;
        Ok(Self {
            names,
            account: identity.account.clone(),
            region: region.to_string(),
            package,
            runtime: config.deployment.runtime.clone(),
            memory_mb: config.deployment.memory_mb,
            timeout_seconds: config.deployment.timeout_seconds,
            default_authorizer,
            log_retention_days: config.deployment.log_retention_days,
        })
    }

    pub fn role_arn(&self) -> String {
        self.names.role_arn(&self.account)
    }
    pub fn function_arn(&self) -> String {
        self.names.function_arn(&self.region, &self.account)
    }
    pub fn authorizer_arn(&self) -> String {
        self.names.authorizer_arn(&self.region, &self.account)
    }
}

/// Everything there is to know about the deployment in AWS, read in one go.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub role: Option<role::Observed>,
    pub function: Option<function::Observed>,
    pub authorizer: Option<authorizer::Observed>,
    pub permission: Option<permission::Observed>,
    pub default_authorizer: Option<String>,
    pub log_group: Option<log_group::Observed>,
}

impl Observed {
    pub fn is_empty(&self) -> bool {
        self.role.is_none()
            && self.function.is_none()
            && self.authorizer.is_none()
            && self.permission.is_none()
            && !self.log_group.as_ref().is_some_and(|g| g.owned)
    }
}

/// Reads the caller's identity and every resource at once: the reads are independent, so they
/// run concurrently and a command's read phase costs one round trip, not seven.
pub async fn read_all(clients: &Clients, names: &Names) -> Result<(Identity, Observed)> {
    let (identity, role, function, authorizer, permission, default_authorizer, log_group) = tokio::try_join!(
        crate::aws::identity(clients),
        role::read(&clients.iam, names),
        function::read(&clients.lambda, names),
        authorizer::read(&clients.iot, names),
        permission::read(&clients.lambda, names),
        default_authorizer::read(&clients.iot),
        log_group::read(&clients.logs, names),
    )?;
    Ok((
        identity,
        Observed {
            role,
            function,
            authorizer,
            permission,
            default_authorizer,
            log_group,
        },
    ))
}

/// What happened (or, with --dry-run, would happen) to one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    Deleted,
    Cleared,
    /// Left alone because this deployment does not own it.
    Skipped,
    Failed,
}

impl Action {
    /// The progress word while it happens: "creating", "updating", ...
    pub fn progressive(self) -> &'static str {
        match self {
            Action::Created => "creating",
            Action::Updated => "updating",
            Action::Deleted => "deleting",
            Action::Cleared => "clearing",
            Action::Unchanged | Action::Skipped | Action::Failed => "checking",
        }
    }

    pub fn verb(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Action::Created, false) => "created",
            (Action::Created, true) => "would create",
            (Action::Updated, false) => "updated",
            (Action::Updated, true) => "would update",
            (Action::Deleted, false) => "deleted",
            (Action::Deleted, true) => "would delete",
            (Action::Cleared, false) => "cleared",
            (Action::Cleared, true) => "would clear",
            (Action::Unchanged, _) => "unchanged",
            (Action::Skipped, _) => "skipped",
            (Action::Failed, _) => "failed",
        }
    }
}

/// One line of a command's result.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub resource: &'static str,
    pub name: String,
    pub action: Action,
    /// What changed, or why it was skipped or failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl Outcome {
    pub fn new(resource: &'static str, name: impl Into<String>, action: Action) -> Self {
        Self {
            resource,
            name: name.into(),
            action,
            details: Vec::new(),
        }
    }

    pub fn with(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }
}

/// What the plans of the role, the function and the authorizer have in common.
pub trait Planned {
    /// Nothing exists yet: the resource is created whole.
    fn creates(&self) -> bool;
    /// What an update changes; empty when nothing differs.
    fn changes(&self) -> Vec<String>;

    /// The result line this plan gives (or, in a dry run, would give).
    fn outcome(&self, resource: &'static str, name: &str) -> Outcome {
        if self.creates() {
            return Outcome::new(resource, name, Action::Created);
        }
        let changes = self.changes();
        let action = if changes.is_empty() {
            Action::Unchanged
        } else {
            Action::Updated
        };
        Outcome::new(resource, name, action).with(changes)
    }
}

/// A resource whose name is ours but whose owner tag is not: never touched.
pub fn not_ours(what: &str, name: &str, deployment: &str) -> String {
    format!(
        "{what} `{name}` exists but was not created by deployment `{deployment}` (no `{}` tag)",
        crate::names::OWNER_TAG
    )
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A desired state for the pure planning tests.
    pub fn desired() -> Desired {
        Desired {
            names: Names::new("d").unwrap(),
            account: "111122223333".into(),
            region: "eu-west-1".into(),
            package: Package {
                zip: vec![],
                handler: "index.handler".into(),
                sha256: "abc=".into(),
            },
            runtime: "nodejs22.x".into(),
            memory_mb: 128,
            timeout_seconds: 5,
            default_authorizer: true,
            log_retention_days: 30,
        }
    }
}
