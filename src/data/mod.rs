//! Data sources and the train/validation split.
//!
//! Owns everything between a dataset on disk (or on the network) and the `u8` image planes
//! that batching turns into tensors:
//!
//! - [`load`] resolves a dataset spec (`cifar10`, a CIFAR-10 binary folder, or an image-folder
//!   root) into a [`Dataset`];
//! - [`split`] carves a validation set off the training images, per class, with the same rule
//!   as the Keras reference (`shared/peers/keras_seed.py`), so both validate on the same images;
//! - [`cifar`], [`folder`] and [`download`] are the individual sources.
//!
//! Images are kept as decoded `u8` in CHW order, 32x32 each (see [`crate::geometry`]).

pub mod augment;
pub mod budget;
pub mod cifar;
pub mod download;
pub mod folder;
pub mod store;

use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use crate::geometry::{CHANNELS, Framing, IMAGE_BYTES, IMAGE_SIZE, ImageShape, PLANE_BYTES};
pub use store::{FileSet, Images};

/// The CIFAR-10 class names in the official label order (label 0 is `airplane`), as listed in
/// `batches.meta.txt` of the official archive.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// The spec that [`load`] resolves to the cached official CIFAR-10 set.
pub const CIFAR10_SPEC: &str = "cifar10";

/// Everything that can go wrong while finding, fetching, reading or splitting a dataset.
///
/// Each variant keeps the path or URL involved; messages end with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read, written, created or renamed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being attempted ("cannot read", "cannot create", ...).
        action: &'static str,
        /// The file or folder involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An image file could not be decoded.
    #[error(
        "cannot decode image {}: {reason}; remove or replace the file, or pass \
         --on-bad-image skip to leave such files out",
        path.display()
    )]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's explanation.
        reason: String,
    },
    /// A file or folder does not have the expected layout or content.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The offending file or folder.
        path: PathBuf,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// The spec given to [`load`] names nothing that can be loaded.
    #[error(
        "{}: {reason}; expected `cifar10`, a CIFAR-10 binary folder (with data_batch_1.bin, \
         or a cifar-10-batches-bin/ subfolder), a folder of class folders (<class>/*.jpg, or \
         train/<class>/... with optional val/ and test/), or a .csv file of path,label rows",
        path.display()
    )]
    UnknownSource {
        /// The path that was given.
        path: PathBuf,
        /// Why it is not a dataset.
        reason: String,
    },
    /// The download failed (network, HTTP status, truncated body, wrong size).
    #[error(
        "download of {url} failed: {reason}; check the network (or point --url / \
         CLASSIFY_CIFAR10_URL at a mirror) and run `classify data fetch cifar10` again"
    )]
    Download {
        /// The URL being fetched.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The downloaded archive does not have the expected MD5.
    #[error(
        "checksum mismatch for {url}: expected md5 {expected}, got {actual}; the download is \
         corrupt, run `classify data fetch cifar10` again"
    )]
    Checksum {
        /// The URL the archive came from.
        url: String,
        /// The published MD5, lowercase hex.
        expected: String,
        /// The MD5 of what arrived, lowercase hex.
        actual: String,
    },
    /// No cache folder could be determined from the environment.
    #[error(
        "no cache folder: none of CLASSIFY_HOME, XDG_CACHE_HOME or HOME is set; set \
         CLASSIFY_HOME to a writable folder"
    )]
    NoCacheDir,
    /// The validation fraction is outside `[0, 1)`.
    #[error("validation fraction {value} is out of range: use a number in [0, 1), e.g. 0.1")]
    ValFraction {
        /// The fraction that was given.
        value: f64,
    },
    /// Splitting left nothing to train on.
    #[error(
        "the validation split takes all {total} training images, leaving none to train on; \
         use a smaller validation fraction or add images"
    )]
    NothingToTrain {
        /// Number of images before the split.
        total: usize,
    },
}

impl DataError {
    /// Wraps an I/O error with the action and path it came from.
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        DataError::Io { action, path: path.to_path_buf(), source }
    }

    /// A layout or content error about `path`.
    pub(crate) fn format(path: &Path, reason: impl Into<String>) -> Self {
        DataError::Format { path: path.to_path_buf(), reason: reason.into() }
    }
}

