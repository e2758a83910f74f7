//! Turning request bodies into model input (CHW uint8 images at the run's size S, as its
//! [`Framing`] says), and reading the `Content-Type` and `Accept` headers.
//!
//! What the server accepts, and how it is scaled:
//! - encoded images (JPEG, PNG, GIF, BMP, WebP, TIFF, any size, sniffed from the bytes):
//!   converted to RGB, the shorter side resized and the centre cut out exactly as
//!   `classify predict` and evaluation do ([`crate::data::folder::decode_framed`]); at most
//!   [`MAX_PIXELS`] pixels each, decoded within the decode memory
//!   ([`crate::data::budget`]);
//! - pixel arrays (SageMaker JSON): `SxSx3` nested lists, height x width x RGB, of whole
//!   numbers 0-255. Fractions are refused rather than guessed at, since `[0, 1]` floats and
//!   dark 0-255 images cannot be told apart; send those as a KServe `FP32` tensor;
//! - tensors (KServe v2): `FP32` in `[0, 1]` (the model's own input, pixel / 255), quantised
//!   to the nearest 1/255 as the model only ever sees 8-bit images; or `UINT8` 0-255; shaped
//!   `[N, 3, S, S]` (CHW) or `[N, S, S, 3]` (HWC); data flat or nested, row-major.

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use crate::geometry::{CHANNELS, Framing};

/// Most images in one request; larger requests get 413 and should be split.
pub const MAX_IMAGES: usize = 256;
/// Most pixels in one encoded image (8192 x 8192), checked from its header before decoding,
/// so a small compressed file cannot make the server allocate gigabytes.
pub const MAX_PIXELS: u64 = crate::data::folder::MAX_PIXELS;

/// Standard base64 with or without padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The `Content-Type` without parameters, lower-cased (`application/json`), if any.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    (!essence.is_empty()).then_some(essence)
}

/// Checks that the `Accept` header (if any) allows `application/json`: one of its ranges
/// is `application/json`, `application/*` or `*/*` with a non-zero `q`.
pub fn check_accept(headers: &HeaderMap) -> Result<(), ApiError> {
    check_accept_of(headers, "application/json")
}

/// Checks that the `Accept` header (if any) allows `produced`, or `application/json` (the
/// server's errors): one of its ranges is either, `application/*` or `*/*` with a non-zero `q`.
pub fn check_accept_of(headers: &HeaderMap, produced: &str) -> Result<(), ApiError> {
    let values: Vec<&str> = headers.get_all(header::ACCEPT).iter().map(|v| v.to_str().unwrap_or("")).collect();
    if values.iter().all(|v| v.trim().is_empty()) {
        return Ok(());
    }
    let acceptable = values.iter().flat_map(|v| v.split(',')).any(|range| {
        let mut parts = range.split(';');
        let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")).and_then(|q| q.trim().parse::<f32>().ok())
                == Some(0.0)
        });
        !refused && (essence == produced || matches!(essence.as_str(), "application/json" | "application/*" | "*/*"))
    });
    if acceptable { Ok(()) } else { Err(ApiError::NotAcceptable(values.join(", "))) }
}

/// Most pixels the images of one request may hold together (64 Mi: one 8192x8192 image, two
/// 24-megapixel photos or 64 one-megapixel ones), checked from their headers before any is
/// decoded, so one request cannot keep a decoding thread busy for long.
pub const MAX_REQUEST_PIXELS: u64 = 64 << 20;

/// The pixels an encoded image's header declares, refused with 413 past [`MAX_PIXELS`] or
/// when its decode could never fit the decode memory; `what` names it in errors.
fn declared_pixels(bytes: &[u8], what: &str) -> Result<u64, ApiError> {
    let undecodable = |reason: String| ApiError::Undecodable { what: what.to_string(), reason };
    if bytes.is_empty() {
        return Err(undecodable("it is empty; send a JPEG or PNG file".into()));
    }
    let header = crate::data::folder::image_header(bytes).map_err(undecodable)?;
    let (width, height) = (header.width, header.height);
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_PIXELS {
        return Err(ApiError::TooLarge(format!(
            "{what} is {width}x{height} pixels; at most {MAX_PIXELS} (8192x8192) are accepted: \
             shrink it first"
        )));
    }
    crate::data::budget::global()
        .fits(header.decode_bytes())
        .map_err(|reason| ApiError::TooLarge(format!("{what} is {width}x{height} pixels: {reason}")))?;
    Ok(pixels)
}

