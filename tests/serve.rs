//! The HTTP server: every route called through the router with `oneshot`, on a real model
//! (a freshly initialised seed network saved into a run folder and loaded back); over sockets
//! on 127.0.0.1, graceful shutdown, the connection, time and body-memory limits, and stress
//! runs in process and against the real binary.

mod util;

use std::io::{Cursor, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use burn::tensor::Device;
use serde_json::{Value, json};
use tower::ServiceExt;

use classify::classifier::Classifier;
use classify::data::{IMAGE_BYTES, IMAGE_SIZE, PLANE_BYTES};
use classify::serve::{AppState, BODY_LIMIT, BatchOptions, Limits, app};
use util::http;

const CLASSES: [&str; 4] = ["tl", "tr", "bl", "br"];

/// Writes a run folder holding a freshly initialised seed model over [`CLASSES`].
fn write_run(root: &std::path::Path) {
    util::write_seed_run(root, &CLASSES);
}

/// Two classifiers with the same weights: one to serve, one to compare against.
fn classifiers() -> (Classifier, Classifier) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run");
    write_run(&root);
    let load = || Classifier::load(&root, &Device::flex()).unwrap();
    (load(), load())
}

fn options(max_batch: usize, max_wait_ms: u64, queue_capacity: usize) -> BatchOptions {
    BatchOptions { max_batch, max_wait: Duration::from_millis(max_wait_ms), queue_capacity }
}

struct Fixture {
    state: AppState,
    reference: Mutex<Classifier>,
}

/// One served model shared by the tests that only read from it.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (served, reference) = classifiers();
        Fixture { state: AppState::new(served, options(8, 1, 64)), reference: Mutex::new(reference) }
    })
}

fn shared_app() -> Router {
    app(fixture().state.clone())
}

/// The reference classifier's probabilities for CHW images.
fn reference(images: &[u8]) -> Vec<Vec<f32>> {
    fixture().reference.lock().unwrap().probabilities(images)
}

fn quadrant(class: usize, seed: u64) -> Vec<u8> {
    util::quadrant_image(class, &mut util::Lcg::new(seed))
}

fn rgb_image(chw: &[u8]) -> image::RgbImage {
    image::RgbImage::from_fn(IMAGE_SIZE as u32, IMAGE_SIZE as u32, |x, y| {
        let i = y as usize * IMAGE_SIZE + x as usize;
        image::Rgb([chw[i], chw[PLANE_BYTES + i], chw[2 * PLANE_BYTES + i]])
    })
}

