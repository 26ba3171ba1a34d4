//! Test support for rpod: a loopback emulator of the Azure endpoints rpod calls, and a harness that runs
//! Azurite (Microsoft's Azure Storage emulator) as real blob storage.
//!
//! The emulator speaks the wire contracts of the design (§8) including their quirks: Entra ID and managed
//! identity tokens; API Management get, sync state, backup and restore as Location-only long-running operations
//! (202 with `Retry-After`, a first `Location` with `//operationresults/`, a completed operation that keeps
//! answering 200); the service's APIs, products and developer portal revisions as ARM collections; ARM errors,
//! `x-ms-request-id` on every answer and token-bucket throttling. A completed backup writes a real blob into the
//! storage account (Azurite in tests). It also hosts Recovery Services vaults with protected VMs (Azure Backup
//! of `IaaS` VMs: on-demand backups, their operations and jobs, recovery points; see [Recovery
//! Services](#recovery-services-azure-backup-of-iaas-vms)) and the backup locations of Azure Stack Hub stamps
//! (infrastructure backup; see [Azure Stack Hub](#azure-stack-hub-microsoftbackupadmin)), and it can serve
//! HTTPS with a certificate from a test CA ([HTTPS](#https-with-a-test-ca)). Faults can be injected per route,
//! and every request is logged for assertions.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use azure_emulator::{Azurite, Emulator, EmulatorConfig, ServiceSpec, StorageAccount};
//! let azurite = Azurite::start().await?;
//! let emulator = Emulator::start(EmulatorConfig::fast()).await?;
//! emulator.add_service(ServiceSpec::new("sub-1", "rg-1", "apim-1"));
//! emulator.add_account(StorageAccount::azurite(&azurite));
//! // point rpod's resource_manager_endpoint at emulator.base_url() ...
//! # Ok(()) }
//! ```
//!
//! # Change signals
//! A hosted service reports API Management's change signals as ARM does (design §8): the service resource's
//! `etag` (also the `ETag` header) and `systemData.lastModifiedAt`, and the sync state's
//! `configurationChangeDate`.
//! - An accepted backup or restore moves the etag and `lastModifiedAt` (the service goes to `Updating`), and they
//!   move again when it completes; the completed operation's 200 carries the resource as of completion.
//! - A backup never moves `configurationChangeDate`; a completed restore does (the configuration is replaced).
//! - [`Emulator::make_change`] simulates a configuration change: all three move.
//! - [`Emulator::set_configuration_change_date`] sets `configurationChangeDate` alone, for a change that the ARM
//!   resource does not show.
//!
//! # What a backup carries and a restore replaces
//! A service has content: a number of APIs and of products ([`ServiceSpec::apis`], [`ServiceSpec::products`];
//! a new service has 1 API, `echo-api`, and 2 products, `starter` and `unlimited`). A backup records the
//! source's SKU and content as they are when it completes; a completed restore gives the destination the
//! backup's content (and moves its `configurationChangeDate`, etag and `lastModifiedAt`). Restores fail on a
//! poll with 400 `RestoreFailed` when the backup is missing (`Cannot restore: backup not found`), 30 days old
//! (`Cannot restore: backup expired`) or from another SKU (`Cannot restore: current SKU is 'X', backup SKU is
//! 'Y'`).
//!
//! What a backup does not carry, a restore leaves as it is on the destination: custom hostnames (with their
//! certificate source), the managed identity, the virtual network type, and the developer portal's publication
//! (its revisions). The service resource shows the first three as ARM does: top-level `identity`,
//! `properties.hostnameConfigurations` (the default `{name}.azure-api.net` `Proxy` entry with certificate source
//! `BuiltIn`, then custom ones), `properties.virtualNetworkType`; and `properties.developerPortalStatus`
//! (always `Enabled`).
//!
//! Content is served as ARM collections `{"value":[{id,type,name,properties}...],"count":N,"nextLink":...}`:
//! `GET .../service/{name}/apis`, `.../products` and `.../portalRevisions` (one current `completed` revision while
//! the portal is published, none otherwise). `$top` truncates `value` while `count` stays the total, so
//! `$top=1` reads a count cheaply; `$skip` skips. Emulator choices where Azure's behaviour is UNVERIFIED: a
//! truncated page's `nextLink` is the same URL with `%24top` and `%24skip` moved past the page (null when
//! nothing follows; a spec example shows `""`); `portalRevisions` also carries `count` (the spec example shows
//! only `value`); a bad `$top` or `$skip` is answered 400 `ValidationError`.
//!
//! Test knobs: [`Emulator::set_content`] (a configuration change: `configurationChangeDate` moves, not the
//! etag), [`Emulator::set_portal_published`] (no signal moves), and, as ARM resource updates that move the etag
//! and `lastModifiedAt`, [`Emulator::set_custom_hostname`], [`Emulator::set_identity`] and
//! [`Emulator::set_virtual_network_type`]. The same can be given at creation with the `ServiceSpec::with_*`
//! methods.
//!
//! # Durations and busy services
//! A backup runs for [`EmulatorConfig::operation_duration`]; a restore for
//! [`EmulatorConfig::restore_duration`] when set (real restores take about 30 minutes against 9 for a backup;
//! [`Emulator::set_restore_duration`], `--restore-duration`), else for the same duration. While a backup or
//! restore runs, the service is `Updating` and another backup or restore on it is refused with 409 `Conflict`
//! (ARM error shape, no `Location`; an emulator choice, Azure's answer is UNVERIFIED).
//!
//! # Recovery Services: Azure Backup of `IaaS` VMs
//! Wire contracts §4, §6 and §10. A test protects VMs in vaults, then the client works over ARM:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use azure_emulator::{BackupPolicy, Emulator, EmulatorConfig, ProtectedVmSpec};
//! use chrono::{Duration, NaiveTime};
//! let emulator = Emulator::start(EmulatorConfig::fast()).await?;
//! let spec = ProtectedVmSpec::new("sub-1", "rg-vault", "vault-1", "rg-vm", "vm-1").with_policy(
//!     BackupPolicy::hourly("EnhancedPolicy", 4, NaiveTime::from_hms_opt(8, 0, 0).unwrap(), 12),
//! );
//! emulator.add_protected_vm(spec.clone());
//! let vm = spec.reference();
//! let now = emulator.now();
//! let name = emulator.add_policy_recovery_point(&vm, now - Duration::hours(2), now + Duration::days(30));
//! // ... let the client back up vm-1, then:
//! let state = emulator.protected_vm(&vm).expect("hosted");
//! assert!(state.accepted_backups_today <= 9);
//! # let _ = name; Ok(()) }
//! ```
//!
//! Paths live under `{base}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{vault}`
//! and match ignoring case (`/Subscriptions/` too); `%3B` in a segment is read as `;`. The container is
//! `IaasVMContainer;iaasvmcontainerv2;{vmRg};{vm}`, the item `VM;iaasvmcontainerv2;{vmRg};{vm}`, the fabric
//! `Azure` (`{item}` below stands for `.../backupFabrics/Azure/protectionContainers/{container}/protectedItems/{item}`).
//! Every request needs `api-version`, missing: 400 `MissingApiVersionParameter`; dated outside 2016-06-01 to
//! 2026-03-31 (previews included): 400 `NoRegisteredProviderFound`. The token check, throttling buckets,
//! `x-ms-request-id` and the request log apply as to every ARM path.
//!
//! - `POST {item}/backup` with `{"properties":{"objectType":"IaasVMBackupRequest","recoveryPointExpiryTimeInUTC":"2026-12-01T02:16:20.3156909Z"}}`
//!   (expiry optional: 30 days; a zone-less time is taken as UTC) → **202**, empty body, with
//!   `Azure-AsyncOperation: {base}/Subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{vault}/backupFabrics/Azure/protectionContainers/IaasVMContainer;iaasvmcontainerv2;{vmRg};{vm}/protectedItems/VM;iaasvmcontainerv2;{vmRg};{vm}/operationsStatus/{opId}?api-version={v}`,
//!   `Location:` the same with `operationResults/{opId}`, `Retry-After` ([`EmulatorConfig::retry_after_secs`])
//!   and `x-ms-request-id`. Capital `/Subscriptions/` and raw `;` as in the spec example.
//! - `GET {item}/operationsStatus/{opId}` and `GET .../vaults/{vault}/backupOperations/{opId}` → 200
//!   `{"id":opId,"name":opId,"status":"InProgress","startTime":"…Z","endTime":"0001-01-01T00:00:00"}`, then
//!   `"Succeeded"` with `endTime` and `"properties":{"objectType":"OperationStatusJobExtendedInfo","jobId":"…"}`
//!   once the operation phase ([`EmulatorConfig::vm_operation_duration`]) is over, or `"Failed"` with
//!   `"error":{"code","message"}` (a `FailOperation` fault; no job then).
//! - `GET {item}/operationResults/{opId}` → 202 (the three headers again) while the operation runs, then 204
//!   with no body (a failed one: 400 with its error; UNVERIFIED).
//! - `GET .../vaults/{vault}/backupJobs/{jobId}` → 200 `JobResource`: `jobType` `AzureIaaSVMJob`, `operation`
//!   `Backup`, `status` `InProgress` then `Completed` (or a fault's `Failed`, `Cancelled`,
//!   `CompletedWithWarnings`), `startTime`, `endTime` `"0001-01-01T00:00:00"` (no `Z`) until it ends,
//!   `duration` as .NET writes it (`PT3.2525219S`, `PT1H11M13.0108008S`), `extendedInfo.tasksList` with "Take
//!   Snapshot" (the first tenth of the job) and "Transfer data to vault" (`NotStarted` with unset times and
//!   `PT0S`, then `InProgress`, `Completed`), `propertyBag` (`VM Name`, plus `Backup Size` once done),
//!   `entityFriendlyName`, `backupManagementType` `AzureIaasVM`, `activityId`, `actionsInfo` (`[1]` while
//!   running). A failed job carries `errorDetails:[{"errorCode","errorString","recommendations":[…]}]`. The job
//!   runs [`EmulatorConfig::vm_job_duration`] from the POST and answers 200 again and again once ended.
//! - When a job ends `Completed` or `CompletedWithWarnings`, a recovery point dated at the POST (the snapshot)
//!   appears, expiring at the requested time, and the item's `lastBackupTime` (that date), `lastBackupStatus`
//!   and `lastRecoveryPoint` move. A failed or cancelled job moves `lastBackupStatus` only.
//! - `GET {item}/recoveryPoints` → 200 `{"value":[…],"nextLink":…}`, [`EmulatorConfig::recovery_point_page_size`]
//!   points a page in a stable order that is *not* by time (clients must sort); `nextLink` is absolute and
//!   carries `%24skipToken=N` (and the filter), null on the last page. `$filter=startDate eq '2017-12-01 00:00:00 AM'
//!   and endDate eq '2017-12-31 11:59:59 PM'` (either part; RFC 3339 values too) keeps points in that range.
//!   Each point: `id`, numeric `name`, `type`, `properties` {`objectType` `IaasVMRecoveryPoint`,
//!   `recoveryPointType` `AppConsistent` (`CrashConsistent` after warnings), `recoveryPointTime`,
//!   `recoveryPointTierDetails` (`InstantRP`/`HardenedRP` `Valid`), `recoveryPointProperties` {`expiryTime`,
//!   `ruleName`, `isSoftDeleted` false}}. Expired points are no longer listed. `GET {item}/recoveryPoints/{name}`
//!   → one point.
//! - `GET {item}` → 200 `ProtectedItemResource` (§4.4): `protectionState`, `healthStatus`, `protectionStatus`
//!   (`Healthy` when `Passed`, else `Unhealthy`), `lastBackupStatus` (`""` before the first), `lastBackupTime`
//!   (`2001-01-01T00:00:00Z` before any), `lastRecoveryPoint`, `policyId`, `containerName`, … and
//!   `extendedInfo` {`recoveryPointCount`, `policyInconsistent`, `oldestRecoveryPoint`} with
//!   `$filter=expand eq 'extendedinfo'`.
//! - `GET .../vaults/{vault}/backupPolicies/{policy}` → the `AzureIaasVM` policy: daily is `SimpleSchedulePolicy`
//!   with `scheduleRunTimes`; enhanced is `SimpleSchedulePolicyV2` with `hourlySchedule {interval,
//!   scheduleWindowStartTime, scheduleWindowDuration}` (policy type `V2`); both with a daily
//!   `retentionPolicy`. `GET .../vaults/{vault}` → the vault resource.
//! - Any other method on these paths (DELETE included) is logged like every request and answered 405
//!   `MethodNotAllowed`: nothing is ever deleted.
//!
//! Refusals: unknown vault → 404 `ResourceNotFound` (ARM's message, `x-ms-failure-cause: gateway`); unknown
//! item, job, operation, recovery point or policy → 404 `ResourceNotFound`; unreadable body → 400
//! `InvalidRequestContent`; a missing `properties`, another `objectType`, a bad, past or more than 99 years
//! away expiry → 400 `BMSUserErrorInvalidInput`; a protection state other than `Protected` or `IRPending`
//! → 400 `BMSUserErrorProtectionStopped` (message names the state); the 10th accepted POST of a UTC day on an
//! item → 400 `UserErrorMaxOnDemandBackupsReached` "Too many on-demand backups for this item today: …". The day
//! is the UTC date of the emulator's clock: the count resets at 00:00 UTC. Only accepted POSTs count towards
//! nine; [`ProtectedVmState::backup_posts_today`] counts every POST that reached the item.
//!
//! UNVERIFIED (emulator choices where the sources give no answer): the codes `BMSUserErrorProtectionStopped`,
//! `UserErrorMaxOnDemandBackupsReached`, `BMSUserErrorInvalidInput` and `ResourceNotFound` inside a vault, and
//! their messages; 400 for a failed operation's `operationResults`; the vault resource's properties; the
//! enhanced policy's exact shape; `ruleName` (`Daily` for policy points, `OnDemand` for on-demand ones);
//! `actionsInfo` after the end; the warning in `errorDetails` of `CompletedWithWarnings`; that
//! `lastBackupTime` is the snapshot's time and does not move on failures; the list order; hiding expired points.
//!
//! Time: everything follows the emulator's calendar ([`Emulator::now`]), which moves with Tokio's clock
//! (paused or not) and with [`Emulator::advance_clock`]; jobs progress and the UTC day turns with it.
//!
//! Test knobs: [`Emulator::add_protected_vm`], [`Emulator::add_policy_recovery_point`] (a scheduled backup's
//! point: `lastBackupTime`/`lastBackupStatus` move, no job), [`Emulator::set_protection_state`],
//! [`Emulator::set_health_status`], [`Emulator::set_vm_operation_duration`] (default 2 s, fast 100 ms),
//! [`Emulator::set_vm_job_duration`] (default 71 min as recorded, fast 500 ms),
//! [`Emulator::set_recovery_point_page_size`] (default 50), [`Emulator::set_retry_after`], and the snapshot
//! [`Emulator::protected_vm`]. Faults: [`Route::VmBackup`], [`Route::VmOperationStatus`], [`Route::VmJob`],
//! [`Route::VmRecoveryPoints`], [`Route::VmProtectedItem`] take `Status` (429 with [`FaultKind::throttled`],
//! 5xx), `Reset`, `Hang`, `BadJson` and `Answer` like any route; [`FaultKind::backup_authorization_failed`]
//! gives ARM's 403 `AuthorizationFailed`; [`FaultKind::fail_job`], [`FaultKind::cancel_job`],
//! [`FaultKind::job_with_warnings`] and `FailOperation` decide how the next accepted backup ends.
//!
//! Control endpoints (not ARM, like those below): `PUT {base}/emulator/recoveryServices` with
//! `{"operationDuration":"2s","jobDuration":"5m","recoveryPointPageSize":10}` (any of them); under
//! `{base}/emulator/subscriptions/{sub}/resourceGroups/{vaultRg}/vaults/{vault}/protectedVms/{vmRg}/{vm}`:
//! `PUT .../protectionState` `{"protectionState":"ProtectionStopped"}`, `PUT .../healthStatus`
//! `{"healthStatus":"ActionRequired"}`, `POST .../policyRecoveryPoints`
//! `{"recoveryPointTime":"…Z","expiryTime":"…Z"}` (answers 200 `{"name":"…"}`). The runnable emulator takes
//! `--protected-vm SUB/VAULT_RG/VAULT/VM_RG/VM` and `--vm-job-duration`.
//!
//! # HTTPS with a test CA
//! With [`EmulatorConfig::tls`] the emulator serves HTTPS only (HTTP/1.1, rustls) and [`Emulator::base_url`] is
//! `https://127.0.0.1:PORT`. At start it generates a CA (self-signed, `basicConstraints` `CA:TRUE`, key usages
//! `keyCertSign` and `cRLSign`, common name `rpod emulator test root CA`) and a leaf certificate it issues for
//! the names `127.0.0.1`, `::1` and `localhost` (not self-signed, `CA:FALSE`, server authentication); keys stay
//! in memory. [`Emulator::ca_pem`] gives the CA's PEM, which a client trusts alone to reach the emulator (one
//! with the usual roots refuses it as an unknown issuer); [`Emulator::leaf_pem`] the leaf's, a certificate that
//! is no CA. Faults behave as over HTTP: `Reset` closes the socket under the TLS session, `Hang` never answers.
//! The runnable emulator takes `--tls` and `--ca-file PATH` (where to write the CA's PEM).
//!
//! # Azure Stack Hub: metadata and AD FS
//! Wire contracts §5 and §10. A stamp's administrator endpoint is discovered, then tokens come from its AD FS
//! (or Entra ID):
//! - `GET {base}/metadata/endpoints?api-version=2015-01-01` (no token, never throttled, no ARM headers; any
//!   api-version, but one is required: 400 `MissingApiVersionParameter`; another method: 405) → 200
//!   `{"galleryEndpoint":"{base}/gallery/","graphEndpoint":"{base}/graph/","portalEndpoint":"{base}/portal/",
//!   "authentication":{"loginEndpoint":L,"audiences":[A]}}`: `L` is `{base}/adfs/` for
//!   [`StackIdentity::Adfs`] (the default) and `{base}/` for [`StackIdentity::EntraId`]
//!   ([`EmulatorConfig::stack_identity`]); `A` is [`EmulatorConfig::stack_audience`] (default
//!   [`DEFAULT_STACK_AUDIENCE`]). Faults: [`Route::StackMetadata`], which [`Route::AnyArm`] does not cover.
//! - `POST {base}/adfs/oauth2/token`, form `grant_type=client_credentials`, `client_id`, `resource`, and
//!   `client_secret` or `client_assertion` with `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//!   → 200 `{"access_token":"…","token_type":"bearer","expires_in":N}` (`N` a number, the token lifetime); ARM
//!   accepts the token. Refusals in AD FS's OAuth shape `{"error","error_description"}`: 400 `invalid_request`
//!   (a missing `grant_type`, `client_id` or `resource`, a wrong `client_assertion_type`), 400
//!   `unsupported_grant_type`, 401 `invalid_client` (no secret nor assertion), 405 for another method; the
//!   `MSIS…` descriptions are look-alikes (UNVERIFIED). Logged as a [`TokenRequest`] of kind
//!   [`TokenKind::Adfs`], tenant `adfs`, scope the `resource`, and `client_id`. [`Route::Token`] faults apply,
//!   answered in the AD FS shape. With Entra ID, clients use `{base}/{tenant}/oauth2/v2.0/token` as usual with
//!   the scope `{audience}/.default`.
//!
//! # Azure Stack Hub: `Microsoft.Backup.Admin`
//! Infrastructure backup of a stamp to its external share (wire contracts §5 and §10). A test hosts a backup
//! location, then the client works over ARM:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use azure_emulator::{BackupLocationSpec, Emulator, EmulatorConfig, ShareCondition};
//! let emulator = Emulator::start(EmulatorConfig { tls: true, ..EmulatorConfig::fast() }).await?;
//! let spec = BackupLocationSpec::new("sub-1", "System.local", "local").with_retention_days(7);
//! emulator.add_backup_location(spec.clone());
//! let location = spec.reference();
//! emulator.set_share_condition(&location, Some(ShareCondition::Unreachable));
//! // ... let the client back up the stamp (trusting emulator.ca_pem()), then:
//! let state = emulator.backup_location(&location).expect("hosted");
//! assert_eq!(state.create_backup_posts, 1);
//! # Ok(()) }
//! ```
//!
//! Paths live under `{loc}` = `{base}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Backup.Admin/backupLocations/{location}`
//! and match ignoring case. api-versions `2016-05-01`, `2018-09-01` (the shapes below) and `2021-09-01` are
//! taken; another: 400 `NoRegisteredProviderFound`; none: 400 `MissingApiVersionParameter`. The token check,
//! throttling buckets, `x-ms-request-id` and the request log apply as to every ARM path.
//!
//! - `GET .../backupLocations` → 200 `{"value":[location…]}` (the group's hosted locations). `GET {loc}` → 200
//!   `{"id","name":location,"type":"Microsoft.Backup.Admin/backupLocations","location":location,"tags":{},
//!   "properties":{"externalStoreDefault":{"path":"\\\\fileserver\\share\\stamp","userName":"DOMAIN\\backupadmin",
//!   "encryptionCertThumbprint":T|null,"backupFrequencyInHours":N,"backupRetentionPeriodInDays":D,
//!   "isBackupSchedulerEnabled":bool,"availableCapacity":"60 GB","nextBackupTime":…|null,"lastBackupTime":…|null}}}`.
//!   The password and `encryptionCertBase64` are never returned. `availableCapacity` is a string: the free
//!   bytes in the largest unit they reach (`B`, `KB`, `MB`, `GB`, `TB`; 1024-based, `TB` at most), rounded half
//!   up to one decimal, the decimal left out when zero (`"60 GB"`, `"29.6 TB"`, `"512 B"`; a value rounding to
//!   1024 of a unit moves to the next). `nextBackupTime` is set while the scheduler is on; `lastBackupTime` is
//!   the `createdDateTime` of the newest backup that really ended `Succeeded` or `PartialSucceeded`.
//! - `POST {loc}/createBackup` (an empty body, `{}` or any JSON object; anything else: 400
//!   `InvalidRequestContent`) → **202**, empty body,
//!   `Location: {base}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Backup.Admin/backupLocations/{location}/operationResults/{opId}?api-version={v}`,
//!   `Retry-After` ([`EmulatorConfig::retry_after_secs`]), `x-ms-request-id`; no `Azure-AsyncOperation`. A
//!   location without an encryption certificate: 400 `EncryptionCertificateNotFound` "An encryption certificate
//!   must be set on the backup location before a backup can be taken.". While a backup runs there (started by
//!   a POST or by the scheduler, until its operation ends): 409 `BackupOperationInProgress`, one backup at a
//!   time per location.
//! - `GET` of the operation's `Location` → 202 (the same `Location` and `Retry-After`, empty body) while the
//!   backup runs; once it ended, 200 with the backup resource as it ended, again and again (even after
//!   retention pruned the backup); a backup ended by a share condition → 400
//!   `{"error":{"code":C,"message":M}}`, again and again. A backup whose roles failed is not an operation
//!   failure: 200 with the backup, status `PartialSucceeded` or `Failed` (clients must read it).
//! - `GET {loc}/backups` → 200 `{"value":[backup…],"nextLink":…}`,
//!   [`EmulatorConfig::stack_backup_page_size`] backups a page in a stable order that is *not* by time
//!   (clients must sort); `nextLink` is absolute, carries `%24skipToken=N`, and is null on the last page (a bad
//!   token: 400 `InvalidSkipToken`). `GET {loc}/backups/{name}` (the GUID) → one backup; unknown or pruned: 404
//!   `ResourceNotFound`.
//! - A backup: `{"id":"{loc id}/backups/{guid}","name":"{location}/{guid}","type":"Microsoft.Backup.Admin/backupLocations/backups",
//!   "location":location,"tags":{},"properties":{"backupInfo":{"backupDataVersion","roleStatus":[{"roleName","status"}…],
//!   "status","createdDateTime","timeTakenToCreate","deploymentID","stampVersion","oemVersion",
//!   "isCloudRecoveryReady","encryptionCertThumbprint"}}}`. `roleStatus` lists [`STACK_ROLES`] in order;
//!   `createdDateTime` is the start (the POST), written as .NET writes dates (`…T10:00:00.0000000Z`);
//!   `timeTakenToCreate` a .NET duration (`PT30M`, `PT20M48.5970829S`), null while running;
//!   `encryptionCertThumbprint` the location's when the backup started; `isCloudRecoveryReady` true when
//!   `Succeeded`.
//! - **The early list.** A backup is listed from its start, `Running` (every role `Running`), and already
//!   `Succeeded` (every role `Succeeded`, `timeTakenToCreate` up to then) once
//!   [`EmulatorConfig::stack_list_early_fraction`] of its duration has passed (default 0.6: a 30-minute backup
//!   looks done 12 minutes early), while its operation keeps answering 202 until the whole duration is over;
//!   then the list shows its real status. This follows the docs, which say the portal shows a backup as
//!   completed 10 to 15 minutes before it finishes: trust the operation.
//! - **Outcomes**, decided when the backup ends: a share condition in force when it started fails it
//!   (`Failed`, every role `Failed`, the operation 400 below); less free space than a backup's size
//!   ([`EmulatorConfig::stack_backup_size_bytes`], default 10 GiB) fails it as `OutOfCapacity`; roles set by
//!   [`Emulator::fail_roles`] for the next backup to start make it `PartialSucceeded` with those roles `Failed`,
//!   or `Failed` when every role is listed; else `Succeeded`. Share conditions ([`ShareCondition`], modelled on
//!   the stamp's five backup alerts): `OutOfCapacity` → `ExternalStoreOutOfCapacity` "The external storage
//!   location has exceeded its capacity."; `Unreachable` → `ExternalStoreUnreachable` "The external storage
//!   location could not be reached."; `PathNotFound` → `ExternalStorePathNotFound` "The external storage
//!   location path could not be found."; `AuthenticationFailed` → `ExternalStoreAuthenticationFailed` "The
//!   credentials for the external storage location are not valid."; `Fault` → `BackupFault` "Backup failed due
//!   to an internal error.".
//! - **Capacity and retention.** A backup ending `Succeeded` or `PartialSucceeded` takes its size from the
//!   share's free bytes; a backup whose `createdDateTime` plus `backupRetentionPeriodInDays` has passed is
//!   pruned (no longer listed nor found) and gives its size back.
//! - **The built-in scheduler.** While `isBackupSchedulerEnabled`, the emulator starts a backup by itself every
//!   `backupFrequencyInHours` × [`EmulatorConfig::stack_scheduler_hour`] (default one hour; tests shorten it),
//!   the first one period after it was turned on, skipping a run while a backup runs; `nextBackupTime` shows
//!   the next run. Its backups have no operation and count as running for the 409. After a long pause, at most
//!   10 000 missed runs are replayed.
//! - Any other method on these paths (DELETE, PUT and PATCH included) is logged and answered 405
//!   `MethodNotAllowed`: nothing is ever changed or deleted through them. Other paths under the provider
//!   (`…/backups/{name}/restore`, `pruneExternalStore`): 404 `NotFound`. Unknown location: 404
//!   `ResourceNotFound` (ARM's message, `x-ms-failure-cause: gateway`); unknown operation: 404
//!   `ResourceNotFound`.
//!
//! Time: everything follows the emulator's calendar ([`Emulator::now`]), which moves with Tokio's clock (paused
//! or not) and with [`Emulator::advance_clock`]; backups end, the scheduler runs and retention prunes with it,
//! lazily when a request or a knob reads the location.
//!
//! UNVERIFIED (emulator choices where the sources give no answer): the `Location` of `createBackup` (the spec
//! example shows the POST's own URL; the real format is unknown); the 409 `BackupOperationInProgress`; the 400
//! `EncryptionCertificateNotFound` and its message; the five share codes and their messages; 200 (not an
//! error) for a backup whose roles failed; what the early list shows (every role `Succeeded`, whatever the
//! real outcome; `timeTakenToCreate` to that moment); `Running` role statuses; `isCloudRecoveryReady`; the
//! `backupDataVersion`, `stampVersion`, `oemVersion` and `deploymentID` values; the role names; the list order,
//! `InvalidSkipToken`; when the scheduler runs (from when it was turned on, skipping runs during a backup);
//! `availableCapacity`'s rounding; that failed backups also count for retention.
//!
//! Test knobs: [`Emulator::add_backup_location`] ([`BackupLocationSpec::new`] with `with_retention_days` (2–14,
//! default 7), `with_frequency_hours` (4–12, default 12), `with_scheduler` (default off),
//! `with_encryption_cert` (default [`DEFAULT_ENCRYPTION_CERT_THUMBPRINT`]), `with_available_capacity` (default
//! 60 GiB), `with_backup_duration`), [`Emulator::set_backup_scheduler`], [`Emulator::set_encryption_cert`],
//! [`Emulator::set_share_condition`], [`Emulator::fail_roles`], [`Emulator::set_available_capacity`],
//! [`Emulator::add_stack_backup`] (a finished backup already on the share), [`Emulator::set_stack_backup_duration`]
//! ([`EmulatorConfig::stack_backup_duration`], default 30 minutes, fast 1 s),
//! [`Emulator::set_stack_backup_page_size`], and the snapshot [`Emulator::backup_location`]
//! ([`BackupLocationState`]: `create_backup_posts`, `backups` with each one's status as its operation sees it,
//! `available_bytes`, `scheduler_enabled`, …). Faults: [`Route::StackLocation`], [`Route::StackCreateBackup`],
//! [`Route::StackOperation`], [`Route::StackBackups`] (list and get) take `Status` (429 with
//! [`FaultKind::throttled`], 5xx), `Reset`, `Hang`, `BadJson` and `Answer` like any route, and are covered by
//! [`Route::AnyArm`]; [`FaultKind::create_backup_authorization_failed`] gives ARM's 403 `AuthorizationFailed`.
//! The operation outcomes of the other providers (`FailOperation`, `SkipBlob`, `JobOutcome`) do not apply.
//!
//! Control endpoints (not ARM, like those below), under
//! `{base}/emulator/subscriptions/{sub}/resourceGroups/{rg}/backupLocations/{location}`, all `PUT`, 204:
//! `.../scheduler` `{"enabled":true}`, `.../shareCondition` `{"condition":"OutOfCapacity"}` (or `null`),
//! `.../encryptionCert` `{"thumbprint":"…"}` (or `null`), `.../availableCapacity` `{"bytes":N}`,
//! `.../failedRoles` `{"roles":["ECE"]}`. The runnable emulator takes `--backup-location SUB/RG/LOCATION`
//! and `--stack-backup-duration`.
//!
//! # Control endpoints
//! The same changes can be made over HTTP, which is handy against the runnable emulator. These control
//! endpoints are not ARM: they need no token, are never throttled or faulted, and are logged like every request.
//! All live under `{base}/emulator/subscriptions/{sub}/resourceGroups/{rg}/services/{name}` and answer 204:
//! - `POST .../change` (no body), as [`Emulator::make_change`].
//! - `PUT .../configurationChangeDate` with `{"configurationChangeDate":"2026-01-01T00:00:00Z"}`.
//! - `PUT .../content` with `{"apis":5,"products":3}`.
//! - `PUT .../portalPublished` with `{"published":false}`.
//! - `PUT .../customHostname` with `{"hostName":"api.contoso.example","certificateSource":"KeyVault"}`.
//! - `PUT .../identity` with `{"type":"SystemAssigned, UserAssigned","userAssignedClientIds":["<client id>"]}`.
//! - `PUT .../virtualNetworkType` with `{"virtualNetworkType":"Internal"}`.
//!
//! They answer 400 `InvalidRequestContent` for a bad body, 404 with a JSON error when no such service is hosted,
//! and 405 to other methods.
//!
//! # Layout
//! - [`emulator`]: the [`Emulator`] handle: start, configure, inject faults, read logs, shut down.
//! - [`config`]: [`EmulatorConfig`], [`ServiceSpec`], [`StorageAccount`].
//! - [`fault`]: [`Fault`], [`Route`], [`FaultKind`] and the queue they wait in.
//! - [`log`]: [`LoggedRequest`] and [`TokenRequest`].
//! - [`service`]: a hosted API Management service, its JSON, and the [`ServiceState`] snapshot.
//! - [`vm`]: protected VMs in Recovery Services vaults: [`ProtectedVmSpec`], [`ProtectedVmRef`],
//!   [`BackupPolicy`], [`JobOutcome`] and the [`ProtectedVmState`] snapshot.
//! - [`backup_location`]: Azure Stack Hub backup locations: [`BackupLocationSpec`], [`BackupLocationRef`],
//!   [`ShareCondition`] and the [`BackupLocationState`] snapshot.
//! - [`settings`]: what a restore leaves alone: [`CustomHostname`], [`CertificateSource`],
//!   [`VirtualNetworkType`].
//! - [`azurite`]: start Azurite as a child process on a free loopback port; stopped and cleaned up on drop.
//! - [`blob`]: a small Shared Key blob client (create container, put, list, stat, delete; Blob service CORS
//!   rules), independent of rpod.
//! - [`cli`]: the command line of the runnable emulator (`cargo run --example azure-emulator`).
//! - Internal: `server` (hyper accept loop, resets, hangs), `handler` (routing, faults, auth, throttling),
//!   `routes` (path parsing), `token` (the Entra ID and managed identity endpoints, and the form reader and token
//!   issue AD FS shares), `apim`, `operation` (backup and restore tasks), `content` (the APIs, products and
//!   portal revisions collections), `control` (the control endpoints, and what all of them share), `setting` (a
//!   change to a service, from the handle or a control body), `state`, `reply` (answers and the ARM, Entra ID and
//!   OAuth error shapes), `throttle`, `clock`; for Recovery Services `recovery` (the ARM handlers, the query and
//!   `$skipToken` readers), `vault` (vaults, backups, jobs and points on the calendar), `vault_json`, `timefmt`
//!   (.NET dates and durations) and `vm_control` (its control endpoints); for Azure Stack Hub `stack` (the ARM
//!   handlers), `stack_state` (locations and backups on the calendar, the scheduler, retention), `stack_json`,
//!   `stack_auth` (metadata and AD FS), `stack_control` (its control endpoints) and `stack_handle` (the
//!   [`Emulator`] knobs); `tls` (the test CA and the server certificate); for the unit tests only, `test_support`
//!   (an in-process client of the request handler, error codes and operation ids of its answers, RFC 3339
//!   dates).

