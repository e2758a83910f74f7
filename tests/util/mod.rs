//! Shared test harness: synthetic images and a temp-folder runner for the real binary.

#![allow(dead_code)]

pub mod learning;
pub mod reference;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use classify::data::{IMAGE_BYTES, IMAGE_SIZE, ImageSet};
use classify::model::ModelKind;
use classify::run::{FORMAT_VERSION, RunConfig};
use classify::settings::AdamSettings;

/// Owned class names.
pub fn names(classes: &[&str]) -> Vec<String> {
    classes.iter().map(|s| s.to_string()).collect()
}

/// The settings of a seed-model run on synthetic data over `classes` for `epochs`; tests
/// change what they care about with `RunConfig { seed: 5, ..synthetic_config(..) }`.
pub fn synthetic_config(classes: &[String], epochs: usize) -> RunConfig {
    RunConfig {
        format_version: FORMAT_VERSION,
        classify_version: "test".into(),
        model: ModelKind::Seed,
        model_revision: classify::model::MODEL_REVISION,
        data: "synthetic".into(),
        val_split: 0.2,
        epochs,
        batch_size: 16,
        learning_rate: 0.001,
        seed: 7,
        optimizer: AdamSettings::default(),
        recipe: Default::default(),
        framing: classify::geometry::Framing::CIFAR,
        pretrained: None,
        device: "cpu".into(),
        classes: classes.to_vec(),
        train_images: 0,
        val_images: 0,
    }
}

/// A tiny deterministic generator, so fixtures need no RNG crate and never change.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407))
    }
    pub fn next_u8(&mut self) -> u8 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 56) as u8
    }
}

/// An image of class `class` (< 4): a bright 16x16 square in quadrant `class`, in a colour
/// that also depends on the class, over noise. Learnable in a few epochs, not by chance.
pub fn quadrant_image(class: usize, rng: &mut Lcg) -> Vec<u8> {
    let mut img = vec![0u8; IMAGE_BYTES];
    let (qy, qx) = (class / 2 * 16, class % 2 * 16);
    for c in 0..3 {
        for y in 0..IMAGE_SIZE {
            for x in 0..IMAGE_SIZE {
                let inside = (qy..qy + 16).contains(&y) && (qx..qx + 16).contains(&x);
                let noise = rng.next_u8() / 3;
                let base = if inside && (c == class % 3 || class == 3) { 170 } else { 20 };
                img[c * IMAGE_SIZE * IMAGE_SIZE + y * IMAGE_SIZE + x] = base + noise;
            }
        }
    }
    img
}

/// `per_class` quadrant images for each of `classes` classes, interleaved by class.
pub fn quadrant_set(classes: usize, per_class: usize, seed: u64) -> ImageSet {
    let mut rng = Lcg::new(seed);
    let mut set = ImageSet::default();
    for i in 0..per_class * classes {
        let class = i % classes;
        set.push(&quadrant_image(class, &mut rng), class as u8);
    }
    set
}

