//! Backup and restore operations: what each one is doing, and the task that finishes it.
//!
//! An accepted operation runs for the configured duration (on Tokio's clock; restores for their own duration
//! when one is set). Then its task does the real work against storage: a backup writes a blob named exactly
//! `backupName` into `containerName` of the account (unless a `SkipBlob` fault is queued: then it succeeds
//! without writing anything) and records the source's SKU and content (API and product counts) as of
//! completion; a restore checks that the backup exists there, is not older than 30 days, and was taken from a
//! service of the same SKU, then gives the destination the backup's content. The outcome is kept, so every
//! later poll gets the same answer.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::blob::BlobStore;
use crate::config::StorageAccount;
use crate::service::{Content, iso};
use crate::state::{BackupRecord, BlobTarget, OperationKind, Progress, ServiceKey, Shared};

/// How long API Management backups stay restorable.
pub(crate) const BACKUP_LIFETIME: Duration = Duration::from_hours(30 * 24);

/// Waits for operation `id` to reach its end, does its storage work and records the outcome.
pub(crate) async fn run(shared: Arc<Shared>, id: String) {
    let Some(ends_at) = shared.lock().operations.get(&id).map(|op| op.ends_at) else {
        return;
    };
    tokio::select! {
        () = tokio::time::sleep_until(ends_at) => {}
        () = shared.cancel.cancelled() => return,
    }
    let Some((kind, target, skip_blob)) = running(&shared, &id) else {
        return;
    };
    let outcome = match kind {
        OperationKind::Backup if skip_blob => Ok(Success::BackedUp),
        OperationKind::Backup => write_backup(&shared, &id, &target)
            .await
            .map(|()| Success::BackedUp),
        OperationKind::Restore => check_restore(&shared, &id, &target)
            .await
            .map(Success::Restored),
    };
    finish(&shared, &id, outcome);
}

/// The kind and target of operation `id` if it is still running (a fault may have ended it), and whether it is
/// a backup that is to skip writing its blob (which takes one use of a `SkipBlob` fault).
fn running(shared: &Shared, id: &str) -> Option<(OperationKind, BlobTarget, bool)> {
    let mut state = shared.lock();
    let op = state.operations.get(id)?;
    if op.progress != Progress::Running {
        return None;
    }
    let (kind, target) = (op.kind, op.target.clone());
    let skip_blob = kind == OperationKind::Backup && state.faults.take_blob_skip();
    Some((kind, target, skip_blob))
}

/// A failure's code and message.
type Failure = (String, String);

/// What a successful operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Success {
    /// A backup: its record is taken from the source when it is recorded.
    BackedUp,
    /// A restore of a backup carrying this content.
    Restored(Content),
}

/// Writes the backup blob.
async fn write_backup(shared: &Shared, id: &str, target: &BlobTarget) -> Result<(), Failure> {
    let content = {
        let state = shared.lock();
        let op = &state.operations[id];
        let service = &state.services[&op.service];
        json!({
            "emulator": "rpod azure-emulator",
            "service": service.spec.resource_id(),
            "sku": {"name": service.spec.sku, "capacity": service.spec.capacity},
            "content": {"apis": service.spec.apis, "products": service.spec.products},
            "takenAt": iso(state.now()),
        })
        .to_string()
    };
    let failed = |why: String| {
        (
            "BackupFailed".to_owned(),
            format!(
                "Backup failed: could not write blob '{}' to container '{}' of storage account '{}': {why}",
                target.blob, target.container, target.account.name
            ),
        )
    };
    let store = store(&target.account).map_err(&failed)?;
    store
        .put_blob(&target.container, &target.blob, content)
        .await
        .map_err(|e| failed(e.to_string()))
}

/// Checks that the backup to restore exists, is young enough and matches the service's SKU; returns the content
/// it carries.
async fn check_restore(shared: &Shared, id: &str, target: &BlobTarget) -> Result<Content, Failure> {
    let fail = |message: String| Err(("RestoreFailed".to_owned(), message));
    let record = shared.lock().backups.get(&target.key()).cloned();
    let exists = match store(&target.account) {
        Ok(store) => store
            .blob_exists(&target.container, &target.blob)
            .await
            .unwrap_or(false),
        Err(_) => false,
    };
    let Some(record) = record.filter(|_| exists) else {
        return fail("Cannot restore: backup not found".to_owned());
    };
    let state = shared.lock();
    let age = (state.now() - record.completed_at)
        .to_std()
        .unwrap_or_default();
    if age >= BACKUP_LIFETIME {
        return fail("Cannot restore: backup expired".to_owned());
    }
    let op = &state.operations[id];
    let current = &state.services[&op.service].spec.sku;
    if !current.eq_ignore_ascii_case(&record.sku) {
        return fail(format!(
            "Cannot restore: current SKU is '{current}', backup SKU is '{}'",
            record.sku
        ));
    }
    Ok(record.content)
}

