//! Call budgets: how many AWS calls each command may make, and which must run concurrently.
//! Call counts are deterministic where timings are not, so these are ordinary tests; the timings
//! themselves are measured by `bench/run` (BENCHMARKS.md).
//!
//! Where a budget is about concurrency, the stand-in holds every call for `LATENCY_MS`, so calls
//! sent together visibly overlap in its record and calls sent one after another cannot.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cli::Cli;
use common::standin::{Call, StandIn};
use serde_json::json;

/// Long enough that calls a command sends together overlap by far more than the time it takes
/// to send them, on a loaded machine too.
const LATENCY_MS: u64 = 400;

/// A stand-in with real-AWS delays and sensor1 deployed; its call record is empty.
fn deployed() -> (StandIn, Cli) {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    cli.run(&["setup"]).expect(0);
    standin.clear_calls();
    (standin, cli)
}

fn writes(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.mutating)
        .map(|c| c.operation.clone())
        .collect()
}

fn reads(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| !c.mutating)
        .map(|c| c.operation.clone())
        .collect()
}

/// The reads as `service:Operation`: IoT and CloudWatch Logs both have ListTagsForResource.
fn qualified(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| !c.mutating)
        .map(|c| format!("{}:{}", c.service, c.operation))
        .collect()
}

/// How often each operation was called.
fn tally(operations: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for op in operations {
        *counts.entry(op.clone()).or_default() += 1;
    }
    counts
}

/// The longest chain of calls each sent after the previous one was answered: how many round
/// trips the command waited for one after another (calls in flight together count once).
fn round_trips(calls: &[Call]) -> usize {
    let mut sorted: Vec<&Call> = calls.iter().collect();
    sorted.sort_by_key(|c| c.start);
    let mut depth: Vec<(Duration, usize)> = Vec::new();
    for c in sorted {
        let before = depth
            .iter()
            .filter(|(end, _)| *end <= c.start)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or(0);
        depth.push((c.end, before + 1));
    }
    depth.iter().map(|(_, d)| *d).max().unwrap_or(0)
}

fn timeline(calls: &[Call]) -> String {
    let origin = calls.iter().map(|c| c.start).min().unwrap_or_default();
    calls
        .iter()
        .map(|c| {
            format!(
                "{:>6} ms – {:>6} ms  {}:{}\n",
                (c.start - origin).as_millis(),
                (c.end - origin).as_millis(),
                c.service,
                c.operation
            )
        })
        .collect()
}

/// Measured: 12 reads, each of a different thing, and nothing written:
/// GetCallerIdentity (the account every ARN is built in), GetRole + ListAttachedRolePolicies +
/// ListRolePolicies (trust and policies), GetFunction (configuration, code hash, tags),
/// GetPolicy (the invoke permission), DescribeAuthorizer + ListTagsForResource (the authorizer
/// and its owner tag), DescribeDefaultAuthorizer and DescribeEndpoint (for the connection
/// details), DescribeLogGroups + logs:ListTagsForResource (the log group's retention and owner
/// tag). That is the issue's budget of 12; reading anything twice is waste whatever the total.
///
/// They take 2 round trips: everything at once, then the reads that need an answer of the
/// first (a role's policies once it exists, an authorizer's or log group's tags once its ARN is
/// known).
#[test]
fn setup_with_nothing_to_change_reads_each_thing_once_and_writes_nothing() {
    let (standin, cli) = deployed();
    standin.set_behaviour(json!({"latency_ms": LATENCY_MS}));
    let run = cli.run(&["setup"]).expect(0);
    assert!(
        run.stdout.contains("changed 0 of 6"),
        "setup found something to change:\n{}",
        run.stdout
    );
    let calls = standin.calls();
    assert_eq!(writes(&calls), Vec::<String>::new(), "{}", timeline(&calls));
    let reads = reads(&calls);
    assert!(
        reads.len() <= 12,
        "{} reads:\n{}",
        reads.len(),
        timeline(&calls)
    );
    let repeated: Vec<_> = tally(&qualified(&calls))
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(repeated.is_empty(), "read more than once: {repeated:?}");
    assert!(
        round_trips(&calls) <= 2,
        "the reads ran in {} sequential steps, not 2:\n{}",
        round_trips(&calls),
        timeline(&calls)
    );
}

