//! Service settings that live outside a backup, so a restore leaves them as they are on the destination:
//! custom hostnames with their certificate source ([`CustomHostname`], [`CertificateSource`]) and the virtual
//! network type ([`VirtualNetworkType`]). (The managed identity is the third; it is kept in
//! [`crate::ServiceSpec`]'s identity fields.) Also the JSON ARM shows for them.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Where the TLS certificate of a hostname comes from (`certificateSource` of a hostname configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertificateSource {
    /// The certificate API Management provides for `{name}.azure-api.net`.
    BuiltIn,
    /// A free certificate API Management manages for a custom domain.
    Managed,
    /// A certificate kept in Azure Key Vault (the resource then shows a `keyVaultId`).
    KeyVault,
    /// A certificate uploaded with the service.
    Custom,
}

impl CertificateSource {
    /// The value ARM writes: `BuiltIn`, `Managed`, `KeyVault` or `Custom`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BuiltIn => "BuiltIn",
            Self::Managed => "Managed",
            Self::KeyVault => "KeyVault",
            Self::Custom => "Custom",
        }
    }
}

impl fmt::Display for CertificateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CertificateSource {
    type Err = String;

    /// Parses ARM's value, ignoring case.
    fn from_str(text: &str) -> Result<Self, String> {
        [Self::BuiltIn, Self::Managed, Self::KeyVault, Self::Custom]
            .into_iter()
            .find(|source| source.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                format!("'{text}' is not a certificate source (BuiltIn, Managed, KeyVault, Custom)")
            })
    }
}

/// How the service is placed in a virtual network (`properties.virtualNetworkType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VirtualNetworkType {
    /// Not in a virtual network (the default).
    #[default]
    None,
    /// In a virtual network, with a public gateway.
    External,
    /// In a virtual network, reachable only from inside it.
    Internal,
}

impl VirtualNetworkType {
    /// The value ARM writes: `None`, `External` or `Internal`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::External => "External",
            Self::Internal => "Internal",
        }
    }
}

impl fmt::Display for VirtualNetworkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VirtualNetworkType {
    type Err = String;

    /// Parses ARM's value, ignoring case.
    fn from_str(text: &str) -> Result<Self, String> {
        [Self::None, Self::External, Self::Internal]
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                format!("'{text}' is not a virtual network type (None, External, Internal)")
            })
    }
}

/// A custom gateway (`Proxy`) hostname of a service, besides its default `{name}.azure-api.net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomHostname {
    /// The hostname, e.g. `api.contoso.example`.
    pub host_name: String,
    /// Where its certificate comes from.
    pub certificate_source: CertificateSource,
}

impl CustomHostname {
    /// A custom gateway hostname with a certificate from `certificate_source`.
    #[must_use]
    pub fn new(host_name: &str, certificate_source: CertificateSource) -> Self {
        Self {
            host_name: host_name.to_owned(),
            certificate_source,
        }
    }

    /// Its `hostnameConfigurations` entry, shaped like ARM's (2022-08-01 spec example with a Key Vault
    /// certificate): `keyVaultId` for a Key Vault certificate, `certificate` {expiry, thumbprint, subject} for
    /// every source but `BuiltIn`.
    fn json(&self, default_ssl_binding: bool) -> Value {
        let host = &self.host_name;
        let key_vault_id = (self.certificate_source == CertificateSource::KeyVault).then(|| {
            format!(
                "https://kv-emulator.vault.azure.net/secrets/{}",
                host.replace('.', "-")
            )
        });
        let certificate = (self.certificate_source != CertificateSource::BuiltIn).then(|| {
            json!({
                "expiry": "2036-01-01T00:00:00+00:00",
                "thumbprint": thumbprint(host),
                "subject": format!("CN={host}"),
            })
        });
        hostname_entry(
            host,
            key_vault_id.as_deref(),
            certificate.as_ref(),
            default_ssl_binding,
            self.certificate_source,
        )
    }
}

/// `properties.hostnameConfigurations`: the default `{name}.azure-api.net` gateway entry (certificate
/// `BuiltIn`), then the custom ones. As in the spec example, the first custom gateway hostname holds the
/// default SSL binding when there is one; otherwise the default hostname does.
pub(crate) fn hostname_configurations(name: &str, custom: &[CustomHostname]) -> Value {
    let default_entry = hostname_entry(
        &format!("{name}.azure-api.net"),
        None,
        None,
        custom.is_empty(),
        CertificateSource::BuiltIn,
    );
    let entries: Vec<Value> = std::iter::once(default_entry)
        .chain(
            custom
                .iter()
                .enumerate()
                .map(|(i, hostname)| hostname.json(i == 0)),
        )
        .collect();
    Value::Array(entries)
}