/// Writes a CHW image as an RGB PNG of `size` x `size` (nearest-neighbour scaled).
pub fn write_png(path: &Path, chw: &[u8], size: u32) {
    let plane = IMAGE_SIZE * IMAGE_SIZE;
    let img = image::RgbImage::from_fn(size, size, |x, y| {
        let sx = x as usize * IMAGE_SIZE / size as usize;
        let sy = y as usize * IMAGE_SIZE / size as usize;
        let i = sy * IMAGE_SIZE + sx;
        image::Rgb([chw[i], chw[plane + i], chw[2 * plane + i]])
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// An image-folder dataset of quadrant images: `train/<class>/NNN.png` and, when `test > 0`,
/// `test/<class>/NNN.png`. Some images are 48x48 so the reader's resize is exercised.
pub fn write_image_folder(root: &Path, classes: &[&str], train: usize, test: usize) {
    let mut rng = Lcg::new(7);
    for (split, count) in [("train", train), ("test", test)] {
        for (c, name) in classes.iter().enumerate() {
            for i in 0..count {
                let size = if i % 3 == 0 { 48 } else { 32 };
                let img = quadrant_image(c, &mut rng);
                write_png(&root.join(split).join(name).join(format!("{i:03}.png")), &img, size);
            }
        }
    }
}

/// Runs the real `classify` binary in `dir` with a private cache folder.
pub fn classify(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_classify"))
        .args(args)
        .current_dir(dir)
        .env("CLASSIFY_HOME", dir.join(".cache"))
        .env_remove("CLASSIFY_CIFAR10_URL")
        .output()
        .expect("run classify")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the command succeeded, showing its output otherwise.
pub fn ok(o: Output) -> Output {
    assert!(o.status.success(), "exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), stdout(&o), stderr(&o));
    o
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

pub fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// CRC-32 (IEEE, reflected, as PNG uses), bit by bit: small and obviously right.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// Appends one PNG chunk (length, type, data, CRC) to `out`.
pub fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend(crc32(&body).to_be_bytes());
}

/// `parts` concatenated and zlib-compressed.
pub fn zlib(parts: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    for part in parts {
        std::io::Write::write_all(&mut z, &part).unwrap();
    }
    z.finish().unwrap()
}

/// A valid grey 32x32 PNG with an iCCP chunk of `profile_mib` MiB of zeros, compressed: a
/// decompression bomb of under 1 MiB.
pub fn png_with_profile(profile_mib: usize) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&32u32.to_be_bytes());
    ihdr.extend_from_slice(&32u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey
    png_chunk(&mut png, b"IHDR", &ihdr);
    let mut iccp = b"bomb\0\0".to_vec(); // profile name, compression method 0
    iccp.extend(zlib((0..profile_mib).map(|_| vec![0u8; 1 << 20])));
    png_chunk(&mut png, b"iCCP", &iccp);
    let rows: Vec<u8> = (0..32u8).flat_map(|y| std::iter::once(0).chain((0..32u8).map(move |x| x ^ y))).collect();
    png_chunk(&mut png, b"IDAT", &zlib(std::iter::once(rows)));
    png_chunk(&mut png, b"IEND", &[]);
    png
}

/// A `width`x`height` JPEG as cameras write them (6000x4000 is 24 megapixels): red on the
/// left half, blue on the right.
pub fn camera_jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, _| {
        if x < width / 2 { image::Rgb([220, 20, 20]) } else { image::Rgb([20, 20, 220]) }
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img).unwrap();
    jpeg
}

/// What the test server answers to every request.
#[derive(Clone)]
pub enum Reply {
    /// 200 with the whole body.
    Full(Vec<u8>),
    /// 200 announcing the whole body's length, then only `send` bytes and a closed connection.
    Truncated { body: Vec<u8>, send: usize },
    /// A bare status code.
    Status(u16),
}

/// A one-route HTTP/1.1 server on 127.0.0.1, counting the connections it serves.
pub struct Server {
    /// `http://127.0.0.1:PORT/FILE_NAME`.
    pub url: String,
    pub hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Serves `reply` to every request, at an address ending in `file_name`.
pub fn serve(file_name: &str, reply: Reply) -> Server {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            // Read the request head (the client sends no body).
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let (status, len, body): (u16, usize, &[u8]) = match &reply {
                Reply::Full(body) => (200, body.len(), body),
                Reply::Truncated { body, send } => (200, body.len(), &body[..*send]),
                Reply::Status(code) => (*code, 0, &[]),
            };
            let header = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {len}\r\n\
                 Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(header.as_bytes());
            let _ = stream.write_all(body);
            let _ = stream.flush();
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
    });
    Server { url: format!("http://{addr}/{file_name}"), hits }
}

/// Writes a run folder at `root` holding a freshly initialised seed model over `classes`
/// (CIFAR framing, 32x32), as `train` would leave it.
pub fn write_seed_run(root: &Path, classes: &[&str]) {
    use burn::module::Module;
    let run = classify::run::RunDir::new(root);
    run.create().unwrap();
    run.save_config(&RunConfig { val_split: 0.0, seed: 1, ..synthetic_config(&names(classes), 0) }).unwrap();
    let weights = classify::model::Network::init(ModelKind::Seed, classes.len(), &burn::tensor::Device::flex())
        .into_record()
        .into_bytes()
        .unwrap();
    run.save_weights(&weights).unwrap();
}

/// Writes `bytes` to `path`, making its folder.
pub fn write_bytes(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A `classify serve` process on a free port of 127.0.0.1 serving the run at `root`, killed
/// when dropped.
pub struct ServeProcess {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
}

impl ServeProcess {
    /// Starts `classify serve --port 0 --run root` with `extra` flags, and waits (up to a
    /// minute) for its log line "serving N classes on http://127.0.0.1:PORT ...".
    pub fn start(root: &Path, extra: &[&str]) -> ServeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_classify"))
            .args(["serve", "--port", "0", "--run"])
            .arg(root)
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (found, port) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
                if !sent && let Some(rest) = line.split("http://").nth(1) {
                    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    sent = found.send(addr).is_ok();
                }
            }
        });
        let addr =
            port.recv_timeout(std::time::Duration::from_secs(60)).expect("the server never said where it listens");
        ServeProcess { child, addr: addr.parse().unwrap() }
    }

    /// Resident and peak resident memory of the server process in MiB (Linux).
    pub fn memory_mb(&self) -> Option<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let field = |name: &str| -> Option<f64> {
            let kb: f64 = status.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0)
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a raw HTTP/1.1 request (`head` is its request line and any headers) with `body`,
/// and returns the status code and body of the answer.
pub fn http(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let request = format!("{head}\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}
