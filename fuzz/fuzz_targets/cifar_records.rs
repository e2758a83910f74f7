//! Any bytes as a CIFAR binary batch: the first byte picks how many classes the names file
//! has (1..=256), the rest is the batch. What parses must be whole records with valid labels.
#![no_main]

use std::path::Path;

use classify::data::cifar::{RECORD_BYTES, parse_records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, batch)) = data.split_first() else { return };
    let n_classes = usize::from(n) + 1;
    if let Ok(set) = parse_records(Path::new("fuzz.bin"), batch, n_classes) {
        assert_eq!(set.len() * RECORD_BYTES, batch.len());
        assert!(set.labels.iter().all(|&l| usize::from(l) < n_classes));
    }
});
