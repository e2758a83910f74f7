//! Image transforms on decoded CHW `u8` images: training-time augmentation (random crop and
//! horizontal flip) and the fixed views of test-time augmentation.
//!
//! Augmentation happens on the `u8` planes before a batch becomes a tensor, so it costs a
//! few microseconds per image and never touches the gradient graph. Every random choice is
//! a hash of (seed, epoch, image index), so a run is reproducible, a resumed run sees the
//! same images as an uninterrupted one, and the result does not depend on thread count.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{ImageSet, ImageShape};

/// Pixels of reflect padding around an image before a random 32x32 crop, by default: the
/// crop moves the image by up to 4 pixels in each direction, the standard CIFAR-10
/// augmentation. Short schedules do better with 2 (airbench's translate).
pub const CROP_PADDING: usize = 4;
/// The largest `--crop-padding` accepted: a quarter of the image.
pub const MAX_CROP_PADDING: usize = 8;

/// Training-time augmentation, chosen with `--augment`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    /// Images as they are (the original system).
    #[default]
    None,
    /// A random crop of the image reflect-padded by `--crop-padding` pixels (4 by default),
    /// and a horizontal flip half of the time.
    FlipCrop,
    /// airbench's alternating flip: the same random crop, but each image is mirrored in
    /// every other epoch (a seeded coin decides which), so over any two epochs the network
    /// sees both orientations of every image instead of a random half of them twice.
    AltFlipCrop,
    /// torchvision's `RandomResizedCrop` and a flip half of the time, for photos: a box of
    /// `--crop-scale` to all of the image's area at an aspect between `--crop-ratio` and its
    /// inverse, resized to `--image-size`.
    RandomResizedCrop,
}

/// `random-resized-crop`'s smallest box, as a fraction of the image's area (timm's and
/// fast.ai's 0.35: torchvision's 0.08 is for 90-epoch ImageNet runs, too harsh for short ones).
pub const CROP_SCALE: f64 = 0.35;
/// `random-resized-crop`'s most oblong box, width over height (and its inverse).
pub const CROP_RATIO: f64 = 0.75;

/// Test-time augmentation, chosen with `--tta`: each image is classified in several views
/// and the class probabilities are averaged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Tta {
    /// The image once, as it is.
    #[default]
    None,
    /// The image and its mirror image (2 views).
    Flip,
    /// The image and its mirror image, each also shifted one pixel up-left and one pixel
    /// down-right with reflected edges (6 views).
    FlipTranslate,
}

/// One deterministic view of an image: an optional mirror, then a shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub flip: bool,
    /// Output pixel (x, y) shows input pixel (x + dx, y + dy), edges reflected.
    pub dx: i32,
    pub dy: i32,
}

impl Tta {
    /// The views whose predictions are averaged.
    pub fn views(self) -> Vec<View> {
        let plain = |flip| View { flip, dx: 0, dy: 0 };
        match self {
            Tta::None => vec![plain(false)],
            Tta::Flip => vec![plain(false), plain(true)],
            Tta::FlipTranslate => [false, true]
                .into_iter()
                .flat_map(|flip| [(0, 0), (-1, -1), (1, 1)].map(|(dx, dy)| View { flip, dx, dy }))
                .collect(),
        }
    }
}

/// `i` mapped into `0..n` by reflecting about the edges without repeating them
/// (`-1 -> 1`, `n -> n - 2`), as NumPy's and PyTorch's `reflect` padding do.
fn reflect(i: i32, n: i32) -> usize {
    let i = if i < 0 { -i } else { i };
    let i = if i >= n { 2 * (n - 1) - i } else { i };
    i.clamp(0, n - 1) as usize
}

