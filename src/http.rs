//! The one way `classify` downloads: a GET with timeouts, its errors as sentences for a
//! person. Used for datasets ([`crate::data::download`]) and weights
//! ([`crate::model::weights`]); callers stream the body and check it themselves.

use std::time::Duration;

/// Seconds to wait for a connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Seconds a single read may stall before the download is abandoned (no total limit: files
/// are large and links can be slow).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A GET of `url` with the timeouts above; an HTTP error status is an error.
///
/// # Errors
/// The connection failed, stalled, or the server answered with an error status.
pub fn get(url: &str) -> Result<ureq::http::Response<ureq::Body>, String> {
    let agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .build()
        .new_agent();
    agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => format!("the server answered HTTP {code}"),
        other => other.to_string(),
    })
}
