//! Reading pretrained weights into an architecture: PyTorch state dicts (`torch.save`, zip
//! or legacy pickle format) and safetensors files, through burn's own store (`burn-store`),
//! with the architecture's key map and, for a new task, the classification head left out.

use std::path::{Path, PathBuf};

use burn::store::{ApplyError, ApplyResult, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};

/// Weights that do not fit an architecture, or a file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot load {} as {model} weights: {reason}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub model: &'static str,
    pub reason: String,
}

/// What happens to the file's classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Loaded with the rest (the file's classes are the network's: ImageNet's 1,000).
    Keep,
    /// Left out: the network's own freshly initialised head, for the user's classes, stays.
    Replace,
}

/// Loads the weights in `path` into `module` (an architecture named `model`), renaming the
/// file's keys by `key_map` (regex, replacement) first. `head` is the name of the head's
/// module (`fc`), which [`Head::Replace`] leaves out. Tensors the module keeps outside the
/// file (`input_mean`, `input_std`) are never expected; every other tensor must be there,
/// with its shape.
///
/// A `.safetensors` file is read as safetensors (keys and layouts as PyTorch writes them);
/// anything else as a PyTorch file.
///
/// # Errors
/// A file that cannot be read, or that lacks a tensor the module has or gives one another
/// shape: the first such tensor is named, with how many more there are.
pub fn load(
    module: &mut impl ModuleSnapshot,
    path: &Path,
    model: &'static str,
    key_map: &[(&str, &str)],
    head: (&str, Head),
) -> Result<ApplyResult, LoadError> {
    let error = |reason: String| LoadError { path: path.to_path_buf(), model, reason };
    if !path.is_file() {
        return Err(error("no such file".into()));
    }
    // The file's head is renamed out of the module's way, so it lands among the unused.
    let head_key = format!(r"^{}\.", regex_escape(head.0));
    let result = if is_safetensors(path) {
        let mut store = SafetensorsStore::from_file(path)
            .allow_partial(true)
            .validate(false)
            .with_from_adapter(PyTorchToBurnAdapter);
        for &(from, to) in key_map {
            store = store.with_key_remapping(from, to);
        }
        if head.1 == Head::Replace {
            store = store.with_key_remapping(&head_key, "replaced_head.");
        }
        module.load_from(&mut store).map_err(|e| error(e.to_string()))?
    } else {
        let mut store = PytorchStore::from_file(path).allow_partial(true).validate(false);
        for &(from, to) in key_map {
            store = store.with_key_remapping(from, to);
        }
        if head.1 == Head::Replace {
            store = store.with_key_remapping(&head_key, "replaced_head.");
        }
        module.load_from(&mut store).map_err(|e| error(e.to_string()))?
    };
    let head_prefix = format!("{}.", head.0);
    let expected_missing =
        |name: &str| name.starts_with("input_") || (head.1 == Head::Replace && name.starts_with(&head_prefix));
    let missing: Vec<&str> =
        result.missing.iter().map(|(name, _)| name.as_str()).filter(|name| !expected_missing(name)).collect();
    if let Some(first) = result.errors.first() {
        let more = result.errors.len() - 1 + missing.len();
        return Err(error(format!("{}{}", describe(first), and_more(more))));
    }
    if let Some(first) = missing.first() {
        let example = result.unused.iter().find(|u| !u.starts_with("replaced_head.")).map_or(String::new(), |u| {
            format!(" (the file has tensors the model does not, such as {u}: is it another architecture?)")
        });
        return Err(error(format!("it has no tensor {first}{}{example}", and_more(missing.len() - 1))));
    }
    if result.applied.is_empty() {
        return Err(error("no tensor of the file fits the model".into()));
    }
    Ok(result)
}

/// SHA-256 of the file at `path`, hex, read in pieces.
///
/// # Errors
/// The file cannot be read.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn describe(e: &ApplyError) -> String {
    match e {
        ApplyError::ShapeMismatch { path, expected, found } => {
            format!("tensor {path} is {:?} in the file, but the model's is {:?}", found.as_slice(), expected.as_slice())
        }
        other => other.to_string(),
    }
}

fn and_more(n: usize) -> String {
    if n == 0 { String::new() } else { format!(", and {n} more") }
}

fn is_safetensors(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// `name` with the characters regex gives meaning to escaped.
fn regex_escape(name: &str) -> String {
    name.chars().fold(String::new(), |mut out, c| {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}
