//! `logs`: why was a device let in or refused? The authorizer logs one structured line per login
//! (user, client ID, result, reason); this reads them back from CloudWatch Logs, filtered on the
//! server with a JSON filter pattern, joined with Lambda's REPORT line of the same request for the
//! duration, newest last.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Result, bail};
use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata as _;
use aws_smithy_types::date_time::{DateTime, Format};
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::app::App;
use crate::error::{AwsResultExt, Failure, exit};
use crate::names::Names;
use crate::progress::{self, Colour};
use crate::resources::{function, log_group};

/// How often `--follow` asks for new lines. FilterLogEvents allows 5 requests per second per
/// account and region, shared with every other reader; one every 2 s leaves room for them.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only the logins of this username.
    #[arg(long, value_name = "USERNAME")]
    pub user: Option<String>,
    /// Only the logins with this MQTT client ID.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Only refused logins.
    #[arg(long)]
    pub denied: bool,
    /// How far back: a duration (`30s`, `15m`, `2h`, `7d`) or a UTC time (`2026-11-30T10:00Z`).
    #[arg(long, value_name = "WHEN", default_value = "1h", value_parser = parse_since)]
    pub since: Since,
    /// Show at most this many decisions (the newest).
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// Keep printing new decisions until interrupted (Ctrl-C).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// Where `--since` starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Since {
    Ago(Duration),
    /// Milliseconds since the epoch.
    At(i64),
}

impl Since {
    fn start_ms(&self, now_ms: i64) -> i64 {
        match self {
            Since::Ago(d) => now_ms - d.as_millis() as i64,
            Since::At(ms) => *ms,
        }
    }
}

fn parse_since(text: &str) -> Result<Since, String> {
    let hint = "use a duration such as 30s, 15m, 2h or 7d, or a UTC time such as 2026-11-30T10:00Z";
    if let Some(unit) = text.chars().last().filter(char::is_ascii_alphabetic)
        && let Ok(n) = text[..text.len() - 1].parse::<u64>()
    {
        let seconds = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("unknown unit `{unit}` in `{text}`: {hint}")),
        };
        if n == 0 {
            return Err(format!("`{text}` is no time at all: {hint}"));
        }
        return Ok(Since::Ago(Duration::from_secs(n.saturating_mul(seconds))));
    }
    // RFC 3339 wants seconds; `10:00Z` is the common way to write a minute.
    let full = match text.strip_suffix('Z') {
        Some(head) if head.len() == 16 => format!("{head}:00Z"),
        _ => text.to_string(),
    };
    DateTime::from_str(&full, Format::DateTime)
        .map(|t| Since::At(t.to_millis().unwrap_or(0)))
        .map_err(|_| format!("`{text}` is neither a duration nor a UTC time: {hint}"))
}

/// One login decision as the authorizer logged it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// ISO 8601 UTC, as CloudWatch timestamped the line.
    pub time: String,
    #[serde(skip)]
    pub timestamp_ms: i64,
    pub user: Option<String>,
    pub client_id: Option<String>,
    /// `allow` or `deny`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The invocation's duration from Lambda's REPORT line, when it was found.
    pub duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
}

/// What one log event is, for this command.
#[derive(Clone, Debug, PartialEq)]
enum Line {
    Decision(Decision),
    Report {
        request_id: String,
        duration_ms: f64,
    },
    Other,
}