/// Refuses a request whose images declare more than [`MAX_REQUEST_PIXELS`] together.
fn check_request_pixels(total: u64) -> Result<(), ApiError> {
    if total > MAX_REQUEST_PIXELS {
        return Err(ApiError::TooLarge(format!(
            "the images of this request hold {total} pixels together; at most {MAX_REQUEST_PIXELS} are \
             decoded per request: send fewer or smaller images per request"
        )));
    }
    Ok(())
}

/// Decodes one encoded image into `out` (RGB CHW, framed as `framing` says); `what` names
/// it in errors.
pub fn decode_image(bytes: &[u8], out: &mut [u8], framing: Framing, what: &str) -> Result<(), ApiError> {
    declared_pixels(bytes, what)?;
    crate::data::folder::decode_framed(bytes, out, framing)
        .map(|_| ())
        .map_err(|reason| ApiError::Undecodable { what: what.to_string(), reason })
}

/// One encoded image, the body of an `image/*` request.
pub fn single_image(body: &[u8], framing: Framing) -> Result<Vec<u8>, ApiError> {
    let mut images = vec![0; framing.input().image_bytes()];
    decode_image(body, &mut images, framing, "the image")?;
    Ok(images)
}

/// The images of a SageMaker JSON body, `{"instances": [...]}`, where each instance is a
/// base64 string of an encoded image, `{"b64": "..."}`, or an SxSx3 array of 0-255 values.
pub fn instances(body: &[u8], framing: Framing) -> Result<Vec<u8>, ApiError> {
    let size = framing.size;
    let request: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    let instances = request.get("instances").and_then(Value::as_array).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "expected a JSON object {{\"instances\": [...]}} whose items are base64-encoded images \
                 or {size}x{size}x3 arrays of 0-255 pixel values"
        ))
    })?;
    instance_images(instances, framing, |i| format!("instance {i}"))
}

/// The images of a JSON Lines body (`application/jsonlines`, as SageMaker Batch Transform
/// sends a file split by line): each non-blank line one instance, in the forms
/// [`instances`] takes (a base64 string, `{"b64": "..."}`, or an SxSx3 array).
pub fn json_lines(body: &[u8], framing: Framing) -> Result<Vec<u8>, ApiError> {
    let mut values = Vec::new();
    let mut numbers = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: Value = serde_json::from_slice(line)
            .map_err(|e| ApiError::BadRequest(format!("line {}: malformed JSON: {e}", i + 1)))?;
        values.push(value);
        numbers.push(i + 1);
    }
    instance_images(&values, framing, |i| format!("line {}", numbers[i]))
}

/// The images of a list of instances; `what` names instance `i` in errors.
fn instance_images(instances: &[Value], framing: Framing, what: impl Fn(usize) -> String) -> Result<Vec<u8>, ApiError> {
    let size = framing.size;
    check_count(instances.len())?;
    // First every encoded image's bytes and declared size (the budget is checked before any
    // is decoded), then the pixels.
    let mut encoded: Vec<Option<Vec<u8>>> = Vec::with_capacity(instances.len());
    let mut total = 0;
    for (i, instance) in instances.iter().enumerate() {
        let what = what(i);
        let bytes = match instance {
            Value::String(text) => Some(base64_bytes(text, &what)?),
            Value::Object(fields) => match fields.get("b64") {
                Some(Value::String(text)) => Some(base64_bytes(text, &what)?),
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "{what}: an object must be {{\"b64\": \"<base64 image>\"}}"
                    )));
                }
            },
            Value::Array(_) => None,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "{what}: expected a base64 string or a {size}x{size}x3 array, found {}",
                    kind(instance)
                )));
            }
        };
        if let Some(bytes) = &bytes {
            total += declared_pixels(bytes, &what)?;
        }
        encoded.push(bytes);
    }
    check_request_pixels(total)?;
    let image_bytes = framing.input().image_bytes();
    let mut images = vec![0; instances.len() * image_bytes];
    for (i, ((instance, bytes), out)) in instances.iter().zip(&encoded).zip(images.chunks_mut(image_bytes)).enumerate()
    {
        let what = what(i);
        match bytes {
            Some(bytes) => decode_image(bytes, out, framing, &what)?,
            None => pixels_hwc(instance, out, size, &what)?,
        }
    }
    Ok(images)
}

fn check_count(count: usize) -> Result<(), ApiError> {
    if count == 0 {
        return Err(ApiError::BadRequest("no images in the request".into()));
    }
    if count > MAX_IMAGES {
        return Err(ApiError::TooLarge(format!(
            "{count} images in one request; at most {MAX_IMAGES}: split the request"
        )));
    }
    Ok(())
}

