//! Any bytes through the image decoder that training, `predict` and the server share: it must
//! return an error, never panic, hang or allocate without bound.
#![no_main]

use classify::data::{IMAGE_BYTES, folder::decode_into};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = vec![0u8; IMAGE_BYTES];
    let _ = decode_into(data, &mut out);
});