/// With `credential_store = "dynamodb"` the same, plus five reads: DescribeTable (the table),
/// ListTagsOfResource (its owner tag), DescribeContinuousBackups (PITR), a one-item `Scan` with
/// `Select=COUNT` (whether it holds devices) and GetRolePolicy (the role's grant on it, asked with
/// GetRole). Still two round trips: the table's follow-ups run with the role's and the
/// authorizer's.
#[test]
fn with_dynamodb_setup_with_nothing_to_change_adds_five_reads_and_no_round_trip() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    std::fs::write(
        cli.config_path(),
        "[deployment]\ncredential_store = \"dynamodb\"\n",
    )
    .unwrap();
    cli.run(&["setup"]).expect(0);
    standin.clear_calls();
    standin.set_behaviour(json!({"latency_ms": LATENCY_MS}));
    let run = cli.run(&["setup"]).expect(0);
    assert!(
        run.stdout.contains("changed 0 of 7"),
        "setup found something to change:\n{}",
        run.stdout
    );
    let calls = standin.calls();
    assert_eq!(writes(&calls), Vec::<String>::new(), "{}", timeline(&calls));
    let reads = qualified(&calls);
    assert!(
        reads.len() <= 17,
        "{} reads:\n{}",
        reads.len(),
        timeline(&calls)
    );
    for op in [
        "dynamodb:DescribeTable",
        "dynamodb:ListTagsOfResource",
        "dynamodb:DescribeContinuousBackups",
        "dynamodb:Scan",
        "iam:GetRolePolicy",
    ] {
        assert!(
            reads.contains(&op.to_string()),
            "no {op}:\n{}",
            timeline(&calls)
        );
    }
    let repeated: Vec<_> = tally(&reads).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(repeated.is_empty(), "read more than once: {repeated:?}");
    assert!(
        round_trips(&calls) <= 2,
        "the reads ran in {} sequential steps, not 2:\n{}",
        round_trips(&calls),
        timeline(&calls)
    );
}

/// `status` writes nothing and issues its independent reads concurrently: the seven that need
/// nothing from another answer are all in flight at the same time, and the whole check costs two
/// round trips, as `setup`'s read phase does (the same 12 reads, see above).
#[test]
fn status_writes_nothing_and_issues_its_independent_reads_concurrently() {
    let (standin, cli) = deployed();
    standin.set_behaviour(json!({"latency_ms": LATENCY_MS}));
    cli.run(&["status"]).expect(0);
    let calls = standin.calls();
    assert_eq!(writes(&calls), Vec::<String>::new(), "{}", timeline(&calls));
    assert!(
        calls.len() <= 12,
        "{} reads:\n{}",
        calls.len(),
        timeline(&calls)
    );

    let independent = [
        "GetCallerIdentity",
        "GetRole",
        "GetFunction",
        "GetPolicy",
        "DescribeAuthorizer",
        "DescribeDefaultAuthorizer",
        "DescribeEndpoint",
        "DescribeLogGroups",
    ];
    let first: Vec<&Call> = independent
        .iter()
        .map(|op| {
            calls
                .iter()
                .find(|c| c.operation == *op)
                .unwrap_or_else(|| panic!("status did not call {op}:\n{}", timeline(&calls)))
        })
        .collect();
    for (i, a) in first.iter().enumerate() {
        for b in &first[i + 1..] {
            assert!(
                a.overlaps(b),
                "{} and {} ran one after the other:\n{}",
                a.operation,
                b.operation,
                timeline(&calls)
            );
        }
    }
    assert!(
        round_trips(&calls) <= 2,
        "status waited for {} round trips, not 2:\n{}",
        round_trips(&calls),
        timeline(&calls)
    );
}

