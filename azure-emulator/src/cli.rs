//! The runnable emulator, for trying rpod by hand:
//! `cargo run --example azure-emulator -- [--port N] [--retry-after S] [--duration 30s]
//! [--restore-duration 2m] [--service SUB/RG/NAME[:SKU]]... [--protected-vm SUB/VAULT_RG/VAULT/VM_RG/VM]...
//! [--vm-job-duration 5m] [--backup-location SUB/RG/LOCATION]... [--stack-backup-duration 30m]
//! [--tls [--ca-file PATH]] [--azurite]`.
//!
//! It prints the base URL, an rpod configuration snippet, the managed identity environment and how to make a
//! change to a service by hand (the control endpoints), then serves until Ctrl-C. With `--tls` it serves HTTPS
//! and writes its test CA's certificate to `--ca-file` (or prints it).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::{
    Azurite, BackupLocationSpec, Emulator, EmulatorConfig, ProtectedVmSpec, ServiceSpec,
    StorageAccount, control, stack_control, vm_control,
};

/// Container created in Azurite for backups.
const CONTAINER: &str = "apim-backups";

/// Command line of the runnable emulator.
#[derive(Debug, Parser)]
#[command(
    name = "azure-emulator",
    about = "A loopback emulator of Azure Resource Manager (API Management backup and restore) and token endpoints"
)]
pub struct Args {
    /// Loopback port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Retry-After seconds on 202 answers.
    #[arg(long, default_value_t = 60)]
    pub retry_after: u64,
    /// How long a backup or restore runs, e.g. 30s or 9m.
    #[arg(long, default_value = "9m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long a restore runs, e.g. 30m (default: --duration).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub restore_duration: Option<Duration>,
    /// A hosted API Management service, `SUBSCRIPTION/RESOURCE_GROUP/NAME[:SKU]` (SKU default Developer).
    #[arg(long = "service", value_name = "SUB/RG/NAME[:SKU]", value_parser = parse_service)]
    pub services: Vec<ServiceSpec>,
    /// A VM protected in a Recovery Services vault, `SUBSCRIPTION/VAULT_RESOURCE_GROUP/VAULT/VM_RESOURCE_GROUP/VM`
    /// (daily default policy, `Protected`).
    #[arg(long = "protected-vm", value_name = "SUB/VAULT_RG/VAULT/VM_RG/VM", value_parser = parse_protected_vm)]
    pub protected_vms: Vec<ProtectedVmSpec>,
    /// How long a VM backup job runs, e.g. 5m (Azure: about an hour).
    #[arg(long, default_value = "71m", value_parser = humantime::parse_duration)]
    pub vm_job_duration: Duration,
    /// An Azure Stack Hub backup location, `SUBSCRIPTION/RESOURCE_GROUP/LOCATION` (e.g. `sub/System.local/local`;
    /// 7 days of retention, scheduler off, an encryption certificate, 60 GB free).
    #[arg(long = "backup-location", value_name = "SUB/RG/LOCATION", value_parser = parse_backup_location)]
    pub backup_locations: Vec<BackupLocationSpec>,
    /// How long an Azure Stack Hub backup runs, e.g. 2m (a stamp: 20 to 40 minutes).
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub stack_backup_duration: Duration,
    /// Serve HTTPS only, with a certificate from a test CA generated at start.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: where to write the test CA's certificate (PEM); without, it is printed.
    #[arg(long, value_name = "PATH", requires = "tls")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Start Azurite (from `node_modules`) and register its account, so backups write real blobs.
    #[arg(long)]
    pub azurite: bool,
    /// Value the App Service managed identity endpoint expects in x-identity-header.
    #[arg(long, default_value = "emulator-identity-header")]
    pub identity_header: String,
}

/// Parses `SUB/RG/NAME[:SKU]`.
fn parse_service(text: &str) -> Result<ServiceSpec, String> {
    let (path, sku) = text.split_once(':').unwrap_or((text, "Developer"));
    match path.split('/').collect::<Vec<_>>().as_slice() {
        [sub, rg, name]
            if !sub.is_empty() && !rg.is_empty() && !name.is_empty() && !sku.is_empty() =>
        {
            Ok(ServiceSpec::new(sub, rg, name).with_sku(sku, 1))
        }
        _ => Err(format!(
            "expected SUBSCRIPTION/RESOURCE_GROUP/NAME[:SKU], got {text:?}"
        )),
    }
}