fn encode(chw: &[u8], format: image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    rgb_image(chw).write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

fn png(chw: &[u8]) -> Vec<u8> {
    encode(chw, image::ImageFormat::Png)
}

fn jpeg(chw: &[u8]) -> Vec<u8> {
    encode(chw, image::ImageFormat::Jpeg)
}

/// `chw` as the HWC nested array `/invocations` reads.
fn hwc_array(chw: &[u8]) -> Value {
    let rows: Vec<Value> = (0..IMAGE_SIZE)
        .map(|y| {
            let pixels: Vec<Value> = (0..IMAGE_SIZE)
                .map(|x| {
                    let i = y * IMAGE_SIZE + x;
                    json!([chw[i], chw[PLANE_BYTES + i], chw[2 * PLANE_BYTES + i]])
                })
                .collect();
            Value::Array(pixels)
        })
        .collect();
    Value::Array(rows)
}

fn post(uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri).header(header::CONTENT_TYPE, content_type).body(body.into()).unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

async fn send(app: Router, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let response = app.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (parts.status, parts.headers, bytes)
}

/// Sends `request`, expects `status` and a JSON body, and returns the body.
async fn send_json(app: Router, request: Request<Body>, status: StatusCode) -> Value {
    let (got, headers, body) = send(app, request).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(got, status, "body: {text}");
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/json"), "{headers:?}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts an error answer: `status` and `{"error": "..."}` mentioning `needle`.
async fn expect_error(app: Router, request: Request<Body>, status: StatusCode, needle: &str) {
    let body = send_json(app, request, status).await;
    let message = body["error"].as_str().unwrap_or_else(|| panic!("no error field: {body}"));
    assert!(message.contains(needle), "{message:?} does not mention {needle:?}");
}

fn probabilities(prediction: &Value) -> Vec<f32> {
    prediction["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}

fn kserve_request(datatype: &str, shape: &[usize], data: Value) -> Request<Body> {
    let body =
        json!({"id": "req-1", "inputs": [{"name": "images", "shape": shape, "datatype": datatype, "data": data}]});
    post("/v2/models/classify/infer", "application/json", body.to_string())
}

fn kserve_probabilities(body: &Value) -> Vec<f32> {
    let output = body["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "probabilities").unwrap();
    output["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

#[tokio::test]
async fn ping_answers_200_with_an_empty_body() {
    let (status, _, body) = send(shared_app(), get("/ping")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
}

#[tokio::test]
async fn a_jpeg_gets_class_names_and_the_classifiers_probabilities() {
    let image = quadrant(1, 3);
    let bytes = jpeg(&image);
    let body = send_json(shared_app(), post("/invocations", "image/jpeg", bytes.clone()), StatusCode::OK).await;
    assert_eq!(body["classes"], json!(CLASSES));
    let predictions = body["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 1);
    let p = &predictions[0];
    let probs = probabilities(p);
    assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    // The server decodes exactly as `classify predict` does, and batching changes nothing.
    let mut decoded = vec![0; IMAGE_BYTES];
    classify::data::folder::decode_into(&bytes, &mut decoded).unwrap();
    assert_close(&probs, &reference(&decoded)[0]);
    let top = p["top"].as_array().unwrap();
    assert_eq!(top.len(), 4, "top-5 of 4 classes is all of them");
    assert_eq!(top[0]["class"], p["class"]);
    assert!(CLASSES.contains(&p["class"].as_str().unwrap()));
    let ranked: Vec<f64> = top.iter().map(|t| t["probability"].as_f64().unwrap()).collect();
    assert!(ranked.windows(2).all(|w| w[0] >= w[1]), "{ranked:?}");
}

#[tokio::test]
async fn png_and_x_image_bodies_are_read_whatever_the_declared_format() {
    let image = quadrant(2, 4);
    let want = reference(&image);
    for content_type in ["image/png", "application/x-image", "image/png; charset=binary"] {
        let body = send_json(shared_app(), post("/invocations", content_type, png(&image)), StatusCode::OK).await;
        assert_close(&probabilities(&body["predictions"][0]), &want[0]);
    }
}

#[tokio::test]
async fn json_instances_take_base64_b64_objects_and_pixel_arrays_in_order() {
    let images = [quadrant(0, 5), quadrant(3, 6), quadrant(1, 7)];
    let want = reference(&images.concat());
    let body = json!({"instances": [
        BASE64.encode(png(&images[0])),
        {"b64": BASE64.encode(png(&images[1]))},
        hwc_array(&images[2]),
    ]});
    let answer =
        send_json(shared_app(), post("/invocations", "application/json", body.to_string()), StatusCode::OK).await;
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3);
    for (p, w) in predictions.iter().zip(&want) {
        assert_close(&probabilities(p), w);
    }
}

#[tokio::test]
async fn json_lines_bodies_are_answered_one_prediction_a_line_in_order() {
    // As Batch Transform sends a .jsonl file split by line: one instance a line, the
    // forms of `instances`, a blank line and a Windows line ending among them.
    let images = [quadrant(2, 11), quadrant(0, 12), quadrant(3, 13)];
    let want = reference(&images.concat());
    let body = format!(
        "{}\r\n\n{}\n{}\n",
        json!(BASE64.encode(png(&images[0]))),
        json!({"b64": BASE64.encode(png(&images[1]))}),
        hwc_array(&images[2]),
    );
    let mut request = post("/invocations", "application/jsonlines", body);
    request.headers_mut().insert(header::ACCEPT, "application/jsonlines".parse().unwrap());
    let (status, headers, bytes) = send(shared_app(), request).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(headers[header::CONTENT_TYPE], "application/jsonlines");
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(text.ends_with('\n'));
    for (line, w) in lines.iter().zip(&want) {
        assert_close(&probabilities(line), w);
        assert_eq!(line["top"][0]["class"], line["class"]);
    }

    // A bad line is named by its number in the body; another Accept is refused.
    let bad = format!("{}\n\nnot json\n", json!({"b64": BASE64.encode(png(&images[1]))}));
    expect_error(shared_app(), post("/invocations", "application/jsonlines", bad), StatusCode::BAD_REQUEST, "line 3")
        .await;
    let mut request = post("/invocations", "application/jsonlines", json!(BASE64.encode(png(&images[0]))).to_string());
    request.headers_mut().insert(header::ACCEPT, "text/csv".parse().unwrap());
    let (status, _, _) = send(shared_app(), request).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);

    // What Batch Transform asks for when the job leaves it unset: payloads the body limit takes.
    let params = send_json(shared_app(), get("/execution-parameters"), StatusCode::OK).await;
    assert_eq!(params["BatchStrategy"], "MULTI_RECORD");
    assert_eq!(params["MaxPayloadInMB"].as_u64().unwrap() << 20, BODY_LIMIT as u64);
    assert!(params["MaxConcurrentTransforms"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn pixel_arrays_refuse_fractions_and_point_at_fp32_tensors() {
    let mut array = hwc_array(&quadrant(0, 8));
    array[0][0][0] = json!(0.5);
    let body = json!({"instances": [array]});
    expect_error(
        shared_app(),
        post("/invocations", "application/json", body.to_string()),
        StatusCode::BAD_REQUEST,
        "FP32",
    )
    .await;
}

#[tokio::test]
async fn the_accept_header_is_honoured() {
    let image = png(&quadrant(0, 9));
    for accept in ["application/json", "*/*", "text/html, application/json;q=0.9"] {
        let request = Request::post("/invocations")
            .header(header::CONTENT_TYPE, "image/png")
            .header(header::ACCEPT, accept)
            .body(Body::from(image.clone()))
            .unwrap();
        send_json(shared_app(), request, StatusCode::OK).await;
    }
    for accept in ["text/html", "text/csv", "application/json;q=0"] {
        let request = Request::post("/invocations")
            .header(header::CONTENT_TYPE, "image/png")
            .header(header::ACCEPT, accept)
            .body(Body::from(image.clone()))
            .unwrap();
        expect_error(shared_app(), request, StatusCode::NOT_ACCEPTABLE, "application/json").await;
    }
}

#[tokio::test]
async fn unsupported_or_missing_content_types_are_415() {
    expect_error(
        shared_app(),
        post("/invocations", "text/plain", "hello"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "text/plain",
    )
    .await;
    let bare = Request::post("/invocations").body(Body::from("x")).unwrap();
    expect_error(shared_app(), bare, StatusCode::UNSUPPORTED_MEDIA_TYPE, "image/jpeg").await;
    let octets = post("/v2/models/classify/infer", "application/octet-stream", "x");
    expect_error(shared_app(), octets, StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json").await;
}

#[tokio::test]
async fn undecodable_images_are_400_and_the_server_keeps_serving() {
    let mut truncated = png(&quadrant(0, 10));
    truncated.truncate(truncated.len() / 2);
    for (content_type, body) in
        [("image/jpeg", b"not an image".to_vec()), ("image/png", truncated), ("image/png", Vec::new())]
    {
        expect_error(shared_app(), post("/invocations", content_type, body), StatusCode::BAD_REQUEST, "cannot decode")
            .await;
    }
    let gif_b64 = BASE64.encode(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;");
    let body = json!({"instances": [BASE64.encode(png(&quadrant(0, 1))), gif_b64]});
    expect_error(
        shared_app(),
        post("/invocations", "application/json", body.to_string()),
        StatusCode::BAD_REQUEST,
        "instance 1",
    )
    .await;
    let body = json!({"instances": ["%%%"]});
    expect_error(
        shared_app(),
        post("/invocations", "application/json", body.to_string()),
        StatusCode::BAD_REQUEST,
        "base64",
    )
    .await;
    send_json(shared_app(), post("/invocations", "image/png", png(&quadrant(0, 11))), StatusCode::OK).await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    for uri in ["/invocations", "/v2/models/classify/infer"] {
        expect_error(
            shared_app(),
            post(uri, "application/json", "{\"instances\": ["),
            StatusCode::BAD_REQUEST,
            "malformed",
        )
        .await;
    }
    let wrong = post("/invocations", "application/json", "{\"images\": []}");
    expect_error(shared_app(), wrong, StatusCode::BAD_REQUEST, "instances").await;
    let empty = post("/invocations", "application/json", "{\"instances\": []}");
    expect_error(shared_app(), empty, StatusCode::BAD_REQUEST, "no images").await;
    let missing = post("/v2/models/classify/infer", "application/json", "{\"id\": \"x\"}");
    expect_error(shared_app(), missing, StatusCode::BAD_REQUEST, "inputs").await;
}

#[tokio::test]
async fn bodies_over_the_limit_and_too_many_images_are_413() {
    let big = vec![0u8; BODY_LIMIT + 1];
    expect_error(shared_app(), post("/invocations", "image/png", big), StatusCode::PAYLOAD_TOO_LARGE, "limit").await;
    let one = BASE64.encode(png(&quadrant(0, 12)));
    let body = json!({"instances": vec![one; classify::serve::input::MAX_IMAGES + 1]});
    expect_error(
        shared_app(),
        post("/invocations", "application/json", body.to_string()),
        StatusCode::PAYLOAD_TOO_LARGE,
        "split",
    )
    .await;
}

#[tokio::test]
async fn unknown_models_are_404_on_every_model_route() {
    expect_error(shared_app(), get("/v2/models/resnet"), StatusCode::NOT_FOUND, "\"classify\"").await;
    expect_error(shared_app(), get("/v2/models/resnet/ready"), StatusCode::NOT_FOUND, "resnet").await;
    let request = kserve_request("FP32", &[1, 3, 32, 32], json!(vec![0.0; IMAGE_BYTES]));
    let (parts, body) = request.into_parts();
    let mut request = Request::from_parts(parts, body);
    *request.uri_mut() = "/v2/models/resnet/infer".parse().unwrap();
    expect_error(shared_app(), request, StatusCode::NOT_FOUND, "unknown model").await;
}

#[tokio::test]
async fn fp32_tensors_in_chw_or_hwc_agree_with_the_classifier() {
    let images = [quadrant(0, 13), quadrant(2, 14)];
    let chw: Vec<f32> = images.concat().iter().map(|&v| f32::from(v) / 255.0).collect();
    let hwc: Vec<f32> = images
        .iter()
        .flat_map(|img| {
            (0..PLANE_BYTES).flat_map(move |p| (0..3).map(move |c| f32::from(img[c * PLANE_BYTES + p]) / 255.0))
        })
        .collect();
    let want: Vec<f32> = reference(&images.concat()).concat();
    let body = send_json(shared_app(), kserve_request("FP32", &[2, 3, 32, 32], json!(chw)), StatusCode::OK).await;
    assert_eq!(body["model_name"], "classify");
    assert_eq!(body["id"], "req-1");
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["name"], "probabilities");
    assert_eq!(outputs[0]["datatype"], "FP32");
    assert_eq!(outputs[0]["shape"], json!([2, 4]));
    assert_eq!(outputs[1]["name"], "label");
    assert_eq!(outputs[1]["shape"], json!([2]));
    assert_close(&kserve_probabilities(&body), &want);
    let body = send_json(shared_app(), kserve_request("FP32", &[2, 32, 32, 3], json!(hwc)), StatusCode::OK).await;
    assert_close(&kserve_probabilities(&body), &want);
    // Nested data is read row-major, like flat data.
    let nested: Vec<Vec<f32>> = chw.chunks(IMAGE_BYTES).map(<[f32]>::to_vec).collect();
    let body = send_json(shared_app(), kserve_request("FP32", &[2, 3, 32, 32], json!(nested)), StatusCode::OK).await;
    assert_close(&kserve_probabilities(&body), &want);
    // UINT8 carries the same pixels as 0-255.
    let body =
        send_json(shared_app(), kserve_request("UINT8", &[2, 3, 32, 32], json!(images.concat())), StatusCode::OK).await;
    assert_close(&kserve_probabilities(&body), &want);
}

#[tokio::test]
async fn bytes_tensors_hold_base64_images_and_outputs_can_be_chosen() {
    let image = quadrant(3, 15);
    let body = json!({
        "inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [BASE64.encode(png(&image))]}],
        "outputs": [{"name": "label"}],
    });
    let answer = send_json(
        shared_app(),
        post("/v2/models/classify/infer", "application/json", body.to_string()),
        StatusCode::OK,
    )
    .await;
    let outputs = answer["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1);
    let probs = &reference(&image)[0];
    let best = classify::scores::argmax(probs);
    assert_eq!(outputs[0]["data"], json!([CLASSES[best]]));
    assert!(answer["id"].as_str().is_some_and(|id| !id.is_empty()), "{answer}");
}

#[tokio::test]
async fn bad_tensors_are_400_with_the_reason() {
    let cases = [
        (kserve_request("FP32", &[1, 1, 32, 32], json!(vec![0.0; 1024])), "shape"),
        (kserve_request("FP32", &[1, 3, 32, 32], json!(vec![0.0; 100])), "elements"),
        (kserve_request("FP32", &[1, 3, 32, 32], json!(vec![2.0; IMAGE_BYTES])), "[0, 1]"),
        (kserve_request("INT64", &[1, 3, 32, 32], json!(vec![0; IMAGE_BYTES])), "INT64"),
        (kserve_request("BYTES", &[1], json!([1])), "base64"),
        (kserve_request("FP32", &[0, 3, 32, 32], json!([])), "no images"),
    ];
    for (request, needle) in cases {
        expect_error(shared_app(), request, StatusCode::BAD_REQUEST, needle).await;
    }
}

#[tokio::test]
async fn kserve_health_and_metadata() {
    for uri in ["/v2/health/live", "/v2/health/ready", "/v2/models/classify/ready"] {
        let (status, _, body) = send(shared_app(), get(uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(body.is_empty(), "{uri}");
    }
    let meta = send_json(shared_app(), get("/v2/models/classify"), StatusCode::OK).await;
    assert_eq!(meta["name"], "classify");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 3, 32, 32]));
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 4]));
    assert_eq!(meta["parameters"]["classes"], json!(CLASSES));
    let server = send_json(shared_app(), get("/v2"), StatusCode::OK).await;
    assert_eq!(server["name"], "classify");
}

#[tokio::test]
async fn a_full_queue_answers_429_and_health_stays_up() {
    let (served, _) = classifiers();
    let app = app(AppState::new(served, options(8, 1, 0)));
    let (status, headers, body) = send(app.clone(), post("/invocations", "image/png", png(&quadrant(0, 16)))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("busy"), "{body}");
    let (status, _, _) = send(app, get("/ping")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_latency_and_batch_sizes() {
    let (served, _) = classifiers();
    let app = app(AppState::new(served, options(8, 1, 16)));
    send(app.clone(), post("/invocations", "image/png", png(&quadrant(0, 17)))).await;
    send(app.clone(), post("/invocations", "text/plain", "x")).await;
    send(app.clone(), get("/v2/models/nope")).await;
    let (status, headers, body) = send(app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    for line in [
        "classify_requests_total{route=\"/invocations\",method=\"POST\",status=\"200\"} 1",
        "classify_requests_total{route=\"/invocations\",method=\"POST\",status=\"415\"} 1",
        "classify_requests_total{route=\"/v2/models/{name}\",method=\"GET\",status=\"404\"} 1",
        "classify_request_duration_seconds_count{route=\"/invocations\"} 2",
        "classify_batch_size_images_bucket{le=\"1\"} 1",
        "classify_batch_size_images_count 1",
        "classify_requests_in_flight 0",
        "classify_model_ready 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("# TYPE classify_request_duration_seconds histogram"));
}

#[tokio::test]
async fn the_page_is_self_contained() {
    let (status, headers, body) = send(shared_app(), get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
    let html = String::from_utf8(body.to_vec()).unwrap();
    assert!(html.contains("invocations"), "the page posts to /invocations");
    for external in ["http://", "https://", "//cdn", "<link", "src=\"http"] {
        assert!(!html.contains(external), "the page loads {external}");
    }
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_413_before_it_is_read() {
    let mut request = post("/invocations", "image/png", vec![1u8, 2, 3]);
    request.headers_mut().insert(header::CONTENT_LENGTH, "10000000000".parse().unwrap());
    expect_error(shared_app(), request, StatusCode::PAYLOAD_TOO_LARGE, "declares 10000000000 bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_client_declaring_10_gb_gets_413_at_once() {
    let (served, _) = classifiers();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(classify::serve::run(
        listener,
        AppState::new(served, options(2, 1, 16)),
        Limits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let answered = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        // Past this the test fails instead of waiting for bytes that never come.
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = "POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n\
                    Content-Length: 10000000000\r\n\r\nabc";
        stream.write_all(head.as_bytes()).unwrap();
        let mut response = [0u8; 512];
        let n = stream.read(&mut response).unwrap_or(0);
        String::from_utf8_lossy(&response[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(answered.starts_with("HTTP/1.1 413"), "{answered:?}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    expect_error(shared_app(), get("/predict"), StatusCode::NOT_FOUND, "/predict").await;
    expect_error(shared_app(), get("/invocations"), StatusCode::METHOD_NOT_ALLOWED, "GET").await;
    // A model name that is not UTF-8 once percent-decoded: JSON, like every other error.
    for uri in ["/v2/models/%FF%FE", "/v2/models/%FF%FE/ready"] {
        expect_error(shared_app(), get(uri), StatusCode::BAD_REQUEST, "request path").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_socket_serves_and_shutdown_lets_requests_in_flight_finish() {
    let (served, _) = classifiers();
    let state = AppState::new(served, options(2, 400, 16));
    // A ticket held here looks like a second request on its way, so the model thread keeps
    // the real one waiting for it (up to the 400 ms window) while shutdown begins.
    let _held = state.batcher().admit().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(classify::serve::run(listener, state.clone(), Limits::default(), async {
        let _ = stopped.await;
    }));

    let (status, _) = tokio::task::spawn_blocking(move || http(addr, "GET /ping HTTP/1.1", b"")).await.unwrap();
    assert_eq!(status, 200);

    let image = png(&quadrant(1, 18));
    let in_flight = tokio::task::spawn_blocking(move || {
        http(addr, "POST /invocations HTTP/1.1\r\nContent-Type: image/png", &image)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while state.batcher().in_flight() < 2 {
        assert!(Instant::now() < deadline, "the request never reached the server");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(()).unwrap();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"predictions\""), "{body}");
    server.await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed after shutdown");
}

/// Held by the test that bounds this process's resident memory and by the tests that build
/// large bodies or images here (a flood of 5 MiB bodies, a 24-megapixel photo), so they do
/// not overlap.
fn process_memory() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Resident memory of this process in MiB (Linux), for bounding what a stress run costs.
fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Sends `head` announcing `announced` body bytes, then only `sent` of them, `step` bytes
/// at a time with `pause` between, and hangs up: a slow or vanishing client.
fn trickle(addr: std::net::SocketAddr, announced: usize, sent: usize, step: usize, pause: Duration) {
    let Ok(mut stream) = TcpStream::connect(addr) else { return };
    let head = format!(
        "POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\nContent-Length: {announced}\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    for _ in 0..sent / step {
        if stream.write_all(&vec![0x89; step]).is_err() {
            return;
        }
        std::thread::sleep(pause);
    }
}

/// Slow clients, oversize bodies and a flood past the queue, on a real socket: the server
/// answers every complete request (200 or 429, nothing else), refuses the oversize ones with
/// 413, keeps memory bounded, and serves normally afterwards. Bounded in count and time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The lock only keeps other tests' large buffers out of this one's measurement: it is held for
// the whole test on purpose, and nothing else in this test takes it.
#[allow(clippy::await_holding_lock)]
async fn stress_slow_clients_oversize_bodies_and_a_flood() {
    let _memory = process_memory();
    let (served, _) = classifiers();
    let state = AppState::new(served, options(8, 1, 4));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(classify::serve::run(listener, state.clone(), Limits::default(), async {
        let _ = stopped.await;
    }));
    let image = png(&quadrant(2, 21));
    let before = rss_mb();

    let report = tokio::task::spawn_blocking(move || {
        // 16 slow clients trickling 2 KB each over ~0.4 s, then vanishing mid-body.
        let slow: Vec<_> = (0..16)
            .map(|_| std::thread::spawn(move || trickle(addr, 100_000, 2_000, 100, Duration::from_millis(20))))
            .collect();
        // While they hang on: health and a normal request still answer.
        let (ping, _) = http(addr, "GET /ping HTTP/1.1", b"");
        let img = image.clone();
        let (normal, _) = http(addr, "POST /invocations HTTP/1.1\r\nContent-Type: image/png", &img);
        // Oversize bodies: announced and sent over the 5 MiB limit.
        let oversize: Vec<u16> = (0..4)
            .map(|_| {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let head = format!(
                    "POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    BODY_LIMIT + 1
                );
                stream.write_all(head.as_bytes()).unwrap();
                // The server may answer and close before taking it all; that is fine.
                let _ = stream.write_all(&vec![0u8; BODY_LIMIT + 1]);
                let mut response = Vec::new();
                let _ = stream.read_to_end(&mut response);
                String::from_utf8_lossy(&response).split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
            })
            .collect();
        // A flood of 64 concurrent requests against a queue of 4.
        let flood: Vec<u16> = (0..64)
            .map(|_| {
                let img = image.clone();
                std::thread::spawn(move || http(addr, "POST /invocations HTTP/1.1\r\nContent-Type: image/png", &img).0)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        for t in slow {
            t.join().unwrap();
        }
        let (after, body) = http(addr, "POST /invocations HTTP/1.1\r\nContent-Type: image/png", &image);
        (ping, normal, oversize, flood, after, body)
    })
    .await
    .unwrap();
    let (ping, normal, oversize, flood, after, body) = report;
    assert_eq!(ping, 200);
    assert_eq!(normal, 200);
    assert!(oversize.iter().all(|&s| s == 413), "oversize bodies: {oversize:?}");
    assert!(flood.iter().all(|&s| s == 200 || s == 429), "flood statuses: {flood:?}");
    assert!(flood.contains(&200), "some of the flood is served: {flood:?}");
    assert_eq!(after, 200, "normal service afterwards: {body}");
    assert!(body.contains("\"predictions\""), "{body}");
    if let (Some(before), Some(now)) = (before, rss_mb()) {
        // 4 refused 5 MiB bodies and 80 connections must not pile up in memory.
        assert!(now - before < 256.0, "resident memory grew from {before:.0} to {now:.0} MiB");
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// Starts [`classify::serve::run`] with `limits` on a free port; returns its address, the
/// sender that stops it and its task.
async fn start(
    limits: Limits,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (served, _) = classifiers();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server =
        tokio::spawn(classify::serve::run(listener, AppState::new(served, options(2, 1, 16)), limits, async {
            let _ = stopped.await;
        }));
    (addr, stop, server)
}

/// Reads from `stream` until the server closes it (or `limit` passes); returns what came and
/// whether it was closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true);
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_idle_keep_alive_connections_are_closed_after_the_header_timeout() {
    let limits = Limits { header_timeout: Duration::from_millis(600), ..Limits::default() };
    let (addr, stop, server) = start(limits).await;
    let (slow, idle) = tokio::task::spawn_blocking(move || {
        // Half a request head, never finished: a slow-loris client.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"POST /invocations HTTP/1.1\r\nHost: localhost\r\n").unwrap();
        // A whole request on a keep-alive connection, then silence.
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let started = Instant::now();
        let slow = read_until_closed(&mut slow, Duration::from_secs(10));
        let idle = read_until_closed(&mut idle, Duration::from_secs(10));
        (slow, (idle, started.elapsed()))
    })
    .await
    .unwrap();
    assert!(slow.1, "a head that never ends is closed: got {:?}", slow.0);
    let ((answer, closed), elapsed) = idle;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(closed, "an idle keep-alive connection is closed after the header timeout ({elapsed:?})");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_408_after_the_body_timeout() {
    let limits = Limits { body_timeout: Duration::from_millis(500), ..Limits::default() };
    let (addr, stop, server) = start(limits).await;
    let (answer, closed) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let head =
            "POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n";
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&[0x89; 10]).unwrap();
        read_until_closed(&mut stream, Duration::from_secs(10))
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("did not arrive within 0.5 s"), "{answer:?}");
    assert!(closed);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_the_memory_budget_get_503_before_they_are_read() {
    // Room for one largest body and 1 MiB more.
    let limits = Limits { body_memory: BODY_LIMIT + 1024 * 1024, ..Limits::default() };
    let (addr, stop, server) = start(limits).await;
    let image = png(&quadrant(3, 4));
    let (second, after) = tokio::task::spawn_blocking(move || {
        // The first client declares a largest body and sends only a little of it: the server
        // holds its reservation while it waits.
        let mut first = TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\nContent-Length: {BODY_LIMIT}\r\n\r\n"
        );
        first.write_all(head.as_bytes()).unwrap();
        first.write_all(&[0x89; 1024]).unwrap();
        // Once the server holds that reservation (its gauge says so)...
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http(addr, "GET /metrics HTTP/1.1", b"").1.contains(&format!("classify_body_bytes {BODY_LIMIT}\n")) {
            assert!(Instant::now() < deadline, "the first body's reservation never showed in /metrics");
            std::thread::sleep(Duration::from_millis(10));
        }
        // ... a 2 MiB body does not fit beside it: 503 at once, before its bytes are read.
        let mut stream = TcpStream::connect(addr).unwrap();
        let head = "POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\nContent-Length: 2097152\r\n\r\n";
        stream.write_all(head.as_bytes()).unwrap();
        let (second, _) = read_until_closed(&mut stream, Duration::from_secs(10));
        // The first client hangs up; its reservation is given back and a request fits again.
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(20);
        let after = loop {
            let answer = http(addr, "POST /invocations HTTP/1.1\r\nContent-Type: image/png", &image);
            if answer.0 != 503 || Instant::now() > deadline {
                break answer;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (second, after)
    })
    .await
    .unwrap();
    assert!(second.starts_with("HTTP/1.1 503"), "{second:?}");
    assert!(second.to_ascii_lowercase().contains("retry-after: 1"), "{second:?}");
    assert!(second.contains("MiB for bodies"), "{second:?}");
    assert_eq!(after.0, 200, "{}", after.1);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_health_checks_answer_and_the_rest_get_503() {
    let limits = Limits { max_connections: 4, ..Limits::default() };
    let (addr, stop, server) = start(limits).await;
    let image = png(&quadrant(0, 9));
    let (ping, predict, served_again) = tokio::task::spawn_blocking(move || {
        // Four connections that send nothing hold every full slot.
        let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // Past them: a prediction gets 503 (tried until the server has taken all four).
        let deadline = Instant::now() + Duration::from_secs(20);
        let predict = loop {
            let answer = http(addr, "POST /invocations HTTP/1.1\r\nContent-Type: image/png", &image);
            if answer.0 == 503 || Instant::now() > deadline {
                break answer;
            }
        };
        // ... and the health check still answers.
        let ping = http(addr, "GET /ping HTTP/1.1", b"");
        drop(idle);
        let deadline = Instant::now() + Duration::from_secs(20);
        let served_again = loop {
            let answer = http(addr, "POST /invocations HTTP/1.1\r\nContent-Type: image/png", &image);
            if answer.0 != 503 || Instant::now() > deadline {
                break answer.0;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (ping, predict, served_again)
    })
    .await
    .unwrap();
    assert_eq!(predict.0, 503, "{}", predict.1);
    assert!(predict.1.contains("--max-connections"), "{}", predict.1);
    assert_eq!(ping.0, 200, "{}", ping.1);
    assert_eq!(served_again, 200, "served in full once connections close");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// A `classify serve` process on a free port serving a fresh seed run, killed when dropped.
struct Server {
    process: util::ServeProcess,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Server {
    type Target = util::ServeProcess;
    fn deref(&self) -> &util::ServeProcess {
        &self.process
    }
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("run");
        write_run(&root);
        Server { process: util::ServeProcess::start(&root, extra), _dir: dir }
    }
}

/// A JSON body of `count` one-colour `side`x`side` PNGs, base64: small on the wire, large
/// once decoded.
fn heavy_json(count: usize, side: u32) -> Vec<u8> {
    let picture = image::RgbImage::from_pixel(side, side, image::Rgb([200, 30, 90]));
    let mut png = Vec::new();
    picture.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let one = json!({ "b64": BASE64.encode(&png) });
    serde_json::to_vec(&json!({ "instances": vec![one; count] })).unwrap()
}

/// A 24-megapixel photo is classified; one whose decode cannot fit `--decode-memory` gets 413
/// naming the setting, from its header alone.
#[test]
fn camera_photos_are_served_and_past_the_decode_memory_get_413() {
    let server = Server::start(&["--decode-memory", "128MiB"]);
    let photo = {
        let _memory = process_memory();
        util::camera_jpeg(6000, 4000)
    };
    let (status, body) = http(server.addr, "POST /invocations HTTP/1.1\r\nContent-Type: image/jpeg", &photo);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("probabilities"), "{body}");

    // 8192x8192 RGB decodes to 192 MiB, past the 96 MiB large images may hold of 128 MiB.
    // A 1x1 PNG whose header is made to claim that size.
    let mut claiming = Vec::new();
    image::RgbImage::new(1, 1).write_to(&mut Cursor::new(&mut claiming), image::ImageFormat::Png).unwrap();
    claiming[16..24].copy_from_slice(&[8192u32.to_be_bytes(), 8192u32.to_be_bytes()].concat());
    let crc = util::crc32(&claiming[12..29]);
    claiming[29..33].copy_from_slice(&crc.to_be_bytes());
    let (status, body) = http(server.addr, "POST /invocations HTTP/1.1\r\nContent-Type: image/png", &claiming);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("8192x8192") && body.contains("--decode-memory"), "{body}");
}

/// The real binary under decompression bombs, a flood of 5 MiB bodies and heavy decodes:
/// bombs decode within the decoder's cap, memory held in bodies stays within `--body-memory`
/// and is given back once the flood is over, and small requests keep being answered while
/// large images decode. Prints the figures
/// (RELIABILITY.md quotes them); asserts only bounds that hold on any machine.
#[test]
fn stress_the_real_server_memory_under_bombs_and_a_flood_and_small_requests_beside_heavy_ones() {
    // The flood's clients hold 750 MB of bodies in this process, the heavy images more.
    let _memory = process_memory();
    let server = Server::start(&["--body-memory", "128", "--max-connections", "512"]);
    let addr = server.addr;
    let image = png(&quadrant(1, 7));
    assert_eq!(http(addr, "POST /invocations HTTP/1.1\r\nContent-Type: image/png", &image).0, 200);
    let (before, _) = server.memory_mb().unwrap_or_default();

    // Four decompression bombs at once: 32x32 PNGs of under 1 MiB whose colour profile
    // inflates to 512 MiB (uncapped, each decode allocated about twice that).
    let bomb = Arc::new(util::png_with_profile(512));
    let bombs: Vec<(u16, String)> = (0..4)
        .map(|_| {
            let bomb = Arc::clone(&bomb);
            std::thread::spawn(move || http(addr, "POST /invocations HTTP/1.1\r\nContent-Type: image/png", &bomb))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let (_, bomb_peak) = server.memory_mb().unwrap_or_default();
    eprintln!(
        "4 colour-profile bombs of {} KiB (512 MiB inflated) at once: statuses {:?}; resident {before:.0} MiB before, peak {bomb_peak:.0} MiB",
        bomb.len() >> 10,
        bombs.iter().map(|(status, _)| status).collect::<Vec<_>>()
    );
    for (status, body) in &bombs {
        assert_eq!(*status, 200, "the pixels decode without the profile: {body}");
    }
    if before > 0.0 {
        assert!(bomb_peak - before < 256.0, "peak resident {bomb_peak:.0} MiB from {before:.0} MiB under bombs");
    }

    // 150 clients at once, each sending a 5 MiB body (not an image: 400 once read).
    let flood: Vec<u16> = (0..150)
        .map(|_| {
            std::thread::spawn(move || {
                let Ok(mut stream) = TcpStream::connect(addr) else { return 0 };
                let head = format!(
                    "POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\nContent-Length: {BODY_LIMIT}\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes());
                // A refused body is answered before it is read; the rest of it may not go through.
                let _ = stream.write_all(&vec![7u8; BODY_LIMIT]);
                let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(60));
                answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let (_, peak) = server.memory_mb().unwrap_or_default();
    std::thread::sleep(Duration::from_secs(2));
    let (after, _) = server.memory_mb().unwrap_or_default();
    let count = |code: u16| flood.iter().filter(|&&s| s == code).count();
    eprintln!(
        "flood of 150 x 5 MiB bodies, --body-memory 128: {} read and refused as images (400), {} refused unread (503), {} cut off; \
         resident {before:.0} MiB before, peak {peak:.0} MiB, {after:.0} MiB 2 s after",
        count(400),
        count(503),
        count(0)
    );
    assert!(flood.iter().all(|&s| [400, 503, 0].contains(&s)), "flood statuses: {flood:?}");
    assert!(count(400) > 0 && count(503) > 0, "some bodies are read, some refused: {flood:?}");
    if before > 0.0 {
        // Bodies are held within 128 MiB (and a copy of one for each decode slot).
        assert!(peak - before < 128.0 + 192.0, "peak resident {peak:.0} MiB from {before:.0} MiB");
        assert!(after - before < 64.0, "memory is given back: {before:.0} MiB before, {after:.0} MiB after");
    }

    // Four requests of three 4096x4096 images each decode while small ones keep coming.
    let heavy_body = Arc::new(heavy_json(3, 4096));
    let heavy: Vec<_> = (0..4)
        .map(|_| {
            let body = Arc::clone(&heavy_body);
            std::thread::spawn(move || {
                http(addr, "POST /invocations HTTP/1.1\r\nContent-Type: application/json", &body).0
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = (0..40)
        .map(|_| {
            let started = Instant::now();
            let (status, body) = http(addr, "POST /invocations HTTP/1.1\r\nContent-Type: image/png", &image);
            assert_eq!(status, 200, "{body}");
            started.elapsed()
        })
        .collect();
    let heavy: Vec<u16> = heavy.into_iter().map(|t| t.join().unwrap()).collect();
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1];
    eprintln!(
        "40 small requests beside 4 requests of 3 x 4096x4096 PNGs: p50 {:?}, p99 {:?}, max {:?}; heavy answered {heavy:?}",
        percentile(0.5),
        percentile(0.99),
        latencies[latencies.len() - 1]
    );
    assert!(heavy.iter().all(|&s| s == 200), "heavy requests: {heavy:?}");
}
