//! What each subcommand does: resolve flags into settings, call the library, print results.
//! Results go to stdout; progress and logs to stderr.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use serde_json::json;

use classify::classifier::Classifier;
use classify::data::augment::Tta;
use classify::data::{self, BadImagePolicy, IMAGE_BYTES, ImageSet, LoadOptions, Splits};
use classify::eval::{self, Evaluation};
use classify::model::{ModelKind, Network};
use classify::quantize::Quantize;
use classify::run::{AdamSettings, FORMAT_VERSION, RunConfig, RunDir};
use classify::sagemaker::{self, Job};
use classify::train::recipe::{OptimizerKind, Recipe, RecipeName};
use classify::train::{self, Progress};

use crate::cli::{
    BenchArgs, Command, DataArgs, DataCommand, EvalArgs, ExportArgs, ExportFormat, FetchArgs, InferenceArgs,
    ModelCommand, PredictArgs, ReportArgs, ServeArgs, SplitName, TrainArgs,
};

/// Runs one parsed command on `device`.
pub fn run(command: Command, device: &Device, device_name: &str) -> Result<()> {
    match command {
        Command::Data(DataCommand::Fetch(args)) => fetch(args),
        Command::Model(ModelCommand::Summary { model, classes }) => {
            let net = Network::init(model, classes, device);
            println!("{}", net.summary());
            Ok(())
        }
        Command::Train(args) => train(args, device, device_name),
        Command::Eval(args) => evaluate(args, device),
        Command::Predict(args) => predict(args, device),
        Command::Report(args) => report(args, device),
        Command::Serve(args) => serve(args, device),
        Command::Bench(args) => bench(args, device),
        Command::Export(args) => export(args, device),
    }
}

fn terminal() -> bool {
    std::io::stderr().is_terminal()
}

fn fetch(args: FetchArgs) -> Result<()> {
    let opts = LoadOptions { cache_dir: args.dir, url: args.url, progress: terminal(), ..LoadOptions::default() };
    let dir = data::download::ensure_cifar10(&opts)?;
    println!("{}", dir.display());
    Ok(())
}