/// Parses `SUB/VAULT_RG/VAULT/VM_RG/VM`.
fn parse_protected_vm(text: &str) -> Result<ProtectedVmSpec, String> {
    match text.split('/').collect::<Vec<_>>().as_slice() {
        [sub, vault_rg, vault, vm_rg, vm]
            if [sub, vault_rg, vault, vm_rg, vm]
                .iter()
                .all(|s| !s.is_empty()) =>
        {
            Ok(ProtectedVmSpec::new(sub, vault_rg, vault, vm_rg, vm))
        }
        _ => Err(format!(
            "expected SUBSCRIPTION/VAULT_RESOURCE_GROUP/VAULT/VM_RESOURCE_GROUP/VM, got {text:?}"
        )),
    }
}

/// Parses `SUB/RG/LOCATION`.
fn parse_backup_location(text: &str) -> Result<BackupLocationSpec, String> {
    match text.split('/').collect::<Vec<_>>().as_slice() {
        [sub, rg, location] if [sub, rg, location].iter().all(|s| !s.is_empty()) => {
            Ok(BackupLocationSpec::new(sub, rg, location))
        }
        _ => Err(format!(
            "expected SUBSCRIPTION/RESOURCE_GROUP/LOCATION, got {text:?}"
        )),
    }
}

