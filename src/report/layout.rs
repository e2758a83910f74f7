//! Pure helpers that decide what the figures show and where: which mistakes, how a grid
//! wraps, axis ranges and ticks, colours. No drawing here, so all of it is unit-tested.

/// One misclassified image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mistake {
    /// Position of the image in the evaluated set.
    pub index: usize,
    /// Its true label.
    pub truth: usize,
    /// The label the model gave it.
    pub predicted: usize,
    /// The probability the model gave `predicted`.
    pub probability: f32,
}

/// Every image whose most probable label is not its true one, the most confident mistakes
/// first (ties in set order, so the order is deterministic).
pub fn mistakes(labels: &[u8], probs: &[Vec<f32>]) -> Vec<Mistake> {
    let mut found: Vec<Mistake> = labels
        .iter()
        .zip(probs)
        .enumerate()
        .filter_map(|(index, (&truth, p))| {
            let predicted = crate::scores::argmax(p);
            let probability = p.get(predicted).copied().unwrap_or(0.0);
            (predicted != usize::from(truth)).then_some(Mistake {
                index,
                truth: usize::from(truth),
                predicted,
                probability,
            })
        })
        .collect();
    // Stable: equal probabilities keep set order.
    found.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    found
}

/// Columns and rows of a grid of `n` tiles at most `max_cols` wide: `(0, 0)` when empty.
pub fn grid(n: usize, max_cols: usize) -> (usize, usize) {
    if n == 0 || max_cols == 0 {
        return (0, 0);
    }
    let cols = n.min(max_cols);
    (cols, n.div_ceil(cols))
}

/// The epochs that get a tick on a curve's x axis: every epoch up to `max_ticks` of them,
/// else the multiples of a step of 2, 5 or 10 times a power of ten, plus epoch 1 when the
/// step is 5 or more (so the first point is always labelled without crowding the next).
pub fn epoch_ticks(epochs: usize, max_ticks: usize) -> Vec<usize> {
    let max_ticks = max_ticks.max(1);
    let mut step = 1;
    'search: for scale in [1, 10, 100, 1000, 10_000, 100_000] {
        for m in [1, 2, 5] {
            step = m * scale;
            if epochs.div_ceil(step) <= max_ticks {
                break 'search;
            }
        }
    }
    let mut ticks: Vec<usize> = (1..=epochs).filter(|e| e % step == 0).collect();
    if step >= 5 && epochs >= 1 {
        ticks.insert(0, 1);
    }
    ticks
}

/// A y range that holds `values` with a margin, widened to at least `min_span` and kept
/// inside `[floor, ceil]`. Empty or non-finite input gives `[floor, floor + min_span]`.
pub fn padded_range(values: &[f64], min_span: f64, floor: f64, ceil: f64) -> (f64, f64) {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (floor, (floor + min_span).min(ceil));
    }
    let margin = ((hi - lo) * 0.08).max(min_span * 0.05);
    let (mut lo, mut hi) = (lo - margin, hi + margin);
    if hi - lo < min_span {
        let mid = (lo + hi) / 2.0;
        lo = mid - min_span / 2.0;
        hi = mid + min_span / 2.0;
    }
    // Shift, rather than clip, a range that pokes out of the allowed band.
    if lo < floor {
        hi = (hi + (floor - lo)).min(ceil);
        lo = floor;
    }
    if hi > ceil {
        lo = (lo - (hi - ceil)).max(floor);
        hi = ceil;
    }
    (lo, hi)
}

/// Round ticks covering `[lo, hi]`, at most about `max_ticks` of them, and their step
/// (1, 2 or 5 times a power of ten).
pub fn nice_ticks(lo: f64, hi: f64, max_ticks: usize) -> (Vec<f64>, f64) {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return (vec![lo], 1.0);
    }
    let raw = (hi - lo) / max_ticks.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    // Multiplying (not accumulating) keeps 0.1 * 3 from drifting to 0.30000000000000004 in labels.
    ((first..=last).map(|i| i as f64 * step).collect(), step)
}