/// `properties.virtualNetworkConfiguration`: null outside a virtual network, else the subnet the service is in.
pub(crate) fn virtual_network_configuration(
    kind: VirtualNetworkType,
    subscription: &str,
    resource_group: &str,
) -> Value {
    if kind == VirtualNetworkType::None {
        return Value::Null;
    }
    json!({
        "subnetResourceId": format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Network/\
             virtualNetworks/vnet-apim/subnets/apim"
        ),
        "vnetid": "00000000-0000-0000-0000-000000000000",
        "subnetname": "apim"
    })
}

/// One `hostnameConfigurations` entry with every field the 2021 recording shows.
fn hostname_entry(
    host: &str,
    key_vault_id: Option<&str>,
    certificate: Option<&Value>,
    default_ssl_binding: bool,
    source: CertificateSource,
) -> Value {
    json!({
        "type": "Proxy",
        "hostName": host,
        "encodedCertificate": null,
        "keyVaultId": key_vault_id,
        "certificatePassword": null,
        "negotiateClientCertificate": false,
        "certificate": certificate,
        "defaultSslBinding": default_ssl_binding,
        "identityClientId": null,
        "certificateSource": source.as_str(),
    })
}

/// A stable certificate thumbprint for a hostname: 40 upper-case hex digits, like SHA-1 thumbprints.
fn thumbprint(host: &str) -> String {
    let digest = Sha256::digest(host.as_bytes());
    digest[..20].iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02X}");
        hex
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_ignoring_case() {
        for source in [
            CertificateSource::BuiltIn,
            CertificateSource::Managed,
            CertificateSource::KeyVault,
            CertificateSource::Custom,
        ] {
            assert_eq!(source.as_str().parse::<CertificateSource>(), Ok(source));
        }
        assert_eq!("keyvault".parse(), Ok(CertificateSource::KeyVault));
        assert!("Vault".parse::<CertificateSource>().is_err());
        for kind in [
            VirtualNetworkType::None,
            VirtualNetworkType::External,
            VirtualNetworkType::Internal,
        ] {
            assert_eq!(kind.to_string().parse::<VirtualNetworkType>(), Ok(kind));
        }
        assert_eq!("INTERNAL".parse(), Ok(VirtualNetworkType::Internal));
        assert!("Private".parse::<VirtualNetworkType>().is_err());
    }

    #[test]
    fn the_default_hostname_is_built_in_and_binds_ssl_until_a_custom_one_exists() {
        let alone = hostname_configurations("svc", &[]);
        assert_eq!(alone.as_array().map(Vec::len), Some(1));
        assert_eq!(alone[0]["type"], "Proxy");
        assert_eq!(alone[0]["hostName"], "svc.azure-api.net");
        assert_eq!(alone[0]["certificateSource"], "BuiltIn");
        assert_eq!(alone[0]["defaultSslBinding"], true);
        assert_eq!(alone[0]["negotiateClientCertificate"], false);
        assert_eq!(alone[0]["certificate"], Value::Null);

        let custom = [
            CustomHostname::new("api.contoso.example", CertificateSource::KeyVault),
            CustomHostname::new("api2.contoso.example", CertificateSource::Custom),
        ];
        let all = hostname_configurations("svc", &custom);
        assert_eq!(all.as_array().map(Vec::len), Some(3));
        assert_eq!(all[0]["defaultSslBinding"], false);
        assert_eq!(all[1]["hostName"], "api.contoso.example");
        assert_eq!(all[1]["certificateSource"], "KeyVault");
        assert_eq!(all[1]["defaultSslBinding"], true);
        assert_eq!(
            all[1]["keyVaultId"],
            "https://kv-emulator.vault.azure.net/secrets/api-contoso-example"
        );
        assert_eq!(all[1]["certificate"]["subject"], "CN=api.contoso.example");
        assert_eq!(
            all[1]["certificate"]["thumbprint"].as_str().map(str::len),
            Some(40)
        );
        assert_eq!(all[2]["certificateSource"], "Custom");
        assert_eq!(all[2]["defaultSslBinding"], false);
        assert_eq!(all[2]["keyVaultId"], Value::Null);
        assert!(all[2]["certificate"].is_object());
    }

    #[test]
    fn only_a_virtual_network_has_a_subnet() {
        assert_eq!(
            virtual_network_configuration(VirtualNetworkType::None, "s", "rg"),
            Value::Null
        );
        let internal = virtual_network_configuration(VirtualNetworkType::Internal, "s", "rg");
        assert_eq!(
            internal["subnetResourceId"],
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet-apim/subnets/apim"
        );
    }
}
