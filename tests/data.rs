//! Data sources end to end, on fixtures each test builds in a temporary folder: the CIFAR
//! binary folder through `load`, the image-folder reader with the validation split, and the
//! download against a local HTTP server (no network needed).

mod util;

use std::borrow::Cow;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use classify::data::cifar::{self, META_FILE, TEST_FILE, TRAIN_FILES};
use classify::data::download::{self, Archive, MARKER};
use classify::data::{CIFAR10_CLASSES, DataError, IMAGE_BYTES, ImageSet, LoadOptions, PLANE_BYTES, load, split};
use md5::{Digest, Md5};
use util::{Reply, serve};

// ---------------------------------------------------------------------------------------------
// Fixtures

/// An image whose R, G and B planes are filled with `r`, `g` and `b`.
fn solid(r: u8, g: u8, b: u8) -> Vec<u8> {
    let mut img = vec![r; PLANE_BYTES];
    img.extend(std::iter::repeat_n(g, PLANE_BYTES));
    img.extend(std::iter::repeat_n(b, PLANE_BYTES));
    img
}

/// `n` images labelled `i % 10`, image `i` solid `(i + offset, label, 255 - i)`.
fn numbered(n: usize, offset: u8) -> ImageSet {
    let mut set = ImageSet::new();
    for i in 0..n {
        let label = (i % 10) as u8;
        set.push(&solid(i as u8 + offset, label, 255 - i as u8), label);
    }
    set
}

/// Writes a CIFAR-10 binary folder: 3 records per training batch, 4 test records, and a meta
/// file with blank lines around the names (as the official one has a trailing blank line).
fn write_cifar_dir(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for (k, name) in TRAIN_FILES.iter().enumerate() {
        cifar::write_records(&dir.join(name), &numbered(3, 3 * k as u8)).unwrap();
    }
    cifar::write_records(&dir.join(TEST_FILE), &numbered(4, 100)).unwrap();
    let meta = format!("\n{}\n\n", CIFAR10_CLASSES.join("\n"));
    fs::write(dir.join(META_FILE), meta).unwrap();
}

fn png(img: image::DynamicImage) -> Vec<u8> {
    let mut buf = Vec::new();
    img.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png).unwrap();
    buf
}

fn jpeg(img: image::RgbImage) -> Vec<u8> {
    let mut buf = Vec::new();
    image::DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Jpeg).unwrap();
    buf
}

fn rgb(w: u32, h: u32, p: [u8; 3]) -> image::RgbImage {
    image::RgbImage::from_pixel(w, h, image::Rgb(p))
}

fn put(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// R, G, B of pixel 0 of image `i`.
fn pixel0(set: &ImageSet, i: usize) -> [u8; 3] {
    let img = set.image(i);
    [img[0], img[PLANE_BYTES], img[2 * PLANE_BYTES]]
}

fn close(a: [u8; 3], b: [u8; 3], tol: u8) -> bool {
    a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= tol)
}

/// Writes the mixed-format image folder used by several tests; see the comments for labels.
fn write_image_folder(root: &Path) {
    let train = root.join("train");
    // Classes created out of order: they must come back sorted (bird, cat, dog).
    put(&train.join("dog/b.png"), &png(image::DynamicImage::ImageRgb8(rgb(32, 32, [10, 20, 30]))));
    put(&train.join("dog/a.JPG"), &jpeg(rgb(32, 32, [200, 40, 40])));
    put(&train.join("dog/notes.txt"), b"not an image, ignored");
    put(&train.join("cat/c.Jpeg"), &jpeg(rgb(40, 50, [40, 200, 40])));
    put(
        &train.join("cat/d.png"),
        &png(image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(32, 32, image::Luma([90])))),
    );
    put(&train.join("bird/e.jpeg"), &jpeg(rgb(32, 32, [40, 40, 200])));
    fs::create_dir_all(train.join(".hidden")).unwrap();
    put(&train.join("README"), b"a stray file in train/, ignored");
    put(&root.join("test/cat/t.png"), &png(image::DynamicImage::ImageRgb8(rgb(32, 32, [1, 2, 3]))));
}

