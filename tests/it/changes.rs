//! Change-driven backups of API Management (docs/design.md, "Change-driven backups"), end to end: the daemon polls the emulator's sync state
//! and service resource, or takes Event Grid deliveries on its webhook, and backs up after changes with the
//! debounce rules exact. Blobs land in a real Azurite.
//!
//! Waiting is on observable progress (records, the emulator's request log), never on fixed sleeps; where a test
//! proves that nothing happens, it waits for the detector to poll across the whole window in which it would
//! have acted.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rpod::record::{BackupRecord, Status};
use serde_json::{Value, json};

use crate::cloud::{Cloud, RG, SUB, target};
use crate::support::{TestApp, eventually};

pub(crate) const SECRET: &str = "webhook-secret-7f3a9c";
const POLL: Duration = Duration::from_millis(200);

/// `rpo = 1h` (the first backup is the watchdog's, then only changes trigger) and `on_change` as given.
pub(crate) fn policy(on_change: &str) -> String {
    format!("rpo = \"1h\"\non_change = {{ {on_change} }}")
}

fn polled(quiet: &str, max_delay: &str, min_interval: &str) -> String {
    policy(&format!(
        "detect = \"sync_state\", poll_interval = \"200ms\", quiet_period = \"{quiet}\", \
         max_delay = \"{max_delay}\", min_interval = \"{min_interval}\""
    ))
}

pub(crate) fn webhook_section(listen: bool) -> String {
    let listen = if listen {
        "listen = \"127.0.0.1:9\"\n"
    } else {
        ""
    };
    format!("[webhook]\n{listen}secret_file = \"{{dir}}/webhook-secret\"\n")
}

async fn spawn(cloud: &Cloud, body: &str) -> TestApp {
    let config = cloud.config("managed_identity", body);
    let (key_name, key) = cloud.key_file();
    crate::support::spawn_app_in(
        &config,
        &[
            (key_name, key.as_slice()),
            ("webhook-secret", SECRET.as_bytes()),
        ],
        cloud.environment(),
        rpod::clock::Clock::system(),
    )
    .await
}

/// The target's finished records, once there are `count` of them, oldest first.
async fn finished(app: &TestApp, target: &str, count: usize) -> Vec<BackupRecord> {
    eventually(Duration::from_secs(40), "finished backups", || async {
        let records: Vec<BackupRecord> = app
            .records(target)
            .await
            .into_iter()
            .filter(|r| r.status != Status::Running)
            .collect();
        (records.len() >= count).then_some(records)
    })
    .await
}

fn sync_state_polls(cloud: &Cloud, service: &str) -> usize {
    let needle = format!("/service/{service}/tenant/configuration/syncstate");
    cloud
        .emulator
        .requests()
        .iter()
        .filter(|r| r.path().to_ascii_lowercase().contains(&needle))
        .count()
}

/// Waits until the detector has polled `service` for at least `window` more (in poll intervals).
async fn polls_span(cloud: &Cloud, service: &str, window: Duration) {
    let start = sync_state_polls(cloud, service);
    let polls = usize::try_from(window.as_millis() / POLL.as_millis()).unwrap() + 2;
    eventually(
        window * 4 + Duration::from_secs(10),
        "sync state polls",
        || async { (sync_state_polls(cloud, service) >= start + polls).then_some(()) },
    )
    .await;
}

fn backup_posts(cloud: &Cloud, service: &str) -> usize {
    cloud.backup_posts(service).len()
}

fn change_backups(records: &[BackupRecord]) -> Vec<&BackupRecord> {
    records.iter().filter(|r| r.trigger == "change").collect()
}

fn ms(delta: TimeDelta) -> i64 {
    delta.num_milliseconds()
}

fn make_change(cloud: &Cloud, service: &str) -> DateTime<Utc> {
    let at = Utc::now();
    cloud.emulator.make_change(SUB, RG, service);
    at
}

pub(crate) fn resource(service: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/{service}"
    )
}

