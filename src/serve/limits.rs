//! What one client may hold of the server: connections, time and memory.
//!
//! | limit | default | beyond it |
//! | --- | --- | --- |
//! | open connections ([`Limits::max_connections`]) | 1024 | [`OVERFLOW_CONNECTIONS`] more are answered on health routes only (503 elsewhere, then closed); past those, closed at once |
//! | a request's head, and an idle keep-alive connection ([`Limits::header_timeout`]) | 10 s | the connection is closed |
//! | a request's body ([`Limits::body_timeout`]) | 60 s | 408 |
//! | bytes of request bodies held at once, all requests together ([`Limits::body_memory`]) | 256 MiB | 503, with `Retry-After: 1` |
//!
//! Bodies are read here, by [`read_body`], before any handler sees them: every byte held is
//! first reserved from one [`BodyBudget`], so a flood of large uploads costs at most
//! `body_memory`, however many connections carry it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::{ApiError, BODY_LIMIT};

/// Connections served on health routes only once [`Limits::max_connections`] are open, so that
/// a load balancer's health check still gets its answer from a server that is full.
pub const OVERFLOW_CONNECTIONS: usize = 64;

/// File descriptors kept back from connections for the model, logs and the listener.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Bounds on connections, time and body memory (the table in this module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served in full at once.
    pub max_connections: usize,
    /// Longest wait for a request's head (method, path, headers), from the moment the
    /// connection opens or its previous response was sent: slow-loris clients and idle
    /// keep-alive connections are closed after it.
    pub header_timeout: Duration,
    /// Longest a request's body may take to arrive, from the end of its head.
    pub body_timeout: Duration,
    /// Most bytes of request bodies held at once, all requests together.
    pub body_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            body_memory: 256 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Refuses settings that would make the server useless or unbounded, naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.header_timeout.is_zero() {
            return Err("--header-timeout must be over 0 seconds".into());
        }
        if self.body_timeout.is_zero() {
            return Err("--body-timeout must be over 0 seconds".into());
        }
        if self.body_memory < BODY_LIMIT {
            return Err(format!(
                "--body-memory must hold at least one largest body ({} MiB), or no large request could be served",
                BODY_LIMIT.div_ceil(1024 * 1024)
            ));
        }
        Ok(())
    }

    /// These limits with `max_connections` lowered, if need be, so that every connection,
    /// overflow ones included, has a file descriptor under `descriptors` (the process's
    /// limit): a server that runs out of descriptors cannot even answer its health checks.
    pub fn fit_descriptors(self, descriptors: u64) -> Limits {
        let room = descriptors.saturating_sub(RESERVED_DESCRIPTORS + OVERFLOW_CONNECTIONS as u64).max(1);
        let max_connections = self.max_connections.min(usize::try_from(room).unwrap_or(usize::MAX));
        Limits { max_connections, ..self }
    }
}

/// Raises this process's soft limit on open files to its hard limit, as far as the hard limit
/// allows, and returns the soft limit now in force (`None` where it cannot be read).
#[cfg(unix)]
pub fn raise_descriptor_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit struct, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads one rlimit struct; failing leaves the old limit in force.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    // `rlim_t` is u64 on Linux, not on every Unix.
    #[allow(clippy::unnecessary_cast)]
    Some(limit.rlim_cur as u64)
}

/// Non-Unix systems: the limit is not known.
#[cfg(not(unix))]
pub fn raise_descriptor_limit() -> Option<u64> {
    None
}

/// The bytes of request bodies in flight, against a fixed capacity. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BodyBudget(Arc<BudgetInner>);

#[derive(Debug)]
struct BudgetInner {
    capacity: usize,
    held: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `capacity` bytes.
    pub fn new(capacity: usize) -> BodyBudget {
        BodyBudget(Arc::new(BudgetInner { capacity, held: AtomicUsize::new(0) }))
    }

    /// Bytes reserved now, all reservations together.
    pub fn held(&self) -> usize {
        self.0.held.load(Ordering::Relaxed)
    }

    /// The most bytes it lends at once.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }

    /// An empty reservation, to grow as a body arrives.
    pub fn reservation(&self) -> Reservation {
        Reservation { budget: self.clone(), bytes: 0 }
    }
}

/// Bytes taken from a [`BodyBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: BodyBudget,
    bytes: usize,
}

impl Reservation {
    /// Makes this reservation `bytes` in all, if the budget has room; false (and nothing
    /// changed) if it has not.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        let Some(more) = bytes.checked_sub(self.bytes) else { return true };
        let inner = &self.budget.0;
        let taken = inner.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(more).filter(|&total| total <= inner.capacity)
        });
        if taken.is_ok() {
            self.bytes = bytes;
        }
        taken.is_ok()
    }

    /// Bytes held by this reservation.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.0.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What [`read_body`] needs: the shared budget and the body deadline.
#[derive(Debug, Clone)]
pub struct BodyReader {
    /// The bytes all bodies in flight may hold.
    pub budget: BodyBudget,
    /// Longest a body may take to arrive.
    pub timeout: Duration,
}