/// Decoded images with their labels, all of one [`ImageShape`].
///
/// Each image is `shape.image_bytes()` of `u8` in CHW order: the R plane, then G, then B,
/// each `shape.size` x `shape.size` in row-major order. This is the CIFAR-10 binary layout
/// and burn's NCHW once images are stacked.
///
/// Invariant: `images.len() == labels.len() * shape.image_bytes()`; the accessors panic if
/// the public fields are edited into breaking it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// The shape of every image.
    pub shape: ImageShape,
    /// All images back to back, `len() * shape.image_bytes()` bytes.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u8>,
}

impl Default for ImageSet {
    fn default() -> Self {
        ImageSet::with_shape(ImageShape::CIFAR)
    }
}

impl ImageSet {
    /// An empty set of 32x32 images.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set of images of `shape`.
    pub fn with_shape(shape: ImageShape) -> Self {
        ImageSet { shape, images: Vec::new(), labels: Vec::new() }
    }

    /// An empty set of images of `shape` with room for `n` of them.
    pub fn with_capacity(shape: ImageShape, n: usize) -> Self {
        ImageSet { shape, images: Vec::with_capacity(n * shape.image_bytes()), labels: Vec::with_capacity(n) }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The CHW bytes of image `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.shape.image_bytes();
        &self.images[i * n..(i + 1) * n]
    }

    /// Appends one image (CHW, `shape.image_bytes()` long) with its label.
    ///
    /// # Panics
    /// If `img` is not exactly one image long: that is a bug in the caller, never a property
    /// of user data, since every source converts to the set's shape first.
    pub fn push(&mut self, img: &[u8], label: u8) {
        assert_eq!(img.len(), self.shape.image_bytes(), "ImageSet::push: an image must be {:?}", self.shape);
        self.images.extend_from_slice(img);
        self.labels.push(label);
    }

    /// The set with every image cut to its centre `size` x `size` square (the same set when
    /// the images are that size already).
    ///
    /// # Panics
    /// If `size` is larger than the images.
    pub fn center_crop(self, size: usize) -> ImageSet {
        let from = self.shape;
        self.remade(size, |src, dst| augment::center_crop(src, from, dst, size))
    }

    /// The set with every (square) image resampled to `side` x `side`, bilinearly; the same
    /// set when the images are that size.
    pub fn resized(self, side: usize) -> ImageSet {
        let from = self.shape;
        let whole = from.size as f64;
        let rect = augment::Rect { x: 0.0, y: 0.0, width: whole, height: whole };
        self.remade(side, |src, dst| augment::resample(src, from, rect, false, dst, side))
    }

    /// The set with every image made anew at `side` x `side` by `make(source, out)`, in
    /// parallel; the set itself when its images are that size already.
    fn remade(self, side: usize, make: impl Fn(&[u8], &mut [u8]) + Sync) -> ImageSet {
        if side == self.shape.size {
            return self;
        }
        let shape = ImageShape::square(side);
        let mut images = vec![0u8; self.len() * shape.image_bytes()];
        images
            .par_chunks_mut(shape.image_bytes())
            .zip(self.images.par_chunks(self.shape.image_bytes()))
            .for_each(|(dst, src)| make(src, dst));
        ImageSet { shape, images, labels: self.labels }
    }

    /// Appends all images of `other`.
    ///
    /// # Panics
    /// If `other` holds images of another shape.
    pub fn extend_from(&mut self, other: &ImageSet) {
        assert_eq!(self.shape, other.shape, "ImageSet::extend_from: images of another shape");
        self.images.extend_from_slice(&other.images);
        self.labels.extend_from_slice(&other.labels);
    }

    /// A new set holding the images at `idx`, in that order (repeats allowed).
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn select(&self, idx: &[usize]) -> ImageSet {
        let mut out = ImageSet::with_capacity(self.shape, idx.len());
        for &i in idx {
            out.push(self.image(i), self.labels[i]);
        }
        out
    }

    /// Splits the set in two, keeping order: the images where `to_other` is true move to
    /// the second set, the rest stay in the first, compacted in place (so the split needs
    /// memory for the second set only, not a copy of the whole).
    ///
    /// # Panics
    /// If `to_other` is not one flag per image.
    pub fn partition(mut self, to_other: &[bool]) -> (ImageSet, ImageSet) {
        assert_eq!(to_other.len(), self.len(), "ImageSet::partition: one flag per image");
        let n = self.shape.image_bytes();
        let mut other = ImageSet::with_capacity(self.shape, to_other.iter().filter(|&&v| v).count());
        let mut kept = 0;
        for (i, &moves) in to_other.iter().enumerate() {
            if moves {
                other.push(&self.images[i * n..(i + 1) * n], self.labels[i]);
            } else {
                if kept != i {
                    self.images.copy_within(i * n..(i + 1) * n, kept * n);
                    self.labels[kept] = self.labels[i];
                }
                kept += 1;
            }
        }
        self.images.truncate(kept * n);
        self.labels.truncate(kept);
        (self, other)
    }

    /// Number of images per label, for labels `0..n_classes` (larger labels are not counted).
    pub fn class_counts(&self, n_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; n_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }
}

/// A loaded data source: class names, training images and, if the source has one, a test set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    /// Class names; label `i` is `classes[i]`.
    pub classes: Vec<String>,
    /// The training images, in load order (record order, or class then file-name order).
    pub train: Images,
    /// The source's own validation images (a `val/` folder), if it has any: then the
    /// validation split is these, not carved out of `train`.
    pub val: Option<Images>,
    /// The source's held-out test images, if it has any.
    pub test: Option<Images>,
    /// Image files left out under [`BadImagePolicy::Skip`], in load order (train, then test);
    /// always empty under [`BadImagePolicy::Fail`], for CIFAR binaries and for images kept
    /// as files (bad ones are found when a batch decodes them).
    pub skipped: Vec<SkippedImage>,
    /// Width and height of each image file as it was, in load order (train, val, test);
    /// empty for CIFAR binaries and for images kept as files.
    pub sizes: Vec<(u32, u32)>,
}

impl Dataset {
    /// The dataset with every image resampled to `side` x `side` (the same dataset when its
    /// images are that size).
    pub fn resized(self, side: usize) -> Dataset {
        Dataset {
            train: self.train.for_training(side),
            val: self.val.map(|s| s.for_training(side)),
            test: self.test.map(|s| s.for_training(side)),
            ..self
        }
    }
}

impl Splits {
    /// The splits as training and evaluation take them under `framing`: training images
    /// at `framing.resize` (what random crops sample from), validation and test images cut
    /// to their centre `framing.size` square.
    pub fn framed(self, framing: Framing) -> Splits {
        Splits {
            classes: self.classes,
            train: self.train.for_training(framing.resize),
            val: self.val.for_evaluation(framing),
            test: self.test.map(|t| t.for_evaluation(framing)),
        }
    }
}

/// What to do with an image file that cannot be read or decoded, or is too large
/// (`--on-bad-image`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BadImagePolicy {
    /// Stop loading with an error naming the file and the reason.
    #[default]
    Fail,
    /// Leave the file out, list it among the skipped files, and warn.
    Skip,
}

/// An image file that [`BadImagePolicy::Skip`] left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedImage {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be used.
    pub reason: String,
}

/// What training and evaluation use: the dataset with a validation set carved off `train`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Splits {
    /// Class names; label `i` is `classes[i]`.
    pub classes: Vec<String>,
    /// Images to train on.
    pub train: Images,
    /// Images to validate on (possibly empty).
    pub val: Images,
    /// The source's test images, passed through unchanged.
    pub test: Option<Images>,
}

/// How many of a class's `n` images go to validation at fraction `val_fraction`.
///
/// `round(n * val_fraction)` with ties to even, computed in `f64` exactly as Python's
/// `int(round(len(per) * val_split))` in `shared/peers/keras_seed.py`, so both pick the same
/// images: 5 at 0.1 gives 0 (0.5 rounds down to even), 15 at 0.1 gives 2 (1.5 rounds up).
pub fn val_count(n: usize, val_fraction: f64) -> usize {
    let v = (n as f64 * val_fraction).round_ties_even();
    if v <= 0.0 { 0 } else { (v as usize).min(n) }
}

/// Splits `dataset.train` into train and validation sets; a source's own validation set
/// (`dataset.val`, from a `val/` folder) is used as it is instead.
///
/// For each class, the last [`val_count`]`(n, val_fraction)` of its `n` images, in load order,
/// go to validation and the rest to training; both keep load order. `val_fraction = 0` gives an
/// empty validation set. The test set passes through.
///
/// # Errors
/// [`DataError::ValFraction`] unless `0 <= val_fraction < 1`;
/// [`DataError::NothingToTrain`] if the split would leave no training images.
pub fn split(dataset: Dataset, val_fraction: f64) -> Result<Splits, DataError> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(DataError::ValFraction { value: val_fraction });
    }
    let Dataset { classes, train: all, val, test, .. } = dataset;
    if let Some(val) = val {
        return Ok(Splits { classes, train: all, val, test });
    }

    // Load-order positions of each label's images.
    let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); 256];
    for (i, &label) in all.labels().iter().enumerate() {
        per_class[label as usize].push(i);
    }
    let mut is_val = vec![false; all.len()];
    for members in &per_class {
        let n_val = val_count(members.len(), val_fraction);
        for &i in &members[members.len() - n_val..] {
            is_val[i] = true;
        }
    }
    if is_val.iter().all(|&v| v) && !all.is_empty() {
        return Err(DataError::NothingToTrain { total: all.len() });
    }
    let (train, val) = all.partition(&is_val);
    Ok(Splits { classes, train, val, test })
}

/// Options for [`load`]: where the official CIFAR-10 set is fetched from and cached, and how
/// image folders treat bad files.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Cache folder to use instead of [`download::cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Archive URL to use instead of `CLASSIFY_CIFAR10_URL` or the official URL.
    pub url: Option<String>,
    /// Show progress bars (the caller decides, e.g. only when stderr is a terminal).
    pub progress: bool,
    /// What to do with image files that cannot be decoded (image folders only).
    pub on_bad_image: BadImagePolicy,
    /// Side of the square images kept (image folders decode to it, CIFAR-10's 32x32 images
    /// are resampled to it); `None` keeps 32.
    pub side: Option<usize>,
    /// Bytes the decoded images of an image folder or CSV may take in memory; over it they
    /// are kept as files and decoded batch by batch (see [`store`]). `None`: no limit.
    pub cache_mem: Option<u64>,
}

/// What kind of source a spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The cached official CIFAR-10 set (spec `cifar10`).
    Cifar10,
    /// A CIFAR-10 binary folder (the one holding `data_batch_1.bin`).
    CifarBinary(PathBuf),
    /// An image-folder root: one holding `train/` (and perhaps `val/`, `test/`), or class
    /// folders directly.
    ImageFolder(PathBuf),
    /// A CSV file of `path,label` rows.
    Labels(PathBuf),
}

