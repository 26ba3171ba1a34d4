//! `azure_stack_infra` provider: the infrastructure backup of an Azure Stack Hub stamp, through the Backup admin
//! API of its administrator Resource Manager (docs/azure-stack.md). In `trigger` mode a backup is `createBackup`,
//! followed as a long-running operation to the stamp's `Backup` resource; the stamp runs one backup at a time, so
//! a backup waits while another one runs. The stamp's list says a backup is done some minutes before it is: only
//! rpod's own operation, or a listing that has said so for `settle`, counts. Every failure the stamp reports is
//! one of five classes, each with its remedy. Nothing on the share is ever deleted by rpod: the stamp keeps its
//! backups for its location's retention.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::arm::{follow_for, followed, get_json, list_all, provider_error, start_following};
use super::interface::{
    BackupOutcome, BackupRequest, BuildProvider, BuildSite, CheckProblem, CheckReport,
    ExternalPoint, Health, Provider, ProviderError, ShareReading,
};
use crate::azure::lro::{FollowError, Handle, Pattern};
use crate::azure::{ArmClient, ArmError};
use crate::config::{AzureStackInfraSpec, Problem, StackMode};
use crate::storage::Storage;

/// What one backup takes on the share when no backup of the stamp says otherwise (the documentation's ~10 GB).
pub const DOCUMENTED_BACKUP_BYTES: u64 = 10 * 1024 * 1024 * 1024;

/// The class of every failure of the stamp that is not about its share.
const BACKUP_FAULT: (&str, &str) = (
    "BackupFault",
    "the stamp's backup failed: read the stamp's infrastructure backup alerts and logs; if it persists, open a \
     support case",
);

/// The classes of a stamp's backup failures, modelled on the stamp's own five backup alerts; the error code of
/// a failed backup is one of them, and its message begins with the remedy.
const CLASSES: [(&str, &str); 5] = [
    (
        "ShareOutOfCapacity",
        "the backup share is full: free space on it or grow it, or lower the stamp's backup retention so that it \
         deletes older backups",
    ),
    (
        "ShareAuthenticationFailed",
        "the stamp cannot sign in to the backup share: update the share's user name and password in the stamp's \
         backup settings (the account may be locked or its password expired)",
    ),
    (
        "SharePathNotFound",
        "the backup path does not exist: check the path in the stamp's backup settings (\\\\server\\share\\folder) \
         and that the folder exists",
    ),
    (
        "ShareUnreachable",
        "the stamp cannot reach the backup share: check that the file server is up and reachable from the stamp \
         (network, DNS, firewall for SMB on port 445)",
    ),
    BACKUP_FAULT,
];

/// The class of a failure the stamp reported, by its code and message.
fn classify(code: &str, message: &str) -> (&'static str, &'static str) {
    let text = format!("{code} {message}").to_ascii_lowercase();
    let index = if ["capacity", "space", "disk full", "quota"]
        .iter()
        .any(|w| text.contains(w))
    {
        0
    } else if [
        "authentication",
        "credential",
        "logon",
        "access denied",
        "password",
    ]
    .iter()
    .any(|w| text.contains(w))
    {
        1
    } else if text.contains("path") {
        2
    } else if ["unreachable", "reach", "network", "connect"]
        .iter()
        .any(|w| text.contains(w))
    {
        3
    } else {
        4
    };
    CLASSES[index]
}

/// A failure the stamp reported, as a provider error of its class.
fn stamp_failure(code: &str, message: &str, accepted_at: Option<DateTime<Utc>>) -> ProviderError {
    class_failure(classify(code, message), code, message, accepted_at)
}

/// A failure of class `(class, remedy)`: the remedy first, then what the stamp said.
fn class_failure(
    (class, remedy): (&'static str, &'static str),
    code: &str,
    message: &str,
    accepted_at: Option<DateTime<Utc>>,
) -> ProviderError {
    let mut error = ProviderError::permanent(
        class,
        format!("{remedy} (the stamp said {code}: {message})"),
    );
    error.recovery_point = accepted_at;
    error
}

