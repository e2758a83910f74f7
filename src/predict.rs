//! Predicting many images: every image under a folder or named in a list, decoded a batch
//! ahead of the model on another thread, one result line per image written (and flushed) as
//! each batch finishes, as JSON Lines or CSV; an output that already holds lines is continued
//! after its last complete one.
//!
//! Memory stays bounded whatever the count: two batches of decoded images are in flight at
//! most (each [`BatchOptions::batch`] images at the model's input size), and the file list
//! (a path each) is all that grows with the count.

use std::fs;
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rayon::prelude::*;

use crate::classifier::Classifier;
use crate::data::BadImagePolicy;
use crate::data::folder;
use crate::scores::top_k;

/// Where the images come from.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// Every image file under a folder, recursively, in path order (the training loader's
    /// rules: image extensions only, hidden files and desktop clutter left out).
    Folder(PathBuf),
    /// The files a list names: a `.csv` file of `path[,label]` rows (a header row allowed),
    /// or a text file of one path a line (blank lines and `#` comments left out); relative
    /// paths are relative to the list's folder.
    List(PathBuf),
    /// Files named one by one.
    Files(Vec<PathBuf>),
}

/// One image to predict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The file read.
    pub path: PathBuf,
    /// How results name it: relative to the folder, as the list writes it, or as given.
    pub name: String,
    /// Its class, when the folder layout (a folder named after one of the run's classes,
    /// optionally under `train`, `val` or `test`) or the list's second column gives one.
    pub label: Option<String>,
}

/// An error before or while predicting, naming the file or flag concerned.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("--out {path}: {reason}")]
    Out { path: PathBuf, reason: String },
    #[error("{0}")]
    Other(String),
}

impl PredictError {
    fn out(path: &Path, reason: impl std::fmt::Display) -> PredictError {
        PredictError::Out { path: path.to_path_buf(), reason: reason.to_string() }
    }
}

/// The images `inputs` names, in the order results are written.
///
/// # Errors
/// The folder or list cannot be read, the list does not parse, or it names no image.
pub fn items(inputs: &Inputs, classes: &[String]) -> Result<Vec<Item>, PredictError> {
    let items = match inputs {
        Inputs::Folder(dir) => {
            if !dir.is_dir() {
                return Err(PredictError::File {
                    path: dir.clone(),
                    reason: "not a folder; give --data a folder of images (any depth)".into(),
                });
            }
            folder::image_files(dir)?
                .into_iter()
                .map(|relative| Item {
                    path: dir.join(&relative),
                    name: relative.to_string_lossy().replace('\\', "/"),
                    label: folder_label(&relative, classes),
                })
                .collect()
        }
        Inputs::List(list) => list_items(list)?,
        Inputs::Files(files) => {
            files.iter().map(|p| Item { path: p.clone(), name: p.display().to_string(), label: None }).collect()
        }
    };
    if items.is_empty() {
        let (path, what) = match inputs {
            Inputs::Folder(dir) => (dir.clone(), "holds no image files (PNG, JPEG, GIF, BMP, WebP, TIFF)"),
            Inputs::List(list) => (list.clone(), "names no files: write one path a line (or path,label in a .csv)"),
            Inputs::Files(_) => (PathBuf::from("IMAGE"), "no images given"),
        };
        return Err(PredictError::File { path, reason: what.into() });
    }
    Ok(items)
}

/// The class a file's place in a folder says: its first folder when that is one of
/// `classes`, or its second under a `train`, `val` or `test` folder.
fn folder_label(relative: &Path, classes: &[String]) -> Option<String> {
    let parts: Vec<String> = relative.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let is_class = |name: &String| classes.contains(name);
    match parts.as_slice() {
        [first, _, ..] if is_class(first) => Some(first.clone()),
        [split, class, _, ..]
            if [folder::TRAIN_DIR, folder::VAL_DIR, folder::TEST_DIR].contains(&split.as_str()) && is_class(class) =>
        {
            Some(class.clone())
        }
        _ => None,
    }
}

