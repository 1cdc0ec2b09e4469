//! Scene-change score, the same measure as FFmpeg's `select` filter `scene` variable
//! (libavfilter/vf_select.c): the mean absolute difference (MAFD) of two consecutive pictures over
//! all planes, and the score `min(mafd, |mafd - previous mafd|) / 100` clipped to 0..1, so a cut
//! scores high while steady motion (high but constant MAFD) does not.
//!
//! [`sad`] is the only heavy part and is kept separate so a GPU kernel can replace it.

/// Sum of absolute differences of two equally long 8-bit buffers.
///
/// # Panics
/// Never; only the common prefix is compared when the lengths differ.
pub fn sad(a: &[u8], b: &[u8]) -> u64 {
    // Chunked so the inner loop vectorises and the u32 partial sums cannot overflow
    // (4096 * 255 < 2^32).
    let mut total = 0u64;
    for (ca, cb) in a.chunks(4096).zip(b.chunks(4096)) {
        let s: u32 = ca
            .iter()
            .zip(cb)
            .map(|(&x, &y)| u32::from(x.abs_diff(y)))
            .sum();
        total += u64::from(s);
    }
    total
}

/// Scores each picture against the previous one.
///
/// ```
/// use vidlm_media::SceneDetector;
/// let mut d = SceneDetector::default();
/// assert_eq!(d.push(&[10u8; 64]), 0.0); // the first picture has nothing to compare with
/// assert_eq!(d.push(&[10u8; 64]), 0.0);
/// assert!(d.push(&[200u8; 64]) > 0.9); // a cut
/// ```
#[derive(Debug, Default, Clone)]
pub struct SceneDetector {
    prev: Vec<u8>,
    prev_mafd: f64,
    have_prev: bool,
}

impl SceneDetector {
    /// Scores `pixels` (all planes of one picture, 8-bit, the same layout for every call) and
    /// remembers it. Returns 0 for the first picture or after a size change.
    pub fn push(&mut self, pixels: &[u8]) -> f64 {
        let mut score = 0.0;
        if self.have_prev && self.prev.len() == pixels.len() && !pixels.is_empty() {
            let mafd = sad(&self.prev, pixels) as f64 / pixels.len() as f64;
            score = score_from_mafd(mafd, self.prev_mafd);
            self.prev_mafd = mafd;
        }
        self.prev.clear();
        self.prev.extend_from_slice(pixels);
        self.have_prev = true;
        score
    }

    /// Forgets the previous picture (after a seek).
    pub fn reset(&mut self) {
        self.have_prev = false;
        self.prev_mafd = 0.0;
    }
}

/// The score from this picture's MAFD and the previous one's (FFmpeg's formula).
pub fn score_from_mafd(mafd: f64, prev_mafd: f64) -> f64 {
    let diff = (mafd - prev_mafd).abs();
    (mafd.min(diff) / 100.0).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sad_counts_differences() {
        let a: Vec<u8> = (0..10_000u32).map(|i| (i % 256) as u8).collect();
        let b: Vec<u8> = a.iter().map(|&x| x.saturating_add(3)).collect();
        let want: u64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| u64::from(x.abs_diff(y)))
            .sum();
        assert_eq!(sad(&a, &b), want);
        assert_eq!(sad(&a, &a), 0);
    }

    #[test]
    fn steady_motion_is_not_a_cut() {
        // MAFD 40 then 40 again: the second scores min(40, 0) = 0.
        assert_eq!(score_from_mafd(40.0, 40.0), 0.0);
        assert!((score_from_mafd(60.0, 5.0) - 0.55).abs() < 1e-12);
    }
}
