//! Renderers: labelled attention heatmaps as SVG, and the same picture as PNG. They read
//! weights; they never recompute.

use attend_models::TokenInfo;

use crate::escape_html as esc;
use crate::{Error, Result};

/// White → deep blue, for a weight in [0, 1].
fn colour(w: f32) -> String {
    let t = w.clamp(0.0, 1.0).sqrt(); // sqrt: small weights stay visible
    let lerp = |a: f32, b: f32| (a + (b - a) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        lerp(255.0, 8.0),
        lerp(255.0, 48.0),
        lerp(255.0, 107.0)
    )
}

/// The most heatmap cells one picture may hold (each is an SVG element; 750 000 took 5.5 s
/// and 1.1 GB to rasterise to PNG here).
pub const MAX_CELLS: usize = 1 << 19;

/// One SVG page with a heatmap per panel (queries as rows, keys as columns), token labels on
/// both axes, a title per panel and a colour scale.
pub fn heatmaps_svg(title: &str, tokens: &[TokenInfo], panels: &[(String, Vec<f32>)]) -> String {
    let n = tokens.len().max(1);
    let cell = if panels.len() > 1 {
        (240 / n).clamp(4, 14)
    } else {
        (720 / n).clamp(6, 24)
    } as f32;
    // labels stay legible: at least 8 px, every `step`-th one where cells are smaller
    let font = (cell * 0.8).clamp(8.0, 12.0);
    let step = ((font * 1.15) / cell).ceil().max(1.0) as usize;
    let label = |t: &TokenInfo| -> String {
        let s: String = t.text.chars().take(14).collect();
        if t.text.chars().count() > 14 {
            s + "…"
        } else {
            s
        }
    };
    let label_w = 7.0
        * tokens
            .iter()
            .map(|t| t.text.chars().count())
            .max()
            .unwrap_or(1)
            .clamp(3, 15) as f32
        + 14.0;
    // the colour scale fitted to the largest weight shown (and printed on the scale)
    let vmax = panels
        .iter()
        .flat_map(|(_, w)| w.iter().copied())
        .fold(0.0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    let pw = label_w + cell * n as f32 + 24.0;
    let ph = label_w + cell * n as f32 + 40.0;
    let cols = if panels.len() > 1 { 4 } else { 1 };
    let rows = panels.len().div_ceil(cols);
    let width = pw * cols as f32 + 110.0;
    let height = (ph * rows as f32 + 50.0).max(320.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         font-family=\"DejaVu Sans, Arial, sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"16\" font-weight=\"bold\">{}</text>\n",
        esc(title)
    );
    for (p, (name, w)) in panels.iter().enumerate() {
        let ox = 10.0 + (p % cols) as f32 * pw;
        let oy = 40.0 + (p / cols) as f32 * ph;
        let gx = ox + label_w + 14.0;
        let gy = oy + 20.0 + label_w;
        let side = cell * n as f32;
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\">{}</text>\n",
            gx,
            oy + 12.0,
            esc(name)
        );
        // axis titles: keys along the top, queries down the left
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#666\" text-anchor=\"end\">key →</text>\n\
             <text transform=\"translate({:.1},{:.1}) rotate(-90)\" font-size=\"10\" fill=\"#666\" text-anchor=\"end\">query →</text>\n",
            gx + side,
            oy + 12.0,
            ox + 8.0,
            gy
        );
        for (i, t) in tokens.iter().enumerate() {
            if i % step != 0 {
                continue;
            }
            let c = i as f32 * cell + cell / 2.0 + font * 0.35;
            s += &format!(
                "<text transform=\"translate({:.1},{:.1}) rotate(-60)\" font-size=\"{font:.1}\">{}</text>\n",
                gx + i as f32 * cell + cell * 0.6,
                gy - 4.0,
                esc(&label(t))
            );
            s += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{font:.1}\" text-anchor=\"end\">{}</text>\n",
                gx - 4.0,
                gy + c,
                esc(&label(t))
            );
        }
        for q in 0..tokens.len() {
            for k in 0..tokens.len() {
                let v = w[q * tokens.len() + k];
                s += &format!(
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" fill=\"{}\"><title>{} → {}: {v:.4}</title></rect>\n",
                    gx + k as f32 * cell,
                    gy + q as f32 * cell,
                    colour(v / vmax),
                    esc(&tokens[q].text),
                    esc(&tokens[k].text)
                );
            }
        }
    }
    // colour scale, fitted: 0 to the largest weight shown
    let sx = width - 80.0;
    for i in 0..=20 {
        let w = 1.0 - i as f32 / 20.0;
        s += &format!(
            "<rect x=\"{sx:.1}\" y=\"{:.1}\" width=\"16\" height=\"10\" fill=\"{}\"/>\n",
            50.0 + i as f32 * 10.0,
            colour(w)
        );
    }
    for (y, v) in [(58.0, vmax), (158.0, vmax / 2.0), (258.0, 0.0)] {
        s += &format!(
            "<text x=\"{:.1}\" y=\"{y:.0}\" font-size=\"10\">{v:.3}</text>\n",
            sx + 20.0
        );
    }
    s += &format!(
        "<text x=\"{sx:.1}\" y=\"30\" font-size=\"10\">weight</text>\n\
         <text x=\"{sx:.1}\" y=\"42\" font-size=\"9\" fill=\"#666\">(0 to max shown)</text>\n"
    );
    s += "</svg>\n";
    s
}

