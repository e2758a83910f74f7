//! `report.html`: one self-contained page (inline CSS, figures as base64 data URIs, no
//! scripts, no links), readable offline and safe to mail or attach to a ticket.

use std::fmt::Write;

use base64::Engine;

use super::layout;
use crate::eval::Evaluation;
use crate::run::{EpochMetrics, RunConfig};

/// Most confused pairs listed in the page.
const CONFUSED_PAIRS: usize = 10;

/// A figure of the page: its file name, heading and PNG bytes.
pub struct Figure<'a> {
    pub file: &'a str,
    pub heading: &'a str,
    pub png: &'a [u8],
}

/// Everything the page shows.
pub struct Page<'a> {
    pub run_name: &'a str,
    pub split: &'a str,
    pub config: &'a RunConfig,
    pub metrics: &'a [EpochMetrics],
    pub evaluation: &'a Evaluation,
    pub figures: &'a [Figure<'a>],
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif; color: #1e1e1e;
  max-width: 1680px; margin: 0 auto; padding: 24px; line-height: 1.45; }
h1 { margin: 0 0 4px; font-size: 28px; }
h2 { margin: 36px 0 12px; font-size: 21px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; margin: 0 0 20px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: 10px 16px; min-width: 150px; background: #fafafa; }
.card .v { font-size: 24px; font-weight: 600; }
.card .k { color: #666; font-size: 13px; }
figure { margin: 0 0 24px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
.pair { display: flex; flex-wrap: wrap; gap: 16px; }
.pair figure { flex: 0 1 800px; }
table { border-collapse: collapse; font-size: 14px; margin-bottom: 8px; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.tables { display: flex; flex-wrap: wrap; gap: 32px; align-items: flex-start; }
";

/// The page as HTML text.
pub fn render(page: &Page) -> String {
    let e = page.evaluation;
    let config = page.config;
    let mut html =
        String::with_capacity(page.figures.iter().map(|f| f.png.len() * 4 / 3 + 200).sum::<usize>() + 16_384);
    let title = format!("classify report: {}", page.run_name);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    let _ = writeln!(html, "<h1>{}</h1>", escape(&title));
    let completed = page.metrics.len();
    let _ = writeln!(
        html,
        "<p class=\"sub\">{} model, {} of {} epochs completed, evaluated on the {} split ({} images) \
         of <code>{}</code>; classify {}</p>",
        escape(&config.model.to_string()),
        completed,
        config.epochs,
        escape(page.split),
        e.n,
        escape(&config.data),
        escape(&config.classify_version),
    );

    html.push_str("<div class=\"cards\">\n");
    card(&mut html, &format!("{} accuracy", page.split), &layout::percent(e.accuracy, 2));
    let correct: u64 = e.per_class.iter().map(|c| c.correct).sum();
    card(&mut html, "correct", &format!("{correct} / {}", e.n));
    if let Some(last) = page.metrics.last() {
        card(&mut html, &format!("train accuracy, epoch {}", last.epoch), &layout::percent(last.train_acc, 2));
        card(&mut html, &format!("validation loss, epoch {}", last.epoch), &format!("{:.4}", last.val_loss));
    }
    if let Some((epoch, val_acc)) = crate::run::best_epoch(page.metrics) {
        card(&mut html, &format!("best validation accuracy (epoch {epoch})"), &layout::percent(val_acc, 2));
    }
    let seconds: f64 = page.metrics.iter().map(|m| m.seconds).sum();
    if completed > 0 {
        card(&mut html, "training time", &duration(seconds));
    }
    html.push_str("</div>\n");

    if page.metrics.is_empty() {
        html.push_str("<p>metrics.jsonl records no completed epoch, so there are no training curves.</p>\n");
    }
    let (curves, others): (Vec<&Figure>, Vec<&Figure>) =
        page.figures.iter().partition(|f| f.file == super::ACCURACY_PNG || f.file == super::LOSS_PNG);
    if !curves.is_empty() {
        html.push_str("<h2>Training curves</h2>\n<div class=\"pair\">\n");
        for f in curves {
            figure(&mut html, f);
        }
        html.push_str("</div>\n");
    }
    for f in others {
        let _ = writeln!(html, "<h2>{}</h2>", escape(f.heading));
        figure(&mut html, f);
        if f.file == super::CONFUSION_PNG {
            tables(&mut html, e);
        }
    }

    html.push_str(
        "<h2>Epochs</h2>\n<table>\n<tr><th>epoch</th><th>seconds</th><th>train loss</th>\
                   <th>train accuracy</th><th>validation loss</th><th>validation accuracy</th></tr>\n",
    );
    for m in page.metrics {
        let _ = writeln!(
            html,
            "<tr><td class=\"n\">{}</td><td class=\"n\">{:.1}</td><td class=\"n\">{:.4}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{:.4}</td><td class=\"n\">{}</td></tr>",
            m.epoch,
            m.seconds,
            m.train_loss,
            layout::percent(m.train_acc, 2),
            m.val_loss,
            layout::percent(m.val_acc, 2)
        );
    }
    html.push_str("</table>\n");

    html.push_str("<h2>Configuration</h2>\n<table>\n");
    for (key, value) in config_rows(config) {
        let _ = writeln!(html, "<tr><th>{}</th><td>{}</td></tr>", escape(&key), escape(&value));
    }
    html.push_str("</table>\n</body>\n</html>\n");
    html
}

fn card(html: &mut String, key: &str, value: &str) {
    let _ = writeln!(
        html,
        "<div class=\"card\"><div class=\"v\">{}</div><div class=\"k\">{}</div></div>",
        escape(value),
        escape(key)
    );
}

fn figure(html: &mut String, f: &Figure) {
    let _ = writeln!(html, "<figure><img alt=\"{}\" src=\"{}\"></figure>", escape(f.heading), data_uri(f.png));
}

/// The most confused pairs and the per-class numbers, side by side.
fn tables(html: &mut String, e: &Evaluation) {
    html.push_str("<div class=\"tables\">\n<div>\n<h3>Most confused pairs</h3>\n");
    if e.most_confused.is_empty() {
        html.push_str("<p>None: no image was misclassified.</p>\n");
    } else {
        html.push_str("<table>\n<tr><th>true class</th><th>predicted as</th><th>images</th><th>share of the true class</th></tr>\n");
        for pair in e.most_confused.iter().take(CONFUSED_PAIRS) {
            let n = e.per_class.iter().find(|c| c.class == pair.truth).map_or(0, |c| c.n);
            let share = if n == 0 { 0.0 } else { pair.count as f64 / n as f64 };
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                escape(&pair.truth),
                escape(&pair.predicted),
                pair.count,
                layout::percent(share, 1)
            );
        }
        html.push_str("</table>\n");
    }
    html.push_str("</div>\n<div>\n<h3>Per class</h3>\n<table>\n<tr><th>class</th><th>images</th><th>correct</th><th>accuracy</th></tr>\n");
    for c in &e.per_class {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&c.class),
            c.n,
            c.correct,
            layout::percent(c.accuracy, 1)
        );
    }
    html.push_str("</table>\n</div>\n</div>\n");
}

/// The run's settings as (key, value) rows, nested objects flattened to `outer.inner` keys.
fn config_rows(config: &RunConfig) -> Vec<(String, String)> {
    let value = serde_json::to_value(config).unwrap_or(serde_json::Value::Null);
    let mut rows = Vec::new();
    flatten("", &value, &mut rows);
    rows
}

fn flatten(prefix: &str, value: &serde_json::Value, rows: &mut Vec<(String, String)>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&key, inner, rows);
            }
        }
        Value::Array(items) => {
            let text: Vec<String> =
                items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect();
            rows.push((prefix.to_string(), text.join(", ")));
        }
        Value::String(s) => rows.push((prefix.to_string(), s.clone())),
        Value::Null => rows.push((prefix.to_string(), "none".into())),
        other => rows.push((prefix.to_string(), other.to_string())),
    }
}