/// A client for an account's blob endpoint.
fn store(account: &StorageAccount) -> Result<BlobStore, String> {
    BlobStore::new(&account.name, &account.blob_endpoint, &account.key).map_err(|e| e.to_string())
}

/// Records the outcome of operation `id`, unless something else ended it meanwhile.
fn finish(shared: &Shared, id: &str, outcome: Result<Success, Failure>) {
    let mut state = shared.lock();
    let now = state.now();
    let region = state.config.region.clone();
    let Some(op) = state.operations.get(id) else {
        return;
    };
    if op.progress != Progress::Running {
        return;
    }
    let (service_key, target) = (op.service.clone(), op.target.clone());
    let progress = match outcome {
        Ok(success) => {
            let service = state
                .services
                .get_mut(&service_key)
                .expect("operations only exist for hosted services");
            service.busy_with = None;
            match success {
                Success::BackedUp => service.backed_up(now),
                Success::Restored(content) => service.restored(now, content),
            }
            // A backup records the source as of completion.
            let record = (success == Success::BackedUp).then(|| BackupRecord {
                sku: service.spec.sku.clone(),
                content: service.content(),
                completed_at: now,
            });
            let resource = service.resource_json(&region);
            if let Some(record) = record {
                state.backups.insert(target.key(), record);
            }
            Progress::Succeeded(resource)
        }
        Err((code, message)) => {
            release(&mut state.services, &service_key);
            Progress::Failed {
                status: 400,
                code,
                message,
            }
        }
    };
    if let Some(op) = state.operations.get_mut(id) {
        op.progress = progress;
    }
}

