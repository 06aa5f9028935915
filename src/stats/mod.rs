//! Experiment and survey statistics: pure functions, no I/O, tested against reference
//! values (domain reference sections 5 and 6). Results never contain NaN: what cannot
//! be computed is `None` or a [`StatsError`] that says why.

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

/// z for a two-sided 95 % interval.
pub const Z95: f64 = 1.959964;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    #[error("{0} has no users")]
    Empty(String),
    #[error("{0}")]
    Invalid(String),
}

/// Two-sided p-value of a standard normal statistic.
fn p_normal(z: f64) -> f64 {
    let n = Normal::standard();
    // The survival function keeps tiny p-values (1 - cdf rounds them to 0).
    2.0 * n.sf(z.abs())
}

/// An estimate with its standard error, p-value and 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub se: f64,
    /// `None` when the standard error is zero (no variance): no test is possible.
    pub p_value: Option<f64>,
    pub ci_low: f64,
    pub ci_high: f64,
}

fn z_estimate(value: f64, se: f64) -> Estimate {
    let p_value = (se > 0.0).then(|| p_normal(value / se));
    Estimate {
        value,
        se,
        p_value,
        ci_low: value - Z95 * se,
        ci_high: value + Z95 * se,
    }
}

/// Summary of one arm: users, and the mean and variance of the per-user metric (for a
/// conversion metric, mean = rate and variance = p(1-p)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arm {
    pub n: u64,
    pub mean: f64,
    pub var: f64,
}

impl Arm {
    /// A conversion arm: `x` of `n` users converted.
    pub fn proportion(x: u64, n: u64) -> Arm {
        let p = if n == 0 { 0.0 } else { x as f64 / n as f64 };
        Arm {
            n,
            mean: p,
            var: p * (1.0 - p),
        }
    }
}

/// Treatment against control.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Absolute difference `mean_B - mean_A`.
    pub diff: Estimate,
    /// Relative lift `mean_B / mean_A - 1` (delta method); `None` when the control mean
    /// is zero.
    pub rel_lift: Option<Estimate>,
    /// Welch-Satterthwaite degrees of freedom (mean metrics only).
    pub df: Option<f64>,
}

fn check(a: &Arm, b: &Arm) -> Result<(), StatsError> {
    if a.n == 0 {
        return Err(StatsError::Empty("the control arm".into()));
    }
    if b.n == 0 {
        return Err(StatsError::Empty("the treatment arm".into()));
    }
    if !(a.mean.is_finite() && b.mean.is_finite() && a.var.is_finite() && b.var.is_finite())
        || a.var < 0.0
        || b.var < 0.0
    {
        return Err(StatsError::Invalid(
            "means and variances must be finite, variances not negative".into(),
        ));
    }
    Ok(())
}

/// Relative lift with the delta-method standard error
/// `sqrt(varB/(nB mA^2) + mB^2 varA/(nA mA^4))`.
fn relative_lift(a: &Arm, b: &Arm) -> Option<Estimate> {
    if a.mean == 0.0 {
        return None;
    }
    let (na, nb) = (a.n as f64, b.n as f64);
    let lift = b.mean / a.mean - 1.0;
    let se =
        (b.var / (nb * a.mean.powi(2)) + b.mean.powi(2) * a.var / (na * a.mean.powi(4))).sqrt();
    Some(z_estimate(lift, se))
}

/// Two proportions: difference with `se = sqrt(pA(1-pA)/nA + pB(1-pB)/nB)`, two-sided
/// normal p-value, and the relative lift.
pub fn two_proportions(control: Arm, treatment: Arm) -> Result<Comparison, StatsError> {
    check(&control, &treatment)?;
    let se = (control.var / control.n as f64 + treatment.var / treatment.n as f64).sqrt();
    Ok(Comparison {
        diff: z_estimate(treatment.mean - control.mean, se),
        rel_lift: relative_lift(&control, &treatment),
        df: None,
    })
}

