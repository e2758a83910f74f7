//! Image sources as people have them: a folder per class, flat (`ROOT/<class>/...`) or under
//! `ROOT/train/` with optional `ROOT/val/` and `ROOT/test/`, or a CSV of `path,label` rows
//! ([`load_labels`]).
//!
//! Classes are the sorted names of the class folders (hidden ones skipped); files within a
//! class are taken in path order, which the validation split relies on (see
//! [`super::split`]). Every image is converted to RGB, its shorter side resized and its
//! centre square kept ([`decode_framed`]), as `u8` CHW. Decoding runs in parallel on
//! rayon's pool.

use std::ffi::OsString;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use super::{
    BadImagePolicy, DataError, Dataset, FileSet, Framing, IMAGE_SIZE, ImageSet, ImageShape, Images, SkippedImage,
};

/// Subfolder of the root holding the training classes.
pub const TRAIN_DIR: &str = "train";
/// Optional subfolder of the root holding the validation classes.
pub const VAL_DIR: &str = "val";
/// Optional subfolder of the root holding the test classes.
pub const TEST_DIR: &str = "test";
/// File extensions read as images, compared case-insensitively; other files are left out and
/// counted in one warning (hidden files and the desktop's own, such as `.DS_Store` and
/// `Thumbs.db`, silently).
pub const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"];

/// How deep image files may lie under a class folder (`train/cat/2019/summer/x.jpg` is 2).
pub const MAX_DEPTH: usize = 16;

/// Files desktops write into folders, never images: left out without a word.
const DESKTOP_FILES: [&str; 3] = ["thumbs.db", "desktop.ini", "icon\r"];

/// Filter used when an image is not already 32x32. Triangle (bilinear with a support that
/// widens when shrinking) averages over the source pixels instead of skipping them.
pub const RESIZE_FILTER: FilterType = FilterType::Triangle;

/// Most pixels in one image file (8192 x 8192, 64 Mi: 24-, 48- and 61-megapixel camera
/// photos pass), checked from the header before decoding. What decodes at once is bounded by
/// the decode memory ([`super::budget`]), not by this; the server uses the same limit.
pub const MAX_PIXELS: u64 = 8192 * 8192;

/// What a decoder may allocate besides the image itself (16 MiB): headers, colour profiles,
/// text chunks. Reading a file's format and size is held to this alone.
pub const PROBE_ALLOC: u64 = 16 << 20;

/// The width and height an encoded image's header declares, read with [`PROBE_ALLOC`] as the
/// decoder's allocation cap (a header's colour profile cannot inflate past it).
pub fn image_dimensions(bytes: &[u8]) -> Result<(u32, u32), String> {
    image_header(bytes).map(|header| (header.width, header.height))
}

/// What an encoded image's header says: its size, and the bytes its decoded pixels take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub width: u32,
    pub height: u32,
    /// Bytes of the decoded image in its own colour type (a 16-bit RGBA PNG: 8 a pixel).
    pub decoded_bytes: u64,
    /// Whether it decodes as 8-bit RGB already (else it is converted, into 3 bytes a pixel).
    pub rgb8: bool,
}

impl ImageHeader {
    /// Bytes a decode of it holds at once: the decoded image, plus its RGB copy if it needs
    /// one. (The centre square is resampled in place, and the result is the model's size.)
    pub fn decode_bytes(&self) -> u64 {
        let copy = if self.rgb8 { 0 } else { 3 * u64::from(self.width) * u64::from(self.height) };
        self.decoded_bytes + copy
    }
}

/// Reads an encoded image's header (see [`ImageHeader`]) with [`PROBE_ALLOC`] as the
/// decoder's allocation cap.
pub fn image_header(bytes: &[u8]) -> Result<ImageHeader, String> {
    use image::ImageDecoder;
    let mut reader = image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not an image this reader knows (PNG, JPEG, GIF, BMP, WebP, TIFF)".into());
    }
    reader.limits(probe_limits());
    let decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let (width, height) = decoder.dimensions();
    Ok(ImageHeader {
        width,
        height,
        decoded_bytes: decoder.total_bytes(),
        rgb8: decoder.color_type() == image::ColorType::Rgb8,
    })
}

fn probe_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(PROBE_ALLOC);
    limits
}

/// Largest image file read, in bytes (128 MiB): a 4096x4096 RGBA PNG stored without
/// compression is 64 MiB, a camera's JPEG 5 to 30. Checked from the file's metadata before
/// reading, and the read itself stops there, so a huge or endless "image" cannot fill memory.
pub const MAX_FILE_BYTES: u64 = 128 << 20;