/// Writes `view` of the CHW image `src` (of `shape`) into `dst`, the centre `size` x `size`
/// square of the view (`size` = `shape.size` for the whole image).
///
/// # Panics
/// If `src` or `dst` is not one image of its shape long, or `size > shape.size`.
pub fn apply_view(src: &[u8], shape: ImageShape, dst: &mut [u8], size: usize, view: View) {
    let (side, n) = (shape.size, shape.size as i32);
    assert!(size <= side && src.len() == shape.image_bytes() && dst.len() == shape.channels * size * size);
    let offset = ((side - size) / 2) as i32;
    // Source column of each output column, after the shift and the mirror.
    let cols: Vec<usize> = (0..size)
        .map(|x| {
            let sx = reflect(x as i32 + offset + view.dx, n);
            if view.flip { side - 1 - sx } else { sx }
        })
        .collect();
    for (plane, out) in src.chunks_exact(side * side).zip(dst.chunks_exact_mut(size * size)) {
        for (y, row) in out.chunks_exact_mut(size).enumerate() {
            let sy = reflect(y as i32 + offset + view.dy, n);
            let src_row = &plane[sy * side..(sy + 1) * side];
            for (o, &sx) in row.iter_mut().zip(&cols) {
                *o = src_row[sx];
            }
        }
    }
}

/// The centre `size` x `size` square of `src` (of `shape`), into `dst`.
pub fn center_crop(src: &[u8], shape: ImageShape, dst: &mut [u8], size: usize) {
    apply_view(src, shape, dst, size, View { flip: false, dx: 0, dy: 0 });
}

/// A rectangle of an image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// torchvision's `RandomResizedCrop` box for a `side` x `side` image: an area of
/// `[min_scale, 1]` of the image at an aspect (width / height) between `min_ratio` and its
/// inverse, drawn log-uniformly, at a uniform position; after 10 boxes that do not fit, the
/// whole image. `random` gives uniform numbers in `[0, 1)`.
pub fn resized_crop_box(side: usize, min_scale: f64, min_ratio: f64, mut random: impl FnMut() -> f64) -> Rect {
    let side_f = side as f64;
    let area = side_f * side_f;
    let (lo, hi) = (min_ratio.min(1.0 / min_ratio).ln(), min_ratio.max(1.0 / min_ratio).ln());
    for _ in 0..10 {
        let target = area * (min_scale + (1.0 - min_scale) * random());
        let ratio = (lo + (hi - lo) * random()).exp();
        let width = (target * ratio).sqrt().round();
        let height = (target / ratio).sqrt().round();
        if width >= 1.0 && height >= 1.0 && width <= side_f && height <= side_f {
            let x = ((side_f - width + 1.0) * random()).floor().min(side_f - width);
            let y = ((side_f - height + 1.0) * random()).floor().min(side_f - height);
            return Rect { x, y, width, height };
        }
    }
    Rect { x: 0.0, y: 0.0, width: side_f, height: side_f }
}

/// Resamples the `rect` of `src` (of `shape`) to `size` x `size` into `dst`, bilinearly
/// (pixel centres aligned, as PyTorch's `align_corners=False`), mirrored if `flip`.
pub fn resample(src: &[u8], shape: ImageShape, rect: Rect, flip: bool, dst: &mut [u8], size: usize) {
    let side = shape.size;
    let max = (side - 1) as f64;
    // For each output coordinate: the two source coordinates and the weight of the second.
    let taps = |start: f64, extent: f64, out: usize| -> (usize, usize, f32) {
        let s = (start + (out as f64 + 0.5) * extent / size as f64 - 0.5).clamp(0.0, max);
        let lo = s.floor();
        (lo as usize, (lo as usize + 1).min(side - 1), (s - lo) as f32)
    };
    let cols: Vec<_> = (0..size).map(|x| taps(rect.x, rect.width, if flip { size - 1 - x } else { x })).collect();
    let rows: Vec<_> = (0..size).map(|y| taps(rect.y, rect.height, y)).collect();
    for (plane, out) in src.chunks_exact(side * side).zip(dst.chunks_exact_mut(size * size)) {
        for (row, &(y0, y1, wy)) in out.chunks_exact_mut(size).zip(&rows) {
            let (r0, r1) = (&plane[y0 * side..(y0 + 1) * side], &plane[y1 * side..(y1 + 1) * side]);
            for (o, &(x0, x1, wx)) in row.iter_mut().zip(&cols) {
                let top = f32::from(r0[x0]) + (f32::from(r0[x1]) - f32::from(r0[x0])) * wx;
                let bottom = f32::from(r1[x0]) + (f32::from(r1[x1]) - f32::from(r1[x0])) * wx;
                *o = (top + (bottom - top) * wy).round() as u8;
            }
        }
    }
}

