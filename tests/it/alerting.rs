//! Prometheus alerting, proven with the real tools (Debian's `prometheus` package; scripts/tools.d/prometheus.sh
//! installs it): the shipped rules pass `promtool check rules` and their unit tests, rpod's live /metrics passes
//! `promtool check metrics`, every metric the rules and the Grafana dashboard name is one rpod exports, and a
//! real Prometheus scraping a running rpod fires the RPO-breach alert when backups start failing and resolves it
//! when they recover.
//!
//! The rules file is read line by line (the test suite has no YAML parser): the checks below rely on the layout
//! of deploy/prometheus/rpod-alerts.yml, one `- alert:` item per rule with its keys indented under it.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::cloud::{Cloud, target};
use crate::helpers::{printed, repo_root, run_tool};
use crate::support::{TestApp, command_config, command_target, eventually, spawn_app};

const RULES: &str = "deploy/prometheus/rpod-alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/rpod-alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/rpod-dashboard.json";
const OPERATIONS: &str = "docs/operations.md";
const RUNBOOK_BASE: &str = "https://github.com/rpod-project/rpod/blob/main/docs/operations.md";

/// The alerts rpod ships (docs/operations.md, "Alerts and runbooks").
const ALERTS: [&str; 14] = [
    "RpodRpoBreached",
    "RpodBackupsFailing",
    "RpodNoRestorableBackup",
    "RpodBackupExpiringSoon",
    "RpodNotEvaluating",
    "RpodDown",
    "RpodAbsent",
    "RpodStorageUnavailable",
    "RpodArmThrottled",
    "RpodStandbyStale",
    "RpodRestoreDrillFailing",
    "RpodRestoreDrillStale",
    "RpodRtoExceeded",
    "RpodBackupShareFilling",
];

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_root().join(relative))
        .unwrap_or_else(|err| panic!("{relative}: {err}"))
}

fn missing_tool(tool: &str, err: &std::io::Error) -> ! {
    panic!("cannot run {tool} ({err}): install it with scripts/tools.d/prometheus.sh")
}

/// Runs promtool from the repository root, with `stdin` as its standard input.
fn promtool(args: &[&str], stdin: &str) -> Output {
    run_tool("promtool", args, stdin, "prometheus.sh")
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The value of `key` in `lines`: inline, or the more-indented lines after it for a block scalar (`|`, `>-`).
fn field(lines: &[&str], key: &str) -> Option<String> {
    let prefix = format!("{key}:");
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with(&prefix))?;
    let line = lines[at];
    let value = line.trim_start()[prefix.len()..].trim();
    if !value.starts_with('|') && !value.starts_with('>') {
        return Some(value.trim_matches('"').to_owned());
    }
    let body: Vec<&str> = lines[at + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
        .map(|l| l.trim())
        .collect();
    Some(body.join("\n").trim().to_owned())
}

/// One alerting rule of the rules file, as written.
struct Rule {
    name: String,
    expr: String,
    lines: Vec<String>,
}

impl Rule {
    fn get(&self, key: &str) -> Option<String> {
        let lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        field(&lines, key)
    }
}

fn rules() -> Vec<Rule> {
    let text = read(RULES);
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("- alert:"))
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(lines.len());
            let block = &lines[start..end];
            let name = block[0].trim_start()["- alert:".len()..].trim().to_owned();
            let expr = field(block, "expr").unwrap_or_else(|| panic!("{name} has no expr"));
            Rule {
                name,
                expr,
                lines: block.iter().map(|l| (*l).to_owned()).collect(),
            }
        })
        .collect()
}

/// Every metric name starting with `rpod_` in a `PromQL` expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(offset) = expr[from..].find("rpod_") {
        let start = from + offset;
        let end = expr[start..]
            .find(|c: char| !ident(c))
            .map_or(expr.len(), |len| start + len);
        if !expr[..start].ends_with(ident) {
            names.insert(expr[start..end].to_owned());
        }
        from = end;
    }
    names
}

/// The metric names an exposition offers: family names (`# TYPE`) and sample names (histograms' `_bucket`,
/// `_sum` and `_count` included).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|line| {
            if let Some(family) = line.strip_prefix("# TYPE ") {
                family.split_whitespace().next()
            } else if line.starts_with('#') || line.is_empty() {
                None
            } else {
                line.split(['{', ' ']).next()
            }
        })
        .map(str::to_owned)
        .collect()
}

