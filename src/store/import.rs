//! Reading and checking an import file (CSV with a header row, or JSON Lines) before anything is
//! written: every row gets the rules of `device add`, and the file may not claim a username,
//! principal id or client ID twice. Passwords come only from the file and never appear in a
//! message.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use super::Incoming;
use crate::config::{self, Device};
use crate::error::Failure;
use crate::verifier;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// From the file name: `.csv`, or `.jsonl` / `.ndjson`.
    pub fn of(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Ok(Self::Csv),
            Some(e) if e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson") => {
                Ok(Self::Jsonl)
            }
            _ => bail!(Failure::usage(
                format!("cannot tell the format of {} from its name", path.display()),
                "name it .csv or .jsonl, or pass --format csv|jsonl"
            )),
        }
    }
}

/// The columns (CSV) or keys (JSON Lines) a row may have.
pub const COLUMNS: &[&str] = &[
    "username",
    "password",
    "verifier",
    "client_ids",
    "publish",
    "subscribe",
    "disabled",
];

/// One row as written in the file. List fields are `;`-separated in CSV.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<String>,
    #[serde(default)]
    pub client_ids: Vec<String>,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

/// A row that cannot be imported: where it is and why (never its password).
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub reason: String,
}

/// The file's rows with their line numbers; a row that cannot even be read is refused.
pub fn read(text: &str, format: Format) -> Result<Vec<(u64, Result<Row, String>)>> {
    match format {
        Format::Jsonl => Ok(text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let row = serde_json::from_str::<Row>(l).map_err(|e| {
                    // serde_json's message names the column of the line; the value is not quoted
                    // for strings, so no password leaks.
                    format!(
                        "not a JSON object with the keys {}: {e}",
                        COLUMNS.join(", ")
                    )
                });
                (i as u64 + 1, row)
            })
            .collect()),
        Format::Csv => read_csv(text),
    }
}

fn read_csv(text: &str) -> Result<Vec<(u64, Result<Row, String>)>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .context("reading the CSV header row")?
        .clone();
    for h in &headers {
        if !COLUMNS.contains(&h) {
            bail!(Failure::usage(
                format!("the CSV header names an unknown column `{h}`"),
                format!("use the columns {}", COLUMNS.join(", "))
            ));
        }
    }
    if !headers.iter().any(|h| h == "username") {
        bail!(Failure::usage(
            "the CSV header row has no `username` column",
            format!(
                "start the file with a header row such as `{}`",
                COLUMNS.join(",")
            )
        ));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                // A CSV syntax error (wrong field count, bad quoting): the error names where, not
                // what the field held.
                rows.push((line, Err(format!("not a CSV row: {}", csv_error_kind(&e)))));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let field = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .and_then(|i| record.get(i))
                .filter(|v| !v.is_empty())
        };
        let list = |name: &str| {
            field(name).map_or_else(Vec::new, |v| {
                v.split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
        };
        let disabled = match field("disabled") {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err("`disabled` must be true or false".to_string()),
        };
        let row = disabled.map(|disabled| Row {
            username: field("username").unwrap_or_default().to_string(),
            password: field("password").map(String::from),
            verifier: field("verifier").map(String::from),
            client_ids: list("client_ids"),
            publish: list("publish"),
            subscribe: list("subscribe"),
            disabled,
        });
        rows.push((line, row));
    }
    Ok(rows)
}

fn csv_error_kind(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not UTF-8".to_string(),
        _ => "unreadable".to_string(),
    }
}

/// Checks one row as `device add` would and makes its device (a verifier for a password).
pub fn check(row: Row) -> Result<Incoming, String> {
    config::validate_username(&row.username).map_err(|e| e.to_string())?;
    let (verifier, password) = match (row.password, row.verifier) {
        (Some(pw), None) => {
            verifier::check_strength(&pw).map_err(|e| format!("password refused: {e:#}"))?;
            (verifier::make(pw.as_bytes()), Some(pw))
        }
        (None, Some(v)) => (v, None),
        (Some(_), Some(_)) => return Err("give a password or a verifier, not both".into()),
        (None, None) => return Err("no password and no verifier".into()),
    };
    let device = super::normalized(Device {
        username: row.username,
        password_verifier: verifier,
        client_ids: row.client_ids,
        publish: row.publish,
        subscribe: row.subscribe,
        previous_verifiers: Vec::new(),
        disabled: row.disabled,
    });
    config::validate_device(&device).map_err(|e| format!("{e:#}"))?;
    Ok(Incoming { device, password })
}

