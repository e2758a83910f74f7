//! Any request body through the server's parsers: an image body, a SageMaker JSON body and a
//! KServe v2 JSON body. Each must answer with images or an error, never panic.
#![no_main]

use classify::data::IMAGE_BYTES;
use classify::serve::input::{instances, single_image, tensor_images};
use classify::serve::kserve::InferRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(images) = single_image(data) {
        assert_eq!(images.len(), IMAGE_BYTES);
    }
    if let Ok(images) = instances(data) {
        assert_eq!(images.len() % IMAGE_BYTES, 0);
    }
    if let Ok(request) = serde_json::from_slice::<InferRequest>(data) {
        for input in &request.inputs {
            if let Ok(images) = tensor_images(input) {
                assert_eq!(images.len() % IMAGE_BYTES, 0);
            }
        }
    }
});
