//! The report's figures as PNG bytes: shapes rasterised by plotters on an in-memory bitmap,
//! text set by [`super::text`] in the embedded font, layout decided in [`super::layout`].

use plotters::coord::Shift;
use plotters::prelude::*;

use super::layout::{self, Corner, Mistake, Rect};
use super::text::{self, Align, Style};
use crate::data::augment::{self, resample};
use crate::eval::Evaluation;
use crate::geometry::{IMAGE_SIZE, ImageShape};
use crate::run::EpochMetrics;

/// Pixel size of `accuracy.png` and `loss.png`.
pub const CURVE_SIZE: (u32, u32) = (800, 480);
/// Upscaling of each misclassified image in `mistakes.png` (nearest neighbour).
pub const MISTAKE_SCALE: u32 = 4;
/// Tiles per row of `mistakes.png`.
pub const MISTAKE_COLUMNS: usize = 8;
/// Width and height of one tile of `mistakes.png`: the upscaled image and two caption lines.
pub const MISTAKE_TILE: (u32, u32) = (172, 190);
/// Outer margin of the figures.
const MARGIN: u32 = 16;
/// The band above the tiles of `mistakes.png` holding its title and key.
const MISTAKE_HEADER: u32 = 64;
/// Narrowest `mistakes.png`, so its title fits however few tiles there are.
const MISTAKE_MIN_WIDTH: u32 = 760;

const TEXT: [u8; 3] = [30, 30, 30];
const MUTED: [u8; 3] = [100, 100, 100];
const WHITE_TEXT: [u8; 3] = [255, 255, 255];
/// matplotlib's tab10 blue and orange: train and validation.
const TRAIN: [u8; 3] = [31, 119, 180];
const VALIDATION: [u8; 3] = [255, 127, 14];
const WRONG: [u8; 3] = [190, 30, 30];
const GRID: RGBColor = RGBColor(228, 228, 228);
const AXIS: RGBColor = RGBColor(120, 120, 120);

const TITLE: f32 = 20.0;
const LABEL: f32 = 15.0;
const SMALL: f32 = 14.0;

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Why a figure could not be drawn or encoded.
#[derive(Debug)]
pub struct DrawFailure(pub String);

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for DrawFailure {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        DrawFailure(e.to_string())
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// An RGB picture being drawn.
struct Canvas {
    size: (u32, u32),
    pixels: Vec<u8>,
}

impl Canvas {
    /// A white canvas.
    fn new(size: (u32, u32)) -> Result<Self, DrawFailure> {
        if text::font().is_none() {
            return Err(DrawFailure("the embedded font is unreadable; rebuild classify".into()));
        }
        Ok(Canvas { size, pixels: vec![255; size.0 as usize * size.1 as usize * 3] })
    }

    /// Draws shapes with plotters.
    fn shapes(&mut self, draw: impl FnOnce(&Area) -> Result<(), DrawFailure>) -> Result<(), DrawFailure> {
        let backend = BitMapBackend::with_buffer_and_format(&mut self.pixels, self.size)
            .map_err(|e| DrawFailure(e.to_string()))?;
        let root = backend.into_drawing_area();
        draw(&root)?;
        root.present()?;
        Ok(())
    }

    fn text(&mut self, s: &str, at: (i32, i32), style: Style) {
        text::draw(&mut self.pixels, self.size, s, at, style);
    }

    fn png(&self) -> Result<Vec<u8>, DrawFailure> {
        use image::ImageEncoder;
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&self.pixels, self.size.0, self.size.1, image::ExtendedColorType::Rgb8)
            .map_err(|e| DrawFailure(format!("PNG encoding failed: {e}")))?;
        Ok(png)
    }
}

fn style(size: f32, colour: [u8; 3], along: Align, across: Align) -> Style {
    Style::new(size, colour).align(along, across)
}