/// Decodes base64 (standard alphabet, padding optional, an optional `data:...;base64,`
/// prefix): the encoded image it holds.
fn base64_bytes(text: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    let text = match text.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
        Some((_, payload)) => payload,
        None => text,
    };
    BASE64.decode(text.trim()).map_err(|e| ApiError::BadRequest(format!("{what}: not valid base64 ({e})")))
}

/// Reads a `size` x `size` x 3 (height, width, RGB) array of whole numbers 0-255 into CHW
/// `out`.
fn pixels_hwc(value: &Value, out: &mut [u8], size: usize, what: &str) -> Result<(), ApiError> {
    let shape_error = || {
        ApiError::BadRequest(format!(
            "{what}: a pixel array must be {size} rows of {size} pixels of 3 values (RGB 0-255), the model's \
             input size; send other sizes as encoded images"
        ))
    };
    let plane = size * size;
    let rows = value.as_array().filter(|r| r.len() == size).ok_or_else(shape_error)?;
    for (y, row) in rows.iter().enumerate() {
        let pixels = row.as_array().filter(|p| p.len() == size).ok_or_else(shape_error)?;
        for (x, pixel) in pixels.iter().enumerate() {
            let channels = pixel.as_array().filter(|c| c.len() == CHANNELS).ok_or_else(shape_error)?;
            for (c, v) in channels.iter().enumerate() {
                out[c * plane + y * size + x] = byte(v).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "{what}: value {v} at [{y}][{x}][{c}] is not a whole number 0-255; pixel \
                         arrays hold 0-255 values (send [0, 1] floats as an FP32 tensor to \
                         /v2/models/classify/infer)"
                    ))
                })?;
            }
        }
    }
    Ok(())
}

/// A JSON number that is a whole number 0-255 (`12` or `12.0`).
fn byte(v: &Value) -> Option<u8> {
    if let Some(i) = v.as_u64() {
        return u8::try_from(i).ok();
    }
    let f = v.as_f64()?;
    (f.fract() == 0.0 && (0.0..=255.0).contains(&f)).then_some(f as u8)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One input tensor of a KServe v2 inference request.
#[derive(Debug, Deserialize)]
pub struct InferInput {
    /// The tensor's name; any name is accepted.
    pub name: String,
    /// Its shape: `[N, 3, S, S]` or `[N, S, S, 3]` for numbers, `[N]` for `BYTES`.
    pub shape: Vec<i64>,
    /// `FP32`, `UINT8` or `BYTES`.
    pub datatype: String,
    /// The elements, row-major, flat or nested.
    pub data: Value,
}

/// Pixel layout of a numeric tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Chw,
    Hwc,
}

/// The images held by a KServe v2 input tensor, for a model framed as `framing` says.
pub fn tensor_images(input: &InferInput, framing: Framing) -> Result<Vec<u8>, ApiError> {
    let image_bytes = framing.input().image_bytes();
    let bad = |msg: String| ApiError::BadRequest(format!("input {:?}: {msg}", input.name));
    let datatype = input.datatype.to_ascii_uppercase();
    if datatype == "BYTES" {
        let count = match input.shape.as_slice() {
            [n] if *n >= 0 => *n as usize,
            _ => return Err(bad(format!("a BYTES tensor has shape [N], got {:?}", input.shape))),
        };
        check_count(count)?;
        let items = leaves(&input.data, count).map_err(bad)?;
        let mut encoded = Vec::with_capacity(count);
        let mut total = 0;
        for (i, item) in items.iter().enumerate() {
            let text = item.as_str().ok_or_else(|| {
                bad(format!("element {i} is {}; BYTES elements are base64 strings of JPEG or PNG files", kind(item)))
            })?;
            let what = format!("input {:?} element {i}", input.name);
            let bytes = base64_bytes(text, &what)?;
            total += declared_pixels(&bytes, &what)?;
            encoded.push((bytes, what));
        }
        check_request_pixels(total)?;
        let mut images = vec![0; count * image_bytes];
        for ((bytes, what), out) in encoded.iter().zip(images.chunks_mut(image_bytes)) {
            decode_image(bytes, out, framing, what)?;
        }
        return Ok(images);
    }
    let fp32 = match datatype.as_str() {
        "FP32" => true,
        "UINT8" => false,
        _ => {
            return Err(bad(format!(
                "datatype {:?} is not supported; use FP32 ([0, 1]), UINT8 (0-255) or BYTES (encoded images)",
                input.datatype
            )));
        }
    };
    let side = framing.size as i64;
    let (count, layout) = match input.shape.as_slice() {
        [n, 3, h, w] if *n >= 0 && *h == side && *w == side => (*n as usize, Layout::Chw),
        [n, h, w, 3] if *n >= 0 && *h == side && *w == side => (*n as usize, Layout::Hwc),
        _ => {
            return Err(bad(format!(
                "shape {:?} is not [N, 3, {side}, {side}] or [N, {side}, {side}, 3] (the model's input size; send \
                 other sizes as BYTES, encoded images)",
                input.shape
            )));
        }
    };
    check_count(count)?;
    let values = leaves(&input.data, count * image_bytes).map_err(bad)?;
    let mut images = vec![0; count * image_bytes];
    for (i, v) in values.iter().enumerate() {
        let pixel = if fp32 { unit_to_byte(v) } else { byte(v) };
        let pixel = pixel.ok_or_else(|| {
            let range = if fp32 { "a number in [0, 1] (pixel / 255)" } else { "a whole number 0-255" };
            bad(format!("element {i} is {v}; {datatype} elements must be {range}"))
        })?;
        images[chw_index(i, layout, framing.size)] = pixel;
    }
    Ok(images)
}

