//! The shape of the images a model takes, as one value that data, model, serve and report
//! read, instead of constants imported across layers.
//!
//! Images travel as decoded `u8` in CHW order (an R plane, a G plane, a B plane): the
//! CIFAR-10 binary layout, and burn's NCHW once a batch is stacked. Every run so far is
//! 32x32 RGB ([`ImageShape::CIFAR`], what [`crate::run::RunConfig::image_shape`] gives);
//! the constants below are that shape's numbers for the code that has not yet been taught
//! other sizes.

/// Side, channels and byte counts of square CHW `u8` images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    /// Colour channels (3: RGB).
    pub channels: usize,
    /// Side of the square image, in pixels.
    pub size: usize,
}

impl ImageShape {
    /// 32x32 RGB, CIFAR-10's images and the input of the `seed` and `fast` models.
    pub const CIFAR: ImageShape = ImageShape { channels: 3, size: 32 };

    /// Bytes in one colour plane.
    pub const fn plane_bytes(self) -> usize {
        self.size * self.size
    }

    /// Bytes in one decoded image.
    pub const fn image_bytes(self) -> usize {
        self.channels * self.plane_bytes()
    }

    /// Square RGB images of side `size`.
    pub const fn square(size: usize) -> ImageShape {
        ImageShape { channels: 3, size }
    }

    /// The NCHW tensor shape of `batch` images.
    pub const fn dims(self, batch: usize) -> [usize; 4] {
        [batch, self.channels, self.size, self.size]
    }

    /// How many whole images `bytes` holds.
    pub const fn count(self, bytes: usize) -> usize {
        bytes / self.image_bytes()
    }
}

/// How an image of any size becomes a model's input: its shorter side is resized to
/// `resize` pixels (keeping its aspect), then the centre `size` x `size` square is cut out.
/// `size` is the run's `--image-size`; `resize` leaves the margin that a training crop
/// samples from (`size` itself for CIFAR's 32x32 images, whose crops shift instead).
///
/// Training images are kept at `resize` x `resize` (the centre square), validation, test
/// and served images are cut to `size` as evaluation expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Framing {
    /// Side of the model's square input, in pixels.
    pub size: usize,
    /// The shorter side of an image before the centre crop, in pixels (at least `size`).
    pub resize: usize,
}

impl Framing {
    /// CIFAR's: 32x32 images, kept as they are.
    pub const CIFAR: Framing = Framing { size: 32, resize: 32 };

    /// For photos at `size`: resized so that the crop keeps 87.5% of the shorter side
    /// (torchvision's and timm's evaluation rule: 146 for 128, 256 for 224).
    pub fn photo(size: usize) -> Framing {
        Framing { size, resize: (size as f64 / 0.875).round() as usize }
    }

    /// The images the model takes.
    pub const fn input(self) -> ImageShape {
        ImageShape::square(self.size)
    }

    /// The training images as kept in memory, before their random crop.
    pub const fn stored(self) -> ImageShape {
        ImageShape::square(self.resize)
    }
}

/// Side of the square images every source is converted to, in pixels.
pub const IMAGE_SIZE: usize = ImageShape::CIFAR.size;
/// Colour channels per image (RGB).
pub const CHANNELS: usize = ImageShape::CIFAR.channels;
/// Bytes in one decoded image: `CHANNELS * IMAGE_SIZE * IMAGE_SIZE` = 3072.
pub const IMAGE_BYTES: usize = ImageShape::CIFAR.image_bytes();
/// Bytes in one colour plane of a decoded image (1024).
pub const PLANE_BYTES: usize = ImageShape::CIFAR.plane_bytes();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cifar_images_are_3072_bytes_in_three_planes() {
        let shape = ImageShape::CIFAR;
        assert_eq!((shape.plane_bytes(), shape.image_bytes()), (1024, 3072));
        assert_eq!(shape.dims(5), [5, 3, 32, 32]);
        assert_eq!(shape.count(3 * 3072 + 7), 3);
        assert_eq!((IMAGE_SIZE, CHANNELS, IMAGE_BYTES, PLANE_BYTES), (32, 3, 3072, 1024));
    }

    #[test]
    fn photos_keep_seven_eighths_of_the_shorter_side() {
        assert_eq!(Framing::photo(128), Framing { size: 128, resize: 146 });
        assert_eq!(Framing::photo(224).resize, 256);
        assert_eq!(Framing::CIFAR.input(), ImageShape::CIFAR);
        assert_eq!(Framing::photo(128).stored().image_bytes(), 3 * 146 * 146);
    }
}