/// Checks every row (the password checks on every core: zxcvbn takes about a millisecond per
/// password), then what rows may not share. Returns the good rows and the refused ones, in the
/// file's order.
pub fn check_all(rows: Vec<(u64, Result<Row, String>)>) -> (Vec<Incoming>, Vec<Refused>) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = rows.len().div_ceil(threads).max(1);
    let mut rows = rows;
    let mut parts = Vec::new();
    while !rows.is_empty() {
        let rest = rows.split_off(chunk.min(rows.len()));
        parts.push(std::mem::replace(&mut rows, rest));
    }
    let checked: Vec<(u64, Option<String>, Result<Incoming, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                s.spawn(move || {
                    part.into_iter()
                        .map(|(line, row)| match row {
                            Ok(row) => {
                                let name = Some(row.username.clone()).filter(|u| !u.is_empty());
                                (line, name, check(row))
                            }
                            Err(e) => (line, None, Err(e)),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a check thread panicked"))
            .collect()
    });

    let mut good = Vec::new();
    let mut refused = Vec::new();
    let mut usernames: HashMap<String, u64> = HashMap::new();
    let mut principals: HashMap<String, u64> = HashMap::new();
    let mut clients: HashMap<String, u64> = HashMap::new();
    for (line, username, result) in checked {
        let incoming = match result {
            Ok(i) => i,
            Err(reason) => {
                refused.push(Refused {
                    line,
                    username,
                    reason,
                });
                continue;
            }
        };
        let d = &incoming.device;
        let clash = if let Some(first) = usernames.get(&d.username) {
            Some(format!("username also on line {first}"))
        } else if let Some(first) = principals.get(&config::principal_id(&d.username)) {
            Some(format!(
                "same principal id `{}` as the device on line {first} (IoT keeps only letters and digits)",
                config::principal_id(&d.username)
            ))
        } else {
            d.client_ids.iter().find_map(|c| {
                clients
                    .get(c)
                    .map(|first| format!("client ID `{c}` also on line {first}"))
            })
        };
        if let Some(reason) = clash {
            refused.push(Refused {
                line,
                username,
                reason,
            });
            continue;
        }
        usernames.insert(d.username.clone(), line);
        principals.insert(config::principal_id(&d.username), line);
        for c in &d.client_ids {
            clients.insert(c.clone(), line);
        }
        good.push(incoming);
    }
    (good, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "Zq8x3Lr5Tb7Nc2Vm9Kd4Hw6J";

    #[test]
    fn csv_rows_are_checked_and_clashes_refused() {
        let v = verifier::make(PW.as_bytes());
        let text = format!(
            "username,password,verifier,client_ids,publish,subscribe\n\
             s1,{PW},,s1;s1-b,,cmd/s1/#\n\
             s2,,{v},,,\n\
             s3,password1,,,,\n\
             s1,{PW}x,,,,\n\
             bad?name,{PW},,,,\n\
             s4,{PW},,s1-b,,\n\
             s5,,,,,\n"
        );
        let rows = read(&text, Format::Csv).unwrap();
        let (good, refused) = check_all(rows);
        assert_eq!(
            good.iter()
                .map(|i| i.device.username.as_str())
                .collect::<Vec<_>>(),
            ["s1", "s2"]
        );
        assert_eq!(good[0].device.client_ids, ["s1", "s1-b"]);
        assert_eq!(good[0].device.publish, ["telemetry/s1", "telemetry/s1-b"]);
        assert_eq!(good[0].device.subscribe, ["cmd/s1/#"]);
        assert_eq!(good[1].device.password_verifier, v);
        let lines: Vec<u64> = refused.iter().map(|r| r.line).collect();
        assert_eq!(lines, [4, 5, 6, 7, 8]);
        assert!(
            refused[0].reason.contains("password refused"),
            "{refused:?}"
        );
        assert!(refused[1].reason.contains("also on line 2"), "{refused:?}");
        assert!(
            refused[3].reason.contains("client ID `s1-b`"),
            "{refused:?}"
        );
        assert!(refused[4].reason.contains("no password"), "{refused:?}");
        for r in &refused {
            assert!(!r.reason.contains(PW) && !r.reason.contains("password1"));
        }
    }

    #[test]
    fn json_lines_and_unknown_keys() {
        let text = format!(
            "{{\"username\":\"s1\",\"password\":\"{PW}\",\"publish\":[\"a/b\"]}}\n\n\
             {{\"username\":\"s2\",\"pasword\":\"{PW}\"}}\n"
        );
        let (good, refused) = check_all(read(&text, Format::Jsonl).unwrap());
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].device.publish, ["a/b"]);
        assert_eq!(refused[0].line, 3);
        assert!(refused[0].reason.contains("pasword"), "{refused:?}");
        assert!(!refused[0].reason.contains(PW));
    }

    #[test]
    fn an_unknown_csv_column_refuses_the_file() {
        let err = read("username,pasword\ns1,x\n", Format::Csv).unwrap_err();
        assert!(format!("{err:#}").contains("`pasword`"));
    }
}
