//! The frame timeline of a stream: the presentation time of every frame and where decoding can
//! start (keyframes), read from the packets alone (demux, no decode), and the frame choices of
//! `frames:N` made on it.
//!
//! Times here are stream ticks relative to the first frame (the first frame is at 0).

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;

/// Which packet timestamp the timeline is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Domain {
    /// Presentation timestamps (every packet has one).
    Pts,
    /// Decode timestamps: containers without presentation times (AVI). On a constant-rate
    /// stream the set of decode times is the set of presentation times shifted by the reorder
    /// delay, which relative times cancel.
    Dts,
    /// No timestamps at all (raw elementary streams): frame `i` is at `i` frame durations.
    Count,
}

/// Timestamps beyond +-this many ticks are treated as missing: only damaged files have them,
/// and sums of sane ones never overflow.
pub(crate) const TICKS_LIMIT: i64 = i64::MAX / 8;

/// `t` when it is a usable timestamp.
pub(crate) fn sane(t: Option<i64>) -> Option<i64> {
    t.filter(|t| (-TICKS_LIMIT..=TICKS_LIMIT).contains(t))
}

/// One packet as the scan saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacketMeta {
    pub pts: Option<i64>,
    pub dts: Option<i64>,
    pub key: bool,
    /// Decoded but not shown (MP4 edit lists mark the packets before the edit this way).
    pub discard: bool,
}

impl PacketMeta {
    pub(crate) fn of(p: &ffmpeg::Packet) -> PacketMeta {
        use ffmpeg::packet::Ref;
        // SAFETY: reading plain fields of a valid packet.
        let flags = unsafe { (*p.as_ptr()).flags };
        PacketMeta {
            pts: sane(p.pts()),
            dts: sane(p.dts()),
            key: flags & ffi::AV_PKT_FLAG_KEY != 0,
            discard: flags & ffi::AV_PKT_FLAG_DISCARD != 0,
        }
    }
}

/// A point where decoding can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyPoint {
    /// The keyframe's time in the timeline's domain, relative to the first frame (may be
    /// negative for a keyframe that is decoded but not shown, before an MP4 edit list's start).
    pub time: i64,
    /// Its presentation and decode timestamps (absolute ticks), for the demuxer's seek.
    pub pts: Option<i64>,
    pub dts: Option<i64>,
    /// Every packet before this keyframe in decode order is shown before it (presentation
    /// times only): dropping them unread loses no frame at or after this keyframe.
    pub clean: bool,
}

/// Every frame of a stream, from a packet scan.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    pub domain: Domain,
    /// Frame times relative to the first frame, ascending and distinct.
    pub times: Vec<i64>,
    /// Keyframes in decode order, from the first one on.
    pub keys: Vec<KeyPoint>,
    /// Absolute tick of the first frame in the timeline's domain.
    pub origin: i64,
    /// Typical frame duration in ticks (median distance between frames).
    pub frame_ticks: i64,
    /// The frame distances are all equal (within a tick, or 1 % for millisecond time bases).
    pub constant_rate: bool,
}