/// Pure: reads one CloudWatch event. Lambda's JSON format wraps what the function logged in
/// `{"timestamp","level","requestId","message"}`, with `message` the logged object itself or, when
/// the function logged text, that text (here: the JSON text of the object); the Text format is
/// `<time>\t<request id>\t<LEVEL>\t<text>`. Both are read, so lines written before `setup`
/// switched the function to JSON still show.
fn parse(timestamp_ms: i64, message: &str) -> Line {
    let decision = |record: &Value, request_id: Option<&str>| -> Option<Decision> {
        let record = match record {
            Value::String(text) => serde_json::from_str::<Value>(text).ok()?,
            other => other.clone(),
        };
        if record.get("msg")?.as_str()? != "login" {
            return None;
        }
        let text = |key: &str| record.get(key).and_then(Value::as_str).map(str::to_string);
        Some(Decision {
            time: iso(timestamp_ms),
            timestamp_ms,
            user: text("user"),
            client_id: text("clientId"),
            result: text("result")?,
            reason: text("reason"),
            duration_ms: None,
            request_id: request_id.map(str::to_string),
            connection_id: text("connectionId"),
        })
    };
    if let Ok(Value::Object(event)) = serde_json::from_str::<Value>(message) {
        if event.get("type").and_then(Value::as_str) == Some("platform.report") {
            let record = &event["record"];
            if let (Some(id), Some(ms)) = (
                record["requestId"].as_str(),
                record["metrics"]["durationMs"].as_f64(),
            ) {
                return Line::Report {
                    request_id: id.to_string(),
                    duration_ms: ms,
                };
            }
            return Line::Other;
        }
        let request_id = event.get("requestId").and_then(Value::as_str);
        let logged = event.get("message").unwrap_or(&Value::Null);
        return decision(logged, request_id)
            .or_else(|| decision(&Value::Object(event.clone()), None))
            .map_or(Line::Other, Line::Decision);
    }
    if let Some(rest) = message.strip_prefix("REPORT RequestId: ") {
        let mut fields = rest.split('\t');
        let id = fields.next().unwrap_or_default().trim();
        let ms = fields
            .find_map(|f| f.trim().strip_prefix("Duration: "))
            .and_then(|d| d.trim_end_matches(" ms").parse().ok());
        return match ms {
            Some(duration_ms) => Line::Report {
                request_id: id.to_string(),
                duration_ms,
            },
            None => Line::Other,
        };
    }
    let parts: Vec<&str> = message.splitn(4, '\t').collect();
    if let [_, request_id, _, text] = parts[..] {
        return decision(
            &Value::String(text.trim_end().to_string()),
            Some(request_id),
        )
        .map_or(Line::Other, Line::Decision);
    }
    Line::Other
}

fn iso(ms: i64) -> String {
    DateTime::from_millis(ms)
        .fmt(Format::DateTime)
        .unwrap_or_else(|_| ms.to_string())
}

/// Pure: the server-side filter. Login lines matching the filters, and every REPORT line (they
/// carry the duration; those of other requests are dropped after the join). Values are limited
/// to characters that mean nothing in a filter pattern, so they match exactly.
pub fn filter_pattern(user: Option<&str>, client_id: Option<&str>, denied: bool) -> String {
    let mut login = String::from("$.message.msg = \"login\"");
    if let Some(u) = user {
        let _ = write!(login, " && $.message.user = \"{u}\"");
    }
    if let Some(c) = client_id {
        let _ = write!(login, " && $.message.clientId = \"{c}\"");
    }
    if denied {
        login.push_str(" && $.message.result = \"deny\"");
    }
    format!("{{ ({login}) || $.type = \"platform.report\" }}")
}

fn validate_value(flag: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 256
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c));
    if !ok {
        bail!(Failure::usage(
            format!("{flag} `{value}` cannot match any logged login"),
            "usernames and client IDs are letters, digits, `-`, `_`, `.`, `:` and `@`"
        ));
    }
    Ok(())
}

/// Pure: decisions in time order with their durations, the last `limit` of them.
fn join(lines: Vec<(i64, Line)>, limit: usize) -> Vec<Decision> {
    let mut durations = HashMap::new();
    let mut decisions = Vec::new();
    for (_, line) in lines {
        match line {
            Line::Decision(d) => decisions.push(d),
            Line::Report {
                request_id,
                duration_ms,
            } => {
                durations.insert(request_id, duration_ms);
            }
            Line::Other => {}
        }
    }
    for d in &mut decisions {
        d.duration_ms = d
            .request_id
            .as_ref()
            .and_then(|id| durations.get(id).copied());
    }
    decisions.sort_by_key(|d| d.timestamp_ms);
    let skip = decisions.len().saturating_sub(limit);
    decisions.split_off(skip)
}

/// One read of the log group: every matching event from `start_ms` on, all pages.
struct Fetched {
    /// (event id, timestamp, line)
    events: Vec<(String, i64, Line)>,
    group_exists: bool,
}

async fn fetch(logs: &Client, group: &str, start_ms: i64, pattern: &str) -> Result<Fetched> {
    let mut events = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = logs
            .filter_log_events()
            .log_group_name(group)
            .start_time(start_ms)
            .filter_pattern(pattern)
            .set_next_token(token.take())
            .send()
            .await;
        let page = match page {
            Ok(page) => page,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(Fetched {
                    events: Vec::new(),
                    group_exists: false,
                });
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.code() == Some("AccessDeniedException")) =>
            {
                bail!(Failure::new(
                    format!(
                        "not allowed to read the authorizer's logs (logs:FilterLogEvents on {group})"
                    ),
                    "grant it: `iot-custom-auth iam-policy --for logs` prints the policy"
                ));
            }
            Err(e) => return Err(e).aws("logs:FilterLogEvents"),
        };
        for event in page.events() {
            let ts = event.timestamp().unwrap_or_default();
            events.push((
                event.event_id().unwrap_or_default().to_string(),
                ts,
                parse(ts, event.message().unwrap_or_default()),
            ));
        }
        match page.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    Ok(Fetched {
        events,
        group_exists: true,
    })
}