/// The random bits of training image `index` in `epoch` of a run seeded with `seed`.
fn image_bits(seed: u64, epoch: usize, index: usize) -> u64 {
    mix(mix(mix(seed) ^ epoch as u64) ^ index as u64)
}

/// SplitMix64: a well-mixed 64-bit hash, used to derive each image's random choices.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random view of training image `index` in `epoch` of a run seeded with `seed`, with
/// crops of an image reflect-padded by `padding` pixels.
pub fn random_view(augment: Augment, padding: usize, seed: u64, epoch: usize, index: usize) -> View {
    match augment {
        Augment::None | Augment::RandomResizedCrop => View { flip: false, dx: 0, dy: 0 },
        Augment::FlipCrop | Augment::AltFlipCrop => {
            let bits = image_bits(seed, epoch, index);
            let padding = padding.min(MAX_CROP_PADDING);
            let span = 2 * padding as u64 + 1;
            let flip = match augment {
                // The image's own coin (seed and index only), turned over every other epoch.
                Augment::AltFlipCrop => (mix(mix(seed) ^ index as u64) & 1 == 1) ^ epoch.is_multiple_of(2),
                _ => bits & 1 == 1,
            };
            View {
                flip,
                dx: ((bits >> 8) % span) as i32 - padding as i32,
                dy: ((bits >> 32) % span) as i32 - padding as i32,
            }
        }
    }
}

/// How training images are cropped: the recipe's choices that [`train_batch`] reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cropping {
    pub augment: Augment,
    /// Reflect padding of `flip-crop`'s shifts.
    pub padding: usize,
    /// Smallest area fraction of `random-resized-crop`'s boxes.
    pub min_scale: f64,
    /// Smallest aspect (width / height) of its boxes; the largest is the inverse.
    pub min_ratio: f64,
}

/// The training batch of `set`'s images at `indices`, augmented as `cropping` says and cut
/// to `size` x `size`: [`augment_images`] of those images.
pub fn train_batch(
    set: &ImageSet,
    indices: &[usize],
    cropping: &Cropping,
    size: usize,
    seed: u64,
    epoch: usize,
) -> Vec<u8> {
    let images: Vec<&[u8]> = indices.iter().map(|&i| set.image(i)).collect();
    augment_images(&images, set.shape, indices, cropping, size, seed, epoch)
}

/// `images` (each of `shape`; `indices[j]` is the dataset index of `images[j]`) augmented as
/// `cropping` says and cut to `size` x `size` (a centre crop when nothing random is asked
/// for), back to back. Each image's random choices come from (seed, epoch, index): see the
/// module docs.
pub fn augment_images(
    images: &[&[u8]],
    shape: ImageShape,
    indices: &[usize],
    cropping: &Cropping,
    size: usize,
    seed: u64,
    epoch: usize,
) -> Vec<u8> {
    let out_bytes = shape.channels * size * size;
    let mut out = vec![0u8; images.len() * out_bytes];
    out.par_chunks_mut(out_bytes).zip(images).zip(indices).for_each(|((dst, src), &index)| {
        if cropping.augment == Augment::RandomResizedCrop {
            let mut state = image_bits(seed, epoch, index);
            let flip = state & 1 == 1;
            let mut random = || {
                state = mix(state);
                (state >> 11) as f64 / (1u64 << 53) as f64
            };
            let rect = resized_crop_box(shape.size, cropping.min_scale, cropping.min_ratio, &mut random);
            resample(src, shape, rect, flip, dst, size);
        } else {
            let view = random_view(cropping.augment, cropping.padding, seed, epoch, index);
            apply_view(src, shape, dst, size, view);
        }
    });
    out
}

