//! Request and batch metrics, rendered in the Prometheus text format (version 0.0.4) for
//! `GET /metrics`.
//!
//! Written by hand: a few counters and histograms behind one mutex need no metrics crate.
//! Routes are labelled by their pattern (`/v2/models/{name}/infer`), never the raw path, and
//! methods outside the standard set by `OTHER`, so a client cannot grow the label set.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

/// Upper bounds of the request-latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds of the batch-size buckets, in images.
pub const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A cumulative histogram with fixed bucket bounds.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound (not yet cumulative), then the overflow.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    fn observe(&mut self, value: f64) {
        let slot = self.bounds.iter().position(|&b| value <= b).unwrap_or(self.bounds.len());
        self.counts[slot] += 1;
        self.sum += value;
    }

    /// Appends `name_bucket`, `name_sum` and `name_count` lines; `labels` is `k="v",` or empty.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {cumulative}");
        let bare = labels.trim_end_matches(',');
        let bare = if bare.is_empty() { String::new() } else { format!("{{{bare}}}") };
        let _ = writeln!(out, "{name}_sum{bare} {}", self.sum);
        let _ = writeln!(out, "{name}_count{bare} {cumulative}");
    }
}

#[derive(Debug)]
struct Inner {
    /// (route, method, status) -> count.
    requests: BTreeMap<(String, &'static str, u16), u64>,
    /// route -> latency histogram.
    latency: BTreeMap<String, Histogram>,
    batch_images: Histogram,
    batch_seconds: Histogram,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            requests: BTreeMap::new(),
            latency: BTreeMap::new(),
            batch_images: Histogram::new(&BATCH_BUCKETS),
            batch_seconds: Histogram::new(&LATENCY_BUCKETS),
        }
    }
}

/// The server's counters and histograms, shared by the HTTP layer and the model thread.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// Gauges read at render time from the batcher and the body budget.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// Requests admitted and not yet answered.
    pub in_flight: usize,
    /// Most requests admitted at once.
    pub capacity: usize,
    /// Whether the model thread is running.
    pub ready: bool,
    /// Bytes of request bodies held now (`--body-memory` bounds them).
    pub body_bytes: usize,
    /// Most bytes of request bodies held at once.
    pub body_capacity: usize,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The data stays consistent even if a holder panicked: every update is one statement.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one answered request and its latency.
    pub fn observe_request(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let mut inner = self.lock();
        *inner.requests.entry((route.to_string(), method_label(method), status)).or_insert(0) += 1;
        inner
            .latency
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    /// Records one forward pass: how many images and how long it took.
    pub fn observe_batch(&self, images: usize, elapsed: Duration) {
        let mut inner = self.lock();
        inner.batch_images.observe(images as f64);
        inner.batch_seconds.observe(elapsed.as_secs_f64());
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self, gauges: Gauges) -> String {
        let inner = self.lock().clone_for_render();
        let mut out = String::new();
        out.push_str(
            "# HELP classify_requests_total HTTP requests answered, by route pattern, method and status code.\n",
        );
        out.push_str("# TYPE classify_requests_total counter\n");
        for ((route, method, status), count) in &inner.requests {
            let _ = writeln!(
                out,
                "classify_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {count}",
                escape(route)
            );
        }
        out.push_str(
            "# HELP classify_request_duration_seconds Time from request to response headers, by route pattern.\n",
        );
        out.push_str("# TYPE classify_request_duration_seconds histogram\n");
        for (route, histogram) in &inner.latency {
            let labels = format!("route=\"{}\",", escape(route));
            histogram.render(&mut out, "classify_request_duration_seconds", &labels);
        }
        out.push_str("# HELP classify_batch_size_images Images per forward pass of the model.\n");
        out.push_str("# TYPE classify_batch_size_images histogram\n");
        inner.batch_images.render(&mut out, "classify_batch_size_images", "");
        out.push_str("# HELP classify_batch_duration_seconds Time per forward pass of the model.\n");
        out.push_str("# TYPE classify_batch_duration_seconds histogram\n");
        inner.batch_seconds.render(&mut out, "classify_batch_duration_seconds", "");
        let mut gauge = |name: &str, help: &str, value: usize| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        gauge("classify_requests_in_flight", "Prediction requests admitted and not yet answered.", gauges.in_flight);
        gauge("classify_queue_capacity", "Most prediction requests admitted at once; more get 429.", gauges.capacity);
        gauge("classify_model_ready", "1 while the model thread is running.", usize::from(gauges.ready));
        gauge("classify_body_bytes", "Bytes of request bodies held now, all requests together.", gauges.body_bytes);
        gauge(
            "classify_body_capacity_bytes",
            "Most bytes of request bodies held at once; more get 503.",
            gauges.body_capacity,
        );
        out
    }
}

