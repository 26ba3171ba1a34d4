//! Configuration: every shipped config validates; a corpus of bad configs is rejected with exit code 2, the key
//! path, the message and a position; independent problems are reported together; no input makes the parser
//! panic; secrets never reach the output of `check-config`.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rpod::config::Config;

use crate::helpers::{repo_root, rpod_bin};

/// Runs `rpod --config FILE check-config` from the repository root with extra environment variables.
fn check_config(file: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(rpod_bin());
    command
        .arg("--config")
        .arg(file)
        .arg("check-config")
        .current_dir(repo_root())
        .env_remove("RPOD_CONFIG")
        .env_remove("RPOD_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the rpod binary runs")
}

/// Every file under `dir` (recursively) whose name ends in `.toml`, sorted.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()))
        {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// One problem line of `check-config`'s error output: `  FILE[:LINE:COL]: [PATH: ]MESSAGE`.
#[derive(Debug)]
struct Reported {
    position: Option<(usize, usize)>,
    /// `PATH: MESSAGE`, or just `MESSAGE` for problems of the whole file.
    text: String,
}

/// The problem lines about `file` in `stderr`.
fn reported_problems(stderr: &str, file: &Path) -> Vec<Reported> {
    let file = file.display().to_string();
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix("  ")?.strip_prefix(file.as_str()))
        .filter_map(|after| {
            let after = after.strip_prefix(':')?;
            let mut parts = after.splitn(3, ':');
            let position = match (parts.next(), parts.next(), parts.next()) {
                (Some(line), Some(column), Some(rest)) => match (line.parse(), column.parse()) {
                    (Ok(line), Ok(column)) => Some(((line, column), rest)),
                    _ => None,
                },
                _ => None,
            };
            Some(match position {
                Some((position, rest)) => Reported {
                    position: Some(position),
                    text: rest.strip_prefix(' ')?.to_owned(),
                },
                None => Reported {
                    position: None,
                    text: after.strip_prefix(' ')?.to_owned(),
                },
            })
        })
        .collect()
}

/// What a bad config's first line promises: `# expect: <key path> | <message substring>[ | nopos]`.
#[derive(Debug)]
struct Expectation {
    path: String,
    message: String,
    has_position: bool,
}

fn expectation(file: &Path, text: &str) -> Expectation {
    let first = text.lines().next().unwrap_or_default();
    let Some(rest) = first.strip_prefix("# expect:") else {
        panic!(
            "{}: the first line must be `# expect: <key path> | <message>`",
            file.display()
        );
    };
    let parts: Vec<&str> = rest.split('|').map(str::trim).collect();
    assert!(
        matches!(parts.len(), 2 | 3),
        "{}: expected `# expect: <key path> | <message>[ | nopos]`, found {first:?}",
        file.display()
    );
    assert!(
        !parts[1].is_empty(),
        "{}: the expected message is empty",
        file.display()
    );
    if parts.len() == 3 {
        assert_eq!(
            parts[2],
            "nopos",
            "{}: the only flag is `nopos`",
            file.display()
        );
    }
    Expectation {
        path: parts[0].to_owned(),
        message: parts[1].to_owned(),
        has_position: parts.len() == 2,
    }
}

/// The key a position should point at: the last segment of a key path without its indexes.
fn last_key(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last)
}

/// Checks one reported problem against an expectation: `None` when it is about something else, `Some(Ok)` when
/// it is the expected problem at a plausible position (the line names the key), `Some(Err)` when it is the
/// expected problem but its position is missing or wrong.
fn judge(
    expected: &Expectation,
    text: &str,
    reported: &str,
    position: Option<(usize, usize)>,
) -> Option<Result<(), String>> {
    let message = if expected.path.is_empty() {
        reported
    } else {
        reported.strip_prefix(&format!("{}: ", expected.path))?
    };
    if !message.contains(&expected.message) {
        return None;
    }
    if !expected.has_position {
        return Some(Ok(()));
    }
    let Some((line, column)) = position else {
        return Some(Err(format!("no line and column for {reported:?}")));
    };
    let lines: Vec<&str> = text.lines().collect();
    if line == 0 || column == 0 || line > lines.len() + 1 {
        return Some(Err(format!(
            "position {line}:{column} is outside the file ({} lines)",
            lines.len()
        )));
    }
    if !expected.path.is_empty() {
        let key = last_key(&expected.path);
        let at = lines.get(line - 1).copied().unwrap_or_default();
        if !at.contains(key) {
            return Some(Err(format!(
                "position {line}:{column} of {reported:?} points at {at:?}, which does not mention {key:?}"
            )));
        }
    }
    Some(Ok(()))
}

