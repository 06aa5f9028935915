//! SVG charts of the experiment and survey pages, drawn on the server as markup (no
//! script). Every text that comes from data (metric, variant, segment names) goes
//! through `esc` (`error::html_escape`); numbers are formatted here. Pure functions: tested without a server.

use std::fmt::Write as _;

use super::error::html_escape as esc;

/// A "nice" step for about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// One row of a forest plot: an estimate with its 95 % CI.
#[derive(Debug, Clone, PartialEq)]
pub struct ForestRow {
    pub label: String,
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// A forest plot of relative lifts (fractions: 0.18 = +18 %) with a line at zero. A row
/// whose CI excludes zero is drawn as significant (up or down).
pub fn forest(rows: &[ForestRow]) -> String {
    // An estimate without finite bounds has nothing to draw.
    let rows: Vec<&ForestRow> = rows
        .iter()
        .filter(|r| r.value.is_finite() && r.lo.is_finite() && r.hi.is_finite())
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let (label_w, plot_w, row_h) = (220.0, 460.0, 30.0);
    let reach = rows
        .iter()
        .flat_map(|r| [r.lo.abs(), r.hi.abs(), r.value.abs()])
        .fold(0.01f64, f64::max);
    let step = nice_step(2.0 * reach, 6.0);
    let lim = (reach / step).ceil() * step;
    let x = |v: f64| label_w + (v.clamp(-lim, lim) + lim) / (2.0 * lim) * plot_w;
    let height = 30.0 + rows.len() as f64 * row_h;
    let mut s = format!(
        r#"<svg class="chart forest" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="relative lift with 95% confidence intervals">"#,
        w = label_w + plot_w + 20.0,
        h = height
    );
    let mut t = -lim;
    while t <= lim + step / 2.0 {
        let _ = write!(
            s,
            r#"<line class="grid" x1="{x:.1}" x2="{x:.1}" y1="4" y2="{y2:.1}"/><text class="tick" x="{x:.1}" y="{ty:.1}" text-anchor="middle">{l:+.0}%</text>"#,
            x = x(t),
            y2 = height - 22.0,
            ty = height - 8.0,
            l = t * 100.0
        );
        t += step;
    }
    let _ = write!(
        s,
        r#"<line class="zero" x1="{x:.1}" x2="{x:.1}" y1="4" y2="{y2:.1}"/>"#,
        x = x(0.0),
        y2 = height - 22.0
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 18.0 + i as f64 * row_h;
        let class = if r.lo > 0.0 {
            "up"
        } else if r.hi < 0.0 {
            "down"
        } else {
            "flat"
        };
        let _ = write!(
            s,
            r#"<g class="row {class}"><title>{t}: {v:+.2}% (95% CI {lo:+.2}% to {hi:+.2}%)</title><text class="label" x="{lx}" y="{ty:.1}" text-anchor="end">{t}</text><line class="ci" x1="{x1:.1}" x2="{x2:.1}" y1="{y:.1}" y2="{y:.1}"/><circle cx="{cx:.1}" cy="{y:.1}" r="5"/></g>"#,
            t = esc(&r.label),
            v = r.value * 100.0,
            lo = r.lo * 100.0,
            hi = r.hi * 100.0,
            lx = label_w - 10.0,
            ty = y + 4.0,
            x1 = x(r.lo),
            x2 = x(r.hi),
            cx = x(r.value)
        );
    }
    s.push_str("</svg>");
    s
}

/// Lines of cumulative counts over days, one per series, with a legend.
pub fn cumulative_lines(days: &[String], series: &[(String, Vec<i64>)]) -> String {
    if days.is_empty() || series.is_empty() {
        return String::new();
    }
    let (left, plot_w, plot_h, top) = (50.0, 560.0, 160.0, 10.0);
    let totals: Vec<Vec<i64>> = series
        .iter()
        .map(|(_, v)| {
            v.iter()
                .scan(0i64, |acc, x| {
                    *acc += x;
                    Some(*acc)
                })
                .collect()
        })
        .collect();
    let max = totals.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let n = days.len();
    let x = |i: usize| {
        if n > 1 {
            left + i as f64 / (n - 1) as f64 * plot_w
        } else {
            left + plot_w / 2.0
        }
    };
    let y = |v: i64| top + plot_h - v as f64 / max * plot_h;
    let mut s = format!(
        r#"<svg class="chart lines" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="users exposed over time, per variant">"#,
        w = left + plot_w + 140.0,
        h = top + plot_h + 30.0 + 13.0 * series.len() as f64
    );
    let _ = write!(
        s,
        r#"<line class="axis" x1="{left}" x2="{r}" y1="{b}" y2="{b}"/><text class="tick" x="{tx}" y="{ty}" text-anchor="end">{max}</text><text class="tick" x="{tx}" y="{b}" text-anchor="end">0</text>"#,
        r = left + plot_w,
        b = top + plot_h,
        tx = left - 6.0,
        ty = top + 8.0,
        max = max as i64
    );
    let _ = write!(
        s,
        r#"<text class="tick" x="{left}" y="{ty}">{a}</text><text class="tick" x="{r}" y="{ty}" text-anchor="end">{b}</text>"#,
        r = left + plot_w,
        ty = top + plot_h + 18.0,
        a = esc(&days[0]),
        b = esc(&days[n - 1])
    );
    // Legend labels at the lines' ends, pushed apart so equal totals stay readable.
    let mut label_y: Vec<(usize, f64)> = totals
        .iter()
        .enumerate()
        .map(|(k, t)| (k, y(*t.last().unwrap_or(&0)) + 4.0))
        .collect();
    label_y.sort_by(|a, b| a.1.total_cmp(&b.1));
    for i in 1..label_y.len() {
        if label_y[i].1 < label_y[i - 1].1 + 13.0 {
            label_y[i].1 = label_y[i - 1].1 + 13.0;
        }
    }
    let ly_of = |k: usize| {
        label_y
            .iter()
            .find(|(j, _)| *j == k)
            .map_or(0.0, |(_, v)| *v)
    };
    for (k, ((name, _), tot)) in series.iter().zip(&totals).enumerate() {
        let points: Vec<String> = tot
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let last = *tot.last().unwrap_or(&0);
        let _ = write!(
            s,
            r#"<g class="series s{k}"><title>{name}: {last} users</title><polyline points="{p}"/><circle cx="{cx:.1}" cy="{cy:.1}" r="3"/><text class="label" x="{lx:.1}" y="{ly:.1}">{name} ({last})</text></g>"#,
            k = k % 6,
            name = esc(name),
            p = points.join(" "),
            cx = x(n - 1),
            cy = y(last),
            lx = left + plot_w + 8.0,
            ly = ly_of(k)
        );
    }
    s.push_str("</svg>");
    s
}

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
    fn text_from_data_is_escaped() {
        let svg = forest(&[ForestRow {
            label: "<script>alert(1)</script> & co".into(),
            value: 0.1,
            lo: 0.02,
            hi: 0.18,
        }]);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; co"));
        assert!(
            svg.contains(r#"class="row up""#),
            "a CI above zero is significant"
        );
    }

    #[test]
    fn the_forest_axis_is_symmetric_around_zero_and_nice() {
        let svg = forest(&[
            ForestRow {
                label: "a".into(),
                value: 0.18,
                lo: -0.013,
                hi: 0.373,
            },
            ForestRow {
                label: "b".into(),
                value: f64::NAN,
                lo: f64::NEG_INFINITY,
                hi: 0.0,
            },
        ]);
        assert!(svg.contains(">-40%<") && svg.contains(">+40%<") && svg.contains(">+0%<"));
        assert!(svg.contains(r#"class="row flat""#));
        assert_eq!(
            svg.matches("<circle").count(),
            1,
            "the row without bounds is left out"
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

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

    #[test]
    fn cumulative_lines_add_up() {
        let svg = cumulative_lines(
            &["2026-02-01".into(), "2026-02-02".into()],
            &[
                ("control".into(), vec![3, 4]),
                ("treatment".into(), vec![2, 6]),
            ],
        );
        assert!(svg.contains("control (7)") && svg.contains("treatment (8)"));
    }
}
