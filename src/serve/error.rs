//! The one error type every route answers with, and its mapping to HTTP status codes.
//!
//! Every failure a client can cause or see becomes an [`ApiError`], rendered as
//! `{"error": "<message>"}` with the matching status, the shape the KServe v2 protocol asks
//! for and one a SageMaker client reads just as well.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a request was not answered with a prediction.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: bad JSON, a wrong shape, an out-of-range value. 400.
    #[error("{0}")]
    BadRequest(String),
    /// An image could not be decoded. 400.
    #[error("cannot decode {what}: {reason}")]
    Undecodable {
        /// Which image ("the image", "instance 3", ...).
        what: String,
        /// The decoder's explanation.
        reason: String,
    },
    /// The body is over the size limit or holds too many images. 413.
    #[error("{0}")]
    TooLarge(String),
    /// The `Content-Type` is not one this route reads. 415.
    #[error(
        "unsupported content type {0:?}: send image/jpeg, image/png, application/x-image, \
         application/json or application/jsonlines"
    )]
    UnsupportedMediaType(String),
    /// The `Accept` header rules out JSON, the only thing the server answers with. 406.
    #[error(
        "cannot answer in any of {0:?}: this server answers application/json (send Accept: application/json or */*)"
    )]
    NotAcceptable(String),
    /// A KServe route named a model this server does not serve. 404.
    #[error("unknown model {name:?}: this server serves {served:?}")]
    UnknownModel {
        /// The name in the request path.
        name: String,
        /// The name this server answers to.
        served: String,
    },
    /// No route matches the path. 404.
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// The route exists but not with this method. 405.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// The queue in front of the model is full. 429, with `Retry-After: 1`.
    #[error("server busy: the queue of {0} requests is full; retry shortly")]
    Overloaded(usize),
    /// The server is at a limit that frees itself (body memory, connections). 503, with
    /// `Retry-After: 1`.
    #[error("{0}")]
    Busy(String),
    /// The request's body did not arrive in time. 408.
    #[error("{0}")]
    Timeout(String),
    /// The model thread has stopped (the server is shutting down). 503.
    #[error("the model is not running (the server is shutting down); retry on another instance")]
    Unavailable,
    /// A fault inside the server, not the client's doing. 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Undecodable { .. } => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::UnknownModel { .. } | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy(_) | ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // A server at its limits refuses many requests a second: those are not faults to log.
        if status.is_server_error() && !matches!(self, ApiError::Busy(_)) {
            tracing::error!("{self}");
        } else {
            tracing::debug!("{status}: {self}");
        }
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if matches!(self, ApiError::Overloaded(_) | ApiError::Busy(_)) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A path whose parameters cannot be read (a model name that is not UTF-8 once decoded): 400,
/// with the JSON body every error has.
impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(format!("cannot read the request path: {}", rejection.body_text()))
    }
}

/// A body that could not be read: over the limit (413) or cut off (400).
impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!(
                "request body is over the {} byte limit; send fewer or smaller images per request",
                super::BODY_LIMIT
            ))
        } else {
            ApiError::BadRequest(format!("cannot read the request body: {}", rejection.body_text()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_status() {
        let cases = [
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::Undecodable { what: "the image".into(), reason: "x".into() }, 400),
            (ApiError::TooLarge("x".into()), 413),
            (ApiError::UnsupportedMediaType("text/plain".into()), 415),
            (ApiError::NotAcceptable("text/html".into()), 406),
            (ApiError::UnknownModel { name: "a".into(), served: "b".into() }, 404),
            (ApiError::NotFound("/x".into()), 404),
            (ApiError::MethodNotAllowed { method: "GET".into(), path: "/x".into() }, 405),
            (ApiError::Overloaded(3), 429),
            (ApiError::Busy("x".into()), 503),
            (ApiError::Timeout("x".into()), 408),
            (ApiError::Unavailable, 503),
            (ApiError::Internal("x".into()), 500),
        ];
        for (error, code) in cases {
            assert_eq!(error.status().as_u16(), code, "{error}");
        }
    }

    #[test]
    fn overload_and_busy_say_when_to_retry() {
        let response = ApiError::Overloaded(8).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response = ApiError::Busy("x".into()).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert!(!ApiError::Unavailable.into_response().headers().contains_key(header::RETRY_AFTER));
    }
}