impl Timeline {
    /// Builds the timeline from the packets of one stream in decode order. `fallback_ticks` is
    /// the frame duration used when there are no timestamps (from the declared frame rate).
    /// `None` when no packet can start decoding.
    pub(crate) fn build(packets: &[PacketMeta], fallback_ticks: i64) -> Option<Timeline> {
        let domain = if packets.iter().all(|p| p.pts.is_some()) {
            Domain::Pts
        } else if packets.iter().all(|p| p.dts.is_some()) {
            Domain::Dts
        } else {
            Domain::Count
        };
        let time = |i: usize, p: &PacketMeta| -> i64 {
            match domain {
                Domain::Pts => p.pts.unwrap_or(0),
                Domain::Dts => p.dts.unwrap_or(0),
                Domain::Count => (i as i64).saturating_mul(fallback_ticks.max(1)),
            }
        };
        // Decoding starts at the first keyframe; a stream without any key flag (some raw
        // streams) is decodable from its first packet.
        let start = packets.iter().position(|p| p.key).unwrap_or(0);
        let first = packets.get(start)?;
        let first_time = time(start, first);
        let mut times: Vec<i64> = packets
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, p)| !p.discard)
            .map(|(i, p)| time(i, p))
            // Leading pictures of an open GOP at the very start are not decodable.
            .filter(|&t| t >= first_time || first.discard)
            .collect();
        times.sort_unstable();
        times.dedup();
        let origin = *times.first()?;
        for t in &mut times {
            *t -= origin;
        }
        // Latest presentation time among the packets before each one, in decode order.
        let mut shown_before = i64::MIN;
        let mut keys: Vec<KeyPoint> = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if i >= start && p.key {
                keys.push(KeyPoint {
                    time: time(i, p) - origin,
                    pts: p.pts,
                    dts: p.dts,
                    clean: domain == Domain::Pts && p.pts.is_some_and(|t| t > shown_before),
                });
            }
            if let Some(t) = p.pts {
                shown_before = shown_before.max(t);
            }
        }
        if keys.is_empty() {
            keys.push(KeyPoint {
                time: first_time - origin,
                pts: first.pts,
                dts: first.dts,
                clean: false,
            });
        }
        let (frame_ticks, constant_rate) = rate(&times, fallback_ticks);
        Some(Timeline {
            domain,
            times,
            keys,
            origin,
            frame_ticks,
            constant_rate,
        })
    }

    /// Drops the frames at or after relative time `end` (frames read ahead past a window's
    /// end, some of them still missing).
    pub(crate) fn truncate(&mut self, end: i64) {
        self.times.retain(|&t| t < end);
        self.keys.retain(|k| k.time < end);
        let (frame_ticks, constant_rate) = rate(&self.times, self.frame_ticks);
        self.frame_ticks = frame_ticks;
        self.constant_rate = constant_rate;
    }

    /// Relative time just after the last frame: the stream's duration as the frames give it.
    pub(crate) fn end(&self) -> i64 {
        self.times.last().map_or(0, |t| t + self.frame_ticks)
    }

    /// Position (0-based, display order) of the frame at relative time `t`, or of the nearest
    /// frame when no frame is exactly there (a frame whose time the decoder had to invent).
    pub(crate) fn index_of(&self, t: i64) -> Option<u64> {
        let i = self.times.partition_point(|&x| x < t);
        let best = match (i.checked_sub(1), self.times.get(i)) {
            (_, Some(&x)) if x == t => i,
            (Some(p), Some(&x)) => {
                if t - self.times[p] <= x - t {
                    p
                } else {
                    i
                }
            }
            (Some(p), None) => p,
            (None, Some(_)) => i,
            (None, None) => return None,
        };
        Some(best as u64)
    }

    /// Frames with relative time in `[from, to)`, as a range of indices.
    pub(crate) fn window(&self, from: i64, to: Option<i64>) -> std::ops::Range<usize> {
        let a = self.times.partition_point(|&x| x < from);
        let b = to.map_or(self.times.len(), |to| {
            self.times.partition_point(|&x| x < to)
        });
        a..b.max(a)
    }

    /// The target (relative ticks) whose first frame at or after it is frame `i`: just after
    /// the frame before, so that frame `i` is picked even if its decoded time differs by a tick.
    pub(crate) fn target_of(&self, i: usize) -> i64 {
        match i.checked_sub(1) {
            Some(p) => self.times[p] + 1,
            None => self.times[i] - self.frame_ticks / 2,
        }
    }

    /// The last keyframe at or before relative time `t` (the first keyframe when none is).
    pub(crate) fn key_before(&self, t: i64) -> usize {
        self.keys.iter().rposition(|k| k.time <= t).unwrap_or(0)
    }
}

/// The median distance between frames (`fallback` for fewer than two frames), and whether all
/// distances are equal: within a tick, or 1 % for millisecond time bases.
fn rate(times: &[i64], fallback: i64) -> (i64, bool) {
    let mut gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    let frame_ticks = gaps.get(gaps.len() / 2).copied().unwrap_or(fallback).max(1);
    let constant = match (gaps.first(), gaps.last()) {
        (Some(&lo), Some(&hi)) => hi - lo <= 1.max(frame_ticks / 100),
        _ => true,
    };
    (frame_ticks, constant)
}

/// `n` evenly spaced values from `a` to `b` inclusive, as numpy's `linspace` computes them in
/// f64 (`i * step + a`, the last one exactly `b`); `[a]` for `n == 1`.
fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![a; n];
    }
    let step = (b - a) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + a).collect();
    v[n - 1] = b;
    v
}

