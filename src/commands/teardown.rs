//! `teardown`: removes what `setup` created, in the order AWS requires (default authorizer →
//! authorizer, deactivated first → permission → function → its log group → role), and only what
//! carries this
//! deployment's owner tag. Keeps going past a failure and reports each one.

use std::fmt;
use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

use crate::app::App;
use crate::aws::Clients;
use crate::error::{Failure, exit};
use crate::names::Names;
use crate::resources::{
    self, Action, Observed, Outcome, authorizer, default_authorizer, function, log_group, not_ours,
    permission, role,
};

#[derive(Debug, Args)]
pub struct TeardownArgs {
    /// Don't ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// One removal, decided from what was read.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    ClearDefault,
    DeleteAuthorizer { active: bool },
    RemovePermission,
    DeleteFunction,
    DeleteLogGroup,
    DeleteRole(role::Observed),
}

impl Step {
    fn resource(&self) -> &'static str {
        match self {
            Step::ClearDefault => "default-authorizer",
            Step::DeleteAuthorizer { .. } => "authorizer",
            Step::RemovePermission => "permission",
            Step::DeleteFunction => "function",
            Step::DeleteLogGroup => "log-group",
            Step::DeleteRole(_) => "role",
        }
    }

    fn name(&self, names: &Names) -> String {
        match self {
            Step::ClearDefault | Step::DeleteAuthorizer { .. } => names.authorizer.clone(),
            Step::RemovePermission => names.statement_id.clone(),
            Step::DeleteFunction => names.function.clone(),
            Step::DeleteLogGroup => log_group::name(names),
            Step::DeleteRole(_) => names.role.clone(),
        }
    }
}

/// Pure: what to remove and what to leave alone (not ours), in AWS's order.
fn plan(names: &Names, observed: &Observed) -> (Vec<Step>, Vec<Outcome>) {
    let mut steps = Vec::new();
    let mut skipped = Vec::new();
    let authorizer_ours = observed.authorizer.as_ref().is_some_and(|a| a.owned);
    if observed.default_authorizer.as_deref() == Some(names.authorizer.as_str()) && authorizer_ours
    {
        steps.push(Step::ClearDefault);
    }
    match &observed.authorizer {
        Some(a) if a.owned => steps.push(Step::DeleteAuthorizer { active: a.active }),
        Some(_) => skipped.push(skip(
            "authorizer",
            &names.authorizer,
            not_ours("IoT authorizer", &names.authorizer, &names.deployment),
        )),
        None => {}
    }
    let function_ours = observed.function.as_ref().is_some_and(|f| f.owned);
    if observed.permission.is_some() && function_ours {
        steps.push(Step::RemovePermission);
    }
    match &observed.function {
        Some(f) if f.owned => steps.push(Step::DeleteFunction),
        Some(_) => skipped.push(skip(
            "function",
            &names.function,
            not_ours("Lambda function", &names.function, &names.deployment),
        )),
        None => {}
    }
    // After the function, so that no invocation recreates it (Lambda would, without retention).
    match &observed.log_group {
        Some(g) if g.owned => steps.push(Step::DeleteLogGroup),
        Some(_) => skipped.push(skip(
            "log-group",
            &log_group::name(names),
            not_ours("log group", &log_group::name(names), &names.deployment),
        )),
        None => {}
    }
    match &observed.role {
        Some(r) if r.owned => steps.push(Step::DeleteRole(r.clone())),
        Some(_) => skipped.push(skip(
            "role",
            &names.role,
            not_ours("IAM role", &names.role, &names.deployment),
        )),
        None => {}
    }
    (steps, skipped)
}

fn skip(resource: &'static str, name: &str, why: String) -> Outcome {
    Outcome::new(resource, name, Action::Skipped).with(vec![why])
}

#[derive(Serialize)]
pub struct Report {
    pub deployment: String,
    pub region: String,
    pub resources: Vec<Outcome>,
    /// true when something of ours could not be removed.
    pub remaining: bool,
}

pub async fn run(app: &App, args: TeardownArgs) -> Result<u8> {
    let config = app.config()?;
    let names = app.names(&config)?;
    let clients = app.clients().await?;
    app.progress(format!(
        "reading deployment `{}` in {}",
        names.deployment, clients.region
    ));
    let (_identity, observed) = resources::read_all(clients, &names).await?;
    let (steps, mut outcomes) = plan(&names, &observed);

    if !steps.is_empty() && !args.yes {
        confirm(&clients.region, &names, &steps)?;
    }
    let mut remaining = false;
    for step in &steps {
        app.progress(format!(
            "removing {} {}...",
            step.resource(),
            step.name(&names)
        ));
        let action = if *step == Step::ClearDefault {
            Action::Cleared
        } else {
            Action::Deleted
        };
        let outcome = match execute(clients, &names, step).await {
            Ok(()) => Outcome::new(step.resource(), step.name(&names), action),
            Err(e) => {
                remaining = true;
                Outcome::new(step.resource(), step.name(&names), Action::Failed)
                    .with(vec![format!("{e:#}")])
            }
        };
        outcomes.push(outcome);
    }
    app.print(&Report {
        deployment: names.deployment.clone(),
        region: clients.region.clone(),
        resources: outcomes,
        remaining,
    });
    Ok(if remaining { exit::ERROR } else { exit::OK })
}

