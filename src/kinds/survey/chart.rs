//! SVG charts of the survey pages, drawn on the server as markup (no script). Every
//! text that comes from data goes through `esc`; numbers are formatted here. Pure
//! functions: tested without a server.

use std::fmt::Write as _;

use crate::web::charts::{esc, nice_step};

/// One period of a score trend.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendPoint {
    pub label: String,
    pub responses: i64,
    /// NPS with its 95 % CI (None when the period has no scored response).
    pub nps: Option<(f64, f64, f64)>,
}

/// NPS per period as a line inside its 95 % CI band, over bars of responses.
pub fn nps_trend(points: &[TrendPoint]) -> String {
    if points.is_empty() {
        return String::new();
    }
    let (left, plot_w, plot_h, top, bars_h) = (50.0, 600.0, 200.0, 10.0, 50.0);
    let n = points.len();
    let slot = plot_w / n as f64;
    let cx = |i: usize| left + (i as f64 + 0.5) * slot;
    let scored: Vec<(usize, (f64, f64, f64))> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.nps.map(|v| (i, v)))
        .collect();
    let lo = scored
        .iter()
        .map(|(_, v)| v.1)
        .fold(0.0f64, f64::min)
        .max(-100.0);
    let hi = scored
        .iter()
        .map(|(_, v)| v.2)
        .fold(0.0f64, f64::max)
        .min(100.0);
    let step = nice_step((hi - lo).max(10.0), 5.0);
    let (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
    let y = |v: f64| top + (hi - v.clamp(lo, hi)) / (hi - lo) * plot_h;
    let base = top + plot_h + 20.0 + bars_h;
    let max_resp = points.iter().map(|p| p.responses).max().unwrap_or(1).max(1) as f64;
    let mut s = format!(
        r#"<svg class="chart trend" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="NPS per period with 95% confidence band, and responses">"#,
        w = left + plot_w + 20.0,
        h = base + 22.0
    );
    let mut t = lo;
    while t <= hi + step / 2.0 {
        let _ = write!(
            s,
            r#"<line class="{c}" x1="{left}" x2="{r}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{tx}" y="{ty:.1}" text-anchor="end">{t:+.0}</text>"#,
            c = if t == 0.0 { "zero" } else { "grid" },
            r = left + plot_w,
            y = y(t),
            tx = left - 6.0,
            ty = y(t) + 4.0
        );
        t += step;
    }
    if !scored.is_empty() {
        let upper: Vec<String> = scored
            .iter()
            .map(|(i, v)| format!("{:.1},{:.1}", cx(*i), y(v.2)))
            .collect();
        let lower: Vec<String> = scored
            .iter()
            .rev()
            .map(|(i, v)| format!("{:.1},{:.1}", cx(*i), y(v.1)))
            .collect();
        let _ = write!(
            s,
            r#"<polygon class="band" points="{} {}"/>"#,
            upper.join(" "),
            lower.join(" ")
        );
        let line: Vec<String> = scored
            .iter()
            .map(|(i, v)| format!("{:.1},{:.1}", cx(*i), y(v.0)))
            .collect();
        let _ = write!(s, r#"<polyline class="line" points="{}"/>"#, line.join(" "));
    }
    for (i, p) in points.iter().enumerate() {
        let bh = p.responses as f64 / max_resp * bars_h;
        let title = match p.nps {
            Some((v, a, b)) => format!(
                "{}: NPS {v:+.1} (95% CI {a:+.1} to {b:+.1}), {} responses",
                p.label, p.responses
            ),
            None => format!("{}: {} responses, no score", p.label, p.responses),
        };
        let _ = write!(
            s,
            r#"<g class="period"><title>{t}</title><rect class="resp" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{bh:.1}"/>"#,
            t = esc(&title),
            x = cx(i) - slot * 0.35,
            y = base - bh,
            w = slot * 0.7
        );
        if let Some((v, ..)) = p.nps {
            let _ = write!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5"/>"#,
                x = cx(i),
                y = y(v)
            );
        }
        s.push_str("</g>");
    }
    let every = n.div_ceil(8).max(1);
    for (i, p) in points.iter().enumerate().filter(|(i, _)| i % every == 0) {
        let _ = write!(
            s,
            r#"<text class="tick" x="{x:.1}" y="{y:.1}" text-anchor="middle">{l}</text>"#,
            x = cx(i),
            y = base + 16.0,
            l = esc(&p.label)
        );
    }
    let _ = write!(
        s,
        r#"<text class="tick" x="{left}" y="{y:.1}">responses (max {m})</text>"#,
        y = base - bars_h - 4.0,
        m = max_resp as i64
    );
    s.push_str("</svg>");
    s
}

/// Bars of how many responses gave each score `lo..=lo + counts.len() - 1`; `class_of`
/// names a score's group (detractor/passive/promoter).
pub fn score_bars(lo: i64, counts: &[i64], class_of: impl Fn(i64) -> &'static str) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let (bw, gap, h, top) = (36.0, 6.0, 140.0, 16.0);
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let total: i64 = counts.iter().sum();
    let width = 20.0 + counts.len() as f64 * (bw + gap);
    let mut s = format!(
        r#"<svg class="chart scores" width="{width}" height="{hh}" viewBox="0 0 {width} {hh}" role="img" aria-label="responses per score">"#,
        hh = top + h + 22.0
    );
    for (k, c) in counts.iter().enumerate() {
        let score = lo + k as i64;
        let bh = (*c as f64 / max * h).max(if *c > 0 { 2.0 } else { 0.0 });
        let x = 10.0 + k as f64 * (bw + gap);
        let share = if total > 0 {
            100.0 * *c as f64 / total as f64
        } else {
            0.0
        };
        let _ = write!(
            s,
            r#"<g class="{cls}"><title>score {score}: {c} responses ({share:.1}%)</title><rect x="{x:.1}" y="{y:.1}" width="{bw}" height="{bh:.1}"/><text class="tick" x="{tx:.1}" y="{ly:.1}" text-anchor="middle">{c}</text><text class="label" x="{tx:.1}" y="{sy:.1}" text-anchor="middle">{score}</text></g>"#,
            cls = class_of(score),
            y = top + h - bh,
            tx = x + bw / 2.0,
            ly = top + h - bh - 4.0,
            sy = top + h + 16.0
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nps_band_encloses_the_line() {
        let pts = vec![
            TrendPoint {
                label: "w1".into(),
                responses: 30,
                nps: Some((10.0, -5.0, 25.0)),
            },
            TrendPoint {
                label: "w2".into(),
                responses: 0,
                nps: None,
            },
            TrendPoint {
                label: "w3".into(),
                responses: 40,
                nps: Some((20.0, 8.0, 32.0)),
            },
        ];
        let svg = nps_trend(&pts);
        assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
        assert!(svg.contains("<polygon class=\"band\""));
        assert!(svg.contains("w2: 0 responses, no score"));
        assert!(nps_trend(&[]).is_empty());
    }

    #[test]
    fn score_bars_label_every_score() {
        let svg = score_bars(0, &[1, 0, 0, 0, 0, 0, 2, 3, 0, 4, 5], |s| match s {
            0..=6 => "detractor",
            7 | 8 => "passive",
            _ => "promoter",
        });
        assert_eq!(svg.matches("<rect").count(), 11);
        assert!(svg.contains("score 10: 5 responses (33.3%)"));
        assert_eq!(svg.matches("class=\"promoter\"").count(), 2);
    }
}