/// Red (negative) → white → green (positive), for `d` in [−1, 1]: a change of log p.
fn diverging(d: f32) -> String {
    let t = d.clamp(-1.0, 1.0).abs().sqrt();
    let (r, g, b) = if d < 0.0 {
        (200.0, 40.0, 40.0)
    } else {
        (30.0, 140.0, 70.0)
    };
    let lerp = |to: f32| (255.0 + (to - 255.0) * t).round() as u8;
    format!("#{:02x}{:02x}{:02x}", lerp(r), lerp(g), lerp(b))
}

/// The effect picture: for each source, the attention the predicting position paid it (mean of
/// heads and layers, blue) beside the change of log p(target) its knockout made (red: it
/// supported the target; green: it worked against it), and the head-ablation grid (layers ×
/// heads, same colours). Every number is read from `e`.
pub fn effect_svg(title: &str, e: &attend_models::trace::effect::Effect) -> String {
    use attend_models::trace::effect::{AttentionFrom, Measure};
    let encoder = e.measure == Measure::Embedding;
    let dname = e.delta_name();
    // an encoder's 1 − cos has no sign: one hue (red, as a large change)
    let hue = |d: f32| if encoder { -d.abs() } else { d };
    let n = e.sources.len();
    let row_h = 18.0f32;
    let label_w = 8.0
        * e.sources
            .iter()
            .map(|s| s.label.chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, 18) as f32;
    let bar_w = 160.0f32;
    let (ax, dx) = (20.0 + label_w + 40.0, 20.0 + label_w + 40.0 + bar_w + 90.0);
    let top_w = dx + 2.0 * bar_w + 180.0;
    let list_h = 124.0 + row_h * n as f32;
    let cell = if e.heads > 0 {
        (420.0 / e.heads as f32)
            .min(480.0 / e.layers.max(1) as f32)
            .clamp(6.0, 22.0)
    } else {
        0.0
    };
    let grid_h = if e.head_delta.is_empty() {
        0.0
    } else {
        70.0 + cell * e.layers as f32
    };
    let width = top_w.max(120.0 + cell * e.heads as f32 + 120.0);
    let height = list_h + grid_h + 20.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         font-family=\"DejaVu Sans, Arial, sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"16\" font-weight=\"bold\">{}</text>\n\
         <text x=\"10\" y=\"42\" font-size=\"12\">{}</text>\n",
        esc(title),
        esc(&e.headline())
    );
    let rho = |r: Option<f32>| r.map_or("—".to_string(), |r| format!("{r:+.2}"));
    let what = match (e.spec.knockout, encoder) {
        (_, true) => "from every position",
        (attend_models::trace::effect::Knockout::Later, _) => "from every later position",
        (attend_models::trace::effect::Knockout::Predicting, _) => "from the predicting position",
    };
    s += &format!(
        "<text x=\"10\" y=\"60\" font-size=\"12\">knockout of each {}: its attention edges {what}{}</text>\n\
         <text x=\"10\" y=\"76\" font-size=\"12\">Spearman rank correlation with |{dname}|: attention \
         (mean of heads and layers) {}, rollout {}</text>\n",
        if e.spec.words { "word" } else { "token" },
        e.spec
            .layers
            .as_ref()
            .map_or(String::new(), |r| format!(", layers {}..{}", r.start, r.end)),
        rho(e.spearman_attention()),
        rho(e.spearman_rollout())
    );
    let y0 = 106.0;
    s += &format!(
        "<text x=\"{ax:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#555\">attention {}</text>\n\
         <text x=\"{dx:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#555\">{dname} when knocked out</text>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#555\">{}</text>\n",
        y0 - 8.0,
        esc(&match e.attention_from {
            AttentionFrom::Predicting => format!("from {:?}", e.tokens[e.predicting()].text),
            AttentionFrom::First => "from [CLS]".to_string(),
            AttentionFrom::EveryQuery => "received".to_string(),
        }),
        y0 - 8.0,
        dx + 2.0 * bar_w + 8.0,
        y0 - 8.0,
        if encoder { "" } else { "→ top-1 after" },
    );
    let amax = e
        .sources
        .iter()
        .map(|s| s.attention)
        .fold(0.0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    let dmax = e
        .sources
        .iter()
        .map(|s| s.delta.abs())
        .fold(0.0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    let mid = if encoder { dx } else { dx + bar_w };
    s += &format!(
        "<line x1=\"{mid:.1}\" y1=\"{:.1}\" x2=\"{mid:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>\n",
        y0 - 4.0,
        y0 + row_h * n as f32
    );
    for (i, src) in e.sources.iter().enumerate() {
        let y = y0 + row_h * i as f32;
        let grey = if src.removes_edges { "#222" } else { "#aaa" };
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\" fill=\"{grey}\">{}</text>\n",
            20.0 + label_w,
            y + 13.0,
            esc(&src.label)
        );
        let aw = bar_w * src.attention / amax;
        s += &format!(
            "<rect x=\"{ax:.1}\" y=\"{:.1}\" width=\"{aw:.1}\" height=\"12\" fill=\"#3b6fb6\"><title>{:.4}</title></rect>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#333\">{:.3}</text>\n",
            y + 3.0,
            src.attention,
            ax + aw + 4.0,
            y + 13.0,
            src.attention
        );
        if !src.removes_edges {
            s += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#aaa\">— ({})</text>\n",
                mid + 4.0,
                y + 13.0,
                if encoder {
                    "the whole text: nothing left to read"
                } else {
                    "read by no later position"
                }
            );
            continue;
        }
        let w = bar_w * src.delta.abs() / dmax;
        // (an encoder's bars all grow right, from the left edge)
        let x = if encoder {
            dx
        } else if src.delta < 0.0 {
            mid - w
        } else {
            mid
        };
        let w = if encoder { 2.0 * w } else { w };
        s += &format!(
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"12\" fill=\"{}\"><title>{:+.4}</title></rect>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#333\">{} {}</text>\n",
            y + 3.0,
            diverging(hue(src.delta).signum()),
            src.delta,
            dx + 2.0 * bar_w + 8.0,
            y + 13.0,
            if encoder {
                format!("{:.4}", src.delta)
            } else {
                format!("{:+.3}", src.delta)
            },
            if encoder {
                String::new()
            } else {
                esc(&format!("→ {:?}", src.top))
            }
        );
    }
    if !e.head_delta.is_empty() {
        let gy = list_h + 30.0;
        let hmax = e
            .head_delta
            .iter()
            .map(|d| d.abs())
            .fold(0.0f32, f32::max)
            .max(f32::MIN_POSITIVE);
        s += &format!(
            "<text x=\"10\" y=\"{:.1}\" font-size=\"12\">heads ablated ({}): {dname}, layers down, heads across (largest |Δ| {hmax:.4})</text>\n",
            gy - 14.0,
            match e.spec.ablation {
                attend_models::trace::effect::Ablation::Zero => "output zeroed",
                attend_models::trace::effect::Ablation::Mean => "output replaced by its mean",
            }
        );
        let gx = 70.0;
        for h in 0..e.heads {
            if e.heads <= 16 || h % 5 == 0 {
                s += &format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\">{h}</text>\n",
                    gx + cell * (h as f32 + 0.5),
                    gy - 2.0
                );
            }
        }
        for l in 0..e.layers {
            let y = gy + cell * l as f32;
            if e.layers <= 16 || l % 5 == 0 {
                s += &format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"end\">layer {l}</text>\n",
                    gx - 4.0,
                    y + cell * 0.75
                );
            }
            for h in 0..e.heads {
                let d = e.head_delta[l * e.heads + h];
                s += &format!(
                    "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" fill=\"{}\" stroke=\"#eee\" stroke-width=\"0.5\"><title>layer {l} head {h}: {d:+.4}</title></rect>\n",
                    gx + cell * h as f32,
                    diverging(hue(d) / hmax)
                );
            }
        }
        // the scale
        let sx = gx + cell * e.heads as f32 + 30.0;
        let steps = if encoder { 10 } else { 20 };
        for i in 0..=steps {
            let d = if encoder {
                -(1.0 - i as f32 / 10.0)
            } else {
                1.0 - i as f32 / 10.0
            };
            s += &format!(
                "<rect x=\"{sx:.1}\" y=\"{:.1}\" width=\"14\" height=\"8\" fill=\"{}\"/>\n",
                gy + i as f32 * 8.0,
                diverging(d)
            );
        }
        let ticks: &[(usize, f32)] = if encoder {
            &[(0, hmax), (10, 0.0)]
        } else {
            &[(0, hmax), (10, 0.0), (20, -hmax)]
        };
        for &(i, v) in ticks {
            s += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\">{v:+.3}</text>\n",
                sx + 18.0,
                gy + i as f32 * 8.0 + 7.0
            );
        }
    }
    // (the embedded font has no U+2212: the minus sign drawn as a hyphen-minus, so that no
    // fallback font is picked for it)
    (s + "</svg>\n").replace('\u{2212}', "-")
}