/// Every `PromQL` expression of a Grafana dashboard: panel targets, and template variable queries.
fn dashboard_expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", Value::String(expr)) => {
                        out.push(expr.clone());
                    }
                    _ => dashboard_expressions(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_expressions(v, out)),
        _ => {}
    }
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|err| panic!("{DASHBOARD}: {err}"))
}

/// GitHub's anchor for a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn the_shipped_rules_pass_promtool_check_and_their_unit_tests() {
    let check = promtool(&["check", "rules", RULES], "");
    assert!(
        check.status.success(),
        "promtool check rules: {}",
        printed(&check)
    );
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "{text}"
    );

    let tests = promtool(&["test", "rules", RULE_TESTS], "");
    assert!(
        tests.status.success(),
        "promtool test rules: {}",
        printed(&tests)
    );
    assert!(
        String::from_utf8_lossy(&tests.stdout).contains("SUCCESS"),
        "{}",
        printed(&tests)
    );
}

#[test]
fn every_alert_has_severity_annotations_a_runbook_and_unit_tests_both_ways() {
    let rules = rules();
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ALERTS, "the shipped alerts, in this order");

    let operations = read(OPERATIONS);
    let (_, runbooks) = operations
        .split_once("\n## Alerts and runbooks\n")
        .expect("docs/operations.md has the section \"## Alerts and runbooks\"");
    let runbooks = runbooks.split("\n## ").next().unwrap();
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(anchor)
        .collect();
    let unit_tests = read(RULE_TESTS);
    let unit_lines: Vec<&str> = unit_tests.lines().map(str::trim).collect();

    for rule in &rules {
        let name = &rule.name;
        let severity = rule.get("severity").unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity.as_str()),
            "{name}: severity {severity:?}"
        );
        assert!(rule.get("for").is_some(), "{name} has a for: duration");
        let summary = rule.get("summary").unwrap_or_default();
        let description = rule.get("description").unwrap_or_default();
        assert!(!summary.is_empty() && !description.is_empty(), "{name}");
        if rule.expr.contains("rpod_target_") {
            for text in [&summary, &description] {
                assert!(
                    text.contains("{{ $labels.target }}"),
                    "{name} names the target: {text}"
                );
            }
        }
        let runbook = rule.get("runbook_url").unwrap_or_default();
        let fragment = name.to_lowercase();
        assert_eq!(runbook, format!("{RUNBOOK_BASE}#{fragment}"), "{name}");
        assert!(
            anchors.contains(&fragment),
            "docs/operations.md has a runbook \"### {name}\" under \"## Alerts and runbooks\" (have {anchors:?})"
        );

        // promtool test cases: `alertname: X` followed by `exp_alerts: []` (silent) or `exp_alerts:` (fires).
        let cases: Vec<&str> = unit_lines
            .windows(2)
            .filter(|w| w[0] == format!("alertname: {name}"))
            .map(|w| w[1])
            .collect();
        assert!(
            cases.contains(&"exp_alerts: []"),
            "{name} has a unit test where it stays silent"
        );
        assert!(
            cases.contains(&"exp_alerts:"),
            "{name} has a unit test where it fires"
        );
    }
}

