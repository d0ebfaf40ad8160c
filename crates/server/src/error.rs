//! Errors as the clients expect them: OpenAI's `{"error": {"message", "type", "param",
//! "code"}}` on `/v1/...`, Ollama's `{"error": "..."}` on `/api/...`. Every refusal names the
//! request field it is about.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use minicpmv::ChatError;

/// Which API's error shape a route answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `/v1/...` and the server's own routes.
    OpenAi,
    /// `/api/...`.
    Ollama,
}

/// A refused or failed request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status (4xx for the client's mistakes).
    pub status: StatusCode,
    /// What is wrong, naming the field and the value.
    pub message: String,
    /// The request field it is about (`messages[0].content[1].image_url`), if one.
    pub param: Option<String>,
    /// OpenAI's error code (`context_length_exceeded`), if one applies.
    pub code: Option<&'static str>,
    /// Seconds after which a retry may succeed (429, 503).
    pub retry_after: Option<u32>,
    /// The shape of the body.
    pub flavor: Flavor,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn bad(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message).param(param)
    }

    /// An error with this status and message, in OpenAI's shape until [`ApiError::flavor`].
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            flavor: Flavor::OpenAi,
        }
    }

    /// Names the request field.
    pub fn param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// Sets OpenAI's error code.
    pub fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// Adds a `Retry-After` header.
    pub fn retry_after(mut self, secs: u32) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// Answers in this API's shape.
    pub fn flavor(mut self, flavor: Flavor) -> ApiError {
        self.flavor = flavor;
        self
    }

    /// OpenAI's `type` for this status.
    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// The error body.
    pub fn body(&self) -> serde_json::Value {
        let message = match (&self.param, self.flavor) {
            (Some(p), Flavor::Ollama) if !self.message.contains(p.as_str()) => {
                format!("{p}: {}", self.message)
            }
            _ => self.message.clone(),
        };
        match self.flavor {
            Flavor::Ollama => json!({ "error": message }),
            Flavor::OpenAi => json!({ "error": {
                "message": message,
                "type": self.kind(),
                "param": self.param,
                "code": self.code,
            }}),
        }
    }

    /// The error of a turn the engine could not run: the client's mistakes (images, sizes,
    /// settings) are 400s naming the messages, the rest are 500s.
    pub fn from_chat(err: &ChatError) -> ApiError {
        let message = err.to_string();
        match err {
            ChatError::ContextTooSmall { .. } => {
                ApiError::bad("messages", message).code("context_length_exceeded")
            }
            ChatError::MaxSlices(_) => ApiError::bad("max_slices", message),
            ChatError::Sampling(e) => ApiError::bad(e.field, message),
            ChatError::Thinking(_) => ApiError::bad("think", message),
            // The server's own fault, not the request's.
            ChatError::Video(minicpmv::vision::video::VideoError::NoFfmpeg { .. }) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
            }
            ChatError::Image(_)
            | ChatError::Slice { .. }
            | ChatError::Format(_)
            | ChatError::Nothing
            | ChatError::LastNotUser { .. }
            | ChatError::ImageChanged { .. }
            | ChatError::Video(_)
            | ChatError::VideoWithImages
            | ChatError::VideoChanged { .. } => ApiError::bad("messages", message),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_errors_name_the_field_and_ollama_errors_are_one_string() {
        let e = ApiError::bad("max_tokens", "max_tokens is -1; it must be 1 to 4096");
        assert_eq!(
            e.body(),
            json!({"error": {"message": "max_tokens is -1; it must be 1 to 4096",
                "type": "invalid_request_error", "param": "max_tokens", "code": null}})
        );
        let e = ApiError::bad("images[3]", "not base64").flavor(Flavor::Ollama);
        assert_eq!(e.body(), json!({"error": "images[3]: not base64"}));
    }

    #[test]
    fn statuses_map_to_openai_types() {
        let kind = |s| ApiError::new(s, "x").body()["error"]["type"].clone();
        assert_eq!(kind(StatusCode::TOO_MANY_REQUESTS), "rate_limit_error");
        assert_eq!(kind(StatusCode::UNAUTHORIZED), "authentication_error");
        assert_eq!(kind(StatusCode::PAYLOAD_TOO_LARGE), "invalid_request_error");
        assert_eq!(kind(StatusCode::INTERNAL_SERVER_ERROR), "server_error");
    }
}