pub async fn run(app: &App, args: LogsArgs) -> Result<u8> {
    let config = app.config()?;
    let names = app.names(&config)?;
    for (flag, value) in [("--user", &args.user), ("--client-id", &args.client_id)] {
        if let Some(v) = value {
            validate_value(flag, v)?;
        }
    }
    let clients = app.clients().await?;
    let group = log_group::name(&names);
    let pattern = filter_pattern(args.user.as_deref(), args.client_id.as_deref(), args.denied);
    let start_ms = args.since.start_ms(now_ms());
    let (fetched, function) = tokio::join!(
        fetch(&clients.logs, &group, start_ms, &pattern),
        function::read(&clients.lambda, &names)
    );
    let fetched = fetched?;
    // Lines in Lambda's Text format never match a JSON filter pattern: say so, rather than
    // "no decisions". Not being allowed to read the function only loses this hint.
    match function {
        Ok(Some(f)) if f.logging.format != "JSON" => bail!(Failure::new(
            format!(
                "function {} logs Text lines, which CloudWatch cannot filter by user or result",
                names.function
            ),
            "run `iot-custom-auth setup` to switch it to JSON; decisions logged from then on show here"
        )),
        Err(e) => tracing::debug!("could not read the function's logging config: {e:#}"),
        _ => {}
    }
    let lines: Vec<(i64, Line)> = fetched
        .events
        .iter()
        .map(|(_, ts, line)| (*ts, line.clone()))
        .collect();
    let decisions = join(lines, args.limit as usize);
    let mut printer = Printer::new(app);
    if decisions.is_empty() {
        app.progress(nothing_found(&group, fetched.group_exists, &args, start_ms));
    }
    for d in &decisions {
        printer.line(d, None);
    }
    if args.follow {
        follow(app, &clients.logs, &group, &pattern, fetched, &mut printer).await?;
    }
    Ok(exit::OK)
}

fn nothing_found(group: &str, exists: bool, args: &LogsArgs, start_ms: i64) -> String {
    if !exists {
        return format!(
            "no logs yet: log group {group} does not exist, so the authorizer has not been invoked \
             since it was deployed (run `iot-custom-auth setup` if it is not deployed)"
        );
    }
    let mut filters = Vec::new();
    if let Some(u) = &args.user {
        filters.push(format!("user {u}"));
    }
    if let Some(c) = &args.client_id {
        filters.push(format!("client ID {c}"));
    }
    if args.denied {
        filters.push("denied".to_string());
    }
    let matching = if filters.is_empty() {
        String::new()
    } else {
        format!(" matching {}", filters.join(", "))
    };
    format!(
        "no login decisions{matching} since {} in {group}",
        iso(start_ms)
    )
}

/// Keeps reading from the newest line seen until Ctrl-C. A decision whose REPORT line has not
/// arrived yet waits one round for it, so that it shows with its duration.
async fn follow(
    app: &App,
    logs: &Client,
    group: &str,
    pattern: &str,
    first: Fetched,
    printer: &mut Printer,
) -> Result<()> {
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let wait = app.wait(format!(
        "following {group} for new decisions (Ctrl-C to stop)"
    ));
    let mut cursor = first
        .events
        .iter()
        .map(|e| e.1)
        .max()
        .unwrap_or_else(now_ms);
    // The next read starts at the cursor's millisecond (inclusive), so lines seen before come
    // again: their ids skip them. Ids older than the cursor cannot come back and are dropped.
    let mut seen: HashMap<String, i64> = first.events.iter().map(|e| (e.0.clone(), e.1)).collect();
    let mut durations: HashMap<String, f64> = HashMap::new();
    let mut pending: Vec<Decision> = Vec::new();
    loop {
        tokio::select! {
            _ = &mut interrupted => break,
            _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
        }
        let fetched = tokio::select! {
            _ = &mut interrupted => break,
            fetched = fetch(logs, group, cursor, pattern) => fetched?,
        };
        let mut arrived = Vec::new();
        for (id, ts, line) in fetched.events {
            if seen.insert(id, ts).is_some() {
                continue;
            }
            cursor = cursor.max(ts);
            match line {
                Line::Decision(d) => arrived.push(d),
                Line::Report {
                    request_id,
                    duration_ms,
                } => {
                    durations.insert(request_id, duration_ms);
                }
                Line::Other => {}
            }
        }
        seen.retain(|_, ts| *ts >= cursor);
        let with_duration = |mut d: Decision| {
            d.duration_ms = d
                .request_id
                .as_ref()
                .and_then(|id| durations.get(id).copied());
            d
        };
        // Those that waited a round print now, with or without their duration.
        let mut ready: Vec<Decision> = pending.drain(..).map(with_duration).collect();
        for d in arrived.into_iter().map(with_duration) {
            if d.duration_ms.is_none() {
                pending.push(d);
            } else {
                ready.push(d);
            }
        }
        ready.sort_by_key(|d| d.timestamp_ms);
        for d in &ready {
            if let Some(id) = &d.request_id {
                durations.remove(id);
            }
            printer.line(d, Some(&wait));
        }
    }
    for d in &pending {
        printer.line(d, Some(&wait));
    }
    Ok(())
}

