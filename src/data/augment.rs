//! Image transforms on decoded CHW `u8` images: training-time augmentation (random crop and
//! horizontal flip) and the fixed views of test-time augmentation.
//!
//! Augmentation happens on the `u8` planes before a batch becomes a tensor, so it costs a
//! few microseconds per image and never touches the gradient graph. Every random choice is
//! a hash of (seed, epoch, image index), so a run is reproducible, a resumed run sees the
//! same images as an uninterrupted one, and the result does not depend on thread count.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{CHANNELS, IMAGE_BYTES, IMAGE_SIZE, PLANE_BYTES};

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
}

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

/// Writes `view` of the CHW image `src` into `dst` (both [`IMAGE_BYTES`] long).
pub fn apply_view(src: &[u8], dst: &mut [u8], view: View) {
    let n = IMAGE_SIZE as i32;
    // Source column of each output column, after the shift and the mirror.
    let cols: [usize; IMAGE_SIZE] = std::array::from_fn(|x| {
        let sx = reflect(x as i32 + view.dx, n);
        if view.flip { IMAGE_SIZE - 1 - sx } else { sx }
    });
    for c in 0..CHANNELS {
        let plane = &src[c * PLANE_BYTES..(c + 1) * PLANE_BYTES];
        let out = &mut dst[c * PLANE_BYTES..(c + 1) * PLANE_BYTES];
        for (y, row) in out.chunks_exact_mut(IMAGE_SIZE).enumerate() {
            let sy = reflect(y as i32 + view.dy, n);
            let src_row = &plane[sy * IMAGE_SIZE..(sy + 1) * IMAGE_SIZE];
            for (o, &sx) in row.iter_mut().zip(&cols) {
                *o = src_row[sx];
            }
        }
    }
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
        Augment::None => View { flip: false, dx: 0, dy: 0 },
        Augment::FlipCrop | Augment::AltFlipCrop => {
            let bits = mix(mix(mix(seed) ^ epoch as u64) ^ index as u64);
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

/// Augments a batch of CHW images in place; `indices[i]` is the dataset index of image `i`,
/// which (with the seed and epoch) decides its crop and flip.
pub fn augment_batch(images: &mut [u8], indices: &[usize], augment: Augment, padding: usize, seed: u64, epoch: usize) {
    if augment == Augment::None {
        return;
    }
    images.par_chunks_mut(IMAGE_BYTES).zip(indices).for_each(|(image, &index)| {
        let src = image.to_vec();
        apply_view(&src, image, random_view(augment, padding, seed, epoch, index));
    });
}

/// Every image of `images` in `view`, in the same order.
pub fn view_all(images: &[u8], view: View) -> Vec<u8> {
    let mut out = vec![0u8; images.len()];
    out.par_chunks_mut(IMAGE_BYTES)
        .zip(images.par_chunks(IMAGE_BYTES))
        .for_each(|(dst, src)| apply_view(src, dst, view));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        apply_view(&src, &mut dst, View { flip: false, dx: 0, dy: 0 });
        assert_eq!(dst, src);

        apply_view(&src, &mut dst, View { flip: true, dx: 0, dy: 0 });
        for (c, y, x) in [(0, 0, 0), (1, 5, 7), (2, 31, 31)] {
            assert_eq!(at(&dst, c, y, x), at(&src, c, y, 31 - x));
        }

        // Shift right/down by 2: output (x, y) shows input (x + 2, y + 2), reflected at the edge.
        apply_view(&src, &mut dst, View { flip: false, dx: 2, dy: 2 });
        assert_eq!(at(&dst, 0, 0, 0), at(&src, 0, 2, 2));
        assert_eq!(at(&dst, 1, 31, 30), at(&src, 1, 29, 30));
        // Shift left by 1: output column 0 shows input column -1, reflected to column 1.
        apply_view(&src, &mut dst, View { flip: false, dx: -1, dy: 0 });
        assert_eq!(at(&dst, 2, 4, 0), at(&src, 2, 4, 1));
        assert_eq!(at(&dst, 2, 4, 5), at(&src, 2, 4, 4));

        // Flip after shift: the mirror of the shifted image.
        let mut shifted = vec![0u8; IMAGE_BYTES];
        apply_view(&src, &mut shifted, View { flip: false, dx: 1, dy: 1 });
        apply_view(&src, &mut dst, View { flip: true, dx: 1, dy: 1 });
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

    #[test]
    fn augmenting_a_batch_applies_each_images_own_view() {
        let image = coded();
        let mut batch = [image.clone(), image.clone()].concat();
        augment_batch(&mut batch, &[7, 900], Augment::FlipCrop, 4, 5, 2);
        for (k, index) in [7usize, 900].into_iter().enumerate() {
            let mut expected = vec![0u8; IMAGE_BYTES];
            apply_view(&image, &mut expected, random_view(Augment::FlipCrop, 4, 5, 2, index));
            assert_eq!(batch[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES], expected[..]);
        }
        let mut untouched = image.clone();
        augment_batch(&mut untouched, &[7], Augment::None, 4, 5, 2);
        assert_eq!(untouched, image);
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
