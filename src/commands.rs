//! What each subcommand does: resolve flags into settings, call the library, print results.
//! Results go to stdout; progress and logs to stderr.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use serde_json::{Value, json};

use classify::classifier::Classifier;
use classify::data::augment::Tta;
use classify::data::{self, BadImagePolicy, Framing, ImageSet, LoadOptions, Splits};
use classify::eval::{self, Evaluation};
use classify::kernels::Precision;
use classify::model::{ModelKind, Network};
use classify::quantize::Quantize;
use classify::run::{RunConfig, RunDir};
use classify::sagemaker_job::{self, Job};
use classify::settings::{OnResume, SettingError};
use classify::train::{self, Progress};

use crate::cli::{
    BenchArgs, Command, DataArgs, DataCommand, EmbedArgs, EvalArgs, ExportArgs, ExportFormat, FetchArgs, InferenceArgs,
    InspectArgs, ManyArgs, ModelCommand, PredictArgs, ReportArgs, ServeArgs, SplitName, TrainArgs, WeightsCommand,
};

/// Runs one parsed command on `device`.
pub fn run(command: Command, device: &Device, device_name: &str) -> Result<()> {
    match command {
        Command::Data(DataCommand::Fetch(args)) => fetch(args),
        Command::Data(DataCommand::Inspect(args)) => inspect(args),
        Command::Model(ModelCommand::Summary { model, classes, image_size }) => {
            let size = image_size.map_or(model.default_image_size(), usize::from);
            model.check_image_size(size).map_err(anyhow::Error::msg)?;
            let net = Network::init(model, usize::from(classes), device);
            println!("{}", net.summary(size));
            Ok(())
        }
        Command::Weights(WeightsCommand::List { dir }) => {
            let cache = dir.map_or_else(|| data::download::cache_dir().ok(), Some);
            print!("{}", classify::model::weights::list_text(cache.as_deref()));
            Ok(())
        }
        Command::Weights(WeightsCommand::Fetch { name, url, dir }) => {
            use classify::model::weights;
            let Some(known) = weights::known(&name) else {
                let names: Vec<&str> = weights::KNOWN.iter().map(|k| k.name).collect();
                bail!("no known weights named {name}: the known ones are {}", names.join(", "));
            };
            let cache = match dir {
                Some(dir) => dir,
                None => data::download::cache_dir()?,
            };
            println!("{}", weights::fetch(known, url.as_deref(), &cache)?.display());
            Ok(())
        }
        Command::Train(args) => train(args, device, device_name),
        Command::Eval(args) => evaluate(args, device),
        Command::Predict(args) => predict(args, device),
        Command::Embed(args) => embed(args, device),
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

/// Classes whose largest has this many times the images of the smallest are called
/// imbalanced by `data inspect`.
const IMBALANCE_RATIO: f64 = 2.0;

fn inspect(args: InspectArgs) -> Result<()> {
    let spec = crate::cli::data_spec(&args.data, &args.labels).unwrap_or_else(|| data::CIFAR10_SPEC.to_string());
    let opts = LoadOptions {
        cache_dir: args.cache_dir.clone(),
        url: None,
        progress: terminal(),
        on_bad_image: BadImagePolicy::Skip,
        side: None,
        cache_mem: None,
    };
    let dataset = data::load(&spec, &opts).with_context(|| format!("cannot load --data {spec}"))?;
    let (sizes, skipped, own_val) = (dataset.sizes.clone(), dataset.skipped.clone(), dataset.val.is_some());
    let splits = data::split(dataset, args.val_split)?;
    let k = splits.classes.len();
    let (train, val) = (splits.train.class_counts(k), splits.val.class_counts(k));
    let test = splits.test.as_ref().map(|t| t.class_counts(k));
    let (most, least) = (train.iter().copied().max().unwrap_or(0), train.iter().copied().min().unwrap_or(0));
    let ratio = most as f64 / least.max(1) as f64;
    let mut warnings = Vec::new();
    if ratio >= IMBALANCE_RATIO {
        warnings.push(format!(
            "the classes are imbalanced: the largest has {ratio:.1}x the training images of the smallest; \
             consider `classify train --class-weights balanced`"
        ));
    }
    let validation = if own_val {
        "the source's val/ split, as given".to_string()
    } else {
        format!("the last {} of each class's images in path order (--val-split)", args.val_split)
    };
    let quantiles = |mut v: Vec<u32>| -> Value {
        v.sort_unstable();
        match (v.first(), v.get(v.len() / 2), v.last()) {
            (Some(min), Some(median), Some(max)) => json!({"min": min, "median": median, "max": max}),
            _ => Value::Null,
        }
    };
    let shorter: Vec<u32> = sizes.iter().map(|&(w, h)| w.min(h)).collect();
    let below_128 = shorter.iter().filter(|&&s| s < 128).count();
    let sizes_json = json!({
        "images": sizes.len(),
        "width": quantiles(sizes.iter().map(|s| s.0).collect()),
        "height": quantiles(sizes.iter().map(|s| s.1).collect()),
        "shorter_side": quantiles(shorter),
        "square": sizes.iter().filter(|(w, h)| w == h).count(),
        "shorter_side_below_128": below_128,
    });
    if args.json {
        let classes: Vec<Value> = splits
            .classes
            .iter()
            .enumerate()
            .map(|(i, name)| {
                json!({"name": name, "train": train[i], "val": val[i], "test": test.as_ref().map(|t| t[i])})
            })
            .collect();
        let value = json!({
            "data": spec,
            "classes": classes,
            "splits": {"train": splits.train.len(), "val": splits.val.len(), "test": splits.test.as_ref().map(|t| t.len())},
            "validation": validation,
            "imbalance_ratio": ratio,
            "image_sizes": if sizes.is_empty() { Value::Null } else { sizes_json },
            "skipped": skipped.iter().map(|s| json!({"path": s.path.display().to_string(), "reason": s.reason})).collect::<Vec<_>>(),
            "warnings": warnings,
        });
        println!("{value}");
        return Ok(());
    }
    println!(
        "{spec}: {} classes, {} train, {} val{} images",
        k,
        splits.train.len(),
        splits.val.len(),
        match &splits.test {
            Some(t) => format!(", {} test", t.len()),
            None => String::new(),
        }
    );
    println!("validation: {validation}");
    println!("\n  {:<24} {:>7} {:>7} {:>7}", "class", "train", "val", "test");
    for (i, name) in splits.classes.iter().enumerate() {
        let t = test.as_ref().map_or("-".to_string(), |t| t[i].to_string());
        println!("  {:<24} {:>7} {:>7} {:>7}", name, train[i], val[i], t);
    }
    if !sizes.is_empty() {
        let show = |key: &str| {
            let q = &sizes_json[key];
            format!("{}/{}/{}", q["min"], q["median"], q["max"])
        };
        println!(
            "\nimage sizes (min/median/max): width {}, height {}, shorter side {}; {} of {} square, {} with a shorter \
             side under 128 px (upscaled at --image-size 128)",
            show("width"),
            show("height"),
            show("shorter_side"),
            sizes_json["square"],
            sizes.len(),
            below_128
        );
    }
    if !skipped.is_empty() {
        println!("\nskipped {} file(s) (training stops on them unless --on-bad-image skip):", skipped.len());
        for s in &skipped {
            println!("  {}: {}", s.path.display(), s.reason);
        }
    }
    for w in &warnings {
        println!("\nwarning: {w}");
    }
    Ok(())
}

/// Loads `spec` and splits it as a run with `val_split` and `framing` trains on it.
fn load_splits(spec: &str, args: &DataArgs, val_split: f64, framing: Framing) -> Result<Splits> {
    let opts = LoadOptions {
        cache_dir: args.cache_dir.clone(),
        url: None,
        progress: terminal(),
        on_bad_image: args.on_bad_image,
        side: Some(framing.resize),
        cache_mem: Some(args.cache_mem()?),
    };
    let started = std::time::Instant::now();
    let dataset = data::load(spec, &opts).with_context(|| format!("cannot load --data {spec}"))?;
    let splits = data::split(dataset, val_split)?.framed(framing);
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
        return train_run(args, device, device_name, Progress::new(terminal()));
    }
    let root = Job::root_from_env();
    let result = Job::load(&root).map_err(anyhow::Error::from).and_then(|job| apply_job(&job, args)).and_then(|args| {
        // Metric lines for the job's metric definitions and tuning objective (README).
        train_run(args, device, device_name, Progress::new(terminal()).with_metric_lines())
    });
    if let Err(e) = &result {
        sagemaker_job::write_failure(&root, &format!("{e:#}"));
    }
    result
}

/// Fills what the command line left open from a SageMaker job: its data channel, its model
/// folder, and its hyperparameters (flags given explicitly win).
fn apply_job(job: &Job, mut args: TrainArgs) -> Result<TrainArgs> {
    if args.data.spec().is_none() {
        args.data.data = Some(job.data_dir()?.display().to_string());
    }
    args.out = args.out.or(Some(job.model_dir()));
    if let Some(policy) = job_enum::<BadImagePolicy>(job, "on-bad-image")? {
        args.data.on_bad_image = policy;
    }
    // Parsed here so that a bad value fails the job naming the hyperparameter.
    job.settings().resolve().map_err(|e| match e {
        SettingError::Invalid { name, value, reason } => {
            sagemaker_job::SageMakerError::Invalid { name, value, reason: Some(reason) }.into()
        }
        other => anyhow::Error::from(other),
    })?;
    args.settings = args.settings.or(job.settings());
    Ok(args)
}

/// A hyperparameter that names one of a flag's values (`"skip"`).
fn job_enum<E: clap::ValueEnum>(job: &Job, name: &str) -> Result<Option<E>> {
    match job.get::<String>(name)? {
        None => Ok(None),
        Some(value) => E::from_str(&value, true)
            .map(Some)
            .map_err(|_| sagemaker_job::SageMakerError::Invalid { name: name.into(), value, reason: None }.into()),
    }
}

fn train_run(args: TrainArgs, device: &Device, device_name: &str, progress: Progress) -> Result<()> {
    let given = &args.settings;
    let out = match &args.out {
        Some(out) => out.clone(),
        None => default_out(given.resolve().map_or(ModelKind::Seed, |s| s.model)),
    };
    let run = RunDir::new(&out);
    let (config, splits) = if args.resume {
        let mut config = run.load_config().context("--resume needs a run folder")?;
        if args.data.spec().is_some() {
            tracing::warn!("--data is ignored with --resume: the run keeps its saved data ({})", config.data);
        }
        let (mut settings, mut replaced) = (config.settings(), false);
        for (setting, value) in given.iter() {
            match setting.on_resume {
                OnResume::Kept => tracing::warn!(
                    "--{} is ignored with --resume: the run keeps its saved settings ({})",
                    setting.name,
                    config.data
                ),
                OnResume::Replaces => {
                    setting.apply(&mut settings, value)?;
                    replaced = true;
                }
            }
        }
        if replaced {
            config.set_settings(&settings);
            run.save_config(&config)?;
        }
        let splits = load_splits(&config.data, &args.data, config.val_split, config.framing)?;
        // Another image count would change every epoch's shuffle and the validation split.
        check_counts_unchanged(
            &config,
            &splits,
            "resume with the same data (and the same --on-bad-image), or start a new run",
        )?;
        (config, splits)
    } else {
        if run.exists() || run.path(classify::run::CHECKPOINT_FILE).exists() {
            bail!("{} already holds a run: pass --resume to continue it, or choose another --out", out.display());
        }
        let mut settings = given.resolve()?;
        settings.for_pretrained(args.pretrained.is_some(), given).map_err(|reason| anyhow::anyhow!(reason))?;
        settings.validate().map_err(|reason| anyhow::anyhow!(reason))?;
        if settings.recipe.finetune == classify::settings::Finetune::Head && args.pretrained.is_none() {
            bail!(
                "--finetune head trains only the classification head of pretrained weights: give --pretrained FILE, \
                 or use --finetune full"
            );
        }
        let pretrained = args.pretrained.as_deref().map(|file| pretrained_file(file, settings.model)).transpose()?;
        let spec = args.data.spec().unwrap_or_else(|| data::CIFAR10_SPEC.to_string());
        let splits = load_splits(&spec, &args.data, settings.val_split, settings.framing())?;
        let mut config = RunConfig::new(
            &settings,
            spec,
            device_name,
            splits.classes.clone(),
            [splits.train.len(), splits.val.len()],
        );
        config.pretrained = pretrained;
        (config, splits)
    };
    // A resumed run's saved settings (config.json may have been edited) get the same checks.
    config.settings().validate().map_err(|reason| anyhow::anyhow!(reason))?;
    tracing::info!("training {} for {} epochs into {}", config.model, config.epochs, out.display());
    let progress = progress.on_epoch(|run, history| {
        // The curves are for people watching; failing to draw them must not stop training.
        if let Err(e) = classify::report::write_curves_from(run.root(), history) {
            tracing::warn!("cannot update the training curves: {e}");
        }
    });
    let history = train::train(&splits, &config, &run, device, args.resume, &progress)?;
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

/// What a run records of `--pretrained FILE`, checked before any data is loaded or any run
/// folder made: that the model takes pretrained weights and the file holds them.
fn pretrained_file(file: &Path, model: ModelKind) -> Result<classify::run::Pretrained> {
    if !model.takes_pretrained() {
        bail!("--model {model} has no pretrained weights: use --model efficientnet-lite0 (or resnet18, 34, 50)");
    }
    // The head is replaced, so any class count checks the rest of the file.
    classify::model::Network::init(model, 2, &Device::flex()).load_pretrained(file)?;
    let sha256 = classify::model::pretrained::sha256_file(file)
        .with_context(|| format!("cannot read --pretrained {}", file.display()))?;
    Ok(classify::run::Pretrained { file: file.display().to_string(), sha256 })
}

/// Fails, with `advice`, unless `splits` (from the run's own `--data`) has the image counts the
/// run trained with: other counts mean other batches and another validation split.
fn check_counts_unchanged(config: &RunConfig, splits: &Splits, advice: &str) -> Result<()> {
    let counts = (splits.train.len(), splits.val.len());
    if counts != (config.train_images, config.val_images) {
        bail!(
            "--data {} now gives {} training and {} validation images, but the run trained with {} and {}: {advice}",
            config.data,
            counts.0,
            counts.1,
            config.train_images,
            config.val_images
        );
    }
    Ok(())
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
    let spec = data.spec().unwrap_or_else(|| config.data.clone());
    let splits = load_splits(&spec, data, config.val_split, config.framing)?;
    if splits.classes != config.classes {
        bail!(
            "--data {spec} has classes [{}] but the run was trained on [{}]",
            splits.classes.join(", "),
            config.classes.join(", ")
        );
    }
    let split = split.unwrap_or(if splits.test.is_some() { SplitName::Test } else { SplitName::Val });
    // The run's own validation split exists only on the data it trained on, unchanged: other
    // image counts shift it onto images the model trained on (resume refuses the same).
    if split == SplitName::Val && spec == config.data {
        check_counts_unchanged(
            config,
            &splits,
            "its validation split would hold other images, some of them trained on; evaluate on the \
             data as it was (the same files and --on-bad-image), or on a test split",
        )?;
    }
    let (name, set) = match split {
        SplitName::Val => ("val", splits.val),
        SplitName::Test => match splits.test {
            Some(test) => ("test", test),
            None => bail!("--data {spec} has no test split (no test_batch.bin or test/ folder): use --split val"),
        },
    };
    let set = set.into_memory().with_context(|| format!("cannot read the {name} split of --data {spec}"))?;
    if set.is_empty() {
        bail!("the {name} split of --data {spec} is empty");
    }
    Ok((classifier, name, set))
}

fn evaluate(args: EvalArgs, device: &Device) -> Result<()> {
    let (classifier, name, set) = load_eval_set(&args.run, &args.data, args.split, device)?;
    let classifier = args.inference.apply(classifier)?;
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
        value["precision"] = json!(args.inference.precision.name());
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
    let mut precision = match inference.quantize {
        Quantize::None => String::new(),
        q => format!(", {} weights", value_name(q)),
    };
    if inference.precision == Precision::Bf16 {
        precision.push_str(", bf16 products");
    }
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
    let classifier = args.inference.apply(Classifier::load(&args.run, device)?)?;
    let many = &args.inputs;
    if many.data.is_some() || many.list.is_some() || many.out.is_some() {
        return predict_many(many, classify::predict::Task::Predict, usize::from(args.top_k), &classifier);
    }
    let framing = classifier.config().framing;
    let bytes_each = framing.input().image_bytes();
    let mut images = vec![0u8; args.inputs.images.len() * bytes_each];
    for (path, slot) in args.inputs.images.iter().zip(images.chunks_mut(bytes_each)) {
        let bytes =
            data::folder::read_image_file(path).map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
        data::folder::decode_framed(&bytes, slot, framing)
            .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
    }
    let classes = classifier.classes();
    let k = usize::from(args.top_k).clamp(1, classes.len());
    let results: Vec<_> = args
        .inputs
        .images
        .iter()
        .zip(classifier.probabilities(&images))
        .map(|(path, probs)| (path, classify::scores::top_k(&probs, k)))
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

fn embed(args: EmbedArgs, device: &Device) -> Result<()> {
    let classifier = Classifier::load(&args.run, device)?;
    predict_many(&args.inputs, classify::predict::Task::Embed, 1, &classifier)
}

/// `predict --data`, `--list` or `--out`, and `embed`: one result per image, streamed.
fn predict_many(args: &ManyArgs, task: classify::predict::Task, top_k: usize, classifier: &Classifier) -> Result<()> {
    use classify::predict::{self, BatchOptions, Format, Inputs, Task};
    let inputs = match (&args.data, &args.list) {
        (Some(dir), _) => Inputs::Folder(dir.clone()),
        (None, Some(list)) => Inputs::List(list.clone()),
        (None, None) => Inputs::Files(args.images.clone()),
    };
    let policy = args.on_bad_image.unwrap_or(match inputs {
        Inputs::Files(_) => BadImagePolicy::Fail,
        _ => BadImagePolicy::Skip,
    });
    let format = match &args.out {
        Some(out) => Format::for_path(out)?,
        None => Format::JsonLines,
    };
    if format == Format::Npy && task == Task::Predict {
        bail!(
            "--out {}: .npy holds embeddings (classify embed); name it .jsonl or .csv",
            args.out.as_deref().unwrap_or(Path::new("")).display()
        );
    }
    if format == Format::Csv && task == Task::Embed {
        bail!(
            "--out {}: embeddings are written as .jsonl or .npy",
            args.out.as_deref().unwrap_or(Path::new("")).display()
        );
    }
    let items = predict::items(&inputs, classifier.classes())?;
    let k = top_k.clamp(1, classifier.classes().len());
    let (mut sink, done): (Box<dyn std::io::Write>, usize) = match &args.out {
        Some(out) => {
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("--out {}: cannot create its folder", out.display()))?;
            }
            let (file, done) = match format {
                Format::Npy => predict::open_npy(out, &items, classifier.embedding_width())?,
                _ => predict::open_resumable(out, format, &items, k)?,
            };
            (Box::new(std::io::BufWriter::new(file)), done)
        }
        None => (Box::new(std::io::stdout().lock()), 0),
    };
    if done > 0 {
        eprintln!(
            "{} already holds {done} of {} results: continuing after them",
            args.out.as_deref().unwrap_or(Path::new("-")).display(),
            items.len()
        );
    }
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(items.len() as u64).with_position(done as u64).with_style(
            indicatif::ProgressStyle::with_template("{pos}/{len} images [{bar:30}] {per_sec} ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let options = BatchOptions { task, batch: args.batch_size as usize, top_k: k, policy };
    let start = std::time::Instant::now();
    let result = predict::predict_into(classifier, &items[done..], &mut *sink, format, options, &bar);
    bar.finish_and_clear();
    let summary = result?;
    let seconds = start.elapsed().as_secs_f64();
    let mut line = format!(
        "{} {} images in {seconds:.1} s ({:.1} images/s)",
        if task == Task::Embed { "embedded" } else { "predicted" },
        summary.written,
        summary.written as f64 / seconds.max(1e-9)
    );
    if summary.failed > 0 {
        let where_ = if format == Format::Npy { "their rows are NaN" } else { "their lines hold an \"error\"" };
        line += &format!("; {} could not be read ({where_})", summary.failed);
    }
    if summary.labelled > 0 {
        line += &format!(
            "; {:.2}% of the {} labelled ones right",
            100.0 * summary.correct as f64 / summary.labelled as f64,
            summary.labelled
        );
    }
    if let Some(out) = &args.out {
        line += &format!("; results in {}", out.display());
        if format == Format::Npy {
            line += &format!(" (images in {})", predict::npy_index(out).display());
        }
    }
    eprintln!("{line}");
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
    let seconds = |flag: &str, value: f64| {
        std::time::Duration::try_from_secs_f64(value)
            .map_err(|_| anyhow::anyhow!("{flag} {value}: give a number of seconds over 0"))
    };
    let limits = classify::serve::Limits {
        max_connections: args.max_connections,
        header_timeout: seconds("--header-timeout", args.header_timeout)?,
        body_timeout: seconds("--body-timeout", args.body_timeout)?,
        body_memory: args.body_memory.saturating_mul(1024 * 1024),
    };
    limits.validate().map_err(anyhow::Error::msg)?;
    let classifier = args.inference.apply(Classifier::load(&args.run, device)?)?;
    let options = classify::serve::ServeOptions {
        host: args.host,
        port: args.port,
        max_batch: args.max_batch.max(1),
        max_wait: std::time::Duration::from_millis(args.max_wait_ms),
        limits,
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
    let bytes =
        classify::onnx::export(classifier.model(), config.model.name(), &config.classes, config.framing, args.quantize);
    classify::run::write_file_atomic(&out, &bytes).map_err(|e| {
        anyhow::anyhow!("cannot write --out {}: {e}; free disk space, or choose a writable --out", out.display())
    })?;
    let precision = if args.quantize == Quantize::Int8 { "int8" } else { "fp32" };
    println!("{} ({} bytes, {} model, {precision} weights)", out.display(), bytes.len(), config.model);
    Ok(())
}

fn bench(args: BenchArgs, device: &Device) -> Result<()> {
    let start = match &args.from_run {
        Some(run) => Some(
            classify::bench::Checkpointed::load(run, device)
                .with_context(|| format!("--from-run {}", run.display()))?,
        ),
        None => None,
    };
    let batch_size = match (&start, args.batch_size) {
        (_, Some(batch_size)) => batch_size,
        (Some(start), None) => start.config.batch_size,
        (None, None) => classify::bench::BenchSettings::recipe_batch_size(args.model),
    };
    let model = start.as_ref().map_or(args.model, |s| s.config.model);
    let image_size = match (&start, args.image_size) {
        (_, Some(size)) => usize::from(size),
        (Some(start), None) => start.config.framing.size,
        (None, None) => model.default_image_size(),
    };
    model.check_image_size(image_size).map_err(anyhow::Error::msg)?;
    let precision = args.precision.or(start.as_ref().map(|s| s.config.recipe.precision)).unwrap_or_default();
    model.check_precision(precision).map_err(anyhow::Error::msg)?;
    let images = match &args.data {
        Some(spec) => {
            let opts = LoadOptions { progress: terminal(), side: Some(image_size), ..LoadOptions::default() };
            let train = data::load(spec, &opts).with_context(|| format!("cannot load --data {spec}"))?.train;
            Some(train.into_memory()?)
        }
        None => None,
    };
    let settings = classify::bench::BenchSettings {
        model,
        image_size,
        batch_size: batch_size.max(1),
        steps: args.steps.max(1),
        infer_images: args.infer_images.max(1),
        latency_calls: args.latency_calls.max(1),
        quantize: args.quantize,
        precision,
    };
    let result = classify::bench::run(&settings, images.as_ref(), start, device);
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!("{result}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    use crate::cli::Cli;

    fn train_args(flags: &[&str]) -> TrainArgs {
        let argv = ["classify", "train"].iter().chain(flags);
        match Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{flags:?}: {e}")).command {
            Command::Train(args) => args,
            other => panic!("not train: {other:?}"),
        }
    }

    /// A SageMaker job root whose hyperparameters are `json`, with an empty data channel.
    fn job(json: &str) -> (tempfile::TempDir, Job) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("input/config")).unwrap();
        std::fs::create_dir_all(dir.path().join("input/data/training")).unwrap();
        std::fs::write(dir.path().join("input/config/hyperparameters.json"), json).unwrap();
        let job = Job::load(dir.path()).unwrap_or_else(|e| panic!("{json}: {e}"));
        (dir, job)
    }

    /// Every flag of `classify train` that says how to train (all but where things are and
    /// how the process runs: --cache-mem changes memory, not batches; --pretrained names a
    /// file, which a job would take from a channel) is a SageMaker hyperparameter of the same
    /// name and effect.
    #[test]
    fn every_train_flag_is_a_sagemaker_hyperparameter_with_the_same_effect() {
        let not_hyperparameters = [
            "data",
            "labels",
            "cache-dir",
            "cache-mem",
            "pretrained",
            "out",
            "resume",
            "sagemaker",
            "device",
            "threads",
            "help",
        ];
        let cli = Cli::command();
        let train = cli.find_subcommand("train").unwrap();
        let mut checked = 0;
        for arg in train.get_arguments() {
            let Some(flag) = arg.get_long() else { continue };
            if not_hyperparameters.contains(&flag) {
                continue;
            }
            let value = classify::settings::Setting::named(flag).map_or("skip", |s| s.example);
            let (_dir, job) = job(&format!(r#"{{"{flag}": "{value}"}}"#));
            let from_job = apply_job(&job, train_args(&[])).unwrap_or_else(|e| panic!("{flag}: {e:#}"));
            let from_flag = train_args(&[&format!("--{flag}"), value]);
            assert_eq!(from_job.settings.resolve(), from_flag.settings.resolve(), "--{flag} {value}");
            assert_eq!(from_job.data.on_bad_image, from_flag.data.on_bad_image, "--{flag} {value}");
            checked += 1;
        }
        assert_eq!(checked, classify::settings::SETTINGS.len() + 1, "every setting and --on-bad-image");
    }

    #[test]
    fn flags_given_on_the_command_line_win_over_the_job() {
        let (_dir, job) = job(r#"{"epochs": "9", "seed": "5", "sagemaker_program": "x"}"#);
        let args = apply_job(&job, train_args(&["--epochs", "3"])).unwrap();
        let settings = args.settings.resolve().unwrap();
        assert_eq!((settings.epochs, settings.seed), (3, 5));
    }

    #[test]
    fn a_bad_hyperparameter_value_names_it() {
        let (_dir, job) = job(r#"{"lookahead": "maybe"}"#);
        let err = apply_job(&job, train_args(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("hyperparameter lookahead = \"maybe\""), "{err:#}");
    }
}
