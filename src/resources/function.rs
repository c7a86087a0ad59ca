//! The authorizer Lambda function: deterministic code, a supported Node.js runtime, a timeout
//! within IoT's 5 s, our role.

use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context as _, Result, bail};
use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    FunctionCode, FunctionConfiguration, LastUpdateStatus, Runtime, State,
};

use futures::future::BoxFuture;

use crate::app::App;
use crate::aws::Clients;
use crate::error::{AwsResultExt, Failure};
use crate::names::{Names, OWNER_TAG, owned_by};
use crate::resources::check::{SETUP, check, fail, ok};
use crate::resources::{
    Action, Check, Desired, NOT_OURS_HINT, Observed as All, Outcome, Planned as _, Reading,
    Removal, Resource, SetupOptions, Step, log_group, not_ours,
};

/// How long `setup` keeps retrying CreateFunction while IAM propagates a new role. AWS gives no
/// bound; seconds are typical, tools wait 1 to 5 minutes (aws-facts.md §5).
pub const ROLE_PROPAGATION_BUDGET: Duration = Duration::from_secs(90);
/// The time from one CreateFunction attempt to the next while the role propagates, for a small
/// package: the role becomes assumable at some moment between two attempts, so setup waits on
/// average half of it longer than IAM. Lambda allows 15 control-plane requests per second per
/// account and Region, all APIs but invocation, GetFunction and GetPolicy together ("Lambda
/// quotas", API requests: https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html);
/// about 7 a second leaves more than half of that to the account's other callers. The attempts
/// are setup's own, refused with a non-retryable error, so they draw nothing from the SDK's
/// retry quota (only throttling and transient errors do).
const ROLE_RETRY_MIN_DELAY: Duration = Duration::from_millis(150);
/// Added per MiB of package: every attempt uploads the whole package again, so a large `--code`
/// package (Lambda takes up to 50 MB) is tried less often: at 12.5 MB/s or faster, uploading
/// takes at most the time between attempts (half of it at 25 MB/s).
const ROLE_RETRY_DELAY_PER_MIB: Duration = Duration::from_millis(80);
/// The longest time between attempts, reached by the largest packages (a 50 MB one: 11 attempts
/// for a role that takes 40 s to propagate).
const ROLE_RETRY_MAX_DELAY: Duration = Duration::from_secs(4);
/// Bound on waiting for `Active` / `LastUpdateStatus: Successful`.
const READY_BUDGET: Duration = Duration::from_secs(300);
/// How often GetFunction is polled at first (from poll to poll) while Lambda creates or updates
/// the function: a small function takes a few seconds, and every interval adds half of itself to
/// the wait on average. GetFunction has its own quota of 100 requests per second (same page), so 10 a
/// second leaves most of it.
const FAST_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the fast polls last; after that the 1 s of the FunctionActiveV2/FunctionUpdatedV2
/// waiter models ([`POLL_INTERVAL`]). The SDK's generated waiters back off exponentially in whole
/// seconds (1, 1–2, 1–4, 1–8 s...), which overshoots a state change of a few seconds by up to
/// the last delay, so setup polls itself.
const FAST_POLL_FOR: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The pause between two CreateFunction attempts for a package of `bytes`: see
/// [`ROLE_RETRY_MIN_DELAY`] and [`ROLE_RETRY_DELAY_PER_MIB`].
pub fn role_retry_delay(bytes: usize) -> Duration {
    let per_mib = ROLE_RETRY_DELAY_PER_MIB.as_secs_f64() * bytes as f64 / (1024.0 * 1024.0);
    (ROLE_RETRY_MIN_DELAY + Duration::from_secs_f64(per_mib)).min(ROLE_RETRY_MAX_DELAY)
}

/// The pause before the next GetFunction poll, `waited` after the first.
fn poll_delay(waited: Duration) -> Duration {
    if waited < FAST_POLL_FOR {
        FAST_POLL_INTERVAL
    } else {
        POLL_INTERVAL
    }
}

/// Runtimes Lambda has deprecated or blocked (aws-facts.md §7).
pub const DEPRECATED_RUNTIMES: &[&str] = &[
    "nodejs20.x",
    "nodejs18.x",
    "nodejs16.x",
    "nodejs14.x",
    "nodejs12.x",
];

