//! A service's content as ARM lists it: `GET .../service/{name}/apis`, `.../products` and
//! `.../portalRevisions`, each a collection `{"value":[...],"count":N,"nextLink":...}`.
//!
//! The items are generated from the service's counts: the first API is `echo-api` and the first products are
//! `starter` and `unlimited`, as on a new service (shaped like the 2024-05-01 spec examples); later ones are
//! `api-2`, `api-3`, ... and `product-3`, .... The developer portal has one current, completed revision while
//! it is published, and none otherwise.
//!
//! Paging: `$top` (at least 1) truncates `value`, `$skip` (at least 0) skips items; `count` is always the
//! total. When items remain after the page, `nextLink` is the same URL with `$skip` moved past the page (the
//! exact form real API Management uses is UNVERIFIED); otherwise it is null. A `$top` or `$skip` that is not
//! such a number is refused with 400 `ValidationError` (an emulator choice: Azure's answer is UNVERIFIED).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::apim::find;
use crate::reply::{Reply, apim_error};
use crate::routes::ServicePath;
use crate::service::{Service, iso};
use crate::state::State;

/// Which collection is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Collection {
    Apis,
    Products,
    PortalRevisions,
}

impl Collection {
    /// The path segment and the resource type's last part.
    fn segment(self) -> &'static str {
        match self {
            Self::Apis => "apis",
            Self::Products => "products",
            Self::PortalRevisions => "portalRevisions",
        }
    }
}

/// `GET .../service/{name}/{collection}?api-version=...[&$top=N][&$skip=M]`.
pub(crate) fn list(
    state: &State,
    path: &ServicePath,
    collection: Collection,
    api_version: &str,
    query: &str,
) -> Reply {
    let service = match find(state, path) {
        Ok((_, service)) => service,
        Err(reply) => return reply,
    };
    let (top, skip) = match paging(query) {
        Ok(paging) => paging,
        Err(reply) => return reply,
    };
    let items = items(service, collection);
    let count = items.len();
    let page: Vec<Value> = items
        .into_iter()
        .skip(skip)
        .take(top.unwrap_or(usize::MAX))
        .collect();
    let next_link = match top {
        Some(top) if skip.saturating_add(top) < count => Value::String(format!(
            "{}{}/{}?api-version={api_version}&%24top={top}&%24skip={}",
            state.base_url,
            service.spec.resource_id(),
            collection.segment(),
            skip + top
        )),
        _ => Value::Null,
    };
    Reply::json(
        200,
        &json!({"value": page, "count": count, "nextLink": next_link}),
    )
}

/// `$top` and `$skip` from a query string.
fn paging(query: &str) -> Result<(Option<usize>, usize), Reply> {
    let mut top = None;
    let mut skip = 0;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "$top" => match value.parse::<usize>() {
                Ok(n) if n >= 1 => top = Some(n),
                _ => return Err(validation("$top", &value, "a whole number from 1")),
            },
            "$skip" => {
                skip = value
                    .parse()
                    .map_err(|_| validation("$skip", &value, "a whole number from 0"))?;
            }
            _ => {}
        }
    }
    Ok((top, skip))
}

/// 400 `ValidationError` for a bad query parameter.
fn validation(name: &str, value: &str, wanted: &str) -> Reply {
    apim_error(
        400,
        "ValidationError",
        &format!("Invalid query parameter {name} '{value}': it must be {wanted}."),
    )
}

/// Every item of `collection` on `service`, in order.
fn items(service: &Service, collection: Collection) -> Vec<Value> {
    let spec = &service.spec;
    let count = match collection {
        Collection::Apis => spec.apis,
        Collection::Products => spec.products,
        Collection::PortalRevisions => u32::from(service.portal_revision().is_some()),
    };
    (1..=count)
        .map(|n| {
            let (name, properties) = match collection {
                Collection::Apis => api(n),
                Collection::Products => product(n),
                Collection::PortalRevisions => {
                    portal_revision(service.portal_revision().expect("counted above"))
                }
            };
            json!({
                "id": format!("{}/{}/{name}", spec.resource_id(), collection.segment()),
                "type": format!("Microsoft.ApiManagement/service/{}", collection.segment()),
                "name": name,
                "properties": properties,
            })
        })
        .collect()
}