/// Decides what `spec` names, without reading any images.
///
/// `cifar10` always means the cached official set, even if a folder of that name exists
/// (write `./cifar10` for the folder).
///
/// # Errors
/// [`DataError::UnknownSource`] if `spec` is neither `cifar10` nor a folder of a known layout.
pub fn resolve(spec: &str) -> Result<Source, DataError> {
    if spec == CIFAR10_SPEC {
        return Ok(Source::Cifar10);
    }
    let path = Path::new(spec);
    let unknown = |reason: &str| DataError::UnknownSource { path: path.to_path_buf(), reason: reason.to_string() };
    if !path.exists() {
        return Err(unknown("no such file or folder"));
    }
    if path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        return Ok(Source::Labels(path.to_path_buf()));
    }
    if !path.is_dir() {
        return Err(unknown("not a folder (nor a .csv file of path,label rows)"));
    }
    if path.join(cifar::TRAIN_FILES[0]).is_file() {
        return Ok(Source::CifarBinary(path.to_path_buf()));
    }
    let nested = path.join(download::CIFAR10_BINARY.folder);
    if nested.join(cifar::TRAIN_FILES[0]).is_file() {
        return Ok(Source::CifarBinary(nested));
    }
    if path.join(folder::TRAIN_DIR).is_dir() {
        return Ok(Source::ImageFolder(path.to_path_buf()));
    }
    // Class folders directly under the root: any visible subfolder.
    let has_folder = std::fs::read_dir(path)
        .map_err(|e| DataError::io("cannot list", path, e))?
        .filter_map(Result::ok)
        .any(|e| !e.file_name().as_encoded_bytes().starts_with(b".") && e.path().is_dir());
    if has_folder {
        return Ok(Source::ImageFolder(path.to_path_buf()));
    }
    Err(unknown("has neither data_batch_1.bin, cifar-10-batches-bin/, train/ nor class folders"))
}