#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub arn: String,
    pub runtime: String,
    pub handler: String,
    pub timeout: i32,
    pub memory_mb: i32,
    pub role: String,
    pub code_sha256: String,
    pub state: String,
    /// Why it is in that state (`Idle`, `Creating`, an error code...), if Lambda says.
    pub state_reason_code: String,
    pub state_reason: String,
    pub last_update_status: String,
    pub owned: bool,
    pub logging: log_group::Logging,
}

impl Observed {
    /// "Failed (InvalidZipFileException: ...)" or "Inactive (Idle)".
    pub fn state_shown(&self) -> String {
        match (self.state_reason_code.as_str(), self.state_reason.as_str()) {
            ("", "") => self.state.clone(),
            (code, "") => format!("{} ({code})", self.state),
            ("", reason) => format!("{} ({reason})", self.state),
            (code, reason) => format!("{} ({code}: {reason})", self.state),
        }
    }
}

pub async fn read(lambda: &Client, names: &Names) -> Result<Option<Observed>> {
    let out = match lambda
        .get_function()
        .function_name(&names.function)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).aws("lambda:GetFunction"),
    };
    let c = out
        .configuration()
        .context("GetFunction returned no configuration")?;
    // GetFunction returns Tags only to a caller allowed lambda:ListTags (aws-facts.md §13), so
    // absent Tags mean "could not see", never "not ours": ask ListTags, which either answers or
    // says the permission is missing.
    let owned = match out.tags() {
        Some(tags) => owned_by(
            tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &names.deployment,
        ),
        None => {
            let arn = c.function_arn().unwrap_or_default();
            let listed = lambda
                .list_tags()
                .resource(arn)
                .send()
                .await
                .aws("lambda:ListTags")
                .with_context(|| {
                    format!(
                        "reading the tags of function {} to tell whether it is this deployment's",
                        names.function
                    )
                })?;
            listed.tags().is_some_and(|t| {
                owned_by(
                    t.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    &names.deployment,
                )
            })
        }
    };
    Ok(Some(Observed {
        arn: c.function_arn().unwrap_or_default().to_string(),
        runtime: c
            .runtime()
            .map(|r| r.as_str().to_string())
            .unwrap_or_default(),
        handler: c.handler().unwrap_or_default().to_string(),
        timeout: c.timeout().unwrap_or_default(),
        memory_mb: c.memory_size().unwrap_or_default(),
        role: c.role().unwrap_or_default().to_string(),
        code_sha256: c.code_sha256().unwrap_or_default().to_string(),
        state: c
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        state_reason_code: c
            .state_reason_code()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        state_reason: c.state_reason().unwrap_or_default().to_string(),
        last_update_status: c
            .last_update_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        owned,
        logging: log_group::Logging::from_config(c.logging_config(), names),
    }))
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub create: bool,
    /// Its creation Failed: Lambda's only way out is to delete and create it again (aws-facts.md
    /// §13). Holds the state as shown, to say why.
    pub recreate: Option<String>,
    /// Inactive: Lambda reactivates a function when it is invoked (aws-facts.md §13), so setup
    /// invokes it once and waits for Active. Holds the state as shown.
    pub reactivate: Option<String>,
    /// Pending (being created or restored): anything that operates on it fails until it is
    /// Active, so setup waits for that first even when nothing else changes.
    pub pending: bool,
    pub update_code: bool,
    /// Configuration fields that differ, by name.
    pub update_config: Vec<&'static str>,
    /// The function was still being created or updated when it was read, so an update must
    /// first wait for that to finish. Not a change in itself.
    pub busy: bool,
}

impl crate::resources::Planned for Plan {
    fn creates(&self) -> bool {
        self.create
    }

