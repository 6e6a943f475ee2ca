//! The server API's errors: each one an HTTP status, a stable `code` and a message that
//! says what was wrong and what to do, sent as `{"error":{"code":..,"message":..}}`.

use hyper::StatusCode;

/// Why a server API request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: apikey KEY` header, or the wrong key.
    #[error("missing or wrong API key: send the header `Authorization: apikey KEY`")]
    Unauthorized,
    /// No such method.
    #[error("no API method at {0}; methods are POST /api/{{{methods}}}", methods = METHODS.join(","))]
    NotFound(String),
    /// Not a POST.
    #[error("use POST with a JSON body")]
    MethodNotAllowed,
    /// The body is over the limit.
    #[error(
        "the request body is over {limit} bytes; send less (split a batch) or raise --api-max-body-bytes"
    )]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Bad JSON, a missing or unknown field, a value out of range.
    #[error("{0}")]
    BadRequest(String),
    /// The fleet is starting or stopping.
    #[error("the fleet is not serving (starting or stopping); retry shortly")]
    NotServing,
    /// A history request the room cannot answer (history off, epoch changed).
    #[error("{message}")]
    History {
        /// The client protocol's error code (`history_off`, `epoch_changed`, `unavailable`).
        code: String,
        /// What was wrong.
        message: String,
    },
}

/// The methods, as the 404 answer lists them.
pub const METHODS: &[&str] = &[
    "publish",
    "publish_batch",
    "broadcast",
    "history",
    "presence",
    "presence_stats",
    "rooms",
    "disconnect",
    "info",
];

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotServing => StatusCode::SERVICE_UNAVAILABLE,
            Self::History { code, .. } => match code.as_str() {
                "history_off" => StatusCode::NOT_FOUND,
                "epoch_changed" => StatusCode::CONFLICT,
                // With --redis, the room's instance is unreachable.
                "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// The stable code in the error body.
    pub fn code(&self) -> &str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::TooLarge { .. } => "too_large",
            Self::BadRequest(_) => "bad_request",
            Self::NotServing => "not_serving",
            Self::History { code, .. } => code,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}})
    }
}

impl From<super::calls::NotServing> for ApiError {
    fn from(_: super::calls::NotServing) -> Self {
        Self::NotServing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_status_a_code_and_a_message_that_says_what_to_do() {
        let e = ApiError::TooLarge { limit: 10 };
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.body()["error"]["code"], "too_large");
        assert!(e.to_string().contains("--api-max-body-bytes"));
        let e = ApiError::NotFound("/api/nope".into());
        assert!(e.to_string().contains("publish_batch"), "{e}");
        let e = ApiError::History {
            code: "epoch_changed".into(),
            message: "m".into(),
        };
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::CONFLICT, "epoch_changed")
        );
    }
}
