//! `teardown`: removes what `setup` created, and only what carries this deployment's owner tag.
//! Its three chains run concurrently, each in the order AWS requires ([`Resource::removed_after`]):
//! IoT (the authorizer deactivated while the default is cleared, then deleted), Lambda (the
//! function and its invoke permission, then the log group it would otherwise write to again) and
//! IAM (the role's policies detached, then the role). Keeps going past a failure and reports each
//! one, in [`resources::walk_back`] order.
//!
//! A devices table that still holds devices is kept unless `--delete-devices`: everything else is
//! removed, the table is reported `kept` with how to export the devices first, and teardown exits
//! 1, because the deployment is not gone (the table is still billed for its storage) and a script
//! must not take it for done. `teardown --delete-devices` then finishes the job.

use std::fmt;
use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

use crate::app::App;
use crate::error::{Failure, exit};
use crate::names::Names;
use crate::resources::{self, Action, Observed, Outcome, Removal, Resource, TeardownOptions};

#[derive(Debug, Args)]
pub struct TeardownArgs {
    /// Don't ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Also delete the devices table (credential_store = "dynamodb") when it still holds
    /// devices; without it the table is kept. Export them first: `iot-custom-auth device export
    /// > devices.jsonl`.
    #[arg(long)]
    pub delete_devices: bool,
}

/// One deletion, decided from what was read: the resource and the result it gives.
struct Deletion {
    resource: &'static dyn Resource,
    outcome: Outcome,
}

/// Pure: what to delete, in AWS's order ([`resources::walk_back`]), and what to leave alone
/// (not ours).
fn plan(
    names: &Names,
    observed: &Observed,
    options: &TeardownOptions,
) -> (Vec<Deletion>, Vec<Outcome>) {
    let mut deletions = Vec::new();
    let mut skipped = Vec::new();
    for resource in resources::walk_back() {
        match resource.removal_with(names, observed, options) {
            Removal::Absent => {}
            Removal::Delete(outcome) => deletions.push(Deletion { resource, outcome }),
            Removal::Skip(outcome) => skipped.push(outcome),
        }
    }
    (deletions, skipped)
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
    let options = TeardownOptions {
        delete_devices: args.delete_devices,
    };
    let (steps, mut outcomes) = plan(&names, &observed, &options);
    // Something of ours kept on purpose: the deployment is not gone.
    let mut remaining = outcomes.iter().any(|o| o.action == Action::Kept);

    if !steps.is_empty() && !args.yes {
        confirm(&clients.region, &steps)?;
    }
    for step in &steps {
        app.progress(format!(
            "removing {} {}...",
            step.outcome.resource, step.outcome.name
        ));
    }
    let order: Vec<&'static dyn Resource> = steps.iter().map(|s| s.resource).collect();
    let (names, observed) = (&names, &observed);
    let results = resources::concurrently(
        &order,
        |r| r.removed_after(),
        |resource, ready| {
            Box::pin(async move {
                // Not final when it fails: `delete` does what is left of it.
                let _ = resource.retire(clients, names, observed).await;
                if !ready.await {
                    return Err(resources::not_attempted(resource.removed_after()));
                }
                resource.delete(app, clients, names, observed).await
            })
        },
    )
    .await;
    for (Deletion { outcome, .. }, result) in steps.into_iter().zip(results) {
        outcomes.push(match result {
            Ok(()) => outcome,
            Err(e) => {
                remaining = true;
                Outcome::new(outcome.resource, outcome.name, Action::Failed)
                    .with(vec![format!("{e:#}")])
            }
        });
    }
    app.print(&Report {
        deployment: names.deployment.clone(),
        region: clients.region.clone(),
        resources: outcomes,
        remaining,
    });
    Ok(if remaining { exit::ERROR } else { exit::OK })
}

/// Asks on a terminal; refuses without one, since a pipeline cannot answer.
fn confirm(region: &str, steps: &[Deletion]) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!(Failure::usage(
            "teardown deletes resources and needs confirmation, but stdin is not a terminal",
            "pass --yes to confirm"
        ));
    }
    eprintln!("This removes from {region}:");
    for step in steps {
        eprintln!("  {:<19} {}", step.outcome.resource, step.outcome.name);
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
            o.write_line(f, false)?;
        }
        let kept = self.resources.iter().any(|o| o.action == Action::Kept);
        if self.resources.iter().all(|o| o.action == Action::Skipped) {
            writeln!(
                f,
                "nothing of deployment `{}` remained in {}; nothing to remove",
                self.deployment, self.region
            )
        } else if kept && self.resources.iter().all(|o| o.action != Action::Failed) {
            writeln!(
                f,
                "removed {removed} resources of deployment `{}` from {}; kept its devices table: {}",
                self.deployment,
                self.region,
                resources::table::EXPORT_HINT
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
    use crate::resources::{authorizer as a, function as f, role};

    fn everything(owned: bool) -> Observed {
        let d = crate::resources::tests::desired();
        Observed {
            role: Some(role::Observed {
                arn: d.role_arn(),
                trust_policy: role::trust_policy(),
                attached: vec![],
                inline: vec![],
                devices_policy: None,
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
                state_reason_code: String::new(),
                state_reason: String::new(),
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
            log_group: Some(crate::resources::log_group::Observed {
                arn: String::new(),
                retention_days: None,
                owned,
            }),
            table: None,
        }
    }

    #[test]
    fn removal_follows_awss_order() {
        let names = Names::new("d").unwrap();
        let (steps, skipped) = plan(&names, &everything(true), &TeardownOptions::default());
        let order: Vec<(&str, Action)> = steps
            .iter()
            .map(|s| (s.outcome.resource, s.outcome.action))
            .collect();
        assert_eq!(
            order,
            [
                ("default-authorizer", Action::Cleared),
                ("permission", Action::Deleted),
                ("authorizer", Action::Deleted),
                ("function", Action::Deleted),
                ("log-group", Action::Deleted),
                ("role", Action::Deleted)
            ]
        );
        assert!(skipped.is_empty());
    }

    #[test]
    fn what_is_not_ours_is_left_alone_and_reported() {
        let names = Names::new("d").unwrap();
        let (steps, skipped) = plan(&names, &everything(false), &TeardownOptions::default());
        assert!(steps.is_empty());
        assert_eq!(skipped.len(), 4);
        assert!(skipped.iter().all(|o| o.action == Action::Skipped));
    }

    #[test]
    fn our_role_stays_while_a_function_that_is_not_ours_runs_as_it() {
        let names = Names::new("d").unwrap();
        let mut observed = everything(true);
        observed.function.as_mut().unwrap().owned = false;
        let (steps, skipped) = plan(&names, &observed, &TeardownOptions::default());
        assert!(steps.iter().all(|s| s.outcome.resource != "role"));
        let role = skipped.iter().find(|o| o.resource == "role").unwrap();
        assert!(role.details[0].contains("execution role"), "{role:?}");
    }

    #[test]
    fn nothing_there_means_nothing_to_do() {
        let names = Names::new("d").unwrap();
        let (steps, skipped) = plan(&names, &Observed::default(), &TeardownOptions::default());
        assert!(steps.is_empty() && skipped.is_empty());
    }
}