// ---------------------------------------------------------------------------------------------
// CIFAR binary folder

#[test]
fn cifar_folder_loads_labels_planes_and_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    write_cifar_dir(&dir);

    let data = load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert_eq!(data.classes, CIFAR10_CLASSES);
    assert_eq!(data.train.len(), 15);
    // Batches in order 1..5, records in order: batch k holds images 3k, 3k+1, 3k+2.
    for i in 0..15 {
        assert_eq!(data.train.labels()[i], (i % 3 % 10) as u8, "label {i}");
        let k = i / 3;
        let j = i % 3;
        assert_eq!(pixel0(data.train.memory().unwrap(), i), [(j + 3 * k) as u8, j as u8, 255 - j as u8]);
        // Whole planes, not just pixel 0.
        assert!(data.train.memory().unwrap().image(i)[..PLANE_BYTES].iter().all(|&v| v == (j + 3 * k) as u8));
        assert!(data.train.memory().unwrap().image(i)[2 * PLANE_BYTES..].iter().all(|&v| v == 255 - j as u8));
    }
    let test = data.test.unwrap();
    assert_eq!(test.labels(), vec![0, 1, 2, 3]);
    assert_eq!(pixel0(test.memory().unwrap(), 3), [103, 3, 252]);

    // The parent folder is found through its cifar-10-batches-bin/ subfolder.
    let again = load(tmp.path().to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert_eq!(again.train, data.train);
}

