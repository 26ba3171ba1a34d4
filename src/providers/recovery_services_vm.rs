//! `recovery_services_vm` provider: on-demand backups of an Azure VM protected by Azure Backup in a Recovery
//! Services vault (docs/azure-vm.md). The POST answers `202` with `Azure-AsyncOperation`; the operation's status
//! names a job; the job is followed to a terminal status; then the recovery point is found in the item's list with
//! the expiry the vault gives it. The vault's own policy backups are listed for reconciliation. Nothing in a vault
//! is ever deleted by rpod.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::arm::{follow_for, followed, get_json, list_all, provider_error, start_following};
use super::interface::{
    BackupOutcome, BackupRequest, BuildProvider, BuildSite, CheckProblem, CheckReport,
    ExternalPoint, Health, Provider, ProviderError,
};
use crate::azure::lro::{Handle, Pattern};
use crate::azure::{ArmClient, ArmError, ArmResponse};
use crate::config::{Problem, RecoveryServicesVmSpec};
use crate::storage::Storage;

/// Backs up one Azure VM on demand, into its vault.
#[derive(Debug)]
pub struct RecoveryServicesVmProvider {
    spec: RecoveryServicesVmSpec,
    arm: ArmClient,
    vault_url: String,
    item_url: String,
    /// The expiry asked for every on-demand recovery point (the policy's `expiry`).
    expiry: std::time::Duration,
    /// The target's RPO, which `check` holds against the vault's policy and the daily budget.
    rpo: std::time::Duration,
    endpoint: String,
}

impl BuildProvider for RecoveryServicesVmSpec {
    fn build_provider(&self, site: &BuildSite<'_>) -> Result<Option<Arc<dyn Provider>>, Problem> {
        let Some(arm) = site.arm else {
            return Ok(None);
        };
        match arm {
            Ok(arm) => Ok(Some(Arc::new(
                RecoveryServicesVmProvider::new(
                    self.clone(),
                    arm.clone(),
                    &site.config.azure.resource_manager_endpoint,
                    site.target.policy.expiry,
                )
                .with_rpo(site.target.policy.rpo),
            ))),
            Err(message) => Err(Problem::at("azure", message.clone())),
        }
    }
}

