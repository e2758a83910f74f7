//! Decoding is held to a memory budget whatever a file says: a 32x32 PNG whose colour
//! profile (iCCP, zlib data) inflates to 400 MiB must not make the decoder allocate it, and
//! 24-megapixel camera photos decoded on many threads at once stay within the decode memory.
//!
//! Its own test binary, so that the counting allocator below sees only these tests, which
//! run one at a time.

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use classify::data::IMAGE_BYTES;
use classify::data::folder::decode_into;
use util::png_with_profile;

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

/// The decode memory of this test binary: room for one 24-megapixel photo's decode in the
/// large share (120 MiB), not two.
const DECODE_MEMORY: u64 = 160 << 20;

/// Sets the decode memory and holds the lock that keeps these tests one at a time (each
/// measures the whole process's peak).
fn alone() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    classify::data::budget::set_decode_memory(DECODE_MEMORY).unwrap();
    guard
}

/// Runs `work`, returning what it returned and the most bytes allocated at once meanwhile,
/// over what was live before.
fn peak_of<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let value = work();
    (value, PEAK.load(Ordering::SeqCst) - before)
}

#[test]
fn a_colour_profile_bomb_decodes_within_the_budget() {
    let _alone = alone();
    let bomb = png_with_profile(400);
    assert!(bomb.len() < 1 << 20, "the file is small: {} bytes", bomb.len());
    let mut out = vec![0u8; IMAGE_BYTES];
    // The pixels decode (the profile, which nothing here uses, is dropped at the cap).
    let (decoded, peak) = peak_of(|| decode_into(&bomb, &mut out));
    decoded.unwrap();
    assert!(peak < 64 << 20, "decoding allocated {} MiB at once", peak >> 20);
    // The image itself came through: the pattern x ^ y, in all three planes.
    assert_eq!(&out[..4], &[0, 1, 2, 3]);
    assert_eq!(out[1024 + 33], 0, "grey is replicated: (1, 1) is 1 ^ 1");

    // The server reads the header before decoding: that read is held to the budget too.
    let (images, peak) = peak_of(|| classify::serve::input::single_image(&bomb, classify::geometry::Framing::CIFAR));
    assert!(peak < 64 << 20, "serving it allocated {} MiB at once", peak >> 20);
    assert_eq!(images.unwrap(), out);
}

#[test]
fn camera_photos_decode_within_the_decode_memory_on_any_number_of_threads() {
    let _alone = alone();
    let photo = util::camera_jpeg(6000, 4000);
    let header = classify::data::folder::image_header(&photo).unwrap();
    assert_eq!((header.width, header.height, header.decode_bytes()), (6000, 4000, 72_000_000));

    // One photo: read (it was over the old 4096x4096 limit), framed as the model sees it,
    // holding about what its reservation counts.
    let mut out = vec![0u8; IMAGE_BYTES];
    let (decoded, one) = peak_of(|| decode_into(&photo, &mut out));
    decoded.unwrap_or_else(|e| panic!("a 24-megapixel photo is read: {e}"));
    let plane = IMAGE_BYTES / 3;
    let (left, right) = (16 * 32 + 2, 16 * 32 + 29);
    assert!(out[left] > 200 && out[2 * plane + left] < 40, "left is red: {:?}", [out[left], out[2 * plane + left]]);
    assert!(out[right] < 40 && out[2 * plane + right] > 200, "right is blue");
    let counted = header.decode_bytes() as usize;
    assert!(one < counted + (24 << 20), "one decode held {} MiB, its reservation {} MiB", one >> 20, counted >> 20);

    // Four threads at once: two reservations (144 MB) do not fit the 120 MiB large share, so
    // the decodes take turns, and the process never holds two photos' pixels.
    let (outs, four) = peak_of(|| {
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = vec![0u8; IMAGE_BYTES];
                        decode_into(&photo, &mut out).map(|()| out)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap().unwrap()).collect::<Vec<_>>()
        })
    });
    assert!(outs.iter().all(|o| *o == out), "every thread decodes the same pixels");
    eprintln!("24-megapixel JPEG: one decode held {} MiB at once, four on four threads {} MiB", one >> 20, four >> 20);
    assert!(
        four < 2 * counted,
        "four decodes at once held {} MiB; one alone {} MiB (the budget lets one run at a time)",
        four >> 20,
        one >> 20
    );
    assert_eq!(classify::data::budget::global().held(), 0, "every reservation is given back");
}
