//! Where a split's images live: decoded in memory, or as files decoded when a batch needs
//! them.
//!
//! A dataset whose decoded images fit the memory budget (`--cache-mem`, by default half the
//! machine's memory) is decoded once and kept ([`Images::Memory`]). A larger one keeps only
//! its file list ([`Images::Files`]); training decodes each batch's files in parallel while
//! the previous batch trains (see `train`), so resident memory is a few batches whatever the
//! dataset's size. Both give the same bytes for an image: a file is decoded exactly as the
//! in-memory load decodes it, and the random crops of a batch depend only on the seed, the
//! epoch and the image's index, never on where the image came from.

use std::path::PathBuf;

use rayon::prelude::*;

use super::augment::{Cropping, augment_images, train_batch};
use super::folder::{decode_framed, read_image_file};
use super::{BadImagePolicy, DataError, Framing, ImageSet, ImageShape};

/// Images listed on disk, decoded on demand: each file's shorter side resized to `side`,
/// the centre square kept, then cut to its centre `crop` square (as the in-memory load and
/// [`super::Splits::framed`] do).
#[derive(Debug, Clone, PartialEq)]
pub struct FileSet {
    /// The image files, in load order.
    pub paths: Vec<PathBuf>,
    /// One class index per file.
    pub labels: Vec<u8>,
    /// Side the files are decoded to.
    pub side: usize,
    /// Side of the centre square kept of that (`side` itself for training images).
    pub crop: usize,
    /// What a file that cannot be decoded does: stops training, or is left out of its batch.
    pub policy: BadImagePolicy,
}

impl FileSet {
    /// The images at `indices`, decoded in parallel, with the indices of those decoded: all of
    /// them under [`BadImagePolicy::Fail`], where the first bad file is an error; under `Skip`
    /// a bad file is left out with a warning naming it.
    ///
    /// # Errors
    /// [`DataError::Decode`] naming the file, under [`BadImagePolicy::Fail`].
    pub fn decode(&self, indices: &[usize]) -> Result<(ImageSet, Vec<usize>), DataError> {
        let shape = ImageShape::square(self.side);
        let framing = Framing { size: self.side, resize: self.side };
        let bytes_each = shape.image_bytes();
        let mut images = vec![0u8; indices.len() * bytes_each];
        let results: Vec<Result<(), DataError>> = images
            .par_chunks_mut(bytes_each)
            .zip(indices.par_iter())
            .map(|(out, &i)| {
                let path = &self.paths[i];
                let decode_error = |reason| DataError::Decode { path: path.clone(), reason };
                let bytes = read_image_file(path).map_err(decode_error)?;
                decode_framed(&bytes, out, framing).map(|_| ()).map_err(decode_error)
            })
            .collect();
        let mut set = ImageSet::with_capacity(shape, indices.len());
        let mut kept = Vec::with_capacity(indices.len());
        for (j, (result, &i)) in results.into_iter().zip(indices).enumerate() {
            match result {
                Ok(()) => {
                    set.push(&images[j * bytes_each..(j + 1) * bytes_each], self.labels[i]);
                    kept.push(i);
                }
                Err(e) if self.policy == BadImagePolicy::Fail => return Err(e),
                Err(e) => tracing::warn!("left a bad image out of its batch: {e}"),
            }
        }
        Ok((set.center_crop(self.crop), kept))
    }
}

/// A split's images: decoded in memory, or files decoded as they are needed.
#[derive(Debug, Clone, PartialEq)]
pub enum Images {
    Memory(ImageSet),
    Files(FileSet),
}

impl Default for Images {
    fn default() -> Self {
        Images::Memory(ImageSet::default())
    }
}

impl From<ImageSet> for Images {
    fn from(set: ImageSet) -> Self {
        Images::Memory(set)
    }
}