/// The body length a request's `Content-Length` header declares, if it has a readable one.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Middleware: answers 413 at once to a request whose `Content-Length` is over
/// [`BODY_LIMIT`], before any of its body is read (a client that declares 10 GB and sends 3
/// bytes gets its answer now, not when the bytes that never come time out); then reads a POST
/// body in full, within the deadline and the budget, before the handler runs, and holds its
/// reservation until the response is ready. Other methods' bodies are not read.
pub async fn read_body(State(reader): State<BodyReader>, request: Request, next: Next) -> Response {
    let declared = declared_length(request.headers());
    if let Some(length) = declared.filter(|&n| n > BODY_LIMIT as u64) {
        return ApiError::TooLarge(format!(
            "request body declares {length} bytes, over the {BODY_LIMIT} byte limit; send fewer or smaller \
             images per request"
        ))
        .into_response();
    }
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    // At most BODY_LIMIT, checked above.
    let declared = declared.map(|n| n as usize);
    let mut reservation = reader.budget.reservation();
    let read = collect(body, declared, &mut reservation, reader.budget.capacity());
    let bytes = match tokio::time::timeout(reader.timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => return error.into_response(),
        Err(_) => {
            return ApiError::Timeout(format!(
                "the request body did not arrive within {} s; send it faster or in smaller requests",
                reader.timeout.as_secs_f64()
            ))
            .into_response();
        }
    };
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    drop(reservation);
    response
}

/// Reads `body` into one buffer of at most [`BODY_LIMIT`] bytes, reserving its capacity from
/// the budget before each allocation.
async fn collect(
    mut body: Body,
    declared: Option<usize>,
    reservation: &mut Reservation,
    capacity: usize,
) -> Result<Vec<u8>, ApiError> {
    let busy = || {
        ApiError::Busy(format!(
            "server busy: request bodies in flight hold its {} MiB for bodies; retry shortly",
            capacity / (1024 * 1024)
        ))
    };
    let mut buffer: Vec<u8> = Vec::new();
    if let Some(length) = declared {
        if !reservation.grow_to(length) {
            return Err(busy());
        }
        buffer.reserve_exact(length);
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        let length = buffer.len() + data.len();
        if length > BODY_LIMIT {
            return Err(ApiError::TooLarge(format!(
                "request body is over the {BODY_LIMIT} byte limit; send fewer or smaller images per request"
            )));
        }
        if length > buffer.capacity() {
            let grown = length.max(buffer.capacity().saturating_mul(2)).min(BODY_LIMIT);
            if !reservation.grow_to(grown) {
                return Err(busy());
            }
            buffer.reserve_exact(grown - buffer.len());
        }
        buffer.extend_from_slice(&data);
    }
    Ok(buffer)
}

/// Marks a request that came on a connection past [`Limits::max_connections`].
#[derive(Debug, Clone, Copy)]
pub struct Overflow;

/// The routes an overflow connection is still answered on: liveness and readiness.
const HEALTH_ROUTES: [&str; 3] = ["/ping", "/v2/health/live", "/v2/health/ready"];

/// Middleware: on an overflow connection, answers the health routes and 503 to everything
/// else, before any body is read.
pub async fn health_only_on_overflow(request: Request, next: Next) -> Response {
    if request.extensions().get::<Overflow>().is_some() && !HEALTH_ROUTES.contains(&request.uri().path()) {
        return ApiError::Busy(
            "server busy: it has as many connections open as it serves (--max-connections); retry shortly, or reuse a connection"
                .into(),
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reservation();
        let mut b = budget.reservation();
        assert!(a.grow_to(60));
        assert!(!b.grow_to(50), "60 + 50 is over 100");
        assert_eq!(b.bytes(), 0, "a refused growth takes nothing");
        assert!(b.grow_to(40));
        assert_eq!(budget.held(), 100);
        assert!(a.grow_to(30), "shrinking is a no-op that always succeeds");
        drop(a);
        assert_eq!(budget.held(), 40);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn descriptors_bound_the_connections() {
        let limits = Limits::default();
        assert_eq!(limits.fit_descriptors(1_048_576).max_connections, 1024);
        assert_eq!(limits.fit_descriptors(256).max_connections, 256 - 64 - 64);
        assert_eq!(limits.fit_descriptors(10).max_connections, 1);
    }

    #[test]
    fn settings_that_cannot_work_are_refused_by_flag() {
        let bad = [
            (Limits { max_connections: 0, ..Limits::default() }, "--max-connections"),
            (Limits { header_timeout: Duration::ZERO, ..Limits::default() }, "--header-timeout"),
            (Limits { body_timeout: Duration::ZERO, ..Limits::default() }, "--body-timeout"),
            (Limits { body_memory: 1024, ..Limits::default() }, "--body-memory"),
        ];
        for (limits, flag) in bad {
            let error = limits.validate().unwrap_err();
            assert!(error.contains(flag), "{error}");
        }
        assert!(Limits::default().validate().is_ok());
    }
}
