//! The command line: subcommands and flags (clap derive). Parsing only; `commands` acts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use classify::data::BadImagePolicy;
use classify::data::augment::Tta;
use classify::device::DeviceKind;
use classify::kernels::Precision;
use classify::model::ModelKind;
use classify::quantize::Quantize;
use classify::settings::Given;

/// Train, evaluate and predict with small-image classifiers (CIFAR-10 or any image folder).
#[derive(Debug, Parser)]
#[command(name = "classify", version, about, long_about = None)]
pub struct Cli {
    /// Where tensors live. `wgpu` and `cuda` need a build with that cargo feature.
    #[arg(long, global = true, value_enum, default_value = "cpu")]
    pub device: DeviceKind,

    /// Worker threads for the CPU backend and image decoding, 1 to 1024 (default: all cores).
    #[arg(long, global = true, env = "CLASSIFY_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Memory that image decoding may hold at once, all threads together, e.g. 512MiB or
    /// 2GiB [default: 1GiB]. Decodes wait for it; large images (over 16 MiB decoded) may use
    /// three quarters of it, so small ones still find room while they run; an image too large
    /// for that share is refused, naming this flag.
    #[arg(long, global = true, value_name = "SIZE", env = "CLASSIFY_DECODE_MEMORY")]
    pub decode_memory: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download and manage datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Inspect model architectures.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Pretrained weight files: which are known, and fetching them into the cache.
    #[command(subcommand)]
    Weights(WeightsCommand),
    /// Train a model and write a run folder.
    Train(TrainArgs),
    /// Accuracy, per-class accuracy and confusion matrix of a trained run.
    Eval(EvalArgs),
    /// Classify image files, a folder or a list of them with a trained run.
    Predict(PredictArgs),
    /// Write each image's penultimate-layer features (for similarity search, clustering).
    Embed(EmbedArgs),
    /// Write plots and an HTML report of a trained run.
    Report(ReportArgs),
    /// Serve a trained run over HTTP (SageMaker and KServe v2 contracts, a web page).
    Serve(ServeArgs),
    /// Measure training and inference speed and peak memory.
    Bench(BenchArgs),
    /// Write a trained run as an ONNX graph, for ONNX Runtime, tract and other runtimes.
    Export(ExportArgs),
}