/// `data:image/png;base64,...` for `png`.
pub fn data_uri(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png))
}

/// `text` with the five HTML-special characters escaped, safe in text and in quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds as `1h 02m`, `3m 05s` or `42.0s`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "unknown".into();
    }
    let whole = seconds.round() as u64;
    if whole >= 3600 {
        format!("{}h {:02}m", whole / 3600, whole % 3600 / 60)
    } else if whole >= 60 {
        format!("{}m {:02}s", whole / 60, whole % 60)
    } else {
        format!("{seconds:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(escape(r#"<b>"cat" & 'dog'</b>"#), "&lt;b&gt;&quot;cat&quot; &amp; &#39;dog&#39;&lt;/b&gt;");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn data_uri_is_standard_base64() {
        // RFC 4648 section 10 test vector.
        assert_eq!(data_uri(b"foobar"), "data:image/png;base64,Zm9vYmFy");
        assert_eq!(data_uri(b"fo"), "data:image/png;base64,Zm8=");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(42.04), "42.0s");
        assert_eq!(duration(185.0), "3m 05s");
        assert_eq!(duration(3725.0), "1h 02m");
        assert_eq!(duration(f64::NAN), "unknown");
    }

    #[test]
    fn config_is_flattened_with_dotted_keys() {
        let mut rows = Vec::new();
        let value = serde_json::json!({"a": 1, "opt": {"beta": 0.9}, "classes": ["x", "y"], "s": "t"});
        flatten("", &value, &mut rows);
        let get = |k: &str| rows.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("a"), Some("1"));
        assert_eq!(get("opt.beta"), Some("0.9"));
        assert_eq!(get("classes"), Some("x, y"));
        assert_eq!(get("s"), Some("t"));
    }
}
