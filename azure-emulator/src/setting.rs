//! A change a test makes to one hosted service, through the [`crate::Emulator`] handle or a control endpoint,
//! and the reading of a control endpoint's JSON body into one.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::routes::Control;
use crate::service::{Content, Service};
use crate::settings::{CertificateSource, CustomHostname, VirtualNetworkType};

/// One change to a hosted service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Setting {
    /// A configuration change now: `configurationChangeDate`, the etag and `lastModifiedAt` move.
    Change,
    /// `configurationChangeDate` alone.
    ConfigurationChangeDate(DateTime<Utc>),
    /// The API and product counts.
    Content(Content),
    /// Whether the developer portal has a current published revision.
    PortalPublished(bool),
    /// Add or replace a custom gateway hostname.
    CustomHostname(CustomHostname),
    /// The managed identities.
    Identity {
        system_assigned: bool,
        user_assigned_client_ids: Vec<String>,
    },
    /// The virtual network type.
    VirtualNetworkType(VirtualNetworkType),
}

impl Setting {
    /// Applies the change to `service` at `now`.
    pub(crate) fn apply(self, service: &mut Service, now: DateTime<Utc>) {
        match self {
            Self::Change => service.change_configuration(now),
            Self::ConfigurationChangeDate(at) => service.set_configuration_change_date(at),
            Self::Content(content) => service.set_content(content, now),
            Self::PortalPublished(published) => service.set_portal_published(published, now),
            Self::CustomHostname(hostname) => service.set_custom_hostname(hostname, now),
            Self::Identity {
                system_assigned,
                user_assigned_client_ids,
            } => service.set_identity(system_assigned, user_assigned_client_ids, now),
            Self::VirtualNetworkType(kind) => service.set_virtual_network_type(kind, now),
        }
    }

    /// Reads the body of a control request for `action`, or says why it is refused.
    pub(crate) fn parse(action: Control, body: &[u8]) -> Result<Self, String> {
        match action {
            Control::Change => Ok(Self::Change),
            Control::ConfigurationChangeDate => {
                let fields = object(body, &["configurationChangeDate"], DATE_EXAMPLE)?;
                let text = string(&fields, "configurationChangeDate", DATE_EXAMPLE)?;
                DateTime::parse_from_rfc3339(text)
                    .map(|at| Self::ConfigurationChangeDate(at.with_timezone(&Utc)))
                    .map_err(|e| {
                        format!("'{text}' is not an RFC 3339 date ({e}): expected {DATE_EXAMPLE}.")
                    })
            }
            Control::Content => {
                let fields = object(body, &["apis", "products"], CONTENT_EXAMPLE)?;
                Ok(Self::Content(Content {
                    apis: count(&fields, "apis")?,
                    products: count(&fields, "products")?,
                }))
            }
            Control::PortalPublished => {
                let fields = object(body, &["published"], PORTAL_EXAMPLE)?;
                match fields.get("published") {
                    Some(Value::Bool(published)) => Ok(Self::PortalPublished(*published)),
                    _ => Err(format!(
                        "'published' must be true or false: expected {PORTAL_EXAMPLE}."
                    )),
                }
            }
            Control::CustomHostname => {
                let fields = object(body, &["hostName", "certificateSource"], HOSTNAME_EXAMPLE)?;
                let host_name = string(&fields, "hostName", HOSTNAME_EXAMPLE)?;
                if host_name.is_empty() || host_name.contains(['/', ' ']) {
                    return Err(format!(
                        "'{host_name}' is not a hostname: expected {HOSTNAME_EXAMPLE}."
                    ));
                }
                let source: CertificateSource =
                    string(&fields, "certificateSource", HOSTNAME_EXAMPLE)?
                        .parse()
                        .map_err(|e| format!("{e}: expected {HOSTNAME_EXAMPLE}."))?;
                Ok(Self::CustomHostname(CustomHostname::new(host_name, source)))
            }
            Control::Identity => parse_identity(body),
            Control::VirtualNetworkType => {
                let fields = object(body, &["virtualNetworkType"], NETWORK_EXAMPLE)?;
                string(&fields, "virtualNetworkType", NETWORK_EXAMPLE)?
                    .parse()
                    .map(Self::VirtualNetworkType)
                    .map_err(|e| format!("{e}: expected {NETWORK_EXAMPLE}."))
            }
        }
    }
}

