//! The SageMaker inference contract: `GET /ping`, `POST /invocations`, and Batch
//! Transform's `GET /execution-parameters`.
//!
//! `/invocations` reads one image (`image/jpeg`, `image/png`, `application/x-image`; the
//! format is sniffed from the bytes) or `application/json` `{"instances": [...]}` (base64
//! images, `{"b64": ...}`, or 32x32x3 arrays of 0-255; see [`super::input`]), and answers
//!
//! ```json
//! {"classes": ["airplane", ...],
//!  "predictions": [{"class": "cat", "probability": 0.91,
//!                   "top": [{"class": "cat", "probability": 0.91}, ...],
//!                   "probabilities": [0.001, ...]}]}
//! ```
//!
//! one prediction per image in request order; `top` holds the [`TOP_K`] most probable
//! classes, `probabilities` every class in `classes` order. An `application/jsonlines` body
//! (SageMaker Batch Transform's `SplitType=Line`) holds one instance a line and is answered
//! in JSON Lines, one prediction object a line in the same order. Only JSON is produced: an
//! `Accept` that rules it (and, for JSON Lines, `application/jsonlines`) out gets 406.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::{AppState, input};
use crate::geometry::Framing;
use crate::scores::top_k;

/// Classes listed in each prediction's `top`.
pub const TOP_K: usize = 5;

/// `GET /ping`: 200 with an empty body while the model can answer, 503 once it cannot.
pub async fn ping(State(state): State<AppState>) -> StatusCode {
    if state.batcher().is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

/// Requests SageMaker Batch Transform sends at once, when the job does not say.
pub const MAX_CONCURRENT_TRANSFORMS: usize = 4;

/// `GET /execution-parameters`: what SageMaker Batch Transform asks a container for when
/// the job leaves them unset: whole batches of lines per request (`MULTI_RECORD`), at most
/// the body limit each (5 MiB: `MaxPayloadInMB` 5), a few requests at once for the batcher
/// to merge.
pub async fn execution_parameters() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "MaxConcurrentTransforms": MAX_CONCURRENT_TRANSFORMS,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": super::BODY_LIMIT >> 20,
    }))
}

/// The media types of a JSON Lines body (SageMaker's is `application/jsonlines`).
pub const JSON_LINES_TYPES: [&str; 3] = ["application/jsonlines", "application/jsonl", "application/x-jsonlines"];

/// `POST /invocations`: classify one image, a JSON list of them, or JSON Lines of them (one
/// image a line, answered with one prediction a line in the same order).
pub async fn invocations(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let media = input::media_type(&headers);
    let lines = media.as_deref().is_some_and(|m| JSON_LINES_TYPES.contains(&m));
    if lines {
        input::check_accept_of(&headers, JSON_LINES_TYPES[0])?;
    } else {
        input::check_accept(&headers)?;
    }
    let parse: fn(&[u8], Framing) -> Result<Vec<u8>, ApiError> = match media.as_deref() {
        Some("image/jpeg" | "image/jpg" | "image/png" | "application/x-image") => input::single_image,
        Some("application/json") => input::instances,
        _ if lines => input::json_lines,
        other => return Err(ApiError::UnsupportedMediaType(other.unwrap_or("(none)").to_string())),
    };
    let body = body?;
    let framing = state.framing();
    let ((), probs) = state.predict(move || Ok(((), parse(&body, framing)?))).await?;
    let answer = predictions(state.classes(), &probs);
    if lines {
        let mut text = String::new();
        for prediction in &answer.predictions {
            text.push_str(&serde_json::to_string(prediction).unwrap_or_default());
            text.push('\n');
        }
        return Ok(([(header::CONTENT_TYPE, JSON_LINES_TYPES[0])], text).into_response());
    }
    Ok(Json(answer).into_response())
}

/// The `/invocations` response: class names, then one prediction per image.
#[derive(Debug, Serialize)]
pub struct Predictions<'a> {
    /// Class names in label order (the order of each `probabilities`).
    pub classes: &'a [String],
    /// One per image, in request order.
    pub predictions: Vec<Prediction<'a>>,
}

/// One image's prediction.
#[derive(Debug, Serialize)]
pub struct Prediction<'a> {
    /// The most probable class.
    pub class: &'a str,
    /// Its probability.
    pub probability: f32,
    /// The [`TOP_K`] most probable classes, most probable first.
    pub top: Vec<Ranked<'a>>,
    /// Every class's probability, in `classes` order.
    pub probabilities: &'a [f32],
}

/// A class and its probability.
#[derive(Debug, Serialize)]
pub struct Ranked<'a> {
    /// The class name.
    pub class: &'a str,
    /// Its probability.
    pub probability: f32,
}

/// The response body for `probs`, one row per image. Probabilities are serialised as `f32`,
/// so they print short (`0.9`, not `0.8999999761581421`).
pub fn predictions<'a>(classes: &'a [String], probs: &'a [Vec<f32>]) -> Predictions<'a> {
    let k = TOP_K.min(classes.len());
    let name = |i: usize| classes.get(i).map_or("?", String::as_str);
    let predictions = probs
        .iter()
        .map(|row| {
            let top: Vec<Ranked> =
                top_k(row, k).into_iter().map(|(i, p)| Ranked { class: name(i), probability: p }).collect();
            let (class, probability) = top.first().map_or(("?", 0.0), |r| (r.class, r.probability));
            Prediction { class, probability, top, probabilities: row }
        })
        .collect();
    Predictions { classes, predictions }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_name_the_most_probable_class_first() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let probs = [vec![0.2, 0.5, 0.3]];
        let text = serde_json::to_string(&predictions(&classes, &probs)).unwrap();
        assert!(text.contains("\"probability\":0.5,"), "{text}");
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        let p = &body["predictions"][0];
        assert_eq!(p["class"], "b");
        assert_eq!(p["top"].as_array().unwrap().len(), 3);
        assert_eq!(p["top"][1]["class"], "c");
        assert_eq!(body["classes"][2], "c");
        assert_eq!(p["probabilities"].as_array().unwrap().len(), 3);
    }
}
