//! KServe's Open Inference Protocol v2 (REST): health, metadata and inference.
//!
//! The model is named [`MODEL_NAME`] (`classify`) whatever its run folder is called, so
//! clients need not know where it was loaded from (SageMaker puts every model in
//! `/opt/ml/model`); any other name in a path gets 404.
//!
//! An inference request has one input tensor (any name): `FP32` in `[0, 1]` or `UINT8`
//! 0-255, shaped `[N, 3, 32, 32]` or `[N, 32, 32, 3]`, or `BYTES` `[N]` of base64-encoded
//! JPEG or PNG files (see [`super::input`]). The response has two outputs, or those named
//! in the request's `outputs`:
//! - `probabilities`: `FP32 [N, classes]`, in the class order of the model metadata's
//!   `parameters.classes`;
//! - `label`: `BYTES [N]`, the most probable class name of each image.
//!
//! Errors are `{"error": "..."}`, as the protocol asks. Health answers have empty bodies.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::ApiError;
use super::input::{self, InferInput};
use super::{AppState, Probabilities};
use crate::geometry::{CHANNELS, Framing};
use crate::scores::argmax;

/// The name this server's model answers to in `/v2/models/{name}/...`.
pub const MODEL_NAME: &str = "classify";
/// Output tensor of class probabilities.
pub const PROBABILITIES: &str = "probabilities";
/// Output tensor of the most probable class names.
pub const LABEL: &str = "label";

/// A v2 inference request body.
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    /// Echoed in the response; the server numbers requests that have none.
    #[serde(default)]
    pub id: Option<String>,
    /// Exactly one tensor of images.
    pub inputs: Vec<InferInput>,
    /// The outputs wanted; both when absent.
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// An output named in a request.
#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    /// `probabilities` or `label`.
    pub name: String,
}

fn check_model(name: &str) -> Result<(), ApiError> {
    if name == MODEL_NAME {
        Ok(())
    } else {
        Err(ApiError::UnknownModel { name: name.to_string(), served: MODEL_NAME.to_string() })
    }
}

fn ready_status(state: &AppState) -> StatusCode {
    if state.batcher().is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

/// `GET /v2`: server metadata.
pub async fn server_metadata() -> Json<Value> {
    Json(json!({"name": "classify", "version": env!("CARGO_PKG_VERSION"), "extensions": []}))
}

/// `GET /v2/health/live`: 200 while the process answers.
pub async fn live() -> StatusCode {
    StatusCode::OK
}

/// `GET /v2/health/ready`: 200 while the model can answer, 503 once it cannot.
pub async fn ready(State(state): State<AppState>) -> StatusCode {
    ready_status(&state)
}

/// `GET /v2/models/{name}/ready`.
pub async fn model_ready(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(name) = name?;
    check_model(&name)?;
    Ok(ready_status(&state))
}

/// `GET /v2/models/{name}`: the model's inputs and outputs, and its class names.
pub async fn model_metadata(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(name) = name?;
    check_model(&name)?;
    let framing = state.framing();
    let (c, side) = (CHANNELS as i64, framing.size as i64);
    Ok(Json(json!({
        "name": MODEL_NAME,
        "versions": [],
        "platform": "burn",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, c, side, side]}],
        "outputs": [
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, state.classes().len()]},
            {"name": LABEL, "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {"classes": state.classes(), "image_size": framing.size, "resize": framing.resize},
    })))
}

/// `POST /v2/models/{name}/infer`.
pub async fn infer(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    check_model(&name)?;
    input::check_accept(&headers)?;
    match input::media_type(&headers).as_deref() {
        None | Some("application/json") => {}
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "{other}: the v2 infer endpoint reads application/json (the binary tensor extension is not supported)"
            )));
        }
    }
    let body = body?;
    let framing = state.framing();
    let (Wanted { id, outputs }, probs) = state.predict(move || parse_request(&body, framing)).await?;
    let id = id.unwrap_or_else(|| state.next_id().to_string());
    Ok(Json(response(&id, &outputs, state.classes(), &probs)).into_response())
}

/// What a request asks for besides classifying its images.
#[derive(Debug)]
struct Wanted {
    /// The request's id, if it named one.
    id: Option<String>,
    /// Names of the outputs to answer with, in order.
    outputs: Vec<String>,
}

