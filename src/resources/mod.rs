//! The deployment's resources and the three walks over them.
//!
//! One module per AWS resource, each with the same verbs: `read` (observe), `plan` (a pure diff
//! of desired against observed), `apply` (make it so), `delete` (already gone is success), and
//! `checks` (the pure diff `status` reports). Each module exposes them through one [`Resource`]
//! value; [`RESOURCES`] lists those values, each naming what it depends on, and [`walk`] and
//! [`walk_back`] order them by those dependencies. The commands never name a resource:
//!
//! - `setup` walks forward: refuse what must not be touched, then plan and apply each, every
//!   resource as soon as what its [`Resource::after`] names is done ([`concurrently`]);
//! - `status` reads everything and concatenates every resource's `checks` (read-only);
//! - `teardown` walks back ([`walk_back`]), deleting what this deployment owns, every resource
//!   as soon as what its [`Resource::removed_after`] names is gone.
//!
//! **Adding a resource** (a log group, a table): write `resources/<name>.rs` with its verbs and a
//! `pub static RESOURCE` implementing [`Resource`] (its `after` names the resources it needs
//! first, its `removed_after` those AWS needs gone before it can be deleted), add its observed
//! state as a field of [`Observed`] (its `read` fills it in), and add one entry to
//! [`RESOURCES`]. Nothing in `commands/` changes.

pub mod authorizer;
pub mod check;
pub mod default_authorizer;
pub mod endpoint;
pub mod function;
pub mod log_group;
pub mod permission;
pub mod role;
pub mod table;

use std::sync::{Arc, Mutex};

use anyhow::Result;
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use serde::Serialize;

use crate::app::App;
use crate::aws::{Clients, Identity};
use crate::bundle::{self, Package};
use crate::config::Config;
use crate::names::Names;

pub use check::Check;

/// Every resource of a deployment, each naming what it depends on; [`walk`] and [`walk_back`]
/// order them for the commands. Add a new resource here (see the module comment).
pub static RESOURCES: &[&dyn Resource] = &[
    &role::RESOURCE,
    &log_group::RESOURCE,
    &table::RESOURCE,
    &function::RESOURCE,
    &authorizer::RESOURCE,
    &permission::RESOURCE,
    &default_authorizer::RESOURCE,
];

/// The resources in the order `setup` creates them (and `status` reports them): each after
/// everything its [`Resource::after`] names, ties broken by the order of [`RESOURCES`].
pub fn walk() -> Vec<&'static dyn Resource> {
    ordered(RESOURCES.iter().copied(), |r, done| {
        r.after().iter().all(|dep| has(done, dep))
    })
}

/// The order `teardown` deletes (and reports) in: each after everything its
/// [`Resource::removed_after`] names, ties broken by the reverse order of [`RESOURCES`] (the
/// last created first).
pub fn walk_back() -> Vec<&'static dyn Resource> {
    ordered(RESOURCES.iter().rev().copied(), |r, done| {
        r.removed_after().iter().all(|kind| has(done, kind))
    })
}

fn has(done: &[&dyn Resource], kind: &str) -> bool {
    done.iter().any(|d| d.kind() == kind)
}

/// Repeatedly takes the first resource of `candidates` not taken yet that `ready` allows.
fn ordered(
    candidates: impl Iterator<Item = &'static dyn Resource> + Clone,
    ready: impl Fn(&dyn Resource, &[&dyn Resource]) -> bool,
) -> Vec<&'static dyn Resource> {
    let mut done: Vec<&'static dyn Resource> = Vec::with_capacity(RESOURCES.len());
    while done.len() < RESOURCES.len() {
        let next = candidates
            .clone()
            .find(|r| !has(&done, r.kind()) && ready(*r, &done))
            .expect(
                "RESOURCES: every `after` and `removed_after` names a listed kind, without cycles",
            );
        done.push(next);
    }
    done
}

/// Resolves when every resource a step waits for has finished: `true` when all succeeded.
pub type Ready<'a> = BoxFuture<'a, bool>;

