//! SVG charts of the experiment pages, drawn on the server as markup (no script). Every
//! text that comes from data goes through `esc`; numbers are formatted here. Pure
//! functions: tested without a server.

use std::fmt::Write as _;

use crate::web::charts::{esc, nice_step};

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