impl Inner {
    /// A copy, so rendering does not hold the lock that requests wait on.
    fn clone_for_render(&self) -> Inner {
        Inner {
            requests: self.requests.clone(),
            latency: self.latency.clone(),
            batch_images: self.batch_images.clone(),
            batch_seconds: self.batch_seconds.clone(),
        }
    }
}

/// The method as a label: the standard ones by name, anything else as `OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// Escapes a label value as the text format requires.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Middleware: times each request and counts it under its route pattern (`other` when no
/// route matched).
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let response = next.run(request).await;
    metrics.observe_request(&route, &method, response.status().as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> Gauges {
        Gauges { in_flight: 2, capacity: 8, ready: true, body_bytes: 5, body_capacity: 64 }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let metrics = Metrics::default();
        for images in [1, 3, 3, 64, 1000] {
            metrics.observe_batch(images, Duration::from_millis(2));
        }
        let text = metrics.render(gauges());
        assert!(text.contains("classify_batch_size_images_bucket{le=\"1\"} 1\n"), "{text}");
        assert!(text.contains("classify_batch_size_images_bucket{le=\"2\"} 1\n"));
        assert!(text.contains("classify_batch_size_images_bucket{le=\"4\"} 3\n"));
        assert!(text.contains("classify_batch_size_images_bucket{le=\"64\"} 4\n"));
        assert!(text.contains("classify_batch_size_images_bucket{le=\"512\"} 4\n"));
        assert!(text.contains("classify_batch_size_images_bucket{le=\"+Inf\"} 5\n"));
        assert!(text.contains("classify_batch_size_images_sum 1071\n"));
        assert!(text.contains("classify_batch_size_images_count 5\n"));
        assert!(text.contains("classify_batch_duration_seconds_bucket{le=\"0.0025\"} 5\n"));
    }

    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let metrics = Metrics::default();
        let route = "/v2/models/{name}/infer";
        metrics.observe_request(route, &Method::POST, 200, Duration::from_micros(300));
        metrics.observe_request(route, &Method::POST, 200, Duration::from_millis(20));
        metrics.observe_request(route, &Method::from_bytes(b"BREW").unwrap(), 404, Duration::ZERO);
        let text = metrics.render(gauges());
        assert!(
            text.contains(
                "classify_requests_total{route=\"/v2/models/{name}/infer\",method=\"POST\",status=\"200\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("method=\"OTHER\",status=\"404\"} 1\n"));
        assert!(
            text.contains(
                "classify_request_duration_seconds_bucket{route=\"/v2/models/{name}/infer\",le=\"0.0005\"} 2\n"
            )
        );
        assert!(
            text.contains(
                "classify_request_duration_seconds_bucket{route=\"/v2/models/{name}/infer\",le=\"0.025\"} 3\n"
            )
        );
        assert!(text.contains("classify_request_duration_seconds_count{route=\"/v2/models/{name}/infer\"} 3\n"));
        assert!(text.contains("classify_requests_in_flight 2\n"));
        assert!(text.contains("classify_model_ready 1\n"));
        assert!(text.contains("classify_body_bytes 5\n"));
        assert!(text.contains("classify_body_capacity_bytes 64\n"));
    }

    #[test]
    fn every_sample_line_follows_the_text_format() {
        let metrics = Metrics::default();
        metrics.observe_request("/ping", &Method::GET, 200, Duration::from_millis(1));
        metrics.observe_batch(4, Duration::from_millis(1));
        for line in metrics.render(gauges()).lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(series.starts_with("classify_"), "{line}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