/// Runs `step` for every resource of `order` at once, handing each a [`Ready`] future that
/// resolves when the resources of `order` it `needs` have finished (a kind not in `order`
/// counts as done). A step can so do what needs nothing first (teardown deactivates an
/// authorizer while the default is cleared) and wait for the rest; it should not start what
/// needs a failed resource. `order` lists each resource after those it needs. Returns every
/// step's result, in `order`, once all have finished: a failure does not cancel steps that do
/// not depend on it, so a re-run finds as much done as possible.
pub async fn concurrently<'a>(
    order: &[&'static dyn Resource],
    needs: fn(&dyn Resource) -> &'static [&'static str],
    step: impl Fn(&'static dyn Resource, Ready<'a>) -> BoxFuture<'a, Result<()>>,
) -> Vec<Result<()>> {
    let results: Arc<Mutex<Vec<Option<Result<()>>>>> =
        Arc::new(Mutex::new(order.iter().map(|_| None).collect()));
    let mut finished: Vec<Shared<BoxFuture<'a, bool>>> = Vec::with_capacity(order.len());
    for (i, resource) in order.iter().enumerate() {
        let deps: Vec<_> = needs(*resource)
            .iter()
            .filter_map(|kind| order[..i].iter().position(|r| r.kind() == *kind))
            .map(|j| finished[j].clone())
            .collect();
        let ready = futures::future::join_all(deps)
            .map(|done| done.into_iter().all(|ok| ok))
            .boxed();
        let run = step(*resource, ready);
        let results = Arc::clone(&results);
        let done = async move {
            let result = run.await;
            let ok = result.is_ok();
            results.lock().expect("no step panics holding it")[i] = Some(result);
            ok
        };
        finished.push(done.boxed().shared());
    }
    futures::future::join_all(finished).await;
    std::mem::take(&mut *results.lock().expect("no step panics holding it"))
        .into_iter()
        .map(|r| r.expect("every step has finished"))
        .collect()
}

/// The error of a step that was not attempted because one of the kinds it `needed` could not be
/// done (that one's own error is reported too).
pub fn not_attempted(needed: &[&str]) -> anyhow::Error {
    anyhow::anyhow!("not attempted: it needs {} first", needed.join(" and "))
}

/// What a resource's `read` found, to be stored in its field of [`Observed`]. The reads run
/// concurrently, so each returns its result rather than writing into a shared value.
pub type Reading = Box<dyn FnOnce(&mut Observed) + Send>;

/// One resource of the deployment, as the walks see it. Every method but `read`, `apply` and
/// `delete` is pure.
pub trait Resource: Sync {
    /// The `resource` of result lines and JSON: `role`, `function`, ...
    fn kind(&self) -> &'static str;
    /// For people: `IAM role`, `Lambda function`, ...
    fn label(&self) -> &'static str;
    /// The kinds `setup` must have done (created, updated or found as desired) before it
    /// applies this one: only what AWS needs, so that everything else runs concurrently.
    fn after(&self) -> &'static [&'static str];
    /// The kinds `teardown` must have deleted before it deletes this one: only what AWS needs
    /// (a resource may outlive what it refers to), so that independent chains run concurrently.
    fn removed_after(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether this deployment has the resource at all (the devices table only with the DynamoDB
    /// store); `setup` neither plans nor reports one it has not.
    fn deployed(&self, _desired: &Desired) -> bool {
        true
    }
    /// Observes the resource; "not found" is a reading, not an error.
    fn read<'a>(&'a self, clients: &'a Clients, names: &'a Names)
    -> BoxFuture<'a, Result<Reading>>;
    /// `status`: the checks of this resource, desired against observed.
    fn checks(&self, desired: &Desired, observed: &Observed) -> Vec<Check>;
    /// `setup`: refuses (before any change) what must not be touched.
    fn refuse(
        &self,
        _desired: &Desired,
        _observed: &Observed,
        _options: &SetupOptions,
    ) -> Result<()> {
        Ok(())
    }
    /// `setup`: the result line applying would give (or, in a dry run, would give).
    fn plan(&self, desired: &Desired, observed: &Observed) -> Outcome;
    /// `setup`: makes the resource as desired; does nothing when nothing differs.
    fn apply<'a>(&'a self, step: &'a Step<'a>) -> BoxFuture<'a, Result<()>>;
    /// `teardown`: whether to delete it, or to leave it alone and why.
    fn removal(&self, names: &Names, observed: &Observed) -> Removal;
    /// `teardown`: [`Resource::removal`] when its flags matter (`--delete-devices`).
    fn removal_with(
        &self,
        names: &Names,
        observed: &Observed,
        _options: &TeardownOptions,
    ) -> Removal {
        self.removal(names, observed)
    }
    /// `teardown`: what can be done before [`Resource::removed_after`] is gone (deactivating),
    /// run at once; a failure is not final, `delete` tries it again.
    fn retire<'a>(
        &'a self,
        _clients: &'a Clients,
        _names: &'a Names,
        _observed: &'a Observed,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// `teardown`: deletes it; already gone is success.
    fn delete<'a>(
        &'a self,
        app: &'a App,
        clients: &'a Clients,
        names: &'a Names,
        observed: &'a Observed,
    ) -> BoxFuture<'a, Result<()>>;
}