pub mod azurite;
pub mod backup_location;
pub mod blob;
pub mod cli;
pub mod config;
pub mod emulator;
pub mod fault;
pub mod log;
pub mod service;
pub mod settings;
pub mod vm;

mod apim;
mod clock;
mod content;
mod control;
mod handler;
mod operation;
mod recovery;
mod reply;
mod routes;
mod server;
mod setting;
mod stack;
mod stack_auth;
mod stack_control;
mod stack_handle;
mod stack_json;
mod stack_state;
mod state;
#[cfg(test)]
mod test_support;
mod throttle;
mod timefmt;
mod tls;
mod token;
mod vault;
mod vault_json;
mod vm_control;

pub use azurite::Azurite;
pub use backup_location::{
    BackupLocationRef, BackupLocationSpec, BackupLocationState, DEFAULT_ENCRYPTION_CERT_THUMBPRINT,
    STACK_ROLES, ShareCondition, StackBackupState,
};
pub use blob::{BlobEntry, BlobError, BlobStore, CorsRule};
pub use config::{
    DEFAULT_STACK_AUDIENCE, EmulatorConfig, ServiceSpec, StackIdentity, StorageAccount,
};
pub use emulator::Emulator;
pub use fault::{Fault, FaultKind, Route};
pub use log::{LoggedRequest, TokenKind, TokenRequest};
pub use service::ServiceState;
pub use settings::{CertificateSource, CustomHostname, VirtualNetworkType};
pub use vm::{
    BackupPolicy, BackupSchedule, HealthStatus, JobOutcome, JobStatus, ProtectedVmRef,
    ProtectedVmSpec, ProtectedVmState, ProtectionState, RecoveryPointSource, RecoveryPointState,
    VmJobState,
};
