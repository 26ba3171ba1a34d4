//! Injected faults: what a test asks the emulator to do wrong, on which route, how many times.
//!
//! Faults wait in one queue in the order they were injected. A request takes the first fault whose route
//! matches it; each use counts down `times` and an exhausted fault leaves the queue. `FailOperation`,
//! `SkipBlob` and `JobOutcome` are the exceptions: they are not answers to requests but outcomes for operations.
//! `FailOperation` is taken by the next poll that finds a matching API Management operation still running (on
//! the Recovery Services routes: by the next VM backup accepted); `SkipBlob` by the next API Management backup
//! that completes; `JobOutcome` by the next VM backup accepted. None of them applies to the Azure Stack Hub
//! routes, whose backups end as the location's knobs say (`Emulator::fail_roles`,
//! `Emulator::set_share_condition`).

use std::collections::VecDeque;

use crate::backup_location::BackupLocationRef;
use crate::vm::{JobOutcome, ProtectedVmRef};

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST .../service/{name}/backup`. For `FailOperation`: the next poll of a running backup. For `SkipBlob`:
    /// the next backup to complete.
    Backup,
    /// `POST .../service/{name}/restore`. For `FailOperation`: the next poll of a running restore.
    Restore,
    /// `GET .../operationresults/{id}` (either slash form).
    Poll,
    /// `GET .../service/{name}`.
    GetService,
    /// `GET .../service/{name}/tenant/configuration/syncState`.
    SyncState,
    /// `GET .../service/{name}/apis`.
    Apis,
    /// `GET .../service/{name}/products`.
    Products,
    /// `GET .../service/{name}/portalRevisions`.
    PortalRevisions,
    /// Recovery Services: `POST .../protectedItems/{item}/backup`. For `FailOperation` and `JobOutcome`: the
    /// next backup accepted.
    VmBackup,
    /// Recovery Services: `GET .../protectedItems/{item}/operationsStatus/{id}`, `.../operationResults/{id}`
    /// and `GET .../vaults/{vault}/backupOperations/{id}`. For `FailOperation`: the next backup accepted.
    VmOperationStatus,
    /// Recovery Services: `GET .../vaults/{vault}/backupJobs/{id}`. For `JobOutcome`: the next backup accepted.
    VmJob,
    /// Recovery Services: `GET .../protectedItems/{item}/recoveryPoints` and `.../recoveryPoints/{id}`.
    VmRecoveryPoints,
    /// Recovery Services: `GET .../protectedItems/{item}`.
    VmProtectedItem,
    /// Azure Stack Hub: `GET .../providers/Microsoft.Backup.Admin/backupLocations` and
    /// `GET .../backupLocations/{location}`.
    StackLocation,
    /// Azure Stack Hub: `POST .../backupLocations/{location}/createBackup`.
    StackCreateBackup,
    /// Azure Stack Hub: `GET .../backupLocations/{location}/operationResults/{id}`.
    StackOperation,
    /// Azure Stack Hub: `GET .../backupLocations/{location}/backups` and `.../backups/{name}`.
    StackBackups,
    /// Azure Stack Hub: `GET /metadata/endpoints`. Not covered by `AnyArm`: only a fault on this route applies.
    StackMetadata,
    /// Any token endpoint (Entra ID, App Service managed identity, IMDS, AD FS).
    Token,
    /// Any ARM request (every route above except `StackMetadata` and `Token`).
    AnyArm,
}

impl Route {
    /// Whether a fault on `self` applies to a request on `request`.
    fn covers(self, request: Route) -> bool {
        self == request
            || (self == Route::AnyArm && !matches!(request, Route::Token | Route::StackMetadata))
    }
}

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status and an error body in the route's usual shape (ARM, Entra ID, or AD FS's OAuth
    /// shape `{"error","error_description"}` on `POST /adfs/oauth2/token`).
    Status {
        /// HTTP status, e.g. 429, 500, 503, 400.
        code: u16,
        /// `Retry-After` seconds to send, if any.
        retry_after: Option<u64>,
        /// Error code in the body, e.g. `SubscriptionRequestsThrottled`.
        error_code: String,
        /// Error message in the body.
        message: String,
    },
    /// Close the connection without answering (with a TCP reset).
    Reset,
    /// Never answer; the connection stays open until the client gives up or the emulator shuts down.
    Hang,
    /// Answer 200 with a body that is not JSON.
    BadJson,
    /// Answer with exactly this status and body, as `Content-Type: application/json; charset=utf-8` (with the
    /// usual ARM headers such as `x-ms-request-id` on ARM routes, and nothing else: a 202 carries no `Location`).
    /// The request is otherwise ignored: on `Route::Backup` no operation starts, and on `Route::Poll` the polled
    /// operation keeps its own state (only this one answer is replaced). Build it with [`FaultKind::answer`].
    Answer {
        /// HTTP status, e.g. 200, 202 or 204 (100 to 999; anything else answers 500).
        status: u16,
        /// The body, sent as is; may be empty.
        body: String,
    },
    /// End the operation that the next matching poll finds running, failed with 400 and this error; every
    /// later poll repeats the failure. On the Recovery Services routes (`VmBackup`, `VmOperationStatus`) it is
    /// taken by the next backup POST accepted instead: that operation ends `Failed` with this `error` and makes
    /// no job.
    FailOperation {
        /// Error code, e.g. `BackupFailed`.
        code: String,
        /// Error message.
        message: String,
    },
    /// Let the next backup operation that completes succeed as usual (polls answer 200 with the service
    /// resource, `provisioningState` `Succeeded`) without writing its blob into storage, as if API Management
    /// had lost it. The route must be `Backup` (or `AnyArm`); on any other route it never applies. Not an
    /// answer to a request: no request is marked `faulted` for it.
    SkipBlob,
    /// Recovery Services: the job of the next backup POST accepted ends this way instead of `Completed`. The
    /// route must be `VmBackup`, `VmJob` (or `AnyArm`). Not an answer to a request. Build it with
    /// [`FaultKind::fail_job`], [`FaultKind::cancel_job`] or [`FaultKind::job_with_warnings`].
    JobOutcome(JobOutcome),
}

impl FaultKind {
    /// `Status` without `Retry-After`.
    #[must_use]
    pub fn status(code: u16, error_code: &str, message: &str) -> Self {
        Self::Status {
            code,
            retry_after: None,
            error_code: error_code.to_owned(),
            message: message.to_owned(),
        }
    }

    /// ARM throttling: 429 `SubscriptionRequestsThrottled` with `Retry-After: retry_after`.
    #[must_use]
    pub fn throttled(retry_after: u64) -> Self {
        Self::Status {
            code: 429,
            retry_after: Some(retry_after),
            error_code: "SubscriptionRequestsThrottled".to_owned(),
            message: format!(
                "Number of requests for subscription exceeded. Please try again after '{retry_after}' seconds \
                 after additional tokens are available. Refer to https://aka.ms/arm-throttling for additional information."
            ),
        }
    }

    /// `FailOperation` with this code and message.
    #[must_use]
    pub fn fail_operation(code: &str, message: &str) -> Self {
        Self::FailOperation {
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }

    /// A backup job that fails with this `errorCode` and `errorString`.
    #[must_use]
    pub fn fail_job(code: &str, message: &str) -> Self {
        Self::JobOutcome(JobOutcome::Failed {
            code: code.to_owned(),
            message: message.to_owned(),
        })
    }

    /// A backup job that is cancelled.
    #[must_use]
    pub fn cancel_job() -> Self {
        Self::JobOutcome(JobOutcome::Cancelled)
    }

    /// A backup job that ends `CompletedWithWarnings` (its recovery point is `CrashConsistent`).
    #[must_use]
    pub fn job_with_warnings() -> Self {
        Self::JobOutcome(JobOutcome::CompletedWithWarnings)
    }

    /// ARM's 403 `AuthorizationFailed` for `action` over `scope`, e.g.
    /// `Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/backup/action`.
    #[must_use]
    pub fn authorization_failed(action: &str, scope: &str) -> Self {
        Self::status(
            403,
            "AuthorizationFailed",
            &format!(
                "The client 'c7d6e1a0-0000-4000-8000-00000000e001' with object id \
                 'c7d6e1a0-0000-4000-8000-00000000e001' does not have authorization to perform action \
                 '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, \
                 please refresh your credentials."
            ),
        )
    }

    /// ARM's 403 `AuthorizationFailed` for the on-demand backup action over `vm`'s protected item (use it on
    /// [`Route::VmBackup`]).
    #[must_use]
    pub fn backup_authorization_failed(vm: &ProtectedVmRef) -> Self {
        Self::authorization_failed(
            "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/backup/action",
            &vm.item_id(),
        )
    }

    /// ARM's 403 `AuthorizationFailed` for `createBackup` on a backup location (use it on
    /// [`Route::StackCreateBackup`]).
    #[must_use]
    pub fn create_backup_authorization_failed(location: &BackupLocationRef) -> Self {
        Self::authorization_failed(
            "Microsoft.Backup.Admin/backupLocations/createBackup/action",
            &location.location_id(),
        )
    }

    /// `Answer` with this status and body.
    #[must_use]
    pub fn answer(status: u16, body: impl Into<String>) -> Self {
        Self::Answer {
            status,
            body: body.into(),
        }
    }

    /// Whether this is an outcome for an operation (`FailOperation`, `SkipBlob`) rather than an answer to a
    /// request.
    fn is_operation_outcome(&self) -> bool {
        matches!(
            self,
            Self::FailOperation { .. } | Self::SkipBlob | Self::JobOutcome(_)
        )
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Where it applies.
    pub route: Route,
    /// What happens.
    pub kind: FaultKind,
    /// How many matching requests (or operations) it affects; at least one.
    pub times: u32,
}

impl Fault {
    /// A fault that applies once.
    #[must_use]
    pub fn new(route: Route, kind: FaultKind) -> Self {
        Self {
            route,
            kind,
            times: 1,
        }
    }

    /// The same fault, applying `times` times.
    #[must_use]
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }
}

/// The queue of faults not yet used up.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    faults: VecDeque<Fault>,
}

impl FaultQueue {
    /// Adds a fault behind the others.
    pub(crate) fn push(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.faults.push_back(fault);
        }
    }

    /// Takes one use of the first fault answering a request on `route` (anything but `FailOperation` and
    /// `SkipBlob`).
    pub(crate) fn take_answer(&mut self, route: Route) -> Option<FaultKind> {
        self.take(|fault| fault.route.covers(route) && !fault.kind.is_operation_outcome())
    }

    /// Takes one use of the first `FailOperation` for a running operation of `kind` (`Backup` or `Restore`)
    /// found by a poll; it returns the error code and message.
    pub(crate) fn take_operation_failure(&mut self, kind: Route) -> Option<(String, String)> {
        let found = self.take(|fault| {
            matches!(fault.kind, FaultKind::FailOperation { .. })
                && (fault.route == kind
                    || fault.route == Route::Poll
                    || fault.route == Route::AnyArm)
        });
        match found {
            Some(FaultKind::FailOperation { code, message }) => Some((code, message)),
            _ => None,
        }
    }

    /// Takes one use of the first `SkipBlob`, for a backup operation that is completing; true when there was one.
    pub(crate) fn take_blob_skip(&mut self) -> bool {
        self.take(|fault| {
            fault.kind == FaultKind::SkipBlob
                && (fault.route == Route::Backup || fault.route == Route::AnyArm)
        })
        .is_some()
    }

    /// Takes one use of the first outcome fault for a Recovery Services backup being accepted: a
    /// `FailOperation` on `VmBackup`, `VmOperationStatus` or `AnyArm`, or a `JobOutcome` on `VmBackup`, `VmJob`
    /// or `AnyArm`.
    pub(crate) fn take_vm_outcome(&mut self) -> Option<FaultKind> {
        self.take(|fault| match fault.kind {
            FaultKind::FailOperation { .. } => matches!(
                fault.route,
                Route::VmBackup | Route::VmOperationStatus | Route::AnyArm
            ),
            FaultKind::JobOutcome(_) => {
                matches!(fault.route, Route::VmBackup | Route::VmJob | Route::AnyArm)
            }
            _ => false,
        })
    }

    fn take(&mut self, wanted: impl Fn(&Fault) -> bool) -> Option<FaultKind> {
        let index = self.faults.iter().position(wanted)?;
        let fault = &mut self.faults[index];
        fault.times -= 1;
        let kind = fault.kind.clone();
        if fault.times == 0 {
            self.faults.remove(index);
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_used_in_order_and_counted_down() {
        let mut queue = FaultQueue::default();
        queue.push(Fault::new(Route::Backup, FaultKind::Reset).times(2));
        queue.push(Fault::new(Route::AnyArm, FaultKind::Hang));
        queue.push(Fault::new(Route::Token, FaultKind::BadJson));
        assert_eq!(queue.take_answer(Route::GetService), Some(FaultKind::Hang));
        assert_eq!(queue.take_answer(Route::GetService), None);
        assert_eq!(queue.take_answer(Route::Backup), Some(FaultKind::Reset));
        assert_eq!(queue.take_answer(Route::Backup), Some(FaultKind::Reset));
        assert_eq!(queue.take_answer(Route::Backup), None);
        assert_eq!(queue.take_answer(Route::Token), Some(FaultKind::BadJson));
    }

    #[test]
    fn operation_failures_wait_for_a_poll_of_the_right_kind() {
        let mut queue = FaultQueue::default();
        queue.push(Fault::new(
            Route::Restore,
            FaultKind::fail_operation("RestoreFailed", "no"),
        ));
        assert_eq!(
            queue.take_answer(Route::Poll),
            None,
            "not an answer to a request"
        );
        assert_eq!(queue.take_operation_failure(Route::Backup), None);
        assert_eq!(
            queue.take_operation_failure(Route::Restore),
            Some(("RestoreFailed".to_owned(), "no".to_owned()))
        );
        assert_eq!(queue.take_operation_failure(Route::Restore), None);
    }

    #[test]
    fn answers_are_answers_and_blob_skips_are_not() {
        let mut queue = FaultQueue::default();
        queue.push(Fault::new(Route::Backup, FaultKind::SkipBlob).times(2));
        queue.push(Fault::new(Route::Restore, FaultKind::SkipBlob));
        queue.push(Fault::new(Route::Poll, FaultKind::answer(204, "")));
        assert_eq!(
            queue.take_answer(Route::Backup),
            None,
            "a skipped blob is not an answer to a request"
        );
        assert_eq!(queue.take_operation_failure(Route::Backup), None);
        assert_eq!(
            queue.take_answer(Route::Poll),
            Some(FaultKind::Answer {
                status: 204,
                body: String::new()
            })
        );
        assert!(queue.take_blob_skip());
        assert!(queue.take_blob_skip());
        assert!(!queue.take_blob_skip(), "a restore never skips a blob");
    }
}
