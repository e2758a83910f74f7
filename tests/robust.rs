//! Nothing lost, nothing crashes: bad input files, interrupted runs, failed writes and run
//! folders that do not fit the build. Every test builds its own bad input in a temp folder.
//!
//! Already covered elsewhere and not repeated here: a truncated CIFAR batch and an
//! out-of-range label (`tests/data.rs`, `src/data/cifar.rs`), an unknown test class
//! (`tests/data.rs`), a newer run format (`src/run.rs`).

mod util;

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use classify::data::cifar::{self, META_FILE, TEST_FILE, TRAIN_FILES};
use classify::data::folder::decode_into;
use classify::data::{BadImagePolicy, DataError, IMAGE_BYTES, ImageSet, LoadOptions, PLANE_BYTES, load};
use serde_json::Value;
use util::{classify, ok, png_chunk, stderr, stdout};

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A PNG written by hand, so colour types the `image` encoder never writes (palettes, low bit
/// depths) can be tested: `rows` are the raw scanlines without filter bytes.
fn raw_png(width: u32, height: u32, depth: u8, colour: u8, extra: &[(&[u8; 4], Vec<u8>)], rows: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([depth, colour, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    for (kind, data) in extra {
        png_chunk(&mut out, kind, data);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    for row in rows {
        z.write_all(&[0]).unwrap(); // filter: none
        z.write_all(row).unwrap();
    }
    png_chunk(&mut out, b"IDAT", &z.finish().unwrap());
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn png(img: image::DynamicImage) -> Vec<u8> {
    let mut buf = Vec::new();
    img.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png).unwrap();
    buf
}

/// A 64x64 noisy JPEG (noise, so the entropy-coded data is long enough to cut in half).
fn noisy_jpeg() -> Vec<u8> {
    let mut rng = util::Lcg::new(3);
    let img = image::RgbImage::from_fn(64, 64, |_, _| image::Rgb([rng.next_u8(), rng.next_u8(), rng.next_u8()]));
    let mut buf = Vec::new();
    image::DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Jpeg).unwrap();
    buf
}

fn solid_png(p: [u8; 3]) -> Vec<u8> {
    png(image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(32, 32, image::Rgb(p))))
}

fn put(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// `train/a/{0,1,2}.png` (red) and `train/b/{0,1,2}.png` (green): a valid two-class folder.
fn good_folder(root: &Path) {
    for i in 0..3 {
        put(&root.join(format!("train/a/{i}.png")), &solid_png([200, 0, 0]));
        put(&root.join(format!("train/b/{i}.png")), &solid_png([0, 200, 0]));
    }
}

fn load_with(root: &Path, policy: BadImagePolicy) -> Result<classify::data::Dataset, DataError> {
    let opts = LoadOptions { on_bad_image: policy, ..LoadOptions::default() };
    load(root.to_str().unwrap(), &opts)
}

fn decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; IMAGE_BYTES];
    decode_into(bytes, &mut out).map(|()| out)
}

/// The bad files every policy test uses, with a word their reason must contain.
fn bad_files() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let good_png = solid_png([1, 2, 3]);
    let mut crc_broken = good_png.clone();
    // The first byte of IHDR's CRC: the header no longer matches its checksum.
    crc_broken[29] ^= 0x01;
    let jpeg = noisy_jpeg();
    let mut scrambled_jpeg = jpeg.clone();
    // Overwrite the segments after SOI (quantisation and Huffman tables, frame header).
    for b in &mut scrambled_jpeg[2..200] {
        *b = 0x5A;
    }
    vec![
        ("empty.png", Vec::new(), "empty"),
        ("empty.jpg", Vec::new(), "empty"),
        ("text.jpg", b"this is a note, not a picture\n".to_vec(), "not an image this reader knows"),
        ("truncated.png", good_png[..good_png.len() / 2].to_vec(), ""),
        ("crc.png", crc_broken, ""),
        ("truncated.jpg", jpeg[..jpeg.len() / 2].to_vec(), ""),
        ("scrambled.jpg", scrambled_jpeg, ""),
    ]
}

// ---------------------------------------------------------------------------------------------
// Bad image files

