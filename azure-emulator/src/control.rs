//! The emulator's own control endpoints, for trying rpod by hand against the runnable emulator. They are not
//! ARM: no token, no throttling, no faults, no ARM headers; they are logged like every request.
//!
//! - `POST /emulator/subscriptions/{sub}/resourceGroups/{rg}/services/{name}/change` → 204: a configuration
//!   change now (`configurationChangeDate`, the etag and `lastModifiedAt` move), as
//!   [`crate::Emulator::make_change`].
//! - `PUT .../services/{name}/configurationChangeDate` with `{"configurationChangeDate":"<RFC 3339>"}` → 204:
//!   sets that date alone, as [`crate::Emulator::set_configuration_change_date`]; 400 on a bad body.
//!
//! Both answer 404 when no such service is hosted and 405 to other methods, with a short JSON error.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::ServiceSpec;
use crate::reply::{Reply, arm_error};
use crate::routes::{Control, ServicePath};
use crate::state::{State, service_key};

/// The path under which a service's control endpoints live, `/emulator/subscriptions/{sub}/resourceGroups/{rg}/
/// services/{name}`.
pub(crate) fn service_path(service: &ServiceSpec) -> String {
    format!(
        "/emulator/subscriptions/{}/resourceGroups/{}/services/{}",
        service.subscription, service.resource_group, service.name
    )
}

/// The field the `configurationChangeDate` body carries.
const DATE_FIELD: &str = "configurationChangeDate";

/// Answers a control request.
pub(crate) fn answer(
    state: &mut State,
    path: &ServicePath,
    action: Control,
    method: &str,
    body: &[u8],
) -> Reply {
    let allowed = match action {
        Control::Change => "POST",
        Control::ConfigurationChangeDate => "PUT",
    };
    if method != allowed {
        return arm_error(
            405,
            "MethodNotAllowed",
            &format!("This emulator control endpoint takes {allowed}, not {method}."),
        )
        .header("Allow", allowed);
    }
    let key = service_key(&path.subscription, &path.resource_group, &path.name);
    if !state.services.contains_key(&key) {
        return arm_error(
            404,
            "NotFound",
            &format!(
                "The emulator hosts no API Management service {}/{}/{}.",
                path.subscription, path.resource_group, path.name
            ),
        );
    }
    let found = match action {
        Control::Change => state.make_change(&key),
        Control::ConfigurationChangeDate => match parse_date(body) {
            Ok(at) => state.set_configuration_change_date(&key, at),
            Err(why) => return arm_error(400, "InvalidRequestContent", &why),
        },
    };
    debug_assert!(found, "checked above under the same lock");
    Reply::empty(204)
}