/// rpod with `command` targets into a directory, an API Management target (with change detection) against the
/// Azure emulator and an Azure Stack Hub stamp behind its test CA, once every target has completed a backup:
/// every metric family has its series.
async fn exercised_metrics() -> String {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    let mut stamp_config = azure_emulator::EmulatorConfig::fast();
    stamp_config.tls = true;
    stamp_config.stack_backup_duration = Duration::from_millis(200);
    let stamp = azure_emulator::Emulator::start(stamp_config).await.unwrap();
    stamp.add_backup_location(azure_emulator::BackupLocationSpec::new(
        crate::cloud::SUB,
        "System.local",
        "local",
    ));
    let stamp_target = format!(
        "\n[azure.profiles.stamp]\nresource_manager_endpoint = \"{}\"\ncredential = \"client_secret\"\n\
         tenant_id = \"adfs\"\nclient_id = \"rpod-backup\"\nclient_secret_file = \"{{dir}}/stamp-secret\"\n\
         ca_file = \"{{dir}}/stamp-ca.pem\"\nmin_retry_after = \"1s\"\nmax_retry_after = \"1s\"\n\
         [[targets]]\nname = \"stamp\"\nkind = \"azure_stack_infra\"\nazure_profile = \"stamp\"\n\
         region = \"local\"\nsubscription_id = \"{}\"\n[targets.policy]\nrpo = \"1h\"\n",
        stamp.base_url(),
        crate::cloud::SUB
    );
    cloud.service("svc-alerting");
    cloud.service("svc-alerting-standby");
    let apim = target(
        "apim",
        "svc-alerting",
        "rpo = \"1h\"\non_change = { detect = \"sync_state\", poll_interval = \"200ms\" }",
    )
    .replace(
        "[targets.policy]",
        "[[targets.restore_into]]\nname = \"standby\"\nservice = \"svc-alerting-standby\"\n\
         [targets.standby]\ninto = \"standby\"\nrpo = \"1h\"\n[targets.policy]",
    );
    let config = cloud.config(
        "managed_identity",
        &format!(
            "{}{apim}{stamp_target}",
            command_config(
                "",
                &[
                    command_target("etc", &["echo", "etc"])
                        .key("verify_command = [\"cat\"]")
                        .key("[targets.drill]\nschedule = \"*/2 * * * * *\"")
                        .policy("rpo = \"1h\"\nrto = \"1h\""),
                    command_target("db", &["sh", "-c", "echo db"])
                        .policy("rpo = \"2h\"\nschedule = \"0 3 * * *\""),
                ],
            )
        ),
    );
    let (key_name, key) = cloud.key_file();
    let ca = stamp.ca_pem().unwrap();
    let app = crate::support::spawn_app_in(
        &config,
        &[
            (key_name, key.as_slice()),
            ("stamp-ca.pem", ca.as_bytes()),
            ("stamp-secret", b"stamp-secret".as_slice()),
        ],
        cloud.environment(),
        rpod::clock::Clock::system(),
    )
    .await;
    let text = eventually(
        Duration::from_secs(40),
        "a completed backup of every target, a drill, a standby restore and Azure Resource Manager requests",
        || async {
            let text = app.metrics().await.text;
            let done = ["apim", "etc", "db", "stamp"].iter().all(|t| {
                text.contains(&format!(
                    "rpod_backups_total{{outcome=\"succeeded\",target=\"{t}\",trigger=\"rpo\"}} 1"
                )) && text.contains(&format!(
                    "rpod_backup_duration_seconds_count{{target=\"{t}\"}}"
                ))
            });
            let drilled = text.contains("rpod_restore_drill_duration_seconds{target=\"etc\"}")
                && text.contains("rpod_restore_duration_seconds_count{target=\"apim\"}");
            let share = text.contains("rpod_target_backups_that_fit{target=\"stamp\"}");
            (done && drilled && share && text.contains("rpod_arm_requests_total{")).then_some(text)
        },
    )
    .await;
    app.stop().await;
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promtool_check_metrics_is_clean_on_a_live_scrape() {
    let text = exercised_metrics().await;
    let output = promtool(&["check", "metrics"], &text);
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {}\non\n{text}",
        printed(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_in_the_rules_and_the_dashboard_is_one_rpod_exports() {
    let exported = exported_names(&exercised_metrics().await);

    let mut referenced: Vec<(String, String)> = Vec::new();
    for rule in rules() {
        referenced.extend(
            metric_names(&rule.expr)
                .into_iter()
                .map(|m| (format!("rule {}", rule.name), m)),
        );
    }
    let mut expressions = Vec::new();
    dashboard_expressions(&dashboard(), &mut expressions);
    assert!(!expressions.is_empty());
    for expr in &expressions {
        referenced.extend(
            metric_names(expr)
                .into_iter()
                .map(|m| (format!("dashboard {expr}"), m)),
        );
    }
    assert!(referenced.len() > 20, "{referenced:?}");
    let unknown: Vec<&(String, String)> = referenced
        .iter()
        .filter(|(_, metric)| !exported.contains(metric))
        .collect();
    assert!(
        unknown.is_empty(),
        "metrics rpod does not export: {unknown:#?}\nexported: {exported:#?}"
    );
}

#[test]
fn the_dashboard_parses_and_shows_what_operators_need() {
    let dashboard = dashboard();
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("template variable {name}"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    let targets = variable("target");
    assert_eq!(targets["type"], "query");
    assert!(
        targets["definition"] == "label_values(rpod_target_info, target)",
        "{targets}"
    );

    let all = panels(&dashboard);
    for panel in &all {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "every panel has a title: {panel}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{title} uses the datasource variable"
        );
        let queries = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!queries.is_empty(), "{title} has queries");
        for query in queries {
            assert!(
                query["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{title}: {query}"
            );
        }
    }

    let mut expressions = Vec::new();
    dashboard_expressions(&dashboard, &mut expressions);
    let used: BTreeSet<String> = expressions.iter().flat_map(|e| metric_names(e)).collect();
    for metric in [
        "rpod_target_rpo_compliant",
        "rpod_target_last_success_timestamp_seconds",
        "rpod_target_rpo_seconds",
        "rpod_target_restorable_until_timestamp_seconds",
        "rpod_backup_duration_seconds_bucket",
        "rpod_backups_total",
        "rpod_arm_throttled_total",
        "rpod_arm_requests_total",
        "rpod_change_events_total",
    ] {
        assert!(used.contains(metric), "the dashboard shows {metric}");
    }
}

/// A Prometheus server child process on a loopback port, with its data in a temp dir; killed on drop.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    dir: TempDir,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    /// Starts Prometheus scraping `rpod` every second in job `rpod`, evaluating `rules` every second. Tries
    /// another port if the chosen one was taken meanwhile.
    async fn start(rules: &str, rpod: SocketAddr) -> Self {
        for _ in 0..3 {
            let mut prometheus = Self::launch(rules, rpod);
            if prometheus.ready().await {
                return prometheus;
            }
            eprintln!(
                "Prometheus did not start on {}:\n{}",
                prometheus.address,
                prometheus.log()
            );
        }
        panic!("Prometheus did not start");
    }

    fn launch(rules: &str, rpod: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules_path = dir.path().join("rules.yml");
        std::fs::write(&rules_path, rules).unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: rpod\n    static_configs:\n      - targets: ['{rpod}']\n",
                rules = rules_path.display()
            ),
        )
        .unwrap();
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| missing_tool("prometheus", &err));
        Self {
            child,
            address,
            dir,
            http: reqwest::Client::new(),
        }
    }

    /// Waits for /-/ready; false if the process exits first.
    async fn ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            let ready = self
                .http
                .get(self.url("/-/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Prometheus was not ready within 20 s:\n{}", self.log());
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The `data` of an API answer.
    async fn api(&self, path: &str) -> Value {
        let body: Value = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], "success", "{path}: {body}");
        body["data"].clone()
    }

    /// An instant query's result; the query must be valid `PromQL`.
    async fn query(&self, expr: &str) -> Value {
        let body: Value = self
            .http
            .get(
                url::Url::parse_with_params(&self.url("/api/v1/query"), [("query", expr)]).unwrap(),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"]["result"].clone()
    }

    /// Pending and firing alerts.
    async fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts").await["alerts"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn alert_rules(&self) -> Vec<Value> {
        self.api("/api/v1/rules?type=alert").await["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect()
    }
}