/// What `setup`'s flags change about refusing.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetupOptions {
    /// --replace-default: another authorizer being the default is no reason to stop.
    pub replace_default: bool,
}

/// What `teardown`'s flags change about removing.
#[derive(Clone, Copy, Debug, Default)]
pub struct TeardownOptions {
    /// --delete-devices: a devices table that still holds devices is deleted too.
    pub delete_devices: bool,
}

/// What `setup` hands each resource's `apply`.
pub struct Step<'a> {
    pub app: &'a App,
    pub clients: &'a Clients,
    pub desired: &'a Desired,
    pub observed: &'a Observed,
}

/// `teardown`'s decision for one resource.
#[derive(Clone, Debug)]
pub enum Removal {
    /// Nothing of ours there.
    Absent,
    /// Ours: delete it; the outcome it gives when that succeeds.
    Delete(Outcome),
    /// There, but not to be touched: reported as skipped.
    Skip(Outcome),
}

/// What `setup` and `status` want to exist.
#[derive(Clone, Debug)]
pub struct Desired {
    pub names: Names,
    pub account: String,
    /// The caller's partition (`aws`, `aws-cn`, ...): every ARN is built in it.
    pub partition: String,
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
        let prefix = bundle::arn_prefix_in(&identity.partition, region, &identity.account);
        let package = bundle::build_for(config, &names, code, &prefix)?;
        Ok(Self {
            names,
            account: identity.account.clone(),
            partition: identity.partition.clone(),
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
        self.names.role_arn(&self.partition, &self.account)
    }
    pub fn basic_execution_policy_arn(&self) -> String {
        crate::names::basic_execution_policy_arn(&self.partition)
    }
    /// The prefix of the IoT ARNs in the device policies (`arn:aws:iot:REGION:ACCOUNT`).
    pub fn iot_arn_prefix(&self) -> String {
        bundle::arn_prefix_in(&self.partition, &self.region, &self.account)
    }
    pub fn function_arn(&self) -> String {
        self.names
            .function_arn(&self.partition, &self.region, &self.account)
    }
    pub fn authorizer_arn(&self) -> String {
        self.names
            .authorizer_arn(&self.partition, &self.region, &self.account)
    }
    pub fn table_arn(&self) -> String {
        self.names
            .table_arn(&self.partition, &self.region, &self.account)
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
    pub table: Option<table::Observed>,
}

impl Observed {
    pub fn is_empty(&self) -> bool {
        self.role.is_none()
            && self.function.is_none()
            && self.authorizer.is_none()
            && self.permission.is_none()
            && !self.log_group.as_ref().is_some_and(|g| g.owned)
            && !self.table.as_ref().is_some_and(|t| t.owned)
    }
}

/// Reads the caller's identity and every resource at once: the reads are independent, so they
/// run concurrently and a command's read phase costs one round trip, not seven.
pub async fn read_all(clients: &Clients, names: &Names) -> Result<(Identity, Observed)> {
    let (identity, readings) = tokio::try_join!(
        crate::aws::identity(clients),
        futures::future::try_join_all(RESOURCES.iter().map(|r| r.read(clients, names))),
    )?;
    let mut observed = Observed::default();
    for reading in readings {
        reading(&mut observed);
    }
    Ok((identity, observed))
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
    /// Ours, but kept on purpose (a devices table that still holds devices).
    Kept,
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
            Action::Unchanged | Action::Skipped | Action::Kept | Action::Failed => "checking",
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
            (Action::Kept, _) => "kept",
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
    /// Its result line, as `setup`, `teardown` and `device migrate` print it: resource, name,
    /// what happened (or, in a dry run, would), and the details in parentheses.
    pub fn write_line(&self, f: &mut std::fmt::Formatter<'_>, dry_run: bool) -> std::fmt::Result {
        write!(
            f,
            "{:<19} {:<40} {}",
            self.resource,
            self.name,
            self.action.verb(dry_run)
        )?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details.join("; "))?;
        }
        writeln!(f)
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

/// What to do about a resource with one of our names that is not ours.
pub const NOT_OURS_HINT: &str = "choose another --name, or remove the resource by hand";

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

    #[test]
    fn the_walk_puts_each_resource_after_what_it_depends_on() {
        let walk = walk();
        let kinds: Vec<&str> = walk.iter().map(|r| r.kind()).collect();
        assert_eq!(
            kinds,
            [
                "role",
                "log-group",
                "table",
                "function",
                "authorizer",
                "permission",
                "default-authorizer"
            ]
        );
        for (i, r) in walk.iter().enumerate() {
            for dep in r.after() {
                assert!(
                    walk[..i].iter().any(|d| d.kind() == *dep),
                    "{} needs {dep} first",
                    r.kind()
                );
            }
        }
        let back = walk_back();
        let kinds: Vec<&str> = back.iter().map(|r| r.kind()).collect();
        assert_eq!(
            kinds,
            [
                "default-authorizer",
                "permission",
                "authorizer",
                "function",
                "table",
                "log-group",
                "role"
            ]
        );
        for (i, r) in back.iter().enumerate() {
            for dep in r.removed_after() {
                assert!(
                    back[..i].iter().any(|d| d.kind() == *dep),
                    "{} is removed after {dep}",
                    r.kind()
                );
            }
        }
        let mut kinds: Vec<_> = RESOURCES.iter().map(|r| r.kind()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), RESOURCES.len(), "kinds are unique");
    }