/// Decimals needed to tell ticks `step` apart: 0 for 5, 1 for 0.5, 2 for 0.05.
pub fn decimals(step: f64) -> usize {
    (0..6)
        .find(|&d| {
            let scaled = step * 10f64.powi(d as i32);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(6)
}

/// A rectangle in pixels, `x0 <= x1` and `y0 <= y1` (y grows downward).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl Rect {
    pub fn contains(&self, (x, y): (f64, f64)) -> bool {
        (self.x0..=self.x1).contains(&x) && (self.y0..=self.y1).contains(&y)
    }
}

/// A corner of a plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corner {
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

/// The box of size `size` set `inset` pixels inside `plot`'s `corner`.
pub fn corner_box(plot: Rect, size: (f64, f64), inset: f64, corner: Corner) -> Rect {
    let left = matches!(corner, Corner::TopLeft | Corner::BottomLeft);
    let top = matches!(corner, Corner::TopLeft | Corner::TopRight);
    let x0 = if left { plot.x0 + inset } else { plot.x1 - inset - size.0 };
    let y0 = if top { plot.y0 + inset } else { plot.y1 - inset - size.1 };
    Rect { x0, y0, x1: x0 + size.0, y1: y0 + size.1 }
}

/// The corner of `plot`, in order of `preference`, where a legend of `size` covers the
/// fewest of the polylines `lines` (pixel coordinates, sampled along each segment).
pub fn legend_corner(lines: &[Vec<(f64, f64)>], plot: Rect, size: (f64, f64), preference: &[Corner]) -> Corner {
    const SAMPLES: usize = 24;
    let samples: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|line| {
            let segments = line.windows(2).flat_map(|w| {
                (0..SAMPLES).map(move |i| {
                    let t = i as f64 / SAMPLES as f64;
                    (w[0].0 + (w[1].0 - w[0].0) * t, w[0].1 + (w[1].1 - w[0].1) * t)
                })
            });
            segments.chain(line.last().copied()).collect::<Vec<_>>()
        })
        .collect();
    let covered = |corner: Corner| {
        let b = corner_box(plot, size, 10.0, corner);
        // A few pixels of clearance, so markers beside the box count too.
        let b = Rect { x0: b.x0 - 6.0, y0: b.y0 - 6.0, x1: b.x1 + 6.0, y1: b.y1 + 6.0 };
        samples.iter().filter(|&&p| b.contains(p)).count()
    };
    preference.iter().copied().min_by_key(|&c| covered(c)).unwrap_or(Corner::TopRight)
}

/// The fill of a heat-map cell holding share `t` of its row: white at 0 to dark blue at 1
/// (matplotlib's "Blues" end points), and whether text on it should be white.
pub fn heat_colour(t: f64) -> ((u8, u8, u8), bool) {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let light = (247.0, 251.0, 255.0);
    let dark = (8.0, 48.0, 107.0);
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    ((mix(light.0, dark.0), mix(light.1, dark.1), mix(light.2, dark.2)), t > 0.5)
}

/// Side of one confusion-matrix cell for `k` classes: the matrix stays about 560 pixels
/// wide, between 14 and 56 pixels a cell.
pub fn confusion_cell(k: usize) -> u32 {
    (560 / k.max(1)).clamp(14, 56) as u32
}