/// Marks a service idle again after a failed operation.
pub(crate) fn release(
    services: &mut std::collections::HashMap<ServiceKey, crate::service::Service>,
    key: &ServiceKey,
) {
    if let Some(service) = services.get_mut(key) {
        service.busy_with = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apim;
    use crate::config::{EmulatorConfig, ServiceSpec};
    use crate::routes::ServicePath;
    use crate::service::{Service, ServiceState};
    use crate::state::{State, service_key};
    use serde_json::Value;

    /// Shared state hosting `svc` with an account an operation may target; operations run an hour, so only
    /// the test finishes them.
    fn hosting_svc() -> Arc<Shared> {
        let config = EmulatorConfig {
            operation_duration: Duration::from_hours(1),
            ..EmulatorConfig::fast()
        };
        let mut state = State::new(config, "http://127.0.0.1:1".to_owned());
        let now = state.now();
        state.services.insert(
            service_key("s1", "rg", "svc"),
            Service::new(ServiceSpec::new("s1", "rg", "svc"), now),
        );
        state.accounts.insert(
            "acct".to_owned(),
            StorageAccount::new("acct", "http://127.0.0.1:9/acct", "a2V5"),
        );
        Arc::new(Shared::new(state))
    }

    fn path() -> ServicePath {
        ServicePath {
            subscription: "s1".into(),
            resource_group: "rg".into(),
            name: "svc".into(),
        }
    }

    fn snapshot(shared: &Shared) -> ServiceState {
        shared.lock().services[&service_key("s1", "rg", "svc")].snapshot()
    }

    /// Starts an operation of `kind` and returns its id.
    fn start(shared: &Arc<Shared>, kind: OperationKind) -> String {
        let body =
            br#"{"storageAccount":"acct","accessKey":"a2V5","containerName":"c","backupName":"b"}"#;
        let reply = apim::start(
            &mut shared.lock(),
            shared,
            &path(),
            kind,
            "2024-05-01",
            body,
        );
        assert_eq!(reply.status, 202, "{}", reply.body);
        let location = reply.header_value("Location").expect("a Location");
        let id = location.split("operationresults/").nth(1).expect("an id");
        id.split('?').next().expect("an id").to_owned()
    }

    fn advance(shared: &Shared) {
        shared.lock().clock.advance(Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_backup_moves_the_resource_when_accepted_and_completes_with_its_etag_of_completion() {
        let shared = hosting_svc();
        let before = snapshot(&shared);
        advance(&shared);
        let id = start(&shared, OperationKind::Backup);
        let running = snapshot(&shared);
        assert_eq!(running.provisioning_state, "Updating");
        assert_ne!(running.etag, before.etag, "accepting moves the etag");
        assert!(running.last_modified_at > before.last_modified_at);
        assert_eq!(
            running.configuration_change_date,
            before.configuration_change_date
        );
        assert_eq!(apim::poll(&mut shared.lock(), &path(), &id).status, 202);

        advance(&shared);
        finish(&shared, &id, Ok(Success::BackedUp));
        let done = snapshot(&shared);
        assert_eq!(done.provisioning_state, "Succeeded");
        assert_ne!(done.etag, running.etag, "completing moves the etag again");
        assert!(done.last_modified_at > running.last_modified_at);
        assert_eq!(
            done.configuration_change_date, before.configuration_change_date,
            "a backup changes no configuration"
        );
        let reply = apim::poll(&mut shared.lock(), &path(), &id);
        assert_eq!(reply.status, 200);
        let resource: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(resource["etag"], done.etag.as_str());
        assert_eq!(
            resource["systemData"]["lastModifiedAt"],
            iso(done.last_modified_at)
        );
        assert_eq!(resource["properties"]["provisioningState"], "Succeeded");
    }

    #[tokio::test]
    async fn a_restore_moves_the_resource_when_accepted_and_the_configuration_when_completed() {
        let shared = hosting_svc();
        let before = snapshot(&shared);
        advance(&shared);
        let id = start(&shared, OperationKind::Restore);
        let running = snapshot(&shared);
        assert_ne!(running.etag, before.etag);
        assert!(running.last_modified_at > before.last_modified_at);
        assert_eq!(
            running.configuration_change_date,
            before.configuration_change_date
        );

        advance(&shared);
        let restored = Content {
            apis: 4,
            products: 6,
        };
        finish(&shared, &id, Ok(Success::Restored(restored)));
        let done = snapshot(&shared);
        assert_ne!(done.etag, running.etag);
        assert_eq!((done.spec.apis, done.spec.products), (4, 6));
        assert_eq!(done.configuration_change_date, done.last_modified_at);
        assert!(done.configuration_change_date > running.last_modified_at);
        let reply = apim::poll(&mut shared.lock(), &path(), &id);
        let resource: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(resource["etag"], done.etag.as_str());
    }

    #[tokio::test]
    async fn a_refused_operation_moves_nothing() {
        let shared = hosting_svc();
        let before = snapshot(&shared);
        advance(&shared);
        let unknown_account =
            br#"{"storageAccount":"nope","accessKey":"a2V5","containerName":"c","backupName":"b"}"#;
        let reply = apim::start(
            &mut shared.lock(),
            &shared,
            &path(),
            OperationKind::Backup,
            "2024-05-01",
            unknown_account,
        );
        assert_eq!(reply.status, 400);
        assert_eq!(snapshot(&shared), before);
    }

    /// Applies `setting` to `svc`.
    fn set(shared: &Shared, setting: crate::setting::Setting) {
        assert!(
            shared
                .lock()
                .apply(&service_key("s1", "rg", "svc"), setting)
        );
    }

    #[tokio::test]
    async fn a_backup_records_the_content_as_of_its_completion() {
        let shared = hosting_svc();
        let id = start(&shared, OperationKind::Backup);
        set(
            &shared,
            crate::setting::Setting::Content(Content {
                apis: 9,
                products: 4,
            }),
        );
        finish(&shared, &id, Ok(Success::BackedUp));
        let state = shared.lock();
        let target = &state.operations[&id].target;
        let record = &state.backups[&target.key()];
        assert_eq!(record.sku, "Developer");
        assert_eq!(
            record.content,
            Content {
                apis: 9,
                products: 4
            }
        );
    }

    #[tokio::test]
    async fn a_restore_replaces_the_content_and_nothing_a_backup_does_not_carry() {
        use crate::setting::Setting;
        use crate::settings::{CertificateSource, CustomHostname, VirtualNetworkType};

        let shared = hosting_svc();
        set(&shared, Setting::PortalPublished(false));
        set(
            &shared,
            Setting::CustomHostname(CustomHostname::new(
                "api.contoso.example",
                CertificateSource::KeyVault,
            )),
        );
        set(
            &shared,
            Setting::Identity {
                system_assigned: false,
                user_assigned_client_ids: vec!["c1".into()],
            },
        );
        set(
            &shared,
            Setting::VirtualNetworkType(VirtualNetworkType::Internal),
        );
        let before = snapshot(&shared);
        let resource_before =
            shared.lock().services[&service_key("s1", "rg", "svc")].resource_json("westeurope");

        let id = start(&shared, OperationKind::Restore);
        finish(
            &shared,
            &id,
            Ok(Success::Restored(Content {
                apis: 12,
                products: 5,
            })),
        );
        let after = snapshot(&shared);
        assert_eq!((after.spec.apis, after.spec.products), (12, 5));
        let unchanged = |spec: &crate::config::ServiceSpec| {
            (
                spec.portal_published,
                spec.custom_hostnames.clone(),
                spec.system_identity,
                spec.user_identity_client_ids.clone(),
                spec.virtual_network_type,
            )
        };
        assert_eq!(unchanged(&after.spec), unchanged(&before.spec));

        let reply = apim::poll(&mut shared.lock(), &path(), &id);
        let resource: Value = serde_json::from_str(&reply.body).unwrap();
        for field in [
            &resource["identity"],
            &resource["properties"]["hostnameConfigurations"],
            &resource["properties"]["virtualNetworkType"],
            &resource["properties"]["virtualNetworkConfiguration"],
            &resource["properties"]["developerPortalStatus"],
        ] {
            assert!(!field.is_null());
        }
        assert_eq!(resource["identity"], resource_before["identity"]);
        assert_eq!(resource["identity"]["type"], "UserAssigned");
        assert_eq!(
            resource["properties"]["hostnameConfigurations"],
            resource_before["properties"]["hostnameConfigurations"]
        );
        assert_eq!(
            resource["properties"]["hostnameConfigurations"][1]["hostName"],
            "api.contoso.example"
        );
        assert_eq!(resource["properties"]["virtualNetworkType"], "Internal");
        assert_eq!(resource["properties"]["developerPortalStatus"], "Enabled");
    }

    #[tokio::test(start_paused = true)]
    async fn restores_take_their_own_duration_only_when_one_is_set() {
        let shared = hosting_svc();
        {
            let mut state = shared.lock();
            let now = state.now();
            state.services.insert(
                service_key("s1", "rg", "other"),
                Service::new(ServiceSpec::new("s1", "rg", "other"), now),
            );
        }
        let ends_in = |id: &str| {
            let state = shared.lock();
            state.operations[id].ends_at - tokio::time::Instant::now()
        };
        let restore = start(&shared, OperationKind::Restore);
        assert_eq!(
            ends_in(&restore),
            Duration::from_hours(1),
            "unset: the operation duration"
        );
        release(&mut shared.lock().services, &service_key("s1", "rg", "svc"));

        shared.lock().set_restore_duration(Duration::from_mins(30));
        let restore = start(&shared, OperationKind::Restore);
        assert_eq!(ends_in(&restore), Duration::from_mins(30));
        let body =
            br#"{"storageAccount":"acct","accessKey":"a2V5","containerName":"c","backupName":"b"}"#;
        let other = ServicePath {
            name: "other".into(),
            ..path()
        };
        let reply = apim::start(
            &mut shared.lock(),
            &shared,
            &other,
            OperationKind::Backup,
            "2024-05-01",
            body,
        );
        assert_eq!(reply.status, 202);
        let location = reply.header_value("Location").unwrap();
        let backup = location
            .split("operationresults/")
            .nth(1)
            .and_then(|rest| rest.split('?').next())
            .unwrap()
            .to_owned();
        assert_eq!(
            ends_in(&backup),
            Duration::from_hours(1),
            "backups keep theirs"
        );

        tokio::time::advance(Duration::from_mins(31)).await;
        assert_eq!(
            apim::poll(&mut shared.lock(), &other, &backup).status,
            202,
            "the backup still runs"
        );
    }

    #[tokio::test]
    async fn a_busy_service_answers_409_conflict_to_a_second_restore_or_a_backup() {
        let shared = hosting_svc();
        let id = start(&shared, OperationKind::Restore);
        let running = snapshot(&shared);
        let body =
            br#"{"storageAccount":"acct","accessKey":"a2V5","containerName":"c","backupName":"b"}"#;
        for kind in [OperationKind::Restore, OperationKind::Backup] {
            let reply = apim::start(
                &mut shared.lock(),
                &shared,
                &path(),
                kind,
                "2024-05-01",
                body,
            );
            assert_eq!(reply.status, 409, "{kind:?}");
            let error: Value = serde_json::from_str(&reply.body).unwrap();
            assert_eq!(error["error"]["code"], "Conflict", "{kind:?}");
            assert!(
                error["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Another operation is in progress")),
                "{error}"
            );
            assert_eq!(reply.header_value("Location"), None);
        }
        assert_eq!(snapshot(&shared), running, "the refusals moved nothing");
        assert_eq!(shared.lock().operations.len(), 1);
        assert_eq!(apim::poll(&mut shared.lock(), &path(), &id).status, 202);
    }
}