/// Parses the process's arguments, runs until Ctrl-C, and reports failures on stderr.
#[must_use]
pub fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("azure-emulator: cannot start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("azure-emulator: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the emulator (and Azurite if asked), prints how to point rpod at it, and serves until Ctrl-C.
///
/// # Errors
/// When the port cannot be bound, the CA file cannot be written, Azurite cannot start or its container cannot
/// be created, or Ctrl-C cannot be listened for.
pub async fn run(args: Args) -> std::io::Result<()> {
    let config = EmulatorConfig {
        port: args.port,
        retry_after_secs: args.retry_after,
        operation_duration: args.duration,
        restore_duration: args.restore_duration,
        vm_job_duration: args.vm_job_duration,
        identity_header: args.identity_header,
        stack_backup_duration: args.stack_backup_duration,
        tls: args.tls,
        ..EmulatorConfig::default()
    };
    let emulator = Emulator::start(config).await?;
    if let (Some(path), Some(pem)) = (&args.ca_file, emulator.ca_pem()) {
        std::fs::write(path, pem)?;
    }
    for location in &args.backup_locations {
        emulator.add_backup_location(location.clone());
    }
    for service in &args.services {
        emulator.add_service(service.clone());
    }
    for vm in &args.protected_vms {
        emulator.add_protected_vm(vm.clone());
    }
    let azurite = if args.azurite {
        let azurite = Azurite::start().await?;
        azurite
            .create_container(CONTAINER)
            .await
            .map_err(std::io::Error::other)?;
        emulator.add_account(StorageAccount::azurite(&azurite));
        Some(azurite)
    } else {
        None
    };
    println!(
        "{}",
        instructions(
            &emulator,
            &args.services,
            &args.protected_vms,
            azurite.as_ref()
        )
    );
    println!(
        "{}",
        stack_instructions(&emulator, &args.backup_locations, args.ca_file.as_deref())
    );
    tokio::signal::ctrl_c().await?;
    emulator.shutdown().await;
    drop(azurite);
    Ok(())
}

/// What the emulator prints on start.
fn instructions(
    emulator: &Emulator,
    services: &[ServiceSpec],
    vms: &[ProtectedVmSpec],
    azurite: Option<&Azurite>,
) -> String {
    let base = emulator.base_url();
    let mut text = format!("Azure emulator listening on {base}\n\n# rpod configuration\n");
    let _ = write!(
        text,
        "[azure]\ncredential = \"managed_identity\"\nresource_manager_endpoint = \"{base}\"\n\n"
    );
    let (account, endpoint) = match azurite {
        Some(azurite) => (azurite.account().to_owned(), azurite.blob_endpoint()),
        None => (
            "emulatorstorage".to_owned(),
            "http://127.0.0.1:10000/emulatorstorage".to_owned(),
        ),
    };
    let _ = write!(
        text,
        "[storage.apim]\nkind = \"azure_blob\"\naccount = \"{account}\"\ncontainer = \"{CONTAINER}\"\n\
         endpoint = \"{endpoint}\"\naccess = \"access_key\"\naccess_key_env = \"RPOD_STORAGE_KEY\"\n\
         auth = \"access_key\"\n"
    );
    let example = ServiceSpec::new(
        "00000000-0000-0000-0000-000000000000",
        "rg-apim",
        "apim-demo",
    );
    let shown = if services.is_empty() {
        std::slice::from_ref(&example)
    } else {
        services
    };
    for service in shown {
        let _ = write!(
            text,
            "\n[[targets]]\nname = \"{}\"\nkind = \"apim\"\nsubscription_id = \"{}\"\nresource_group = \"{}\"\n\
             service = \"{}\"\nstorage = \"apim\"\n",
            service.name, service.subscription, service.resource_group, service.name
        );
    }
    if services.is_empty() {
        text.push_str(
            "# (no --service given: the target above is an example the emulator does not host)\n",
        );
    }
    let _ = write!(
        text,
        "\n# environment for rpod (managed identity, App Service style)\nIDENTITY_ENDPOINT={}\n\
         IDENTITY_HEADER={}\n",
        emulator.identity_endpoint(),
        emulator.identity_header()
    );
    match azurite {
        Some(azurite) => {
            let _ = writeln!(text, "RPOD_STORAGE_KEY={}", azurite.key());
        }
        None => text.push_str(
            "# (no --azurite: no storage account is registered, so backups are refused)\n",
        ),
    }
    text.push_str(
        "\n# make a change by hand (emulator control endpoints: not ARM, no token needed)\n\
         # a configuration change now: configurationChangeDate, the etag and lastModifiedAt move\n",
    );
    for service in shown {
        let _ = writeln!(
            text,
            "curl -X POST {base}{}/change",
            control::service_path(service)
        );
    }
    text.push_str(
        "# set configurationChangeDate alone (the etag and lastModifiedAt stay, as for changes ARM's resource \
         does not show)\n",
    );
    for service in shown {
        let _ = writeln!(
            text,
            "curl -X PUT -H 'Content-Type: application/json' \
             -d '{{\"configurationChangeDate\":\"2026-01-01T00:00:00Z\"}}' {base}{}/configurationChangeDate",
            control::service_path(service)
        );
    }
    text.push_str(
        "# set the API and product counts (a backup carries them, a restore replaces them); also under the same \
         path: portalPublished, customHostname, identity, virtualNetworkType (see the crate documentation)\n",
    );
    for service in shown {
        let _ = writeln!(
            text,
            "curl -X PUT -H 'Content-Type: application/json' -d '{{\"apis\":5,\"products\":3}}' {base}{}/content",
            control::service_path(service)
        );
    }
    text.push_str(&vm_instructions(&base, vms));
    text.push_str("\nServing until Ctrl-C.");
    text
}

/// What the emulator prints about Azure Stack Hub: the stamp's endpoints, its backup locations with their
/// control endpoints, and the CA to trust over HTTPS.
fn stack_instructions(
    emulator: &Emulator,
    locations: &[BackupLocationSpec],
    ca_file: Option<&std::path::Path>,
) -> String {
    let base = emulator.base_url();
    let mut text = String::new();
    match (emulator.ca_pem(), ca_file) {
        (Some(_), Some(path)) => {
            let _ = writeln!(
                text,
                "\n# HTTPS: trust the test CA written to {}",
                path.display()
            );
        }
        (Some(pem), None) => {
            let _ = write!(text, "\n# HTTPS: trust this test CA\n{pem}");
        }
        (None, _) => {}
    }
    if locations.is_empty() {
        return text;
    }
    let _ = writeln!(
        text,
        "\n# Azure Stack Hub: metadata {base}/metadata/endpoints?api-version=2015-01-01, AD FS \
         {base}/adfs/oauth2/token\n# backup locations (Microsoft.Backup.Admin), then control endpoints (see the \
         crate documentation)"
    );
    for location in locations {
        let reference = location.reference();
        let control = stack_control::location_path(&reference);
        let _ = writeln!(text, "# {base}{}", reference.location_id());
        let _ = writeln!(
            text,
            "curl -X PUT -H 'Content-Type: application/json' -d '{{\"enabled\":true}}' {base}{control}/scheduler"
        );
        let _ = writeln!(
            text,
            "curl -X PUT -H 'Content-Type: application/json' -d '{{\"condition\":\"Unreachable\"}}' \
             {base}{control}/shareCondition"
        );
    }
    text
}

/// What the emulator prints about protected VMs: their ARM item ids and control endpoints.
fn vm_instructions(base: &str, vms: &[ProtectedVmSpec]) -> String {
    let mut text = String::new();
    if !vms.is_empty() {
        text.push_str(
            "\n# protected VMs (Recovery Services): ARM item ids, then control endpoints (see the crate \
             documentation)\n",
        );
    }
    for vm in vms {
        let reference = vm.reference();
        let control = vm_control::vm_path(&reference);
        let _ = writeln!(text, "# {base}{}", reference.item_id());
        let _ = writeln!(
            text,
            "curl -X POST -H 'Content-Type: application/json' \
             -d '{{\"expiryTime\":\"2099-01-01T00:00:00Z\"}}' {base}{control}/policyRecoveryPoints"
        );
        let _ = writeln!(
            text,
            "curl -X PUT -H 'Content-Type: application/json' \
             -d '{{\"protectionState\":\"ProtectionStopped\"}}' {base}{control}/protectionState"
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_parsed_with_an_optional_sku() {
        let service = parse_service("sub/rg/name").unwrap();
        assert_eq!(
            (service.subscription.as_str(), service.sku.as_str()),
            ("sub", "Developer")
        );
        assert_eq!(parse_service("sub/rg/name:Premium").unwrap().sku, "Premium");
        assert!(parse_service("sub/rg").is_err());
        assert!(parse_service("sub/rg/name:").is_err());
    }

    #[tokio::test]
    async fn the_banner_shows_how_to_make_a_change() {
        let emulator = Emulator::start(EmulatorConfig::fast()).await.unwrap();
        let base = emulator.base_url();
        let services = [ServiceSpec::new("sub", "rg", "apim-1")];
        let vms = [ProtectedVmSpec::new(
            "sub", "rg-vault", "vault-1", "rg-vm", "vm-1",
        )];
        let text = instructions(&emulator, &services, &vms, None);
        assert!(
            text.contains(&format!(
                "{base}/emulator/subscriptions/sub/resourceGroups/rg-vault/vaults/vault-1/protectedVms/rg-vm/vm-1\
                 /policyRecoveryPoints\n"
            )),
            "{text}"
        );
        let service =
            format!("{base}/emulator/subscriptions/sub/resourceGroups/rg/services/apim-1");
        assert!(
            text.contains(&format!("curl -X POST {service}/change\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "-d '{{\"configurationChangeDate\":\"2026-01-01T00:00:00Z\"}}' {service}/configurationChangeDate\n"
            )),
            "{text}"
        );
        let example = instructions(&emulator, &[], &[], None);
        assert!(example.contains("/services/apim-demo/change"), "{example}");
        assert!(
            text.contains(&format!(
                "-d '{{\"apis\":5,\"products\":3}}' {service}/content\n"
            )),
            "{text}"
        );
        emulator.shutdown().await;
    }

    #[test]
    fn arguments_parse() {
        let args = Args::try_parse_from([
            "azure-emulator",
            "--duration",
            "30s",
            "--service",
            "s/rg/a",
            "--service",
            "s/rg/b:Standard",
            "--azurite",
        ])
        .unwrap();
        assert_eq!(args.duration, Duration::from_secs(30));
        assert_eq!(args.restore_duration, None, "restores take --duration");
        assert_eq!(args.services.len(), 2);
        assert!(args.azurite);
        let args = Args::try_parse_from([
            "azure-emulator",
            "--protected-vm",
            "s/rg-vault/vault-1/rg-vm/vm-1",
            "--vm-job-duration",
            "5m",
        ])
        .unwrap();
        assert_eq!(args.protected_vms[0].vm, "vm-1");
        assert_eq!(args.vm_job_duration, Duration::from_mins(5));
        assert!(Args::try_parse_from(["azure-emulator", "--protected-vm", "s/rg/vault"]).is_err());
        let args = Args::try_parse_from(["azure-emulator", "--restore-duration", "30m"]).unwrap();
        assert_eq!(
            (args.duration, args.restore_duration),
            (Duration::from_mins(9), Some(Duration::from_mins(30)))
        );
        assert!(Args::try_parse_from(["azure-emulator", "--restore-duration", "soon"]).is_err());
        let args = Args::try_parse_from([
            "azure-emulator",
            "--backup-location",
            "s/System.local/local",
            "--stack-backup-duration",
            "2m",
            "--tls",
        ])
        .unwrap();
        assert_eq!(args.backup_locations[0].location, "local");
        assert_eq!(args.stack_backup_duration, Duration::from_mins(2));
        assert!(args.tls);
        assert!(Args::try_parse_from(["azure-emulator", "--backup-location", "s/rg"]).is_err());
        assert!(Args::try_parse_from(["azure-emulator", "--ca-file", "ca.pem"]).is_err());
    }

    #[tokio::test]
    async fn the_banner_shows_the_stamp_and_the_ca() {
        let emulator = Emulator::start(EmulatorConfig {
            tls: true,
            ..EmulatorConfig::fast()
        })
        .await
        .unwrap();
        let base = emulator.base_url();
        assert!(base.starts_with("https://127.0.0.1:"), "{base}");
        let locations = [BackupLocationSpec::new("s", "System.local", "local")];
        let text = stack_instructions(&emulator, &locations, None);
        assert!(text.contains("-----BEGIN CERTIFICATE-----"), "{text}");
        assert!(
            text.contains(&format!(
                "{base}/emulator/subscriptions/s/resourceGroups/System.local/backupLocations/local/scheduler\n"
            )),
            "{text}"
        );
        let text = stack_instructions(&emulator, &[], Some(std::path::Path::new("ca.pem")));
        assert!(text.contains("written to ca.pem"), "{text}");
        emulator.shutdown().await;
    }
}