/// Reads an image file whole, after checking that it is a regular file (a symlink is
/// followed: to `/dev/zero` or a pipe it is refused, not read forever) of at most
/// [`MAX_FILE_BYTES`]; the error is a one-line reason for a person.
pub fn read_image_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let meta = fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file (a device, a pipe or a folder): only image files are read".into());
    }
    let too_big = |len: u64| {
        format!(
            "the file is {:.1} MiB; image files over {} MiB are refused: shrink it first",
            len as f64 / f64::from(1 << 20),
            MAX_FILE_BYTES >> 20
        )
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    let file = fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Loads an image-folder root with [`BadImagePolicy::Fail`], at 32x32; see [`load_root`].
///
/// # Errors
/// As [`load_root`].
pub fn load_dir(root: &Path, progress: bool) -> Result<Dataset, DataError> {
    load_dir_with(root, progress, BadImagePolicy::Fail)
}

/// [`load_root`] at 32x32.
///
/// # Errors
/// As [`load_root`].
pub fn load_dir_with(root: &Path, progress: bool, policy: BadImagePolicy) -> Result<Dataset, DataError> {
    load_root(root, &FolderOptions { progress, policy, side: IMAGE_SIZE, cache_mem: None })
}

/// How [`load_root`] and [`load_labels`] read images.
#[derive(Debug, Clone, Copy)]
pub struct FolderOptions {
    /// Show a progress bar while decoding.
    pub progress: bool,
    pub policy: BadImagePolicy,
    /// Side of the square images kept: each image's shorter side is resized to it and the
    /// centre square kept.
    pub side: usize,
    /// Bytes the decoded images may take; over it they are kept as files (see
    /// [`super::store`]). `None`: no limit.
    pub cache_mem: Option<u64>,
}

/// Loads an image-folder root in either layout:
///
/// - `ROOT/train/<class>/...`, with optional `ROOT/val/<class>/...` (then the validation
///   split, as given) and `ROOT/test/<class>/...`;
/// - `ROOT/<class>/...` (no `train/` folder): every class folder is training data, and the
///   validation split is carved out of it.
///
/// Class order is the sorted names of the training class folders. Every training class
/// folder must hold at least one image: an empty one is an error rather than a skipped
/// class, since dropping it would renumber the labels, and keeping it would give the model a
/// class it can never learn. `val/` and `test/` may lack classes (a warning names them) but
/// every one of their class folders must be a training class.
///
/// Files that cannot be read or decoded, or exceed [`MAX_PIXELS`], stop loading under
/// [`BadImagePolicy::Fail`]; under [`BadImagePolicy::Skip`] they are left out, listed in
/// [`Dataset::skipped`], and a warning gives their count and the first few paths.
///
/// # Errors
/// If there are no class folders, an empty class folder (or one whose every image was
/// skipped), `val/` or `test/` class folders that are not training classes (all named), a
/// folder that cannot be listed, or, under [`BadImagePolicy::Fail`], an image that cannot be
/// read or decoded (the error names the file).
pub fn load_root(root: &Path, opts: &FolderOptions) -> Result<Dataset, DataError> {
    let nested = root.join(TRAIN_DIR).is_dir();
    let train_dir = if nested { root.join(TRAIN_DIR) } else { root.to_path_buf() };
    let expected = if nested { "train/<class>/*.jpg|png|..." } else { "<class>/*.jpg|png|..." };
    let classes = list_classes(&train_dir)?;
    if classes.is_empty() {
        return Err(DataError::format(&train_dir, format!("has no class folders; expected {expected}")));
    }
    let names = class_names(&train_dir, &classes, "class folder")?;
    let train_items = list_items(&train_dir, &classes)?;
    if train_items.is_empty() {
        return Err(DataError::format(
            &train_dir,
            format!("holds no images ({}) in its class folders", IMAGE_EXTENSIONS.join(", ")),
        ));
    }
    check_no_empty_class(&train_dir, &names, &train_items, "")?;
    let held_out = |dir_name: &str| -> Result<Option<Vec<(PathBuf, u8)>>, DataError> {
        let dir = root.join(dir_name);
        if !nested || !dir.is_dir() {
            return Ok(None);
        }
        check_held_out_classes(&dir, &classes, &names)?;
        list_items(&dir, &classes).map(Some)
    };
    let (val_items, test_items) = (held_out(VAL_DIR)?, held_out(TEST_DIR)?);
    decode_dataset(root, &train_dir, names, [Some(train_items), val_items, test_items], opts)
}

/// The classes of `dir` as UTF-8 names, checked: at most 256, no control characters, at
/// least two. `noun` is what a class is there ("class folder", "label").
fn class_names(dir: &Path, classes: &[OsString], noun: &str) -> Result<Vec<String>, DataError> {
    if classes.len() > 256 {
        return Err(DataError::format(
            dir,
            format!("has {} {noun}s; at most 256 classes are supported", classes.len()),
        ));
    }
    let names: Vec<String> = classes
        .iter()
        .map(|c| {
            c.clone()
                .into_string()
                .map_err(|c| DataError::format(&dir.join(&c), format!("{noun} name is not valid UTF-8; rename it")))
        })
        .collect::<Result<_, _>>()?;
    // classes.txt keeps one name a line, and a name is shown in tables and reports.
    if let Some(name) = names.iter().find(|n| n.chars().any(char::is_control)) {
        return Err(DataError::format(
            &dir.join(name),
            format!("{noun} name holds a control character (a line break or a tab); rename the {noun}"),
        ));
    }
    if let [only] = names.as_slice() {
        return Err(DataError::format(
            dir,
            format!("has one {noun} ({only}): a classifier needs at least two classes; add a {noun} per class"),
        ));
    }
    Ok(names)
}

/// Fails unless every class folder of `dir` (a `val/` or `test/` folder) is a training
/// class; warns about training classes it lacks.
fn check_held_out_classes(dir: &Path, classes: &[OsString], names: &[String]) -> Result<(), DataError> {
    let found = list_classes(dir)?;
    let unknown: Vec<String> =
        found.iter().filter(|c| !classes.contains(c)).map(|c| c.to_string_lossy().into_owned()).collect();
    if !unknown.is_empty() {
        return Err(DataError::format(
            dir,
            format!(
                "has class folders that are not among the training classes: {} (the training classes are {}); \
                 rename them to training classes or remove them",
                unknown.join(", "),
                names.join(", ")
            ),
        ));
    }
    let missing: Vec<&str> =
        classes.iter().zip(names).filter(|(c, _)| !found.contains(c)).map(|(_, n)| n.as_str()).collect();
    if !missing.is_empty() {
        tracing::warn!(
            "{} has no folder for the training classes {}: they are not in it",
            dir.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// One row of a CSV file of `path,label,...` rows (see [`csv_rows`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    /// The line it is on, from 1.
    pub line: usize,
    /// The file, relative to the CSV's folder unless absolute (a leading `./` dropped).
    pub file: PathBuf,
    /// The second column, empty when absent.
    pub label: String,
    /// Every column as written (trimmed).
    pub fields: Vec<String>,
}

/// The rows of a CSV file whose first column is a path: blank rows left out, and a first row
/// whose path names no file taken for a header and left out too.
///
/// # Errors
/// The file cannot be read, or a row does not parse (named by line), or has no path.
pub fn csv_rows(csv_path: &Path) -> Result<Vec<CsvRow>, DataError> {
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let bytes = fs::read(csv_path).map_err(|e| DataError::io("cannot read", csv_path, e))?;
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(&bytes[..]);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 1;
        let record = record.map_err(|e| DataError::format(csv_path, format!("line {line}: {e}")))?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let path = record.get(0).unwrap_or("");
        let file = base.join(path.trim_start_matches("./"));
        if i == 0 && !file.is_file() {
            continue; // the header
        }
        if path.is_empty() {
            return Err(DataError::format(csv_path, format!("line {line}: the first column, a file's path, is empty")));
        }
        let fields: Vec<String> = record.iter().map(str::to_string).collect();
        rows.push(CsvRow { line, file, label: fields.get(1).cloned().unwrap_or_default(), fields });
    }
    Ok(rows)
}

/// Loads the images a CSV file of `path,label` rows names (`--labels`): paths relative to
/// the CSV's folder (or absolute), labels any text; the classes are the sorted labels. A
/// first row whose path names no file is a header. An optional third column `split` says
/// `train`, `val` or `test` per row (absent or empty: train).
///
/// # Errors
/// A row that does not parse or lacks a label (named by line), fewer than two classes, a
/// file that does not exist (under [`BadImagePolicy::Fail`]), and whatever decoding reports.
pub fn load_labels(csv_path: &Path, opts: &FolderOptions) -> Result<Dataset, DataError> {
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut rows: Vec<(PathBuf, String, usize)> = Vec::new();
    for row in csv_rows(csv_path)? {
        if row.label.is_empty() {
            return Err(DataError::format(
                csv_path,
                format!("line {}: expected `path,label` (a file and its class), got {:?}", row.line, row.fields),
            ));
        }
        let split = match row.fields.get(2).map_or("", String::as_str).to_ascii_lowercase().as_str() {
            "" | "train" => 0,
            "val" | "valid" | "validation" => 1,
            "test" => 2,
            other => {
                return Err(DataError::format(
                    csv_path,
                    format!("line {}: split {other:?} is not train, val or test", row.line),
                ));
            }
        };
        rows.push((row.file, row.label, split));
    }
    let mut names: Vec<String> = rows.iter().filter(|r| r.2 == 0).map(|r| r.1.clone()).collect();
    names.sort();
    names.dedup();
    let os: Vec<OsString> = names.iter().map(OsString::from).collect();
    let names = class_names(csv_path, &os, "label")?;
    let mut splits: [Option<Vec<(PathBuf, u8)>>; 3] = [Some(Vec::new()), None, None];
    for (file, label, split) in rows {
        let Ok(index) = names.binary_search(&label) else {
            return Err(DataError::format(
                csv_path,
                format!(
                    "{} is labelled {label:?}, a class no training row has; label it as a training class",
                    file.display()
                ),
            ));
        };
        splits[split].get_or_insert_with(Vec::new).push((file, index as u8));
    }
    let train = splits[0].as_deref().unwrap_or_default();
    if train.is_empty() {
        return Err(DataError::format(csv_path, "names no training images"));
    }
    check_no_empty_class(csv_path, &names, train, "")?;
    decode_dataset(base, csv_path, names, splits, opts)
}

/// Decodes the train, val and test items of a source rooted at `root` (`train_dir` names
/// its training part in errors) into a [`Dataset`], with the skipped-file warning.
fn decode_dataset(
    root: &Path,
    train_dir: &Path,
    names: Vec<String>,
    [train_items, val_items, test_items]: [Option<Vec<(PathBuf, u8)>>; 3],
    opts: &FolderOptions,
) -> Result<Dataset, DataError> {
    let train_items = train_items.unwrap_or_default();
    let total =
        train_items.len() + [&val_items, &test_items].iter().map(|s| s.as_ref().map_or(0, Vec::len)).sum::<usize>();
    let decoded_bytes = total as u64 * ImageShape::square(opts.side).image_bytes() as u64;
    if let Some(budget) = opts.cache_mem.filter(|&budget| decoded_bytes > budget) {
        tracing::info!(
            "keeping the {total} images of {} on disk and decoding each batch as it is needed: decoded \
             they would take {}, over --cache-mem {}",
            root.display(),
            bytesize::ByteSize(decoded_bytes).to_string_as(true),
            bytesize::ByteSize(budget).to_string_as(true)
        );
        let files = |items: Vec<(PathBuf, u8)>| {
            let (paths, labels) = items.into_iter().unzip();
            Images::Files(FileSet { paths, labels, side: opts.side, crop: opts.side, policy: opts.policy })
        };
        return Ok(Dataset {
            classes: names,
            train: files(train_items),
            val: val_items.map(files),
            test: test_items.map(files),
            skipped: Vec::new(),
            sizes: Vec::new(),
        });
    }
    let bar = if opts.progress {
        indicatif::ProgressBar::new(total as u64).with_style(
            indicatif::ProgressStyle::with_template("decoding {pos}/{len} images [{bar:30}] {per_sec} ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let start = std::time::Instant::now();
    let (mut skipped, mut sizes) = (Vec::new(), Vec::new());
    let train = decode_items(&train_items, &bar, opts, &mut skipped, &mut sizes)?;
    if !skipped.is_empty() {
        let kept: Vec<(PathBuf, u8)> = train.labels.iter().map(|&l| (PathBuf::new(), l)).collect();
        check_no_empty_class(train_dir, &names, &kept, " (all of its images were skipped as bad)")?;
    }
    let val = val_items.map(|items| decode_items(&items, &bar, opts, &mut skipped, &mut sizes)).transpose()?;
    let test = test_items.map(|items| decode_items(&items, &bar, opts, &mut skipped, &mut sizes)).transpose()?;
    bar.finish_and_clear();
    if !skipped.is_empty() {
        const SHOWN: usize = 5;
        let first: Vec<String> =
            skipped.iter().take(SHOWN).map(|s| format!("{} ({})", s.path.display(), s.reason)).collect();
        tracing::warn!(
            "skipped {} bad image file(s) of {total} under {}{}: {}",
            skipped.len(),
            root.display(),
            if skipped.len() > SHOWN { format!(", the first {SHOWN}") } else { String::new() },
            first.join("; ")
        );
    }
    tracing::debug!(
        root = %root.display(),
        images = total,
        skipped = skipped.len(),
        seconds = start.elapsed().as_secs_f64(),
        "decoded image folder"
    );
    Ok(Dataset {
        classes: names,
        train: train.into(),
        val: val.map(Images::from),
        test: test.map(Images::from),
        skipped,
        sizes,
    })
}

/// Fails, naming them all, if some of `names` has no item in `items`.
fn check_no_empty_class(
    train_dir: &Path,
    names: &[String],
    items: &[(PathBuf, u8)],
    why: &str,
) -> Result<(), DataError> {
    let mut counts = vec![0usize; names.len()];
    for (_, label) in items {
        counts[usize::from(*label)] += 1;
    }
    let empty: Vec<&str> = names.iter().zip(&counts).filter(|(_, n)| **n == 0).map(|(c, _)| c.as_str()).collect();
    if empty.is_empty() {
        return Ok(());
    }
    Err(DataError::format(
        train_dir,
        format!(
            "class folder(s) {} hold no usable image ({}){why}; add images or remove the \
             folder(s), since every class needs training images",
            empty.join(", "),
            IMAGE_EXTENSIONS.join(", ")
        ),
    ))
}

/// Sorted names of the non-hidden subfolders of `dir`.
fn list_classes(dir: &Path) -> Result<Vec<OsString>, DataError> {
    let mut classes = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::io("cannot list", dir, e))? {
        let entry = entry.map_err(|e| DataError::io("cannot list", dir, e))?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        // Follows symlinks, so a class folder may be a link.
        if entry.path().is_dir() {
            classes.push(name);
        }
    }
    classes.sort();
    Ok(classes)
}

/// `(path, label)` for each image under `dir/<class>/`, in its subfolders too, class by class
/// in `classes` order (label = index in `classes`), files sorted by their path below the class
/// folder. Classes absent from `dir` are skipped. Files that are not images are left out and
/// named in one warning.
fn list_items(dir: &Path, classes: &[OsString]) -> Result<Vec<(PathBuf, u8)>, DataError> {
    let mut items = Vec::new();
    let mut ignored = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_dir = dir.join(class);
        if !class_dir.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        let mut seen = std::collections::HashSet::new();
        list_images(&class_dir, Path::new(""), 0, &mut seen, &mut files, &mut ignored)?;
        // Byte order of the relative paths: for files directly in the class folder that is the
        // names' order, Python's `sorted` (code-point) order, the rule the Keras peer splits by.
        files.sort();
        items.extend(files.into_iter().map(|f| (class_dir.join(f), label as u8)));
    }
    warn_ignored(dir, &ignored);
    Ok(items)
}

/// Every image file under `dir`, in its subfolders too (as [`list_items`] finds them for a
/// class folder), as paths relative to `dir` in byte order; other files are named in one
/// warning.
///
/// # Errors
/// A folder that cannot be listed.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let (mut files, mut ignored) = (Vec::new(), Vec::new());
    list_images(dir, Path::new(""), 0, &mut std::collections::HashSet::new(), &mut files, &mut ignored)?;
    files.sort();
    warn_ignored(dir, &ignored);
    Ok(files)
}

/// One warning naming the first few files under `dir` that were left out as not images.
fn warn_ignored(dir: &Path, ignored: &[PathBuf]) {
    if !ignored.is_empty() {
        let shown: Vec<String> = ignored.iter().take(5).map(|p| p.display().to_string()).collect();
        tracing::warn!(
            "{} file(s) in {} are not images ({}) and were left out: {}{}",
            ignored.len(),
            dir.display(),
            IMAGE_EXTENSIONS.join(", "),
            shown.join(", "),
            if ignored.len() > shown.len() { ", ..." } else { "" }
        );
    }
}

/// Adds the image files under `root/relative` to `files` (as paths relative to `root`) and
/// the other visible files to `ignored`, down to [`MAX_DEPTH`] folders; a folder reached twice
/// (a symlink loop) is listed once.
fn list_images(
    root: &Path,
    relative: &Path,
    depth: usize,
    seen: &mut std::collections::HashSet<PathBuf>,
    files: &mut Vec<PathBuf>,
    ignored: &mut Vec<PathBuf>,
) -> Result<(), DataError> {
    let dir = root.join(relative);
    if let Ok(canonical) = fs::canonicalize(&dir)
        && !seen.insert(canonical)
    {
        return Ok(());
    }
    for entry in fs::read_dir(&dir).map_err(|e| DataError::io("cannot list", &dir, e))? {
        let entry = entry.map_err(|e| DataError::io("cannot list", &dir, e))?;
        let name = entry.file_name();
        let lower = name.to_string_lossy().to_lowercase();
        // Hidden files, and macOS's `._name` resource forks: never images.
        if lower.starts_with('.') || DESKTOP_FILES.contains(&lower.as_str()) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            if depth < MAX_DEPTH {
                list_images(root, &relative.join(&name), depth + 1, seen, files, ignored)?;
            }
        } else if has_image_extension(&name) && path.is_file() {
            files.push(relative.join(&name));
        } else {
            ignored.push(path);
        }
    }
    Ok(())
}

/// Whether `name` ends in one of [`IMAGE_EXTENSIONS`], in any letter case.
pub fn has_image_extension(name: &std::ffi::OsStr) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Decodes `items` in parallel. Under [`BadImagePolicy::Skip`] the files that fail are left
/// out and appended to `skipped`, in item order; under `Fail` the first failure is returned.
fn decode_items(
    items: &[(PathBuf, u8)],
    bar: &indicatif::ProgressBar,
    opts: &FolderOptions,
    skipped: &mut Vec<SkippedImage>,
    sizes: &mut Vec<(u32, u32)>,
) -> Result<ImageSet, DataError> {
    let shape = ImageShape::square(opts.side);
    let framing = Framing { size: opts.side, resize: opts.side };
    let bytes_each = shape.image_bytes();
    let mut images = vec![0u8; items.len() * bytes_each];
    let decode_one = |out: &mut [u8], path: &PathBuf| {
        let bytes = read_image_file(path).map_err(|reason| DataError::Decode { path: path.clone(), reason })?;
        let size =
            decode_framed(&bytes, out, framing).map_err(|reason| DataError::Decode { path: path.clone(), reason })?;
        bar.inc(1);
        Ok::<(u32, u32), DataError>(size)
    };
    if opts.policy == BadImagePolicy::Fail {
        // Stops at the first failure instead of decoding the rest.
        let mut dims = vec![(0, 0); items.len()];
        images.par_chunks_mut(bytes_each).zip(items.par_iter()).zip(dims.par_iter_mut()).try_for_each(
            |((out, (path, _)), dim)| {
                *dim = decode_one(out, path)?;
                Ok::<(), DataError>(())
            },
        )?;
        sizes.extend(dims);
        return Ok(ImageSet { shape, images, labels: items.iter().map(|(_, l)| *l).collect() });
    }
    let results: Vec<Result<(u32, u32), DataError>> =
        images.par_chunks_mut(bytes_each).zip(items.par_iter()).map(|(out, (path, _))| decode_one(out, path)).collect();
    let mut set = ImageSet::with_capacity(shape, items.len());
    for (i, (result, (path, label))) in results.into_iter().zip(items).enumerate() {
        match result {
            Ok(size) => {
                sizes.push(size);
                set.push(&images[i * bytes_each..(i + 1) * bytes_each], *label);
            }
            Err(e) => {
                bar.inc(1);
                let reason = match e {
                    DataError::Decode { reason, .. } => reason,
                    DataError::Io { source, .. } => format!("cannot read: {source}"),
                    other => other.to_string(),
                };
                skipped.push(SkippedImage { path: path.clone(), reason });
            }
        }
    }
    Ok(set)
}

/// Decodes an encoded PNG, JPEG, GIF (first frame), BMP, WebP or TIFF image (format sniffed from the content, not the name) into
/// `out` as 32x32 RGB CHW; the error is a one-line explanation for a person.
///
/// The image's size is read from its header first, and images over [`MAX_PIXELS`] are refused
/// before any pixel is decoded, so a small file claiming huge dimensions cannot exhaust memory.
/// Other colour types are converted to RGB (grey replicated, alpha dropped as Keras's
/// `load_img` does, 16-bit scaled to 8, palettes expanded); images of another size are resized
/// with [`RESIZE_FILTER`]; 32x32 RGB8 images are copied unchanged.
///
/// # Panics
/// If `out` is not [`IMAGE_BYTES`] long (a bug in the caller, never a property of the input).
pub fn decode_into(bytes: &[u8], out: &mut [u8]) -> Result<(), String> {
    decode_framed(bytes, out, Framing::CIFAR).map(|_| ())
}

/// Decodes an encoded image as [`decode_into`] does, framed as `framing` says: the shorter
/// side resized to `framing.resize` and the centre `framing.size` square kept, written to
/// `out` as RGB CHW, and returns the image's own width and height. (The square is cut from
/// the original first and resized once, so a large photo is resampled once, from the
/// pixels that end up in the result.)
///
/// # Panics
/// If `out` is not `3 * size * size` long (a bug in the caller, never a property of the input).
pub fn decode_framed(bytes: &[u8], out: &mut [u8], framing: Framing) -> Result<(u32, u32), String> {
    let size = framing.size;
    assert_eq!(out.len(), 3 * size * size, "decode_framed: out must be one {size}x{size} image");
    if bytes.is_empty() {
        return Err("the file is empty (0 bytes)".into());
    }
    // Every reader has an allocation cap: a small file can still inflate (a PNG's colour
    // profile is zlib data; the decoder drops it past the cap, and the pixels never read it).
    let reader = || {
        let mut reader =
            image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
        reader.limits(probe_limits());
        Ok::<_, String>(reader)
    };
    match reader()?.format() {
        Some(
            image::ImageFormat::Png
            | image::ImageFormat::Jpeg
            | image::ImageFormat::Gif
            | image::ImageFormat::Bmp
            | image::ImageFormat::WebP
            | image::ImageFormat::Tiff,
        ) => {}
        Some(other) => {
            return Err(format!(
                "a {other:?} image; PNG, JPEG, GIF (its first frame), BMP, WebP and TIFF are read: convert it first"
            ));
        }
        None => {
            return Err(
                "not an image this reader knows (PNG, JPEG, GIF, BMP, WebP, TIFF), whatever its name says".into()
            );
        }
    }
    if reader()?.format() == Some(image::ImageFormat::Jpeg) && jpeg_is_truncated(bytes) {
        // The JPEG decoder pads a cut-off scan with grey instead of failing; PIL (and so
        // Keras's `load_img`) refuses such files, and so does this reader.
        return Err("the JPEG is truncated (no end-of-image marker after its last scan); copy or \
             export it again"
            .into());
    }
    if let Some(coding) = jpeg_unsupported_coding(bytes) {
        // The decoder's own words here are about its frame header ("number of components
        // cannot be zero"), which says nothing a person can act on.
        return Err(format!(
            "the JPEG is {coding}, which this decoder does not read (nor do most browsers); save it again as an \
             ordinary JPEG (`jpegtran -copy all in.jpg > out.jpg` does, losslessly) or as PNG"
        ));
    }
    let header = image_header(bytes)?;
    let (width, height) = (header.width, header.height);
    check_dimensions(width, height)?;
    // Held until the pixels are cut down to the model's size: what decodes at once, on every
    // thread together, stays within the decode memory.
    let _reservation = super::budget::global().reserve(header.decode_bytes())?;
    let mut reader = reader()?;
    // A second guard inside the decoder, in case a header and the data disagree: the
    // decoded image's own bytes plus the probe's.
    let mut limits = probe_limits();
    limits.max_image_width = Some(width.max(1));
    limits.max_image_height = Some(height.max(1));
    limits.max_alloc = Some(header.decoded_bytes + PROBE_ALLOC);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| e.to_string())?;
    let rgb = img.into_rgb8();
    let side = size as u32;
    let (w, h) = rgb.dimensions();
    // The source square that becomes the output: size/resize of the shorter side, centred,
    // resampled where it lies (a 24-megapixel photo's square is not copied first).
    let square = ((f64::from(w.min(h)) * size as f64 / framing.resize as f64).round() as u32).clamp(1, w.min(h));
    let centre = image::imageops::crop_imm(&rgb, (w - square) / 2, (h - square) / 2, square, square);
    let rgb = image::imageops::resize(&*centre, side, side, RESIZE_FILTER);
    let plane = size * size;
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
        r[i] = px[0];
        g[i] = px[1];
        b[i] = px[2];
    }
    Ok((w, h))
}