/// A time as the vault writes it: RFC 3339, or without a zone (UTC), or the unset `0001-01-01T00:00:00`.
fn vault_time(value: Option<&Value>) -> Option<DateTime<Utc>> {
    let text = value?.as_str()?;
    if text.starts_with("0001-01-01") {
        return None;
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// One recovery point as the vault lists it.
#[derive(Debug, Clone)]
struct VaultPoint {
    name: String,
    time: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    soft_deleted: bool,
}

impl VaultPoint {
    fn read(point: &Value) -> Option<Self> {
        let properties = point.get("properties")?;
        Some(Self {
            name: point.get("name")?.as_str()?.to_owned(),
            time: vault_time(properties.get("recoveryPointTime"))?,
            expires_at: vault_time(properties.pointer("/recoveryPointProperties/expiryTime")),
            soft_deleted: properties
                .pointer("/recoveryPointProperties/isSoftDeleted")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

impl RecoveryServicesVmProvider {
    /// A provider for `spec` through `arm` at `endpoint`, asking on-demand points to expire after `expiry`.
    #[must_use]
    pub fn new(
        spec: RecoveryServicesVmSpec,
        arm: ArmClient,
        endpoint: &str,
        expiry: std::time::Duration,
    ) -> Self {
        let vault_url = format!("{endpoint}{}", spec.vault_path());
        let item_url = format!("{endpoint}{}", spec.item_path());
        Self {
            spec,
            arm,
            vault_url,
            item_url,
            expiry,
            rpo: std::time::Duration::MAX,
            endpoint: endpoint.to_owned(),
        }
    }

    /// The target's RPO, for `check` to hold against the vault's policy.
    #[must_use]
    pub fn with_rpo(mut self, rpo: std::time::Duration) -> Self {
        self.rpo = rpo;
        self
    }

    /// Reads the item's backup policy and says whether the RPO can be kept with it and the daily budget: the
    /// on-demand backups a day the RPO needs on top of the policy's, the policy in words, its worst gap.
    async fn policy_needs(
        &self,
        item: &Value,
    ) -> Result<(u32, String, std::time::Duration), String> {
        let id = item
            .pointer("/properties/policyId")
            .and_then(Value::as_str)
            .ok_or("the item names no backup policy")?;
        let policy = self
            .get(
                "rsv_policy",
                &self.with_version(&format!("{}{id}", self.endpoint)),
            )
            .await
            .map_err(|err| err.to_string())?;
        let schedule = policy
            .pointer("/properties/schedulePolicy")
            .ok_or("the policy has no schedule")?;
        let day = std::time::Duration::from_hours(24);
        let hourly = schedule.get("hourlySchedule");
        let (words, gaps) = match hourly {
            Some(hourly) => {
                let interval = hourly.get("interval").and_then(Value::as_u64).unwrap_or(24);
                let window = hourly
                    .get("scheduleWindowDuration")
                    .and_then(Value::as_u64)
                    .unwrap_or(24);
                let runs = (window / interval.max(1)).clamp(1, 24);
                let interval = std::time::Duration::from_hours(interval);
                // The window's runs are `interval` apart; the longest gap is from its last run to the next day's
                // first: 24 h - (runs - 1) * interval.
                let worst = day.saturating_sub(interval * u32::try_from(runs - 1).unwrap_or(0));
                let mut gaps = vec![worst];
                gaps.extend(std::iter::repeat_n(
                    interval,
                    usize::try_from(runs - 1).unwrap_or(0),
                ));
                (
                    format!(
                        "every {}h within a {window}h window",
                        interval.as_secs() / 3600
                    ),
                    gaps,
                )
            }
            None => ("daily".to_owned(), vec![day]),
        };
        let worst = gaps.iter().copied().max().unwrap_or(day);
        let needed = gaps
            .iter()
            .map(|gap| {
                let per = gap.as_secs().div_ceil(self.rpo.as_secs().max(1));
                u32::try_from(per.saturating_sub(1)).unwrap_or(u32::MAX)
            })
            .sum();
        Ok((needed, words, worst))
    }

    fn with_version(&self, url: &str) -> String {
        let join = if url.contains('?') { '&' } else { '?' };
        format!("{url}{join}api-version={}", self.spec.api_version)
    }

    async fn get(&self, operation: &str, url: &str) -> Result<Value, ArmError> {
        get_json(&self.arm, operation, &self.spec.subscription_id, url).await
    }

    /// The protected item: its `protectionState`, `healthStatus` and `lastBackupStatus`.
    async fn item(&self) -> Result<Value, ArmError> {
        self.get("rsv_item", &self.with_version(&self.item_url))
            .await
    }

    /// Every recovery point of the item, following `nextLink`.
    async fn points(&self) -> Result<Vec<VaultPoint>, ArmError> {
        let url = self.with_version(&format!("{}/recoveryPoints", self.item_url));
        list_all(
            &self.arm,
            "rsv_recovery_points",
            &self.spec.subscription_id,
            url,
            VaultPoint::read,
        )
        .await
    }

    /// Refuses a backup of an item the vault does not protect, saying what to do.
    fn protected(&self, item: &Value) -> Result<(), ProviderError> {
        let state = item
            .pointer("/properties/protectionState")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        if state.eq_ignore_ascii_case("Protected") || state.eq_ignore_ascii_case("IRPending") {
            return Ok(());
        }
        Err(ProviderError::permanent(
            "ItemNotProtected",
            format!(
                "VM {} is not protected in vault {} (protectionState {state}): resume protection (Backup items, \
                 Resume backup) or fix the protection error in the vault, then rpod backs it up again",
                self.spec.vm, self.spec.vault
            ),
        ))
    }

    /// Follows the accepted operation to its job, and the job to its end; returns the job resource.
    async fn follow(
        &self,
        request: &BackupRequest,
        mut handle: Handle,
        accepted_at: DateTime<Utc>,
    ) -> Result<Value, ProviderError> {
        let subscription = &self.spec.subscription_id;
        if handle.pattern != Pattern::Job {
            let status = follow_for(&self.arm, subscription, request, handle)
                .await
                .map_err(|err| followed(err, accepted_at))?;
            let job = json_at(&status, "/properties/jobId").ok_or_else(|| {
                let mut error = ProviderError::permanent(
                    "InvalidResponse",
                    format!(
                        "the backup operation succeeded without naming its job (request id {})",
                        status.request_id.as_deref().unwrap_or("-")
                    ),
                );
                error.recovery_point = Some(accepted_at);
                error
            })?;
            let url = self.with_version(&format!("{}/backupJobs/{job}", self.vault_url));
            handle = Handle::new(Pattern::Job, url, request.clock.now());
            if let Err(err) = request.journal.polled(&handle.to_json()).await {
                warn!(error = %err, "Could not save the backup job; a restart follows the operation again.");
            }
        }
        let job = follow_for(&self.arm, subscription, request, handle)
            .await
            .map_err(|err| followed(err, accepted_at))?;
        serde_json::from_slice(&job.body).map_err(|err| {
            let mut error = ProviderError::transient(
                "InvalidResponse",
                format!("the backup job cannot be read: {err}"),
            );
            error.recovery_point = Some(accepted_at);
            error
        })
    }

    /// What a job in its final state means: a backup, with the warnings it carries, or the job's error.
    fn job_ended(job: &Value, accepted_at: DateTime<Utc>) -> Result<Vec<String>, ProviderError> {
        let status = job
            .pointer("/properties/status")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let details: Vec<(String, String)> = job
            .pointer("/properties/errorDetails")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|d| {
                (
                    d.get("errorCode")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    d.get("errorString")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .collect();
        if status.eq_ignore_ascii_case("Completed") {
            return Ok(Vec::new());
        }
        if status.eq_ignore_ascii_case("CompletedWithWarnings") {
            let mut warnings: Vec<String> = details
                .iter()
                .map(|(code, text)| format!("{code}: {text}"))
                .collect();
            if warnings.is_empty() {
                warnings.push("the job completed with warnings".to_owned());
            }
            return Ok(warnings);
        }
        let (code, message) = details.into_iter().next().unwrap_or_else(|| {
            (
                format!("Job{status}"),
                format!("the backup job ended with status {status}"),
            )
        });
        let code = if code.is_empty() {
            format!("Job{status}")
        } else {
            code
        };
        let mut error =
            ProviderError::permanent(&code, format!("the backup job ended {status}: {message}"));
        error.recovery_point = Some(accepted_at);
        Err(error)
    }
}

fn json_at(response: &ArmResponse, pointer: &str) -> Option<String> {
    serde_json::from_slice::<Value>(&response.body)
        .ok()?
        .pointer(pointer)?
        .as_str()
        .map(str::to_owned)
}

#[async_trait::async_trait]
impl Provider for RecoveryServicesVmProvider {
    fn kind(&self) -> &'static str {
        "recovery_services_vm"
    }

    fn daily_budget(&self) -> Option<u32> {
        Some(self.spec.max_on_demand_per_day)
    }

    async fn check(&self, _storage: &Arc<dyn Storage>) -> CheckReport {
        let mut report = CheckReport::default();
        match self.item().await {
            Ok(item) => {
                let state = item
                    .pointer("/properties/protectionState")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                report.found = Some(format!(
                    "VM {} in vault {} ({state})",
                    self.spec.vm, self.spec.vault
                ));
                if let Err(err) = self.protected(&item) {
                    report.problems.push(CheckProblem::Refused(err.message));
                }
                match self.policy_needs(&item).await {
                    Ok((needed, words, worst)) if needed > self.spec.max_on_demand_per_day => {
                        report.problems.push(CheckProblem::Refused(format!(
                            "rpo {} cannot be kept for VM {}: the vault's {words} policy leaves gaps of up to {}, \
                             which need {needed} on-demand backups a day, more than max_on_demand_per_day = {}; \
                             declare a longer rpo, back the VM up more often in the vault's policy, or raise \
                             max_on_demand_per_day (at most 9)",
                            humantime::format_duration(self.rpo),
                            self.spec.vm,
                            humantime::format_duration(worst),
                            self.spec.max_on_demand_per_day
                        )));
                    }
                    Ok(_) => {}
                    Err(why) => report.problems.push(CheckProblem::Unchecked(format!(
                        "could not read the backup policy of VM {} ({why}): make sure the policy and \
                         max_on_demand_per_day can keep the rpo",
                        self.spec.vm
                    ))),
                }
            }
            Err(err) if err.status == Some(403) => report.problems.push(CheckProblem::Refused(format!(
                "rpod may not read VM {} in vault {} ({}): grant its identity Backup Operator on the vault",
                self.spec.vm, self.spec.vault, err.message
            ))),
            Err(err) => report.problems.push(CheckProblem::Unreachable(format!(
                "cannot read the protected item of VM {} in vault {}: {err}",
                self.spec.vm, self.spec.vault
            ))),
        }
        report
    }

    async fn health(&self) -> Option<Result<Health, ProviderError>> {
        Some(
            self.item()
                .await
                .map(|item| {
                    let field = |key: &str| {
                        item.pointer(&format!("/properties/{key}"))
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned()
                    };
                    let (state, health, last) = (
                        field("protectionState"),
                        field("healthStatus"),
                        field("lastBackupStatus"),
                    );
                    let protected = self.protected(&item).is_ok();
                    Health {
                        healthy: protected
                            && health.eq_ignore_ascii_case("Passed")
                            && !last.eq_ignore_ascii_case("Failed"),
                        detail: format!(
                            "protectionState {state}, healthStatus {health}, lastBackupStatus {}",
                            if last.is_empty() { "(none yet)" } else { &last }
                        ),
                        share: None,
                    }
                })
                .map_err(|err| provider_error(&err, None)),
        )
    }

    async fn recovery_points(&self) -> Option<Result<Vec<ExternalPoint>, ProviderError>> {
        Some(
            self.points()
                .await
                .map(|points| {
                    points
                        .into_iter()
                        .filter(|p| !p.soft_deleted)
                        .map(|p| ExternalPoint {
                            name: p.name,
                            recovery_point: p.time,
                            expires_at: p.expires_at,
                            size: None,
                            pending: false,
                        })
                        .collect()
                })
                .map_err(|err| provider_error(&err, None)),
        )
    }

    async fn backup(&self, request: BackupRequest) -> Result<BackupOutcome, ProviderError> {
        let (accepted_at, job) = if let Some(resume) = &request.resume {
            let handle = Handle::from_json(&resume.handle)
                .map_err(|message| ProviderError::permanent("InvalidOperation", message))?;
            let job = self.follow(&request, handle, resume.accepted_at).await?;
            (resume.accepted_at, job)
        } else {
            let item = self
                .item()
                .await
                .map_err(|err| provider_error(&err, None))?;
            self.protected(&item)?;
            let expires = request.clock.now() + crate::policy::delta(self.expiry);
            let body = json!({"properties": {
                "objectType": "IaasVMBackupRequest",
                "recoveryPointExpiryTimeInUTC": expires.to_rfc3339_opts(SecondsFormat::Millis, true),
            }});
            let url = self.with_version(&format!("{}/backup", self.item_url));
            let response = tokio::select! {
                response = self.arm.send("rsv_backup", &self.spec.subscription_id, Method::POST, &url, Some(&body)) => response,
                () = request.cancel.cancelled() => return Err(ProviderError::cancelled("stopped before Azure accepted the backup")),
            };
            let response = response.map_err(|err| provider_error(&err, None))?;
            let accepted_at = request.clock.now();
            let handle = start_following(
                &self.arm,
                request.journal.as_ref(),
                &response,
                &[Pattern::AsyncOperation, Pattern::Location],
                accepted_at,
                &body.to_string(),
                "backup",
            )
            .await?;
            info!(
                target = %request.target, backup_id = request.backup_id, vm = %self.spec.vm,
                request_id = response.request_id.as_deref().unwrap_or("-"), "Azure accepted the on-demand backup."
            );
            (
                accepted_at,
                self.follow(&request, handle, accepted_at).await?,
            )
        };
        let warnings = Self::job_ended(&job, accepted_at)?;
        let job_id = job
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned();
        let started = vault_time(job.pointer("/properties/startTime")).unwrap_or(accepted_at);
        // The point this job made: the newest one taken since the job started.
        let points = self.points().await.map_err(|err| {
            let mut error = provider_error(&err, None);
            error.recovery_point = Some(accepted_at);
            error
        })?;
        let made = points
            .into_iter()
            .filter(|p| !p.soft_deleted && p.time >= started - chrono::TimeDelta::minutes(5))
            .max_by_key(|p| p.time);
        let content = json!({"job": job_id, "warnings": warnings}).to_string();
        let Some(point) = made else {
            // Not retried: another POST would spend the daily budget on a backup that exists.
            let mut error = ProviderError::permanent(
                crate::record::POINT_NOT_LISTED,
                format!(
                    "backup job {job_id} completed, but the vault lists no recovery point of it yet; it does not \
                     count until the vault lists it (reconciliation imports it then)"
                ),
            );
            error.recovery_point = Some(accepted_at);
            return Err(error);
        };
        Ok(BackupOutcome {
            recovery_point: point.time,
            artifact: point.name,
            size_bytes: None,
            sha256: None,
            sku: None,
            etag: None,
            expires_at: point.expires_at,
            content: Some(content),
        })
    }
}
