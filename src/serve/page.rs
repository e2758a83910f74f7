//! `GET /`: a one-file web page to try the model: drop or pick an image and see the top-5
//! classes as bars. Inline HTML, CSS and JavaScript that load nothing from elsewhere; it
//! posts the file to `/invocations` like any SageMaker client.

use axum::http::header;
use axum::response::IntoResponse;

/// The page itself.
pub const PAGE: &str = include_str!("page.html");

/// What the page may do: its own inline script and style, images from the picked file
/// (`blob:`), requests to this server only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'";

/// `GET /`.
pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        PAGE,
    )
}
