//! What the unit tests share: an in-process client that sends requests through the one request handler
//! (routing, faults, token, throttling, logging) without a socket, the readers of an answer's ARM error code and
//! operation id, and dates written as RFC 3339.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::Value;

use crate::fault::Fault;
use crate::handler::{Received, handle};
use crate::reply::{Outcome, Reply};
use crate::state::{Shared, State};

/// The base URL the state is hosted under (nothing listens there).
pub(crate) const BASE: &str = "http://127.0.0.1:1";

/// A hosted state and a token it accepts; requests go straight to the handler. `Area` is a marker type of the
/// test module, which adds the requests and reads of its area in its own `impl InProcess<Area>`.
pub(crate) struct InProcess<Area> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) token: String,
    area: PhantomData<Area>,
}

impl<Area> InProcess<Area> {
    /// Issues a token from `state`, then shares it.
    pub(crate) fn new(mut state: State) -> Self {
        let token = state.issue_token();
        Self {
            shared: Arc::new(Shared::new(state)),
            token,
            area: PhantomData,
        }
    }

    /// What the handler makes of a request, with `token` as its bearer token if any.
    pub(crate) fn outcome(
        &self,
        method: &str,
        path_and_query: &str,
        body: &str,
        token: Option<&str>,
    ) -> Outcome {
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let request = Received {
            method: method.to_owned(),
            path_and_query: path_and_query.to_owned(),
            headers,
            body: body.as_bytes().to_vec(),
        };
        handle(&self.shared, &request)
    }

    /// Sends a request with the token; the handler must answer it.
    pub(crate) fn send(&self, method: &str, path_and_query: &str, body: &str) -> Reply {
        match self.outcome(method, path_and_query, body, Some(&self.token)) {
            Outcome::Reply(reply) => reply,
            other => panic!("no reply: {other:?}"),
        }
    }

    pub(crate) fn get(&self, path_and_query: &str) -> Reply {
        self.send("GET", path_and_query, "")
    }

    /// GETs a 200 and reads its JSON.
    pub(crate) fn get_json(&self, path_and_query: &str) -> Value {
        let reply = self.get(path_and_query);
        assert_eq!(reply.status, 200, "{path_and_query}: {}", reply.body);
        serde_json::from_str(&reply.body).unwrap()
    }

    /// Moves the emulator's clock.
    pub(crate) fn advance(&self, by: Duration) {
        self.shared.lock().clock.advance(by);
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.shared.lock().now()
    }

    pub(crate) fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }
}

/// The ARM error code of a reply.
pub(crate) fn error_code(reply: &Reply) -> String {
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    body["error"]["code"].as_str().unwrap().to_owned()
}

/// The operation id in an operation URL, `.../operationResults/{id}?...`.
pub(crate) fn operation_id(url: &str) -> &str {
    url.split("/operationResults/")
        .nth(1)
        .and_then(|rest| rest.split('?').next())
        .unwrap()
}

/// An RFC 3339 date, in UTC.
pub(crate) fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}