/// Whether a JPEG stream ends before its end-of-image marker (`FF D9`), found by walking
/// the stream's own structure from its start: each segment by its length, each scan's
/// entropy-coded data up to the next marker (inside it a `FF` byte is always followed by
/// `00`, a restart marker or fill). Bytes after the end-of-image marker are not looked at:
/// padding, camera trailers and the video that phones append to "motion photos" are allowed,
/// however their bytes look. A stream with no scan is truncated; one whose structure breaks
/// after a scan (not a marker where one must be) is left to the decoder to judge.
pub fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    /// The length of the segment whose length field starts at `at` (it counts itself).
    fn segment(bytes: &[u8], at: usize) -> Option<usize> {
        let len = usize::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
        (len >= 2 && at + len <= bytes.len()).then_some(len)
    }
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return true;
    }
    let (mut i, mut scanned) = (2, false);
    loop {
        match bytes.get(i) {
            None => return true,
            Some(0xFF) => {}
            // Not a marker where one must be: with no scan yet there is no image; after one,
            // the decoder judges what is left.
            Some(_) => return !scanned,
        }
        while bytes.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else { return true };
        i += 1;
        match marker {
            0xD9 => return false,
            // Markers without a segment: restarts, TEM.
            0xD0..=0xD7 | 0x01 => {}
            _ => {
                let Some(len) = segment(bytes, i) else { return true };
                i += len;
                if marker == 0xDA {
                    scanned = true;
                    // Entropy-coded data: up to a `FF` that starts a marker.
                    loop {
                        let (Some(&b), Some(&next)) = (bytes.get(i), bytes.get(i + 1)) else { return true };
                        if b == 0xFF && next != 0x00 && next != 0xFF && !(0xD0..=0xD7).contains(&next) {
                            break;
                        }
                        i += 1;
                    }
                }
            }
        }
    }
}

