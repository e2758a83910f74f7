//! Fetching the official CIFAR-10 archive into the cache folder.
//!
//! The archive is streamed to `<cache>/<file_name>.part` while its MD5 is computed, checked
//! for size and checksum, extracted into a temporary folder inside the cache, marked complete,
//! and only then renamed into place as `<cache>/<folder>/`. A folder without the
//! [`MARKER`] file is never trusted, so an interrupted or corrupt download cannot pass for
//! good data; on failure the `.part` file and the temporary folder are removed.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fs;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::{DataError, LoadOptions};

/// A downloadable dataset archive (a `.tar.gz` holding one top-level folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// Where to download it from.
    pub url: Cow<'static, str>,
    /// Published MD5 of the archive, lowercase hex.
    pub md5: Cow<'static, str>,
    /// Size of the archive in bytes.
    pub size: u64,
    /// File name of the archive; the download is written to `<cache>/<file_name>.part`.
    pub file_name: &'static str,
    /// The top-level folder inside the archive; it is extracted to `<cache>/<folder>/`.
    pub folder: &'static str,
}

/// The official CIFAR-10 binary archive (<https://www.cs.toronto.edu/~kriz/cifar.html>, which
/// publishes the size and MD5).
pub const CIFAR10_BINARY: Archive = Archive {
    url: Cow::Borrowed("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"),
    md5: Cow::Borrowed("c32a1d4ab5d03f1284b67883e8d87530"),
    size: 170_052_171,
    file_name: "cifar-10-binary.tar.gz",
    folder: "cifar-10-batches-bin",
};

/// Environment variable that overrides the cache folder.
pub const HOME_ENV: &str = "CLASSIFY_HOME";
/// Environment variable that overrides the CIFAR-10 archive URL (e.g. a mirror).
pub const URL_ENV: &str = "CLASSIFY_CIFAR10_URL";
/// File written inside an extracted folder once it is complete.
pub const MARKER: &str = ".complete";