/// What the request wants, and its images.
fn parse_request(body: &[u8], framing: Framing) -> Result<(Wanted, Vec<u8>), ApiError> {
    let request: InferRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("malformed inference request: {e}")))?;
    let [input] = request.inputs.as_slice() else {
        return Err(ApiError::BadRequest(format!(
            "expected exactly one input tensor of images, got {}",
            request.inputs.len()
        )));
    };
    let outputs = match request.outputs {
        None => vec![PROBABILITIES.to_string(), LABEL.to_string()],
        Some(wanted) => wanted.into_iter().map(|o| o.name).collect(),
    };
    if let Some(unknown) = outputs.iter().find(|n| *n != PROBABILITIES && *n != LABEL) {
        return Err(ApiError::BadRequest(format!(
            "unknown output {unknown:?}: this model has {PROBABILITIES:?} and {LABEL:?}"
        )));
    }
    let images = input::tensor_images(input, framing)?;
    Ok((Wanted { id: request.id, outputs }, images))
}

/// The protocol's inference response.
#[derive(Debug, Serialize)]
pub struct InferResponse<'a> {
    /// Always [`MODEL_NAME`].
    pub model_name: &'static str,
    /// The request's id, or one the server made up.
    pub id: &'a str,
    /// The requested output tensors.
    pub outputs: Vec<OutputTensor<'a>>,
}

/// One output tensor.
#[derive(Debug, Serialize)]
pub struct OutputTensor<'a> {
    /// [`PROBABILITIES`] or [`LABEL`].
    pub name: &'static str,
    /// `FP32` or `BYTES`.
    pub datatype: &'static str,
    /// `[N, classes]` or `[N]`.
    pub shape: Vec<usize>,
    /// The elements, flat and row-major.
    pub data: TensorData<'a>,
}

/// Output elements: numbers (serialised as `f32`, so they print short) or strings.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum TensorData<'a> {
    /// `FP32` elements.
    Fp32(Vec<f32>),
    /// `BYTES` elements, as UTF-8 strings.
    Bytes(Vec<&'a str>),
}

/// The response to a request with `id` that wants `outputs`.
fn response<'a>(id: &'a str, outputs: &[String], classes: &'a [String], probs: &Probabilities) -> InferResponse<'a> {
    let n = probs.len();
    let outputs = outputs
        .iter()
        .map(|name| {
            if name == LABEL {
                let labels = probs.iter().map(|row| classes.get(argmax(row)).map_or("?", String::as_str)).collect();
                OutputTensor { name: LABEL, datatype: "BYTES", shape: vec![n], data: TensorData::Bytes(labels) }
            } else {
                let flat = probs.iter().flatten().copied().collect();
                OutputTensor {
                    name: PROBABILITIES,
                    datatype: "FP32",
                    shape: vec![n, classes.len()],
                    data: TensorData::Fp32(flat),
                }
            }
        })
        .collect();
    InferResponse { model_name: MODEL_NAME, id, outputs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_has_the_protocol_shape() {
        let classes: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let probs = vec![vec![0.25, 0.75], vec![0.9, 0.1]];
        let outputs = vec![PROBABILITIES.to_string(), LABEL.to_string()];
        let text = serde_json::to_string(&response("7", &outputs, &classes, &probs)).unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["model_name"], MODEL_NAME);
        assert_eq!(body["id"], "7");
        assert_eq!(body["outputs"][0]["shape"], json!([2, 2]));
        assert_eq!(body["outputs"][0]["data"], json!([0.25, 0.75, 0.9, 0.1]));
        assert_eq!(body["outputs"][1]["data"], json!(["b", "a"]));
        assert_eq!(body["outputs"][1]["datatype"], "BYTES");
    }

    #[test]
    fn requests_name_one_input_and_known_outputs() {
        let two = br#"{"inputs": [{"name":"a","shape":[1],"datatype":"BYTES","data":["x"]},{"name":"b","shape":[1],"datatype":"BYTES","data":["x"]}]}"#;
        assert!(
            matches!(parse_request(two, Framing::CIFAR), Err(ApiError::BadRequest(m)) if m.contains("exactly one"))
        );
        let unknown = br#"{"inputs": [{"name":"a","shape":[1,3,32,32],"datatype":"FP32","data":[]}], "outputs": [{"name": "logits"}]}"#;
        assert!(matches!(parse_request(unknown, Framing::CIFAR), Err(ApiError::BadRequest(m)) if m.contains("logits")));
        assert!(matches!(parse_request(b"{", Framing::CIFAR), Err(ApiError::BadRequest(_))));
    }
}