/// Loads the dataset that `spec` names (see [`resolve`]).
///
/// `cifar10` is fetched into the cache on first use (see [`download::ensure_cifar10`]).
///
/// # Errors
/// Whatever [`resolve`], the download, or the source's reader reports.
pub fn load(spec: &str, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let side = opts.side.unwrap_or(IMAGE_SIZE);
    let folder_opts =
        folder::FolderOptions { progress: opts.progress, policy: opts.on_bad_image, side, cache_mem: opts.cache_mem };
    let dataset = match resolve(spec)? {
        Source::Cifar10 => {
            let dir = download::ensure_cifar10(opts)?;
            cifar::load_dir(&dir)?
        }
        Source::CifarBinary(dir) => cifar::load_dir(&dir)?,
        Source::ImageFolder(root) => return folder::load_root(&root, &folder_opts),
        Source::Labels(csv) => return folder::load_labels(&csv, &folder_opts),
    };
    Ok(dataset.resized(side))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set where image `i` is filled with byte `i` and labelled `labels[i]`.
    fn numbered(labels: &[u8]) -> ImageSet {
        let mut set = ImageSet::new();
        for (i, &l) in labels.iter().enumerate() {
            set.push(&[i as u8; IMAGE_BYTES], l);
        }
        set
    }

    fn dataset(labels: &[u8]) -> Dataset {
        Dataset {
            classes: vec!["a".into(), "b".into(), "c".into()],
            train: numbered(labels).into(),
            val: None,
            test: None,
            skipped: Vec::new(),
            sizes: Vec::new(),
        }
    }

    /// Expected values from Python: `[int(round(n * f)) for n, f in cases]`.
    #[test]
    fn val_count_matches_python_round_half_even() {
        let cases = [
            (5, 0.1, 0),  // round(0.5) == 0
            (15, 0.1, 2), // round(1.5) == 2
            (25, 0.1, 2), // round(2.5) == 2
            (35, 0.1, 4), // 35 * 0.1 == 3.5000000000000004 -> 4
            (5000, 0.1, 500),
            (5000, 0.2, 1000),
            (6, 0.25, 2),  // round(1.5) == 2
            (10, 0.25, 2), // round(2.5) == 2
            (3, 0.5, 2),   // round(1.5) == 2
            (1, 0.5, 0),   // round(0.5) == 0
            (7, 0.0, 0),
            (0, 0.3, 0),
        ];
        for (n, f, want) in cases {
            assert_eq!(val_count(n, f), want, "val_count({n}, {f})");
        }
    }

    #[test]
    fn split_takes_last_items_of_each_class_in_load_order() {
        // Class 0 at positions 0,2,4,6,8 ... interleaved with class 1, like CIFAR records.
        let labels: Vec<u8> = (0..30).map(|i| (i % 2) as u8).collect(); // 15 per class
        let s = split(dataset(&labels), 0.1).unwrap();
        // 15 at 0.1 -> 2 per class: class 0's last two are 26, 28; class 1's are 27, 29.
        let val_ids: Vec<u8> = (0..s.val.len()).map(|i| s.val.memory().unwrap().image(i)[0]).collect();
        assert_eq!(val_ids, vec![26, 27, 28, 29]);
        assert_eq!(s.val.labels(), vec![0, 1, 0, 1]);
        let train_ids: Vec<u8> = (0..s.train.len()).map(|i| s.train.memory().unwrap().image(i)[0]).collect();
        assert_eq!(train_ids, (0..26).collect::<Vec<u8>>());
        assert_eq!(s.classes, vec!["a", "b", "c"]);
    }

    #[test]
    fn split_rounds_half_to_even_per_class() {
        // Class 0: 5 items (0.5 -> 0), class 1: 15 items (1.5 -> 2), class 2: 25 (2.5 -> 2).
        let mut labels = vec![0u8; 5];
        labels.extend([1u8; 15]);
        labels.extend([2u8; 25]);
        let s = split(dataset(&labels), 0.1).unwrap();
        assert_eq!(s.val.class_counts(3), vec![0, 2, 2]);
        assert_eq!(s.train.class_counts(3), vec![5, 13, 23]);
        let val_ids: Vec<u8> = (0..s.val.len()).map(|i| s.val.memory().unwrap().image(i)[0]).collect();
        assert_eq!(val_ids, vec![18, 19, 43, 44]);
    }

    #[test]
    fn split_5000_per_class_at_tenth_gives_500() {
        let labels: Vec<u8> = (0..10_000).map(|i| (i % 2) as u8).collect();
        let s = split(dataset(&labels), 0.1).unwrap();
        assert_eq!(s.val.class_counts(2), vec![500, 500]);
        assert_eq!(s.train.class_counts(2), vec![4500, 4500]);
    }

    #[test]
    fn split_zero_fraction_gives_empty_val_and_passes_test_through() {
        let mut d = dataset(&[0, 1, 2, 0]);
        d.test = Some(numbered(&[2, 1]).into());
        let test = d.test.clone();
        let s = split(d.clone(), 0.0).unwrap();
        assert!(s.val.is_empty());
        assert_eq!(s.train, d.train);
        assert_eq!(s.test, test);
    }

    #[test]
    fn split_rejects_fraction_outside_unit_interval() {
        for f in [1.0, 1.5, -0.1, f64::NAN, f64::INFINITY] {
            let err = split(dataset(&[0, 1]), f).unwrap_err();
            assert!(matches!(err, DataError::ValFraction { .. }), "{f}: {err}");
        }
    }

    #[test]
    fn split_that_leaves_no_training_images_is_an_error() {
        // One image per class at 0.9: round(0.9) == 1, so every image would be validation.
        let err = split(dataset(&[0, 1, 2]), 0.9).unwrap_err();
        assert!(matches!(err, DataError::NothingToTrain { total: 3 }), "{err}");
    }

    #[test]
    fn partition_moves_flagged_images_out_and_keeps_both_orders() {
        let set = numbered(&[0, 1, 2, 0, 1]);
        let (kept, moved) = set.clone().partition(&[false, true, false, true, false]);
        let ids = |s: &ImageSet| (0..s.len()).map(|i| s.image(i)[0]).collect::<Vec<u8>>();
        assert_eq!((ids(&kept), kept.labels.clone()), (vec![0, 2, 4], vec![0, 2, 1]));
        assert_eq!((ids(&moved), moved.labels.clone()), (vec![1, 3], vec![1, 0]));
        assert_eq!(kept.images.len(), 3 * IMAGE_BYTES);
        let (all, none) = set.clone().partition(&[false; 5]);
        assert_eq!((all, none.len()), (set, 0));
    }

    #[test]
    fn select_and_class_counts() {
        let set = numbered(&[0, 1, 1, 2]);
        let sub = set.select(&[3, 1, 1]);
        assert_eq!(sub.labels, vec![2, 1, 1]);
        assert_eq!(sub.image(0), &[3u8; IMAGE_BYTES][..]);
        assert_eq!(sub.images.len(), 3 * IMAGE_BYTES);
        assert_eq!(set.class_counts(3), vec![1, 2, 1]);
    }

    #[test]
    fn resolve_rejects_missing_and_unknown_paths() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = resolve(missing.to_str().unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("nope") && msg.contains("no such"), "{msg}");
        let err = resolve(dir.path().to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("train/"), "{err}");
        assert_eq!(resolve("cifar10").unwrap(), Source::Cifar10);
    }
}