    /// When each step of setup's walk starts and ends, on tokio's paused clock, with the role
    /// failing when `role_fails`: each waits for exactly what its `after` names, and a failure
    /// stops only what depends on it.
    async fn timed_walk(role_fails: bool) -> Vec<(&'static str, u64, Option<u64>)> {
        use std::time::Duration;
        use tokio::time::{Instant, sleep};
        let started = Instant::now();
        let ms = |i: Instant| (i - started).as_millis() as u64;
        let walk = walk();
        let log = Mutex::new(Vec::new());
        let results = concurrently(
            &walk,
            |r| r.after(),
            |r, ready| {
                let log = &log;
                Box::pin(async move {
                    if !ready.await {
                        return Err(not_attempted(r.after()));
                    }
                    let start = Instant::now();
                    // The function's step is the long one (IAM, then Pending).
                    let took = if r.kind() == "function" { 1000 } else { 100 };
                    sleep(Duration::from_millis(took)).await;
                    log.lock()
                        .unwrap()
                        .push((r.kind(), ms(start), ms(Instant::now())));
                    if role_fails && r.kind() == "role" {
                        anyhow::bail!("denied");
                    }
                    Ok(())
                })
            },
        )
        .await;
        let log = log.into_inner().unwrap();
        walk.iter()
            .zip(results)
            .map(|(r, result)| {
                let (_, start, end) = log
                    .iter()
                    .find(|(k, ..)| *k == r.kind())
                    .copied()
                    .unwrap_or((r.kind(), u64::MAX, 0));
                (r.kind(), start, result.is_ok().then_some(end))
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn setup_starts_each_step_once_what_it_needs_is_done() {
        assert_eq!(
            timed_walk(false).await,
            [
                ("role", 0, Some(100)),
                ("log-group", 0, Some(100)),
                // Only with the DynamoDB store; it needs nothing first.
                ("table", 0, Some(100)),
                ("function", 100, Some(1100)),
                // While the function waits: it only names the function's ARN.
                ("authorizer", 0, Some(100)),
                ("permission", 1100, Some(1200)),
                ("default-authorizer", 100, Some(200)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_step_stops_only_what_depends_on_it() {
        assert_eq!(
            timed_walk(true).await,
            [
                ("role", 0, None),
                ("log-group", 0, Some(100)),
                ("table", 0, Some(100)),
                ("function", u64::MAX, None),
                ("authorizer", 0, Some(100)),
                ("permission", u64::MAX, None),
                ("default-authorizer", 100, Some(200)),
            ]
        );
    }

    /// A desired state for the pure planning tests.
    pub fn desired() -> Desired {
        Desired {
            names: Names::new("d").unwrap(),
            account: "111122223333".into(),
            partition: "aws".into(),
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