/// Welch's t-test for a difference of means (unequal variances).
pub fn welch(control: Arm, treatment: Arm) -> Result<Comparison, StatsError> {
    check(&control, &treatment)?;
    if control.n < 2 || treatment.n < 2 {
        return Err(StatsError::Invalid(
            "a mean comparison needs at least two users per arm".into(),
        ));
    }
    let (va, vb) = (
        control.var / control.n as f64,
        treatment.var / treatment.n as f64,
    );
    let se = (va + vb).sqrt();
    let diff = treatment.mean - control.mean;
    let df = if va + vb > 0.0 {
        (va + vb).powi(2)
            / (va.powi(2) / (control.n as f64 - 1.0) + vb.powi(2) / (treatment.n as f64 - 1.0))
    } else {
        (control.n + treatment.n - 2) as f64
    };
    let (p_value, t_crit) = match StudentsT::new(0.0, 1.0, df) {
        Ok(t) if se > 0.0 => (Some(2.0 * t.sf((diff / se).abs())), t.inverse_cdf(0.975)),
        Ok(t) => (None, t.inverse_cdf(0.975)),
        Err(_) => (None, Z95),
    };
    let est = Estimate {
        value: diff,
        se,
        p_value,
        ci_low: diff - t_crit * se,
        ci_high: diff + t_crit * se,
    };
    Ok(Comparison {
        diff: est,
        rel_lift: relative_lift(&control, &treatment),
        df: Some(df),
    })
}

/// Per-arm sums of a ratio metric: users, the sums of each user's numerator `x` and
/// denominator `y`, and the second moments *around the arm's means*
/// (`sxx = sum((x - mean_x)^2)`, likewise `syy`, and `sxy` for the cross product).
/// Centred sums keep their precision where `sum(x^2) - n mean^2` cancels to nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RatioSums {
    pub n: u64,
    pub x: f64,
    pub y: f64,
    pub sxx: f64,
    pub syy: f64,
    pub sxy: f64,
}

impl RatioSums {
    /// The sums of per-user values, computed in two passes.
    pub fn of(users: &[(f64, f64)]) -> RatioSums {
        let n = users.len();
        if n == 0 {
            return RatioSums::default();
        }
        let (x, y) = users
            .iter()
            .fold((0.0, 0.0), |(a, b), (u, v)| (a + u, b + v));
        let (mx, my) = (x / n as f64, y / n as f64);
        let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
        for (u, v) in users {
            sxx += (u - mx) * (u - mx);
            syy += (v - my) * (v - my);
            sxy += (u - mx) * (v - my);
        }
        RatioSums {
            n: n as u64,
            x,
            y,
            sxx,
            syy,
            sxy,
        }
    }
}

impl RatioSums {
    /// The arm of `R = sum(x) / sum(y)`: `mean` = R and `var` the per-user variance of
    /// the delta method, `(var_x - 2 R cov_xy + R^2 var_y) / mean_y^2`, so `var / n` is
    /// the variance of R.
    pub fn arm(&self, which: &str) -> Result<Arm, StatsError> {
        if self.n == 0 {
            return Err(StatsError::Empty(which.into()));
        }
        if self.n < 2 {
            return Err(StatsError::Invalid(format!(
                "{which}: a ratio needs at least two users"
            )));
        }
        let n = self.n as f64;
        let (mx, my) = (self.x / n, self.y / n);
        if my == 0.0 || !my.is_finite() || !mx.is_finite() {
            return Err(StatsError::Invalid(format!(
                "{which}: the denominator is zero for every user"
            )));
        }
        let vx = self.sxx / (n - 1.0);
        let vy = self.syy / (n - 1.0);
        let cxy = self.sxy / (n - 1.0);
        let r = mx / my;
        let var = ((vx - 2.0 * r * cxy + r * r * vy) / (my * my)).max(0.0);
        Ok(Arm {
            n: self.n,
            mean: r,
            var,
        })
    }
}

/// A ratio metric: the difference of the ratios with the delta-method standard error,
/// a two-sided normal p-value, and the relative lift.
pub fn ratio(control: RatioSums, treatment: RatioSums) -> Result<Comparison, StatsError> {
    let a = control.arm("the control arm")?;
    let b = treatment.arm("the treatment arm")?;
    two_proportions(a, b)
}

