//! Renderers: labelled attention heatmaps as SVG. They read weights; they never recompute.

use attend_models::TokenInfo;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

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

/// One SVG page with a heatmap per panel (queries as rows, keys as columns), token labels on
/// both axes, a title per panel and a colour scale.
pub fn heatmaps_svg(title: &str, tokens: &[TokenInfo], panels: &[(String, Vec<f32>)]) -> String {
    let n = tokens.len().max(1);
    let cell = if panels.len() > 1 {
        (240 / n).clamp(4, 14)
    } else {
        (720 / n).clamp(6, 24)
    } as f32;
    let label_w = 9.0
        * tokens
            .iter()
            .map(|t| t.text.chars().count())
            .max()
            .unwrap_or(1)
            .min(14) as f32;
    let font = (cell * 0.8).clamp(6.0, 12.0);
    let show_labels = cell >= 6.0;
    let pw = label_w + cell * n as f32 + 20.0;
    let ph = label_w + cell * n as f32 + 36.0;
    let cols = if panels.len() > 1 { 4 } else { 1 };
    let rows = panels.len().div_ceil(cols);
    let width = pw * cols as f32 + 100.0;
    let height = ph * rows as f32 + 50.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         font-family=\"DejaVu Sans, Arial, sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"16\" font-weight=\"bold\">{}</text>\n",
        esc(title)
    );
    for (p, (name, w)) in panels.iter().enumerate() {
        let ox = 10.0 + (p % cols) as f32 * pw;
        let oy = 40.0 + (p / cols) as f32 * ph;
        let gx = ox + label_w;
        let gy = oy + 20.0 + label_w;
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\">{}</text>\n",
            gx,
            oy + 12.0,
            esc(name)
        );
        for (i, t) in tokens.iter().enumerate() {
            if !show_labels {
                break;
            }
            let c = i as f32 * cell + cell * 0.75;
            // keys along the top, rotated; queries down the left
            s += &format!(
                "<text transform=\"translate({:.1},{:.1}) rotate(-60)\" font-size=\"{font:.1}\">{}</text>\n",
                gx + i as f32 * cell + cell * 0.6,
                gy - 4.0,
                esc(&t.text)
            );
            s += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{font:.1}\" text-anchor=\"end\">{}</text>\n",
                gx - 4.0,
                gy + c,
                esc(&t.text)
            );
        }
        for q in 0..tokens.len() {
            for k in 0..tokens.len() {
                let v = w[q * tokens.len() + k];
                s += &format!(
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" fill=\"{}\"><title>{} → {}: {v:.4}</title></rect>\n",
                    gx + k as f32 * cell,
                    gy + q as f32 * cell,
                    colour(v),
                    esc(&tokens[q].text),
                    esc(&tokens[k].text)
                );
            }
        }
    }
    // colour scale
    let sx = width - 70.0;
    for i in 0..=20 {
        let w = 1.0 - i as f32 / 20.0;
        s += &format!(
            "<rect x=\"{sx:.1}\" y=\"{:.1}\" width=\"16\" height=\"10\" fill=\"{}\"/>\n",
            50.0 + i as f32 * 10.0,
            colour(w)
        );
    }
    s += &format!(
        "<text x=\"{:.1}\" y=\"58\" font-size=\"10\">1.0</text>\n",
        sx + 20.0
    );
    s += &format!(
        "<text x=\"{:.1}\" y=\"158\" font-size=\"10\">0.5</text>\n",
        sx + 20.0
    );
    s += &format!(
        "<text x=\"{:.1}\" y=\"258\" font-size=\"10\">0.0</text>\n",
        sx + 20.0
    );
    s += &format!("<text x=\"{sx:.1}\" y=\"42\" font-size=\"10\">weight</text>\n");
    s += "</svg>\n";
    s
}