fn now_ms() -> i64 {
    DateTime::from(std::time::SystemTime::now())
        .to_millis()
        .unwrap_or_default()
}

/// Decisions as a table (header once) or as JSON Lines.
struct Printer {
    json: bool,
    colour: bool,
    header_printed: bool,
}

impl Printer {
    fn new(app: &App) -> Self {
        Self {
            json: app.json(),
            colour: progress::colour(),
            header_printed: false,
        }
    }

    fn line(&mut self, d: &Decision, wait: Option<&progress::Wait>) {
        let mut out = String::new();
        if self.json {
            out.push_str(&serde_json::to_string(d).expect("decisions serialize"));
        } else {
            if !self.header_printed {
                out.push_str(&row([
                    "TIME",
                    "USER",
                    "CLIENT ID",
                    "RESULT",
                    "REASON",
                    "DURATION",
                ]));
                out.push('\n');
                self.header_printed = true;
            }
            let result = format!("{:<6}", d.result);
            let colour = if d.result == "allow" {
                Colour::Green
            } else {
                Colour::Red
            };
            let duration = d
                .duration_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.2} ms"));
            let line = row([
                d.time.as_str(),
                d.user.as_deref().unwrap_or("-"),
                d.client_id.as_deref().unwrap_or("-"),
                RESULT_SLOT,
                d.reason.as_deref().unwrap_or("-"),
                duration.as_str(),
            ]);
            // Painted after padding, so escape codes do not upset the columns.
            out.push_str(&line.replacen(
                RESULT_SLOT,
                &progress::paint(&result, colour, self.colour),
                1,
            ));
        }
        match wait {
            Some(w) => w.println(&out),
            None => println!("{out}"),
        }
    }
}

const RESULT_SLOT: &str = "\u{0}RESULT\u{0}";

fn row(cells: [&str; 6]) -> String {
    let [time, user, client, result, reason, duration] = cells;
    let result = if result == RESULT_SLOT {
        result.to_string()
    } else {
        format!("{result:<6}")
    };
    format!("{time:<24}  {user:<20}  {client:<20}  {result}  {reason:<24}  {duration}")
        .trim_end()
        .to_string()
}

/// The `logs` command that shows why `user` (as `client_id`) was refused, for failure hints:
/// with the flags that point it at the same deployment, region and account.
pub fn command(app: &App, names: &Names, user: &str, client_id: Option<&str>) -> String {
    let g = &app.global;
    let mut cmd = String::from("iot-custom-auth");
    if g.config != std::path::Path::new(crate::cli::DEFAULT_CONFIG) {
        let _ = write!(cmd, " --config {}", g.config.display());
    }
    if names.deployment != crate::names::DEFAULT_NAME {
        let _ = write!(cmd, " --name {}", names.deployment);
    }
    if let Some(r) = &g.region {
        let _ = write!(cmd, " --region {r}");
    }
    if let Some(p) = &g.profile {
        let _ = write!(cmd, " --profile {p}");
    }
    if let Some(u) = &g.endpoint_url {
        let _ = write!(cmd, " --endpoint-url {u}");
    }
    let _ = write!(cmd, " logs --user {user}");
    if let Some(c) = client_id {
        let _ = write!(cmd, " --client-id {c}");
    }
    cmd.push_str(" --since 15m");
    cmd
}

/// A failure's remedy followed by the `logs` command that shows the authorizer's decision and
/// its reason for this login. The deployment's name comes from --name or the config, as the
/// command itself would find it.
pub fn with_hint(app: &App, remedy: Option<String>, user: &str, client_id: Option<&str>) -> String {
    let names = app
        .config()
        .and_then(|c| app.names(&c))
        .or_else(|_| Names::new(crate::names::DEFAULT_NAME));
    let Ok(names) = names else {
        return remedy.unwrap_or_default();
    };
    // The authorizer logs the username without IoT's `?x-amz-customauthorizer-name=…` suffix.
    let user = user.split('?').next().unwrap_or(user);
    let see = format!(
        "the authorizer's decision and reason: `{}`",
        command(app, &names, user, client_id)
    );
    match remedy {
        Some(r) => format!("{r}; {see}"),
        None => see,
    }
}