/// `text` cut to at most `max_width` as measured by `width`, by an ellipsis in the middle
/// when cut: names such as `long_class_name_07` often differ only at the end.
pub fn fit_text(text: &str, max_width: u32, width: impl Fn(&str) -> u32) -> String {
    if width(text) <= max_width {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    for keep in (0..chars.len()).rev() {
        // The head gets the extra character of an odd split.
        let head = keep.div_ceil(2);
        let tail = keep - head;
        let candidate: String =
            chars[..head].iter().chain(std::iter::once(&'…')).chain(&chars[chars.len() - tail..]).collect();
        if width(&candidate) <= max_width {
            return candidate;
        }
    }
    String::new()
}

/// `x` as a percentage with `decimals` decimals, e.g. `61.2%`.
pub fn percent(x: f64, decimals: usize) -> String {
    format!("{:.*}%", decimals, x * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistakes_are_wrong_predictions_most_confident_first() {
        let labels = [0, 1, 2, 0, 1];
        let probs = vec![
            vec![0.9, 0.05, 0.05], // right
            vec![0.6, 0.3, 0.1],   // wrong, 0.6
            vec![0.1, 0.8, 0.1],   // wrong, 0.8
            vec![0.2, 0.2, 0.6],   // wrong, 0.6 (after index 1: set order on ties)
            vec![0.1, 0.7, 0.2],   // right
        ];
        let m = mistakes(&labels, &probs);
        assert_eq!(m.iter().map(|m| m.index).collect::<Vec<_>>(), vec![2, 1, 3]);
        assert_eq!(m[0], Mistake { index: 2, truth: 2, predicted: 1, probability: 0.8 });
        assert_eq!((m[2].truth, m[2].predicted), (0, 2));
    }

    #[test]
    fn grid_wraps_and_handles_empty() {
        assert_eq!(grid(0, 8), (0, 0));
        assert_eq!(grid(3, 8), (3, 1));
        assert_eq!(grid(8, 8), (8, 1));
        assert_eq!(grid(9, 8), (8, 2));
        assert_eq!(grid(64, 8), (8, 8));
        assert_eq!(grid(5, 0), (0, 0));
    }

    #[test]
    fn epoch_ticks_cover_every_epoch_when_few_and_round_steps_when_many() {
        assert_eq!(epoch_ticks(1, 12), vec![1]);
        assert_eq!(epoch_ticks(3, 12), vec![1, 2, 3]);
        assert_eq!(epoch_ticks(12, 12), (1..=12).collect::<Vec<_>>());
        // 30 epochs: step 5 -> 1, 5, 10, ... 30 (6 steps + the first epoch).
        assert_eq!(epoch_ticks(30, 12), vec![1, 5, 10, 15, 20, 25, 30]);
        // 20 epochs: step 2, and no 1 squeezed in beside the 2.
        assert_eq!(epoch_ticks(20, 12), vec![2, 4, 6, 8, 10, 12, 14, 16, 18, 20]);
        assert_eq!(epoch_ticks(100, 12), vec![1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert!(epoch_ticks(0, 12).is_empty());
    }

    #[test]
    fn padded_range_holds_the_values_within_bounds() {
        let (lo, hi) = padded_range(&[0.5, 0.6], 0.1, 0.0, 1.0);
        assert!(lo < 0.5 && hi > 0.6 && hi - lo >= 0.1, "{lo} {hi}");
        // A single value gets the minimum span around it.
        let (lo, hi) = padded_range(&[0.5], 0.2, 0.0, 1.0);
        assert!((lo - 0.4).abs() < 1e-12 && (hi - 0.6).abs() < 1e-12, "{lo} {hi}");
        // Near the ceiling the range shifts down instead of clipping.
        let (lo, hi) = padded_range(&[0.99, 1.0], 0.2, 0.0, 1.0);
        assert_eq!(hi, 1.0);
        assert!((lo - 0.8).abs() < 1e-12, "{lo}");
        // Near the floor it shifts up.
        let (lo, hi) = padded_range(&[0.0], 0.2, 0.0, f64::INFINITY);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.2).abs() < 1e-12);
        assert_eq!(padded_range(&[], 0.1, 0.0, 1.0), (0.0, 0.1));
        assert_eq!(padded_range(&[f64::NAN], 0.1, 0.0, 1.0), (0.0, 0.1));
    }

    #[test]
    fn nice_ticks_are_round_and_inside_the_range() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        let (ticks, step) = nice_ticks(0.42, 0.93, 8);
        assert!(close(step, 0.1), "{step}");
        assert_eq!(ticks.len(), 5);
        assert!(close(ticks[0], 0.5) && close(ticks[4], 0.9), "{ticks:?}");
        let (ticks, step) = nice_ticks(0.0, 1.0, 8);
        assert!(close(step, 0.2) && ticks.len() == 6 && close(ticks[5], 1.0), "{ticks:?}");
        let (ticks, step) = nice_ticks(0.27, 1.6, 8);
        assert!(close(step, 0.2) && close(ticks[0], 0.4), "{ticks:?}");
        assert_eq!(nice_ticks(1.0, 1.0, 8).0, vec![1.0]);
    }

    #[test]
    fn decimals_match_the_step() {
        assert_eq!(decimals(5.0), 0);
        assert_eq!(decimals(20.0), 0);
        assert_eq!(decimals(0.5), 1);
        assert_eq!(decimals(0.2), 1);
        assert_eq!(decimals(0.05), 2);
        assert_eq!(decimals(0.1 * 3.0), 1);
    }

    #[test]
    fn legend_goes_to_the_emptiest_preferred_corner() {
        let plot = Rect { x0: 0.0, y0: 0.0, x1: 400.0, y1: 300.0 };
        let size = (100.0, 50.0);
        let prefs = [Corner::BottomRight, Corner::TopRight, Corner::TopLeft];
        // A rising line passes through bottom-left and top-right: bottom-right is free.
        let rising = vec![vec![(0.0, 300.0), (400.0, 0.0)]];
        assert_eq!(legend_corner(&rising, plot, size, &prefs), Corner::BottomRight);
        // A flat line along the bottom: the top-right is the first free preference.
        let low = vec![vec![(0.0, 280.0), (400.0, 280.0)]];
        assert_eq!(legend_corner(&low, plot, size, &prefs), Corner::TopRight);
        // A single point in the bottom-right corner box counts too.
        let point = vec![vec![(340.0, 260.0)]];
        assert_eq!(legend_corner(&point, plot, size, &prefs), Corner::TopRight);
        assert_eq!(
            corner_box(plot, size, 10.0, Corner::BottomRight),
            Rect { x0: 290.0, y0: 240.0, x1: 390.0, y1: 290.0 }
        );
    }

    #[test]
    fn heat_colour_runs_white_to_dark_blue() {
        assert_eq!(heat_colour(0.0), ((247, 251, 255), false));
        assert_eq!(heat_colour(1.0), ((8, 48, 107), true));
        assert_eq!(heat_colour(2.0), heat_colour(1.0));
        assert_eq!(heat_colour(f64::NAN), heat_colour(0.0));
    }

    #[test]
    fn confusion_cells_shrink_with_many_classes() {
        assert_eq!(confusion_cell(10), 56);
        assert_eq!(confusion_cell(2), 56);
        assert_eq!(confusion_cell(20), 28);
        assert_eq!(confusion_cell(100), 14);
        assert_eq!(confusion_cell(0), 56);
    }

    #[test]
    fn fit_text_cuts_with_an_ellipsis() {
        let width = |s: &str| s.chars().count() as u32 * 10;
        assert_eq!(fit_text("truck", 50, width), "truck");
        assert_eq!(fit_text("automobile", 50, width), "au…le");
        assert_eq!(fit_text("long_name_07", 60, width), "lon…07");
        assert_eq!(fit_text("automobile", 5, width), "");
    }

    #[test]
    fn percent_formats() {
        assert_eq!(percent(0.6078, 1), "60.8%");
        assert_eq!(percent(1.0, 0), "100%");
    }
}