/// A real-shaped Event Grid event for an API edited in `service`.
pub(crate) fn api_updated(service: &str) -> Value {
    json!({
        "id": format!("{:032x}", rand::random::<u128>()),
        "topic": resource(service),
        "subject": "/apis/echo-api;Rev=1",
        "data": { "resourceUri": format!("{}/apis/echo-api;Rev=1", resource(service)) },
        "eventType": "Microsoft.ApiManagement.APIUpdated",
        "dataVersion": "1",
        "metadataVersion": "1",
        "eventTime": Utc::now().to_rfc3339(),
    })
}

async fn deliver(app: &TestApp, base: &str, events: &Value) {
    let response = app
        .http
        .post(format!("{base}/hooks/eventgrid?code={SECRET}"))
        .header("aeg-event-type", "Notification")
        .json(events)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// The first backup (the watchdog's, no backup exists) has succeeded and the detector has seen the state after
/// it.
async fn settled(cloud: &Cloud, app: &TestApp, target: &str, service: &str) -> BackupRecord {
    let first = finished(app, target, 1).await.remove(0);
    assert_eq!(first.status, Status::Succeeded, "{first:?}");
    assert_eq!(first.trigger, "rpo");
    polls_span(cloud, service, POLL * 2).await;
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_leads_to_one_backup_after_the_quiet_period_and_not_to_a_loop() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.service("apim-a");
    let app = spawn(&cloud, &target("a", "apim-a", &polled("1s", "10s", "0s"))).await;
    settled(&cloud, &app, "a", "apim-a").await;
    let before = cloud
        .emulator
        .service(SUB, RG, "apim-a")
        .unwrap()
        .configuration_change_date;

    let changed = make_change(&cloud, "apim-a");
    let change_date = cloud
        .emulator
        .service(SUB, RG, "apim-a")
        .unwrap()
        .configuration_change_date;
    assert!(change_date > before);
    let records = finished(&app, "a", 2).await;
    let backup = records[1].clone();
    assert_eq!(backup.trigger, "change");
    assert_eq!(backup.status, Status::Succeeded, "{backup:?}");
    let waited = ms(backup.requested_at - changed);
    assert!(
        (1000..4000).contains(&waited),
        "started {waited} ms after the change; the quiet period is 1 s"
    );
    let first_change = backup.first_change_at.expect("first change time recorded");
    assert!(
        ms(first_change - change_date).abs() <= 1,
        "first change {first_change} is the service's configurationChangeDate {change_date}"
    );

    // The backup moved the service's etag and lastModifiedAt (an ARM action); polling across twice the quiet
    // period after it must not find a change in that.
    // Each poll reads the service before the sync state: a change between the two reads is then seen as one
    // change, not as an etag move followed by a date move a poll later.
    let reads: Vec<&str> = cloud
        .emulator
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .filter_map(|r| {
            let path = r.path().to_ascii_lowercase();
            if path.ends_with("/service/apim-a") {
                Some("service")
            } else if path.ends_with("/service/apim-a/tenant/configuration/syncstate") {
                Some("sync_state")
            } else {
                None
            }
        })
        .collect();
    assert!(reads.len() >= 4, "{reads:?}");
    // One more read of the service than of the sync state: the pre-flight check at start.
    let services = reads.iter().filter(|r| **r == "service").count();
    let syncs = reads.iter().filter(|r| **r == "sync_state").count();
    assert!(services == syncs + 1 || services == syncs + 2, "{reads:?}");
    for (i, read) in reads.iter().enumerate() {
        if *read == "sync_state" {
            assert!(i > 0 && reads[i - 1] == "service", "{reads:?}");
        }
    }

    let posts = backup_posts(&cloud, "apim-a");
    polls_span(&cloud, "apim-a", Duration::from_secs(2)).await;
    assert_eq!(
        backup_posts(&cloud, "apim-a"),
        posts,
        "no backup without a change"
    );
    assert_eq!(app.records("a").await.len(), 2);
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value(
            "rpod_change_events_total",
            &[("target", "a"), ("source", "sync_state")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value(
            "rpod_backups_total",
            &[
                ("target", "a"),
                ("trigger", "change"),
                ("outcome", "succeeded")
            ]
        ),
        1.0
    );
    assert_eq!(
        metrics.value("rpod_change_poll_errors_total", &[("target", "a")]),
        0.0
    );
    let view = app.get_json("/api/v1/targets").await;
    assert_eq!(view[0]["change_detection"], json!(["sync_state"]));
    assert_eq!(
        view[0]["change_pending_since"],
        Value::Null,
        "the change is backed up"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_changes_in_quick_succession_lead_to_one_backup() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.service("apim-b");
    let app = spawn(
        &cloud,
        &target("b", "apim-b", &polled("1500ms", "20s", "0s")),
    )
    .await;
    settled(&cloud, &app, "b", "apim-b").await;

    let first = make_change(&cloud, "apim-b");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        make_change(&cloud, "apim-b");
    }
    // While the quiet period runs, the API says since when a change awaits its backup.
    let pending = eventually(Duration::from_secs(5), "a pending change", || async {
        let view = app.get_json("/api/v1/targets").await;
        view[0]["change_pending_since"].as_str().map(str::to_owned)
    })
    .await;
    let pending: DateTime<Utc> = pending.parse().unwrap();
    assert!(
        pending >= first,
        "{pending} is after the first change {first}"
    );
    let records = finished(&app, "b", 2).await;
    assert_eq!(records[1].trigger, "change");
    assert!(
        ms(records[1].requested_at - first) >= 1500 + 4 * 150 - 250,
        "the quiet period counts from the last change"
    );
    polls_span(&cloud, "apim-b", Duration::from_secs(3)).await;
    let records = app.records("b").await;
    assert_eq!(
        change_backups(&records).len(),
        1,
        "one backup for the burst: {records:#?}"
    );
    let seen = app.metrics().await.value(
        "rpod_change_events_total",
        &[("target", "b"), ("source", "sync_state")],
    );
    assert!(seen >= 2.0, "the burst spanned several polls: {seen}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_changes_still_produce_a_backup_by_max_delay() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.service("apim-c");
    let app = spawn(
        &cloud,
        &target("c", "apim-c", &polled("1s", "2500ms", "0s")),
    )
    .await;
    settled(&cloud, &app, "c", "apim-c").await;

    // A change every 200 ms for 6 s: the quiet period never ends.
    let first = make_change(&cloud, "apim-c");
    let mut last = first;
    while Utc::now() - first < TimeDelta::seconds(6) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = make_change(&cloud, "apim-c");
    }
    let records = finished(&app, "c", 2).await;
    let backup = change_backups(&records)[0];
    let after = ms(backup.requested_at - first);
    assert!(
        (2400..4500).contains(&after),
        "started {after} ms after the first change; max_delay is 2.5 s"
    );
    assert!(
        backup.requested_at < last,
        "it started while changes were still being made"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_interval_spaces_change_backups_from_the_previous_backup() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.service("apim-d");
    let app = spawn(&cloud, &target("d", "apim-d", &polled("300ms", "1s", "4s"))).await;
    let initial = settled(&cloud, &app, "d", "apim-d").await;

    make_change(&cloud, "apim-d");
    let records = finished(&app, "d", 2).await;
    assert_eq!(records[1].trigger, "change");
    let gap = ms(records[1].requested_at - initial.requested_at);
    assert!(
        (4000..6000).contains(&gap),
        "{gap} ms after the previous backup started; min_interval is 4 s (and wins over max_delay 1 s)"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_during_a_backup_leads_to_exactly_one_follow_up() {
    let cloud = Cloud::fast(Duration::from_millis(2500)).await;
    cloud.service("apim-e");
    let app = spawn(&cloud, &target("e", "apim-e", &polled("300ms", "5s", "0s"))).await;
    settled(&cloud, &app, "e", "apim-e").await;

    make_change(&cloud, "apim-e");
    // The change backup is accepted and running: change the service twice while it runs.
    eventually(
        Duration::from_secs(20),
        "the change backup running",
        || async {
            let records = app.records("e").await;
            (records.len() == 2
                && records[1].status == Status::Running
                && backup_posts(&cloud, "apim-e") == 2)
                .then_some(())
        },
    )
    .await;
    make_change(&cloud, "apim-e");
    tokio::time::sleep(Duration::from_millis(300)).await;
    make_change(&cloud, "apim-e");

    let records = finished(&app, "e", 3).await;
    let (during, follow_up) = (&records[1], &records[2]);
    assert_eq!(during.status, Status::Succeeded);
    assert_eq!(follow_up.trigger, "change");
    assert!(
        follow_up.requested_at >= during.completed_at.unwrap(),
        "the follow-up starts after the running backup ends"
    );
    // No change during the follow-up: nothing after it.
    let follow_up = finished(&app, "e", 3).await.remove(2);
    assert_eq!(follow_up.status, Status::Succeeded);
    polls_span(&cloud, "apim-e", Duration::from_secs(2)).await;
    let records = app.records("e").await;
    assert_eq!(
        change_backups(&records).len(),
        2,
        "exactly one follow-up: {records:#?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_backups_are_not_changes_with_both_detectors() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.service("apim-f");
    let body = format!(
        "{}{}",
        webhook_section(false),
        target(
            "f",
            "apim-f",
            &policy(
                "detect = [\"sync_state\", \"event_grid\"], poll_interval = \"200ms\", quiet_period = \"500ms\", \
                 max_delay = \"5s\", min_interval = \"0s\""
            )
        )
    );
    let app = spawn(&cloud, &body).await;
    settled(&cloud, &app, "f", "apim-f").await;

    deliver(&app, &app.url(""), &json!([api_updated("apim-f")])).await;
    let records = finished(&app, "f", 2).await;
    assert_eq!(records[1].trigger, "change");
    assert!(records[1].first_change_at.is_some());
    polls_span(&cloud, "apim-f", Duration::from_secs(2)).await;
    assert_eq!(app.records("f").await.len(), 2, "no loop");
    let metrics = app.metrics().await;
    let count = |source| {
        metrics.value(
            "rpod_change_events_total",
            &[("target", "f"), ("source", source)],
        )
    };
    assert_eq!(count("event_grid"), 1.0);
    assert_eq!(
        count("sync_state"),
        0.0,
        "the backups moved the etag and lastModifiedAt; rpod did not take that for a change"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_grid_deliveries_back_up_the_services_they_name() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.service("apim-g1");
    cloud.service("apim-g2");
    let event_grid = policy(
        "detect = \"event_grid\", quiet_period = \"300ms\", max_delay = \"5s\", min_interval = \"0s\"",
    );
    let body = format!(
        "{}{}{}",
        webhook_section(true),
        target("g1", "apim-g1", &event_grid),
        target("g2", "apim-g2", &event_grid)
    );
    let app = spawn(&cloud, &body).await;
    let hook = format!("http://{}", app.webhook_address.expect("own listener"));
    finished(&app, "g1", 1).await;
    finished(&app, "g2", 1).await;
    // The webhook has its own listener: the main one does not serve it.
    let main = app
        .http
        .post(app.url(&format!("/hooks/eventgrid?code={SECRET}")))
        .json(&json!([api_updated("apim-g1")]))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), 404);

    // One APIUpdated for g1 (the topic's case differs from the configuration's: ARM paths are
    // case-insensitive).
    let mut event = api_updated("APIM-G1");
    event["topic"] = json!(resource("APIM-G1").to_ascii_uppercase());
    deliver(&app, &hook, &json!([event])).await;
    let g1 = finished(&app, "g1", 2).await;
    assert_eq!(g1[1].trigger, "change");
    assert_eq!(app.records("g2").await.len(), 1, "g2 did not change");

    // A batch naming both, plus a service rpod does not protect.
    deliver(
        &app,
        &hook,
        &json!([
            api_updated("apim-g1"),
            api_updated("apim-g2"),
            api_updated("someone-elses")
        ]),
    )
    .await;
    assert_eq!(finished(&app, "g1", 3).await[2].trigger, "change");
    assert_eq!(finished(&app, "g2", 2).await[1].trigger, "change");
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value(
            "rpod_webhook_events_ignored_total",
            &[("reason", "unknown_service")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value(
            "rpod_change_events_total",
            &[("target", "g2"), ("source", "event_grid")]
        ),
        1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watermark_survives_restarts() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.service("apim-h");
    let app = spawn(&cloud, &target("h", "apim-h", &polled("500ms", "5s", "0s"))).await;
    settled(&cloud, &app, "h", "apim-h").await;
    make_change(&cloud, "apim-h");
    assert_eq!(finished(&app, "h", 2).await[1].trigger, "change");
    polls_span(&cloud, "apim-h", POLL * 2).await;

    // Restarted: the change is already backed up.
    let app = app.restart(cloud.environment()).await;
    polls_span(&cloud, "apim-h", Duration::from_secs(2)).await;
    assert_eq!(
        app.records("h").await.len(),
        2,
        "no backup for a change already backed up"
    );

    // Down while the service changes: seen once at the first poll after the start.
    let dir = app.stop().await;
    let changed = make_change(&cloud, "apim-h");
    let config_path = dir.path().join("rpod.toml");
    let app = crate::support::start_in(
        dir,
        config_path,
        cloud.environment(),
        rpod::clock::Clock::system(),
    )
    .await;
    let records = finished(&app, "h", 3).await;
    assert_eq!(records[2].trigger, "change");
    let first_change = records[2].first_change_at.unwrap();
    assert!(
        ms(first_change - changed).abs() < 1000,
        "the recorded change time is the service's ({first_change} vs {changed})"
    );
    polls_span(&cloud, "apim-h", Duration::from_secs(2)).await;
    assert_eq!(app.records("h").await.len(), 3, "detected once");
    assert_eq!(
        app.metrics().await.value(
            "rpod_change_events_total",
            &[("target", "h"), ("source", "sync_state")]
        ),
        1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rereads_the_webhook_secret_and_the_targets_it_serves() {
    use nix::sys::signal::Signal;

    use crate::support::{DaemonProcess, rewrite_config, write_config};

    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.service("apim-r1");
    cloud.service("apim-r2");
    let event_grid = policy(
        "detect = \"event_grid\", quiet_period = \"300ms\", max_delay = \"5s\", min_interval = \"0s\"",
    );
    let body = |targets: &str| {
        cloud.config(
            "managed_identity",
            &format!("{}{targets}", webhook_section(false)),
        )
    };
    let one = target("r1", "apim-r1", &event_grid);
    let (dir, path) = write_config(&body(&one));
    std::fs::write(dir.path().join("key"), cloud.azurite.key()).unwrap();
    std::fs::write(dir.path().join("webhook-secret"), "old-secret").unwrap();
    let daemon = DaemonProcess::start_with_env(&path, &cloud.identity_env());
    let http = reqwest::Client::new();
    let deliver = |secret: &'static str, service: &'static str| {
        let request = http
            .post(daemon.url(&format!("/hooks/eventgrid?code={secret}")))
            .json(&json!([api_updated(service)]));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, answer) = deliver("old-secret", "apim-r2").await;
    assert_eq!(status, 200);
    assert_eq!(answer["changes"], 0, "r2 is not configured yet: {answer}");

    // A new secret and a second target, then SIGHUP.
    std::fs::write(dir.path().join("webhook-secret"), "new-secret").unwrap();
    rewrite_config(
        &path,
        dir.path(),
        &body(&format!("{one}{}", target("r2", "apim-r2", &event_grid))),
    );
    daemon.signal(Signal::SIGHUP);
    eventually(Duration::from_secs(10), "the new secret", || async {
        (deliver("new-secret", "apim-r2").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(deliver("old-secret", "apim-r2").await.0, 401);
    let (_, answer) = deliver("new-secret", "apim-r2").await;
    assert_eq!(
        answer["changes"], 1,
        "r2 is served after the reload: {answer}"
    );
    eventually(
        Duration::from_secs(30),
        "r2 backed up after its change",
        || async {
            crate::support::records_in(&dir.path().join("state"), "r2")
                .await
                .into_iter()
                .find(|r| r.trigger == "change" && r.status == Status::Succeeded)
        },
    )
    .await;
}