#[test]
fn cifar_folder_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_cifar_dir(dir);

    // A batch cut mid-record.
    let path = dir.join("data_batch_3.bin");
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 10);
    fs::write(&path, &bytes).unwrap();
    let msg = cifar::load_dir(dir).unwrap_err().to_string();
    assert!(msg.contains("data_batch_3.bin") && msg.contains("not a multiple"), "{msg}");

    // A label beyond the meta file's names.
    write_cifar_dir(dir);
    fs::write(dir.join(META_FILE), "a\nb\n").unwrap();
    let msg = cifar::load_dir(dir).unwrap_err().to_string();
    assert!(msg.contains("data_batch_1.bin") && msg.contains("record 2"), "{msg}");
    assert!(msg.contains("label 2"), "{msg}");

    // A missing batch.
    write_cifar_dir(dir);
    fs::remove_file(dir.join(TEST_FILE)).unwrap();
    let msg = cifar::load_dir(dir).unwrap_err().to_string();
    assert!(msg.contains(TEST_FILE) && msg.contains("missing"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Image folder

#[test]
fn image_folder_reads_formats_sizes_and_sorted_classes() {
    let tmp = tempfile::tempdir().unwrap();
    write_image_folder(tmp.path());
    let data = load(tmp.path().to_str().unwrap(), &LoadOptions::default()).unwrap();

    assert_eq!(data.classes, vec!["bird", "cat", "dog"]);
    // Class by class, files by name: bird/e.jpeg, cat/c.Jpeg, cat/d.png, dog/a.JPG, dog/b.png.
    assert_eq!(data.train.labels(), vec![0, 1, 1, 2, 2]);
    assert_eq!(data.train.memory().unwrap().images.len(), 5 * IMAGE_BYTES);
    assert!(
        close(pixel0(data.train.memory().unwrap(), 0), [40, 40, 200], 3),
        "{:?}",
        pixel0(data.train.memory().unwrap(), 0)
    );
    // 40x50 JPEG resized to 32x32: still the same colour everywhere.
    let c = data.train.memory().unwrap().image(1);
    for i in [0, 31, 1023] {
        let p = [c[i], c[PLANE_BYTES + i], c[2 * PLANE_BYTES + i]];
        assert!(close(p, [40, 200, 40], 3), "pixel {i}: {p:?}");
    }
    // Grayscale PNG: the grey level in all three planes, exactly.
    assert!(data.train.memory().unwrap().image(2).iter().all(|&v| v == 90));
    assert!(close(pixel0(data.train.memory().unwrap(), 3), [200, 40, 40], 3));
    // 32x32 PNG: bit-exact.
    assert_eq!(data.train.memory().unwrap().image(4), &solid(10, 20, 30)[..]);

    let test = data.test.unwrap();
    assert_eq!(test.labels(), vec![1]);
    assert_eq!(test.memory().unwrap().image(0), &solid(1, 2, 3)[..]);
}

#[test]
fn image_folder_without_test_has_no_test_set() {
    let tmp = tempfile::tempdir().unwrap();
    write_image_folder(tmp.path());
    fs::remove_dir_all(tmp.path().join("test")).unwrap();
    let data = load(tmp.path().to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert!(data.test.is_none());
    assert_eq!(data.train.len(), 5);
}

#[test]
fn image_folder_unknown_test_class_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_image_folder(tmp.path());
    put(&tmp.path().join("test/horse/h.png"), &png(image::DynamicImage::ImageRgb8(rgb(32, 32, [0, 0, 0]))));
    let msg = load(tmp.path().to_str().unwrap(), &LoadOptions::default()).unwrap_err().to_string();
    assert!(msg.contains("horse") && msg.contains("bird, cat, dog"), "{msg}");
}

#[test]
fn image_folder_corrupt_jpg_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_image_folder(tmp.path());
    let bad = tmp.path().join("train/cat/broken.jpg");
    put(&bad, b"\xFF\xD8\xFF\xE0 this JPEG stops right here");
    let err = load(tmp.path().to_str().unwrap(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Decode { .. }), "{err}");
    assert!(err.to_string().contains(&*bad.to_string_lossy()), "{err}");
}

#[test]
fn image_folder_validation_split_takes_last_files_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let train = tmp.path().join("train");
    // 15 files per class at 0.1 -> round(1.5) = 2 validation images per class; 5 files ->
    // round(0.5) = 0. Names sort lexicographically ("img10" < "img2"), like Python's sorted().
    for i in 0..15u8 {
        let img = png(image::DynamicImage::ImageRgb8(rgb(32, 32, [i, 0, 0])));
        put(&train.join(format!("a/img{i}.png")), &img);
    }
    for i in 0..5u8 {
        let img = png(image::DynamicImage::ImageRgb8(rgb(32, 32, [100 + i, 1, 0])));
        put(&train.join(format!("b/{i}.png")), &img);
    }
    let data = load(tmp.path().to_str().unwrap(), &LoadOptions::default()).unwrap();
    let s = split(data, 0.1).unwrap();
    // Sorted names of class a: img0 img1 img10 .. img14 img2 .. img9: the last two are 8, 9.
    let val: Vec<u8> = (0..s.val.len()).map(|i| s.val.memory().unwrap().image(i)[0]).collect();
    assert_eq!(val, vec![8, 9]);
    assert_eq!(s.val.labels(), vec![0, 0]);
    assert_eq!(s.train.class_counts(2), vec![13, 5]);
    let train_a: Vec<u8> = (0..13).map(|i| s.train.memory().unwrap().image(i)[0]).collect();
    assert_eq!(train_a, vec![0, 1, 10, 11, 12, 13, 14, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn load_rejects_unknown_specs_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let msg = load(tmp.path().to_str().unwrap(), &LoadOptions::default()).unwrap_err().to_string();
    assert!(msg.contains(&*tmp.path().to_string_lossy()), "{msg}");
    assert!(msg.contains("cifar10") && msg.contains("train/<class>"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Download

/// A `.tar.gz` holding a tiny `cifar-10-batches-bin/` folder.
fn cifar_archive() -> Vec<u8> {
    let src = tempfile::tempdir().unwrap();
    write_cifar_dir(src.path());
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all("cifar-10-batches-bin", src.path()).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

fn archive_for(url: &str, bytes: &[u8]) -> Archive {
    Archive {
        url: Cow::Owned(url.to_string()),
        md5: Cow::Owned(format!("{:x}", Md5::digest(bytes))),
        size: bytes.len() as u64,
        ..download::CIFAR10_BINARY
    }
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn download_extracts_marks_and_is_not_repeated() {
    let bytes = cifar_archive();
    let server = serve("cifar-10-binary.tar.gz", Reply::Full(bytes.clone()));
    let cache = tempfile::tempdir().unwrap();
    let archive = archive_for(&server.url, &bytes);

    let dir = download::fetch(&archive, cache.path(), false).unwrap();
    assert_eq!(dir, cache.path().join("cifar-10-batches-bin"));
    assert!(dir.join(MARKER).is_file());
    // Only the dataset folder is left: no .part, no temporary folder.
    assert_eq!(listing(cache.path()), vec!["cifar-10-batches-bin"]);
    let data = cifar::load_dir(&dir).unwrap();
    assert_eq!(data.train.len(), 15);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    // Second time: served from the cache.
    assert_eq!(download::fetch(&archive, cache.path(), false).unwrap(), dir);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn download_replaces_an_unmarked_folder() {
    let bytes = cifar_archive();
    let server = serve("cifar-10-binary.tar.gz", Reply::Full(bytes.clone()));
    let cache = tempfile::tempdir().unwrap();
    let stale = cache.path().join("cifar-10-batches-bin");
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("data_batch_1.bin"), b"half a file").unwrap();
    fs::write(stale.join("leftover"), b"x").unwrap();

    let dir = download::fetch(&archive_for(&server.url, &bytes), cache.path(), false).unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert!(!dir.join("leftover").exists());
    assert_eq!(cifar::load_dir(&dir).unwrap().train.len(), 15);
}

#[test]
fn download_with_bad_checksum_leaves_nothing() {
    let bytes = cifar_archive();
    let server = serve("cifar-10-binary.tar.gz", Reply::Full(bytes.clone()));
    let cache = tempfile::tempdir().unwrap();
    let mut archive = archive_for(&server.url, &bytes);
    archive.md5 = Cow::Borrowed("00000000000000000000000000000000");

    let err = download::fetch(&archive, cache.path(), false).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&server.url) && msg.contains("expected md5 0000"), "{msg}");
    assert!(msg.contains("classify data fetch cifar10"), "{msg}");
    assert!(listing(cache.path()).is_empty(), "{:?}", listing(cache.path()));
}

#[test]
fn download_truncated_body_leaves_nothing() {
    let bytes = cifar_archive();
    let server = serve("cifar-10-binary.tar.gz", Reply::Truncated { body: bytes.clone(), send: bytes.len() / 2 });
    let cache = tempfile::tempdir().unwrap();
    let err = download::fetch(&archive_for(&server.url, &bytes), cache.path(), false).unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err}");
    assert!(listing(cache.path()).is_empty(), "{:?}", listing(cache.path()));

    // A later run is not fooled: it downloads again (and fails again here).
    let _ = download::fetch(&archive_for(&server.url, &bytes), cache.path(), false);
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

#[test]
fn download_http_error_and_wrong_size_are_reported() {
    let cache = tempfile::tempdir().unwrap();
    let server = serve("cifar-10-binary.tar.gz", Reply::Status(404));
    let err = download::fetch(&archive_for(&server.url, b"x"), cache.path(), false).unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");

    let bytes = cifar_archive();
    let server = serve("cifar-10-binary.tar.gz", Reply::Full(bytes.clone()));
    let mut archive = archive_for(&server.url, &bytes);
    archive.size += 1;
    let err = download::fetch(&archive, cache.path(), false).unwrap_err();
    assert!(err.to_string().contains("announced"), "{err}");
    assert!(listing(cache.path()).is_empty(), "{:?}", listing(cache.path()));
}

#[test]
fn load_cifar10_uses_the_complete_cache_without_network() {
    let cache = tempfile::tempdir().unwrap();
    let dir: PathBuf = cache.path().join("cifar-10-batches-bin");
    write_cifar_dir(&dir);
    fs::write(dir.join(MARKER), "").unwrap();
    let opts = LoadOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        // Nothing listens here: any download attempt would fail the test.
        url: Some("http://127.0.0.1:1/cifar-10-binary.tar.gz".into()),
        progress: false,
        ..LoadOptions::default()
    };
    let data = load("cifar10", &opts).unwrap();
    assert_eq!(data.classes, CIFAR10_CLASSES);
    assert_eq!(data.train.len(), 15);
    assert_eq!(data.test.map(|t| t.len()), Some(4));
}