fn load_splits(spec: &str, args: &DataArgs, val_split: f64) -> Result<Splits> {
    let opts = LoadOptions {
        cache_dir: args.cache_dir.clone(),
        url: None,
        progress: terminal(),
        on_bad_image: args.on_bad_image,
    };
    let started = std::time::Instant::now();
    let dataset = data::load(spec, &opts).with_context(|| format!("cannot load --data {spec}"))?;
    let splits = data::split(dataset, val_split)?;
    tracing::info!(
        "loaded {spec}: {} train, {} val, {} test images, {} classes in {:.1}s",
        splits.train.len(),
        splits.val.len(),
        splits.test.as_ref().map_or(0, |t| t.len()),
        splits.classes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(splits)
}

/// `runs/<model>-NNN` with the first number not yet taken.
fn default_out(model: ModelKind) -> PathBuf {
    (1..)
        .map(|i| PathBuf::from(format!("runs/{model}-{i:03}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| PathBuf::from(format!("runs/{model}")))
}

fn train(args: TrainArgs, device: &Device, device_name: &str) -> Result<()> {
    train::stop_on_sigterm();
    if !Job::detected(args.sagemaker) {
        return train_run(args, device, device_name);
    }
    let root = Job::root_from_env();
    let result = Job::load(&root)
        .map_err(anyhow::Error::from)
        .and_then(|job| apply_job(&job, args))
        .and_then(|args| train_run(args, device, device_name));
    if let Err(e) = &result {
        sagemaker::write_failure(&root, &format!("{e:#}"));
    }
    result
}

/// Fills what the command line left open from a SageMaker job: its data channel, its model
/// folder, and its hyperparameters (flags given explicitly win).
fn apply_job(job: &Job, mut args: TrainArgs) -> Result<TrainArgs> {
    args.data.data = args.data.data.or(Some(job.data_dir()?.display().to_string()));
    args.out = args.out.or(Some(job.model_dir()));
    args.epochs = args.epochs.or(job.get("epochs")?);
    args.batch_size = args.batch_size.or(job.get("batch-size")?);
    args.lr = args.lr.or(job.get("lr")?);
    args.seed = args.seed.or(job.get("seed")?);
    args.val_split = args.val_split.or(job.get("val-split")?);
    if let Some(policy) = job_enum::<BadImagePolicy>(job, "on-bad-image")? {
        args.data.on_bad_image = policy;
    }
    args.model = args.model.or(job_enum(job, "model")?);
    args.recipe = args.recipe.or(job_enum(job, "recipe")?);
    args.optimizer = args.optimizer.or(job_enum(job, "optimizer")?);
    args.schedule = args.schedule.or(job_enum(job, "schedule")?);
    args.augment = args.augment.or(job_enum(job, "augment")?);
    args.momentum = args.momentum.or(job.get("momentum")?);
    args.weight_decay = args.weight_decay.or(job.get("weight-decay")?);
    args.warmup_epochs = args.warmup_epochs.or(job.get("warmup-epochs")?);
    args.lr_start = args.lr_start.or(job.get("lr-start")?);
    args.lr_end = args.lr_end.or(job.get("lr-end")?);
    args.norm_bias_lr_scale = args.norm_bias_lr_scale.or(job.get("norm-bias-lr-scale")?);
    args.freeze_norm_scale = args.freeze_norm_scale.or(job.get("freeze-norm-scale")?);
    args.lookahead = args.lookahead.or(job.get("lookahead")?);
    args.label_smoothing = args.label_smoothing.or(job.get("label-smoothing")?);
    args.ema = args.ema.or(job.get("ema")?);
    args.patience = args.patience.or(job.get("patience")?);
    args.crop_padding = args.crop_padding.or(job.get("crop-padding")?);
    Ok(args)
}

/// A hyperparameter that names one of a flag's values (`"sgd"`, `"flip-crop"`).
fn job_enum<E: clap::ValueEnum>(job: &Job, name: &str) -> Result<Option<E>> {
    match job.get::<String>(name)? {
        None => Ok(None),
        Some(value) => E::from_str(&value, true)
            .map(Some)
            .map_err(|_| sagemaker::SageMakerError::Invalid { name: name.into(), value }.into()),
    }
}

fn train_run(args: TrainArgs, device: &Device, device_name: &str) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| default_out(args.model.unwrap_or(ModelKind::Seed)));
    let run = RunDir::new(&out);
    let (config, splits) = if args.resume {
        let mut config = run.load_config().context("--resume needs a run folder")?;
        warn_ignored(&args, &config);
        if let Some(epochs) = args.epochs {
            config.epochs = epochs;
            run.save_config(&config)?;
        }
        let splits = load_splits(&config.data, &args.data, config.val_split)?;
        // Another image count would change every epoch's shuffle and the validation split.
        if (splits.train.len(), splits.val.len()) != (config.train_images, config.val_images) {
            bail!(
                "--data {} now gives {} training and {} validation images, but the run in {} \
                 started with {} and {}: resume with the same data (and the same --on-bad-image), \
                 or start a new run",
                config.data,
                splits.train.len(),
                splits.val.len(),
                out.display(),
                config.train_images,
                config.val_images
            );
        }
        (config, splits)
    } else {
        if run.exists() || run.path(classify::run::CHECKPOINT_FILE).exists() {
            bail!("{} already holds a run: pass --resume to continue it, or choose another --out", out.display());
        }
        let spec = args.data.data.clone().unwrap_or_else(|| data::CIFAR10_SPEC.to_string());
        let val_split = args.val_split.unwrap_or(0.1);
        let splits = load_splits(&spec, &args.data, val_split)?;
        let model = args.model.unwrap_or(ModelKind::Seed);
        let defaults = args.recipe.unwrap_or_else(|| RecipeName::default_for(model)).defaults(model);
        let config = RunConfig {
            format_version: FORMAT_VERSION,
            classify_version: env!("CARGO_PKG_VERSION").to_string(),
            model,
            model_revision: classify::model::MODEL_REVISION,
            data: spec,
            val_split,
            epochs: args.epochs.unwrap_or(defaults.epochs),
            batch_size: args.batch_size.unwrap_or(defaults.batch_size),
            learning_rate: args.lr.unwrap_or(defaults.learning_rate),
            seed: args.seed.unwrap_or(42),
            optimizer: AdamSettings::default(),
            recipe: recipe_from(&args, defaults.recipe),
            device: device_name.to_string(),
            classes: splits.classes.clone(),
            train_images: splits.train.len(),
            val_images: splits.val.len(),
        };
        (config, splits)
    };
    if config.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(config.learning_rate > 0.0 && config.learning_rate.is_finite()) {
        bail!("--lr must be a positive number, got {}", config.learning_rate);
    }
    tracing::info!("training {} for {} epochs into {}", config.model, config.epochs, out.display());
    let history = train::train(&splits, &config, &run, device, args.resume, &Progress::new(terminal()))?;
    match history.last() {
        Some(last) => println!(
            "{}: {} epochs, val accuracy {:.4}, train accuracy {:.4}",
            out.display(),
            last.epoch,
            last.val_acc,
            last.train_acc
        ),
        None => println!("{}: no epochs to run", out.display()),
    }
    Ok(())
}

/// The recipe of a new run: `defaults` with the flags given on the command line.
fn recipe_from(args: &TrainArgs, defaults: Recipe) -> Recipe {
    Recipe {
        optimizer: args.optimizer.unwrap_or(defaults.optimizer),
        momentum: args.momentum.unwrap_or(defaults.momentum),
        weight_decay: args.weight_decay.unwrap_or(defaults.weight_decay),
        schedule: args.schedule.unwrap_or(defaults.schedule),
        warmup_epochs: args.warmup_epochs.unwrap_or(defaults.warmup_epochs),
        lr_start: args.lr_start.unwrap_or(defaults.lr_start),
        lr_end: args.lr_end.unwrap_or(defaults.lr_end),
        // A recipe's SGD-only setting does not follow `--optimizer adam`.
        norm_bias_lr_scale: args.norm_bias_lr_scale.unwrap_or(match args.optimizer {
            Some(OptimizerKind::Adam) => 1.0,
            _ => defaults.norm_bias_lr_scale,
        }),
        freeze_norm_scale: args.freeze_norm_scale.unwrap_or(defaults.freeze_norm_scale),
        // Asking for a moving average (`--ema D`) replaces a recipe's lookahead.
        lookahead: args.lookahead.unwrap_or(defaults.lookahead && args.ema.is_none_or(|decay| decay == 0.0)),
        label_smoothing: args.label_smoothing.unwrap_or(defaults.label_smoothing),
        augment: args.augment.unwrap_or(defaults.augment),
        crop_padding: args.crop_padding.unwrap_or(defaults.crop_padding),
        // `--ema 0` turns a recipe's average off.
        ema: match args.ema {
            Some(decay) if decay == 0.0 => None,
            Some(decay) => Some(decay),
            None => defaults.ema,
        },
        patience: args.patience.or(defaults.patience),
    }
}

/// Says which flags a resumed run does not take from the command line.
fn warn_ignored(args: &TrainArgs, config: &RunConfig) {
    let given = [
        ("--data", args.data.data.is_some()),
        ("--model", args.model.is_some()),
        ("--batch-size", args.batch_size.is_some()),
        ("--lr", args.lr.is_some()),
        ("--seed", args.seed.is_some()),
        ("--val-split", args.val_split.is_some()),
        ("--recipe", args.recipe.is_some()),
        ("--optimizer", args.optimizer.is_some()),
        ("--momentum", args.momentum.is_some()),
        ("--weight-decay", args.weight_decay.is_some()),
        ("--schedule", args.schedule.is_some()),
        ("--warmup-epochs", args.warmup_epochs.is_some()),
        ("--lr-start", args.lr_start.is_some()),
        ("--lr-end", args.lr_end.is_some()),
        ("--norm-bias-lr-scale", args.norm_bias_lr_scale.is_some()),
        ("--freeze-norm-scale", args.freeze_norm_scale.is_some()),
        ("--lookahead", args.lookahead.is_some()),
        ("--label-smoothing", args.label_smoothing.is_some()),
        ("--augment", args.augment.is_some()),
        ("--crop-padding", args.crop_padding.is_some()),
        ("--ema", args.ema.is_some()),
        ("--patience", args.patience.is_some()),
    ];
    for (flag, _) in given.iter().filter(|(_, set)| *set) {
        tracing::warn!("{flag} is ignored with --resume: the run keeps its saved settings ({})", config.data);
    }
}

/// Loads the run and the images of the split that `eval` and `report` measure.
fn load_eval_set(
    run: &Path,
    data: &DataArgs,
    split: Option<SplitName>,
    device: &Device,
) -> Result<(Classifier, &'static str, ImageSet)> {
    let classifier = Classifier::load(run, device)?;
    let config = classifier.config();
    let spec = data.data.clone().unwrap_or_else(|| config.data.clone());
    let splits = load_splits(&spec, data, config.val_split)?;
    if splits.classes != config.classes {
        bail!(
            "--data {spec} has classes [{}] but the run was trained on [{}]",
            splits.classes.join(", "),
            config.classes.join(", ")
        );
    }
    let split = split.unwrap_or(if splits.test.is_some() { SplitName::Test } else { SplitName::Val });
    let (name, set) = match split {
        SplitName::Val => ("val", splits.val),
        SplitName::Test => match splits.test {
            Some(test) => ("test", test),
            None => bail!("--data {spec} has no test split (no test_batch.bin or test/ folder): use --split val"),
        },
    };
    if set.is_empty() {
        bail!("the {name} split of --data {spec} is empty");
    }
    Ok((classifier, name, set))
}

fn evaluate(args: EvalArgs, device: &Device) -> Result<()> {
    let (classifier, name, set) = load_eval_set(&args.run, &args.data, args.split, device)?;
    let classifier = args.inference.apply(classifier);
    let config = classifier.config();
    let predictions = classifier.predict(&set.images);
    let evaluation = eval::evaluate(&config.classes, &set.labels, &predictions);
    if args.json {
        let mut value = serde_json::to_value(&evaluation)?;
        value["split"] = json!(name);
        value["run"] = json!(args.run.display().to_string());
        value["classes"] = json!(config.classes);
        value["tta"] = json!(value_name(args.inference.tta));
        value["quantize"] = json!(value_name(args.inference.quantize));
        println!("{value}");
    } else {
        print_evaluation(&args.run, name, &args.inference, &evaluation, &config.classes);
    }
    Ok(())
}

/// A flag's value as it is typed on the command line.
fn value_name(value: impl clap::ValueEnum) -> String {
    value.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string())
}

fn print_evaluation(run: &Path, split: &str, inference: &InferenceArgs, e: &Evaluation, classes: &[String]) {
    let tta = match inference.tta {
        Tta::None => String::new(),
        tta => format!(", TTA {} ({} views)", value_name(tta), tta.views().len()),
    };
    let precision = match inference.quantize {
        Quantize::None => String::new(),
        q => format!(", {} weights", value_name(q)),
    };
    println!("run {}, {split} split: {} images{tta}{precision}", run.display(), e.n);
    println!("accuracy {:.4}", e.accuracy);
    println!("\nper-class accuracy:");
    for c in &e.per_class {
        println!("  {:<12} {:.4}  ({}/{})", c.class, c.accuracy, c.correct, c.n);
    }
    let short: Vec<String> = classes.iter().map(|c| c.chars().take(6).collect()).collect();
    println!("\nconfusion matrix (rows: true class, columns: predicted):");
    print!("{:>12}", "");
    for s in &short {
        print!(" {s:>6}");
    }
    println!();
    for (name, row) in classes.iter().zip(&e.confusion) {
        print!("{:>12}", name.chars().take(12).collect::<String>());
        for count in row {
            print!(" {count:>6}");
        }
        println!();
    }
    println!("\nmost confused pairs (true -> predicted):");
    for p in e.most_confused.iter().take(5) {
        println!("  {:<12} -> {:<12} {}", p.truth, p.predicted, p.count);
    }
}

fn predict(args: PredictArgs, device: &Device) -> Result<()> {
    let classifier = args.inference.apply(Classifier::load(&args.run, device)?);
    let mut images = vec![0u8; args.images.len() * IMAGE_BYTES];
    for (path, slot) in args.images.iter().zip(images.chunks_mut(IMAGE_BYTES)) {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        data::folder::decode_into(&bytes, slot).map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
    }
    let classes = classifier.classes();
    let k = args.top_k.clamp(1, classes.len());
    let results: Vec<_> = args
        .images
        .iter()
        .zip(classifier.probabilities(&images))
        .map(|(path, probs)| (path, eval::top_k(&probs, k)))
        .collect();
    if args.json {
        let value: Vec<_> = results
            .iter()
            .map(|(path, top)| {
                json!({
                    "image": path.display().to_string(),
                    "predictions": top.iter().map(|&(i, p)| json!({"class": classes[i], "probability": p})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(value));
    } else {
        for (path, top) in results {
            println!("{}", path.display());
            for (i, p) in top {
                println!("  {:<12} {:.4}", classes[i], p);
            }
        }
    }
    Ok(())
}

fn report(args: ReportArgs, device: &Device) -> Result<()> {
    let (classifier, name, set) = load_eval_set(&args.run, &args.data, args.split, device)?;
    let out = args.out.unwrap_or_else(|| args.run.join("report"));
    let files = classify::report::write_report(&classifier, &RunDir::new(&args.run), &set, name, &out)?;
    for file in files {
        println!("{}", file.display());
    }
    Ok(())
}

fn serve(args: ServeArgs, device: &Device) -> Result<()> {
    let classifier = args.inference.apply(Classifier::load(&args.run, device)?);
    let options = classify::serve::ServeOptions {
        host: args.host,
        port: args.port,
        max_batch: args.max_batch.max(1),
        max_wait: std::time::Duration::from_millis(args.max_wait_ms),
    };
    classify::serve::serve(classifier, options)?;
    Ok(())
}

fn export(args: ExportArgs, device: &Device) -> Result<()> {
    let classifier = Classifier::load(&args.run, device)?;
    let config = classifier.config();
    let out = args.out.unwrap_or_else(|| {
        args.run.join(match (args.format, args.quantize) {
            (ExportFormat::Onnx, Quantize::None) => "model.onnx",
            (ExportFormat::Onnx, Quantize::Int8) => "model-int8.onnx",
        })
    });
    let bytes = classify::onnx::export(classifier.model(), config.model.name(), &config.classes, args.quantize);
    classify::run::write_atomic(&out, &bytes).with_context(|| format!("cannot write --out {}", out.display()))?;
    let precision = if args.quantize == Quantize::Int8 { "int8" } else { "fp32" };
    println!("{} ({} bytes, {} model, {precision} weights)", out.display(), bytes.len(), config.model);
    Ok(())
}

fn bench(args: BenchArgs, device: &Device) -> Result<()> {
    let images = match &args.data {
        Some(spec) => {
            let opts = LoadOptions { progress: terminal(), ..LoadOptions::default() };
            Some(data::load(spec, &opts).with_context(|| format!("cannot load --data {spec}"))?.train)
        }
        None => None,
    };
    let settings = classify::bench::BenchSettings {
        model: args.model,
        batch_size: args.batch_size.max(1),
        steps: args.steps.max(1),
        infer_images: args.infer_images.max(1),
        latency_calls: args.latency_calls.max(1),
        quantize: args.quantize,
    };
    let result = classify::bench::run(&settings, images.as_ref(), device);
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!("{result}");
    }
    Ok(())
}