/// The date of a `{"configurationChangeDate":"<RFC 3339>"}` body, or why the body is refused.
fn parse_date(body: &[u8]) -> Result<DateTime<Utc>, String> {
    let expected = format!("expected {{\"{DATE_FIELD}\":\"2026-01-01T00:00:00Z\"}}");
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("The body is not JSON ({e}): {expected}."))?;
    let Value::Object(fields) = value else {
        return Err(format!("The body is not a JSON object: {expected}."));
    };
    if let Some(unknown) = fields.keys().find(|k| *k != DATE_FIELD) {
        return Err(format!("Unknown field '{unknown}': {expected}."));
    }
    let Some(Value::String(text)) = fields.get(DATE_FIELD) else {
        return Err(format!("'{DATE_FIELD}' must be a string: {expected}."));
    };
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| format!("'{text}' is not an RFC 3339 date ({e}): {expected}."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmulatorConfig;
    use crate::service::Service;

    fn hosting_svc() -> State {
        let mut state = State::new(EmulatorConfig::fast(), "http://127.0.0.1:1".to_owned());
        let now = state.now();
        state.services.insert(
            service_key("s1", "rg", "svc"),
            Service::new(ServiceSpec::new("s1", "rg", "svc"), now),
        );
        state
    }

    fn path(name: &str) -> ServicePath {
        ServicePath {
            subscription: "S1".into(),
            resource_group: "RG".into(),
            name: name.into(),
        }
    }

    fn snapshot(state: &State) -> crate::ServiceState {
        state.services[&service_key("s1", "rg", "svc")].snapshot()
    }

    #[test]
    fn the_service_path_parses_back_to_a_control_endpoint() {
        let spec = ServiceSpec::new("S1", "RG", "Svc");
        let parsed = crate::routes::parse(&format!("{}/change", service_path(&spec)));
        assert_eq!(
            parsed,
            crate::routes::Endpoint::Control {
                service: path("Svc"),
                action: Control::Change
            }
        );
    }

    #[test]
    fn a_change_moves_the_date_the_etag_and_last_modified() {
        let mut state = hosting_svc();
        let before = snapshot(&state);
        state.clock.advance(std::time::Duration::from_secs(5));
        let reply = answer(&mut state, &path("SVC"), Control::Change, "POST", b"");
        assert_eq!((reply.status, reply.body.as_str()), (204, ""));
        let after = snapshot(&state);
        assert_ne!(after.etag, before.etag);
        assert!(after.last_modified_at > before.last_modified_at);
        assert_eq!(after.configuration_change_date, after.last_modified_at);
    }

    #[test]
    fn setting_the_date_moves_nothing_else() {
        let mut state = hosting_svc();
        let before = snapshot(&state);
        let body = br#"{"configurationChangeDate":"2030-05-06T07:08:09Z"}"#;
        let reply = answer(
            &mut state,
            &path("svc"),
            Control::ConfigurationChangeDate,
            "PUT",
            body,
        );
        assert_eq!(reply.status, 204);
        let after = snapshot(&state);
        assert_eq!(
            after.configuration_change_date.to_rfc3339(),
            "2030-05-06T07:08:09+00:00"
        );
        assert_eq!(
            (after.etag, after.last_modified_at),
            (before.etag, before.last_modified_at)
        );
    }

    #[test]
    fn wrong_methods_unknown_services_and_bad_bodies_are_refused() {
        let mut state = hosting_svc();
        let before = snapshot(&state);
        let reply = answer(&mut state, &path("svc"), Control::Change, "GET", b"");
        assert_eq!(
            (reply.status, reply.header_value("Allow")),
            (405, Some("POST"))
        );
        let reply = answer(
            &mut state,
            &path("svc"),
            Control::ConfigurationChangeDate,
            "POST",
            b"",
        );
        assert_eq!(
            (reply.status, reply.header_value("Allow")),
            (405, Some("PUT"))
        );
        let reply = answer(&mut state, &path("other"), Control::Change, "POST", b"");
        assert_eq!(reply.status, 404);
        let error: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(error["error"]["code"], "NotFound");
        let reply = answer(
            &mut state,
            &path("svc"),
            Control::ConfigurationChangeDate,
            "PUT",
            b"{}",
        );
        assert_eq!(reply.status, 400);
        let error: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(error["error"]["code"], "InvalidRequestContent");
        assert_eq!(snapshot(&state), before, "nothing moved");
    }

    #[test]
    fn dates_are_rfc_3339_in_a_one_field_object() {
        let at = parse_date(br#"{"configurationChangeDate":"2026-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        let offset =
            parse_date(br#"{"configurationChangeDate":"2026-01-01T02:00:00.5+02:00"}"#).unwrap();
        assert_eq!(
            offset,
            DateTime::parse_from_rfc3339("2026-01-01T00:00:00.5Z").unwrap()
        );
        for bad in [
            &b""[..],
            b"not json",
            b"[]",
            b"{}",
            br#"{"configurationChangeDate":1}"#,
            br#"{"configurationChangeDate":"yesterday"}"#,
            br#"{"configurationChangeDate":"2026-01-01T00:00:00Z","x":1}"#,
        ] {
            let error = parse_date(bad).unwrap_err();
            assert!(
                error.contains("configurationChangeDate"),
                "{}: {error}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