    fn changes(&self) -> Vec<String> {
        self.describe()
    }
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        !self.create
            && self.recreate.is_none()
            && self.reactivate.is_none()
            && !self.update_code
            && self.update_config.is_empty()
    }

    pub fn describe(&self) -> Vec<String> {
        let mut d = Vec::new();
        if let Some(state) = &self.recreate {
            d.push(format!(
                "deleted and recreated: its creation {state}, which Lambda cannot repair"
            ));
        }
        if let Some(state) = &self.reactivate {
            d.push(format!("reactivated: it was {state}"));
        }
        if self.update_code {
            d.push("code".to_string());
        }
        d.extend(self.update_config.iter().map(|f| f.to_string()));
        d
    }
}

/// Pure: which parts of the function differ from what setup would deploy.
pub fn plan(desired: &Desired, observed: Option<&Observed>) -> Plan {
    let Some(o) = observed else {
        return Plan {
            create: true,
            ..Plan::default()
        };
    };
    if o.state == "Failed" {
        return Plan {
            recreate: Some(o.state_shown()),
            ..Plan::default()
        };
    }
    let mut config = Vec::new();
    if o.runtime != desired.runtime {
        config.push("runtime");
    }
    if o.handler != desired.package.handler {
        config.push("handler");
    }
    if o.timeout != desired.timeout_seconds {
        config.push("timeout");
    }
    if o.memory_mb != desired.memory_mb {
        config.push("memory");
    }
    if o.role != desired.role_arn() {
        config.push("role");
    }
    if !o.logging.is_desired(&desired.names) {
        config.push("logging");
    }
    Plan {
        create: false,
        recreate: None,
        reactivate: (o.state == "Inactive").then(|| o.state_shown()),
        pending: o.state == "Pending",
        update_code: o.code_sha256 != desired.package.sha256,
        update_config: config,
        busy: o.state != "Active" || o.last_update_status != "Successful",
    }
}

pub async fn apply(app: &App, lambda: &Client, desired: &Desired, plan: &Plan) -> Result<()> {
    let name = &desired.names.function;
    if let Some(state) = &plan.recreate {
        app.progress(format!(
            "  function {name} is {state}: Lambda cannot repair a failed creation, so it is deleted and created again"
        ));
        delete(lambda, name).await?;
    }
    if plan.create || plan.recreate.is_some() {
        create_with_role_retry(app, lambda, desired).await?;
        wait_active(app, lambda, name).await?;
        return Ok(());
    }
    if plan.pending {
        // Pending (a create interrupted, or a restore): AddPermission and updates would fail.
        wait_active(app, lambda, name).await?;
    }
    if plan.busy && !plan.pending && !plan.is_empty() {
        // A previous run may have left an update in progress; a second one would conflict. When
        // the read found none, polling again would only repeat that read.
        wait_updated(app, lambda, name).await?;
    }
    if !plan.update_config.is_empty() {
        lambda
            .update_function_configuration()
            .function_name(name)
            .runtime(Runtime::from(desired.runtime.as_str()))
            .handler(&desired.package.handler)
            .timeout(desired.timeout_seconds)
            .memory_size(desired.memory_mb)
            .role(desired.role_arn())
            .logging_config(log_group::logging_config(&desired.names))
            .send()
            .await
            .aws("lambda:UpdateFunctionConfiguration")?;
        wait_updated(app, lambda, name).await?;
    }
    if plan.update_code {
        lambda
            .update_function_code()
            .function_name(name)
            .zip_file(Blob::new(desired.package.zip.clone()))
            .send()
            .await
            .aws("lambda:UpdateFunctionCode")?;
        wait_updated(app, lambda, name).await?;
    }
    Ok(())
}