#[test]
fn each_bad_image_file_fails_the_load_naming_it() {
    for (name, bytes, word) in bad_files() {
        let tmp = tempfile::tempdir().unwrap();
        good_folder(tmp.path());
        let bad = tmp.path().join("train/b").join(name);
        put(&bad, &bytes);
        let err = match load_with(tmp.path(), BadImagePolicy::Fail) {
            Err(e) => e,
            Ok(d) => panic!("{name} was accepted: pixel 0 {:?}", &d.train.memory().unwrap().image(3)[..3]),
        };
        assert!(matches!(err, DataError::Decode { .. }), "{name}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(&*bad.to_string_lossy()), "{name}: {msg}");
        assert!(msg.contains(word), "{name}: {msg}");
        assert!(msg.contains("--on-bad-image skip"), "{name}: {msg}");
    }
}

#[test]
fn skip_policy_leaves_bad_files_out_and_lists_them_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    good_folder(tmp.path());
    let mut expected = Vec::new();
    for (name, bytes, word) in bad_files() {
        let path = tmp.path().join("train/b").join(format!("x-{name}"));
        put(&path, &bytes);
        expected.push((path, word));
    }
    put(&tmp.path().join("test/a/0.png"), &solid_png([200, 0, 0]));
    put(&tmp.path().join("test/a/1.jpg"), b"");
    let data = load_with(tmp.path(), BadImagePolicy::Skip).unwrap();
    assert_eq!(data.train.labels(), vec![0, 0, 0, 1, 1, 1]);
    assert_eq!(data.train.memory().unwrap().images.len(), 6 * IMAGE_BYTES);
    // The good images are intact, and in their places.
    assert!(data.train.memory().unwrap().image(2)[..PLANE_BYTES].iter().all(|&v| v == 200));
    assert!(data.train.memory().unwrap().image(3)[PLANE_BYTES..2 * PLANE_BYTES].iter().all(|&v| v == 200));
    let test = data.test.unwrap();
    assert_eq!(test.labels(), vec![0]);
    // Train's bad files in file-name order, then test's.
    expected.sort();
    expected.push((tmp.path().join("test/a/1.jpg"), "empty"));
    let skipped: Vec<&PathBuf> = data.skipped.iter().map(|s| &s.path).collect();
    assert_eq!(skipped, expected.iter().map(|(p, _)| p).collect::<Vec<_>>());
    for (s, (_, word)) in data.skipped.iter().zip(&expected) {
        assert!(s.reason.contains(word) && !s.reason.is_empty(), "{}: {}", s.path.display(), s.reason);
    }
}

#[test]
fn skipping_every_image_of_a_class_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    good_folder(tmp.path());
    put(&tmp.path().join("train/c/only.jpg"), b"not an image");
    let msg = load_with(tmp.path(), BadImagePolicy::Skip).unwrap_err().to_string();
    assert!(msg.contains("class folder(s) c ") && msg.contains("skipped"), "{msg}");
}