/// How many images [`Images::statistics_sample`] decodes from files: enough for per-channel
/// means and the `fast` model's whitening patches to settle.
pub const STATISTICS_SAMPLE: usize = 5000;

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One class index per image.
    pub fn labels(&self) -> &[u8] {
        match self {
            Images::Memory(set) => &set.labels,
            Images::Files(files) => &files.labels,
        }
    }

    /// The shape of the images as they are handed out.
    pub fn shape(&self) -> ImageShape {
        match self {
            Images::Memory(set) => set.shape,
            Images::Files(files) => ImageShape::square(files.crop),
        }
    }

    /// The images, when they are in memory.
    pub fn memory(&self) -> Option<&ImageSet> {
        match self {
            Images::Memory(set) => Some(set),
            Images::Files(_) => None,
        }
    }

    /// Whether the images are read from disk batch by batch.
    pub fn is_streamed(&self) -> bool {
        matches!(self, Images::Files(_))
    }

    /// Number of images per label, for labels `0..n_classes`.
    pub fn class_counts(&self, n_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; n_classes];
        for &l in self.labels() {
            if let Some(c) = counts.get_mut(usize::from(l)) {
                *c += 1;
            }
        }
        counts
    }

    /// The images at `idx`, in that order, kept where they are.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn select(&self, idx: &[usize]) -> Images {
        match self {
            Images::Memory(set) => Images::Memory(set.select(idx)),
            Images::Files(files) => Images::Files(FileSet {
                paths: idx.iter().map(|&i| files.paths[i].clone()).collect(),
                labels: idx.iter().map(|&i| files.labels[i]).collect(),
                ..files.clone()
            }),
        }
    }

    /// Splits the images in two, keeping order: those where `to_other` is true go to the
    /// second part (see [`ImageSet::partition`]: no copy of the whole).
    ///
    /// # Panics
    /// If `to_other` is not one flag per image.
    pub fn partition(self, to_other: &[bool]) -> (Images, Images) {
        match self {
            Images::Memory(set) => {
                let (kept, other) = set.partition(to_other);
                (Images::Memory(kept), Images::Memory(other))
            }
            Images::Files(FileSet { paths, labels, side, crop, policy }) => {
                let empty = || FileSet { paths: Vec::new(), labels: Vec::new(), side, crop, policy };
                let (mut kept, mut other) = (empty(), empty());
                for ((path, label), &moves) in paths.into_iter().zip(labels).zip(to_other) {
                    let part = if moves { &mut other } else { &mut kept };
                    part.paths.push(path);
                    part.labels.push(label);
                }
                (Images::Files(kept), Images::Files(other))
            }
        }
    }

    /// The images at `indices` and the indices of those handed out (all of them, except bad
    /// files left out under [`BadImagePolicy::Skip`]).
    ///
    /// # Errors
    /// As [`FileSet::decode`].
    pub fn fetch(&self, indices: &[usize]) -> Result<(ImageSet, Vec<usize>), DataError> {
        match self {
            Images::Memory(set) => Ok((set.select(indices), indices.to_vec())),
            Images::Files(files) => files.decode(indices),
        }
    }

    /// All the images in memory: the set itself, or every file decoded.
    ///
    /// # Errors
    /// As [`FileSet::decode`].
    pub fn into_memory(self) -> Result<ImageSet, DataError> {
        match self {
            Images::Memory(set) => Ok(set),
            Images::Files(files) => {
                let all: Vec<usize> = (0..files.labels.len()).collect();
                files.decode(&all).map(|(set, _)| set)
            }
        }
    }

    /// The images a model's input statistics are computed from: all of them in memory, or
    /// [`STATISTICS_SAMPLE`] evenly spaced ones (all, if there are fewer) decoded from files.
    ///
    /// # Errors
    /// As [`FileSet::decode`].
    pub fn statistics_sample(&self) -> Result<std::borrow::Cow<'_, ImageSet>, DataError> {
        match self {
            Images::Memory(set) => Ok(std::borrow::Cow::Borrowed(set)),
            Images::Files(files) => {
                let n = files.labels.len();
                let k = n.min(STATISTICS_SAMPLE);
                let idx: Vec<usize> = (0..k).map(|i| i * n / k.max(1)).collect();
                files.decode(&idx).map(|(set, _)| std::borrow::Cow::Owned(set))
            }
        }
    }

    /// One training batch: the images at `indices` augmented as `cropping` says and cut to
    /// `size` (see [`augment_images`]), with their labels. Images in memory and the same
    /// images as files give the same bytes.
    ///
    /// # Errors
    /// As [`FileSet::decode`].
    pub fn train_batch(
        &self,
        indices: &[usize],
        cropping: &Cropping,
        size: usize,
        seed: u64,
        epoch: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), DataError> {
        match self {
            Images::Memory(set) => {
                let labels = indices.iter().map(|&i| set.labels[i]).collect();
                Ok((train_batch(set, indices, cropping, size, seed, epoch), labels))
            }
            Images::Files(files) => {
                let (set, kept) = files.decode(indices)?;
                let images: Vec<&[u8]> = (0..set.len()).map(|j| set.image(j)).collect();
                Ok((augment_images(&images, set.shape, &kept, cropping, size, seed, epoch), set.labels))
            }
        }
    }

    /// The images at their training side `side` (files decode to it; images in memory are
    /// resampled unless they have it).
    pub fn for_training(self, side: usize) -> Images {
        match self {
            Images::Memory(set) => Images::Memory(set.resized(side)),
            Images::Files(files) => Images::Files(FileSet { side, crop: side, ..files }),
        }
    }

    /// The images as evaluation takes them under `framing`: at `framing.resize`, cut to the
    /// centre `framing.size` square.
    pub fn for_evaluation(self, framing: Framing) -> Images {
        match self {
            Images::Memory(set) => Images::Memory(set.resized(framing.resize).center_crop(framing.size)),
            Images::Files(files) => Images::Files(FileSet { side: framing.resize, crop: framing.size, ..files }),
        }
    }
}