/// CreateFunction, retried only on the one error that is transient: a role IAM has not yet
/// propagated to Lambda. Its code is shared with real configuration errors, so the message is
/// what tells them apart (as Terraform does).
async fn create_with_role_retry(app: &App, lambda: &Client, desired: &Desired) -> Result<()> {
    let started = Instant::now();
    let delay = role_retry_delay(desired.package.zip.len());
    // Shown once, from the first refusal until the function is created.
    let mut wait = None;
    loop {
        // Paced from attempt to attempt, so an upload's duration is not added to the pause.
        let attempted = Instant::now();
        let result = lambda
            .create_function()
            .function_name(&desired.names.function)
            .description(format!(
                "IoT custom authorizer `{}` (iot-custom-auth)",
                desired.names.deployment
            ))
            .runtime(Runtime::from(desired.runtime.as_str()))
            .role(desired.role_arn())
            .handler(&desired.package.handler)
            .timeout(desired.timeout_seconds)
            .memory_size(desired.memory_mb)
            .code(
                FunctionCode::builder()
                    .zip_file(Blob::new(desired.package.zip.clone()))
                    .build(),
            )
            .tags(OWNER_TAG, &desired.names.deployment)
            .logging_config(log_group::logging_config(&desired.names))
            .send()
            .await;
        match result {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_invalid_parameter_value_exception()
                        && aws_sdk_lambda::error::ProvideErrorMetadata::message(s)
                            .is_some_and(|m| m.contains("cannot be assumed"))
                }) =>
            {
                let waited = started.elapsed();
                let next = attempted + delay;
                if next - started > ROLE_PROPAGATION_BUDGET {
                    bail!(Failure::new(
                        format!(
                            "Lambda still cannot assume role {} after {}s",
                            desired.names.role,
                            waited.as_secs()
                        ),
                        "IAM is slow to propagate new roles; run `setup` again in a minute (it resumes where it stopped)"
                    ));
                }
                wait.get_or_insert_with(|| {
                    app.wait(format!(
                        "  waiting for IAM to propagate role {} to Lambda (trying every {} ms, up to {}s)",
                        desired.names.role,
                        delay.as_millis(),
                        ROLE_PROPAGATION_BUDGET.as_secs()
                    ))
                });
                tokio::time::sleep_until(next).await;
            }
            Err(e) => {
                return Err(e)
                    .aws("lambda:CreateFunction")
                    .with_context(|| format!("creating function {}", desired.names.function));
            }
        }
    }
}

async fn wait_active(app: &App, lambda: &Client, name: &str) -> Result<()> {
    let _wait = app.wait(format!(
        "  waiting for function {name} to become Active (up to {}s)",
        READY_BUDGET.as_secs()
    ));
    wait_for(lambda, name, "become Active", |c| match c.state() {
        Some(State::Active) => Some(true),
        Some(State::Failed) => Some(false),
        _ => None,
    })
    .await
}

async fn wait_updated(app: &App, lambda: &Client, name: &str) -> Result<()> {
    let _wait = app.wait(format!(
        "  waiting for function {name} to finish updating (up to {}s)",
        READY_BUDGET.as_secs()
    ));
    wait_for(lambda, name, "finish its update", |c| {
        match c.last_update_status() {
            Some(LastUpdateStatus::Successful) => Some(true),
            Some(LastUpdateStatus::Failed) => Some(false),
            _ => None,
        }
    })
    .await
}

/// Polls GetFunction ([`poll_delay`]) until `done` says it succeeded (`Some(true)`) or
/// failed (`Some(false)`), for up to [`READY_BUDGET`]. A failure or timeout says why, from the
/// last configuration read (StateReason), not just "failed".
async fn wait_for(
    lambda: &Client,
    name: &str,
    what: &str,
    done: fn(&FunctionConfiguration) -> Option<bool>,
) -> Result<()> {
    let started = Instant::now();
    loop {
        // Paced from poll to poll: the answer's latency is not added to the interval.
        let polled = Instant::now();
        let out = lambda
            .get_function()
            .function_name(name)
            .send()
            .await
            .aws("lambda:GetFunction")?;
        let c = out.configuration();
        let outcome = c.and_then(done);
        if outcome == Some(true) {
            return Ok(());
        }
        let next = polled + poll_delay(polled - started);
        if outcome.is_none() && next - started <= READY_BUDGET {
            tokio::time::sleep_until(next).await;
            continue;
        }
        let state = c
            .and_then(|c| c.state())
            .map(State::as_str)
            .unwrap_or("unknown");
        let update = c
            .and_then(|c| c.last_update_status())
            .map(LastUpdateStatus::as_str)
            .unwrap_or("unknown");
        let reason = c
            .and_then(|c| c.last_update_status_reason().or(c.state_reason()))
            .unwrap_or("no reason given");
        let waited = if outcome.is_none() {
            format!(" within {}s", READY_BUDGET.as_secs())
        } else {
            String::new()
        };
        bail!(Failure::new(
            format!(
                "function {name} did not {what}{waited}: State {state}, LastUpdateStatus {update}: {reason}"
            ),
            "check the function in the Lambda console or its CloudWatch logs, then run `setup` again"
        ))
    }
}