fn bad_config_dir() -> PathBuf {
    repo_root().join("tests/fixtures/bad-config")
}

#[test]
fn every_shipped_config_is_valid() {
    let files = toml_files(&repo_root().join("config"));
    assert!(
        files.iter().any(|f| f.ends_with("config/demo.toml")),
        "config/demo.toml is missing: {files:?}"
    );
    for file in &files {
        if let Err(err) = rpod::app::load(file) {
            panic!("{err}");
        }
        let output = check_config(file, &[]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: check-config failed:\n{stdout}{stderr}",
            file.display()
        );
        assert!(stdout.contains(": OK ("), "{}: {stdout}", file.display());
    }
}

#[test]
fn bad_config_corpus_is_rejected_by_check_config() {
    let files = toml_files(&bad_config_dir());
    assert!(
        files.len() >= 45,
        "only {} bad configs in the corpus",
        files.len()
    );
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(files.len().div_ceil(8))
            .map(|chunk| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for file in chunk {
                        if let Err(failure) = check_bad_config(file) {
                            failures.push(format!("{}: {failure}", file.display()));
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} bad configs misreported:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn check_bad_config(file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|err| err.to_string())?;
    let expected = expectation(file, &text);
    let output = check_config(file, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("panicked") {
        return Err(format!("panicked:\n{stderr}"));
    }
    if output.status.code() != Some(2) {
        return Err(format!(
            "exit code {:?}, expected 2:\n{stderr}",
            output.status.code()
        ));
    }
    if !stderr.starts_with(&format!("error: {} has ", file.display())) {
        return Err(format!("no `error: FILE has N problems` header:\n{stderr}"));
    }
    let problems = reported_problems(&stderr, file);
    if problems.is_empty() {
        return Err(format!("no problem lines:\n{stderr}"));
    }
    if expected.has_position
        && let Some(unplaced) = problems.iter().find(|p| p.position.is_none())
    {
        return Err(format!(
            "no FILE:LINE:COL for {:?}:\n{stderr}",
            unplaced.text
        ));
    }
    let verdicts: Vec<Result<(), String>> = problems
        .iter()
        .filter_map(|p| judge(&expected, &text, &p.text, p.position))
        .collect();
    if verdicts.iter().any(Result::is_ok) {
        return Ok(());
    }
    if verdicts.is_empty() {
        return Err(format!(
            "no problem at {:?} mentioning {:?}:\n{stderr}",
            expected.path, expected.message
        ));
    }
    let reasons: Vec<String> = verdicts.into_iter().filter_map(Result::err).collect();
    Err(format!("{}:\n{stderr}", reasons.join("; ")))
}

#[test]
fn bad_config_corpus_is_rejected_in_process() {
    let files = toml_files(&bad_config_dir());
    assert!(
        files.len() >= 45,
        "only {} bad configs in the corpus",
        files.len()
    );
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expected = expectation(file, &text);
        let Err(err) = rpod::app::load(file) else {
            panic!("{}: accepted", file.display());
        };
        assert_eq!(err.file, *file);
        let matching = err.problems.iter().find(|p| {
            p.path == expected.path
                && p.message.contains(&expected.message)
                && (p.position.is_some() || !expected.has_position)
        });
        assert!(
            matching.is_some(),
            "{}: no problem at {:?} mentioning {:?} with a position: {err}",
            file.display(),
            expected.path,
            expected.message
        );
        assert_eq!(
            err.problems.len(),
            1,
            "{}: one mistake, one problem: {err}",
            file.display()
        );
    }
}

const MANY_PROBLEMS: &str = r#"[daemon]
listen = "nope"
max_concurrent_operations = 0
timezone = "Mars/Olympus"

[storage.local]
kind = "directory"
path = ""

[[targets]]
name = "etc"
kind = "command"
command = []
storage = "offsite"

[targets.policy]
rpo = "2d"
expiry = "1d"
keep_last = 0

[[targets]]
name = "etc"
kind = "command"
command = ["tar", "-cf", "-", "/home"]
storage = "local"
artifact_name = "{target}.tar"
"#;

/// Key path and the line (1-based) of `MANY_PROBLEMS` each problem must point at.
const MANY_PROBLEM_PATHS: [(&str, usize); 10] = [
    ("daemon.listen", 2),
    ("daemon.max_concurrent_operations", 3),
    ("daemon.timezone", 4),
    ("storage.local.path", 8),
    ("targets[0].command", 13),
    ("targets[0].storage", 14),
    ("targets[0].policy.rpo", 17),
    ("targets[0].policy.keep_last", 19),
    ("targets[1].name", 22),
    ("targets[1].artifact_name", 26),
];

#[test]
fn independent_problems_are_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rpod.toml");
    std::fs::write(&file, MANY_PROBLEMS).unwrap();

    let output = check_config(&file, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let count = MANY_PROBLEM_PATHS.len();
    assert!(
        stderr.starts_with(&format!("error: {} has {count} problems:", file.display())),
        "{stderr}"
    );
    let problems = reported_problems(&stderr, &file);
    assert_eq!(problems.len(), count, "{stderr}");
    for (path, line) in MANY_PROBLEM_PATHS {
        let found: Vec<&Reported> = problems
            .iter()
            .filter(|p| p.text.starts_with(&format!("{path}: ")))
            .collect();
        assert_eq!(found.len(), 1, "{path} should be reported once:\n{stderr}");
        assert_eq!(
            found[0].position.map(|p| p.0),
            Some(line),
            "{path}:\n{stderr}"
        );
    }

    let err = Config::parse(MANY_PROBLEMS, Path::new("rpod.toml")).unwrap_err();
    let mut paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    paths.sort_unstable();
    let mut expected: Vec<&str> = MANY_PROBLEM_PATHS.iter().map(|(path, _)| *path).collect();
    expected.sort_unstable();
    assert_eq!(paths, expected, "{err}");
}

#[test]
fn malformed_storages_and_targets_are_reported_together() {
    let text = r#"[storage.local]
kind = "directory"
path = "/var/backups/rpod"
size = "1T"

[[targets]]
name = "etc"
kind = "command"
command = ["tar", "-cf", "-", "/etc"]
storage = "local"
colour = "blue"

[[targets]]
name = "home"
kind = "command"
command = ["tar", "-cf", "-", "/home"]
storage = "local"

[targets.policy]
keep_last = "48"

[[targets]]
name = "db"
kind = "database"
storage = "local"
"#;
    let err = Config::parse(text, Path::new("rpod.toml")).unwrap_err();
    let found: Vec<(&str, Option<usize>)> = err
        .problems
        .iter()
        .map(|p| (p.path.as_str(), p.position.map(|(line, _)| line)))
        .collect();
    assert_eq!(
        found,
        [
            ("storage.local.size", Some(4)),
            ("targets[0].colour", Some(11)),
            ("targets[1].policy.keep_last", Some(20)),
            ("targets[2].kind", Some(24)),
        ],
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// No input makes the parser panic.

/// splitmix64: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound).unwrap()).unwrap()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// TOML values of every type, and values that are valid TOML but wrong in interesting ways.
const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "4294967296",
    "9223372036854775807",
    "3.5",
    "nan",
    "-inf",
    "true",
    "false",
    "\"\"",
    "\"x\"",
    "\"0s\"",
    "\"1h\"",
    "\"999999999999999999d\"",
    "\"18446744073709551615s\"",
    "\"@hourly\"",
    "\"*/5 * * * *\"",
    "\"0 0 0 31 2 *\"",
    "\"Mars/Olympus\"",
    "\"Europe/Amsterdam\"",
    "\"{id}\"",
    "\"{utc:%\"",
    "\"../{id}\"",
    "\"é{target}/{utc:%Y}\"",
    "\"[::1]:0\"",
    "\"\\u0000\"",
    "[]",
    "[1, \"a\", true]",
    "[[]]",
    "[\"\"]",
    "{}",
    "{ kind = \"directory\" }",
    "{ a = { b = [1] } }",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "1979-05-27",
];

/// Lines that keep the text parseable but move keys and sections around.
const LINES: &[&str] = &[
    "[daemon]",
    "[defaults]",
    "[defaults.policy]",
    "[storage.local]",
    "[storage.other]",
    "[[targets]]",
    "[targets.policy]",
    "[targets.env]",
    "[[targets.secret_env]]",
    "[targets.encrypt]",
    "kind = \"command\"",
    "kind = \"directory\"",
    "name = \"docs\"",
    "storage = \"local\"",
    "command = [\"true\"]",
    "rpo = \"1m\"",
    "expiry = \"1m\"",
    "schedule = \"@daily\"",
    "timezone = \"America/New_York\"",
    "value_env = \"X\"",
    "value_file = \"x\"",
    "artifact_name = \"{target}/{id}\"",
];

/// Characters that stress parsers: quotes, brackets, escapes, control characters, non-ASCII of every width.
const CHARS: &[char] = &[
    '"',
    '\'',
    '[',
    ']',
    '{',
    '}',
    '=',
    ',',
    '.',
    '#',
    '\\',
    '\n',
    '\r',
    '\t',
    ' ',
    '\0',
    '\u{7f}',
    'é',
    '€',
    '\u{200b}',
    '\u{feff}',
    '\u{fffd}',
    '😀',
    '\u{10ffff}',
];

fn floor_boundary(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    match rng.below(8) {
        0 => {
            // Delete a byte range (at character boundaries, so the text stays a string).
            let start = floor_boundary(text, rng.below(text.len() + 1));
            let end = floor_boundary(text, start + rng.below(40) + 1);
            return format!("{}{}", &text[..start], &text[end..]);
        }
        1 if !lines.is_empty() => {
            let index = rng.below(lines.len());
            let line = lines[index].clone();
            lines.insert(index, line);
        }
        2 => {
            // Replace a value with one of another type.
            let candidates: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].contains(" = "))
                .collect();
            if !candidates.is_empty() {
                let index = *rng.pick(&candidates);
                let key = lines[index]
                    .split(" = ")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                lines[index] = format!("{key} = {}", rng.pick(VALUES));
            }
        }
        3 | 4 => {
            // Insert random characters, some chosen to hurt, some any scalar value.
            let mut at = floor_boundary(text, rng.below(text.len() + 1));
            let mut out = text.to_owned();
            for _ in 0..=rng.below(8) {
                let c = if rng.below(2) == 0 {
                    *rng.pick(CHARS)
                } else {
                    char::from_u32(u32::try_from(rng.below(0x11_0000)).unwrap())
                        .unwrap_or('\u{fffd}')
                };
                out.insert(at, c);
                at += c.len_utf8();
            }
            return out;
        }
        5 if !lines.is_empty() => {
            lines.remove(rng.below(lines.len()));
        }
        6 if lines.len() > 1 => {
            let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
            lines.swap(a, b);
        }
        _ => {
            let at = rng.below(lines.len() + 1);
            lines.insert(at, (*rng.pick(LINES)).to_owned());
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// A richer seed than the demo: every key of a command target, secrets, encryption, defaults.
const RICH: &str = r#"[daemon]
state_dir = "var"
listen = "127.0.0.1:0"
timezone = "Europe/Amsterdam"
max_concurrent_operations = 2
log_format = "json"
shutdown_timeout = "10s"
evaluation_interval = "5s"

[storage.local]
kind = "directory"
path = "var/backups"

[defaults.policy]
rpo = "6h"
expiry = "14d"
warn_before_expiry = "2d"
timezone = "UTC"
max_attempts = 3

[[targets]]
name = "etc"
kind = "command"
command = ["tar", "-cf", "-", "/etc"]
storage = "local"
env = { LANG = "C" }
clear_env = true
working_dir = "/"
artifact_name = "{target}/{utc:%Y/%m/%d}/{id}.tar.zst"

[targets.policy]
rpo = "1h"
rpo_lead = "5m"
schedule = "0 */4 * * *"
prune = true
keep_last = 48
retry_backoff = "1s"
retry_max_backoff = "1m"
operation_timeout = "2h"

[[targets.secret_env]]
name = "PGPASSWORD"
value_env = "RPOD_PG"

[[targets.secret_env]]
name = "TOKEN"
value_file = "/etc/rpod/token"

[[targets]]
name = "home"
kind = "command"
command = ["tar", "-cf", "-", "/home"]
storage = "local"
encrypt = { age_recipients_file = "/etc/rpod/recipients.txt" }
"#;

#[test]
fn mutated_configs_never_panic_the_parser() {
    let demo = std::fs::read_to_string(repo_root().join("config/demo.toml")).unwrap();
    Config::parse(RICH, Path::new("rich.toml")).expect("the rich seed is valid");
    let path = Path::new("mutated.toml");
    let mut rng = Rng(0x5EED_2026_C0F1_6000);
    let (mut accepted, mut rejected) = (0_u32, 0_u32);
    let mut panics = Vec::new();
    for iteration in 0..4000 {
        let seed = if iteration % 2 == 0 {
            demo.as_str()
        } else {
            RICH
        };
        let mut text = seed.to_owned();
        for _ in 0..=rng.below(3) {
            text = mutate(&text, &mut rng);
        }
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            Config::parse(&text, path).map_err(|err| {
                assert!(!err.problems.is_empty());
                err.to_string()
            })
        }));
        match result {
            Ok(Ok(_)) => accepted += 1,
            Ok(Err(_)) => rejected += 1,
            Err(_) => panics.push(text),
        }
        if panics.len() >= 5 {
            break;
        }
    }
    assert!(
        panics.is_empty(),
        "Config::parse panicked on:\n{}",
        panics.join("\n-----\n")
    );
    // The mutations reach both outcomes, so validation (not only the TOML parser) is exercised.
    assert!(
        accepted > 50 && rejected > 500,
        "accepted {accepted}, rejected {rejected}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Secrets.

const SECRET: &str = "rpod-test-secret-5dc1a7e2";

#[test]
fn secrets_never_appear_in_check_config_output() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("pg-password");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let target = format!(
        r#"[storage.local]
kind = "directory"
path = "{backups}"

[[targets]]
name = "db"
kind = "command"
command = ["pg_dump", "app"]
storage = "local"

[[targets.secret_env]]
name = "PGPASSWORD"
value_env = "RPOD_TEST_PG_PASSWORD"

[[targets.secret_env]]
name = "PG_SECRET"
value_file = "{secret}"
"#,
        backups = dir.path().join("backups").display(),
        secret = secret_file.display()
    );
    let cases = [
        ("valid", String::new(), 0, ": OK (1 target, 1 storage)"),
        (
            "other-error",
            "[daemon]\nlisten = \"nope\"\n\n".to_owned(),
            2,
            "daemon.listen",
        ),
        (
            "secret-entry-error",
            format!(
                "\n[[targets.secret_env]]\nname = \"TOKEN\"\nvalue_env = \"RPOD_TEST_PG_PASSWORD\"\nvalue_file = \"{}\"\n",
                secret_file.display()
            ),
            2,
            "targets[0].secret_env[2]",
        ),
    ];
    for (name, extra, code, reported) in cases {
        // The daemon section must come first; a secret_env entry must follow its target.
        let text = if extra.starts_with("[daemon]") {
            format!("{extra}{target}")
        } else {
            format!("{target}{extra}")
        };
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, &text).unwrap();
        let output = check_config(
            &file,
            &[("RPOD_TEST_PG_PASSWORD", SECRET), ("RPOD_LOG", "trace")],
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(code), "{name}: {all}");
        assert!(
            all.contains(reported),
            "{name}: {reported:?} is not in the output: {all}"
        );
        assert!(!all.contains(SECRET), "{name}: the secret leaked: {all}");

        match Config::parse(&text, &file) {
            Ok(config) => assert!(!format!("{config:?}").contains(SECRET), "{name}"),
            Err(err) => assert!(!format!("{err} {err:?}").contains(SECRET), "{name}"),
        }
    }
}