/// Where element `i` of a row-major tensor of `layout` (images `size` x `size`) goes in CHW
/// order.
fn chw_index(i: usize, layout: Layout, size: usize) -> usize {
    let plane = size * size;
    let image_bytes = CHANNELS * plane;
    match layout {
        Layout::Chw => i,
        Layout::Hwc => {
            let (image, rest) = (i / image_bytes, i % image_bytes);
            let (pixel, channel) = (rest / CHANNELS, rest % CHANNELS);
            image * image_bytes + channel * plane + pixel
        }
    }
}

/// A number in `[0, 1]` to the nearest of the 256 8-bit levels.
fn unit_to_byte(v: &Value) -> Option<u8> {
    let f = v.as_f64()?;
    (0.0..=1.0).contains(&f).then(|| (f * 255.0).round() as u8)
}

/// The scalar elements of `data` (flat or nested arrays), which must number `expected`.
fn leaves(data: &Value, expected: usize) -> Result<Vec<&Value>, String> {
    let mut out = Vec::with_capacity(expected);
    let mut stack = vec![data];
    // Depth-first, left to right: row-major order for nested arrays.
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter().rev()),
            scalar => {
                if out.len() == expected {
                    return Err(format!("data has more than the {expected} elements its shape implies"));
                }
                out.push(scalar);
            }
        }
    }
    if out.len() != expected {
        return Err(format!("data has {} elements; its shape implies {expected}", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{IMAGE_BYTES, PLANE_BYTES};

    const CIFAR: Framing = Framing::CIFAR;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn media_type_drops_parameters_and_case() {
        assert_eq!(
            media_type(&headers(header::CONTENT_TYPE, "Application/JSON; charset=utf-8")).as_deref(),
            Some("application/json")
        );
        assert_eq!(media_type(&HeaderMap::new()), None);
    }

    #[test]
    fn accept_allows_json_and_wildcards_and_refuses_the_rest() {
        for ok in
            ["application/json", "*/*", "application/*", "text/html, application/json;q=0.5", "image/png,*/*;q=0.8", ""]
        {
            assert!(check_accept(&headers(header::ACCEPT, ok)).is_ok(), "{ok}");
        }
        assert!(check_accept(&HeaderMap::new()).is_ok());
        for no in ["text/html", "image/png, text/csv", "application/json;q=0", "application/xml"] {
            assert!(matches!(check_accept(&headers(header::ACCEPT, no)), Err(ApiError::NotAcceptable(_))), "{no}");
        }
    }

    #[test]
    fn hwc_elements_land_in_their_chw_planes() {
        // Pixel (y=0, x=1), green: HWC index (0*32 + 1)*3 + 1 = 4; CHW index 1*1024 + 1.
        assert_eq!(chw_index(4, Layout::Hwc, 32), PLANE_BYTES + 1);
        // Second image, pixel (y=1, x=0), blue: 3072 + (32)*3 + 2.
        assert_eq!(chw_index(IMAGE_BYTES + 32 * 3 + 2, Layout::Hwc, 32), IMAGE_BYTES + 2 * PLANE_BYTES + 32);
        assert_eq!(chw_index(77, Layout::Chw, 32), 77);
    }

    #[test]
    fn unit_floats_round_to_the_nearest_level() {
        assert_eq!(unit_to_byte(&json!(0.0)), Some(0));
        assert_eq!(unit_to_byte(&json!(1.0)), Some(255));
        assert_eq!(unit_to_byte(&json!(128.0 / 255.0)), Some(128));
        assert_eq!(unit_to_byte(&json!(0.5)), Some(128));
        assert_eq!(unit_to_byte(&json!(1.01)), None);
        assert_eq!(unit_to_byte(&json!(-0.1)), None);
        assert_eq!(unit_to_byte(&json!("0.5")), None);
    }

    #[test]
    fn pixel_bytes_must_be_whole_and_in_range() {
        assert_eq!(byte(&json!(0)), Some(0));
        assert_eq!(byte(&json!(255)), Some(255));
        assert_eq!(byte(&json!(12.0)), Some(12));
        assert_eq!(byte(&json!(256)), None);
        assert_eq!(byte(&json!(-1)), None);
        assert_eq!(byte(&json!(0.5)), None);
        assert_eq!(byte(&json!(null)), None);
    }

    #[test]
    fn nested_and_flat_data_give_the_same_row_major_elements() {
        let nested = json!([[1, 2], [3, [4, 5]]]);
        let got: Vec<i64> = leaves(&nested, 5).unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
        assert!(leaves(&json!([1, 2, 3]), 2).is_err());
        assert!(leaves(&json!([1]), 2).is_err());
    }

    #[test]
    fn a_pixel_array_fills_each_colour_plane() {
        let array: Vec<Vec<[u8; 3]>> = (0..32).map(|y| (0..32).map(|x| [y as u8, x as u8, 7]).collect()).collect();
        let mut out = vec![0; IMAGE_BYTES];
        pixels_hwc(&json!(array), &mut out, 32, "instance 0").unwrap();
        assert_eq!(out[5 * 32 + 9], 5); // red = y
        assert_eq!(out[PLANE_BYTES + 5 * 32 + 9], 9); // green = x
        assert_eq!(out[2 * PLANE_BYTES + 5 * 32 + 9], 7);
        let short = json!(vec![vec![[0, 0, 0]; 32]; 31]);
        assert!(matches!(pixels_hwc(&short, &mut out, 32, "instance 0"), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn garbage_is_undecodable_not_a_panic() {
        let mut out = vec![0; IMAGE_BYTES];
        for bytes in [&b""[..], b"hello", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b"\xff\xd8\xff\xe0garbage"] {
            assert!(
                matches!(decode_image(bytes, &mut out, CIFAR, "the image"), Err(ApiError::Undecodable { .. })),
                "{bytes:?}"
            );
        }
    }

    /// A one-pixel RGB PNG whose header (with a valid checksum) claims `width` x `height`.
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&[0; 3], 1, 1, image::ExtendedColorType::Rgb8)
            .unwrap();
        // IHDR: length (8..12), "IHDR" (12..16), width, height, ... (16..29), CRC (29..33).
        png[16..20].copy_from_slice(&width.to_be_bytes());
        png[20..24].copy_from_slice(&height.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&png[12..29]);
        png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        png
    }

    #[test]
    fn a_request_over_the_pixel_budget_is_refused_before_anything_is_decoded() {
        // Headers claiming 4096x4096 (allowed one by one) over one real pixel: five of them
        // are 80 Mi pixels, over the 64 Mi budget, refused from the headers alone.
        let png = png_claiming(4096, 4096);
        let body = |n: usize| {
            let items: Vec<String> = (0..n).map(|_| format!("\"{}\"", BASE64.encode(&png))).collect();
            format!("{{\"instances\": [{}]}}", items.join(","))
        };
        match instances(body(5).as_bytes(), CIFAR) {
            Err(ApiError::TooLarge(message)) => assert!(message.contains("pixels together"), "{message}"),
            other => panic!("{other:?}"),
        }
        // Four fit the budget; then decoding finds the pixel data missing.
        assert!(matches!(instances(body(4).as_bytes(), CIFAR), Err(ApiError::Undecodable { .. })));
    }

    #[test]
    fn huge_dimensions_are_refused_before_decoding() {
        // A PNG header claiming 8000x8400 pixels (over 64 Mi); the pixel data is never read.
        let png = png_claiming(1, 1);
        let big = png_claiming(8000, 8400);
        let mut out = vec![0; IMAGE_BYTES];
        match decode_image(&big, &mut out, CIFAR, "the image") {
            Err(ApiError::TooLarge(message)) => assert!(message.contains("8000x8400"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(decode_image(&png, &mut out, CIFAR, "the image").is_ok());
    }

    use image::ImageEncoder;
}