/// Brings an Inactive function back: Lambda reactivates a function when it is invoked (the
/// Lambda API's StateReasonCode `Idle`: "you can reactivate the function by invoking it"; its
/// docs say nothing of updates doing so, so setup does not rely on them). The invocation goes
/// through IoT's TestInvokeAuthorizer, the way IoT itself calls the function, so setup needs no
/// `lambda:InvokeFunction`; with a random password it is refused even when it runs. It is
/// expected to fail while Lambda restores the function; then setup waits for Active.
async fn reactivate(step: &Step<'_>, state: &str) -> Result<()> {
    let names = &step.desired.names;
    let through = step.observed.authorizer.as_ref().filter(|a| a.owned);
    if through.is_none() || crate::resources::permission::current(step.observed).is_none() {
        bail!(Failure::new(
            format!(
                "function {} is {state}, and without our authorizer `{}` and its invoke permission there is nothing to invoke it through",
                names.function, names.authorizer
            ),
            "run `iot-custom-auth teardown` and `setup` again to recreate the deployment"
        ));
    }
    step.app.progress(format!(
        "  function {} is {state}: invoking it once through TestInvokeAuthorizer to reactivate it",
        names.function
    ));
    let probe = "iot-custom-auth-reactivate";
    let invoked = step
        .clients
        .iot
        .test_invoke_authorizer()
        .authorizer_name(&names.authorizer)
        .mqtt_context(
            aws_sdk_iot::types::MqttContext::builder()
                .username(probe)
                .password(aws_sdk_iot::primitives::Blob::new(
                    crate::verifier::generate().into_bytes(),
                ))
                .client_id(probe)
                .build(),
        )
        .send()
        .await;
    if let Err(e) = invoked {
        let code = e
            .as_service_error()
            .and_then(aws_sdk_iot::error::ProvideErrorMetadata::code);
        // A failed invocation is what wakes it; a missing permission or no answer at all is not.
        if code.is_none() || crate::error::is_access_denied(code) {
            return Err(e).aws("iot:TestInvokeAuthorizer");
        }
    }
    wait_active(step.app, &step.clients.lambda, &names.function).await
}

pub async fn delete(lambda: &Client, name: &str) -> Result<()> {
    match lambda.delete_function().function_name(name).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(e).aws("lambda:DeleteFunction"),
    }
}

/// `function.state`: what each of Lambda's states means for devices, and the fix.
fn state_check(f: &Observed) -> Check {
    let shown = f.state_shown();
    match f.state.as_str() {
        "Active" => ok("function.state", "Active"),
        "Inactive" => fail(
            "function.state",
            format!(
                "{shown}: Lambda reclaimed it after it sat idle, and the next logins fail while it is reactivated"
            ),
            "run `iot-custom-auth setup`: it invokes the function once and waits until it is Active",
        ),
        "Failed" => fail(
            "function.state",
            format!("{shown}: its creation failed and Lambda cannot repair it; every login fails"),
            "run `iot-custom-auth setup`: it deletes and recreates the function",
        ),
        "Pending" => fail(
            "function.state",
            format!("{shown}: Lambda is still preparing it; logins fail until it is Active"),
            "wait a minute and check again; `iot-custom-auth setup` waits for it",
        ),
        _ => fail(
            "function.state",
            format!("state is {shown}"),
            "check the function's StateReason in the Lambda console",
        ),
    }
}

/// The function as one of the deployment's resources.
pub struct Function;
pub static RESOURCE: Function = Function;