fn list_items(list: &Path) -> Result<Vec<Item>, PredictError> {
    let is_csv = list.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        return Ok(folder::csv_rows(list)?
            .into_iter()
            .map(|row| Item {
                name: row.fields.first().cloned().unwrap_or_default(),
                path: row.file,
                label: (!row.label.is_empty()).then_some(row.label),
            })
            .collect());
    }
    let base = list.parent().unwrap_or(Path::new("."));
    let text = fs::read(list).map_err(|e| PredictError::File { path: list.to_path_buf(), reason: e.to_string() })?;
    let text = String::from_utf8(text).map_err(|_| PredictError::File {
        path: list.to_path_buf(),
        reason: "not UTF-8 text; write one path a line (or path,label rows in a .csv file)".into(),
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| Item { path: base.join(line), name: line.to_string(), label: None })
        .collect())
}

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object a line: `{"image", "label"?, "predictions": [{"class", "probability"}]}`,
    /// or `{"image", "label"?, "error"}` for a file that could not be read.
    JsonLines,
    /// A header, then `image,label,class_1,probability_1,...,class_k,probability_k,error`.
    Csv,
    /// Embeddings only: a NumPy `.npy` matrix of `f32`, one row per image in order (NaN for
    /// a file that could not be read), the images named a line each in [`npy_index`].
    Npy,
}

impl Format {
    /// The format an output file's name asks for: `.csv` is CSV, `.jsonl` and `.ndjson` are
    /// JSON Lines, `.npy` a NumPy matrix.
    ///
    /// # Errors
    /// Any other extension, naming the ones known.
    pub fn for_path(path: &Path) -> Result<Format, PredictError> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Ok(Format::Csv),
            Some("jsonl" | "ndjson") => Ok(Format::JsonLines),
            Some("npy") => Ok(Format::Npy),
            _ => Err(PredictError::out(path, "name it .jsonl (JSON Lines, one result a line), .csv or (embed) .npy")),
        }
    }

    /// The CSV header for `k` classes a line (none for JSON Lines).
    pub fn header(self, k: usize) -> Option<String> {
        (self == Format::Csv).then(|| {
            let mut fields = vec!["image".to_string(), "label".to_string()];
            for i in 1..=k {
                fields.push(format!("class_{i}"));
                fields.push(format!("probability_{i}"));
            }
            fields.push("error".into());
            fields.join(",")
        })
    }
}

/// A JSON Lines result; probabilities are `f32`, so they print short (`0.93`, not
/// `0.9300000071525574`).
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    image: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    predictions: Option<Vec<Ranked<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct Ranked<'a> {
    class: &'a str,
    probability: f32,
}

/// One image's result line (with its newline): its `k` most probable classes, or why it
/// could not be read.
pub fn result_line(format: Format, item: &Item, result: Result<&[f32], &str>, classes: &[String], k: usize) -> String {
    let top = result.map(|probs| top_k(probs, k));
    match format {
        Format::JsonLines => {
            let line = JsonLine {
                image: &item.name,
                label: item.label.as_deref(),
                predictions: top
                    .as_ref()
                    .ok()
                    .map(|top| top.iter().map(|&(i, p)| Ranked { class: &classes[i], probability: p }).collect()),
                embedding: None,
                error: top.as_ref().err().copied(),
            };
            // Serialising borrowed strings and f32s cannot fail.
            format!("{}\n", serde_json::to_string(&line).unwrap_or_default())
        }
        Format::Csv => {
            let mut fields = vec![item.name.clone(), item.label.clone().unwrap_or_default()];
            let ranked = top.as_ref().map(Vec::as_slice).unwrap_or(&[]);
            for slot in 0..k {
                match ranked.get(slot) {
                    Some(&(i, p)) => fields.extend([classes[i].clone(), p.to_string()]),
                    None => fields.extend([String::new(), String::new()]),
                }
            }
            fields.push(top.err().unwrap_or_default().to_string());
            csv_record(&fields)
        }
        Format::Npy => String::new(),
    }
}

/// `fields` as one CSV record, with its newline (newlines inside a field become spaces, so a
/// record is one line).
fn csv_record(fields: &[String]) -> String {
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    // Writing into a Vec cannot fail; a record is whole or absent.
    let _ = writer.write_record(fields.iter().map(|f| f.replace(['\n', '\r'], " ")));
    String::from_utf8_lossy(&writer.into_inner().unwrap_or_default()).into_owned()
}

