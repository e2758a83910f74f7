//! The image-folder source: `ROOT/train/<class>/*.{png,jpg,jpeg}` and, optionally,
//! `ROOT/test/<class>/...`.
//!
//! Classes are the sorted names of train's subfolders (hidden ones skipped); files within a
//! class are taken in file-name order, which the validation split relies on (see
//! [`super::split`]). Every image is converted to RGB, resized to 32x32 unless it already is,
//! and kept as `u8` CHW. Decoding runs in parallel on rayon's pool.

use std::ffi::OsString;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use super::{DataError, Dataset, IMAGE_BYTES, IMAGE_SIZE, ImageSet, PLANE_BYTES};

/// Subfolder of the root holding the training classes.
pub const TRAIN_DIR: &str = "train";
/// Optional subfolder of the root holding the test classes.
pub const TEST_DIR: &str = "test";
/// File extensions read as images, compared case-insensitively; other files are ignored.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Filter used when an image is not already 32x32. Triangle (bilinear with a support that
/// widens when shrinking) averages over the source pixels instead of skipping them.
pub const RESIZE_FILTER: FilterType = FilterType::Triangle;

/// Loads an image-folder root: `train/` (required) and `test/` (if present).
///
/// Class order is the sorted names of `train/`'s subfolders; a `test/` class must be one of
/// them. `progress` shows a progress bar while decoding.
///
/// # Errors
/// If `train/` has no class folders or no images, a `test/` class is unknown, a folder cannot
/// be listed, or an image cannot be read or decoded (the error names the file).
pub fn load_dir(root: &Path, progress: bool) -> Result<Dataset, DataError> {
    let train_dir = root.join(TRAIN_DIR);
    let classes = list_classes(&train_dir)?;
    if classes.is_empty() {
        return Err(DataError::format(
            &train_dir,
            "has no class folders; expected train/<class>/*.png|jpg",
        ));
    }
    if classes.len() > 256 {
        return Err(DataError::format(
            &train_dir,
            format!(
                "has {} class folders; at most 256 are supported",
                classes.len()
            ),
        ));
    }
    let names: Vec<String> = classes
        .iter()
        .map(|c| {
            c.clone().into_string().map_err(|c| {
                DataError::format(
                    &train_dir.join(&c),
                    "class folder name is not valid UTF-8; rename it",
                )
            })
        })
        .collect::<Result<_, _>>()?;

    let train_items = list_items(&train_dir, &classes)?;
    if train_items.is_empty() {
        return Err(DataError::format(
            &train_dir,
            "holds no .png/.jpg/.jpeg images in its class folders",
        ));
    }

    let test_dir = root.join(TEST_DIR);
    let test_items = if test_dir.is_dir() {
        let test_classes = list_classes(&test_dir)?;
        for c in &test_classes {
            if !classes.contains(c) {
                return Err(DataError::format(
                    &test_dir.join(c),
                    format!(
                        "test class folder is not among the training classes ({}); rename \
                         it to one of them or remove it",
                        names.join(", ")
                    ),
                ));
            }
        }
        Some(list_items(&test_dir, &classes)?)
    } else {
        None
    };

    let total = train_items.len() + test_items.as_ref().map_or(0, Vec::len);
    let bar = if progress {
        indicatif::ProgressBar::new(total as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "decoding {pos}/{len} images [{bar:30}] {per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let start = std::time::Instant::now();
    let train = decode_items(&train_items, &bar)?;
    let test = test_items
        .map(|items| decode_items(&items, &bar))
        .transpose()?;
    bar.finish_and_clear();
    tracing::debug!(
        root = %root.display(),
        images = total,
        seconds = start.elapsed().as_secs_f64(),
        "decoded image folder"
    );
    Ok(Dataset {
        classes: names,
        train,
        test,
    })
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

/// `(path, label)` for each image under `dir/<class>/`, class by class in `classes` order
/// (label = index in `classes`), files sorted by name. Classes absent from `dir` are skipped.
fn list_items(dir: &Path, classes: &[OsString]) -> Result<Vec<(PathBuf, u8)>, DataError> {
    let mut items = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_dir = dir.join(class);
        if !class_dir.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        for entry in
            fs::read_dir(&class_dir).map_err(|e| DataError::io("cannot list", &class_dir, e))?
        {
            let entry = entry.map_err(|e| DataError::io("cannot list", &class_dir, e))?;
            let name = entry.file_name();
            if has_image_extension(&name) && entry.path().is_file() {
                files.push(name);
            }
        }
        // Byte order of the names, which for UTF-8 is Python's `sorted` (code-point) order.
        files.sort();
        items.extend(files.into_iter().map(|f| (class_dir.join(f), label as u8)));
    }
    Ok(items)
}

/// Whether `name` ends in `.png`, `.jpg` or `.jpeg`, in any letter case.
pub fn has_image_extension(name: &std::ffi::OsStr) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn decode_items(
    items: &[(PathBuf, u8)],
    bar: &indicatif::ProgressBar,
) -> Result<ImageSet, DataError> {
    let mut images = vec![0u8; items.len() * IMAGE_BYTES];
    images
        .par_chunks_mut(IMAGE_BYTES)
        .zip(items.par_iter())
        .try_for_each(|(out, (path, _))| {
            let bytes = fs::read(path).map_err(|e| DataError::io("cannot read", path, e))?;
            decode_into(&bytes, out).map_err(|reason| DataError::Decode {
                path: path.clone(),
                reason,
            })?;
            bar.inc(1);
            Ok::<(), DataError>(())
        })?;
    Ok(ImageSet {
        images,
        labels: items.iter().map(|(_, l)| *l).collect(),
    })
}

/// Decodes an encoded PNG or JPEG (format sniffed from the content, not the name) into
/// `out` as 32x32 RGB CHW; the error is the decoder's explanation.
///
/// Other colour types are converted to RGB (grey replicated, alpha dropped, 16-bit scaled);
/// images of another size are resized with [`RESIZE_FILTER`]; 32x32 RGB8 images are copied
/// unchanged.
pub fn decode_into(bytes: &[u8], out: &mut [u8]) -> Result<(), String> {
    debug_assert_eq!(out.len(), IMAGE_BYTES);
    let img = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    let mut rgb = img.into_rgb8();
    let side = IMAGE_SIZE as u32;
    if rgb.dimensions() != (side, side) {
        rgb = image::imageops::resize(&rgb, side, side, RESIZE_FILTER);
    }
    let (r, rest) = out.split_at_mut(PLANE_BYTES);
    let (g, b) = rest.split_at_mut(PLANE_BYTES);
    for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
        r[i] = px[0];
        g[i] = px[1];
        b[i] = px[2];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_png(img: &image::DynamicImage) -> Vec<u8> {
        let mut buf = Vec::new();
        img.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png)
            .unwrap();
        buf
    }

    #[test]
    fn extension_check_is_case_insensitive() {
        for ok in ["a.png", "b.JPG", "c.Jpeg", "d.jpeg", "e.PnG"] {
            assert!(has_image_extension(ok.as_ref()), "{ok}");
        }
        for no in ["a.txt", "b", "c.jpg.txt", "png", ".gif", "d.bmp"] {
            assert!(!has_image_extension(no.as_ref()), "{no}");
        }
    }

    #[test]
    fn png_32x32_rgb_passes_through_bit_exact_as_chw() {
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 8) as u8, (x * y % 256) as u8])
        });
        let png = encode_png(&image::DynamicImage::ImageRgb8(img.clone()));
        let mut out = vec![0; IMAGE_BYTES];
        decode_into(&png, &mut out).unwrap();
        for y in 0..32u32 {
            for x in 0..32u32 {
                let p = img.get_pixel(x, y);
                let i = (y * 32 + x) as usize;
                assert_eq!(
                    [out[i], out[PLANE_BYTES + i], out[2 * PLANE_BYTES + i]],
                    p.0,
                    "pixel ({x}, {y})"
                );
            }
        }
    }

    #[test]
    fn grey_and_alpha_are_converted_to_rgb() {
        let grey = image::GrayImage::from_pixel(32, 32, image::Luma([77]));
        let mut out = vec![0; IMAGE_BYTES];
        decode_into(
            &encode_png(&image::DynamicImage::ImageLuma8(grey)),
            &mut out,
        )
        .unwrap();
        assert!(out.iter().all(|&v| v == 77));

        let rgba = image::RgbaImage::from_pixel(32, 32, image::Rgba([1, 2, 3, 0]));
        decode_into(
            &encode_png(&image::DynamicImage::ImageRgba8(rgba)),
            &mut out,
        )
        .unwrap();
        assert!(out[..PLANE_BYTES].iter().all(|&v| v == 1));
        assert!(out[2 * PLANE_BYTES..].iter().all(|&v| v == 3));
    }

    #[test]
    fn other_sizes_are_resized_to_32x32() {
        // Left half red, right half blue, 64x40: after resizing, the left edge is red.
        let img = image::RgbImage::from_fn(64, 40, |x, _| {
            if x < 32 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        let mut out = vec![0; IMAGE_BYTES];
        decode_into(&encode_png(&image::DynamicImage::ImageRgb8(img)), &mut out).unwrap();
        assert_eq!(out[0], 255); // R at (0, 0)
        assert_eq!(out[2 * PLANE_BYTES], 0); // B at (0, 0)
        assert_eq!(out[31], 0); // R at (31, 0)
        assert_eq!(out[2 * PLANE_BYTES + 31], 255); // B at (31, 0)
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