/// Every image of `images` (of `shape`) in `view`, in the same order.
pub fn view_all(images: &[u8], shape: ImageShape, view: View) -> Vec<u8> {
    let bytes = shape.image_bytes();
    let mut out = vec![0u8; images.len() / bytes * bytes];
    out.par_chunks_mut(bytes).zip(images.par_chunks_exact(bytes)).for_each(|(dst, src)| {
        apply_view(src, shape, dst, shape.size, view);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{IMAGE_BYTES, IMAGE_SIZE, PLANE_BYTES};

    const CIFAR: ImageShape = ImageShape::CIFAR;

    fn view(src: &[u8], dst: &mut [u8], v: View) {
        apply_view(src, CIFAR, dst, IMAGE_SIZE, v);
    }

    /// An image whose every byte encodes its channel, row and column.
    fn coded() -> Vec<u8> {
        (0..IMAGE_BYTES).map(|i| ((i / PLANE_BYTES) * 64 + (i / IMAGE_SIZE % IMAGE_SIZE) * 2 + i % 2) as u8).collect()
    }

    fn at(img: &[u8], c: usize, y: usize, x: usize) -> u8 {
        img[c * PLANE_BYTES + y * IMAGE_SIZE + x]
    }

    #[test]
    fn reflect_mirrors_about_the_edges_without_repeating_them() {
        assert_eq!(reflect(-1, 32), 1);
        assert_eq!(reflect(-4, 32), 4);
        assert_eq!(reflect(0, 32), 0);
        assert_eq!(reflect(31, 32), 31);
        assert_eq!(reflect(32, 32), 30);
        assert_eq!(reflect(35, 32), 27);
    }

    #[test]
    fn views_flip_and_shift_with_reflected_edges() {
        let src: Vec<u8> = (0..IMAGE_BYTES).map(|i| (i % 251) as u8).collect();
        let mut dst = vec![0u8; IMAGE_BYTES];
        view(&src, &mut dst, View { flip: false, dx: 0, dy: 0 });
        assert_eq!(dst, src);

        view(&src, &mut dst, View { flip: true, dx: 0, dy: 0 });
        for (c, y, x) in [(0, 0, 0), (1, 5, 7), (2, 31, 31)] {
            assert_eq!(at(&dst, c, y, x), at(&src, c, y, 31 - x));
        }

        // Shift right/down by 2: output (x, y) shows input (x + 2, y + 2), reflected at the edge.
        view(&src, &mut dst, View { flip: false, dx: 2, dy: 2 });
        assert_eq!(at(&dst, 0, 0, 0), at(&src, 0, 2, 2));
        assert_eq!(at(&dst, 1, 31, 30), at(&src, 1, 29, 30));
        // Shift left by 1: output column 0 shows input column -1, reflected to column 1.
        view(&src, &mut dst, View { flip: false, dx: -1, dy: 0 });
        assert_eq!(at(&dst, 2, 4, 0), at(&src, 2, 4, 1));
        assert_eq!(at(&dst, 2, 4, 5), at(&src, 2, 4, 4));

        // Flip after shift: the mirror of the shifted image.
        let mut shifted = vec![0u8; IMAGE_BYTES];
        view(&src, &mut shifted, View { flip: false, dx: 1, dy: 1 });
        view(&src, &mut dst, View { flip: true, dx: 1, dy: 1 });
        assert_eq!(at(&dst, 0, 3, 0), at(&shifted, 0, 3, 31));
    }

    #[test]
    fn random_crops_are_seeded_cover_every_offset_and_flip_half_the_time() {
        let views: Vec<View> = (0..4000).map(|i| random_view(Augment::FlipCrop, 4, 42, 3, i)).collect();
        assert_eq!(views[17], random_view(Augment::FlipCrop, 4, 42, 3, 17));
        assert_ne!(views[..50], (0..50).map(|i| random_view(Augment::FlipCrop, 4, 42, 4, i)).collect::<Vec<_>>());
        assert_ne!(views[..50], (0..50).map(|i| random_view(Augment::FlipCrop, 4, 43, 3, i)).collect::<Vec<_>>());
        let flips = views.iter().filter(|v| v.flip).count();
        assert!((1800..2200).contains(&flips), "{flips} flips in 4000");
        for d in -4..=4 {
            assert!(views.iter().any(|v| v.dx == d), "no crop with dx {d}");
            assert!(views.iter().any(|v| v.dy == d), "no crop with dy {d}");
        }
        assert!(views.iter().all(|v| v.dx.abs() <= 4 && v.dy.abs() <= 4));
        assert_eq!(random_view(Augment::None, 4, 1, 1, 1), View { flip: false, dx: 0, dy: 0 });
        // Smaller padding, smaller shifts, still every one of them.
        let small: Vec<View> = (0..1000).map(|i| random_view(Augment::FlipCrop, 2, 42, 3, i)).collect();
        assert!(small.iter().all(|v| v.dx.abs() <= 2 && v.dy.abs() <= 2));
        assert!((-2..=2).all(|d| small.iter().any(|v| v.dx == d) && small.iter().any(|v| v.dy == d)));
    }

    #[test]
    fn alternating_flips_mirror_each_image_in_every_other_epoch() {
        let flips =
            |epoch| (0..2000).map(|i| random_view(Augment::AltFlipCrop, 2, 42, epoch, i).flip).collect::<Vec<_>>();
        let (one, two, three) = (flips(1), flips(2), flips(3));
        assert!(one.iter().zip(&two).all(|(a, b)| a != b), "epoch 2 must mirror what epoch 1 did not");
        assert_eq!(one, three);
        let count = one.iter().filter(|f| **f).count();
        assert!((900..1100).contains(&count), "{count} of 2000 flipped in epoch 1");
        assert_ne!(one, (0..2000).map(|i| random_view(Augment::AltFlipCrop, 2, 43, 1, i).flip).collect::<Vec<_>>());
        // Crops still change every epoch and stay within the padding.
        let crops = |epoch| {
            (0..200)
                .map(|i| {
                    let v = random_view(Augment::AltFlipCrop, 2, 42, epoch, i);
                    (v.dx, v.dy)
                })
                .collect::<Vec<_>>()
        };
        assert_ne!(crops(1), crops(3));
        assert!(crops(1).iter().all(|(dx, dy)| dx.abs() <= 2 && dy.abs() <= 2));
    }

    fn set_of(images: &[Vec<u8>], shape: ImageShape) -> ImageSet {
        let mut set = ImageSet::with_shape(shape);
        for image in images {
            set.push(image, 0);
        }
        set
    }

    fn cropping(augment: Augment) -> Cropping {
        Cropping { augment, padding: 4, min_scale: CROP_SCALE, min_ratio: CROP_RATIO }
    }

    #[test]
    fn augmenting_a_batch_applies_each_images_own_view() {
        let image = coded();
        let set = set_of(&[image.clone(), coded().iter().map(|v| v ^ 0x55).collect()], CIFAR);
        let batch = train_batch(&set, &[1, 0, 1], &cropping(Augment::FlipCrop), IMAGE_SIZE, 5, 2);
        for (k, index) in [1usize, 0, 1].into_iter().enumerate() {
            let mut expected = vec![0u8; IMAGE_BYTES];
            view(set.image(index), &mut expected, random_view(Augment::FlipCrop, 4, 5, 2, index));
            assert_eq!(batch[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES], expected[..], "image {k}");
        }
        let untouched = train_batch(&set, &[0], &cropping(Augment::None), IMAGE_SIZE, 5, 2);
        assert_eq!(untouched, image);
    }

    /// A 40x40 image whose red value is its column, green its row, blue 200.
    fn gradient(side: usize) -> Vec<u8> {
        let plane = side * side;
        (0..3 * plane).map(|i| [(i % side) as u8, (i % plane / side) as u8, 200][i / plane]).collect()
    }

    #[test]
    fn a_centre_crop_cuts_the_middle_square() {
        let src = gradient(40);
        let set = set_of(&[src], ImageShape::square(40)).center_crop(32);
        assert_eq!(set.shape, ImageShape::square(32));
        let img = set.image(0);
        // Offset (40 - 32) / 2 = 4 in both directions.
        assert_eq!((img[0], img[1024], img[2048]), (4, 4, 200));
        assert_eq!((img[31], img[1024 + 31 * 32]), (35, 35));
        // Without random augmentation, training batches are the same centre crop.
        let batch =
            train_batch(&set_of(&[gradient(40)], ImageShape::square(40)), &[0], &cropping(Augment::None), 32, 1, 1);
        assert_eq!(batch, img);
    }

    #[test]
    fn resized_crop_boxes_stay_inside_cover_the_asked_areas_and_aspects() {
        let mut state = 7u64;
        let mut random = || {
            state = mix(state);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let boxes: Vec<Rect> = (0..2000).map(|_| resized_crop_box(146, 0.35, 0.75, &mut random)).collect();
        let area = 146.0 * 146.0;
        for b in &boxes {
            assert!(b.x >= 0.0 && b.y >= 0.0 && b.x + b.width <= 146.0 && b.y + b.height <= 146.0, "{b:?}");
            // Rounding the sides moves the area and aspect a little past the bounds.
            assert!(b.width * b.height >= 0.34 * area, "{b:?}");
            let aspect = b.width / b.height;
            assert!((0.73..=1.37).contains(&aspect) || b.width == 146.0, "{b:?}");
        }
        let small = boxes.iter().filter(|b| b.width * b.height < 0.5 * area).count();
        let large = boxes.iter().filter(|b| b.width * b.height > 0.9 * area).count();
        assert!(small > 200 && large > 50, "{small} small and {large} large boxes of 2000");
        assert!(boxes.iter().any(|b| b.x > 40.0) && boxes.iter().any(|b| b.y > 40.0));
        // A range that never fits falls back to the whole image.
        let whole = resized_crop_box(10, 1.0, 0.1, || 0.999);
        assert_eq!(whole, Rect { x: 0.0, y: 0.0, width: 10.0, height: 10.0 });
    }

    #[test]
    fn resampling_a_box_interpolates_and_mirrors() {
        let src = gradient(40);
        let shape = ImageShape::square(40);
        let mut dst = vec![0u8; 3 * 20 * 20];
        // The box (10, 10, 20, 20) at its own size is a plain crop.
        resample(&src, shape, Rect { x: 10.0, y: 10.0, width: 20.0, height: 20.0 }, false, &mut dst, 20);
        assert_eq!((dst[0], dst[19], dst[400 + 19 * 20], dst[800]), (10, 29, 29, 200));
        // Mirrored: the first column shows the box's last.
        resample(&src, shape, Rect { x: 10.0, y: 10.0, width: 20.0, height: 20.0 }, true, &mut dst, 20);
        assert_eq!((dst[0], dst[19]), (29, 10));
        // The whole image at half size: each output pixel averages two columns (x = 2i + 0.5).
        resample(&src, shape, Rect { x: 0.0, y: 0.0, width: 40.0, height: 40.0 }, false, &mut dst, 20);
        assert_eq!((dst[0], dst[1], dst[19]), (1, 3, 39));
    }

    #[test]
    fn random_resized_crops_are_seeded_per_image_and_epoch() {
        let set = set_of(&[gradient(40), gradient(40)], ImageShape::square(40));
        let rrc = cropping(Augment::RandomResizedCrop);
        let a = train_batch(&set, &[0, 1], &rrc, 24, 3, 1);
        assert_eq!(a.len(), 2 * 3 * 24 * 24);
        assert_eq!(a, train_batch(&set, &[0, 1], &rrc, 24, 3, 1));
        assert_ne!(a[..1728], a[1728..], "two indices, two crops");
        assert_ne!(a, train_batch(&set, &[0, 1], &rrc, 24, 3, 2));
        assert_ne!(a, train_batch(&set, &[0, 1], &rrc, 24, 4, 1));
        // Blue is 200 everywhere, whatever the box.
        assert!(a.chunks(576).skip(2).step_by(3).flatten().all(|&b| b == 200));
    }

    #[test]
    fn tta_views_are_the_advertised_sets() {
        assert_eq!(Tta::None.views().len(), 1);
        assert_eq!(Tta::Flip.views(), vec![View { flip: false, dx: 0, dy: 0 }, View { flip: true, dx: 0, dy: 0 }]);
        let views = Tta::FlipTranslate.views();
        assert_eq!(views.len(), 6);
        assert_eq!(views.iter().filter(|v| v.flip).count(), 3);
        assert!(views.contains(&View { flip: true, dx: -1, dy: -1 }));
    }
}
