//! Decoding is held to a memory budget whatever a small file says: a 32x32 PNG whose colour
//! profile (iCCP, zlib data) inflates to 400 MiB must not make the decoder allocate it.
//!
//! Its own test binary, so that the counting allocator below sees only this test.

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use classify::data::IMAGE_BYTES;
use classify::data::folder::decode_into;
use util::png_chunk;

/// The system allocator, counting the bytes live at once and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(live, Ordering::SeqCst);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn zlib(parts: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    for part in parts {
        z.write_all(&part).unwrap();
    }
    z.finish().unwrap()
}

/// A valid grey 32x32 PNG with an iCCP chunk of `profile_mib` MiB of zeros, compressed.
fn png_with_profile(profile_mib: usize) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&32u32.to_be_bytes());
    ihdr.extend_from_slice(&32u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey
    png_chunk(&mut png, b"IHDR", &ihdr);
    let mut iccp = b"bomb\0\0".to_vec(); // profile name, compression method 0
    iccp.extend(zlib((0..profile_mib).map(|_| vec![0u8; 1 << 20])));
    png_chunk(&mut png, b"iCCP", &iccp);
    let rows: Vec<u8> = (0..32u8).flat_map(|y| std::iter::once(0).chain((0..32u8).map(move |x| x ^ y))).collect();
    png_chunk(&mut png, b"IDAT", &zlib(std::iter::once(rows)));
    png_chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn a_colour_profile_bomb_decodes_within_the_budget() {
    let bomb = png_with_profile(400);
    assert!(bomb.len() < 1 << 20, "the file is small: {} bytes", bomb.len());
    let mut out = vec![0u8; IMAGE_BYTES];
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    // The pixels decode (the profile, which nothing here uses, is dropped at the cap).
    decode_into(&bomb, &mut out).unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert!(peak < 64 << 20, "decoding allocated {} MiB at once", peak >> 20);
    // The image itself came through: the pattern x ^ y, in all three planes.
    assert_eq!(&out[..4], &[0, 1, 2, 3]);
    assert_eq!(out[1024 + 33], 0, "grey is replicated: (1, 1) is 1 ^ 1");

    // The server reads the header before decoding: that read is held to the budget too.
    PEAK.store(LIVE.load(Ordering::SeqCst), Ordering::SeqCst);
    let before = LIVE.load(Ordering::SeqCst);
    let images = classify::serve::input::single_image(&bomb, classify::geometry::Framing::CIFAR).unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert!(peak < 64 << 20, "serving it allocated {} MiB at once", peak >> 20);
    assert_eq!(images, out);
}