/// Example bodies, quoted in the errors.
const DATE_EXAMPLE: &str = r#"{"configurationChangeDate":"2026-01-01T00:00:00Z"}"#;
const CONTENT_EXAMPLE: &str = r#"{"apis":5,"products":3}"#;
const PORTAL_EXAMPLE: &str = r#"{"published":false}"#;
const HOSTNAME_EXAMPLE: &str =
    r#"{"hostName":"api.contoso.example","certificateSource":"KeyVault"}"#;
const IDENTITY_EXAMPLE: &str =
    r#"{"type":"SystemAssigned, UserAssigned","userAssignedClientIds":["<client id>"]}"#;
const NETWORK_EXAMPLE: &str = r#"{"virtualNetworkType":"Internal"}"#;

/// `{"type": "None" | "SystemAssigned" | "UserAssigned" | "SystemAssigned, UserAssigned",
/// "userAssignedClientIds": [...]}`: the client ids are required with `UserAssigned` and refused without it.
fn parse_identity(body: &[u8]) -> Result<Setting, String> {
    let fields = object(body, &["type", "userAssignedClientIds"], IDENTITY_EXAMPLE)?;
    let kind = string(&fields, "type", IDENTITY_EXAMPLE)?;
    let (mut system_assigned, mut user_assigned) = (false, false);
    for part in kind.split(',').map(str::trim) {
        match part.to_ascii_lowercase().as_str() {
            "none" if kind.trim().eq_ignore_ascii_case("none") => {}
            "systemassigned" if !system_assigned => system_assigned = true,
            "userassigned" if !user_assigned => user_assigned = true,
            _ => {
                return Err(format!(
                    "'{kind}' is not an identity type (None, SystemAssigned, UserAssigned, \
                     \"SystemAssigned, UserAssigned\"): expected {IDENTITY_EXAMPLE}."
                ));
            }
        }
    }
    let client_ids = match fields.get("userAssignedClientIds") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| match id {
                Value::String(id) if !id.is_empty() => Ok(id.clone()),
                _ => Err(format!(
                    "'userAssignedClientIds' must hold non-empty strings: expected {IDENTITY_EXAMPLE}."
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(format!(
                "'userAssignedClientIds' must be an array: expected {IDENTITY_EXAMPLE}."
            ));
        }
    };
    if user_assigned == client_ids.is_empty() {
        return Err(format!(
            "'userAssignedClientIds' is required with a UserAssigned type and only then: expected \
             {IDENTITY_EXAMPLE}."
        ));
    }
    Ok(Setting::Identity {
        system_assigned,
        user_assigned_client_ids: client_ids,
    })
}

/// The body as a JSON object with no fields but `allowed`.
fn object(body: &[u8], allowed: &[&str], example: &str) -> Result<Map<String, Value>, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("The body is not JSON ({e}): expected {example}."))?;
    let Value::Object(fields) = value else {
        return Err(format!(
            "The body is not a JSON object: expected {example}."
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("Unknown field '{unknown}': expected {example}."));
    }
    Ok(fields)
}

/// A required string field.
fn string<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
    example: &str,
) -> Result<&'a str, String> {
    match fields.get(name) {
        Some(Value::String(text)) => Ok(text),
        _ => Err(format!("'{name}' must be a string: expected {example}.")),
    }
}