/// Indices of `n` of `f` constant-rate frames: `round(linspace(0, f-1, n))`, rounding half to
/// even as numpy and torch do (the rule of qwen-vl-utils and of transformers' Qwen3-VL video
/// processor). All `f` when `n >= f`.
pub(crate) fn uniform_indices(f: usize, n: usize) -> Vec<usize> {
    if n >= f {
        return (0..f).collect();
    }
    linspace(0.0, (f - 1) as f64, n)
        .into_iter()
        .map(|x| x.round_ties_even() as usize)
        .collect()
}

/// Indices of `n` of the frames at `times` (ascending) for a variable-rate stream: the frame
/// nearest to each of `n` evenly spaced times from the first to the last frame (the earlier one
/// on a tie), moved to the next free frame when an earlier target already took it, so the `n`
/// frames are distinct. All of them when `n >= times.len()`.
pub(crate) fn nearest_indices(times: &[i64], n: usize) -> Vec<usize> {
    let f = times.len();
    if n >= f {
        return (0..f).collect();
    }
    let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(n);
    let mut next_free = 0usize;
    for (k, t) in linspace(first as f64, last as f64, n)
        .into_iter()
        .enumerate()
    {
        let i = times.partition_point(|&x| (x as f64) < t);
        let nearest = match i.checked_sub(1) {
            Some(p) if i >= f || t - times[p] as f64 <= times[i] as f64 - t => p,
            _ => i.min(f - 1),
        };
        // Leave one frame for each target still to come.
        let idx = nearest.max(next_free).min(f - (n - k));
        out.push(idx);
        next_free = idx + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(pts: Option<i64>, dts: Option<i64>, key: bool) -> PacketMeta {
        PacketMeta {
            pts,
            dts,
            key,
            discard: false,
        }
    }

    #[test]
    fn uniform_indices_include_first_and_last() {
        assert_eq!(uniform_indices(4, 4), vec![0, 1, 2, 3]);
        assert_eq!(
            uniform_indices(300, 8),
            vec![0, 43, 85, 128, 171, 214, 256, 299]
        );
        assert_eq!(uniform_indices(10, 1), vec![0]);
        assert_eq!(uniform_indices(3, 8), vec![0, 1, 2]);
        // linspace(0, 5, 3) = [0, 2.5, 5]: the tie goes to the even index, as in numpy/torch.
        assert_eq!(uniform_indices(6, 3), vec![0, 2, 5]);
        for f in 1..60 {
            for n in 1..=f {
                let v = uniform_indices(f, n);
                assert_eq!(v.len(), n);
                assert!(v.windows(2).all(|w| w[0] < w[1]), "{f} {n} {v:?}");
                assert_eq!(v[0], 0);
                if n > 1 {
                    assert_eq!(v[n - 1], f - 1);
                }
            }
        }
    }

    /// The indices numpy gives (tools/linspace_fixture.py, run with the reference venv), also
    /// where f64 rounding moves an exact tie.
    #[test]
    fn uniform_indices_match_numpy() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/linspace_numpy.json")).unwrap();
        let cases = v["cases"].as_array().unwrap();
        assert!(cases.len() > 500);
        for c in cases {
            let f = c["frames"].as_u64().unwrap() as usize;
            let n = c["n"].as_u64().unwrap() as usize;
            let want: Vec<usize> = c["indices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(uniform_indices(f, n), want, "F={f} N={n}");
        }
    }

    #[test]
    fn nearest_indices_on_a_constant_grid_equal_uniform_indices_away_from_ties() {
        let times: Vec<i64> = (0..97).map(|i| i * 40).collect();
        for n in [1, 2, 5, 8, 13, 64, 96] {
            let a = nearest_indices(&times, n);
            let b = uniform_indices(97, n);
            // 96 / (n-1) has no half-way values for these n.
            assert_eq!(a, b, "n={n}");
        }
    }

    #[test]
    fn nearest_indices_stay_distinct_on_variable_rate() {
        // 30 frames at 30 fps then 20 at 10 fps (the vfr.mp4 sample): ticks of 1/9000 s.
        let mut times: Vec<i64> = (0..30).map(|i| i * 300).collect();
        times.extend((0..20).map(|i| 9000 + i * 900));
        for n in 1..=50 {
            let v = nearest_indices(&times, n);
            assert_eq!(v.len(), n);
            assert!(v.windows(2).all(|w| w[0] < w[1]), "{n} {v:?}");
        }
        // 3 targets: 0, 1.45 s and 2.9 s; 1.45 s lies half-way between the frames at 1.4 and 1.5 s
        // and goes to the earlier one.
        let v = nearest_indices(&times, 3);
        assert_eq!(
            v.iter().map(|&i| times[i]).collect::<Vec<_>>(),
            vec![0, 12600, 26100]
        );
    }

    #[test]
    fn timeline_from_pts_with_bframes() {
        // Decode order I0 P3 B1 B2 P6 B4 B5 (pts in frames of 10 ticks), starting at 1000.
        let p: Vec<PacketMeta> = [0, 3, 1, 2, 6, 4, 5]
            .iter()
            .enumerate()
            .map(|(i, &f)| pkt(Some(1000 + f * 10), Some(990 + i as i64 * 10), i == 0))
            .collect();
        let t = Timeline::build(&p, 10).unwrap();
        assert_eq!(t.domain, Domain::Pts);
        assert_eq!(t.origin, 1000);
        assert_eq!(t.times, vec![0, 10, 20, 30, 40, 50, 60]);
        assert!(t.constant_rate);
        assert_eq!(t.end(), 70);
        assert_eq!(t.index_of(30), Some(3));
        assert_eq!(t.index_of(34), Some(3));
        assert_eq!(t.window(15, Some(40)), 2..4);
    }

    #[test]
    fn timeline_skips_undecodable_start_and_discarded_packets() {
        let mut p = vec![
            pkt(Some(50), Some(50), false), // before the first keyframe: cannot be decoded
            pkt(Some(100), Some(90), true),
            pkt(Some(80), Some(95), false), // leading picture of an open GOP
            pkt(Some(110), Some(100), false),
            pkt(Some(120), Some(110), false),
        ];
        p[4].discard = true;
        let t = Timeline::build(&p, 10).unwrap();
        assert_eq!(t.origin, 100);
        assert_eq!(t.times, vec![0, 10]);
        assert_eq!(t.keys.len(), 1);
    }

    #[test]
    fn keyframes_are_clean_cuts_only_when_nothing_before_them_is_shown_after() {
        // Decode order I0 P3 B1 B2 | I4 B5?: a packet before the second keyframe shown after it
        // (pts 50 > 40) makes that keyframe no clean cut; the third one is.
        let p = vec![
            pkt(Some(0), Some(-10), true),
            pkt(Some(30), Some(0), false),
            pkt(Some(10), Some(10), false),
            pkt(Some(50), Some(20), false),
            pkt(Some(40), Some(30), true),
            pkt(Some(60), Some(40), false),
            pkt(Some(70), Some(50), true),
        ];
        let t = Timeline::build(&p, 10).unwrap();
        let clean: Vec<bool> = t.keys.iter().map(|k| k.clean).collect();
        assert_eq!(clean, vec![true, false, true]);
        // Without presentation times nothing is known to be clean.
        let p: Vec<PacketMeta> = (0..4).map(|i| pkt(None, Some(i), i % 2 == 0)).collect();
        let t = Timeline::build(&p, 1).unwrap();
        assert!(t.keys.iter().all(|k| !k.clean));
    }

    #[test]
    fn timeline_without_pts_uses_dts_then_counts() {
        let p: Vec<PacketMeta> = (0..5)
            .map(|i| pkt((i % 2 == 1).then_some(i), Some(i), i == 0))
            .collect();
        let t = Timeline::build(&p, 1).unwrap();
        assert_eq!(t.domain, Domain::Dts);
        assert_eq!(t.times, vec![0, 1, 2, 3, 4]);
        let p: Vec<PacketMeta> = (0..3).map(|i| pkt(None, None, i == 0)).collect();
        let t = Timeline::build(&p, 40).unwrap();
        assert_eq!(t.domain, Domain::Count);
        assert_eq!(t.times, vec![0, 40, 80]);
    }

    #[test]
    fn millisecond_timebases_are_constant_rate() {
        let p: Vec<PacketMeta> = (0..90)
            .map(|i| pkt(Some((i * 1000 + 15) / 30), None, i == 0))
            .collect();
        let t = Timeline::build(&p, 33).unwrap();
        assert!(t.constant_rate, "{:?}", &t.times[..5]);
    }
}