#[test]
fn grey_alpha_16_bit_and_palette_pngs_are_converted_exactly() {
    // Grey + alpha: the grey level in all three planes, alpha dropped.
    let la = image::GrayAlphaImage::from_fn(32, 32, |x, _| image::LumaA([x as u8 * 4, 7]));
    let out = decode(&png(image::DynamicImage::ImageLumaA8(la))).unwrap();
    for c in 0..3 {
        assert_eq!(out[c * PLANE_BYTES + 5], 20, "plane {c}");
    }
    // RGBA: colour kept whatever the alpha, even fully transparent.
    let rgba = image::RgbaImage::from_fn(32, 32, |x, y| image::Rgba([x as u8, y as u8, 9, (x * 8) as u8]));
    let out = decode(&png(image::DynamicImage::ImageRgba8(rgba))).unwrap();
    let i = 3 * 32 + 17;
    assert_eq!([out[i], out[PLANE_BYTES + i], out[2 * PLANE_BYTES + i]], [17, 3, 9]);
    assert_eq!([out[0], out[PLANE_BYTES], out[2 * PLANE_BYTES]], [0, 0, 9]); // alpha 0
    // 16-bit RGB and grey: v * 257 is the 16-bit form of the 8-bit v, and must come back as v.
    let rgb16 = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(32, 32, |x, y| {
        image::Rgb([x as u16 * 257, y as u16 * 257 * 2, 65535])
    });
    let out = decode(&png(image::DynamicImage::ImageRgb16(rgb16))).unwrap();
    assert_eq!([out[i], out[PLANE_BYTES + i], out[2 * PLANE_BYTES + i]], [17, 6, 255]);
    let grey16 = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_pixel(32, 32, image::Luma([100 * 257]));
    assert!(decode(&png(image::DynamicImage::ImageLuma16(grey16))).unwrap().iter().all(|&v| v == 100));
    let rgba16 = image::ImageBuffer::<image::Rgba<u16>, Vec<u16>>::from_pixel(32, 32, image::Rgba([257, 514, 771, 0]));
    let out = decode(&png(image::DynamicImage::ImageRgba16(rgba16))).unwrap();
    assert_eq!([out[0], out[PLANE_BYTES], out[2 * PLANE_BYTES]], [1, 2, 3]);

    // 8-bit palette, index (x + y) % 4, with a transparency entry that must not matter.
    let palette = [[255u8, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]];
    let plte: Vec<u8> = palette.iter().flatten().copied().collect();
    let rows: Vec<Vec<u8>> = (0..32).map(|y| (0..32).map(|x| ((x + y) % 4) as u8).collect()).collect();
    let pal8 = raw_png(32, 32, 8, 3, &[(b"PLTE", plte.clone()), (b"tRNS", vec![255, 0])], &rows);
    // 2-bit palette: four indices per byte, most significant first.
    let rows2: Vec<Vec<u8>> = (0..32)
        .map(|y| (0..8).map(|b| (0..4).fold(0u8, |acc, k| (acc << 2) | ((4 * b + k + y) % 4) as u8)).collect())
        .collect();
    let pal2 = raw_png(32, 32, 2, 3, &[(b"PLTE", plte)], &rows2);
    for (name, bytes) in [("8-bit palette", pal8), ("2-bit palette", pal2)] {
        let out = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        for y in 0..32 {
            for x in 0..32 {
                let i = y * 32 + x;
                let want = palette[(x + y) % 4];
                assert_eq!([out[i], out[PLANE_BYTES + i], out[2 * PLANE_BYTES + i]], want, "{name} ({x}, {y})");
            }
        }
    }
    // 1-bit grey: 0 -> 0, 1 -> 255.
    let rows1: Vec<Vec<u8>> = (0..32).map(|_| vec![0b1010_1010; 4]).collect();
    let out = decode(&raw_png(32, 32, 1, 0, &[], &rows1)).unwrap();
    assert_eq!(&out[..4], &[255, 0, 255, 0]);
}

#[test]
fn huge_images_are_refused_from_the_header_before_decoding() {
    // A 30000x30000 RGB PNG would decode to 2.7 GB; this one is a few bytes of header (its
    // data is one row), so only the header check can have refused it.
    let huge = raw_png(30_000, 30_000, 8, 2, &[], &[vec![0; 90_000]]);
    let err = decode(&huge).unwrap_err();
    assert!(err.contains("30000x30000") && err.contains("8192x8192"), "{err}");
    // The limit is on the pixel count: 8000x8400 has both sides under 8,500 but is over 64 Mi.
    let err = decode(&raw_png(8000, 8400, 8, 0, &[], &[vec![0; 8000]])).unwrap_err();
    assert!(err.contains("8000x8400") && err.contains("shrink it"), "{err}");
    // At the limit's edge a real image is still read: 8192x1.
    let wide = png(image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(8192, 1, image::Luma([50]))));
    assert!(decode(&wide).unwrap().iter().all(|&v| v == 50));

    // Through the loader: the file is named.
    let tmp = tempfile::tempdir().unwrap();
    good_folder(tmp.path());
    put(&tmp.path().join("train/a/huge.png"), &huge);
    let msg = load_with(tmp.path(), BadImagePolicy::Fail).unwrap_err().to_string();
    assert!(msg.contains("huge.png") && msg.contains("shrink it"), "{msg}");
}