/// One image's embedding line for JSON Lines (with its newline): `{"image", "label"?,
/// "embedding": [...]}`, or `{"image", "label"?, "error"}`.
pub fn embedding_line(item: &Item, result: Result<&[f32], &str>) -> String {
    let line = JsonLine {
        image: &item.name,
        label: item.label.as_deref(),
        predictions: None,
        embedding: result.ok(),
        error: result.err(),
    };
    format!("{}\n", serde_json::to_string(&line).unwrap_or_default())
}

/// The file naming the images of a `.npy` output, one a line in row order: `x.npy` ->
/// `x.images.txt`.
pub fn npy_index(path: &Path) -> PathBuf {
    path.with_extension("images.txt")
}

/// The `.npy` (format 1.0) header of a `rows` x `columns` little-endian `f32` matrix,
/// padded so the data starts at a multiple of 64 bytes.
pub fn npy_header(rows: usize, columns: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {columns}), }}");
    let unpadded = 10 + dict.len() + 1;
    let len = unpadded.div_ceil(64) * 64;
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&((len - 10) as u16).to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header.resize(len - 1, b' ');
    header.push(b'\n');
    header
}

/// `path` opened to read and write, created if absent, its contents kept: an output that a
/// resumed run continues.
fn open_to_continue(path: &Path) -> Result<fs::File, PredictError> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| PredictError::out(path, format!("cannot open: {e}; choose a writable --out")))
}

/// Opens a `.npy` output for `items`' embeddings of `columns` values each, as
/// [`open_resumable`] does for lines: a file with this header and index keeps its whole rows
/// (a cut-off last row dropped), a new or empty one gets the header and its index file.
///
/// # Errors
/// The file cannot be read or written, or holds another shape or other images.
pub fn open_npy(path: &Path, items: &[Item], columns: usize) -> Result<(fs::File, usize), PredictError> {
    let header = npy_header(items.len(), columns);
    let index_path = npy_index(path);
    let index: String = items.iter().map(|item| format!("{}\n", item.name.replace(['\n', '\r'], " "))).collect();
    let mut file = open_to_continue(path)?;
    let len = file.metadata().map_err(|e| PredictError::out(path, e))?.len();
    let refuse = |what: &str| {
        PredictError::out(
            path,
            format!(
                "{what}: it belongs to other inputs or another run; choose another --out, or delete it (and {}) to start again",
                index_path.display()
            ),
        )
    };
    let done = if len == 0 {
        file.write_all(&header).map_err(|e| PredictError::out(path, e))?;
        crate::run::write_file_atomic(&index_path, index.as_bytes())
            .map_err(|e| PredictError::out(&index_path, format!("cannot write: {e}")))?;
        0
    } else {
        let mut start = vec![0u8; header.len()];
        std::io::Read::read_exact(&mut file, &mut start).map_err(|_| refuse("it is not a .npy file of this shape"))?;
        if start != header {
            return Err(refuse(&format!("its header is not that of {} rows of {columns} values", items.len())));
        }
        if fs::read_to_string(&index_path).ok().as_deref() != Some(index.as_str()) {
            return Err(refuse(&format!("{} does not list these images", index_path.display())));
        }
        let row = 4 * columns as u64;
        let done = ((len - header.len() as u64) / row).min(items.len() as u64);
        file.set_len(header.len() as u64 + done * row).map_err(|e| PredictError::out(path, e))?;
        done as usize
    };
    file.seek(std::io::SeekFrom::End(0)).map_err(|e| PredictError::out(path, e))?;
    Ok((file, done))
}