impl Resource for Function {
    fn kind(&self) -> &'static str {
        "function"
    }

    fn label(&self) -> &'static str {
        "Lambda function"
    }

    /// The role (CreateFunction names it; the step retries while IAM propagates it) and the
    /// log group, so that Lambda never creates it without a retention. The step returns once the
    /// function is Active, so what comes after it can use it.
    fn after(&self) -> &'static [&'static str] {
        &["role", "log-group"]
    }

    fn read<'a>(
        &'a self,
        clients: &'a Clients,
        names: &'a Names,
    ) -> BoxFuture<'a, Result<Reading>> {
        Box::pin(async move {
            let found = read(&clients.lambda, names).await?;
            Ok(Box::new(move |o: &mut All| o.function = found) as Reading)
        })
    }

    fn checks(&self, desired: &Desired, observed: &All) -> Vec<Check> {
        let Some(f) = &observed.function else {
            return vec![fail(
                "function.exists",
                format!("Lambda function {} not found", desired.names.function),
                SETUP,
            )];
        };
        let deprecated = DEPRECATED_RUNTIMES.contains(&f.runtime.as_str());
        vec![
            ok("function.exists", f.arn.clone()),
            check(
                "function.owned",
                f.owned,
                "tagged as ours",
                "not tagged as created by this deployment",
                "choose another --name or remove the function by hand",
            ),
            state_check(f),
            // An update still running is not a failure: the previous code keeps serving until
            // it completes, and CI often checks right after a deploy.
            check(
                "function.last_update",
                f.last_update_status != "Failed",
                if f.last_update_status == "InProgress" {
                    "InProgress (an update is running)".to_string()
                } else {
                    f.last_update_status.clone()
                },
                "the last update Failed: Lambda kept the previous code",
                SETUP,
            ),
            check(
                "function.runtime",
                f.runtime == desired.runtime && !deprecated,
                f.runtime.clone(),
                if deprecated {
                    format!("{} is deprecated by Lambda", f.runtime)
                } else {
                    format!("{} (config says {})", f.runtime, desired.runtime)
                },
                SETUP,
            ),
            check(
                "function.timeout",
                f.timeout <= crate::config::MAX_TIMEOUT_SECONDS
                    && f.timeout == desired.timeout_seconds,
                format!("{} s", f.timeout),
                format!(
                    "{} s (IoT stops waiting after 5 s; config says {} s)",
                    f.timeout, desired.timeout_seconds
                ),
                SETUP,
            ),
            check(
                "function.role",
                f.role == desired.role_arn(),
                "our role",
                format!("runs as {}", f.role),
                SETUP,
            ),
            check(
                "function.code",
                f.code_sha256 == desired.package.sha256 && f.handler == desired.package.handler,
                "identical to what setup would deploy",
                "differs from what setup would deploy from the current config (devices added or removed, or code changed by hand)",
                SETUP,
            ),
            // `logs` filters on JSON fields, which Lambda's default Text lines never have.
            check(
                "function.logging",
                f.logging.is_desired(&desired.names),
                format!("JSON lines into {}", f.logging.group),
                format!(
                    "logs {} lines into {} (setup deploys JSON into {}; `logs` cannot filter Text lines)",
                    f.logging.format,
                    f.logging.group,
                    log_group::name(&desired.names)
                ),
                SETUP,
            ),
        ]
    }

    fn refuse(&self, desired: &Desired, observed: &All, _: &SetupOptions) -> Result<()> {
        let n = &desired.names;
        if observed.function.as_ref().is_some_and(|f| !f.owned) {
            bail!(Failure::new(
                not_ours("Lambda function", &n.function, &n.deployment),
                NOT_OURS_HINT
            ));
        }
        Ok(())
    }

    fn plan(&self, desired: &Desired, observed: &All) -> Outcome {
        plan(desired, observed.function.as_ref()).outcome(self.kind(), &desired.names.function)
    }

    fn apply<'a>(&'a self, step: &'a Step<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let plan = plan(step.desired, step.observed.function.as_ref());
            if let Some(state) = &plan.reactivate {
                reactivate(step, state).await?;
            }
            apply(step.app, &step.clients.lambda, step.desired, &plan).await
        })
    }

    fn removal(&self, names: &Names, observed: &All) -> Removal {
        match &observed.function {
            None => Removal::Absent,
            Some(f) if f.owned => {
                Removal::Delete(Outcome::new(self.kind(), &names.function, Action::Deleted))
            }
            Some(_) => {
                Removal::Skip(
                    Outcome::new(self.kind(), &names.function, Action::Skipped).with(vec![
                        not_ours("Lambda function", &names.function, &names.deployment),
                    ]),
                )
            }
        }
    }

    fn delete<'a>(
        &'a self,
        _: &'a App,
        clients: &'a Clients,
        names: &'a Names,
        _: &'a All,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(delete(&clients.lambda, &names.function))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::desired;

    fn matching(d: &Desired) -> Observed {
        Observed {
            arn: d.function_arn(),
            runtime: d.runtime.clone(),
            handler: "index.handler".into(),
            timeout: 5,
            memory_mb: 128,
            role: d.role_arn(),
            code_sha256: "abc=".into(),
            state: "Active".into(),
            state_reason_code: String::new(),
            state_reason: String::new(),
            last_update_status: "Successful".into(),
            owned: true,
            logging: log_group::Logging::from_config(
                Some(&log_group::logging_config(&d.names)),
                &d.names,
            ),
        }
    }

    #[test]
    fn same_function_needs_nothing() {
        let d = desired();
        assert!(plan(&d, Some(&matching(&d))).is_empty());
    }

    #[test]
    fn an_update_waits_first_only_for_a_function_that_was_busy() {
        let d = desired();
        let mut o = matching(&d);
        o.code_sha256 = "other".into();
        assert!(!plan(&d, Some(&o)).busy);
        o.last_update_status = "InProgress".into();
        let p = plan(&d, Some(&o));
        assert!(p.busy && p.update_code);
        o.code_sha256 = "abc=".into();
        assert!(plan(&d, Some(&o)).is_empty(), "busy alone is no change");
        o.last_update_status = "Successful".into();
        o.state = "Pending".into();
        assert!(plan(&d, Some(&o)).busy);
    }

    #[test]
    fn lambdas_states_each_get_their_way_out() {
        let d = desired();
        let mut o = matching(&d);
        o.state = "Failed".into();
        o.state_reason_code = "InvalidZipFileException".into();
        let p = plan(&d, Some(&o));
        assert!(
            p.describe()[0].contains("deleted and recreated")
                && p.describe()[0].contains("InvalidZipFileException"),
            "{p:?}"
        );

        o.state = "Inactive".into();
        o.state_reason_code = "Idle".into();
        let p = plan(&d, Some(&o));
        assert_eq!(p.reactivate.as_deref(), Some("Inactive (Idle)"));
        assert!(!p.is_empty(), "reactivating is a change");

        o.state = "Pending".into();
        o.state_reason_code = "Creating".into();
        let p = plan(&d, Some(&o));
        assert!(
            p.pending && p.is_empty(),
            "waited on, but nothing to change"
        );
    }

    #[test]
    fn each_difference_is_named() {
        let d = desired();
        let mut o = matching(&d);
        o.code_sha256 = "other".into();
        o.timeout = 30;
        o.role = "arn:aws:iam::111122223333:role/other".into();
        let p = plan(&d, Some(&o));
        assert!(p.update_code);
        assert_eq!(p.update_config, vec!["timeout", "role"]);
        assert!(plan(&d, None).create);
    }
}