#[test]
fn camera_photos_are_predicted_and_past_the_decode_memory_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("d"), &CLASSES, 4, 0);
    ok(classify(root, &["train", "--data", "d", "--epochs", "1", "--val-split", "0.25", "--out", "r"]));
    put(&root.join("photo.jpg"), &util::camera_jpeg(6000, 4000));

    // 24 megapixels: over the old 4096x4096 limit, read now.
    let out = ok(classify(root, &["predict", "--run", "r", "photo.jpg"]));
    assert!(stdout(&out).contains("photo.jpg"), "{}", stdout(&out));

    // Its decode (72 MB) does not fit the large share of 64 MiB (48 MiB): refused, naming
    // the file and the flag, from the setting or the environment.
    let out = classify(root, &["predict", "--run", "r", "photo.jpg", "--decode-memory", "64MiB"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("photo.jpg") && err.contains("69 MiB") && err.contains("--decode-memory"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_classify"))
        .current_dir(root)
        .args(["predict", "--run", "r", "photo.jpg"])
        .env("CLASSIFY_DECODE_MEMORY", "64MiB")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("CLASSIFY_DECODE_MEMORY"), "{}", stderr(&out));

    // A budget with no room for any large image, or not an amount: refused before anything runs.
    for (value, words) in [("1MiB", "at least 32 MiB"), ("lots", "not an amount of memory")] {
        let out = classify(root, &["predict", "--run", "r", "photo.jpg", "--decode-memory", value]);
        assert_eq!(out.status.code(), Some(2), "{value}: {}", stderr(&out));
        assert!(stderr(&out).contains("--decode-memory") && stderr(&out).contains(words), "{}", stderr(&out));
    }
}

#[test]
fn empty_class_folders_are_an_error_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    good_folder(tmp.path());
    fs::create_dir_all(tmp.path().join("train/c")).unwrap();
    put(&tmp.path().join("train/d/notes.txt"), b"no images here");
    for policy in [BadImagePolicy::Fail, BadImagePolicy::Skip] {
        let msg = load_with(tmp.path(), policy).unwrap_err().to_string();
        assert!(msg.contains("class folder(s) c, d ") && msg.contains("remove the folder"), "{msg}");
    }
}

#[test]
fn subfolders_and_other_formats_are_read_and_other_files_counted() {
    let tmp = tempfile::tempdir().unwrap();
    good_folder(tmp.path());
    let blue = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(40, 30, image::Rgb([0, 0, 200])));
    for (name, format) in [
        ("a/2019/x.gif", image::ImageFormat::Gif),
        ("a/2019/deep/y.bmp", image::ImageFormat::Bmp),
        ("b/z.webp", image::ImageFormat::WebP),
        ("b/w.TIFF", image::ImageFormat::Tiff),
    ] {
        let mut bytes = Vec::new();
        blue.write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
        put(&tmp.path().join("train").join(name), &bytes);
    }
    // The desktop's own files are left out silently, other files with a warning.
    for junk in ["a/.DS_Store", "a/._x.png", "a/2019/Thumbs.db", "b/notes.txt"] {
        put(&tmp.path().join("train").join(junk), b"not an image");
    }
    let data = load_with(tmp.path(), BadImagePolicy::Fail).unwrap();
    assert_eq!(data.train.labels(), vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    // Class a in path order: 0.png 1.png 2.png 2019/deep/y.bmp 2019/x.gif; all four new
    // files decode to the blue they hold.
    for i in [3, 4, 8, 9] {
        let image = data.train.memory().unwrap().image(i);
        assert_eq!((image[0], image[2 * 1024]), (0, 200), "image {i}");
    }
    let out = classify(tmp.path(), &["train", "--data", ".", "--epochs", "1", "--val-split", "0", "--out", "r"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("1 file(s) in") && err.contains("notes.txt") && !err.contains("DS_Store"), "{err}");
}

#[test]
fn one_class_is_not_a_classifier() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..3 {
        put(&tmp.path().join(format!("train/cat/{i}.png")), &solid_png([200, 0, 0]));
    }
    let msg = load_with(tmp.path(), BadImagePolicy::Fail).unwrap_err().to_string();
    assert!(msg.contains("one class folder (cat)") && msg.contains("at least two classes"), "{msg}");
}

#[test]
fn class_names_with_line_breaks_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    good_folder(tmp.path());
    put(&tmp.path().join("train/two\nlines/0.png"), &solid_png([0, 0, 200]));
    let msg = load_with(tmp.path(), BadImagePolicy::Fail).unwrap_err().to_string();
    assert!(msg.contains("control character") && msg.contains("rename the class folder"), "{msg}");
}

