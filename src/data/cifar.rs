//! The CIFAR-10 binary format: reading a `cifar-10-batches-bin` folder, and writing records.
//!
//! Layout (from <https://www.cs.toronto.edu/~kriz/cifar.html>, "Binary version"): each batch
//! file is a sequence of [`RECORD_BYTES`]-byte records, one label byte followed by the
//! 3072 pixel bytes of a 32x32 image as an R plane, a G plane and a B plane, rows top to
//! bottom. `batches.meta.txt` names the classes, one per line, in label order.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::{DataError, Dataset, IMAGE_BYTES, ImageSet};

/// Bytes in one record: 1 label byte + [`IMAGE_BYTES`] pixel bytes = 3073.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;

/// The training batch files, in the order their records are loaded.
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];

/// The test batch file.
pub const TEST_FILE: &str = "test_batch.bin";

/// The class-name file, one name per line in label order.
pub const META_FILE: &str = "batches.meta.txt";

/// Loads a CIFAR-10 binary folder: [`TRAIN_FILES`] as `train` (in file, then record order),
/// [`TEST_FILE`] as `test`, class names from [`META_FILE`].
///
/// # Errors
/// A missing file, a file whose size is not a multiple of [`RECORD_BYTES`], or a label with no
/// class name, each naming the file.
pub fn load_dir(dir: &Path) -> Result<Dataset, DataError> {
    let classes = read_meta(&dir.join(META_FILE))?;
    let mut train = ImageSet::new();
    for name in TRAIN_FILES {
        let part = read_records(&dir.join(name), classes.len())?;
        train.extend_from(&part);
    }
    let test = read_records(&dir.join(TEST_FILE), classes.len())?;
    tracing::debug!(
        dir = %dir.display(),
        train = train.len(),
        test = test.len(),
        "loaded CIFAR binary folder"
    );
    warn_unused_classes(dir, &classes, &train);
    Ok(Dataset {
        classes,
        train: train.into(),
        val: None,
        test: Some(test.into()),
        skipped: Vec::new(),
        sizes: Vec::new(),
    })
}

/// Warns when `batches.meta.txt` names classes that no training record uses: a model would
/// get outputs it can never learn, usually because the names file belongs to other data.
/// Not an error, since a small CIFAR-format set may legitimately lack some classes.
fn warn_unused_classes(dir: &Path, classes: &[String], train: &ImageSet) {
    let counts = train.class_counts(classes.len());
    let unused: Vec<&str> = classes.iter().zip(&counts).filter(|(_, n)| **n == 0).map(|(c, _)| c.as_str()).collect();
    if !unused.is_empty() {
        tracing::warn!(
            "{} names {} classes, but no training record has the label of {}: check that \
             the names file belongs to these batches",
            dir.join(META_FILE).display(),
            classes.len(),
            unused.join(", ")
        );
    }
}

/// Reads class names from a `batches.meta.txt`: one per line, surrounding whitespace trimmed,
/// blank lines ignored.
///
/// # Errors
/// If the file cannot be read, is not UTF-8, or names no class.
pub fn read_meta(path: &Path) -> Result<Vec<String>, DataError> {
    let bytes = fs::read(path).map_err(|e| missing_or_io(path, e))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| DataError::format(path, "is not UTF-8 text; expected one class name per line"))?;
    // A byte-order mark (editors on Windows write one) is not part of the first name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let classes: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    if classes.is_empty() {
        return Err(DataError::format(path, "names no classes; expected one class name per line"));
    }
    if classes.len() > 256 {
        return Err(DataError::format(
            path,
            format!(
                "names {} classes, but a CIFAR label is one byte (at most 256 classes); \
                 expected one class name per line, 10 for CIFAR-10",
                classes.len()
            ),
        ));
    }
    for (i, name) in classes.iter().enumerate() {
        if classes[..i].contains(name) {
            return Err(DataError::format(
                path,
                format!("names class `{name}` twice; each line must name a different class"),
            ));
        }
    }
    Ok(classes)
}

/// Reads one batch file; every label must be below `n_classes`.
///
/// # Errors
/// If the file cannot be read, is empty, its size is not a multiple of [`RECORD_BYTES`], or a
/// record's label is `>= n_classes` (the message names the record's index).
pub fn read_records(path: &Path, n_classes: usize) -> Result<ImageSet, DataError> {
    // The size is checked before reading, so a wrong multi-gigabyte file is refused at once.
    let len = fs::metadata(path).map_err(|e| missing_or_io(path, e))?.len();
    if len > 0 && !len.is_multiple_of(RECORD_BYTES as u64) {
        return Err(not_a_multiple(path, len));
    }
    let bytes = fs::read(path).map_err(|e| missing_or_io(path, e))?;
    parse_records(path, &bytes, n_classes)
}

fn not_a_multiple(path: &Path, len: u64) -> DataError {
    DataError::format(
        path,
        format!(
            "size {len} bytes is not a multiple of the {RECORD_BYTES}-byte CIFAR record \
             (truncated, or extra bytes, or not a CIFAR-10 binary batch); re-download the \
             dataset (`classify data fetch cifar10`)"
        ),
    )
}