#[derive(Debug, Subcommand)]
pub enum WeightsCommand {
    /// The known files: size, licence, what they are, and how to get each (or where it is).
    List {
        /// Cache folder [default: $CLASSIFY_HOME, else $XDG_CACHE_HOME/classify, else ~/.cache/classify].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Download a known file from its publisher into the cache's weights/ folder, checking
    /// its SHA-256; prints its path (for --pretrained).
    Fetch {
        /// The file, by architecture: resnet18, resnet34, resnet50 (`classify weights list`).
        name: String,
        /// Download from this address instead (a mirror); the checksum is still checked.
        #[arg(long)]
        url: Option<String>,
        /// Cache folder [default: as for `list`].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download a dataset into the cache folder, verify it and extract it.
    Fetch(FetchArgs),
    /// What training would use: classes with their counts per split, the image sizes, and
    /// the files left out and why (bad files are listed, not fatal, here).
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The dataset, as `classify train --data` takes it [default: cifar10].
    #[arg(long)]
    pub data: Option<String>,
    /// A CSV file of `path,label` rows: the same as --data FILE.csv.
    #[arg(long, conflicts_with = "data")]
    pub labels: Option<PathBuf>,
    /// Fraction of each class that training would hold out for validation (when the data
    /// has no val/ folder).
    #[arg(long, default_value_t = 0.1)]
    pub val_split: f64,
    /// Cache folder for downloaded datasets.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Datasets `classify data fetch` knows.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KnownDataset {
    /// The official CIFAR-10 binary archive (170 MB).
    Cifar10,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The dataset.
    #[arg(value_enum)]
    pub dataset: KnownDataset,
    /// Cache folder [default: $CLASSIFY_HOME, else $XDG_CACHE_HOME/classify, else ~/.cache/classify].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Download from this address instead of the official one (a mirror).
    #[arg(long, env = "CLASSIFY_CIFAR10_URL")]
    pub url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Print a Keras-style table of layers, output shapes and parameters.
    Summary {
        /// The architecture.
        #[arg(long, value_enum, default_value = "seed")]
        model: ModelKind,
        /// Number of classes, 1 to 256.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=256))]
        classes: u16,
        /// Side of the input images [default: 32 for seed and fast, 128 for the ResNets].
        #[arg(long, value_parser = clap::value_parser!(u16).range(32..=1024))]
        image_size: Option<u16>,
    },
}

/// Where the data comes from, shared by `train`, `eval` and `report`.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// `cifar10` (the official set, fetched on first use), a CIFAR-10 binary folder, a
    /// folder of class folders (ROOT/<class>/*.jpg, validation carved out by --val-split;
    /// or ROOT/train/<class>/... with optional ROOT/val/ and ROOT/test/), or a .csv file of
    /// path,label rows.
    #[arg(long)]
    pub data: Option<String>,
    /// A CSV file of `path,label` rows (paths relative to the file; an optional third
    /// column says train, val or test): the same as --data FILE.csv.
    #[arg(long, conflicts_with = "data")]
    pub labels: Option<PathBuf>,
    /// Cache folder for downloaded datasets (see `classify data fetch --help`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// What to do with an image file that cannot be read or decoded, or is over 8192x8192
    /// pixels: `fail` stops with its path and the reason; `skip` leaves it out and lists the
    /// files skipped (image folders only).
    #[arg(long, value_enum, default_value = "fail")]
    pub on_bad_image: BadImagePolicy,
    /// Memory the decoded images of an image folder or CSV may take (e.g. 512MiB, 8GiB;
    /// default: half the machine's memory). A dataset over it stays on disk: each batch's
    /// files are decoded in parallel while the previous batch trains, giving the same
    /// batches as in memory.
    #[arg(long, value_name = "SIZE", env = "CLASSIFY_CACHE_MEM")]
    pub cache_mem: Option<String>,
}

impl DataArgs {
    /// The data spec given: --data, or --labels.
    pub fn spec(&self) -> Option<String> {
        data_spec(&self.data, &self.labels)
    }