/// The state of `alertname` for `target`: `inactive` when Prometheus lists no such alert.
fn state_of(alerts: &[Value], alertname: &str, target: &str) -> String {
    alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == alertname && a["labels"]["target"] == target)
        .map_or_else(
            || "inactive".to_owned(),
            |a| a["state"].as_str().unwrap().to_owned(),
        )
}

/// Polls Prometheus's alerts until `alertname` for `target` is in state `want`, returning every state seen on
/// the way (consecutive repeats folded). No alert may ever name `quiet`.
async fn wait_for_state(
    prometheus: &Prometheus,
    alertname: &str,
    target: &str,
    want: &str,
    quiet: &str,
    limit: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let alerts = prometheus.alerts().await;
        assert!(
            !alerts.iter().any(|a| a["labels"]["target"] == quiet),
            "no alert for the healthy target {quiet}: {alerts:#?}"
        );
        let state = state_of(&alerts, alertname, target);
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if state == want {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{alertname} for {target} not {want} within {limit:?}; states seen {seen:?}; alerts {alerts:#?}\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shipped rules with every `for:` shortened to `duration`, so a test sees pending and firing in seconds.
fn rules_with_for(duration: &str) -> String {
    let text = read(RULES);
    let mut shortened = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("for:") {
                shortened += 1;
                format!("{}for: {duration}", " ".repeat(indent(line)))
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_eq!(shortened, ALERTS.len(), "every rule has a for:");
    lines.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_fires_the_rpo_breach_when_backups_fail_and_resolves_it_on_recovery() {
    // "etc" has a 5 s RPO, is backed up 3 s after each backup, and fails while the file `fail` exists; after a
    // failure rpod tries again 500 ms later. "steady" never fails and must never alert.
    let app: TestApp = spawn_app(&command_config(
        "",
        &[
            command_target("etc", &["sh", "-c", "test ! -e {dir}/fail && echo etc"]).policy(
                "rpo = \"5s\"\nrpo_lead = \"2s\"\nmax_attempts = 1\nretry_backoff = \"500ms\"\n\
                 retry_max_backoff = \"500ms\"",
            ),
            command_target("steady", &["echo", "steady"]).policy("rpo = \"1h\""),
        ],
    ))
    .await;
    eventually(Duration::from_secs(10), "etc compliant", || async {
        let compliant = app
            .metrics()
            .await
            .get("rpod_target_rpo_compliant", &[("target", "etc")]);
        (compliant == Some(1.0)).then_some(())
    })
    .await;

    let prometheus = Prometheus::start(&rules_with_for("3s"), app.address).await;
    // Prometheus has scraped rpod with etc compliant, and has evaluated every rule, without errors.
    eventually(
        Duration::from_secs(15),
        "etc scraped as compliant",
        || async {
            let result = prometheus
                .query(r#"rpod_target_rpo_compliant{job="rpod",target="etc"}"#)
                .await;
            (result[0]["value"][1] == "1").then_some(())
        },
    )
    .await;
    let rules = eventually(Duration::from_secs(15), "every rule evaluated", || async {
        let rules = prometheus.alert_rules().await;
        rules
            .iter()
            .all(|r| r["health"] != "unknown")
            .then_some(rules)
    })
    .await;
    assert_eq!(rules.len(), ALERTS.len(), "{rules:#?}");
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule:#}");
    }
    let alerts = prometheus.alerts().await;
    assert_eq!(
        state_of(&alerts, "RpodRpoBreached", "etc"),
        "inactive",
        "{alerts:#?}"
    );
    // Every dashboard query is valid PromQL for this Prometheus, with Grafana's variables filled in
    // (label_values() is Grafana's own).
    let mut expressions = Vec::new();
    dashboard_expressions(&dashboard(), &mut expressions);
    for expr in expressions
        .iter()
        .filter(|e| e.contains("rpod_") && !e.starts_with("label_values("))
    {
        let expr = expr
            .replace("$target", ".*")
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h");
        prometheus.query(&expr).await;
    }

    std::fs::write(app.path("fail"), b"").unwrap();
    let seen = wait_for_state(
        &prometheus,
        "RpodRpoBreached",
        "etc",
        "firing",
        "steady",
        Duration::from_secs(25),
    )
    .await;
    assert_eq!(seen, ["inactive", "pending", "firing"]);
    let alerts = prometheus.alerts().await;
    let breach = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "RpodRpoBreached")
        .unwrap();
    assert_eq!(breach["labels"]["severity"], "critical");
    assert_eq!(breach["labels"]["job"], "rpod");
    assert_eq!(
        breach["annotations"]["summary"], "RPO breached for target etc",
        "{breach:#}"
    );
    assert_eq!(
        breach["annotations"]["runbook_url"],
        format!("{RUNBOOK_BASE}#rpodrpobreached")
    );
    // The failures themselves alert too.
    wait_for_state(
        &prometheus,
        "RpodBackupsFailing",
        "etc",
        "firing",
        "steady",
        Duration::from_secs(10),
    )
    .await;

    std::fs::remove_file(app.path("fail")).unwrap();
    for alertname in ["RpodRpoBreached", "RpodBackupsFailing"] {
        wait_for_state(
            &prometheus,
            alertname,
            "etc",
            "inactive",
            "steady",
            Duration::from_secs(10),
        )
        .await;
    }
    let rules = prometheus.alert_rules().await;
    let breach = rules
        .iter()
        .find(|r| r["name"] == "RpodRpoBreached")
        .unwrap();
    assert_eq!(breach["state"], "inactive", "resolved: {breach:#}");
    drop(prometheus);
    app.stop().await;
}