/// `accuracy.png` and `loss.png`: train and validation curves over the epochs of `metrics`.
pub fn curves(metrics: &[EpochMetrics]) -> Result<(Vec<u8>, Vec<u8>), DrawFailure> {
    let best = crate::run::best_epoch(metrics);
    let accuracies: Vec<f64> = metrics.iter().flat_map(|m| [m.train_acc, m.val_acc]).collect();
    let accuracy = curve(
        metrics,
        &Curve {
            title: match best {
                Some((epoch, val_acc)) => {
                    format!("Accuracy per epoch (best validation {} at epoch {epoch})", layout::percent(val_acc, 1),)
                }
                None => "Accuracy per epoch".into(),
            },
            y_desc: "accuracy",
            value: |m| (m.train_acc, m.val_acc),
            range: layout::padded_range(&accuracies, 0.1, 0.0, 1.0),
            format: |v, step| layout::percent(v, layout::decimals(step * 100.0)),
            legend: [Corner::BottomRight, Corner::TopLeft, Corner::BottomLeft, Corner::TopRight],
        },
    )?;
    let lowest = metrics.iter().min_by(|a, b| a.val_loss.total_cmp(&b.val_loss));
    let losses: Vec<f64> = metrics.iter().flat_map(|m| [m.train_loss, m.val_loss]).collect();
    let loss = curve(
        metrics,
        &Curve {
            title: match lowest {
                Some(m) => format!("Loss per epoch (lowest validation {:.3} at epoch {})", m.val_loss, m.epoch),
                None => "Loss per epoch".into(),
            },
            y_desc: "cross-entropy loss",
            value: |m| (m.train_loss, m.val_loss),
            range: layout::padded_range(&losses, 0.1, 0.0, f64::INFINITY),
            format: |v, step| format!("{v:.*}", layout::decimals(step)),
            legend: [Corner::TopRight, Corner::BottomLeft, Corner::TopLeft, Corner::BottomRight],
        },
    )?;
    Ok((accuracy, loss))
}

struct Curve {
    title: String,
    y_desc: &'static str,
    /// (train, validation) of one epoch.
    value: fn(&EpochMetrics) -> (f64, f64),
    range: (f64, f64),
    /// A y tick label, given the value and the step between ticks.
    format: fn(f64, f64) -> String,
    /// Where the legend may go, best first.
    legend: [Corner; 4],
}