/// The coding of a JPEG whose frame header (its first SOF marker) is one that decoders rarely
/// read: arithmetic-coded, lossless or hierarchical. `None` for baseline, extended Huffman and
/// progressive Huffman JPEGs, and for streams with no frame header before their first scan.
pub fn jpeg_unsupported_coding(bytes: &[u8]) -> Option<&'static str> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    while bytes.get(i) == Some(&0xFF) {
        let marker = *bytes.get(i + 1)?;
        match marker {
            0xC9 | 0xCA | 0xCB | 0xCD | 0xCE | 0xCF => return Some("arithmetic-coded"),
            0xC3 | 0xC7 => return Some("lossless"),
            0xC5 | 0xC6 => return Some("hierarchical"),
            0xC0 | 0xC1 | 0xC2 | 0xDA | 0xD9 => return None,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*bytes.get(i + 2)?, *bytes.get(i + 3)?]));
        i += 2 + len;
    }
    None
}

/// Refuses images with no pixels or more than [`MAX_PIXELS`].
pub fn check_dimensions(width: u32, height: u32) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("the image is {width}x{height} pixels: it has no pixels"));
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(format!(
            "the image is {width}x{height} pixels; at most {MAX_PIXELS} pixels (8192x8192) \
             are read: shrink it first"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{IMAGE_BYTES, PLANE_BYTES};

    fn encode_png(img: &image::DynamicImage) -> Vec<u8> {
        let mut buf = Vec::new();
        img.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png).unwrap();
        buf
    }

    #[test]
    fn extension_check_is_case_insensitive() {
        for ok in ["a.png", "b.JPG", "c.Jpeg", "d.jpeg", "e.PnG", "f.bmp", "g.GIF", "h.webp", "i.tif", "j.TIFF"] {
            assert!(has_image_extension(ok.as_ref()), "{ok}");
        }
        for no in ["a.txt", "b", "c.jpg.txt", "png", ".gif", "d.heic", "e.svg"] {
            assert!(!has_image_extension(no.as_ref()), "{no}");
        }
    }

    #[test]
    fn png_32x32_rgb_passes_through_bit_exact_as_chw() {
        let img =
            image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, (x * y % 256) as u8]));
        let png = encode_png(&image::DynamicImage::ImageRgb8(img.clone()));
        let mut out = vec![0; IMAGE_BYTES];
        decode_into(&png, &mut out).unwrap();
        for y in 0..32u32 {
            for x in 0..32u32 {
                let p = img.get_pixel(x, y);
                let i = (y * 32 + x) as usize;
                assert_eq!([out[i], out[PLANE_BYTES + i], out[2 * PLANE_BYTES + i]], p.0, "pixel ({x}, {y})");
            }
        }
    }

    #[test]
    fn grey_and_alpha_are_converted_to_rgb() {
        let grey = image::GrayImage::from_pixel(32, 32, image::Luma([77]));
        let mut out = vec![0; IMAGE_BYTES];
        decode_into(&encode_png(&image::DynamicImage::ImageLuma8(grey)), &mut out).unwrap();
        assert!(out.iter().all(|&v| v == 77));

        let rgba = image::RgbaImage::from_pixel(32, 32, image::Rgba([1, 2, 3, 0]));
        decode_into(&encode_png(&image::DynamicImage::ImageRgba8(rgba)), &mut out).unwrap();
        assert!(out[..PLANE_BYTES].iter().all(|&v| v == 1));
        assert!(out[2 * PLANE_BYTES..].iter().all(|&v| v == 3));
    }

    #[test]
    fn other_sizes_are_resized_to_32x32() {
        // Left half red, right half blue, 64x40: after resizing, the left edge is red.
        let img =
            image::RgbImage::from_fn(
                64,
                40,
                |x, _| {
                    if x < 32 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) }
                },
            );
        let mut out = vec![0; IMAGE_BYTES];
        decode_into(&encode_png(&image::DynamicImage::ImageRgb8(img)), &mut out).unwrap();
        assert_eq!(out[0], 255); // R at (0, 0)
        assert_eq!(out[2 * PLANE_BYTES], 0); // B at (0, 0)
        assert_eq!(out[31], 0); // R at (31, 0)
        assert_eq!(out[2 * PLANE_BYTES + 31], 255); // B at (31, 0)
    }

    #[test]
    fn an_arithmetic_coded_jpeg_is_refused_with_how_to_convert_it() {
        let picture = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 9, y as u8 * 9, 7]));
        let mut jpeg = Vec::new();
        picture.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        assert_eq!(jpeg_unsupported_coding(&jpeg), None);
        // The same frame header marked as arithmetic-coded (SOF9), as such encoders write it.
        jpeg[sof + 1] = 0xC9;
        assert_eq!(jpeg_unsupported_coding(&jpeg), Some("arithmetic-coded"));
        let err = decode_into(&jpeg, &mut vec![0u8; IMAGE_BYTES]).unwrap_err();
        assert!(err.contains("arithmetic-coded") && err.contains("jpegtran"), "{err}");
    }

    #[test]
    fn truncated_jpeg_is_refused_but_trailing_bytes_are_not() {
        let img = image::RgbImage::from_fn(48, 48, |x, y| image::Rgb([(x * 5) as u8, (y * 5) as u8, 7]));
        let mut jpeg = Vec::new();
        image::DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
        let mut out = vec![0; IMAGE_BYTES];
        assert!(!jpeg_is_truncated(&jpeg));
        decode_into(&jpeg, &mut out).unwrap();
        let mut padded = jpeg.clone();
        padded.extend([0u8; 64]);
        decode_into(&padded, &mut out).unwrap();
        for cut in [jpeg.len() - 2, jpeg.len() / 2, 200] {
            assert!(jpeg_is_truncated(&jpeg[..cut]), "cut at {cut}");
            let err = decode_into(&jpeg[..cut], &mut out).unwrap_err();
            assert!(err.contains("truncated"), "cut at {cut}: {err}");
        }
        assert!(jpeg_is_truncated(b"\xFF\xD8 no scan at all"));
        // A phone's "motion photo": a whole JPEG, then a video whose bytes hold a start-of-scan
        // marker and no end-of-image one.
        let mut motion = jpeg.clone();
        motion.extend_from_slice(b"\x00\x00\x00\x18ftypmp42");
        motion.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x0C, 0x12, 0xFF, 0x00, 0x77]);
        motion.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 & 0xFE));
        assert!(!jpeg_is_truncated(&motion));
        decode_into(&motion, &mut out).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fine = dir.path().join("fine.jpg");
        std::fs::write(&fine, b"some bytes").unwrap();
        assert_eq!(read_image_file(&fine).unwrap(), b"some bytes");
        // A symlink to an endless device, a pipe nobody writes to, a folder: refused unread.
        let zero = dir.path().join("zero.jpg");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let fifo = dir.path().join("fifo.jpg");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid, NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        for path in [&zero, &fifo, &dir.path().to_path_buf()] {
            let err = read_image_file(path).unwrap_err();
            assert!(err.contains("not a regular file"), "{}: {err}", path.display());
        }
        // A sparse file claiming 20 GiB: refused from its size, nothing read.
        let huge = dir.path().join("huge.jpg");
        std::fs::File::create(&huge).unwrap().set_len(20 << 30).unwrap();
        let err = read_image_file(&huge).unwrap_err();
        assert!(err.contains("20480.0 MiB") && err.contains("over 128 MiB"), "{err}");
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let mut out = vec![0; IMAGE_BYTES];
        assert!(decode_into(b"definitely not an image", &mut out).is_err());
        // A truncated PNG: right signature, missing the rest.
        let png = encode_png(&image::DynamicImage::new_rgb8(32, 32));
        assert!(decode_into(&png[..20], &mut out).is_err());
    }
}
