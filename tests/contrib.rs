//! The files in contrib/ and the walkthrough in docs/deploy.md against the
//! real binary: the systemd unit passes `systemd-analyze verify`, the
//! command lines of the unit and of the container image are accepted by
//! `linkpush check`, the Dockerfile copies everything `cargo build` reads,
//! and the configurations shown to operators load.
//!
//! `systemd-analyze verify` needs no running systemd, but it does check
//! that every `Exec*=` program exists. The unit names the installed path,
//! /usr/local/bin/linkpush, so the test verifies a copy of the unit in a
//! temporary directory with that path replaced by the binary Cargo just
//! built. Without `systemd-analyze` (Debian's `systemd` package) the test
//! prints a note and passes, except when `CI` is set, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use linkpush::config::{Config, Overrides};

const BIN: &str = env!("CARGO_BIN_EXE_linkpush");
/// Where the unit and the image expect the binary and the configuration.
const INSTALLED_BIN: &str = "/usr/local/bin/linkpush";
const INSTALLED_CONFIG: &str = "/etc/linkpush/proxy.toml";

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// A valid configuration that the commands of the unit and the image are
/// checked against, standing in for /etc/linkpush/proxy.toml.
fn stand_in_config(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("proxy.toml");
    let text = "[[listen]]\naddress = \"0.0.0.0:443\"\n\n[tls]\nself_signed = true\n\n\
                [origin]\nurl = \"http://127.0.0.1:8080\"\n";
    std::fs::write(&path, text).expect("write the stand-in config");
    path
}

/// The values of `key=` in the unit's `[Service]` section, in order.
fn service_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    let mut section = "";
    let mut values = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section != "[Service]" || line.starts_with('#') {
            continue;
        }
        if let Some((name, value)) = line.split_once('=') {
            if name.trim() == key {
                values.push(value.trim());
            }
        }
    }
    values
}

