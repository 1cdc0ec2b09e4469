//! Intervals and tests: Wilson 95% intervals for accuracies, McNemar's exact test for paired
//! differences between two conditions.

/// The normal quantile of a 95% two-sided interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score 95% interval of `k` successes in `n` trials, `(low, high)`; `(0, 1)` for
/// `n == 0`.
///
/// ```
/// let (lo, hi) = vidlm_eval::stats::wilson(8, 10);
/// assert!((lo - 0.4902).abs() < 1e-4 && (hi - 0.9433).abs() < 1e-4);
/// ```
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// McNemar's exact two-sided test on paired outcomes: `b` items right only under the first
/// condition, `c` right only under the second. The p-value of `min(b, c)` or fewer among `b + c`
/// discordant pairs under Binomial(b + c, 1/2), doubled, at most 1; 1 when there are none.
///
/// ```
/// // 1 vs 6 discordant: 2 * (1 + 7) / 2^7.
/// assert!((vidlm_eval::stats::mcnemar(1, 6) - 0.125).abs() < 1e-12);
/// ```
pub fn mcnemar(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // Sum the pmf in log space so large n does not overflow.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// Paired counts of two conditions over the same items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Paired {
    /// Right under both.
    pub both: usize,
    /// Right only under the first.
    pub only_first: usize,
    /// Right only under the second.
    pub only_second: usize,
    /// Wrong under both.
    pub neither: usize,
}

impl Paired {
    /// Counts `pairs` of (first right, second right).
    pub fn of(pairs: impl IntoIterator<Item = (bool, bool)>) -> Self {
        let mut p = Self::default();
        for (a, b) in pairs {
            match (a, b) {
                (true, true) => p.both += 1,
                (true, false) => p.only_first += 1,
                (false, true) => p.only_second += 1,
                (false, false) => p.neither += 1,
            }
        }
        p
    }

    /// McNemar's exact p-value of the difference.
    pub fn p_value(&self) -> f64 {
        mcnemar(self.only_first, self.only_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_hand_computed() {
        // 8/10: center (0.8 + 1.92073/10) / 1.384146 = 0.716740; half 1.415985 * 0.160011
        // = 0.226573.
        let (lo, hi) = wilson(8, 10);
        assert!((lo - 0.490162).abs() < 1e-5, "{lo}");
        assert!((hi - 0.943318).abs() < 1e-5, "{hi}");
        // 0/10: [0, z^2/(n+z^2)] = [0, 3.841459/13.841459].
        let (lo, hi) = wilson(0, 10);
        assert!(lo.abs() < 1e-12);
        assert!((hi - 3.841459 / 13.841459).abs() < 1e-6);
        // Symmetric around 1/2 at k = n/2.
        let (lo, hi) = wilson(50, 100);
        assert!((lo + hi - 1.0).abs() < 1e-12);
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }

    #[test]
    fn mcnemar_hand_computed() {
        assert_eq!(mcnemar(0, 0), 1.0);
        // 0 vs 5: 2 / 32.
        assert!((mcnemar(0, 5) - 0.0625).abs() < 1e-12);
        assert!((mcnemar(5, 0) - 0.0625).abs() < 1e-12);
        // 2 vs 8: 2 * (1 + 10 + 45) / 1024.
        assert!((mcnemar(2, 8) - 112.0 / 1024.0).abs() < 1e-12);
        // Equal counts: p = 1 (capped).
        assert_eq!(mcnemar(3, 3), 1.0);
        // Large n stays finite: 400 vs 600 is far from chance.
        assert!(mcnemar(400, 600) < 1e-9);
        let p = Paired::of([(true, true), (true, false), (false, true), (false, true)]);
        assert_eq!(
            (p.both, p.only_first, p.only_second, p.neither),
            (1, 1, 2, 0)
        );
        assert_eq!(p.p_value(), 1.0);
    }
}