/// The `n`th API (from 1): its name and properties.
fn api(n: u32) -> (String, Value) {
    let (name, display, path) = if n == 1 {
        (
            "echo-api".to_owned(),
            "Echo API".to_owned(),
            "echo".to_owned(),
        )
    } else {
        (format!("api-{n}"), format!("API {n}"), format!("api-{n}"))
    };
    let properties = json!({
        "displayName": display,
        "apiRevision": "1",
        "serviceUrl": "http://echoapi.cloudapp.net/api",
        "path": path,
        "protocols": ["https"],
        "subscriptionRequired": true,
        "isCurrent": true
    });
    (name, properties)
}

/// The `n`th product (from 1): its name and properties.
fn product(n: u32) -> (String, Value) {
    let (name, display, description, approval) = match n {
        1 => (
            "starter".to_owned(),
            "Starter".to_owned(),
            "Subscribers will be able to run 5 calls/minute up to a maximum of 100 calls/week.".to_owned(),
            false,
        ),
        2 => (
            "unlimited".to_owned(),
            "Unlimited".to_owned(),
            "Subscribers have completely unlimited access to the API. Administrator approval is required."
                .to_owned(),
            true,
        ),
        n => (
            format!("product-{n}"),
            format!("Product {n}"),
            format!("Product {n}."),
            false,
        ),
    };
    let properties = json!({
        "displayName": display,
        "description": description,
        "subscriptionRequired": true,
        "approvalRequired": approval,
        "subscriptionsLimit": 1,
        "state": "published"
    });
    (name, properties)
}