/// DejaVu Sans, subset to Latin, Greek, Cyrillic and punctuation (scripts/make_font.py), so that
/// labels render on machines with no fonts installed.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");

/// "Nice" tick values covering `[lo, hi]` (about five).
fn ticks(lo: f32, hi: f32) -> Vec<f32> {
    let span = (hi - lo).max(1e-6);
    let raw = span / 5.0;
    let mag = 10f32.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-3 {
        out.push(v);
        v += step;
    }
    out
}

/// A training-loss chart: each step's loss (faint), its moving average, and held-out points,
/// over steps; with `accuracy`, held-out accuracy (0–100%) on a right-hand axis.
pub fn loss_curve_svg(
    title: &str,
    losses: &[f32],
    held: &[(usize, f32)],
    accuracy: &[(usize, f32)],
) -> String {
    let (w, h) = (760.0f32, 420.0f32);
    let (l, r, t, b) = (
        64.0f32,
        if accuracy.is_empty() { 24.0 } else { 64.0 },
        44.0f32,
        52.0f32,
    );
    let (pw, ph) = (w - l - r, h - t - b);
    let steps = losses
        .len()
        .max(held.iter().map(|p| p.0).max().unwrap_or(0))
        .max(1) as f32;
    let finite = losses
        .iter()
        .chain(held.iter().map(|p| &p.1))
        .copied()
        .filter(|v| v.is_finite());
    let (mut lo, mut hi) = finite.fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    lo = lo.min(0.0);
    let y_of = |v: f32| t + ph - (v - lo) / (hi - lo).max(1e-6) * ph;
    let x_of = |s: f32| l + s / steps * pw;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{l}\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        esc(title)
    );
    for v in ticks(lo, hi) {
        let y = y_of(v);
        s += &format!(
            "<line x1=\"{l}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>\n",
            l + pw,
            l - 6.0,
            y + 4.0
        );
    }
    for v in ticks(0.0, steps) {
        let x = x_of(v);
        s += &format!(
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{v:.0}</text>\n",
            t + ph,
            t + ph + 5.0,
            t + ph + 18.0
        );
    }
    s += &format!(
        "<rect x=\"{l}\" y=\"{t}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">step</text>\n\
         <text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">loss (nats per token)</text>\n",
        l + pw / 2.0,
        h - 12.0,
        t + ph / 2.0
    );
    let path = |pts: &mut dyn Iterator<Item = (f32, f32)>| {
        let mut d = String::new();
        for (i, (x, y)) in pts.enumerate() {
            d += &format!("{}{:.1},{:.1} ", if i == 0 { "M" } else { "L" }, x, y);
        }
        d
    };
    let raw = path(
        &mut losses
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (x_of(i as f32 + 1.0), y_of(v))),
    );
    s += &format!("<path d=\"{raw}\" fill=\"none\" stroke=\"#9ecae1\" stroke-width=\"0.8\"/>\n");
    let win = (losses.len() / 50).max(1);
    let smooth = path(&mut (0..losses.len()).map(|i| {
        let a = i.saturating_sub(win - 1);
        let m = losses[a..=i].iter().sum::<f32>() / (i + 1 - a) as f32;
        (x_of(i as f32 + 1.0), y_of(m))
    }));
    s += &format!("<path d=\"{smooth}\" fill=\"none\" stroke=\"#08306b\" stroke-width=\"2\"/>\n");
    for &(st, v) in held.iter().filter(|p| p.1.is_finite()) {
        s += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"#e6550d\"/>\n",
            x_of(st as f32),
            y_of(v)
        );
    }
    let mut legend = vec![
        ("#08306b", format!("training loss (mean of {win} steps)")),
        ("#e6550d", "held-out loss".to_string()),
    ];
    if !accuracy.is_empty() {
        let ya = |a: f32| t + ph - a * ph;
        for k in 0..=4 {
            let a = k as f32 / 4.0;
            s += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#31a354\">{:.0}%</text>\n",
                l + pw + 6.0,
                ya(a) + 4.0,
                a * 100.0
            );
        }
        let acc = path(&mut accuracy.iter().map(|&(st, a)| (x_of(st as f32), ya(a))));
        s += &format!(
            "<path d=\"{acc}\" fill=\"none\" stroke=\"#31a354\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/>\n"
        );
        legend.push(("#31a354", "held-out accuracy (right axis)".to_string()));
    }
    for (i, (c, text)) in legend.iter().enumerate() {
        let y = t + 16.0 + i as f32 * 16.0;
        s += &format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"14\" height=\"4\" fill=\"{c}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            l + pw - 250.0,
            y - 4.0,
            l + pw - 230.0,
            y + 1.0,
            esc(text)
        );
    }
    s + "</svg>\n"
}