#[test]
fn test_class_folders_not_in_train_are_all_named() {
    let tmp = tempfile::tempdir().unwrap();
    good_folder(tmp.path());
    put(&tmp.path().join("test/a/0.png"), &solid_png([1, 1, 1]));
    put(&tmp.path().join("test/A/0.png"), &solid_png([1, 1, 1]));
    put(&tmp.path().join("test/zebra/0.png"), &solid_png([1, 1, 1]));
    let msg = load_with(tmp.path(), BadImagePolicy::Fail).unwrap_err().to_string();
    assert!(msg.contains("A, zebra") && msg.contains("training classes are a, b"), "{msg}");
    // A test folder lacking a training class is allowed (a warning says so).
    fs::remove_dir_all(tmp.path().join("test/A")).unwrap();
    fs::remove_dir_all(tmp.path().join("test/zebra")).unwrap();
    let data = load_with(tmp.path(), BadImagePolicy::Fail).unwrap();
    assert_eq!(data.test.unwrap().labels(), vec![0]);
}

// ---------------------------------------------------------------------------------------------
// CIFAR binaries

fn write_cifar_dir(dir: &Path, classes: &[&str]) {
    fs::create_dir_all(dir).unwrap();
    let mut set = ImageSet::new();
    for i in 0..4u8 {
        set.push(&[i; IMAGE_BYTES], i % 2);
    }
    for name in TRAIN_FILES {
        cifar::write_records(&dir.join(name), &set).unwrap();
    }
    cifar::write_records(&dir.join(TEST_FILE), &set).unwrap();
    fs::write(dir.join(META_FILE), classes.join("\n")).unwrap();
}

#[test]
fn cifar_batch_with_extra_bytes_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar_dir(tmp.path(), &["a", "b"]);
    let path = tmp.path().join(TRAIN_FILES[1]);
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0; 100]).unwrap();
    let msg = cifar::load_dir(tmp.path()).unwrap_err().to_string();
    assert!(msg.contains(TRAIN_FILES[1]) && msg.contains("12392 bytes") && msg.contains("3073"), "{msg}");
    // Also as bytes, for callers without a file.
    let bytes = vec![0u8; cifar::RECORD_BYTES + 1];
    assert!(cifar::parse_records(Path::new("mem.bin"), &bytes, 10).is_err());
}