/// The current portal revision published at `at`: named after that time, like `20201112101010`.
fn portal_revision(at: DateTime<Utc>) -> (String, Value) {
    let properties = json!({
        "description": "Published developer portal",
        "statusDetails": null,
        "status": "completed",
        "isCurrent": true,
        "createdDateTime": iso(at),
        "updatedDateTime": iso(at)
    });
    (at.format("%Y%m%d%H%M%S").to_string(), properties)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EmulatorConfig, ServiceSpec};
    use crate::setting::Setting;
    use crate::state::service_key;

    const SVC: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ApiManagement/service/svc";

    fn hosting(spec: ServiceSpec) -> State {
        let mut state = State::new(EmulatorConfig::fast(), "http://127.0.0.1:1".to_owned());
        let now = state.now();
        state
            .services
            .insert(service_key("s1", "rg", "svc"), Service::new(spec, now));
        state
    }

    fn path() -> ServicePath {
        ServicePath {
            subscription: "S1".into(),
            resource_group: "RG".into(),
            name: "SVC".into(),
        }
    }

    fn get(state: &State, collection: Collection, query: &str) -> (u16, Value) {
        let reply = list(state, &path(), collection, "2024-05-01", query);
        let body = serde_json::from_str(&reply.body).expect("JSON");
        (reply.status, body)
    }

    fn names(page: &Value) -> Vec<&str> {
        page["value"]
            .as_array()
            .expect("a value array")
            .iter()
            .map(|item| item["name"].as_str().expect("a name"))
            .collect()
    }

    #[test]
    fn a_new_service_has_the_echo_api_and_two_products() {
        let state = hosting(ServiceSpec::new("s1", "rg", "svc"));
        let (status, apis) = get(&state, Collection::Apis, "api-version=2024-05-01");
        assert_eq!(status, 200);
        assert_eq!(names(&apis), ["echo-api"]);
        assert_eq!(apis["count"], 1);
        assert_eq!(apis["nextLink"], Value::Null);
        let echo = &apis["value"][0];
        assert_eq!(echo["id"], format!("{SVC}/apis/echo-api"));
        assert_eq!(echo["type"], "Microsoft.ApiManagement/service/apis");
        assert_eq!(echo["properties"]["displayName"], "Echo API");

        let (_, products) = get(&state, Collection::Products, "");
        assert_eq!(names(&products), ["starter", "unlimited"]);
        assert_eq!(products["count"], 2);
        assert_eq!(
            products["value"][1]["properties"]["displayName"],
            "Unlimited"
        );
        assert_eq!(
            products["value"][0]["type"],
            "Microsoft.ApiManagement/service/products"
        );
    }

    #[test]
    fn top_truncates_the_page_and_count_stays_the_total() {
        let state = hosting(ServiceSpec::new("s1", "rg", "svc").with_content(5, 4));
        let (_, all) = get(&state, Collection::Apis, "");
        assert_eq!(
            names(&all),
            ["echo-api", "api-2", "api-3", "api-4", "api-5"]
        );

        let (status, first) = get(&state, Collection::Apis, "api-version=2024-05-01&$top=1");
        assert_eq!(status, 200);
        assert_eq!(names(&first), ["echo-api"]);
        assert_eq!(first["count"], 5);
        assert_eq!(
            first["nextLink"],
            format!("http://127.0.0.1:1{SVC}/apis?api-version=2024-05-01&%24top=1&%24skip=1")
        );

        let (_, page) = get(&state, Collection::Products, "%24top=2&%24skip=2");
        assert_eq!(names(&page), ["product-3", "product-4"]);
        assert_eq!(page["count"], 4);
        assert_eq!(page["nextLink"], Value::Null, "nothing after the last page");
        let (_, past) = get(&state, Collection::Products, "$skip=9");
        assert_eq!((names(&past).len(), &past["count"]), (0, &json!(4)));
    }

    #[test]
    fn bad_paging_is_refused() {
        let state = hosting(ServiceSpec::new("s1", "rg", "svc"));
        for query in ["$top=0", "$top=-1", "$top=x", "$skip=-1", "$skip=1.5"] {
            let (status, error) = get(&state, Collection::Apis, query);
            assert_eq!(status, 400, "{query}");
            assert_eq!(error["error"]["code"], "ValidationError", "{query}");
        }
    }

    #[test]
    fn a_published_portal_has_one_current_completed_revision() {
        let mut state = hosting(ServiceSpec::new("s1", "rg", "svc"));
        let (status, revisions) = get(&state, Collection::PortalRevisions, "");
        assert_eq!(status, 200);
        assert_eq!(revisions["count"], 1);
        let current = &revisions["value"][0];
        assert_eq!(
            current["type"],
            "Microsoft.ApiManagement/service/portalRevisions"
        );
        assert_eq!(current["properties"]["isCurrent"], true);
        assert_eq!(current["properties"]["status"], "completed");
        let name = current["name"].as_str().unwrap();
        assert_eq!(name.len(), 14, "{name}");
        assert_eq!(current["id"], format!("{SVC}/portalRevisions/{name}"));

        let key = service_key("s1", "rg", "svc");
        assert!(state.apply(&key, Setting::PortalPublished(false)));
        let (_, none) = get(&state, Collection::PortalRevisions, "");
        assert_eq!((names(&none).len(), &none["count"]), (0, &json!(0)));

        state.clock.advance(std::time::Duration::from_hours(1));
        assert!(state.apply(&key, Setting::PortalPublished(true)));
        let (_, republished) = get(&state, Collection::PortalRevisions, "");
        assert_ne!(
            republished["value"][0]["name"], current["name"],
            "publishing again makes a new revision"
        );
    }

    #[test]
    fn an_unknown_service_is_not_found() {
        let state = hosting(ServiceSpec::new("s1", "rg", "svc"));
        let other = ServicePath {
            name: "other".into(),
            ..path()
        };
        let reply = list(&state, &other, Collection::Products, "2024-05-01", "");
        assert_eq!(reply.status, 404);
        assert!(reply.body.contains("ResourceNotFound"), "{}", reply.body);
    }
}
