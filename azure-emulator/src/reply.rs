//! Answers as the handlers build them, before they become HTTP responses, and the error bodies of ARM, API
//! Management and Entra ID.

use rand::Rng as _;
use serde_json::{Value, json};

/// What to do with a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Send this answer.
    Reply(Reply),
    /// Close the connection with a TCP reset, answering nothing.
    Reset,
    /// Never answer.
    Hang,
}

/// One HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    /// An answer with no body.
    pub(crate) fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// An answer with a JSON body.
    pub(crate) fn json(status: u16, body: &Value) -> Self {
        Self::empty(status)
            .header("Content-Type", "application/json; charset=utf-8")
            .with_body(body.to_string())
    }

    /// The same answer with one more header.
    // By value so that callers can pass numbers and strings alike.
    #[allow(clippy::needless_pass_by_value)]
    pub(crate) fn header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.push((name.to_owned(), value.to_string()));
        self
    }

    /// The same answer with this body.
    pub(crate) fn with_body(mut self, body: String) -> Self {
        self.body = body;
        self
    }

    /// The value of a header, if set.
    pub(crate) fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An ARM error: `{"error":{"code","message"}}`.
pub(crate) fn arm_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

/// An API Management error, which adds `"details":null,"innerError":null` to the ARM shape.
pub(crate) fn apim_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"code": code, "message": message, "details": null, "innerError": null}}),
    )
}

/// A plain OAuth error, as AD FS and the managed identity endpoints write it: `{"error","error_description"}`.
pub(crate) fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// An Entra ID (AADSTS) error: `{"error","error_description","error_codes",...}`.
pub(crate) fn entra_error(status: u16, error: &str, aadsts: u32, description: &str) -> Reply {
    Reply::json(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{aadsts}: {description}"),
            "error_codes": [aadsts],
            "trace_id": uuid_like(),
            "correlation_id": uuid_like(),
        }),
    )
}

/// A random id in the 8-4-4-4-12 hex form Azure uses for request ids.
pub(crate) fn uuid_like() -> String {
    let n: u128 = rand::rng().random();
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A body that claims to be JSON and is not (for the `BadJson` fault).
pub(crate) fn bad_json() -> Reply {
    Reply::empty(200)
        .header("Content-Type", "application/json; charset=utf-8")
        .with_body("<html><body>upstream error</body></html>{\"truncated\": ".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_uuids() {
        let id = uuid_like();
        let lengths: Vec<_> = id.split('-').map(str::len).collect();
        assert_eq!(lengths, [8, 4, 4, 4, 12]);
        assert_ne!(id, uuid_like());
    }

    #[test]
    fn bad_json_does_not_parse() {
        assert!(serde_json::from_str::<Value>(&bad_json().body).is_err());
    }
}