/// The cache folder: `$CLASSIFY_HOME` if set, else `$XDG_CACHE_HOME/classify`, else
/// `$HOME/.cache/classify`. Empty variables count as unset.
///
/// # Errors
/// [`DataError::NoCacheDir`] if none of those variables is set.
pub fn cache_dir() -> Result<PathBuf, DataError> {
    cache_dir_from(std::env::var_os(HOME_ENV), std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

fn cache_dir_from(
    classify_home: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, DataError> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(classify_home) {
        return Ok(dir);
    }
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(dir) = set(xdg_cache_home).filter(|d| d.is_absolute()) {
        return Ok(dir.join("classify"));
    }
    if let Some(dir) = set(home) {
        return Ok(dir.join(".cache").join("classify"));
    }
    Err(DataError::NoCacheDir)
}

/// Whether `dir` is an extracted archive that was completed (holds the [`MARKER`]).
pub fn is_complete(dir: &Path) -> bool {
    dir.join(MARKER).is_file()
}

/// The CIFAR-10 binary folder in the cache, downloading it first if needed.
///
/// Cache folder: `opts.cache_dir`, else [`cache_dir`]. URL: `opts.url`, else
/// `$CLASSIFY_CIFAR10_URL`, else the official one.
///
/// # Errors
/// As [`fetch`], or [`DataError::NoCacheDir`].
pub fn ensure_cifar10(opts: &LoadOptions) -> Result<PathBuf, DataError> {
    let cache = match &opts.cache_dir {
        Some(dir) => dir.clone(),
        None => cache_dir()?,
    };
    let mut archive = CIFAR10_BINARY;
    let env_url = std::env::var(URL_ENV).ok().filter(|u| !u.is_empty());
    if let Some(url) = opts.url.clone().or(env_url) {
        archive.url = Cow::Owned(url);
    }
    fetch(&archive, &cache, opts.progress)
}

/// Returns `<cache>/<archive.folder>`, downloading and extracting the archive first unless
/// that folder is already complete.
///
/// `progress` shows a byte-count progress bar on stderr while downloading.
///
/// # Errors
/// [`DataError::Download`] on network or HTTP errors, a truncated body or a wrong size;
/// [`DataError::Checksum`] on an MD5 mismatch; [`DataError::Format`] if the archive cannot be
/// extracted or lacks its folder; [`DataError::Io`] if the cache cannot be written. In every
/// case nothing is left that a later call would take for a complete dataset.
pub fn fetch(archive: &Archive, cache: &Path, progress: bool) -> Result<PathBuf, DataError> {
    let dest = cache.join(archive.folder);
    if is_complete(&dest) {
        tracing::debug!(dir = %dest.display(), "dataset already in cache");
        return Ok(dest);
    }
    fs::create_dir_all(cache).map_err(|e| DataError::io("cannot create cache folder", cache, e))?;
    let part = cache.join(format!("{}.part", archive.file_name));
    tracing::info!(
        url = %archive.url,
        megabytes = archive.size / 1_000_000,
        cache = %cache.display(),
        "downloading dataset"
    );
    let result = download(archive, &part, progress).and_then(|()| install(archive, &part, cache, &dest));
    // The archive is not kept once extracted, nor after a failure.
    let _ = fs::remove_file(&part);
    result?;
    Ok(dest)
}

/// Streams `archive.url` into `part`, checking size and MD5.
fn download(archive: &Archive, part: &Path, progress: bool) -> Result<(), DataError> {
    let url = archive.url.as_ref();
    let fail = |reason: String| DataError::Download { url: url.to_string(), reason };
    let response = crate::http::get(url).map_err(fail)?;
    if let Some(len) = response.body().content_length()
        && len != archive.size
    {
        return Err(fail(format!("the server announced {len} bytes, expected {} (wrong URL?)", archive.size)));
    }
    let mut body = response.into_body().into_reader();

    let bar = if progress {
        indicatif::ProgressBar::new(archive.size).with_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message(archive.file_name);

    let mut file = fs::File::create(part).map_err(|e| DataError::io("cannot create", part, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut received: u64 = 0;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(fail(format!("the connection broke after {received} of {} bytes: {e}", archive.size)));
            }
        };
        received += n as u64;
        if received > archive.size {
            bar.abandon();
            return Err(fail(format!("the server sent more than the expected {} bytes (wrong URL?)", archive.size)));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| DataError::io("cannot write", part, e))?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    if received != archive.size {
        return Err(fail(format!("the download is truncated: received {received} of {} bytes", archive.size)));
    }
    file.sync_all().map_err(|e| DataError::io("cannot write", part, e))?;
    let actual = format!("{:x}", hasher.finalize());
    if !actual.eq_ignore_ascii_case(&archive.md5) {
        return Err(DataError::Checksum { url: url.to_string(), expected: archive.md5.to_lowercase(), actual });
    }
    Ok(())
}

/// Extracts the verified archive at `part` into a temporary folder in `cache`, marks its
/// top-level folder complete, and renames that into `dest`.
fn install(archive: &Archive, part: &Path, cache: &Path, dest: &Path) -> Result<(), DataError> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let tmp = cache.join(format!(".tmp-{}-{nanos:09}", std::process::id()));
    fs::create_dir(&tmp).map_err(|e| DataError::io("cannot create", &tmp, e))?;
    let result = extract_and_place(archive, part, &tmp, dest);
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn extract_and_place(archive: &Archive, part: &Path, tmp: &Path, dest: &Path) -> Result<(), DataError> {
    let file = fs::File::open(part).map_err(|e| DataError::io("cannot read", part, e))?;
    // `unpack` refuses entries that would land outside `tmp` (absolute paths, `..`).
    tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)))
        .unpack(tmp)
        .map_err(|e| DataError::format(part, format!("cannot extract the archive: {e}")))?;
    let extracted = tmp.join(archive.folder);
    if !extracted.is_dir() {
        return Err(DataError::format(
            part,
            format!("the archive has no {}/ folder; is the URL {} right?", archive.folder, archive.url),
        ));
    }
    // Marked before the rename, so the folder never appears in place without its marker.
    let marker = extracted.join(MARKER);
    fs::write(&marker, format!("url = {}\nmd5 = {}\n", archive.url, archive.md5))
        .map_err(|e| DataError::io("cannot write", &marker, e))?;
    if dest.exists() {
        if is_complete(dest) {
            // Another process finished first; keep its copy.
            return Ok(());
        }
        fs::remove_dir_all(dest).map_err(|e| DataError::io("cannot remove incomplete dataset folder", dest, e))?;
    }
    fs::rename(&extracted, dest).map_err(|e| DataError::io("cannot move dataset into", dest, e))?;
    tracing::info!(dir = %dest.display(), "dataset ready");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(s.into())
    }

    #[test]
    fn cache_dir_precedence() {
        assert_eq!(cache_dir_from(os("/c"), os("/x"), os("/h")).unwrap(), PathBuf::from("/c"));
        assert_eq!(cache_dir_from(None, os("/x"), os("/h")).unwrap(), PathBuf::from("/x/classify"));
        assert_eq!(cache_dir_from(os(""), os(""), os("/h")).unwrap(), PathBuf::from("/h/.cache/classify"));
        // A relative XDG_CACHE_HOME is ignored, per the XDG base-directory spec.
        assert_eq!(cache_dir_from(None, os("rel"), os("/h")).unwrap(), PathBuf::from("/h/.cache/classify"));
        assert!(matches!(cache_dir_from(None, None, None), Err(DataError::NoCacheDir)));
    }

    #[test]
    fn official_archive_facts() {
        assert_eq!(CIFAR10_BINARY.size, 170_052_171);
        assert_eq!(CIFAR10_BINARY.md5, "c32a1d4ab5d03f1284b67883e8d87530");
        assert!(CIFAR10_BINARY.url.ends_with(CIFAR10_BINARY.file_name));
    }

    #[test]
    fn complete_folder_is_returned_without_network() {
        let cache = tempfile::tempdir().unwrap();
        let dest = cache.path().join(CIFAR10_BINARY.folder);
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join(MARKER), "").unwrap();
        // An unroutable URL: reaching the network would fail the test.
        let mut archive = CIFAR10_BINARY;
        archive.url = Cow::Borrowed("http://127.0.0.1:1/none.tar.gz");
        assert_eq!(fetch(&archive, cache.path(), false).unwrap(), dest);
    }

    #[test]
    fn connection_refused_is_a_download_error_and_leaves_nothing() {
        let cache = tempfile::tempdir().unwrap();
        let mut archive = CIFAR10_BINARY;
        archive.url = Cow::Borrowed("http://127.0.0.1:1/none.tar.gz");
        let err = fetch(&archive, cache.path(), false).unwrap_err();
        assert!(matches!(err, DataError::Download { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
    }
}