#[test]
fn cifar_meta_with_the_wrong_names() {
    let tmp = tempfile::tempdir().unwrap();
    // Too few names: label 1 has none; the message says the meta file may lack names.
    write_cifar_dir(tmp.path(), &["a"]);
    let msg = cifar::load_dir(tmp.path()).unwrap_err().to_string();
    assert!(msg.contains("label 1") && msg.contains("lacks names"), "{msg}");
    // A name twice.
    write_cifar_dir(tmp.path(), &["a", "b", "a"]);
    let msg = cifar::load_dir(tmp.path()).unwrap_err().to_string();
    assert!(msg.contains(META_FILE) && msg.contains("`a` twice"), "{msg}");
    // More than a byte's worth.
    let many: Vec<String> = (0..300).map(|i| format!("c{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    write_cifar_dir(tmp.path(), &many);
    let msg = cifar::load_dir(tmp.path()).unwrap_err().to_string();
    assert!(msg.contains("300 classes"), "{msg}");
    // Too many names is allowed (a warning names the unused ones).
    write_cifar_dir(tmp.path(), &["a", "b", "c"]);
    assert_eq!(cifar::load_dir(tmp.path()).unwrap().classes, vec!["a", "b", "c"]);
    // A byte-order mark, as Windows editors write one, is not part of the first name.
    let meta = tmp.path().join(META_FILE);
    let text = fs::read_to_string(&meta).unwrap();
    fs::write(&meta, format!("\u{feff}{text}")).unwrap();
    assert_eq!(cifar::load_dir(tmp.path()).unwrap().classes, vec!["a", "b", "c"]);
}

// ---------------------------------------------------------------------------------------------
// The flag, through the binary

const CLASSES: [&str; 2] = ["blue", "red"];

#[test]
fn on_bad_image_flag_fails_by_default_and_skips_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("d"), &CLASSES, 4, 2);
    put(&root.join("d/train/red/zz-empty.png"), b"");
    put(&root.join("d/test/blue/zz-note.jpg"), b"hello");

    let out = classify(root, &["train", "--data", "d", "--epochs", "1", "--val-split", "0.25", "--out", "r"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("zz-empty.png") && err.contains("--on-bad-image skip"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!root.join("r/config.json").exists());

    let out = ok(classify(
        root,
        &["train", "--data", "d", "--epochs", "1", "--val-split", "0.25", "--out", "r", "--on-bad-image", "skip"],
    ));
    let err = stderr(&out);
    assert!(err.contains("skipped 2 bad image file(s)") && err.contains("zz-note.jpg"), "{err}");
    let config: Value = serde_json::from_str(&fs::read_to_string(root.join("r/config.json")).unwrap()).unwrap();
    assert_eq!(config["train_images"], 6);

    // eval and report take the flag too; eval's default fails on the bad test file.
    let out = classify(root, &["eval", "--run", "r"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("zz-empty.png") && stderr(&out).contains("--on-bad-image"), "{}", stderr(&out));
    let out = ok(classify(root, &["eval", "--run", "r", "--json", "--on-bad-image", "skip"]));
    let e: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(e["n"], 4);
    let out = classify(root, &["report", "--run", "r", "--on-bad-image", "nope"]);
    assert_eq!(out.status.code(), Some(2));

    // Resuming with another policy would train on other images: refused.
    let out = classify(root, &["train", "--out", "r", "--resume", "--epochs", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("zz-empty.png"), "{}", stderr(&out));
    fs::copy(root.join("d/train/red/000.png"), root.join("d/train/red/zz-new.png")).unwrap();
    let out = classify(root, &["train", "--out", "r", "--resume", "--epochs", "2", "--on-bad-image", "skip"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("same data"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// Interrupted runs

/// Starts `classify train ARGS` held at `pause` (see `CLASSIFY_PAUSE_AT` in
/// `src/train/progress.rs`): the process stops there until it is killed.
fn spawn_train(root: &Path, args: &[&str], pause: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_classify"))
        .arg("train")
        .args(args)
        .current_dir(root)
        .env("CLASSIFY_HOME", root.join(".cache"))
        .env(classify::train::PAUSE_ENV, pause)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start classify train")
}

/// Waits up to two minutes for the child to say it is paused, then kills it with SIGKILL
/// (no chance to clean up). Fails if it ended instead.
fn kill_when_paused(child: &mut Child) {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("paused at ") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let paused = rx.recv_timeout(Duration::from_secs(120));
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(paused.is_ok() && running, "the run did not reach its pause point (ended: {})", !running);
}

/// Files under `dir` (recursively) whose names hold `.tmp-`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(temporaries(&path));
        } else if entry.file_name().to_string_lossy().contains(".tmp-") {
            found.push(path);
        }
    }
    found
}

fn metric_lines(run: &Path) -> Vec<String> {
    fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default().lines().map(str::to_string).collect()
}

/// Checks a finished run: one metrics line per epoch 1..=epochs, a checkpoint of the last
/// epoch whose files exist, and no temporary files.
fn check_complete(run: &Path, epochs: u64) -> Vec<String> {
    let lines = metric_lines(run);
    let numbers: Vec<u64> =
        lines.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()["epoch"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=epochs).collect::<Vec<_>>());
    let ckpt: Value = serde_json::from_str(&fs::read_to_string(run.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(ckpt["epoch"], epochs);
    for key in ["model", "optimizer"] {
        let file = run.join(ckpt[key].as_str().unwrap());
        assert!(file.is_file(), "checkpoint.json names {} which is missing", file.display());
    }
    // Only the last checkpoint's two files remain.
    assert_eq!(fs::read_dir(run.join("checkpoint")).unwrap().count(), 2);
    assert!(temporaries(run).is_empty(), "{:?}", temporaries(run));
    lines
}

const EPOCHS: u64 = 6;

fn train_args(out: &str) -> Vec<String> {
    ["--data", "d", "--epochs", &EPOCHS.to_string(), "--batch-size", "4", "--val-split", "0.25", "--out", out]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn killed_after_a_checkpoint_resumes_with_history_intact() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("d"), &CLASSES, 8, 0);
    let args = train_args("r");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = root.join("r");

    // Held once epoch 2's checkpoint, metrics and curves are written, mid-run.
    let mut child = spawn_train(root, &args, "epoch-2");
    kill_when_paused(&mut child);
    let before = metric_lines(&run);
    assert_eq!(before.len(), 2, "{before:?}");

    ok(classify(root, &["train", "--out", "r", "--resume"]));
    let after = check_complete(&run, EPOCHS);
    assert_eq!(after[..before.len()], before[..], "lines logged before the kill changed");
}

#[test]
fn killed_before_any_checkpoint_starts_over_or_says_there_is_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("d"), &CLASSES, 8, 0);

    // Killed with the images read and nothing of the run written: nothing to resume.
    let args = train_args("r1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = spawn_train(root, &args, "loaded");
    kill_when_paused(&mut child);
    let run = root.join("r1");
    assert!(!run.join("config.json").exists());
    let out = classify(root, &["train", "--out", "r1", "--resume"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no config.json") && stderr(&out).contains("classify train --out"),
        "{}",
        stderr(&out)
    );
    // And a plain train into the same folder is not refused.
    let train: Vec<&str> = ["train"].into_iter().chain(args.iter().copied()).collect();
    ok(classify(root, &train));
    check_complete(&run, EPOCHS);

    // Killed with the run folder and config.json written, before the first epoch ended:
    // the resume starts over from epoch 1.
    let args = train_args("r2");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = spawn_train(root, &args, "started");
    kill_when_paused(&mut child);
    let run = root.join("r2");
    assert!(run.join("config.json").exists() && !run.join("checkpoint.json").exists());
    let out = ok(classify(root, &["train", "--out", "r2", "--resume"]));
    assert!(stderr(&out).contains("no complete checkpoint yet"), "{}", stderr(&out));
    check_complete(&run, EPOCHS);
}

#[test]
fn failed_checkpoint_write_keeps_the_last_good_one() {
    // Tests run as root here, where a read-only folder does not stop writes; a folder where
    // the next checkpoint file should go fails the rename, as a full disk fails the write.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("d"), &CLASSES, 4, 0);
    let blocker = root.join("r/checkpoint/model-0002.bpk");
    fs::create_dir_all(&blocker).unwrap();

    let out = classify(root, &["train", "--data", "d", "--epochs", "3", "--val-split", "0.25", "--out", "r"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot write") && err.contains("model-0002.bpk"), "{err}");
    assert!(err.contains("last complete checkpoint is kept") && err.contains("--resume"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let run = root.join("r");
    let ckpt: Value = serde_json::from_str(&fs::read_to_string(run.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(ckpt["epoch"], 1);
    assert!(run.join(ckpt["model"].as_str().unwrap()).is_file());
    assert!(run.join(ckpt["optimizer"].as_str().unwrap()).is_file());
    assert!(run.join("model.bpk").is_file());
    assert_eq!(metric_lines(&run).len(), 1);
    assert!(temporaries(&run).is_empty(), "{:?}", temporaries(&run));

    // With room again, the run continues from epoch 1's checkpoint.
    fs::remove_dir(&blocker).unwrap();
    let before = metric_lines(&run);
    ok(classify(root, &["train", "--out", "r", "--resume"]));
    let after = check_complete(&run, 3);
    assert_eq!(after[0], before[0]);
}

#[test]
fn save_checkpoint_failure_leaves_the_previous_checkpoint() {
    use classify::run::{EpochMetrics, RunDir};
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path());
    run.create().unwrap();
    let m = |epoch| EpochMetrics { epoch, seconds: 1.0, train_loss: 1.0, train_acc: 0.5, val_loss: 1.0, val_acc: 0.5 };
    run.save_checkpoint(b"m1", b"o1", &[m(1)]).unwrap();
    // The optimiser file of epoch 2 cannot be put in place: a folder is in the way.
    fs::create_dir_all(dir.path().join("checkpoint/optimizer-0002.bpk")).unwrap();
    let err = run.save_checkpoint(b"m2", b"o2", &[m(1), m(2)]).unwrap_err();
    assert!(err.to_string().contains("optimizer-0002.bpk"), "{err}");
    let ckpt = run.load_checkpoint().unwrap().unwrap();
    assert_eq!(ckpt.epoch, 1);
    assert_eq!(run.read(&ckpt.model).unwrap(), b"m1");
    assert_eq!(run.load_weights().unwrap(), b"m1");
    // The orphan of the failed epoch is cleaned up on resume, the kept checkpoint is not.
    let removed = run.remove_stale_files(Some(&ckpt)).unwrap();
    assert_eq!(removed, vec![dir.path().join("checkpoint/model-0002.bpk")]);
    assert_eq!(run.read(&ckpt.optimizer).unwrap(), b"o1");
}

// ---------------------------------------------------------------------------------------------
// Run folders that do not fit

#[test]
fn run_folders_that_do_not_fit_fail_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("d"), &CLASSES, 4, 0);
    ok(classify(root, &["train", "--data", "d", "--epochs", "1", "--val-split", "0.25", "--out", "r"]));
    let img = root.join("d/train/red/000.png");
    let img = img.to_str().unwrap();
    let config_path = root.join("r/config.json");
    let original = fs::read_to_string(&config_path).unwrap();
    let weights = fs::read(root.join("r/model.bpk")).unwrap();

    let expect_failure = |args: &[&str], words: &[&str]| {
        let out = classify(root, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        for w in words {
            assert!(err.contains(w), "{args:?}: no {w:?} in {err}");
        }
    };
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_str(&original).unwrap();
        f(&mut v);
        fs::write(&config_path, v.to_string()).unwrap();
    };

    // A class added to config.json: the last layer no longer fits the weights.
    edit(&|v| v["classes"].as_array_mut().unwrap().push("green".into()));
    expect_failure(&["eval", "--run", "r"], &["do not match", "3 classes", "restore"]);
    expect_failure(&["predict", "--run", "r", img], &["do not match", "restore"]);

    // Newer, older and missing format versions.
    edit(&|v| v["format_version"] = 99.into());
    expect_failure(&["predict", "--run", "r", img], &["format 99", "upgrade classify"]);
    expect_failure(&["train", "--out", "r", "--resume"], &["upgrade classify"]);
    edit(&|v| v["format_version"] = 0.into());
    expect_failure(&["eval", "--run", "r"], &["version 0", "classify train"]);
    edit(&|v| v["format_version"] = "one".into());
    expect_failure(&["eval", "--run", "r"], &["no format_version", "classify train"]);
    edit(&|v| {
        v.as_object_mut().unwrap().remove("format_version");
    });
    expect_failure(&["eval", "--run", "r"], &["no format_version"]);
    fs::write(&config_path, &original[..original.len() / 2]).unwrap();
    expect_failure(&["eval", "--run", "r"], &["not valid JSON", "damaged"]);
    fs::write(&config_path, &original).unwrap();

    // Truncated, empty and foreign weights: refused by the checksum checkpoint.json keeps,
    // and (in a run from before it was kept) by the weights reader.
    let checkpoint_path = root.join("r/checkpoint.json");
    let checkpoint = fs::read_to_string(&checkpoint_path).unwrap();
    let mut unchecked: Value = serde_json::from_str(&checkpoint).unwrap();
    assert!(unchecked.as_object_mut().unwrap().remove("weights_sha256").is_some(), "{checkpoint}");
    for (what, bytes) in [
        ("truncated", weights[..weights.len() / 2].to_vec()),
        ("cut in the header", weights[..weights.len().min(40)].to_vec()),
        ("empty", Vec::new()),
        ("foreign", b"PK\x03\x04 not a burnpack".to_vec()),
    ] {
        fs::write(root.join("r/model.bpk"), &bytes).unwrap();
        for (checked, words) in [(true, ["SHA-256", "damaged"]), (false, ["model.bpk", "retrain"])] {
            let kept = if checked { checkpoint.clone() } else { unchecked.to_string() };
            fs::write(&checkpoint_path, kept).unwrap();
            for args in [&["predict", "--run", "r", img][..], &["eval", "--run", "r"][..]] {
                let out = classify(root, args);
                let err = stderr(&out);
                assert_eq!(out.status.code(), Some(1), "{what} {args:?}: {err}");
                assert!(!err.contains("panicked"), "{what} {args:?}: {err}");
                assert!(err.contains("model.bpk") && words.iter().all(|w| err.contains(w)), "{what} {args:?}: {err}");
            }
        }
    }
    fs::write(&checkpoint_path, &checkpoint).unwrap();
    fs::write(root.join("r/model.bpk"), &weights).unwrap();
    ok(classify(root, &["predict", "--run", "r", img]));
}
