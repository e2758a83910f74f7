//! Any request body through the server's parsers: an image body, a SageMaker JSON body and a
//! KServe v2 JSON body, framed as a CIFAR run (32x32 as they are) and as a photo run (shorter
//! side resized, centre 40x40 kept). Each must answer with whole images or an error, never
//! panic.
#![no_main]

use classify::geometry::Framing;
use classify::serve::input::{instances, single_image, tensor_images};
use classify::serve::kserve::InferRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for framing in [Framing::CIFAR, Framing::photo(40)] {
        let bytes = framing.input().image_bytes();
        if let Ok(images) = single_image(data, framing) {
            assert_eq!(images.len(), bytes);
        }
        if let Ok(images) = instances(data, framing) {
            assert_eq!(images.len() % bytes, 0);
        }
        if let Ok(request) = serde_json::from_slice::<InferRequest>(data) {
            for input in &request.inputs {
                if let Ok(images) = tensor_images(input, framing) {
                    assert_eq!(images.len() % bytes, 0);
                }
            }
        }
    }
});
