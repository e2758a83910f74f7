//! Text on the figures: DejaVu Sans, embedded in the binary, set with ab_glyph (kerned,
//! anti-aliased, each glyph placed by its own bounds) straight onto an RGB buffer.
//!
//! plotters' own ab_glyph path drops each glyph's left side bearing, which makes "1696" read
//! "1 696" and glues colons to the word before them; drawing text here avoids that.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, Glyph, PxScale, ScaleFont, point};

/// DejaVu Sans 2.37 from Debian's `fonts-dejavu-core`; licence beside it in `assets/fonts/`.
const FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The embedded font, parsed once; `None` only if the binary was built with a damaged file.
pub fn font() -> Option<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_BYTES).ok()).as_ref()
}

/// Where the anchor point sits along one side of the text's box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Start,
    Centre,
    End,
}

/// How one piece of text is drawn.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Line height in pixels (ascent plus descent).
    pub size: f32,
    pub colour: [u8; 3],
    /// Anchor along the text's direction and across it (top to bottom of the line).
    pub align: (Align, Align),
    /// Turns the text to read bottom to top.
    pub upward: bool,
}

impl Style {
    pub fn new(size: f32, colour: [u8; 3]) -> Self {
        Style { size, colour, align: (Align::Start, Align::Start), upward: false }
    }

    pub fn align(self, along: Align, across: Align) -> Self {
        Style { align: (along, across), ..self }
    }

    pub fn upward(self) -> Self {
        Style { upward: true, ..self }
    }
}

/// The glyphs of `text` on one line whose top is y = 0, and the line's width and height.
fn layout(font: &FontRef<'static>, text: &str, size: f32) -> (Vec<Glyph>, f32, f32) {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut glyphs = Vec::with_capacity(text.len());
    let mut caret = 0.0;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(previous) = previous {
            caret += scaled.kern(previous, id);
        }
        glyphs.push(id.with_scale_and_position(size, point(caret, scaled.ascent())));
        caret += scaled.h_advance(id);
        previous = Some(id);
    }
    (glyphs, caret, scaled.ascent() - scaled.descent())
}

/// Width of `text` at `size`, in whole pixels (rounded up); 0 without a font.
pub fn width(text: &str, size: f32) -> u32 {
    font().map_or(0, |f| layout(f, text, size).1.ceil() as u32)
}

/// Draws `text` into `pixels` (RGB, `dims.0` x `dims.1`) with its anchor at `at`; what falls
/// outside the buffer is clipped.
pub fn draw(pixels: &mut [u8], dims: (u32, u32), text: &str, at: (i32, i32), style: Style) {
    let Some(font) = font() else { return };
    let (glyphs, w, h) = layout(font, text, style.size);
    let offset = |align, extent: f32| match align {
        Align::Start => 0.0,
        Align::Centre => -extent / 2.0,
        Align::End => -extent,
    };
    let (dx, dy) = (offset(style.align.0, w).round(), offset(style.align.1, h).round());
    let [r, g, b] = style.colour.map(f32::from);
    for glyph in glyphs {
        let Some(outline) = font.outline_glyph(glyph) else { continue };
        let bounds = outline.px_bounds();
        outline.draw(|x, y, coverage| {
            let tx = bounds.min.x as i32 + x as i32 + dx as i32;
            let ty = bounds.min.y as i32 + y as i32 + dy as i32;
            let (px, py) = if style.upward { (ty, -tx) } else { (tx, ty) };
            let (px, py) = (at.0 + px, at.1 + py);
            if px < 0 || py < 0 || px as u32 >= dims.0 || py as u32 >= dims.1 {
                return;
            }
            let i = (py as usize * dims.0 as usize + px as usize) * 3;
            if let Some(pixel) = pixels.get_mut(i..i + 3) {
                let c = coverage.clamp(0.0, 1.0);
                for (p, target) in pixel.iter_mut().zip([r, g, b]) {
                    *p = (f32::from(*p) + (target - f32::from(*p)) * c).round() as u8;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_grow_with_text_and_size() {
        assert!(font().is_some());
        assert_eq!(width("", 15.0), 0);
        let cat = width("cat", 15.0);
        assert!(cat > 10 && cat < 40, "{cat}");
        assert!(width("automobile", 15.0) > 2 * cat);
        assert!(width("cat", 30.0) >= 2 * cat - 2);
    }

    /// Bounding box of the non-white pixels.
    fn ink(pixels: &[u8], w: u32) -> (u32, u32, u32, u32) {
        let mut b = (u32::MAX, u32::MAX, 0, 0);
        for (i, px) in pixels.chunks(3).enumerate() {
            if px.iter().any(|&v| v < 200) {
                let (x, y) = (i as u32 % w, i as u32 / w);
                b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
            }
        }
        b
    }

    #[test]
    fn anchors_and_rotation_place_the_ink() {
        let (w, h) = (120u32, 120u32);
        let style = Style::new(16.0, [0, 0, 0]);
        let mut pixels = vec![255u8; (w * h * 3) as usize];
        draw(&mut pixels, (w, h), "Hello", (60, 60), style.align(Align::Centre, Align::Centre));
        let (x0, y0, x1, y1) = ink(&pixels, w);
        assert!(x0 < 60 && x1 > 60 && y0 < 60 && y1 > 60, "{:?}", (x0, y0, x1, y1));
        // Centred: the ink's middle is within two pixels of the anchor horizontally.
        assert!(((x0 + x1) as i32 / 2 - 60).abs() <= 2, "{:?}", (x0, x1));

        let mut pixels = vec![255u8; (w * h * 3) as usize];
        draw(&mut pixels, (w, h), "Hello", (60, 10), style.align(Align::End, Align::Centre).upward());
        let (x0, y0, x1, y1) = ink(&pixels, w);
        // Reads upward and ends at the anchor: taller than wide, hanging below y = 10.
        assert!(y1 - y0 > x1 - x0, "{:?}", (x0, y0, x1, y1));
        assert!((10..=14).contains(&y0) && y1 > 40, "{:?}", (y0, y1));
    }

    #[test]
    fn text_off_the_buffer_is_clipped_not_a_panic() {
        // Anchored above and left of a 10x10 buffer: the part that overlaps it is drawn,
        // nothing is written outside it, and nothing panics.
        let mut pixels = vec![255u8; 10 * 10 * 3];
        draw(&mut pixels, (10, 10), "clipped text", (-5, -5), Style::new(20.0, [0, 0, 0]));
        assert_eq!(pixels.len(), 10 * 10 * 3);
        assert!(pixels.iter().any(|&v| v < 128), "the overlapping part of the text is drawn");
        // Wholly outside: the buffer is untouched.
        let mut blank = vec![255u8; 10 * 10 * 3];
        draw(&mut blank, (10, 10), "gone", (500, -500), Style::new(20.0, [0, 0, 0]));
        draw(&mut blank, (10, 10), "gone", (-500, 500), Style::new(20.0, [0, 0, 0]).upward());
        assert!(blank.iter().all(|&v| v == 255));
    }
}