/// Holm-Bonferroni adjusted p-values (the same order as `p`; `None` stays `None`):
/// sort ascending, multiply the i-th smallest by (m - i), keep them monotone, cap at 1.
/// Controls the family-wise error rate over every metric x variant comparison.
pub fn holm(p: &[Option<f64>]) -> Vec<Option<f64>> {
    let mut idx: Vec<usize> = (0..p.len()).filter(|i| p[*i].is_some()).collect();
    idx.sort_by(|a, b| {
        p[*a]
            .partial_cmp(&p[*b])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let m = idx.len();
    let mut out = vec![None; p.len()];
    let mut running: f64 = 0.0;
    for (rank, i) in idx.into_iter().enumerate() {
        let adj = (p[i].unwrap_or(1.0) * (m - rank) as f64).min(1.0);
        running = running.max(adj);
        out[i] = Some(running);
    }
    out
}

/// Sample-ratio mismatch: chi-square goodness of fit of observed counts against the
/// planned split (shares, normalised). Returns (statistic, p-value).
pub fn srm(observed: &[u64], planned: &[f64]) -> Result<(f64, f64), StatsError> {
    if observed.len() != planned.len() || observed.len() < 2 {
        return Err(StatsError::Invalid(format!(
            "a sample-ratio check needs one planned share per variant and at least two variants (got {} counts, {} shares)",
            observed.len(),
            planned.len()
        )));
    }
    if planned.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err(StatsError::Invalid(
            "planned shares must be positive".into(),
        ));
    }
    let total: u64 = observed.iter().sum();
    if total == 0 {
        return Err(StatsError::Empty("the experiment".into()));
    }
    let share_sum: f64 = planned.iter().sum();
    let stat: f64 = observed
        .iter()
        .zip(planned)
        .map(|(o, s)| {
            let e = total as f64 * s / share_sum;
            (*o as f64 - e).powi(2) / e
        })
        .sum();
    let chi = ChiSquared::new((observed.len() - 1) as f64)
        .map_err(|e| StatsError::Invalid(e.to_string()))?;
    Ok((stat, chi.sf(stat)))
}

/// Net Promoter Score of 0-10 scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nps {
    pub responses: u64,
    pub promoters: u64,
    pub passives: u64,
    pub detractors: u64,
    pub nps: f64,
    pub se: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// NPS = 100 (P - D) / n with `se = 100 sqrt((p + d - (p - d)^2) / n)`.
pub fn nps(scores: &[u8]) -> Result<Nps, StatsError> {
    if let Some(bad) = scores.iter().find(|s| **s > 10) {
        return Err(StatsError::Invalid(format!(
            "NPS scores are 0-10, got {bad}"
        )));
    }
    let n = scores.len() as u64;
    if n == 0 {
        return Err(StatsError::Empty("the survey".into()));
    }
    let promoters = scores.iter().filter(|s| **s >= 9).count() as u64;
    let detractors = scores.iter().filter(|s| **s <= 6).count() as u64;
    let (p, d) = (promoters as f64 / n as f64, detractors as f64 / n as f64);
    let nps = 100.0 * (p - d);
    let se = 100.0 * ((p + d - (p - d).powi(2)) / n as f64).max(0.0).sqrt();
    Ok(Nps {
        responses: n,
        promoters,
        passives: n - promoters - detractors,
        detractors,
        nps,
        se,
        // NPS lies in [-100, 100]; so does its interval.
        ci_low: (nps - Z95 * se).max(-100.0),
        ci_high: (nps + Z95 * se).min(100.0),
    })
}

/// CSAT: the share (0-1) of 4 and 5 on a 1-5 scale.
pub fn csat(scores: &[u8]) -> Result<f64, StatsError> {
    if let Some(bad) = scores.iter().find(|s| !(1..=5).contains(*s)) {
        return Err(StatsError::Invalid(format!(
            "CSAT scores are 1-5, got {bad}"
        )));
    }
    if scores.is_empty() {
        return Err(StatsError::Empty("the survey".into()));
    }
    Ok(scores.iter().filter(|s| **s >= 4).count() as f64 / scores.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(users: &[(f64, f64)]) -> RatioSums {
        RatioSums::of(users)
    }

    #[test]
    fn a_ratio_over_a_constant_denominator_is_a_mean() {
        let a: Vec<(f64, f64)> = [1.0, 2.0, 3.0, 4.0].iter().map(|x| (*x, 1.0)).collect();
        let arm = sums(&a).arm("a").unwrap();
        assert!((arm.mean - 2.5).abs() < 1e-12);
        assert!((arm.var - 5.0 / 3.0).abs() < 1e-12, "sample variance");
    }

    #[test]
    fn ratio_matches_a_hand_computed_delta_method() {
        // Control: x = [2, 4, 0], y = [1, 2, 1] -> R = 6/4 = 1.5; mean_y = 4/3,
        // var_x = 4, var_y = 1/3, cov = 1 -> var = (4 - 3 + 0.75) / (16/9) = 0.984375.
        let c = sums(&[(2.0, 1.0), (4.0, 2.0), (0.0, 1.0)]);
        let arm = c.arm("control").unwrap();
        assert!((arm.mean - 1.5).abs() < 1e-12);
        assert!((arm.var - 0.984375).abs() < 1e-12, "{}", arm.var);
        let t = sums(&[(3.0, 1.0), (5.0, 2.0), (1.0, 1.0)]);
        let cmp = ratio(c, t).unwrap();
        assert!((cmp.diff.value - 0.75).abs() < 1e-12);
        let tb = t.arm("t").unwrap();
        let se = (arm.var / 3.0 + tb.var / 3.0).sqrt();
        assert!((cmp.diff.se - se).abs() < 1e-12);
        let swapped = ratio(t, c).unwrap();
        assert!((swapped.diff.value + cmp.diff.value).abs() < 1e-12);
        assert!(ratio(sums(&[(1.0, 0.0), (2.0, 0.0)]), t).is_err());
        assert!(ratio(RatioSums::default(), t).is_err());
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn two_proportions_match_the_reference() {
        let c =
            two_proportions(Arm::proportion(250, 5000), Arm::proportion(295, 5000)).expect("ok");
        let cases = [
            (c.diff.value, 0.009, 1e-9),
            (c.diff.se, 0.0045391, 1e-6),
            (c.diff.value / c.diff.se, 1.98275, 1e-5),
            (c.diff.p_value.expect("p"), 0.04739, 1e-5),
            (c.diff.ci_low, 0.000103, 1e-6),
            (c.diff.ci_high, 0.017897, 1e-6),
        ];
        for (got, want, tol) in cases {
            assert!(close(got, want, tol), "{got} vs {want}");
        }
        let r = c.rel_lift.expect("lift");
        for (got, want, tol) in [
            (r.value, 0.18, 1e-9),
            (r.se, 0.098654, 1e-6),
            (r.p_value.expect("p"), 0.06807, 1e-5),
            (r.ci_low, -0.01336, 1e-5),
            (r.ci_high, 0.37336, 1e-5),
        ] {
            assert!(close(got, want, tol), "{got} vs {want}");
        }
    }

    #[test]
    fn srm_matches_the_reference() {
        let (stat, p) = srm(&[5000, 5100], &[0.5, 0.5]).expect("ok");
        assert!(close(stat, 0.990099, 1e-6), "{stat}");
        assert!(close(p, 0.31972, 1e-5), "{p}");
        assert!(srm(&[5000], &[1.0]).is_err());
        assert!(srm(&[0, 0], &[0.5, 0.5]).is_err());
    }

    #[test]
    fn welch_agrees_with_a_known_example() {
        // n=10, mean 20, sd 4 vs n=12, mean 23, sd 5 (hand-computed).
        let c = welch(
            Arm {
                n: 10,
                mean: 20.0,
                var: 16.0,
            },
            Arm {
                n: 12,
                mean: 23.0,
                var: 25.0,
            },
        )
        .expect("ok");
        let se = (1.6f64 + 25.0 / 12.0).sqrt();
        assert!(close(c.diff.se, se, 1e-12));
        let df = (1.6f64 + 25.0 / 12.0).powi(2)
            / (1.6f64.powi(2) / 9.0 + (25.0f64 / 12.0).powi(2) / 11.0);
        assert!(close(c.df.expect("df"), df, 1e-9), "{:?}", c.df);
        assert!(close(df, 19.98, 0.01), "{df}");
        // p computed independently (regularised incomplete beta): 0.1337179.
        let p = c.diff.p_value.expect("p");
        assert!(close(p, 0.1337179, 1e-6), "{p}");
    }

    #[test]
    fn nps_and_csat() {
        let scores = [10, 9, 9, 8, 7, 6, 3, 10, 0, 9];
        let n = nps(&scores).expect("ok");
        assert_eq!((n.promoters, n.passives, n.detractors), (5, 2, 3));
        assert!(close(n.nps, 20.0, 1e-9));
        let (p, d) = (0.5f64, 0.3f64);
        assert!(close(
            n.se,
            100.0 * ((p + d - (p - d).powi(2)) / 10.0).sqrt(),
            1e-9
        ));
        assert!(nps(&[]).is_err());
        assert!(nps(&[11]).is_err());
        assert!(close(csat(&[5, 4, 3, 1]).expect("ok"), 0.5, 1e-12));
        assert!(csat(&[0]).is_err());
    }

    #[test]
    fn holm_matches_statsmodels() {
        // statsmodels multipletests([0.01, 0.04, 0.03, 0.005], method="holm")[1]
        let adj = holm(&[Some(0.01), Some(0.04), Some(0.03), None, Some(0.005)]);
        let want = [0.03, 0.06, 0.06, f64::NAN, 0.02];
        for (a, w) in adj.iter().zip(want) {
            match a {
                Some(a) => assert!(close(*a, w, 1e-12), "{adj:?}"),
                None => assert!(w.is_nan()),
            }
        }
    }

    #[test]
    fn variance_keeps_its_precision_for_large_values() {
        // 1e8 +- 1: sum(x^2) - n mean^2 cancels to 0 in doubles; centred sums do not.
        let a: Vec<(f64, f64)> = [1e8 - 1.0, 1e8, 1e8 + 1.0]
            .iter()
            .map(|x| (*x, 1.0))
            .collect();
        let s = RatioSums::of(&a);
        assert!(close(s.sxx, 2.0, 1e-6), "{s:?}");
        assert!(close(s.arm("a").unwrap().var, 1.0, 1e-6));
    }

    #[test]
    fn nps_intervals_stay_within_the_scale() {
        let r = nps(&[10, 10, 10, 9, 6]).expect("nps");
        assert!(close(r.nps, 60.0, 1e-9));
        assert!(r.ci_high <= 100.0 && r.ci_low >= -100.0, "{r:?}");
        let all = nps(&[10, 10]).expect("nps");
        assert_eq!((all.ci_low, all.ci_high), (100.0, 100.0));
    }

    #[test]
    fn tiny_p_values_stay_positive() {
        // 6,000 / 4,000 against a 50/50 plan: chi-square 400, p = 5.3e-89 (scipy
        // chi2.sf(400, 1)); 1 - cdf would read 0.
        let (stat, p) = srm(&[6000, 4000], &[0.5, 0.5]).expect("srm");
        assert!(close(stat, 400.0, 1e-9));
        assert!(p > 0.0 && p < 1e-80, "{p}");
        // z = 10: two-sided p = 1.52e-23 (scipy 2 * norm.sf(10)).
        assert!(close(p_normal(10.0) / 1.523_970_604_832_105e-23, 1.0, 1e-6));
    }

    #[test]
    fn edge_cases_never_produce_nan() {
        // Zero users.
        assert_eq!(
            two_proportions(Arm::proportion(0, 0), Arm::proportion(1, 10)),
            Err(StatsError::Empty("the control arm".into()))
        );
        // Zero conversions in control: the lift is undefined, the difference is not.
        let c = two_proportions(Arm::proportion(0, 100), Arm::proportion(5, 100)).expect("ok");
        assert!(c.rel_lift.is_none());
        assert!(c.diff.p_value.expect("p").is_finite());
        // No variance at all: no p-value rather than NaN.
        let c = two_proportions(Arm::proportion(0, 100), Arm::proportion(0, 100)).expect("ok");
        assert_eq!(c.diff.p_value, None);
        assert_eq!(c.diff.value, 0.0);
        let c = welch(
            Arm {
                n: 5,
                mean: 1.0,
                var: 0.0,
            },
            Arm {
                n: 5,
                mean: 1.0,
                var: 0.0,
            },
        )
        .expect("ok");
        assert_eq!(c.diff.p_value, None);
    }

    #[test]
    fn swapping_arms_negates_the_difference() {
        for xa in [0u64, 1, 7, 50, 99] {
            for xb in [0u64, 3, 40, 100] {
                let (a, b) = (Arm::proportion(xa, 100), Arm::proportion(xb, 100));
                let ab = two_proportions(a, b).expect("ok");
                let ba = two_proportions(b, a).expect("ok");
                assert!(close(ab.diff.value, -ba.diff.value, 1e-12));
                assert!(close(ab.diff.se, ba.diff.se, 1e-12));
                assert_eq!(
                    ab.diff.p_value.map(|p| (p * 1e9).round()),
                    ba.diff.p_value.map(|p| (p * 1e9).round())
                );
                assert!(ab.diff.ci_low <= ab.diff.value && ab.diff.value <= ab.diff.ci_high);
            }
        }
    }
}