/// What a PNG shows for a character no font on this machine draws: a visible box rather
/// than a blank (CJK labels on a machine without CJK fonts, say), with a note at the bottom.
pub const PLACEHOLDER: char = '□';

/// `svg` with every character that no face of `db` covers replaced by [`PLACEHOLDER`] (or `?`
/// where not even that is covered), and a line saying so.
fn placeholders(svg: &str, db: &resvg::usvg::fontdb::Database) -> String {
    let covered = |c: char| {
        db.faces().any(|f| {
            db.with_face_data(f.id, |data, index| {
                ttf_parser::Face::parse(data, index)
                    .ok()
                    .and_then(|face| face.glyph_index(c))
                    .is_some()
            })
            .unwrap_or(false)
        })
    };
    let wanted: std::collections::BTreeSet<char> = svg
        .chars()
        .filter(|c| !c.is_ascii() && !c.is_whitespace())
        .collect();
    let missing: std::collections::BTreeSet<char> =
        wanted.into_iter().filter(|&c| !covered(c)).collect();
    if missing.is_empty() {
        return svg.to_string();
    }
    let ph = if covered(PLACEHOLDER) {
        PLACEHOLDER
    } else {
        '?'
    };
    let mut out: String = svg
        .chars()
        .map(|c| if missing.contains(&c) { ph } else { c })
        .collect();
    if let Some(at) = out.rfind("</svg>") {
        let note = format!(
            "<text x=\"10\" y=\"99%\" font-size=\"10\" fill=\"#666\">{ph}</text>\n\
             <text x=\"24\" y=\"99%\" font-size=\"10\" fill=\"#666\">: {} character(s) no font \
             here draws (CJK: install fonts-noto-cjk, or open the SVG or HTML)</text>\n",
            missing.len()
        );
        out.insert_str(at, &note);
    }
    out
}