/// Opens `path` to continue writing results for `items`: its complete lines are kept (a
/// partial last line, from a run that was stopped mid-write, is cut off), and the count of
/// images they cover is returned with the file positioned at its end. A new or empty file
/// gets the CSV header.
///
/// # Errors
/// The file cannot be read or written, or its lines are not results for these images in
/// this order (its last line names another image, or it holds more lines than images).
pub fn open_resumable(
    path: &Path,
    format: Format,
    items: &[Item],
    k: usize,
) -> Result<(fs::File, usize), PredictError> {
    let mut file = open_to_continue(path)?;
    let (mut lines, mut complete_bytes, mut last, mut first) = (0usize, 0u64, Vec::new(), Vec::new());
    let mut reader = BufReader::new(&file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(|e| PredictError::out(path, e))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break; // the end, or a partial last line
        }
        lines += 1;
        complete_bytes += n as u64;
        if lines == 1 {
            first.clone_from(&line);
        }
        std::mem::swap(&mut last, &mut line);
    }
    drop(reader);
    let header = format.header(k);
    let done = match &header {
        Some(header) if lines > 0 => {
            check_header(path, &first, header)?;
            lines - 1
        }
        _ => lines,
    };
    if done > items.len() {
        return Err(PredictError::out(
            path,
            format!(
                "it already holds {done} results but there are {} images: it belongs to other \
                 inputs; choose another --out, or delete it to start again",
                items.len()
            ),
        ));
    }
    if done > 0 {
        let image = last_image(format, &last).ok_or_else(|| {
            PredictError::out(path, format!("line {lines} is not a result line; choose another --out"))
        })?;
        let expected = &items[done - 1].name;
        if &image != expected {
            return Err(PredictError::out(
                path,
                format!(
                    "its last result (line {lines}) is for {image:?}, but image {done} of these inputs \
                     is {expected:?}: it was written for other inputs or another order; choose \
                     another --out, or delete it to start again"
                ),
            ));
        }
    }
    file.set_len(complete_bytes).map_err(|e| PredictError::out(path, e))?;
    file.seek(std::io::SeekFrom::End(0)).map_err(|e| PredictError::out(path, e))?;
    if lines == 0
        && let Some(header) = header
    {
        writeln!(file, "{header}").map_err(|e| PredictError::out(path, e))?;
    }
    Ok((file, done))
}

fn check_header(path: &Path, line: &[u8], header: &str) -> Result<(), PredictError> {
    let found = String::from_utf8_lossy(line);
    if found.trim_end() != header {
        return Err(PredictError::out(
            path,
            format!(
                "its header is {:?}, not {header:?} (another --top-k, or not a results file); \
                 choose another --out, or delete it to start again",
                found.trim_end()
            ),
        ));
    }
    Ok(())
}

/// The image a result line names.
fn last_image(format: Format, line: &[u8]) -> Option<String> {
    match format {
        Format::JsonLines => {
            let value: serde_json::Value = serde_json::from_slice(line).ok()?;
            value.get("image")?.as_str().map(str::to_string)
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(line);
            reader.records().next()?.ok()?.get(0).map(str::to_string)
        }
        Format::Npy => None,
    }
}

/// What is written for each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Its most probable classes.
    Predict,
    /// Its penultimate features ([`Classifier::embeddings`]).
    Embed,
}

/// How a run of predictions is made.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// What each line holds.
    pub task: Task,
    /// Images decoded and evaluated together.
    pub batch: usize,
    /// Classes written per image.
    pub top_k: usize,
    /// What an unreadable file does: [`BadImagePolicy::Skip`] writes its `error` line and
    /// goes on, [`BadImagePolicy::Fail`] stops at it (after writing the lines before it).
    pub policy: BadImagePolicy,
}

/// What a run of predictions did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Lines written by this run (results and errors).
    pub written: usize,
    /// Of those, files that could not be read.
    pub failed: usize,
    /// Images with a label, and of them the ones whose most probable class is it.
    pub labelled: usize,
    pub correct: usize,
}