/// Runs a command line meant for the installed binary against the built
/// one: `run` becomes `check` (which loads the configuration exactly as
/// `run` does and starts nothing), and the installed configuration path
/// becomes `config`. Panics unless the binary accepts it.
fn assert_accepted(origin: &str, args: &[&str], config: &Path) {
    let subcommand = args.first().copied();
    assert!(
        matches!(subcommand, Some("run" | "check")),
        "{origin}: expected `run` or `check` first, found {args:?}"
    );
    assert!(
        args.contains(&INSTALLED_CONFIG),
        "{origin}: {args:?} does not read {INSTALLED_CONFIG}"
    );
    let rewritten: Vec<&str> = std::iter::once("check")
        .chain(args[1..].iter().map(|arg| {
            if *arg == INSTALLED_CONFIG {
                config.to_str().expect("a UTF-8 temporary path")
            } else {
                arg
            }
        }))
        .collect();
    let output = Command::new(BIN)
        .args(&rewritten)
        .output()
        .expect("run linkpush");
    assert!(
        output.status.success(),
        "{origin}: `linkpush {}` failed: {}{}",
        rewritten.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// Whether a program answers `--version`; otherwise says so on stderr, and
/// fails when `CI` is set.
fn present_or_not_needed(program: &str, package: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        eprintln!("note: {program} not found (Debian package {package}); not checked here");
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is required when CI is set (.ci/run installs {package})"
        );
    }
    found
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    if !present_or_not_needed("systemd-analyze", "systemd") {
        return;
    }
    let unit = read("contrib/linkpush.service");
    assert!(
        unit.contains(INSTALLED_BIN),
        "the unit runs {INSTALLED_BIN}"
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let copy = dir.path().join("linkpush.service");
    std::fs::write(&copy, unit.replace(INSTALLED_BIN, BIN)).expect("copy the unit");

    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Other units of the machine may draw warnings of their own; any line
    // about this one (an unknown key, a bad value, a missing program) fails.
    let about_unit: Vec<&str> = printed
        .lines()
        .filter(|line| line.contains("linkpush.service"))
        .collect();
    assert!(
        output.status.success() && about_unit.is_empty(),
        "systemd-analyze verify contrib/linkpush.service ({}):\n{printed}",
        output.status
    );
}

#[test]
fn systemd_unit_commands_are_accepted_by_the_binary() {
    let unit = read("contrib/linkpush.service");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = stand_in_config(&dir);
    let mut checked = Vec::new();
    for key in ["ExecStartPre", "ExecStart", "ExecReload"] {
        for line in service_values(&unit, key) {
            assert!(
                !line.contains(['"', '\'', '\\']),
                "{key}={line}: no quoting, so that splitting on spaces is how systemd reads it"
            );
            let words: Vec<&str> = line.split_whitespace().collect();
            if words[0] != INSTALLED_BIN {
                continue;
            }
            assert_accepted(&format!("{key}={line}"), &words[1..], &config);
            checked.push((key, words[1]));
        }
    }
    assert!(
        checked.contains(&("ExecStart", "run")),
        "ExecStart runs the proxy"
    );
    assert!(
        checked.contains(&("ExecStartPre", "check")),
        "ExecStartPre checks"
    );
    assert!(
        checked.contains(&("ExecReload", "check")),
        "ExecReload checks before it signals"
    );
}

#[test]
fn systemd_unit_waits_longer_than_the_shutdown_grace() {
    let unit = read("contrib/linkpush.service");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = Config::load(Some(&stand_in_config(&dir)), &Overrides::default())
        .expect("the stand-in config is valid");
    let stop = service_values(&unit, "TimeoutStopSec");
    let [stop] = stop.as_slice() else {
        panic!("the unit sets TimeoutStopSec once, found {stop:?}");
    };
    let stop: Duration = humantime::parse_duration(stop).expect("TimeoutStopSec is a duration");
    let grace = config.timeouts.shutdown_grace;
    assert!(
        stop > grace,
        "TimeoutStopSec={stop:?} must exceed timeouts.shutdown_grace ({grace:?}), \
         or systemd kills the proxy while it drains"
    );
    assert_eq!(service_values(&unit, "KillSignal"), ["SIGTERM"]);
}

/// The instructions of a Dockerfile, continuation lines joined.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (name, rest) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((name.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

/// The strings of an exec-form (JSON array) instruction.
fn exec_form(instruction: &str, value: &str) -> Vec<String> {
    let value: toml::Table = toml::from_str(&format!("v = {value}"))
        .unwrap_or_else(|err| panic!("{instruction} {value} is not a JSON array: {err}"));
    value["v"]
        .as_array()
        .unwrap_or_else(|| panic!("{instruction} {value} is not in exec form"))
        .iter()
        .map(|word| word.as_str().expect("a string").to_owned())
        .collect()
}

/// Whether a `.dockerignore` pattern leaves `source` out of the build
/// context. Only the forms the file uses are understood (`name`, `dir/name`,
/// `**/name`, `**/*.ext`); any other form fails the test, so that this
/// check cannot quietly fall behind the file.
fn ignored(pattern: &str, source: &str) -> bool {
    if let Some(name) = pattern.strip_prefix("**/") {
        assert!(
            !name.contains('/'),
            "unsupported .dockerignore pattern {pattern}"
        );
        return match name.strip_prefix('*') {
            Some(suffix) => {
                assert!(!suffix.contains('*'), "unsupported pattern {pattern}");
                source.ends_with(suffix)
            }
            None => source.split('/').any(|part| part == name),
        };
    }
    assert!(
        !pattern.contains(['*', '?', '[', '!']),
        "unsupported pattern {pattern}"
    );
    source == pattern || source.starts_with(&format!("{pattern}/"))
}

#[test]
fn dockerfile_copies_what_cargo_build_reads_and_its_command_is_accepted() {
    let dockerfile = read("contrib/Dockerfile");
    let instructions = dockerfile_instructions(&dockerfile);
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();

    // Every COPY from the build context names files that exist and that
    // .dockerignore lets through.
    let mut copied: Vec<String> = Vec::new();
    for (name, args) in &instructions {
        if name != "COPY" || args.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        assert!(
            !words[0].starts_with("--"),
            "COPY {args}: unexpected option"
        );
        for source in &words[..words.len() - 1] {
            let source = source.trim_end_matches('/');
            assert!(
                repo(source).exists(),
                "COPY {args}: {source} does not exist"
            );
            for pattern in &patterns {
                assert!(
                    !ignored(pattern, source),
                    "COPY {args}: {source} is excluded by `{pattern}` in .dockerignore"
                );
            }
            copied.push(source.to_owned());
        }
    }
    // Every file or directory Cargo.toml points at is copied, or the
    // manifest does not load in the image.
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).expect("Cargo.toml parses");
    let mut paths = Vec::new();
    for bench in manifest
        .get("bench")
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
    {
        paths.extend(bench.get("path").and_then(|p| p.as_str()));
    }
    for (_, table) in manifest
        .get("patch")
        .and_then(|p| p.as_table())
        .into_iter()
        .flatten()
    {
        for (_, dependency) in table.as_table().into_iter().flatten() {
            paths.extend(dependency.get("path").and_then(|p| p.as_str()));
        }
    }
    for path in paths
        .iter()
        .copied()
        .chain(["Cargo.toml", "Cargo.lock", "src"])
    {
        assert!(
            copied
                .iter()
                .any(|source| path == source || path.starts_with(&format!("{source}/"))),
            "Cargo.toml needs {path}, which contrib/Dockerfile does not COPY"
        );
    }

    let entrypoint = instructions
        .iter()
        .rfind(|(name, _)| name == "ENTRYPOINT")
        .expect("an ENTRYPOINT");
    assert_eq!(exec_form("ENTRYPOINT", &entrypoint.1), ["linkpush"]);
    let cmd = instructions
        .iter()
        .rfind(|(name, _)| name == "CMD")
        .expect("a CMD");
    let cmd = exec_form("CMD", &cmd.1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = stand_in_config(&dir);
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    assert_accepted("contrib/Dockerfile CMD", &args, &config);
    assert!(
        instructions
            .iter()
            .any(|(name, args)| name == "STOPSIGNAL" && args == "SIGTERM"),
        "the image stops with SIGTERM, which drains"
    );
    let user = instructions
        .iter()
        .rfind(|(name, _)| name == "USER")
        .expect("a USER");
    assert!(
        !matches!(user.1.split(':').next(), Some("root" | "0")),
        "the image runs as root"
    );
}

#[test]
fn deploy_walkthrough_configurations_load() {
    let doc = read("docs/deploy.md");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert!(
        blocks.len() >= 2,
        "no TOML examples found in docs/deploy.md"
    );
    // --self-signed stands in for certificate files that exist only on the
    // operator's machine, as in the configuration reference's own test.
    let flags = Overrides {
        self_signed: true,
        ..Overrides::default()
    };
    for block in blocks {
        if let Err(err) = Config::from_toml_str(block, Path::new("."), &flags) {
            panic!("docs/deploy.md shows an invalid configuration: {err}\n{block}");
        }
    }
}