/// Error paths the stand-in cannot produce, with `aws-smithy-mocks` and paused time.
#[cfg(test)]
mod mocked {
    use super::*;
    use crate::resources::tests::desired;
    use aws_sdk_lambda::operation::create_function::CreateFunctionError;
    use aws_sdk_lambda::operation::get_function::GetFunctionOutput;
    use aws_sdk_lambda::types::FunctionConfiguration;
    use aws_sdk_lambda::types::error::InvalidParameterValueException;
    use aws_smithy_mocks::{mock, mock_client};
    use clap::Parser as _;

    fn app() -> App {
        App::new(crate::cli::Cli::parse_from(["iot-custom-auth", "-q", "setup"]).global)
    }

    fn invalid_parameter(message: &'static str) -> impl Fn() -> CreateFunctionError {
        move || {
            CreateFunctionError::InvalidParameterValueException(
                InvalidParameterValueException::builder()
                    .message(message)
                    .meta(
                        aws_sdk_lambda::error::ErrorMetadata::builder()
                            .code("InvalidParameterValueException")
                            .message(message)
                            .build(),
                    )
                    .build(),
            )
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_role_propagation_is_bounded_and_says_what_to_do() {
        let never = mock!(Client::create_function)
            .sequence()
            .error(invalid_parameter(
                "The role defined for the function cannot be assumed by Lambda.",
            ))
            .repeatedly()
            .build();
        let lambda = mock_client!(aws_sdk_lambda, [&never]);
        let started = Instant::now();
        let err = create_with_role_retry(&app(), &lambda, &desired())
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("still cannot assume role"),
            "{err:#}"
        );
        assert!(started.elapsed() <= ROLE_PROPAGATION_BUDGET);
        assert!(
            never.num_calls() >= 10,
            "retried {} times",
            never.num_calls()
        );
    }

    #[test]
    fn the_role_retry_pause_widens_with_the_package() {
        // The bundled authorizer, about 20 KB: sub-second.
        let small = role_retry_delay(20 * 1024);
        assert!(small > ROLE_RETRY_MIN_DELAY && small < Duration::from_millis(152));
        assert_eq!(
            role_retry_delay(10 * 1024 * 1024),
            Duration::from_millis(950)
        );
        assert_eq!(role_retry_delay(50 * 1024 * 1024), ROLE_RETRY_MAX_DELAY);
        // Under half of Lambda's 15 control-plane requests per second, whatever the package.
        assert!(role_retry_delay(0) >= Duration::from_secs(1) / 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_propagated_role_is_tried_again_within_a_pause() {
        let late = mock!(Client::create_function)
            .sequence()
            .error(invalid_parameter(
                "The role defined for the function cannot be assumed by Lambda.",
            ))
            .times(4)
            .output(|| {
                aws_sdk_lambda::operation::create_function::CreateFunctionOutput::builder().build()
            })
            .build();
        let lambda = mock_client!(aws_sdk_lambda, [&late]);
        let started = Instant::now();
        create_with_role_retry(&app(), &lambda, &desired())
            .await
            .unwrap();
        // Four pauses of 150 ms (an empty package): a working role is tried within one.
        assert_eq!(started.elapsed(), 4 * ROLE_RETRY_MIN_DELAY);
        assert_eq!(late.num_calls(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn other_invalid_parameters_are_not_retried() {
        let blocked = mock!(Client::create_function)
            .sequence()
            .error(invalid_parameter(
                "The runtime parameter of nodejs14.x is no longer supported",
            ))
            .repeatedly()
            .build();
        let lambda = mock_client!(aws_sdk_lambda, [&blocked]);
        let err = create_with_role_retry(&app(), &lambda, &desired())
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("no longer supported"),
            "{err:#}"
        );
        assert_eq!(blocked.num_calls(), 1);
    }

    fn in_state(state: State) -> impl Fn() -> GetFunctionOutput {
        move || {
            GetFunctionOutput::builder()
                .configuration(
                    FunctionConfiguration::builder()
                        .state(state.clone())
                        .build(),
                )
                .build()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_function_is_polled_fast_until_active() {
        let pending = mock!(Client::get_function)
            .sequence()
            .output(in_state(State::Pending))
            .times(3)
            .output(in_state(State::Active))
            .build();
        let lambda = mock_client!(aws_sdk_lambda, [&pending]);
        let started = Instant::now();
        wait_active(&app(), &lambda, "f").await.unwrap();
        // Active is seen at the first poll after it happened: no exponential back-off.
        assert_eq!(started.elapsed(), 3 * FAST_POLL_INTERVAL);
        assert_eq!(pending.num_calls(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_function_that_fails_to_activate_reports_why() {
        let failed = mock!(Client::get_function)
            .sequence()
            .output(|| {
                GetFunctionOutput::builder()
                    .configuration(
                        FunctionConfiguration::builder()
                            .state(State::Failed)
                            .state_reason(
                                "The function's deployment package is not a valid zip file",
                            )
                            .build(),
                    )
                    .build()
            })
            .repeatedly()
            .build();
        let lambda = mock_client!(aws_sdk_lambda, [&failed]);
        let err = wait_active(&app(), &lambda, "f").await.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("State Failed") && text.contains("not a valid zip"),
            "{text}"
        );
    }
}
