//! Chart primitives the kinds' pages share (their charts live in their folders): axis
//! steps, and `esc` for every text that comes from data. Charts are drawn on the server
//! as SVG markup (no script), the one place markup is built outside templates.

pub(crate) use super::error::html_escape as esc;

/// A "nice" step for about `n` ticks over `span`.
pub(crate) fn nice_step(span: f64, n: f64) -> f64 {
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