/// Rasterises an SVG made by [`heatmaps_svg`] to PNG bytes: the embedded font first, the system's
/// fonts as fallbacks for other scripts (CJK, emoji) where present.
pub fn svg_to_png(svg: &str) -> Result<Vec<u8>> {
    let mut opt = resvg::usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_font_data(FONT.to_vec());
    db.load_system_fonts();
    db.set_sans_serif_family("DejaVu Sans");
    let svg = placeholders(svg, db);
    let tree = resvg::usvg::Tree::from_str(&svg, &opt)
        .map_err(|e| Error::Render(format!("the SVG cannot be read: {e}")))?;
    let size = tree.size().to_int_size();
    let mut pixmap =
        resvg::tiny_skia::Pixmap::new(size.width(), size.height()).ok_or_else(|| {
            Error::Render(format!("the picture is too large to rasterise ({size:?})"))
        })?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| Error::Render(format!("encoding the PNG: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(text: &str, start: usize) -> TokenInfo {
        TokenInfo {
            id: 0,
            text: text.into(),
            start,
            end: start + text.len(),
        }
    }

    /// The top-left corner of the cell whose tooltip is `title`, read back from the SVG.
    fn cell(svg: &str, title: &str) -> (u32, u32, u32) {
        let end = svg.find(&format!("<title>{title}")).unwrap();
        let start = svg[..end].rfind("<rect").unwrap();
        let attr = |name: &str| -> f32 {
            let s = &svg[start..end];
            let i = s.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            s[i..i + s[i..].find('"').unwrap()].parse().unwrap()
        };
        (attr("x") as u32, attr("y") as u32, attr("width") as u32)
    }

    #[test]
    fn png_shows_the_cells_and_the_labels() {
        let tokens = [tok("animal", 0), tok("road", 7)];
        let panels = [("layer 0, head 0".to_string(), vec![1.0, 0.0, 0.25, 0.75])];
        let svg = heatmaps_svg("test", &tokens, &panels);
        let png = svg_to_png(&svg).unwrap();
        let pix = resvg::tiny_skia::Pixmap::decode_png(&png).unwrap();
        let at = |x: u32, y: u32| {
            let p = pix.pixel(x, y).unwrap();
            format!("#{:02x}{:02x}{:02x}", p.red(), p.green(), p.blue())
        };
        let (x, y, c) = cell(&svg, "animal → animal");
        assert_eq!(at(x + c / 2, y + c / 2), colour(1.0));
        let (x, y, c) = cell(&svg, "animal → road");
        assert_eq!(at(x + c / 2, y + c / 2), colour(0.0));
        let (x, y, c) = cell(&svg, "road → animal");
        assert_eq!(at(x + c / 2, y + c / 2), colour(0.25));
        // the row labels sit left of the grid: some pixels there are ink, not paper
        let (x, y, c) = cell(&svg, "road → animal");
        let ink = (x.saturating_sub(60)..x)
            .flat_map(|px| (y..y + c).map(move |py| (px, py)))
            .filter(|&(px, py)| pix.pixel(px, py).unwrap().red() < 128)
            .count();
        assert!(ink > 20, "no label drawn ({ink} dark pixels)");
    }

    /// A character no face draws becomes a visible placeholder, with a note; what the fonts
    /// draw is left alone.
    #[test]
    fn characters_without_a_font_get_a_placeholder() {
        let mut db = resvg::usvg::fontdb::Database::new();
        db.load_font_data(FONT.to_vec());
        let svg = "<svg xmlns=\"http://www.w3.org/2000/svg\"><text>東京 café</text></svg>";
        let out = placeholders(svg, &db);
        assert!(!out.contains('東') && !out.contains('京'), "{out}");
        assert!(out.contains("café"), "{out}");
        assert!(out.contains("2 character(s) no font"), "{out}");
        let plain = "<svg xmlns=\"http://www.w3.org/2000/svg\"><text>the café</text></svg>";
        assert_eq!(placeholders(plain, &db), plain);
    }
}