/// `availableCapacity` as the stamp writes it (`"29.6 TB"`, `"60 GB"`), in bytes (1024-based units).
#[must_use]
pub fn parse_capacity(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number: f64 = text[..split].trim().parse().ok()?;
    let unit = text[split..].trim().to_ascii_uppercase();
    let power = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        "P" => 5,
        _ => return None,
    };
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some((number * 1024f64.powi(power)).round() as u64)
}

fn time(value: Option<&Value>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value?.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The backup location's settings, as far as rpod reads them.
#[derive(Debug, Clone, Default)]
struct Location {
    retention_days: Option<i64>,
    thumbprint: Option<String>,
    scheduler_enabled: Option<bool>,
    available: Option<u64>,
    capacity_text: Option<String>,
    frequency_hours: Option<i64>,
}

impl Location {
    fn read(value: &Value) -> Self {
        let store = value.pointer("/properties/externalStoreDefault");
        let field = |key: &str| store.and_then(|s| s.get(key));
        let capacity_text = field("availableCapacity")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Self {
            retention_days: field("backupRetentionPeriodInDays").and_then(Value::as_i64),
            thumbprint: field("encryptionCertThumbprint")
                .and_then(Value::as_str)
                .filter(|t| !t.trim().is_empty())
                .map(str::to_owned),
            scheduler_enabled: field("isBackupSchedulerEnabled").and_then(Value::as_bool),
            available: capacity_text.as_deref().and_then(parse_capacity),
            capacity_text,
            frequency_hours: field("backupFrequencyInHours").and_then(Value::as_i64),
        }
    }

    fn retention(&self) -> Result<TimeDelta, ProviderError> {
        self.retention_days
            .filter(|days| *days > 0)
            .map(TimeDelta::days)
            .ok_or_else(|| {
                ProviderError::transient(
                    "InvalidResponse",
                    "the backup location does not say how long it keeps backups (backupRetentionPeriodInDays)",
                )
            })
    }
}

/// One backup as the stamp describes it.
#[derive(Debug, Clone)]
struct StackBackup {
    name: String,
    status: String,
    created: Option<DateTime<Utc>>,
    time_taken: Option<String>,
    failed_roles: Vec<String>,
    thumbprint: Option<String>,
}

impl StackBackup {
    fn read(value: &Value) -> Option<Self> {
        let info = value.pointer("/properties/backupInfo")?;
        // `name` is "{location}/{id}".
        let name = value.get("name")?.as_str()?.rsplit('/').next()?.to_owned();
        Some(Self {
            name,
            status: info
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            created: time(info.get("createdDateTime")),
            time_taken: info
                .get("timeTakenToCreate")
                .and_then(Value::as_str)
                .map(str::to_owned),
            failed_roles: info
                .get("roleStatus")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|r| {
                    r.get("status")
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.eq_ignore_ascii_case("Failed"))
                })
                .filter_map(|r| r.get("roleName").and_then(Value::as_str).map(str::to_owned))
                .collect(),
            thumbprint: info
                .get("encryptionCertThumbprint")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    fn running(&self) -> bool {
        ["Creating", "Queued", "Running"]
            .iter()
            .any(|s| self.status.eq_ignore_ascii_case(s))
    }

    fn restorable(&self) -> bool {
        self.status.eq_ignore_ascii_case("Succeeded")
            || self.status.eq_ignore_ascii_case("PartialSucceeded")
    }
}

/// What rpod records with a stamp backup (`backups.content`).
#[derive(Debug, Serialize)]
struct Content<'a> {
    backup: &'a str,
    status: &'a str,
    time_taken: Option<&'a str>,
    encryption_cert_thumbprint: Option<&'a str>,
    warnings: &'a [String],
}

/// Backs up, or watches, one stamp's infrastructure.
#[derive(Debug)]
pub struct AzureStackInfraProvider {
    spec: AzureStackInfraSpec,
    arm: ArmClient,
    location_url: String,
    /// When each backup was first seen listed as done, for `settle`.
    first_done: Mutex<HashMap<String, DateTime<Utc>>>,
    /// The certificate last seen on the location, and when it was first seen there.
    certificate: Mutex<Option<(String, DateTime<Utc>)>>,
    /// What the share lost across rpod's recent backups.
    sizes: Mutex<Vec<u64>>,
}

impl BuildProvider for AzureStackInfraSpec {
    fn build_provider(&self, site: &BuildSite<'_>) -> Result<Option<Arc<dyn Provider>>, Problem> {
        let Some(arm) = site.profile_arm else {
            return Ok(None);
        };
        match arm {
            Ok(arm) => {
                let endpoint = site
                    .config
                    .azure_profiles
                    .get(&self.azure_profile)
                    .map(|p| p.resource_manager_endpoint.clone())
                    .unwrap_or_default();
                Ok(Some(Arc::new(AzureStackInfraProvider::new(
                    self.clone(),
                    arm.clone(),
                    &endpoint,
                ))))
            }
            Err(message) => Err(Problem::at(
                format!("azure.profiles.{}", self.azure_profile),
                message.clone(),
            )),
        }
    }
}

impl AzureStackInfraProvider {
    /// A provider for `spec` through `arm` at the stamp's administrator `endpoint`.
    #[must_use]
    pub fn new(spec: AzureStackInfraSpec, arm: ArmClient, endpoint: &str) -> Self {
        let location_url = format!("{endpoint}{}", spec.location_path());
        Self {
            spec,
            arm,
            location_url,
            first_done: Mutex::new(HashMap::new()),
            certificate: Mutex::new(None),
            sizes: Mutex::new(Vec::new()),
        }
    }

    fn with_version(&self, url: &str) -> String {
        let join = if url.contains('?') { '&' } else { '?' };
        format!("{url}{join}api-version={}", self.spec.api_version)
    }

    async fn location(&self) -> Result<Location, ArmError> {
        let url = self.with_version(&self.location_url);
        get_json(
            &self.arm,
            "stack_location",
            &self.spec.subscription_id,
            &url,
        )
        .await
        .map(|value| Location::read(&value))
    }

    /// Every backup the stamp lists, following `nextLink`.
    async fn backups(&self) -> Result<Vec<StackBackup>, ArmError> {
        let url = self.with_version(&format!("{}/backups", self.location_url));
        list_all(
            &self.arm,
            "stack_backups",
            &self.spec.subscription_id,
            url,
            StackBackup::read,
        )
        .await
    }

    /// The remedy for a scheduler in the wrong state for the mode, if it is.
    fn scheduler_problem(&self, location: &Location) -> Option<String> {
        match (self.spec.mode, location.scheduler_enabled) {
            (StackMode::Trigger, Some(true)) => Some(format!(
                "the stamp's own backup scheduler is on (every {} h) while rpod triggers its backups (mode = \
                 \"trigger\"): turn it off in the administrator portal (Infrastructure backup, Disable automatic \
                 backups), or let the stamp own the cadence with mode = \"watch\"",
                location.frequency_hours.unwrap_or(0)
            )),
            (StackMode::Watch, Some(false)) => Some(
                "the stamp's own backup scheduler is off and rpod only watches (mode = \"watch\"): nothing backs \
                 the stamp up; turn it on in the administrator portal (Infrastructure backup, Enable automatic \
                 backups), or let rpod trigger with mode = \"trigger\""
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// Refuses a backup of a location without an encryption certificate, saying what to do.
    fn certificate_set(location: &Location) -> Result<(), ProviderError> {
        if location.thumbprint.is_some() {
            return Ok(());
        }
        Err(ProviderError::permanent(
            "BackupFault",
            "the backup location has no encryption certificate, so the stamp cannot encrypt a backup: upload the \
             certificate's public key (.CER) in the stamp's backup settings, and keep its .PFX safe for recovery",
        ))
    }

    /// Waits until no backup runs on the stamp (it runs one at a time), or the request ends.
    async fn wait_for_running(&self, request: &BackupRequest) -> Result<(), ProviderError> {
        let mut told = false;
        loop {
            let backups = self
                .backups()
                .await
                .map_err(|err| provider_error(&err, None))?;
            let Some(running) = backups.iter().find(|b| b.running()) else {
                return Ok(());
            };
            if !told {
                info!(
                    target = %request.target, backup = %running.name,
                    "The stamp is running a backup already (it runs one at a time); waiting for it to end."
                );
                told = true;
            }
            self.pause(request).await?;
        }
    }

    async fn pause(&self, request: &BackupRequest) -> Result<(), ProviderError> {
        let wait = self.arm.wait_for(None);
        let left = (request.deadline_at - request.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return Err(ProviderError::timed_out(
                "the stamp was still running another backup at the deadline",
            ));
        }
        let until = request.clock.now() + crate::policy::delta(wait.min(left));
        tokio::select! {
            () = request.clock.sleep_until(until) => Ok(()),
            () = request.cancel.cancelled() => Err(ProviderError::cancelled("stopped while waiting for the stamp's running backup")),
        }
    }

    /// Follows an accepted `createBackup` to its end; returns the stamp's `Backup` resource.
    async fn follow(
        &self,
        request: &BackupRequest,
        handle: Handle,
        accepted_at: DateTime<Utc>,
    ) -> Result<StackBackup, ProviderError> {
        let ended = follow_for(&self.arm, &self.spec.subscription_id, request, handle).await;
        let response = match ended {
            Ok(response) => response,
            // A failure the stamp reported on the operation is one of its backup failures.
            Err(FollowError::Failed(err)) if err.status.is_some_and(|s| s != 401 && s != 403) => {
                let with_id = match &err.request_id {
                    Some(id) => format!("{} (request id {id})", err.message),
                    None => err.message.clone(),
                };
                return Err(stamp_failure(&err.code, &with_id, Some(accepted_at)));
            }
            Err(err) => return Err(followed(err, accepted_at)),
        };
        if let Some(backup) = serde_json::from_slice::<Value>(&response.body)
            .ok()
            .as_ref()
            .and_then(StackBackup::read)
        {
            return Ok(backup);
        }
        // The operation ended without the resource: the newest backup since it was accepted is its.
        let backups = self
            .backups()
            .await
            .map_err(|err| provider_error(&err, Some(accepted_at)))?;
        backups
            .into_iter()
            .filter(|b| b.created.is_some_and(|c| c >= accepted_at - TimeDelta::minutes(5)))
            .max_by_key(|b| b.created)
            .ok_or_else(|| {
                let mut error = ProviderError::permanent(
                    "BackupFault",
                    "the backup operation ended without naming its backup, and the stamp lists none since: read \
                     the stamp's infrastructure backup alerts",
                );
                error.recovery_point = Some(accepted_at);
                error
            })
    }

    /// Starts a backup, or takes the one an earlier rpod started; returns its `Backup` resource.
    async fn run(
        &self,
        request: &BackupRequest,
    ) -> Result<(DateTime<Utc>, StackBackup, Option<Location>), ProviderError> {
        if let Some(resume) = &request.resume {
            let handle = Handle::from_json(&resume.handle)
                .map_err(|message| ProviderError::permanent("InvalidOperation", message))?;
            let backup = self.follow(request, handle, resume.accepted_at).await?;
            return Ok((resume.accepted_at, backup, None));
        }
        let before = self
            .location()
            .await
            .map_err(|err| provider_error(&err, None))?;
        Self::certificate_set(&before)?;
        let url = self.with_version(&format!("{}/createBackup", self.location_url));
        let body = json!({});
        loop {
            self.wait_for_running(request).await?;
            let sent = tokio::select! {
                sent = self.arm.send("stack_create_backup", &self.spec.subscription_id, Method::POST, &url, Some(&body)) => sent,
                () = request.cancel.cancelled() => return Err(ProviderError::cancelled("stopped before the stamp accepted the backup")),
            };
            let response = match sent {
                Ok(response) => response,
                // Another backup began between the listing and the request: wait for it too.
                Err(err) if err.status == Some(409) => {
                    self.pause(request).await?;
                    continue;
                }
                Err(err) if err.status.is_some_and(|s| s == 400) => {
                    return Err(stamp_failure(&err.code, &err.message, None));
                }
                Err(err) => return Err(provider_error(&err, None)),
            };
            let accepted_at = request.clock.now();
            info!(
                target = %request.target, backup_id = request.backup_id, region = %self.spec.region,
                request_id = response.request_id.as_deref().unwrap_or("-"), "The stamp accepted the backup."
            );
            if response.status == 200 && !response.body.is_empty() {
                let backup = serde_json::from_slice::<Value>(&response.body)
                    .ok()
                    .as_ref()
                    .and_then(StackBackup::read)
                    .ok_or_else(|| {
                        ProviderError::transient(
                            "InvalidResponse",
                            "the stamp answered a backup rpod cannot read",
                        )
                    })?;
                return Ok((accepted_at, backup, Some(before)));
            }
            let handle = start_following(
                &self.arm,
                request.journal.as_ref(),
                &response,
                &[Pattern::Location, Pattern::AsyncOperation],
                accepted_at,
                &body.to_string(),
                "backup",
            )
            .await?;
            let backup = self.follow(request, handle, accepted_at).await?;
            return Ok((accepted_at, backup, Some(before)));
        }
    }

    /// When the location's certificate was last seen to change: the creation of the oldest backup taken with
    /// the current certificate after one taken with another, or the moment rpod saw the location's certificate
    /// differ from its newest backup's.
    fn certificate_changed_at(
        &self,
        location: &Location,
        backups: &[StackBackup],
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let current = location.thumbprint.clone()?;
        let mut dated: Vec<&StackBackup> = backups
            .iter()
            .filter(|b| b.created.is_some() && b.thumbprint.is_some())
            .collect();
        dated.sort_by_key(|b| b.created);
        let mut seen = self
            .certificate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.as_ref() {
            Some((last, _)) if *last != current => {
                warn!(
                    region = %self.spec.region, from = %last, to = %current,
                    "The stamp's backup encryption certificate changed: backups taken before need the old .PFX to recover."
                );
                *seen = Some((current.clone(), now));
            }
            None => {
                // First look since start: a change shows in the backups' certificates, or between the newest
                // backup's and the location's.
                let newest_differs = dated
                    .last()
                    .is_some_and(|b| b.thumbprint.as_deref() != Some(current.as_str()));
                let since = if newest_differs {
                    Some(now)
                } else {
                    dated
                        .windows(2)
                        .rev()
                        .find(|pair| pair[0].thumbprint != pair[1].thumbprint)
                        .and_then(|pair| pair[1].created)
                };
                *seen = Some((current.clone(), since.unwrap_or(DateTime::<Utc>::MIN_UTC)));
            }
            Some(_) => {}
        }
        seen.as_ref()
            .map(|(_, at)| *at)
            .filter(|at| *at != DateTime::<Utc>::MIN_UTC)
    }
}

#[async_trait::async_trait]
impl Provider for AzureStackInfraProvider {
    fn kind(&self) -> &'static str {
        "azure_stack_infra"
    }

    fn starts_backups(&self) -> bool {
        self.spec.mode == StackMode::Trigger
    }

    fn busy_key(&self) -> Option<String> {
        Some(self.location_url.to_ascii_lowercase())
    }

    async fn check(&self, _storage: &Arc<dyn Storage>) -> CheckReport {
        let mut report = CheckReport::default();
        match self.location().await {
            Ok(location) => {
                report.found = Some(format!(
                    "backup location {} ({} free, kept {} days, scheduler {})",
                    self.spec.region,
                    location.capacity_text.as_deref().unwrap_or("unknown space"),
                    location.retention_days.unwrap_or(0),
                    match location.scheduler_enabled {
                        Some(true) => "on",
                        Some(false) => "off",
                        None => "unknown",
                    }
                ));
                if let Some(problem) = self.scheduler_problem(&location) {
                    report.problems.push(CheckProblem::Refused(problem));
                }
                if let Err(err) = Self::certificate_set(&location) {
                    report.problems.push(CheckProblem::Refused(err.message));
                }
            }
            Err(err) if err.status == Some(403) => report.problems.push(CheckProblem::Refused(format!(
                "rpod may not read backup location {} ({}): give its identity the Operator role on the \
                 default provider subscription",
                self.spec.region, err.message
            ))),
            Err(err) => report.problems.push(CheckProblem::Unreachable(format!(
                "cannot read backup location {} at the stamp's administrator endpoint: {err}",
                self.spec.region
            ))),
        }
        report
    }

    async fn health(&self) -> Option<Result<Health, ProviderError>> {
        let location = match self.location().await {
            Ok(location) => location,
            Err(err) => return Some(Err(provider_error(&err, None))),
        };
        let backups = match self.backups().await {
            Ok(backups) => backups,
            Err(err) => return Some(Err(provider_error(&err, None))),
        };
        let now = Utc::now();
        let mut problems: Vec<String> = self.scheduler_problem(&location).into_iter().collect();
        if let Err(err) = Self::certificate_set(&location) {
            problems.push(err.message);
        }
        let per_backup = self.recent_backup_size().unwrap_or(DOCUMENTED_BACKUP_BYTES);
        let fit = location
            .available
            .map(|available| available / per_backup.max(1));
        if fit.is_some_and(|fit| fit < 2) {
            problems.push(format!(
                "the backup share has room for {} more backup(s) ({} free)",
                fit.unwrap_or(0),
                location.capacity_text.as_deref().unwrap_or("?")
            ));
        }
        Some(Ok(Health {
            healthy: problems.is_empty(),
            detail: if problems.is_empty() {
                format!(
                    "backup location {}: {} free, kept {} days",
                    self.spec.region,
                    location.capacity_text.as_deref().unwrap_or("unknown space"),
                    location.retention_days.unwrap_or(0)
                )
            } else {
                problems.join("; ")
            },
            share: Some(ShareReading {
                available_bytes: location.available,
                backups_that_fit: fit,
                encryption_cert_changed_at: self.certificate_changed_at(&location, &backups, now),
            }),
        }))
    }

    async fn recovery_points(&self) -> Option<Result<Vec<ExternalPoint>, ProviderError>> {
        let listed = async {
            let location = self.location().await?;
            let backups = self.backups().await?;
            Ok::<_, ArmError>((location, backups))
        };
        let (location, backups) = match listed.await {
            Ok(listed) => listed,
            Err(err) => return Some(Err(provider_error(&err, None))),
        };
        let retention = match location.retention() {
            Ok(retention) => retention,
            Err(err) => return Some(Err(err)),
        };
        let now = Utc::now();
        let settle = crate::policy::delta(self.spec.settle);
        let mut first_done = self
            .first_done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        first_done.retain(|name, _| backups.iter().any(|b| &b.name == name));
        let points = backups
            .iter()
            .filter(|b| b.restorable())
            .filter_map(|b| {
                let created = b.created?;
                let seen = *first_done.entry(b.name.clone()).or_insert(now);
                Some(ExternalPoint {
                    name: b.name.clone(),
                    recovery_point: created,
                    expires_at: Some(created + retention),
                    size: None,
                    // The stamp lists a backup as done before it is: it counts once it has been listed so for
                    // `settle` (a backup rpod's own operation followed is recorded when the operation ends).
                    pending: seen + settle > now,
                })
            })
            .collect();
        Some(Ok(points))
    }

    async fn backup(&self, request: BackupRequest) -> Result<BackupOutcome, ProviderError> {
        if self.spec.mode == StackMode::Watch {
            return Err(ProviderError::permanent(
                "WatchOnly",
                "mode = \"watch\": the stamp's own scheduler backs it up; rpod never starts a backup",
            ));
        }
        let (accepted_at, backup, before) = self.run(&request).await?;
        // A backup the stamp ended as failed is a general fault, whatever its roles are called (a role's name is
        // not a description of the failure).
        let failed = |message: String| {
            class_failure(BACKUP_FAULT, "BackupFailed", &message, Some(accepted_at))
        };
        let warnings: Vec<String> = if backup.status.eq_ignore_ascii_case("Succeeded") {
            Vec::new()
        } else if backup.status.eq_ignore_ascii_case("PartialSucceeded") {
            backup
                .failed_roles
                .iter()
                .map(|role| format!("role {role} failed to back up"))
                .collect()
        } else if backup.status.eq_ignore_ascii_case("Failed") {
            return Err(failed(format!(
                "backup {} failed; roles that failed: {}",
                backup.name,
                if backup.failed_roles.is_empty() {
                    "none named".to_owned()
                } else {
                    backup.failed_roles.join(", ")
                }
            )));
        } else {
            return Err(failed(format!(
                "backup {} ended with status {:?}",
                backup.name, backup.status
            )));
        };
        let created = backup.created.ok_or_else(|| {
            let mut error = ProviderError::permanent(
                "InvalidResponse",
                format!("backup {} has no createdDateTime", backup.name),
            );
            error.recovery_point = Some(accepted_at);
            error
        })?;
        let after = self
            .location()
            .await
            .map_err(|err| provider_error(&err, Some(accepted_at)))?;
        let retention = after.retention().map_err(|mut err| {
            err.recovery_point = Some(accepted_at);
            err
        })?;
        // The space the backup took: what the share lost meanwhile, when it shrank.
        let size_bytes = match (before.and_then(|b| b.available), after.available) {
            (Some(before), Some(after)) if before > after => Some(before - after),
            _ => None,
        };
        if let Some(size) = size_bytes {
            self.measured(size);
        }
        if !warnings.is_empty() {
            warn!(target = %request.target, backup = %backup.name, "The stamp's backup partly succeeded: {}.", warnings.join("; "));
        }
        let thumbprint = backup.thumbprint.clone().or(after.thumbprint.clone());
        let content = serde_json::to_string(&Content {
            backup: &backup.name,
            status: &backup.status,
            time_taken: backup.time_taken.as_deref(),
            encryption_cert_thumbprint: thumbprint.as_deref(),
            warnings: &warnings,
        })
        .ok();
        info!(
            target = %request.target, backup = %backup.name, created = %created,
            time_taken = backup.time_taken.as_deref().unwrap_or("-"), "The stamp's backup ended."
        );
        Ok(BackupOutcome {
            recovery_point: created,
            artifact: backup.name,
            size_bytes,
            sha256: None,
            sku: None,
            etag: None,
            expires_at: Some(created + retention),
            content,
        })
    }
}

impl AzureStackInfraProvider {
    /// The size of the stamp's recent backups, when rpod measured one since it started (the share's loss across
    /// a backup; the `Backup` resource carries no size): the largest of the last five.
    fn recent_backup_size(&self) -> Option<u64> {
        self.sizes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .max()
    }

    fn measured(&self, size: u64) {
        let mut sizes = self
            .sizes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sizes.push(size);
        if sizes.len() > 5 {
            sizes.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_as_the_stamp_writes_them() {
        assert_eq!(parse_capacity("60 GB"), Some(60 * 1024 * 1024 * 1024));
        assert_eq!(
            parse_capacity("29.6 TB"),
            Some(32_545_544_182_170),
            "29.6 TiB, rounded to the byte"
        );
        assert_eq!(parse_capacity("512 MB"), Some(512 * 1024 * 1024));
        assert_eq!(parse_capacity("0 B"), Some(0));
        assert_eq!(parse_capacity("lots"), None);
        assert_eq!(parse_capacity("12 XB"), None);
        assert_eq!(parse_capacity("-1 GB"), None);
    }

    #[test]
    fn every_failure_is_one_of_the_five_classes() {
        let class = |code, message| classify(code, message).0;
        assert_eq!(
            class(
                "ExternalStoreOutOfCapacity",
                "The external storage location has exceeded its capacity."
            ),
            "ShareOutOfCapacity"
        );
        assert_eq!(
            class(
                "ExternalStoreUnreachable",
                "The external storage location could not be reached."
            ),
            "ShareUnreachable"
        );
        assert_eq!(
            class(
                "ExternalStorePathNotFound",
                "The external storage location path could not be found."
            ),
            "SharePathNotFound"
        );
        assert_eq!(
            class(
                "ExternalStoreAuthenticationFailed",
                "The credentials for the external storage location are not valid."
            ),
            "ShareAuthenticationFailed"
        );
        assert_eq!(
            class("BackupFault", "Backup failed due to an internal error."),
            "BackupFault"
        );
        assert_eq!(class("Whatever", "something odd"), "BackupFault");
        assert_eq!(
            class(
                "EncryptionCertificateNotFound",
                "An encryption certificate must be set on the backup location before a backup can be taken."
            ),
            "BackupFault",
            "a missing certificate is not a missing path"
        );
    }
}