/// The default `--cache-mem`: half of the machine's memory (4 GiB where it cannot be read).
pub fn default_cache_mem() -> u64 {
    const FALLBACK: u64 = 4 << 30;
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024 / 2)
        })
        .unwrap_or(FALLBACK)
}

/// Reads a `--cache-mem` value: bytes, or a number with a unit (`512MiB`, `2GiB`, `1.5 GB`).
///
/// # Errors
/// A message saying what was expected.
pub fn parse_cache_mem(text: &str) -> Result<u64, String> {
    text.trim().parse::<bytesize::ByteSize>().map(|b| b.as_u64()).map_err(|_| {
        format!("`{text}` is not an amount of memory: write bytes or a number with a unit, e.g. 512MiB or 8GiB")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_mem_reads_units() {
        assert_eq!(parse_cache_mem("0"), Ok(0));
        assert_eq!(parse_cache_mem("4096"), Ok(4096));
        assert_eq!(parse_cache_mem("512MiB"), Ok(512 << 20));
        assert_eq!(parse_cache_mem("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_cache_mem("1GB"), Ok(1_000_000_000));
        let err = parse_cache_mem("lots").unwrap_err();
        assert!(err.contains("`lots`") && err.contains("8GiB"), "{err}");
    }

    #[test]
    fn select_keeps_files_and_labels_together() {
        let files = Images::Files(FileSet {
            paths: vec!["a.png".into(), "b.png".into(), "c.png".into()],
            labels: vec![0, 1, 2],
            side: 8,
            crop: 8,
            policy: BadImagePolicy::Fail,
        });
        let (kept, moved) = files.clone().partition(&[true, false, true]);
        assert_eq!((kept.labels(), moved.labels()), (&[1u8][..], &[0u8, 2][..]));
        let picked = files.select(&[2, 0]);
        assert_eq!(picked.labels(), &[2, 0]);
        match picked {
            Images::Files(f) => assert_eq!(f.paths, vec![PathBuf::from("c.png"), PathBuf::from("a.png")]),
            Images::Memory(_) => panic!("files became memory"),
        }
    }
}