/// With nothing deployed, `teardown` only looks: the seven first reads all answer "not found", so
/// there is nothing to follow up (no policies, no tags) and nothing to delete or clear — not
/// even the default authorizer, which is not ours to clear when it is unset.
#[test]
fn teardown_of_an_absent_deployment_writes_nothing() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    let run = cli.run(&["teardown", "--yes"]).expect(0);
    assert!(run.stdout.contains("nothing to remove"), "{}", run.stdout);
    let calls = standin.calls();
    assert_eq!(writes(&calls), Vec::<String>::new(), "{}", timeline(&calls));
    assert!(
        calls.len() <= 7,
        "{} reads:\n{}",
        calls.len(),
        timeline(&calls)
    );

    // Also right after a teardown, when AWS has just forgotten everything.
    cli.run(&["setup"]).expect(0);
    cli.run(&["teardown", "--yes"]).expect(0);
    standin.clear_calls();
    cli.run(&["teardown", "--yes"]).expect(0);
    let calls = standin.calls();
    assert_eq!(writes(&calls), Vec::<String>::new(), "{}", timeline(&calls));
    assert!(
        calls.len() <= 7,
        "{} reads:\n{}",
        calls.len(),
        timeline(&calls)
    );
}

/// The starts of the calls of `operation`, in order.
fn starts(calls: &[Call], operation: &str) -> Vec<Duration> {
    let mut starts: Vec<Duration> = calls
        .iter()
        .filter(|c| c.operation == operation)
        .map(|c| c.start)
        .collect();
    starts.sort();
    starts
}

/// The shortest and the average time between the arrivals of two consecutive calls of
/// `operation`. The client paces them from start to start, so single arrivals jitter by the time
/// it takes to send one, while the average holds to the pace.
fn spacing(calls: &[Call], operation: &str) -> (Duration, Duration) {
    let starts = starts(calls, operation);
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    let average = (starts[starts.len() - 1] - starts[0]) / gaps.len() as u32;
    (*gaps.iter().min().unwrap(), average)
}

/// From an empty account `setup` writes each resource once. The only repeated calls are the two
/// waits: CreateFunction until IAM has propagated the new role, GetFunction until the function
/// is Active. With the stand-in's default delays (role 2 s, Pending 1 s): CreateFunction every
/// 150 ms for the bundled package (at most 2 s / 150 ms + 1 attempts, a few more allowed for a
/// slow machine), about 7 a second on average and never 15 (Lambda's control-plane quota per
/// account), and GetFunction every 100 ms at first (about 10 polls for 1 s Pending, about 10 a
/// second where GetFunction's quota is 100).
#[test]
fn setup_from_empty_writes_each_resource_once() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    cli.run(&["setup"]).expect(0);
    let calls = standin.calls();
    let writes = tally(&writes(&calls));
    let expected_once = [
        "CreateRole",
        "AttachRolePolicy",
        "CreateAuthorizer",
        "AddPermission",
        "SetDefaultAuthorizer",
        "CreateLogGroup",
        "PutRetentionPolicy",
    ];
    for op in expected_once {
        assert_eq!(writes.get(op), Some(&1), "{op}:\n{}", timeline(&calls));
    }
    let attempts = writes.get("CreateFunction").copied().unwrap_or(0);
    let last_attempt = *starts(&calls, "CreateFunction").last().unwrap();
    assert!(
        (2..=17).contains(&attempts),
        "{attempts} CreateFunction attempts:\n{}",
        timeline(&calls)
    );
    // 15 a second is Lambda's quota: never reached, and about 7 a second on average.
    let (closest, average) = spacing(&calls, "CreateFunction");
    assert!(
        closest >= Duration::from_secs(1) / 15 && average >= Duration::from_millis(140),
        "CreateFunction attempts {closest:?} apart at the closest, {average:?} on average:\n{}",
        timeline(&calls)
    );
    assert_eq!(
        writes.len(),
        expected_once.len() + 1,
        "unexpected writes: {writes:?}"
    );
    let reads = tally(&reads(&calls));
    // The read phase finds nothing, so it reads 8 things (no policies, no tags to follow up).
    let polls = reads.get("GetFunction").copied().unwrap_or(0) - 1;
    assert!(
        (1..=15).contains(&polls),
        "{polls} GetFunction polls:\n{}",
        timeline(&calls)
    );
    let polls: Vec<Call> = calls
        .iter()
        .filter(|c| c.operation != "GetFunction" || c.start > last_attempt)
        .cloned()
        .collect();
    // 100 a second is GetFunction's quota: never reached, and about 10 a second on average.
    let (closest, average) = spacing(&polls, "GetFunction");
    assert!(
        closest >= Duration::from_secs(1) / 100 && average >= Duration::from_millis(90),
        "GetFunction polls {closest:?} apart at the closest, {average:?} on average:\n{}",
        timeline(&calls)
    );
    let others: usize = reads
        .iter()
        .filter(|(op, _)| op.as_str() != "GetFunction")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(others, 7, "reads: {reads:?}");
}

