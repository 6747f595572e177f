//! The declarations against what users read: every key has a row in its
//! table's section of docs/configuration.md and a line in proxy.toml, the
//! defaults shown in both are the declared ones, and every flag has a row
//! in the command-line table.

use std::fs;
use std::path::Path;

use clap::{Args, Command, FromArgMatches};

use super::keys::{UpstreamSettings, SECTIONS};
use super::sites::SITE_KEYS;
use super::special::SPECIAL_KEYS;
use super::{Config, Overrides, RawFile};

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Every declared table with its keys: the hand-checked ones first, as in
/// the file.
fn all_keys() -> Vec<(&'static str, &'static [&'static str])> {
    SPECIAL_KEYS
        .iter()
        .chain(SITE_KEYS)
        .chain(SECTIONS)
        .copied()
        .collect()
}

/// A table of a Markdown document, under the nearest heading above it.
struct DocTable {
    heading: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn markdown_tables(doc: &str) -> Vec<DocTable> {
    let mut tables: Vec<DocTable> = Vec::new();
    let mut heading = String::new();
    let mut in_table = false;
    let mut in_code = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code {
            continue;
        }
        if let Some(text) = line.strip_prefix('#') {
            heading = text.trim_start_matches('#').trim().to_owned();
            in_table = false;
            continue;
        }
        let Some(row) = line.trim().strip_prefix('|') else {
            in_table = false;
            continue;
        };
        let cells: Vec<String> = row
            .trim_end_matches('|')
            .split('|')
            .map(|cell| cell.trim().to_owned())
            .collect();
        if !in_table {
            let (heading, header) = (heading.clone(), cells);
            tables.push(DocTable {
                heading,
                header,
                rows: Vec::new(),
            });
            in_table = true;
        } else if !cells.iter().all(|cell| cell.starts_with("---")) {
            let table = tables.last_mut().expect("a table was started");
            table.rows.push(cells);
        }
    }
    tables
}

/// The key table of `[table]` (or `[[table]]`) in docs/configuration.md.
fn doc_table<'a>(tables: &'a [DocTable], table: &str) -> &'a DocTable {
    let headings = [
        format!("`[{table}]`"),
        format!("`[[{table}]]`"),
        format!("`[{table}.NAME]`"),
    ];
    tables
        .iter()
        .find(|t| headings.contains(&t.heading))
        .unwrap_or_else(|| panic!("docs/configuration.md has no ### `[{table}]` section"))
}

#[test]
fn every_key_has_a_row_in_its_table_in_the_docs_and_no_row_is_unknown() {
    let doc = read("docs/configuration.md");
    let tables = markdown_tables(&doc);
    for (table, keys) in all_keys() {
        let rows = &doc_table(&tables, table).rows;
        let documented: Vec<&str> = rows.iter().map(|row| row[0].as_str()).collect();
        for key in keys {
            assert!(
                documented.contains(&format!("`{key}`").as_str()),
                "{table}.{key} has no row in the `[{table}]` table of docs/configuration.md"
            );
        }
        for row in documented {
            let key = row.trim_matches('`');
            assert!(
                keys.contains(&key),
                "docs/configuration.md documents `{table}.{key}`, which is not a key"
            );
        }
    }
}

#[test]
fn every_key_has_a_line_in_its_table_in_the_reference_config() {
    let text = read("proxy.toml");
    // (table, key) for each `key = value` line, commented out or not.
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut table = String::new();
    for line in text.lines().map(str::trim) {
        let setting = line.strip_prefix('#').unwrap_or(line).trim();
        // A table header, commented out or not, starts a table: `[push]`,
        // `# [[sites]]`. `[upstreams.NAME]` holds the keys of `upstreams`,
        // and a site's `[sites.push]` and `[sites.hints]` those of `push`
        // and `hints`.
        if setting.starts_with('[') && setting.ends_with(']') && !setting.contains(' ') {
            let name = setting.trim_matches(['[', ']']);
            table = match name.split_once('.') {
                Some(("upstreams", _)) => "upstreams".to_owned(),
                Some(("sites", sub @ ("push" | "hints"))) => sub.to_owned(),
                _ => name.to_owned(),
            };
            continue;
        }
        // Only a line that is a TOML setting on its own counts, not prose
        // that happens to start with a key.
        if setting.starts_with('[') {
            continue;
        }
        if let Ok(parsed) = toml::from_str::<toml::Table>(setting) {
            lines.extend(parsed.keys().map(|key| (table.clone(), key.clone())));
        }
    }
    for (table, keys) in all_keys() {
        for key in keys {
            assert!(
                lines.contains(&(table.to_owned(), (*key).to_owned())),
                "{table}.{key} has no `{key} =` or `# {key} =` line under [{table}] in proxy.toml"
            );
        }
    }
    for (table, key) in &lines {
        let declared = all_keys()
            .into_iter()
            .any(|(t, keys)| t == table && keys.contains(&key.as_str()));
        assert!(
            declared,
            "proxy.toml shows `{table}.{key}`, which is not a key"
        );
    }
}