    /// The `--cache-mem` budget in bytes (its default when not given).
    ///
    /// # Errors
    /// A value that is not an amount of memory.
    pub fn cache_mem(&self) -> anyhow::Result<u64> {
        match &self.cache_mem {
            None => Ok(classify::data::store::default_cache_mem()),
            Some(text) => classify::data::store::parse_cache_mem(text).map_err(|e| anyhow::anyhow!("--cache-mem: {e}")),
        }
    }
}

/// The data spec of a `--data` and a `--labels` flag (which clap keeps from both being given).
pub fn data_spec(data: &Option<String>, labels: &Option<PathBuf>) -> Option<String> {
    data.clone().or_else(|| labels.as_ref().map(|p| p.display().to_string()))
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The training settings (`--model`, `--epochs`, `--lr`, ...): one flag per row of
    /// `classify::settings::SETTINGS`, whose help and defaults come from that table.
    #[command(flatten)]
    pub settings: Given,
    /// The run folder [default: runs/<model>-NNN, the first free number].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Start from pretrained weights: a PyTorch state dict (.pth/.pt) or a safetensors file
    /// in the architecture's reference layout (torchvision's ResNets; the
    /// efficientnet_lite_pytorch package's EfficientNet-Lites). The classification head is
    /// replaced by one for the data's classes; the input normalisation is the weights'.
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub pretrained: Option<PathBuf>,
    /// Continue the run in --out from its last complete checkpoint, with its saved settings
    /// (--epochs may change the epoch count).
    #[arg(long, requires = "out")]
    pub resume: bool,
    /// Run as a SageMaker training job (also on when SM_TRAINING_ENV is set): hyperparameters
    /// from /opt/ml/input/config/hyperparameters.json (flag names, string values), data from
    /// /opt/ml/input/data/training, the run folder to /opt/ml/model, the reason for a failure
    /// to /opt/ml/output/failure. CLASSIFY_SAGEMAKER_ROOT moves /opt/ml.
    #[arg(long)]
    pub sagemaker: bool,
}

/// Which images `eval` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitName {
    /// The data's test split (CIFAR-10's test_batch.bin, or an image folder's test/).
    Test,
    /// The validation split held out during training.
    Val,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// The split [default: test when the data has one, else val].
    #[arg(long, value_enum)]
    pub split: Option<SplitName>,
    #[command(flatten)]
    pub inference: InferenceArgs,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// How a loaded model predicts, shared by `eval`, `predict` and `serve`.
#[derive(Debug, Args)]
pub struct InferenceArgs {
    /// Test-time augmentation: classify each image in several views and average their class
    /// probabilities (`none`: 1 view, `flip`: 2, `flip-translate`: 6; time grows with the count).
    #[arg(long, value_enum, default_value = "none")]
    pub tta: Tta,
    /// Weight precision: `int8` rounds every convolution and dense weight to 8 bits (one
    /// scale per tensor) after loading, as a quantized deployment would run. On the CPU the
    /// seed model's hidden layer then runs in integers, its input quantized per row (about
    /// twice as fast; AVX-512 VNNI where the CPU has it).
    #[arg(long, value_enum, default_value = "none")]
    pub quantize: Quantize,
    /// Arithmetic of the 3x3 convolutions' products on the CPU: `fp32`, or `bf16` (operands
    /// rounded to bfloat16, sums fp32; AVX512-BF16 dot products where the CPU has them, else
    /// emulated and slower).
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: Precision,
}

impl InferenceArgs {
    /// `classifier` set to predict as these flags ask; refuses a `--precision` its model has
    /// no layers for.
    pub fn apply(
        &self,
        classifier: classify::classifier::Classifier,
    ) -> anyhow::Result<classify::classifier::Classifier> {
        classifier.config().model.check_precision(self.precision).map_err(anyhow::Error::msg)?;
        Ok(classifier.with_quantization(self.quantize).with_products(self.precision).with_tta(self.tta))
    }
}

/// The images `predict` and `embed` read, and where their lines go.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("inputs").required(true).args(["images", "data", "list"])))]
pub struct ManyArgs {
    /// Image files (PNG, JPEG, GIF, BMP, WebP or TIFF, any size; framed as the run was
    /// trained).
    #[arg(conflicts_with_all = ["data", "list"])]
    pub images: Vec<PathBuf>,
    /// Every image under this folder, recursively (the training loader's file rules); a
    /// folder named after one of the run's classes gives its images' label.
    #[arg(long, conflicts_with = "list")]
    pub data: Option<PathBuf>,
    /// The files this list names: a .csv of path[,label] rows, or a text file of one path
    /// a line; relative paths are relative to the list's folder.
    #[arg(long)]
    pub list: Option<PathBuf>,
    /// Write one result a line to this file, JSON Lines (.jsonl) or CSV (.csv; for embed,
    /// .npy), flushed batch by batch; a file that already holds results is continued after
    /// the last complete one [default with --data or --list: JSON Lines on stdout].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Images decoded and evaluated together (with --data, --list or --out).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch_size: u32,
    /// What to do with a file that cannot be read or decoded: `skip` writes a line with its
    /// `error` and goes on, counting them at the end; `fail` stops at it [default: skip
    /// with --data or --list, fail for images named one by one].
    #[arg(long, value_enum)]
    pub on_bad_image: Option<BadImagePolicy>,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub inputs: ManyArgs,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub inputs: ManyArgs,
    /// Classes shown per image (at least 1; at most the run's classes are shown).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub top_k: u16,
    #[command(flatten)]
    pub inference: InferenceArgs,
    /// Print JSON instead of text (images named one by one, without --out).
    #[arg(long, conflicts_with_all = ["data", "list", "out"])]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// The split evaluated for the confusion matrix and mistakes [default: test when the data
    /// has one, else val].
    #[arg(long, value_enum)]
    pub split: Option<SplitName>,
    /// Output folder [default: <run>/report].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The run folder [default: /opt/ml/model, where SageMaker puts the model].
    #[arg(long, default_value = "/opt/ml/model")]
    pub run: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (SageMaker uses 8080).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Most images the model evaluates in one batch.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// Longest a request waits for others to fill a batch, in milliseconds.
    #[arg(long, default_value_t = 2)]
    pub max_wait_ms: u64,
    /// Most connections served at once. Past them, 64 more are answered on the health routes
    /// only (503 elsewhere); past those, new connections are closed at once. Lowered, with a
    /// warning, to fit the open-file limit (`ulimit -n`).
    #[arg(long, env = "CLASSIFY_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's head; also how long an idle keep-alive
    /// connection stays open.
    #[arg(long, env = "CLASSIFY_HEADER_TIMEOUT", default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds a client has to send a request's body, from the end of its head (408 after).
    #[arg(long, env = "CLASSIFY_BODY_TIMEOUT", default_value_t = 60.0)]
    pub body_timeout: f64,
    /// MiB of request bodies held at once, all requests together; a body that would go past
    /// it is refused unread with 503 and `Retry-After: 1`. At least 5 (one largest body).
    #[arg(long, env = "CLASSIFY_BODY_MEMORY", default_value_t = 256)]
    pub body_memory: usize,
    #[command(flatten)]
    pub inference: InferenceArgs,
}

/// Formats `classify export` writes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// ONNX, opset 13: input `images` float32 [batch, 3, 32, 32] with pixel values / 255,
    /// outputs `logits` and `probabilities`; class names in the metadata.
    Onnx,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// The file format.
    #[arg(long, value_enum, default_value = "onnx")]
    pub format: ExportFormat,
    /// The file to write [default: <run>/model.onnx, or <run>/model-int8.onnx].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Weight precision: `int8` stores convolution and dense weights as 8-bit integers with
    /// a `DequantizeLinear` node each (a quarter of the size).
    #[arg(long, value_enum, default_value = "none")]
    pub quantize: Quantize,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The architecture.
    #[arg(long, value_enum, default_value = "seed")]
    pub model: ModelKind,
    /// Images per training step [default: the model's recipe's: 32 for seed, 256 for fast,
    /// 64 for the ResNets; with --from-run, the run's].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Side of the square images [default: the model's: 32 for seed and fast, 128 for the
    /// ResNets; with --from-run, the run's].
    #[arg(long, value_parser = clap::value_parser!(u16).range(32..=1024))]
    pub image_size: Option<u16>,
    /// Time the training steps from this run's last checkpoint (its model, recipe and
    /// optimiser state after many steps: the steady state of a real run) instead of from
    /// fresh weights; --model is then the run's.
    #[arg(long)]
    pub from_run: Option<PathBuf>,
    /// Timed training steps, after 20 warm-up steps.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Images for the inference measurement (batch 256).
    #[arg(long, default_value_t = 10_000)]
    pub infer_images: usize,
    /// Single-image calls for the latency measurement.
    #[arg(long, default_value_t = 1_000)]
    pub latency_calls: usize,
    /// Weight precision for the inference and latency figures (training is always fp32).
    /// `int8` runs the seed model's hidden layer in integers on the CPU, as `eval`,
    /// `predict` and `serve` do with `--quantize int8`.
    #[arg(long, value_enum, default_value = "none")]
    pub quantize: Quantize,
    /// Arithmetic of the 3x3 convolutions' products, training and inference alike (as
    /// `classify train --precision`) [default: fp32; with --from-run, the run's].
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// Use these images instead of synthetic ones (any --data value; nothing is downloaded
    /// unless you name `cifar10`).
    #[arg(long)]
    pub data: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}