/// Parses the records of one batch file held in memory; `path` only names it in errors.
///
/// # Errors
/// As [`read_records`].
pub fn parse_records(path: &Path, bytes: &[u8], n_classes: usize) -> Result<ImageSet, DataError> {
    if bytes.is_empty() {
        return Err(DataError::format(path, "is empty; re-download the dataset (`classify data fetch cifar10`)"));
    }
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(not_a_multiple(path, bytes.len() as u64));
    }
    let n = bytes.len() / RECORD_BYTES;
    let mut set = ImageSet::with_capacity(crate::geometry::ImageShape::CIFAR, n);
    for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = record[0];
        if label as usize >= n_classes {
            return Err(DataError::format(
                path,
                format!(
                    "record {i} has label {label}, but {META_FILE} names only {n_classes} \
                     classes (labels 0..{n_classes}); the file is corrupt or belongs to \
                     another dataset, or {META_FILE} lacks names"
                ),
            ));
        }
        set.push(&record[1..], label);
    }
    Ok(set)
}

/// Writes `set` as a CIFAR binary batch file at `path`, atomically (temporary name, then
/// rename), so a crash never leaves a half-written batch.
///
/// # Errors
/// If the file cannot be written or renamed.
pub fn write_records(path: &Path, set: &ImageSet) -> Result<(), DataError> {
    let mut bytes = Vec::with_capacity(set.len() * RECORD_BYTES);
    for i in 0..set.len() {
        bytes.push(set.labels[i]);
        bytes.extend_from_slice(set.image(i));
    }
    write_atomic(path, &bytes)
}

/// Writes class names as a `batches.meta.txt` at `path`, one per line, atomically.
///
/// # Errors
/// If the file cannot be written or renamed.
pub fn write_meta(path: &Path, classes: &[String]) -> Result<(), DataError> {
    let mut text = String::new();
    for c in classes {
        text.push_str(c);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` to a sibling temporary file, syncs it, and renames it over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(DataError::io("cannot write", &tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        DataError::io("cannot rename into place", path, e)
    })
}

fn missing_or_io(path: &Path, e: std::io::Error) -> DataError {
    if e.kind() == std::io::ErrorKind::NotFound {
        DataError::format(
            path,
            format!(
                "missing; a CIFAR-10 binary folder holds {} .. {}, {TEST_FILE} and {META_FILE} \
                 (run `classify data fetch cifar10` for the official set)",
                TRAIN_FILES[0], TRAIN_FILES[4]
            ),
        )
    } else {
        DataError::io("cannot read", path, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::PLANE_BYTES;

    /// One record whose R plane is all `r`, G all `g`, B all `b`, except pixel (row 1, col 2)
    /// of the R plane, which is 200 (to pin row-major order within a plane).
    fn record(label: u8, r: u8, g: u8, b: u8) -> Vec<u8> {
        let mut rec = vec![label];
        rec.extend(std::iter::repeat_n(r, PLANE_BYTES));
        rec.extend(std::iter::repeat_n(g, PLANE_BYTES));
        rec.extend(std::iter::repeat_n(b, PLANE_BYTES));
        rec[1 + 32 + 2] = 200;
        rec
    }

    #[test]
    fn parses_labels_and_planes() {
        let mut bytes = record(3, 10, 20, 30);
        bytes.extend(record(9, 40, 50, 60));
        let set = parse_records(Path::new("x.bin"), &bytes, 10).unwrap();
        assert_eq!(set.labels, vec![3, 9]);
        let img = set.image(1);
        assert_eq!(img[0], 40);
        assert_eq!(img[32 + 2], 200);
        assert_eq!(img[PLANE_BYTES], 50);
        assert_eq!(img[2 * PLANE_BYTES + 1023], 60);
        assert_eq!(set.image(0)[PLANE_BYTES - 1], 10);
    }

    #[test]
    fn size_not_multiple_of_record_names_file() {
        let mut bytes = record(0, 1, 2, 3);
        bytes.pop();
        let err = parse_records(Path::new("dir/data_batch_2.bin"), &bytes, 10).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("data_batch_2.bin") && msg.contains("3072"), "{msg}");
        assert!(msg.contains("3073"), "{msg}");
    }

    #[test]
    fn label_out_of_range_names_file_and_record() {
        let mut bytes = record(1, 0, 0, 0);
        bytes.extend(record(2, 0, 0, 0));
        bytes.extend(record(10, 0, 0, 0));
        let err = parse_records(Path::new("test_batch.bin"), &bytes, 10).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test_batch.bin") && msg.contains("record 2"), "{msg}");
        assert!(msg.contains("label 10"), "{msg}");
    }

    #[test]
    fn empty_file_is_an_error() {
        let err = parse_records(Path::new("a.bin"), &[], 10).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn meta_ignores_blank_lines_and_trims() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(META_FILE);
        fs::write(&path, "\nairplane\r\n  automobile \n\n\nbird\n\n").unwrap();
        assert_eq!(read_meta(&path).unwrap(), vec!["airplane", "automobile", "bird"]);
        fs::write(&path, "\n \n").unwrap();
        assert!(read_meta(&path).is_err());
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.bin");
        let mut set = ImageSet::new();
        let img: Vec<u8> = (0..IMAGE_BYTES).map(|i| (i * 7 % 251) as u8).collect();
        set.push(&img, 4);
        set.push(&[9; IMAGE_BYTES], 0);
        write_records(&path, &set).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 2 * RECORD_BYTES as u64);
        assert_eq!(read_records(&path, 5).unwrap(), set);
        // No temporary file left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_batch_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_meta(&dir.path().join(META_FILE), &["a".to_string()]).unwrap();
        let err = load_dir(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("data_batch_1.bin") && msg.contains("missing"), "{msg}");
    }
}