/// A required count: a whole number from 0 to `u32::MAX`.
fn count(fields: &Map<String, Value>, name: &str) -> Result<u32, String> {
    fields
        .get(name)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            format!("'{name}' must be a whole number from 0: expected {CONTENT_EXAMPLE}.")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(action: Control, body: &str) -> Result<Setting, String> {
        Setting::parse(action, body.as_bytes())
    }

    #[test]
    fn dates_are_rfc_3339_in_a_one_field_object() {
        let at = |text: &str| match parse(Control::ConfigurationChangeDate, text) {
            Ok(Setting::ConfigurationChangeDate(at)) => at,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(
            at(r#"{"configurationChangeDate":"2026-01-01T00:00:00Z"}"#).to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(
            at(r#"{"configurationChangeDate":"2026-01-01T02:00:00.5+02:00"}"#),
            DateTime::parse_from_rfc3339("2026-01-01T00:00:00.5Z").unwrap()
        );
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"configurationChangeDate":1}"#,
            r#"{"configurationChangeDate":"yesterday"}"#,
            r#"{"configurationChangeDate":"2026-01-01T00:00:00Z","x":1}"#,
        ] {
            let error = parse(Control::ConfigurationChangeDate, bad).unwrap_err();
            assert!(error.contains("configurationChangeDate"), "{bad}: {error}");
        }
    }

    #[test]
    fn content_is_two_counts() {
        assert_eq!(
            parse(Control::Content, r#"{"apis":5,"products":0}"#),
            Ok(Setting::Content(Content {
                apis: 5,
                products: 0
            }))
        );
        for bad in [
            r#"{"apis":5}"#,
            r#"{"apis":-1,"products":1}"#,
            r#"{"apis":1.5,"products":1}"#,
            r#"{"apis":"5","products":1}"#,
            r#"{"apis":4294967296,"products":1}"#,
            r#"{"apis":1,"products":1,"policies":1}"#,
        ] {
            let error = parse(Control::Content, bad).unwrap_err();
            assert!(error.contains(CONTENT_EXAMPLE), "{bad}: {error}");
        }
    }

    #[test]
    fn the_portal_is_published_or_not() {
        assert_eq!(
            parse(Control::PortalPublished, r#"{"published":false}"#),
            Ok(Setting::PortalPublished(false))
        );
        for bad in [r#"{"published":"no"}"#, "{}", r#"{"isCurrent":true}"#] {
            assert!(parse(Control::PortalPublished, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_custom_hostname_has_a_name_and_a_certificate_source() {
        assert_eq!(
            parse(
                Control::CustomHostname,
                r#"{"hostName":"api.contoso.example","certificateSource":"keyvault"}"#
            ),
            Ok(Setting::CustomHostname(CustomHostname::new(
                "api.contoso.example",
                CertificateSource::KeyVault
            )))
        );
        for bad in [
            r#"{"hostName":"api.contoso.example"}"#,
            r#"{"hostName":"","certificateSource":"Custom"}"#,
            r#"{"hostName":"a/b","certificateSource":"Custom"}"#,
            r#"{"hostName":"api.contoso.example","certificateSource":"Vault"}"#,
        ] {
            let error = parse(Control::CustomHostname, bad).unwrap_err();
            assert!(error.contains(HOSTNAME_EXAMPLE), "{bad}: {error}");
        }
    }

    #[test]
    fn identities_take_arm_types_and_client_ids_only_with_user_assigned() {
        let identity = |body: &str| parse(Control::Identity, body);
        assert_eq!(
            identity(r#"{"type":"None"}"#),
            Ok(Setting::Identity {
                system_assigned: false,
                user_assigned_client_ids: vec![]
            })
        );
        assert_eq!(
            identity(r#"{"type":"SystemAssigned"}"#),
            Ok(Setting::Identity {
                system_assigned: true,
                user_assigned_client_ids: vec![]
            })
        );
        assert_eq!(
            identity(
                r#"{"type":"SystemAssigned,UserAssigned","userAssignedClientIds":["c1","c2"]}"#
            ),
            Ok(Setting::Identity {
                system_assigned: true,
                user_assigned_client_ids: vec!["c1".into(), "c2".into()]
            })
        );
        for bad in [
            r#"{"type":"UserAssigned"}"#,
            r#"{"type":"UserAssigned","userAssignedClientIds":[]}"#,
            r#"{"type":"SystemAssigned","userAssignedClientIds":["c1"]}"#,
            r#"{"type":"None, SystemAssigned"}"#,
            r#"{"type":"SystemAssigned, SystemAssigned"}"#,
            r#"{"type":"Managed"}"#,
            r#"{"type":"UserAssigned","userAssignedClientIds":"c1"}"#,
            r#"{"type":"UserAssigned","userAssignedClientIds":[""]}"#,
        ] {
            let error = identity(bad).unwrap_err();
            assert!(error.contains("expected {"), "{bad}: {error}");
        }
    }

    #[test]
    fn virtual_network_types_are_arm_values() {
        assert_eq!(
            parse(
                Control::VirtualNetworkType,
                r#"{"virtualNetworkType":"External"}"#
            ),
            Ok(Setting::VirtualNetworkType(VirtualNetworkType::External))
        );
        assert!(
            parse(
                Control::VirtualNetworkType,
                r#"{"virtualNetworkType":"Private"}"#
            )
            .is_err()
        );
    }
}
