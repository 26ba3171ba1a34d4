//! The emulator's own control endpoints, for trying rpod by hand against the runnable emulator. They are not
//! ARM: no token, no throttling, no faults, no ARM headers; they are logged like every request. All live under
//! `/emulator/subscriptions/{sub}/resourceGroups/{rg}/services/{name}` and answer 204 when done:
//!
//! - `POST .../change` (no body): a configuration change now (`configurationChangeDate`, the etag and
//!   `lastModifiedAt` move), as [`crate::Emulator::make_change`].
//! - `PUT .../configurationChangeDate` with `{"configurationChangeDate":"<RFC 3339>"}`: sets that date alone, as
//!   [`crate::Emulator::set_configuration_change_date`].
//! - `PUT .../content` with `{"apis":5,"products":3}`, as [`crate::Emulator::set_content`].
//! - `PUT .../portalPublished` with `{"published":false}`, as [`crate::Emulator::set_portal_published`].
//! - `PUT .../customHostname` with `{"hostName":"api.contoso.example","certificateSource":"KeyVault"}` (one of
//!   `BuiltIn`, `Managed`, `KeyVault`, `Custom`), as [`crate::Emulator::set_custom_hostname`].
//! - `PUT .../identity` with `{"type":"SystemAssigned, UserAssigned","userAssignedClientIds":["<client id>"]}`
//!   (type `None`, `SystemAssigned`, `UserAssigned` or both; the client ids only and always with
//!   `UserAssigned`), as [`crate::Emulator::set_identity`].
//! - `PUT .../virtualNetworkType` with `{"virtualNetworkType":"Internal"}` (`None`, `External`, `Internal`), as
//!   [`crate::Emulator::set_virtual_network_type`].
//!
//! Every endpoint answers 400 `InvalidRequestContent` to a body it cannot read, 404 `NotFound` when no such
//! service is hosted and 405 `MethodNotAllowed` to another method, with a short JSON error; a refused request
//! changes nothing. The method check, the 404 and the body reader are shared with the Recovery Services and
//! Azure Stack Hub control endpoints (`vm_control`, `stack_control`).

use serde_json::{Map, Value};

use crate::config::ServiceSpec;
use crate::reply::{Reply, arm_error};
use crate::routes::{Control, ServicePath};
use crate::setting::Setting;
use crate::state::{State, service_key};

/// The path under which a service's control endpoints live, `/emulator/subscriptions/{sub}/resourceGroups/{rg}/
/// services/{name}`.
pub(crate) fn service_path(service: &ServiceSpec) -> String {
    format!(
        "/emulator/subscriptions/{}/resourceGroups/{}/services/{}",
        service.subscription, service.resource_group, service.name
    )
}

/// Answers a control request.
pub(crate) fn answer(
    state: &mut State,
    path: &ServicePath,
    action: Control,
    method: &str,
    body: &[u8],
) -> Reply {
    if let Some(reply) = check_method(action.method(), method) {
        return reply;
    }
    let key = service_key(&path.subscription, &path.resource_group, &path.name);
    if !state.services.contains_key(&key) {
        return not_hosted(&format!(
            "API Management service {}/{}/{}",
            path.subscription, path.resource_group, path.name
        ));
    }
    let setting = match Setting::parse(action, body) {
        Ok(setting) => setting,
        Err(why) => return arm_error(400, "InvalidRequestContent", &why),
    };
    let found = state.apply(&key, setting);
    debug_assert!(found, "checked above under the same lock");
    Reply::empty(204)
}

/// 405 with `Allow` unless `method` is `allowed`.
pub(crate) fn check_method(allowed: &str, method: &str) -> Option<Reply> {
    (method != allowed).then(|| {
        arm_error(
            405,
            "MethodNotAllowed",
            &format!("This emulator control endpoint takes {allowed}, not {method}."),
        )
        .header("Allow", allowed)
    })
}

/// A JSON object with no keys besides `allowed`.
pub(crate) fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => match fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(format!(
                "'{unknown}' is not a field here; expected some of {allowed:?}."
            )),
            None => Ok(fields),
        },
        Ok(_) => Err("the body must be a JSON object.".to_owned()),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

/// 404 `NotFound`: the emulator hosts no `what`.
pub(crate) fn not_hosted(what: &str) -> Reply {
    arm_error(404, "NotFound", &format!("The emulator hosts no {what}."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmulatorConfig;
    use crate::service::Service;
    use crate::settings::{CertificateSource, CustomHostname, VirtualNetworkType};
    use serde_json::Value;

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
    fn the_settings_endpoints_change_the_service() {
        let mut state = hosting_svc();
        let mut put = |action, body: &str| {
            answer(&mut state, &path("svc"), action, "PUT", body.as_bytes()).status
        };
        assert_eq!(put(Control::Content, r#"{"apis":5,"products":3}"#), 204);
        assert_eq!(put(Control::PortalPublished, r#"{"published":false}"#), 204);
        assert_eq!(
            put(
                Control::CustomHostname,
                r#"{"hostName":"api.contoso.example","certificateSource":"KeyVault"}"#
            ),
            204
        );
        assert_eq!(
            put(
                Control::Identity,
                r#"{"type":"UserAssigned","userAssignedClientIds":["c1"]}"#
            ),
            204
        );
        assert_eq!(
            put(
                Control::VirtualNetworkType,
                r#"{"virtualNetworkType":"External"}"#
            ),
            204
        );
        assert_eq!(put(Control::Content, r#"{"apis":"many"}"#), 400);
        let spec = snapshot(&state).spec;
        assert_eq!((spec.apis, spec.products), (5, 3));
        assert!(!spec.portal_published);
        assert_eq!(
            spec.custom_hostnames,
            [CustomHostname::new(
                "api.contoso.example",
                CertificateSource::KeyVault
            )]
        );
        assert!(!spec.system_identity);
        assert_eq!(spec.user_identity_client_ids, ["c1"]);
        assert_eq!(spec.virtual_network_type, VirtualNetworkType::External);
        let reply = answer(&mut state, &path("svc"), Control::Identity, "POST", b"{}");
        assert_eq!(
            (reply.status, reply.header_value("Allow")),
            (405, Some("PUT"))
        );
    }
}