/// Predicts `items` and writes one line each to `out` in order, flushing after each batch;
/// `bar` is advanced per image. Decoding runs a batch ahead of the model, on rayon's pool.
///
/// # Errors
/// Writing fails, or (under [`BadImagePolicy::Fail`]) a file cannot be read, after the lines
/// before it are written.
pub fn predict_into(
    classifier: &Classifier,
    items: &[Item],
    out: &mut dyn Write,
    format: Format,
    options: BatchOptions,
    bar: &indicatif::ProgressBar,
) -> Result<Summary, PredictError> {
    let framing = classifier.config().framing;
    let bytes_each = framing.input().image_bytes();
    let classes = classifier.classes();
    let k = options.top_k.clamp(1, classes.len());
    let batch = options.batch.max(1);
    let columns = if options.task == Task::Embed { classifier.embedding_width() } else { 0 };
    let mut summary = Summary::default();
    let write_error = |e: std::io::Error| PredictError::Other(format!("cannot write the results: {e}"));
    std::thread::scope(|scope| {
        // Two decoded batches wait at most while the model works on a third.
        let (send, receive) = mpsc::sync_channel::<(usize, Vec<u8>, Vec<Result<(), String>>)>(1);
        scope.spawn(move || {
            for (index, chunk) in items.chunks(batch).enumerate() {
                let mut images = vec![0u8; chunk.len() * bytes_each];
                let results: Vec<Result<(), String>> = images
                    .par_chunks_mut(bytes_each)
                    .zip(chunk.par_iter())
                    .map(|(slot, item)| {
                        let bytes = folder::read_image_file(&item.path)?;
                        folder::decode_framed(&bytes, slot, framing).map(|_| ())
                    })
                    .collect();
                if send.send((index, images, results)).is_err() {
                    return; // the writer stopped
                }
            }
        });
        for (index, images, results) in receive {
            let chunk = &items[index * batch..(index * batch + results.len()).min(items.len())];
            // Only the images that decoded go through the model.
            let decoded: Vec<u8> = images
                .chunks(bytes_each)
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .flat_map(|(image, _)| image.iter().copied())
                .collect();
            let rows = match options.task {
                Task::Predict => classifier.probabilities(&decoded),
                Task::Embed => classifier.embeddings(&decoded),
            };
            let mut rows = rows.iter();
            let mut text = Vec::new();
            let mut stop = None;
            for (item, result) in chunk.iter().zip(&results) {
                if let (Err(reason), BadImagePolicy::Fail) = (result, options.policy) {
                    stop = Some(PredictError::File {
                        path: item.path.clone(),
                        reason: format!("{reason} (--on-bad-image skip writes an error line for it and goes on)"),
                    });
                    break;
                }
                let result = match result {
                    Ok(()) => Ok(rows.next().map_or(&[][..], Vec::as_slice)),
                    Err(reason) => {
                        summary.failed += 1;
                        Err(reason.as_str())
                    }
                };
                match (options.task, format) {
                    (Task::Predict, _) => {
                        if let (Some(label), Ok(p)) = (&item.label, result) {
                            summary.labelled += 1;
                            let best = top_k(p, 1).first().map(|&(i, _)| &classes[i]);
                            summary.correct += usize::from(best == Some(label));
                        }
                        text.extend_from_slice(result_line(format, item, result, classes, k).as_bytes());
                    }
                    (Task::Embed, Format::Npy) => {
                        let nan = vec![f32::NAN; columns];
                        for v in result.unwrap_or(&nan) {
                            text.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                    (Task::Embed, _) => text.extend_from_slice(embedding_line(item, result).as_bytes()),
                }
                summary.written += 1;
                bar.inc(1);
            }
            out.write_all(&text).and_then(|()| out.flush()).map_err(write_error)?;
            if let Some(error) = stop {
                return Err(error);
            }
        }
        Ok(summary)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, label: Option<&str>) -> Item {
        Item { path: PathBuf::from(name), name: name.into(), label: label.map(str::to_string) }
    }

    fn classes() -> Vec<String> {
        vec!["ant".into(), "bee".into(), "wasp".into()]
    }

    #[test]
    fn the_label_is_a_class_folder_at_the_top_or_under_a_split() {
        let c = classes();
        assert_eq!(folder_label(Path::new("bee/1.jpg"), &c).as_deref(), Some("bee"));
        assert_eq!(folder_label(Path::new("val/ant/x/2.jpg"), &c).as_deref(), Some("ant"));
        assert_eq!(folder_label(Path::new("night/3.jpg"), &c), None);
        assert_eq!(folder_label(Path::new("bee.jpg"), &c), None);
        assert_eq!(folder_label(Path::new("train/moth/4.jpg"), &c), None);
    }

    #[test]
    fn lines_hold_the_top_classes_or_the_error() {
        let c = classes();
        let probs = [0.2f32, 0.5, 0.3];
        let json = result_line(Format::JsonLines, &item("a/1.jpg", Some("bee")), Ok(&probs), &c, 2);
        let value: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
        assert!(json.ends_with('\n') && json.matches('\n').count() == 1);
        assert_eq!(value["image"], "a/1.jpg");
        assert_eq!(value["label"], "bee");
        assert_eq!(value["predictions"][0]["class"], "bee");
        assert_eq!(value["predictions"][1]["class"], "wasp");
        assert_eq!(value["predictions"].as_array().unwrap().len(), 2);
        assert!(json.contains("\"probability\":0.5}"), "{json}");

        let bad = result_line(Format::JsonLines, &item("b.png", None), Err("truncated"), &c, 2);
        let value: serde_json::Value = serde_json::from_str(&bad).unwrap();
        assert_eq!(value["error"], "truncated");
        assert!(value.get("label").is_none() && value.get("predictions").is_none());

        assert_eq!(Format::Csv.header(2).unwrap(), "image,label,class_1,probability_1,class_2,probability_2,error");
        let csv = result_line(Format::Csv, &item("x, y.jpg", None), Ok(&probs), &c, 2);
        assert_eq!(csv, "\"x, y.jpg\",,bee,0.5,wasp,0.3,\n");
        let csv = result_line(Format::Csv, &item("z.jpg", Some("ant")), Err("bad\nfile"), &c, 2);
        assert_eq!(csv, "z.jpg,ant,,,,,bad file\n");
    }

    #[test]
    fn the_format_follows_the_extension() {
        assert_eq!(Format::for_path(Path::new("out.CSV")).unwrap(), Format::Csv);
        assert_eq!(Format::for_path(Path::new("o/p.jsonl")).unwrap(), Format::JsonLines);
        let err = Format::for_path(Path::new("out.txt")).unwrap_err().to_string();
        assert!(err.contains("out.txt") && err.contains(".jsonl") && err.contains(".csv"), "{err}");
    }

    #[test]
    fn resuming_keeps_complete_lines_cuts_a_partial_one_and_refuses_other_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<Item> = (0..4).map(|i| item(&format!("{i}.jpg"), None)).collect();
        let c = classes();
        let path = dir.path().join("out.jsonl");
        let line = |i: usize| result_line(Format::JsonLines, &items[i], Ok(&[1.0, 0.0, 0.0]), &c, 1);
        fs::write(&path, format!("{}{}{{\"image\":\"2.j", line(0), line(1))).unwrap();
        let (mut file, done) = open_resumable(&path, Format::JsonLines, &items, 1).unwrap();
        assert_eq!(done, 2);
        file.write_all(line(2).as_bytes()).unwrap();
        drop(file);
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{}{}{}", line(0), line(1), line(2)));

        // Lines for images in another order, or more lines than images, are refused untouched.
        let swapped = format!("{}{}", line(1), line(0));
        fs::write(&path, &swapped).unwrap();
        let err = open_resumable(&path, Format::JsonLines, &items, 1).unwrap_err().to_string();
        assert!(err.contains("\"0.jpg\"") && err.contains("\"1.jpg\"") && err.contains("delete it"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), swapped);
        let err = open_resumable(&path, Format::JsonLines, &items[..1], 1).unwrap_err().to_string();
        assert!(err.contains("2 results") && err.contains("1 images"), "{err}");

        // CSV: a new file gets the header; another --top-k's header is refused.
        let csv = dir.path().join("out.csv");
        let (mut file, done) = open_resumable(&csv, Format::Csv, &items, 1).unwrap();
        assert_eq!(done, 0);
        file.write_all(result_line(Format::Csv, &items[0], Ok(&[1.0, 0.0, 0.0]), &c, 1).as_bytes()).unwrap();
        drop(file);
        assert_eq!(open_resumable(&csv, Format::Csv, &items, 1).unwrap().1, 1);
        let err = open_resumable(&csv, Format::Csv, &items, 2).unwrap_err().to_string();
        assert!(err.contains("header") && err.contains("--top-k"), "{err}");
    }
}