/// A curve's name, colour and points in pixels.
type Series = (&'static str, [u8; 3], Vec<(f64, f64)>);

fn curve(metrics: &[EpochMetrics], spec: &Curve) -> Result<Vec<u8>, DrawFailure> {
    let (width, height) = CURVE_SIZE;
    let last = metrics.iter().map(|m| m.epoch).max().unwrap_or(1).max(1);
    let x_ticks = layout::epoch_ticks(last, 12);
    let (lo, hi) = spec.range;
    let (y_ticks, step) = layout::nice_ticks(lo, hi, 10);
    let y_labels: Vec<String> = y_ticks.iter().map(|&v| (spec.format)(v, step)).collect();
    let label_w = y_labels.iter().map(|l| text::width(l, LABEL)).max().unwrap_or(0);

    let plot = Rect {
        x0: f64::from(MARGIN + 20 + 12 + label_w + 8),
        y0: f64::from(MARGIN + 40),
        x1: f64::from(width - 24),
        y1: f64::from(height - MARGIN - 20 - 10 - 18 - 6),
    };
    // Epochs sit at the middle of equal slots, so one epoch is a point in the middle.
    let x_of = |epoch: f64| plot.x0 + (epoch - 0.5) / last as f64 * (plot.x1 - plot.x0);
    let y_of = |v: f64| plot.y1 - (v - lo) / (hi - lo) * (plot.y1 - plot.y0);
    let px = |(x, y): (f64, f64)| (x.round() as i32, y.round() as i32);
    let series: Vec<Series> = [("train", TRAIN, false), ("validation", VALIDATION, true)]
        .into_iter()
        .map(|(name, colour, second)| {
            let points = metrics
                .iter()
                .map(|m| (m.epoch as f64, (spec.value)(m)))
                .map(|(e, (train, val))| (e, if second { val } else { train }))
                .filter(|(_, v)| v.is_finite())
                .map(|(e, v)| (x_of(e), y_of(v)))
                .collect();
            (name, colour, points)
        })
        .collect();
    let radius = if last > 40 {
        2
    } else if last > 20 {
        3
    } else {
        4
    };

    let legend_text_w = series.iter().map(|(n, _, _)| text::width(n, LABEL)).max().unwrap_or(0);
    let legend_size = (f64::from(10 + 26 + 8 + legend_text_w + 12), 2.0 * 22.0 + 12.0);
    let lines: Vec<Vec<(f64, f64)>> = series.iter().map(|(_, _, p)| p.clone()).collect();
    let corner = layout::legend_corner(&lines, plot, legend_size, &spec.legend);
    let legend = layout::corner_box(plot, legend_size, 10.0, corner);

    let mut canvas = Canvas::new(CURVE_SIZE)?;
    let (x0, y0, x1, y1) = (plot.x0 as i32, plot.y0 as i32, plot.x1 as i32, plot.y1 as i32);
    canvas.shapes(|root| {
        for &v in &y_ticks {
            let y = y_of(v).round() as i32;
            root.draw(&PathElement::new(vec![(x0, y), (x1, y)], GRID.stroke_width(1)))?;
            root.draw(&PathElement::new(vec![(x0 - 5, y), (x0, y)], AXIS.stroke_width(1)))?;
        }
        for &e in &x_ticks {
            let x = x_of(e as f64).round() as i32;
            root.draw(&PathElement::new(vec![(x, y0), (x, y1)], GRID.stroke_width(1)))?;
            root.draw(&PathElement::new(vec![(x, y1), (x, y1 + 5)], AXIS.stroke_width(1)))?;
        }
        root.draw(&PathElement::new(vec![(x0, y0), (x0, y1), (x1, y1)], AXIS.stroke_width(1)))?;
        for (_, colour, points) in &series {
            let colour = rgb(*colour);
            if points.len() > 1 {
                root.draw(&PathElement::new(
                    points.iter().map(|&p| px(p)).collect::<Vec<_>>(),
                    colour.stroke_width(2),
                ))?;
            }
            for &p in points {
                root.draw(&Circle::new(px(p), radius, colour.filled()))?;
            }
        }
        let (lx, ly) = (legend.x0.round() as i32, legend.y0.round() as i32);
        let (lx1, ly1) = (legend.x1.round() as i32, legend.y1.round() as i32);
        root.draw(&Rectangle::new([(lx, ly), (lx1, ly1)], WHITE.filled()))?;
        root.draw(&Rectangle::new([(lx, ly), (lx1, ly1)], GRID.stroke_width(1)))?;
        for (i, (_, colour, _)) in series.iter().enumerate() {
            let y = ly + 17 + i as i32 * 22;
            root.draw(&PathElement::new(vec![(lx + 10, y), (lx + 36, y)], rgb(*colour).stroke_width(3)))?;
            root.draw(&Circle::new((lx + 23, y), radius, rgb(*colour).filled()))?;
        }
        Ok(())
    })?;
    for (v, label) in y_ticks.iter().zip(&y_labels) {
        let at = (x0 - 9, y_of(*v).round() as i32);
        canvas.text(label, at, style(LABEL, TEXT, Align::End, Align::Centre));
    }
    for &e in &x_ticks {
        let at = (x_of(e as f64).round() as i32, y1 + 8);
        canvas.text(&e.to_string(), at, style(LABEL, TEXT, Align::Centre, Align::Start));
    }
    let (lx, ly) = (legend.x0.round() as i32, legend.y0.round() as i32);
    for (i, (name, _, _)) in series.iter().enumerate() {
        canvas.text(name, (lx + 44, ly + 17 + i as i32 * 22), style(LABEL, TEXT, Align::Start, Align::Centre));
    }
    canvas.text(&spec.title, (width as i32 / 2, MARGIN as i32), style(TITLE, TEXT, Align::Centre, Align::Start));
    let x_desc_at = ((x0 + x1) / 2, (height - MARGIN) as i32);
    canvas.text("epoch", x_desc_at, style(16.0, TEXT, Align::Centre, Align::End));
    let y_desc_at = (MARGIN as i32 + 10, (y0 + y1) / 2);
    canvas.text(spec.y_desc, y_desc_at, style(16.0, TEXT, Align::Centre, Align::Centre).upward());
    canvas.png()
}

/// `confusion.png`: a `k` x `k` heat map of `e.confusion`, counts in the cells, each cell
/// shaded by its share of the true class.
pub fn confusion(classes: &[String], e: &Evaluation, split: &str) -> Result<Vec<u8>, DrawFailure> {
    let k = classes.len();
    let cell = layout::confusion_cell(k);
    let names: Vec<String> = classes.iter().map(|c| layout::fit_text(c, 160, |s| text::width(s, LABEL))).collect();
    let name_w = names.iter().map(|n| text::width(n, LABEL)).max().unwrap_or(0);
    let title = format!("Confusion matrix: {split} split, {} images, accuracy {}", e.n, layout::percent(e.accuracy, 1));
    let subtitle = "rows: true class, columns: predicted class; shade: share of the true class";
    let (gap, axis_title) = (8u32, 20u32);
    let top = MARGIN + 30 + 22 + 14;
    let x0 = MARGIN + axis_title + gap + name_w + gap;
    let side = cell * k as u32;
    let heading_w = text::width(&title, TITLE).max(text::width(subtitle, SMALL)) + 2 * MARGIN;
    let width = (x0 + side + 2 * MARGIN).max(heading_w);
    let height = top + side + gap + name_w + gap + axis_title + MARGIN;
    let count_size = (cell as f32 * 0.3).clamp(10.0, 16.0);

    let mut canvas = Canvas::new((width, height))?;
    let (x0, y0, c) = (x0 as i32, top as i32, cell as i32);
    let mut counts = Vec::new();
    canvas.shapes(|root| {
        for (t, row) in e.confusion.iter().enumerate().take(k) {
            let total: u64 = row.iter().sum();
            for (p, &count) in row.iter().enumerate().take(k) {
                let share = if total == 0 { 0.0 } else { count as f64 / total as f64 };
                let ((r, g, b), light_text) = layout::heat_colour(share);
                let (cx, cy) = (x0 + p as i32 * c, y0 + t as i32 * c);
                root.draw(&Rectangle::new([(cx, cy), (cx + c, cy + c)], RGBColor(r, g, b).filled()))?;
                root.draw(&Rectangle::new([(cx, cy), (cx + c, cy + c)], WHITE.stroke_width(1)))?;
                counts.push((count, (cx + c / 2, cy + c / 2), light_text));
            }
        }
        Ok(())
    })?;
    // Counts only where they fit, and in small cells only the non-zero ones, which would
    // otherwise drown in a sea of tiny zeros; the shading shows the pattern regardless.
    if cell >= 22 {
        for (count, at, light) in counts.into_iter().filter(|&(n, _, _)| n > 0 || cell >= 40) {
            let colour = if light { WHITE_TEXT } else { TEXT };
            canvas.text(&count.to_string(), at, style(count_size, colour, Align::Centre, Align::Centre));
        }
    }
    for (i, name) in names.iter().enumerate() {
        let middle = i as i32 * c + c / 2;
        canvas.text(name, (x0 - gap as i32, y0 + middle), style(LABEL, TEXT, Align::End, Align::Centre));
        let below = (x0 + middle, y0 + side as i32 + gap as i32);
        canvas.text(name, below, style(LABEL, TEXT, Align::End, Align::Centre).upward());
    }
    let centre = width as i32 / 2;
    canvas.text(&title, (centre, MARGIN as i32), style(TITLE, TEXT, Align::Centre, Align::Start));
    canvas.text(subtitle, (centre, MARGIN as i32 + 32), style(SMALL, MUTED, Align::Centre, Align::Start));
    let side = side as i32;
    let true_at = (MARGIN as i32 + axis_title as i32 / 2, y0 + side / 2);
    canvas.text("true class", true_at, style(16.0, TEXT, Align::Centre, Align::Centre).upward());
    let predicted_at = (x0 + side / 2, (height - MARGIN) as i32);
    canvas.text("predicted class", predicted_at, style(16.0, TEXT, Align::Centre, Align::End));
    canvas.png()
}

/// `per_class.png`: one horizontal accuracy bar per class, with the overall accuracy marked.
pub fn per_class(e: &Evaluation, split: &str) -> Result<Vec<u8>, DrawFailure> {
    let names: Vec<String> =
        e.per_class.iter().map(|c| layout::fit_text(&c.class, 200, |s| text::width(s, LABEL))).collect();
    let name_w = names.iter().map(|n| text::width(n, LABEL)).max().unwrap_or(0);
    let values: Vec<String> =
        e.per_class.iter().map(|c| format!("{} ({}/{})", layout::percent(c.accuracy, 1), c.correct, c.n)).collect();
    let value_w = values.iter().map(|v| text::width(v, SMALL)).max().unwrap_or(0);
    let title = format!("Accuracy per class: {split} split");
    let (gap, row, bar, plot_w) = (10u32, 30u32, 20u32, 480u32);
    let top = MARGIN + 30 + 30;
    let x0 = MARGIN + name_w + gap;
    let rows = row * e.per_class.len() as u32;
    let width = (x0 + plot_w + 24 + value_w + MARGIN).max(text::width(&title, TITLE) + 2 * MARGIN);
    let height = top + rows + 54 + MARGIN;

    let mut canvas = Canvas::new((width, height))?;
    let (x0, y0, plot_w, rows, row) = (x0 as i32, top as i32, plot_w as i32, rows as i32, row as i32);
    let x_of = |acc: f64| x0 + (acc.clamp(0.0, 1.0) * f64::from(plot_w)).round() as i32;
    let ticks = [0.0, 0.25, 0.5, 0.75, 1.0];
    let overall = x_of(e.accuracy);
    canvas.shapes(|root| {
        for tick in ticks {
            let x = x_of(tick);
            root.draw(&PathElement::new(vec![(x, y0 - 4), (x, y0 + rows + 4)], GRID.stroke_width(1)))?;
        }
        for (i, c) in e.per_class.iter().enumerate() {
            let y = y0 + i as i32 * row + (row - bar as i32) / 2;
            let end = x_of(c.accuracy);
            if end > x0 {
                root.draw(&Rectangle::new([(x0, y), (end, y + bar as i32)], rgb(TRAIN).filled()))?;
            }
        }
        root.draw(&PathElement::new(vec![(x0, y0 - 4), (x0, y0 + rows + 4)], AXIS.stroke_width(1)))?;
        root.draw(&PathElement::new(
            vec![(overall, y0 - 8), (overall, y0 + rows + 4)],
            rgb(VALIDATION).stroke_width(2),
        ))?;
        Ok(())
    })?;
    for tick in ticks {
        canvas.text(
            &layout::percent(tick, 0),
            (x_of(tick), y0 + rows + 8),
            style(SMALL, TEXT, Align::Centre, Align::Start),
        );
    }
    let axis_at = (x0 + plot_w / 2, y0 + rows + 32);
    canvas.text(
        "share of the class's images predicted correctly",
        axis_at,
        style(LABEL, TEXT, Align::Centre, Align::Start),
    );
    for (i, (name, value)) in names.iter().zip(&values).enumerate() {
        let middle = y0 + i as i32 * row + row / 2;
        canvas.text(name, (x0 - gap as i32, middle), style(LABEL, TEXT, Align::End, Align::Centre));
        canvas.text(value, (x_of(1.0) + 24, middle), style(SMALL, TEXT, Align::Start, Align::Centre));
    }
    let overall_label = format!("all classes {}", layout::percent(e.accuracy, 1));
    canvas.text(&overall_label, (overall, y0 - 10), style(SMALL, VALIDATION, Align::Centre, Align::End));
    canvas.text(&title, (width as i32 / 2, MARGIN as i32), style(TITLE, TEXT, Align::Centre, Align::Start));
    canvas.png()
}

/// Pixel size of `mistakes.png` for `shown` tiles.
pub fn mistakes_size(shown: usize) -> (u32, u32) {
    let (cols, rows) = layout::grid(shown, MISTAKE_COLUMNS);
    let width = (2 * MARGIN + cols as u32 * MISTAKE_TILE.0).max(MISTAKE_MIN_WIDTH);
    (width, MISTAKE_HEADER + rows as u32 * MISTAKE_TILE.1 + MARGIN)
}

/// `image` (CHW, of `shape`) as a `side` x `side` tile, CHW: enlarged by whole pixels when
/// `side` is a multiple of its size (CIFAR's 32x32 images stay crisp), else resampled
/// bilinearly (photos).
fn tile(image: &[u8], shape: ImageShape, side: usize) -> Vec<u8> {
    let mut out = vec![0u8; shape.channels * side * side];
    if side.is_multiple_of(shape.size) {
        let scale = side / shape.size;
        for (c, plane) in out.chunks_exact_mut(side * side).enumerate() {
            for (i, px) in plane.iter_mut().enumerate() {
                let (y, x) = (i / side / scale, i % side / scale);
                *px = image[c * shape.size * shape.size + y * shape.size + x];
            }
        }
    } else {
        let whole = shape.size as f64;
        resample(image, shape, augment::Rect { x: 0.0, y: 0.0, width: whole, height: whole }, false, &mut out, side);
    }
    out
}

/// `mistakes.png`: the `shown` images of `images` (CHW, of `shape`, as the model saw them)
/// as tiles of [`IMAGE_SIZE`] x [`MISTAKE_SCALE`] pixels, captioned with the true class,
/// the predicted class and its probability; `total` is the number of mistakes of which
/// these are the most confident.
pub fn mistakes(
    images: &[u8],
    shape: ImageShape,
    classes: &[String],
    shown: &[Mistake],
    total: usize,
    split: &str,
) -> Result<Vec<u8>, DrawFailure> {
    let size = mistakes_size(shown.len());
    let mut canvas = Canvas::new(size)?;
    let side = IMAGE_SIZE as u32 * MISTAKE_SCALE;
    let origin = |i: usize| {
        let (col, row) = ((i % MISTAKE_COLUMNS) as u32, (i / MISTAKE_COLUMNS) as u32);
        let x = MARGIN + col * MISTAKE_TILE.0 + (MISTAKE_TILE.0 - side) / 2;
        (x, MISTAKE_HEADER + row * MISTAKE_TILE.1)
    };
    let (bytes, plane) = (shape.image_bytes(), (side * side) as usize);
    for (i, m) in shown.iter().enumerate() {
        let Some(chw) = images.get(m.index * bytes..(m.index + 1) * bytes) else { continue };
        let chw = tile(chw, shape, side as usize);
        let (ox, oy) = origin(i);
        for y in 0..side {
            for x in 0..side {
                let src = (y * side + x) as usize;
                let dst = (((oy + y) * size.0 + ox + x) * 3) as usize;
                if let Some(px) = canvas.pixels.get_mut(dst..dst + 3) {
                    px.copy_from_slice(&[chw[src], chw[plane + src], chw[2 * plane + src]]);
                }
            }
        }
    }
    canvas.shapes(|root| {
        for i in 0..shown.len() {
            let (ox, oy) = origin(i);
            let (ox, oy, side) = (ox as i32, oy as i32, side as i32);
            root.draw(&Rectangle::new([(ox - 1, oy - 1), (ox + side, oy + side)], GRID.stroke_width(1)))?;
        }
        Ok(())
    })?;
    let margin = MARGIN as i32;
    let title = if total == 0 {
        format!("No mistakes: every image of the {split} split is classified correctly")
    } else {
        format!("Most confident mistakes on the {split} split: {} of {total} shown", shown.len())
    };
    canvas.text(&title, (margin, margin), style(TITLE, TEXT, Align::Start, Align::Start));
    if total > 0 {
        let key = "under each image: its true class, then the class predicted and the probability given to it";
        canvas.text(key, (margin, margin + 28), style(SMALL, MUTED, Align::Start, Align::Start));
    }
    let name = |i: usize| classes.get(i).map_or("?", String::as_str);
    let caption = 14.0;
    let room = MISTAKE_TILE.0 - 14;
    let measure = |s: &str| text::width(s, caption);
    for (i, m) in shown.iter().enumerate() {
        let (ox, oy) = origin(i);
        let (centre, below) = ((ox + side / 2) as i32, (oy + side) as i32);
        let truth = layout::fit_text(name(m.truth), room.saturating_sub(measure("true: ")), measure);
        let truth = format!("true: {truth}");
        canvas.text(&truth, (centre, below + 6), style(caption, TEXT, Align::Centre, Align::Start));
        let probability = probability_label(m.probability);
        // Shorten the class name, never the probability.
        let fixed = measure(&format!("pred:  {probability}"));
        let predicted = layout::fit_text(name(m.predicted), room.saturating_sub(fixed), measure);
        let predicted = format!("pred: {predicted} {probability}");
        canvas.text(&predicted, (centre, below + 26), style(caption, WRONG, Align::Centre, Align::Start));
    }
    canvas.png()
}

/// A probability as a percentage with one decimal, rounded down; one that rounds to 1 in
/// `f32` reads ">99.9%", since the model is never quite certain of a mistake.
pub fn probability_label(p: f32) -> String {
    let p = if p.is_finite() { f64::from(p).clamp(0.0, 1.0) } else { 0.0 };
    let tenths = (p * 1000.0 + 1e-6).floor() / 10.0;
    if tenths >= 100.0 { ">99.9%".into() } else { format!("{tenths:.1}%") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_enlarge_small_images_by_whole_pixels_and_keep_photos_at_their_size() {
        let coded = |side: usize| -> Vec<u8> { (0..3 * side * side).map(|i| (i * 7 % 251) as u8).collect() };
        let cifar = coded(32);
        let big = tile(&cifar, ImageShape::CIFAR, 128);
        for (c, y, x) in [(0, 0, 0), (1, 5, 127), (2, 127, 64), (2, 63, 3)] {
            assert_eq!(big[c * 128 * 128 + y * 128 + x], cifar[c * 1024 + y / 4 * 32 + x / 4], "({c}, {y}, {x})");
        }
        // A 128 px photo is shown as it is; a 146 px one is resampled, a flat one stays flat.
        let photo = coded(128);
        assert_eq!(tile(&photo, ImageShape::square(128), 128), photo);
        let flat = vec![90u8; 3 * 146 * 146];
        assert!(tile(&flat, ImageShape::square(146), 128).iter().all(|&v| v == 90));
    }

    #[test]
    fn probabilities_round_down() {
        assert_eq!(probability_label(0.9996), "99.9%");
        assert_eq!(probability_label(1.0), ">99.9%");
        assert_eq!(probability_label(0.5), "50.0%");
        assert_eq!(probability_label(0.123), "12.3%");
        assert_eq!(probability_label(f32::NAN), "0.0%");
    }

    #[test]
    fn mistakes_grid_size_follows_the_tiles() {
        let (w, h) = mistakes_size(64);
        assert_eq!(w, 2 * MARGIN + 8 * MISTAKE_TILE.0);
        assert_eq!(h, MISTAKE_HEADER + 8 * MISTAKE_TILE.1 + MARGIN);
        assert_eq!(mistakes_size(3).0, MISTAKE_MIN_WIDTH);
        assert_eq!(mistakes_size(0).1, MISTAKE_HEADER + MARGIN);
    }

    #[test]
    fn no_mistakes_is_a_short_picture_that_says_so() {
        let png = mistakes(&[], ImageShape::CIFAR, &[], &[], 0, "val").unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), mistakes_size(0));
    }

    #[test]
    fn the_mistakes_grid_shows_photos_as_the_model_saw_them() {
        // Two 64 px photos: the second, the one shown, is red on the left and blue on the right.
        let side = 64;
        let mut images = vec![0u8; 2 * 3 * side * side];
        for (i, v) in images[3 * side * side..].iter_mut().enumerate() {
            let (c, x) = (i / (side * side), i % side);
            *v = if (c == 0 && x < side / 2) || (c == 2 && x >= side / 2) { 240 } else { 10 };
        }
        let shown = [Mistake { index: 1, truth: 0, predicted: 1, probability: 0.9 }];
        let classes = ["a".to_string(), "b".to_string()];
        let png = mistakes(&images, ImageShape::square(side), &classes, &shown, 1, "val").unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        let tile = IMAGE_SIZE as u32 * MISTAKE_SCALE;
        let (x0, y0) = (MARGIN + (MISTAKE_TILE.0 - tile) / 2, MISTAKE_HEADER);
        assert_eq!(img.get_pixel(x0 + 5, y0 + 5).0, [240, 10, 10]);
        assert_eq!(img.get_pixel(x0 + tile - 5, y0 + tile - 5).0, [10, 10, 240]);
    }

    fn metrics(epochs: usize) -> Vec<EpochMetrics> {
        (1..=epochs)
            .map(|epoch| EpochMetrics {
                epoch,
                seconds: 1.0,
                train_loss: 2.0 / epoch as f64,
                train_acc: 0.3 + 0.05 * epoch as f64,
                val_loss: 1.5,
                val_acc: 0.4,
            })
            .collect()
    }

    #[test]
    fn curves_draw_one_epoch_and_many() {
        for n in [1, 2, 30] {
            let (accuracy, loss) = curves(&metrics(n)).unwrap();
            for png in [accuracy, loss] {
                let img = image::load_from_memory(&png).unwrap();
                assert_eq!((img.width(), img.height()), CURVE_SIZE);
            }
        }
    }
}