/// A configuration shown table by table, to compare two of them.
fn shown(config: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("listen", format!("{:#?}", config.listeners)),
        ("tls", format!("{:#?}", config.tls)),
        ("origin", format!("{:#?}", config.origin)),
        ("timeouts", format!("{:#?}", config.timeouts)),
        ("limits", format!("{:#?}", config.limits)),
        ("forwarding", format!("{:#?}", config.forwarding)),
        ("log", format!("{:#?}", config.log)),
        ("metrics", format!("{:#?}", config.metrics)),
        ("push", format!("{:#?}", config.push)),
        ("hints", format!("{:#?}", config.hints)),
        ("server", format!("{:#?}", config.server)),
    ]
}

/// Compares two tables shown by [`shown`] line by line, that is field by
/// field, so a difference names its field.
fn assert_same_fields(expected: &str, found: &str, context: &str) {
    for (expected, found) in expected.lines().zip(found.lines()) {
        assert_eq!(
            found, expected,
            "{context}: a field is not the declared default"
        );
    }
    assert_eq!(found.lines().count(), expected.lines().count(), "{context}");
}

/// Every default, with the origin and certificate that proxy.toml gives.
fn defaults() -> Config {
    let flags = Overrides {
        origin: Some("http://127.0.0.1:8080".to_owned()),
        self_signed: true,
        ..Overrides::default()
    };
    Config::from_toml_str("", Path::new("."), &flags).expect("defaults are valid")
}

#[test]
fn reference_config_shows_the_declared_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
    let shipped = Config::load(Some(&path), &Overrides::default()).expect("proxy.toml is valid");
    for ((table, expected), (_, found)) in shown(&defaults()).into_iter().zip(shown(&shipped)) {
        assert_same_fields(&expected, &found, &format!("[{table}] in proxy.toml"));
    }
}

#[test]
fn documented_defaults_are_the_declared_defaults() {
    let doc = read("docs/configuration.md");
    let tables = markdown_tables(&doc);
    let defaults = shown(&defaults());
    let flags = Overrides {
        origin: Some("http://127.0.0.1:8080".to_owned()),
        self_signed: true,
        ..Overrides::default()
    };
    let mut checked = 0;
    for (table, _) in SECTIONS {
        let DocTable { header, rows, .. } = doc_table(&tables, table);
        let column = header
            .iter()
            .position(|cell| cell == "default")
            .unwrap_or_else(|| panic!("the `[{table}]` table has no default column"));
        for row in rows {
            // `required` and `none` are not values.
            let Some(value) = row[column]
                .strip_prefix('`')
                .and_then(|v| v.strip_suffix('`'))
            else {
                continue;
            };
            let key = row[0].trim_matches('`');
            if *table == "upstreams" {
                let text =
                    format!("[upstreams.app]\nservers = [\"http://127.0.0.1:1\"]\n{key} = {value}");
                let config = Config::from_toml_str(&text, Path::new("."), &flags)
                    .unwrap_or_else(|err| panic!("documented default upstreams.{key}: {err}"));
                let found = &config.upstreams.last().expect("the upstream").settings;
                let expected = UpstreamSettings {
                    servers: found.servers.clone(),
                    ..UpstreamSettings::default()
                };
                assert_eq!(
                    found, &expected,
                    "the documented default upstreams.{key} = {value}"
                );
                checked += 1;
                continue;
            }
            let text = format!("[{table}]\n{key} = {value}");
            let config = Config::from_toml_str(&text, Path::new("."), &flags)
                .unwrap_or_else(|err| panic!("documented default {table}.{key} = {value}: {err}"));
            for ((_, expected), (_, found)) in defaults.iter().zip(shown(&config)) {
                let context = format!("the documented default {table}.{key} = {value}");
                assert_same_fields(expected, &found, &context);
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} documented defaults found");
}

#[test]
fn every_flag_has_a_row_naming_the_key_it_replaces() {
    let doc = read("docs/configuration.md");
    let tables = markdown_tables(&doc);
    let rows = &tables
        .iter()
        .find(|t| t.heading == "Command line" && t.header[0] == "flag")
        .expect("docs/configuration.md has a flag table under ## Command line")
        .rows;

    // Every flag given a value shows which keys flags replace.
    let command = Overrides::augment_args(Command::new("linkpush").no_binary_name(true));
    let mut args: Vec<String> = Vec::new();
    for arg in command.get_arguments() {
        let long = arg.get_long().expect("every flag has a long name");
        args.push(format!("--{long}"));
        if arg.get_action().takes_values() {
            args.push("1".to_owned());
        }
    }
    let matches = command
        .clone()
        .try_get_matches_from(&args)
        .expect("every flag once");
    let all = Overrides::from_arg_matches(&matches).expect("every flag read");
    let replaced = all.replace_keys(&mut RawFile::default());

    for arg in command.get_arguments() {
        let flag = format!("--{}", arg.get_long().expect("long name"));
        let row = rows
            .iter()
            .find(|row| {
                let cell = &row[0];
                cell.contains(&format!("`{flag} ")) || cell.contains(&format!("`{flag}`"))
            })
            .unwrap_or_else(|| panic!("{flag} has no row in the flag table"));
        if let Some((key, _)) = replaced.iter().find(|(_, f)| *f == flag) {
            assert!(
                row[1].contains(&format!("`{key}`")),
                "the row of {flag} does not say it replaces `{key}`"
            );
        }
    }
}