async fn execute(clients: &Clients, names: &Names, step: &Step) -> Result<()> {
    match step {
        Step::ClearDefault => default_authorizer::clear(&clients.iot).await,
        Step::DeleteAuthorizer { active } => {
            authorizer::delete(&clients.iot, &names.authorizer, *active).await
        }
        Step::RemovePermission => permission::remove(&clients.lambda, names).await,
        Step::DeleteFunction => function::delete(&clients.lambda, &names.function).await,
        Step::DeleteLogGroup => log_group::delete(&clients.logs, names).await,
        Step::DeleteRole(observed) => role::delete(&clients.iam, names, observed).await,
    }
}

/// Asks on a terminal; refuses without one, since a pipeline cannot answer.
fn confirm(region: &str, names: &Names, steps: &[Step]) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!(Failure::usage(
            "teardown deletes resources and needs confirmation, but stdin is not a terminal",
            "pass --yes to confirm"
        ));
    }
    eprintln!("This removes from {region}:");
    for step in steps {
        eprintln!("  {:<19} {}", step.resource(), step.name(names));
    }
    eprint!("Proceed? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        bail!(Failure::usage(
            "teardown cancelled; nothing was removed",
            "answer `y` to proceed, or pass --yes"
        ));
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let removed = self
            .resources
            .iter()
            .filter(|o| matches!(o.action, Action::Deleted | Action::Cleared))
            .count();
        for o in &self.resources {
            write!(
                f,
                "{:<19} {:<40} {}",
                o.resource,
                o.name,
                o.action.verb(false)
            )?;
            if !o.details.is_empty() {
                write!(f, " ({})", o.details.join("; "))?;
            }
            writeln!(f)?;
        }
        if self.resources.iter().all(|o| o.action == Action::Skipped) {
            writeln!(
                f,
                "nothing of deployment `{}` remained in {}; nothing to remove",
                self.deployment, self.region
            )
        } else if self.remaining {
            writeln!(
                f,
                "some resources could not be removed; fix the causes above and run `teardown` again"
            )
        } else {
            writeln!(
                f,
                "removed {removed} resources of deployment `{}` from {}",
                self.deployment, self.region
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{authorizer as a, function as f};

    fn everything(owned: bool) -> Observed {
        let d = crate::resources::tests::desired();
        Observed {
            role: Some(role::Observed {
                arn: d.role_arn(),
                trust_policy: role::trust_policy(),
                attached: vec![],
                inline: vec![],
                owned,
            }),
            function: Some(f::Observed {
                arn: d.function_arn(),
                runtime: "nodejs22.x".into(),
                handler: "index.handler".into(),
                timeout: 5,
                memory_mb: 128,
                role: d.role_arn(),
                code_sha256: String::new(),
                state: "Active".into(),
                last_update_status: "Successful".into(),
                owned,
                logging: crate::resources::log_group::Logging::from_config(None, &d.names),
            }),
            authorizer: Some(a::Observed {
                arn: d.authorizer_arn(),
                function_arn: d.function_arn(),
                active: true,
                signing_disabled: true,
                owned,
            }),
            permission: Some(crate::resources::permission::Observed::default()),
            default_authorizer: Some("d".into()),
            log_group: Some(log_group::Observed {
                arn: String::new(),
                retention_days: None,
                owned,
            }),
        }
    }

    #[test]
    fn removal_follows_awss_order() {
        let names = Names::new("d").unwrap();
        let (steps, skipped) = plan(&names, &everything(true));
        let order: Vec<&str> = steps.iter().map(Step::resource).collect();
        assert_eq!(
            order,
            [
                "default-authorizer",
                "authorizer",
                "permission",
                "function",
                "log-group",
                "role"
            ]
        );
        assert!(skipped.is_empty());
        assert_eq!(steps[1], Step::DeleteAuthorizer { active: true });
    }

    #[test]
    fn what_is_not_ours_is_left_alone_and_reported() {
        let names = Names::new("d").unwrap();
        let (steps, skipped) = plan(&names, &everything(false));
        assert!(steps.is_empty());
        assert_eq!(skipped.len(), 4);
        assert!(skipped.iter().all(|o| o.action == Action::Skipped));
    }

    #[test]
    fn nothing_there_means_nothing_to_do() {
        let names = Names::new("d").unwrap();
        let (steps, skipped) = plan(&names, &Observed::default());
        assert!(steps.is_empty() && skipped.is_empty());
    }
}