/// A device added: `setup` uploads the new code once and polls until Lambda has applied it.
/// It does not poll before the upload when its read already found no update in progress (that
/// would only repeat the read), so besides the usual 12 reads there are only the polls: with the
/// stand-in's default 1 s InProgress and a poll every 100 ms at first, about 10 of them.
#[test]
fn setup_after_a_device_change_uploads_once_and_only_polls_after() {
    let (standin, cli) = deployed();
    cli.add_device("sensor2", &[]);
    standin.clear_calls();
    cli.run(&["setup"]).expect(0);
    let calls = standin.calls();
    assert_eq!(
        writes(&calls),
        ["UpdateFunctionCode"],
        "{}",
        timeline(&calls)
    );
    let update = calls.iter().find(|c| c.mutating).unwrap();
    let before = calls
        .iter()
        .filter(|c| !c.mutating && c.end <= update.start)
        .count();
    assert_eq!(before, 12, "reads before the upload:\n{}", timeline(&calls));
    let polls: Vec<&Call> = calls.iter().filter(|c| c.start >= update.end).collect();
    assert!(
        (1..=15).contains(&polls.len()) && polls.iter().all(|c| c.operation == "GetFunction"),
        "after the upload:\n{}",
        timeline(&calls)
    );
}

/// `teardown` of a whole deployment runs its three chains concurrently, each in AWS's order:
/// IoT (clear the default while deactivating the authorizer, then delete it), Lambda (delete the
/// function and its permission, then the log group) and IAM (detach, then delete the role). With
/// the 2 round trips of the read phase that is at most 4 round trips, where one after another
/// took 9; and each chain's first write is in flight together with the others'.
#[test]
fn teardown_runs_the_iot_lambda_and_iam_chains_concurrently() {
    let (standin, cli) = deployed();
    standin.set_behaviour(json!({"latency_ms": LATENCY_MS}));
    cli.run(&["teardown", "--yes"]).expect(0);
    let calls = standin.calls();
    let written = tally(&writes(&calls));
    for op in [
        "ClearDefaultAuthorizer",
        "UpdateAuthorizer",
        "DeleteAuthorizer",
        "RemovePermission",
        "DeleteFunction",
        "DeleteLogGroup",
        "DetachRolePolicy",
        "DeleteRole",
    ] {
        assert_eq!(written.get(op), Some(&1), "{op}:\n{}", timeline(&calls));
    }
    let call = |op: &str| calls.iter().find(|c| c.operation == op).unwrap();
    let firsts = [
        call("ClearDefaultAuthorizer"),
        call("UpdateAuthorizer"),
        call("DeleteFunction"),
        call("DetachRolePolicy"),
    ];
    for (i, a) in firsts.iter().enumerate() {
        for b in &firsts[i + 1..] {
            assert!(
                a.overlaps(b),
                "{} and {} ran one after the other:\n{}",
                a.operation,
                b.operation,
                timeline(&calls)
            );
        }
    }
    // Each chain in AWS's order.
    for (before, after) in [
        ("ClearDefaultAuthorizer", "DeleteAuthorizer"),
        ("UpdateAuthorizer", "DeleteAuthorizer"),
        ("DeleteFunction", "DeleteLogGroup"),
        ("DetachRolePolicy", "DeleteRole"),
    ] {
        assert!(
            call(before).end <= call(after).start,
            "{after} before {before} ended:\n{}",
            timeline(&calls)
        );
    }
    assert!(
        round_trips(&calls) <= 4,
        "teardown waited for {} round trips:\n{}",
        round_trips(&calls),
        timeline(&calls)
    );
    cli.run(&["status"]).expect(3);
    standin.clear_calls();
    cli.run(&["teardown", "--yes"]).expect(0);
    assert_eq!(writes(&standin.calls()), Vec::<String>::new());
}
