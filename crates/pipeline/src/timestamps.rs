//! Times the model writes in its answers: `at 12.5 seconds`, `00:12`, `1:02:03`, `<12.5 seconds>`,
//! `from 3s to 7s`, `1 minute 30 seconds`, `0:05-0:09`... parsed into seconds, and turned into
//! segments whose times come from the model instead of the chunk grid.
//!
//! The parser is deliberately strict about what counts as a time: a bare number (`3 rabbits`) is
//! never one; a number needs a unit (`s`, `sec`, `seconds`, `min`, `minutes`, `h`, `hours`...) or a
//! clock form (`M:SS`, `H:MM:SS`, fields after the first below 60), except as the start of a range
//! whose end has a unit (`3 to 7 seconds`, `3-7s`).

use std::ops::Range;

use crate::segment::{Segment, TimeSource};

/// One time (or time range) found in a text.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeMention {
    /// Start, seconds.
    pub start: f64,
    /// End, seconds, for a range (`from 3s to 7s`); None for a single time.
    pub end: Option<f64>,
    /// Byte range of the mention in the text.
    pub span: Range<usize>,
}

/// A parsed number with its unit multiplier (None: no unit) and clock flag.
#[derive(Debug, Clone, Copy)]
struct Atom {
    value: f64,
    unit: Option<f64>,
    clock: bool,
    end: usize,
}

impl Atom {
    fn seconds(&self, unit: f64) -> f64 {
        if self.clock {
            self.value
        } else {
            self.value * self.unit.unwrap_or(unit)
        }
    }
    fn is_time(&self) -> bool {
        self.clock || self.unit.is_some()
    }
}

/// Finds every time and time range in `text`, in order of appearance.
///
/// ```
/// use vidlm_pipeline::parse_times;
/// let t = parse_times("At 0:05 a rabbit wakes; from 7s to 9.5 seconds it stretches.");
/// assert_eq!(t.len(), 2);
/// assert_eq!((t[0].start, t[0].end), (5.0, None));
/// assert_eq!((t[1].start, t[1].end), (7.0, Some(9.5)));
/// ```
pub fn parse_times(text: &str) -> Vec<TimeMention> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit()
            || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'))
        {
            i += 1;
            continue;
        }
        let Some(a) = atom(b, i) else {
            // Skip the rest of this number so its digits are not re-read as a new one.
            i = skip_number(b, i);
            continue;
        };
        // A range: `A - B`, `A to B`, `A until B`, `A and B`.
        if let Some(j) = connector(b, a.end) {
            if let Some(c) = atom(b, j) {
                if a.is_time() || c.is_time() {
                    let unit = c.unit.or(a.unit).unwrap_or(1.0);
                    let (s, e) = (a.seconds(unit), c.seconds(unit));
                    if e >= s {
                        out.push(TimeMention {
                            start: s,
                            end: Some(e),
                            span: i..c.end,
                        });
                        i = c.end;
                        continue;
                    }
                }
            }
        }
        if a.is_time() {
            out.push(TimeMention {
                start: a.seconds(1.0),
                end: None,
                span: i..a.end,
            });
        }
        i = a.end.max(i + 1);
    }
    out
}

fn skip_number(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b':') {
        i += 1;
    }
    i
}

/// Digits at `i` (at most 9, so values stay exact): (value, end).
fn digits(b: &[u8], i: usize) -> Option<(u64, usize, usize)> {
    let mut j = i;
    let mut v: u64 = 0;
    while j < b.len() && b[j].is_ascii_digit() && j - i < 9 {
        v = v * 10 + u64::from(b[j] - b'0');
        j += 1;
    }
    (j > i).then_some((v, j, j - i))
}

/// `.digits` at `i`: (fraction, end); `(0, i)` when absent.
fn fraction(b: &[u8], i: usize) -> (f64, usize) {
    if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
        let (v, j, n) = digits(b, i + 1).expect("a digit follows");
        (v as f64 / 10f64.powi(n as i32), j)
    } else {
        (0.0, i)
    }
}

fn boundary(b: &[u8], i: usize) -> bool {
    i >= b.len() || !b[i].is_ascii_alphanumeric()
}

/// A number at `i`: clock (`M:SS`, `H:MM:SS`, optional `.frac`) or a number with an optional unit
/// and an optional smaller-unit continuation (`1 minute 30 seconds`, `1m30s`). None for a number
/// glued to other letters (`3rd`, `16:9`, `12:30pm`).
fn atom(b: &[u8], i: usize) -> Option<Atom> {
    let (first, j, n) = digits(b, i)?;
    // Clock.
    if n <= 3 && j < b.len() && b[j] == b':' {
        let (m, k, nm) = digits(b, j + 1)?;
        if nm != 2 || m >= 60 {
            return None;
        }
        let third = k + 1 < b.len() && b[k] == b':' && b[k + 1].is_ascii_digit();
        let (value, end) = if third {
            let (s, l, ns) = digits(b, k + 1)?;
            if ns != 2 || s >= 60 {
                return None;
            }
            let (f, l) = fraction(b, l);
            ((first * 3600 + m * 60 + s) as f64 + f, l)
        } else {
            let (f, l) = fraction(b, k);
            ((first * 60 + m) as f64 + f, l)
        };
        // `12:30pm`, `1:02:03:04`: not a clock we know.
        let more = end + 1 < b.len() && b[end] == b':' && b[end + 1].is_ascii_digit();
        if !boundary(b, end) || more {
            return None;
        }
        return Some(Atom {
            value,
            unit: None,
            clock: true,
            end,
        });
    }
    let (f, j) = fraction(b, j);
    let value = first as f64 + f;
    if j < b.len() && b[j].is_ascii_alphabetic() {
        // Letters glued to the number must be a unit (`7s`, `1m30s`).
        let (unit, k) = unit(b, j)?;
        return Some(continuation(b, value, unit, k));
    }
    let k = skip_spaces(b, j);
    if let Some((unit, l)) = unit(b, k) {
        return Some(continuation(b, value, unit, l));
    }
    if !boundary(b, j) {
        return None;
    }
    Some(Atom {
        value,
        unit: None,
        clock: false,
        end: j,
    })
}

/// After `value unit` ending at `k`: adds a smaller unit that follows (`1 minute 30 seconds`,
/// `1h 2m`, `1 min and 5 s`).
fn continuation(b: &[u8], value: f64, unit: f64, k: usize) -> Atom {
    let mut a = Atom {
        value: value * unit,
        unit: Some(1.0),
        clock: false,
        end: k,
    };
    if unit > 1.0 {
        let mut j = skip_spaces(b, k);
        if let Some(w) = word_at(b, j, "and") {
            j = skip_spaces(b, w);
        } else if j < b.len() && b[j] == b',' {
            j = skip_spaces(b, j + 1);
        }
        if let Some(next) = atom(b, j) {
            if let Some(u) = next.unit {
                // `next` already folded its unit into its value (u == 1.0).
                if !next.clock && u == 1.0 && next.value < unit {
                    a.value += next.value;
                    a.end = next.end;
                }
            }
        }
    }
    a
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    i
}

/// `word` (ASCII, case-insensitive) at `i` followed by a word boundary: its end.
fn word_at(b: &[u8], i: usize, word: &str) -> Option<usize> {
    let w = word.as_bytes();
    let end = i + w.len();
    (end <= b.len() && b[i..end].eq_ignore_ascii_case(w) && boundary(b, end)).then_some(end)
}

/// A unit word at `i`: (seconds per unit, end).
fn unit(b: &[u8], i: usize) -> Option<(f64, usize)> {
    const UNITS: &[(&str, f64)] = &[
        ("seconds", 1.0),
        ("second", 1.0),
        ("secs", 1.0),
        ("sec", 1.0),
        ("s", 1.0),
        ("minutes", 60.0),
        ("minute", 60.0),
        ("mins", 60.0),
        ("min", 60.0),
        ("m", 60.0),
        ("hours", 3600.0),
        ("hour", 3600.0),
        ("hrs", 3600.0),
        ("hr", 3600.0),
        ("h", 3600.0),
    ];
    UNITS.iter().find_map(|(w, s)| {
        let end = i + w.len();
        if end > b.len() || !b[i..end].eq_ignore_ascii_case(w.as_bytes()) {
            return None;
        }
        // `1m30s`: a unit may be followed directly by the digits of the next part.
        let ok = boundary(b, end) || b[end].is_ascii_digit();
        ok.then_some((*s, end))
    })
}

/// A range connector after `i` (`-`, `–`, `—`, `to`, `until`, `till`, `through`, `and`): where
/// the second time starts.
fn connector(b: &[u8], i: usize) -> Option<usize> {
    let j = skip_spaces(b, i);
    let rest = &b[j..];
    let after = if rest.starts_with(b"-") {
        j + 1
    } else if rest.starts_with("–".as_bytes()) || rest.starts_with("—".as_bytes()) {
        j + 3
    } else {
        ["to", "until", "till", "through", "and"]
            .iter()
            .find_map(|w| word_at(b, j, w))?
    };
    let k = skip_spaces(b, after);
    (k < b.len() && b[k].is_ascii_digit()).then_some(k)
}

/// The times an answer mentions that fall inside `[lo, hi]` (seconds of the video; half a second
/// of slack, then clamped), as `(start, end)` with `end == start` for a single time; others are
/// dropped with a debug log.
///
/// ```
/// let t = vidlm_pipeline::answer_times("It jumps at 0:03, then from 4 to 9 seconds, and at 99 s.", 0.0, 5.0);
/// assert_eq!(t, vec![(3.0, 3.0)]);
/// ```
pub fn answer_times(text: &str, lo: f64, hi: f64) -> Vec<(f64, f64)> {
    const SLACK: f64 = 0.5;
    let inside = |t: f64| t >= lo - SLACK && t <= hi + SLACK;
    parse_times(text)
        .into_iter()
        .filter_map(|m| {
            let end = m.end.unwrap_or(m.start);
            if inside(m.start) && inside(end) {
                Some((m.start.clamp(lo, hi), end.clamp(lo, hi)))
            } else {
                tracing::debug!(
                    start = m.start,
                    end = m.end,
                    lo,
                    hi,
                    mention = &text[m.span],
                    "time in the answer outside the clip, dropped"
                );
                None
            }
        })
        .collect()
}

/// [`answer_times`] of an ask job's answer, inside the asked range `[from, to]` (clamped to the
/// video's duration), as time ranges.
pub(crate) fn answer_ranges(
    answer: &str,
    duration: Option<f64>,
    from: Option<f64>,
    to: Option<f64>,
) -> Vec<crate::TimeRange> {
    let lo = from.unwrap_or(0.0);
    let hi = match (duration, to) {
        (Some(d), Some(t)) => d.min(t),
        (Some(d), None) => d,
        (None, Some(t)) => t,
        (None, None) => f64::INFINITY,
    };
    answer_times(answer, lo, hi)
        .into_iter()
        .map(|(start, end)| crate::TimeRange { start, end })
        .collect()
}

/// Splits `text` into sentences and lines (byte ranges, each non-empty after trimming).
fn sentences(text: &str) -> Vec<Range<usize>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..b.len() {
        let cut = b[i] == b'\n'
            || (matches!(b[i], b'.' | b'!' | b'?')
                && (i + 1 == b.len() || b[i + 1].is_ascii_whitespace()));
        if cut {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    out.push(start..b.len());
    out.retain(|r| !text[r.clone()].trim().is_empty());
    out
}

/// Segments at the times the model wrote in `text`, a description of the clip `[lo, hi]`
/// (seconds of the video). Each sentence (or line) that holds a time starts a segment at that
/// time; sentences without one join the segment before them (or the first). A segment ends where
/// its range says, else where the next one starts, else at `hi`; ends never pass the next start,
/// so segments stay in time order. Times outside `[lo, hi]` (half a second of slack for rounded
/// times, then clamped) are dropped with a debug log. None when no time is left: the caller keeps
/// the grid segment.
///
/// ```
/// use vidlm_pipeline::{model_segments, TimeSource};
/// let s = model_segments("0:00-0:02: a rabbit sleeps.\nAt 3 seconds it wakes. It yawns.", 0.0, 5.0).unwrap();
/// assert_eq!(s.len(), 2);
/// assert_eq!((s[0].start, s[0].end), (0.0, 2.0));
/// assert_eq!((s[1].start, s[1].end, s[1].text.as_str()), (3.0, 5.0, "At 3 seconds it wakes. It yawns."));
/// assert_eq!(s[1].time_source, TimeSource::Model);
/// ```
pub fn model_segments(text: &str, lo: f64, hi: f64) -> Option<Vec<Segment>> {
    const SLACK: f64 = 0.5;
    let inside = |t: f64| t >= lo - SLACK && t <= hi + SLACK;
    let mentions: Vec<TimeMention> = parse_times(text)
        .into_iter()
        .filter(|m| {
            let ok = inside(m.start) && m.end.is_none_or(inside);
            if !ok {
                tracing::debug!(
                    start = m.start,
                    end = m.end,
                    lo,
                    hi,
                    mention = &text[m.span.clone()],
                    "model time outside the clip, dropped"
                );
            }
            ok
        })
        .collect();
    if mentions.is_empty() {
        return None;
    }
    struct Event {
        start: f64,
        end: Option<f64>,
        parts: Vec<String>,
    }
    let mut events: Vec<Event> = Vec::new();
    let mut before: Vec<String> = Vec::new();
    for r in sentences(text) {
        let part = text[r.clone()].trim().to_string();
        let here: Vec<&TimeMention> = mentions
            .iter()
            .filter(|m| m.span.start >= r.start && m.span.start < r.end)
            .collect();
        if here.is_empty() {
            match events.last_mut() {
                Some(e) => e.parts.push(part),
                None => before.push(part),
            }
            continue;
        }
        let start = here.iter().map(|m| m.start).fold(f64::INFINITY, f64::min);
        let last = here
            .iter()
            .map(|m| m.end.unwrap_or(m.start))
            .fold(f64::NEG_INFINITY, f64::max);
        events.push(Event {
            start: start.clamp(lo, hi),
            end: (last > start).then(|| last.clamp(lo, hi)),
            parts: vec![part],
        });
    }
    if let Some(first) = events.first_mut() {
        before.append(&mut first.parts);
        first.parts = before;
    }
    events.sort_by(|a, b| a.start.total_cmp(&b.start));
    let starts: Vec<f64> = events.iter().map(|e| e.start).collect();
    let mut out: Vec<Segment> = Vec::with_capacity(events.len());
    for (i, e) in events.into_iter().enumerate() {
        let next = starts.get(i + 1).copied().unwrap_or(hi);
        let end = e.end.unwrap_or(next).min(next).max(e.start);
        let text = e.parts.join(" ");
        match out.last_mut() {
            // Two sentences at the same time: one segment.
            Some(prev) if prev.start == e.start => {
                prev.text = format!("{} {text}", prev.text);
                prev.end = prev.end.max(end);
            }
            _ => out.push(Segment {
                start: e.start,
                end,
                text,
                time_source: TimeSource::Model,
            }),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(s: &str) -> Vec<(f64, Option<f64>)> {
        parse_times(s).iter().map(|m| (m.start, m.end)).collect()
    }

    #[test]
    fn seconds_with_units() {
        assert_eq!(times("at 12.5 seconds"), vec![(12.5, None)]);
        assert_eq!(times("<12.5 seconds>"), vec![(12.5, None)]);
        assert_eq!(
            times("around 3s, then 4 sec and 1 second"),
            vec![(3.0, None), (4.0, None), (1.0, None)]
        );
        assert_eq!(times("7 SECONDS"), vec![(7.0, None)]);
        assert_eq!(times("2 secs"), vec![(2.0, None)]);
    }

    #[test]
    fn clocks() {
        assert_eq!(times("00:12"), vec![(12.0, None)]);
        assert_eq!(times("[1:02:03]"), vec![(3723.0, None)]);
        assert_eq!(times("at 0:07.5 it jumps"), vec![(7.5, None)]);
        assert_eq!(times("12:05"), vec![(725.0, None)]);
        assert_eq!(times("0:02: a rabbit"), vec![(2.0, None)]);
    }

    #[test]
    fn minutes_and_hours() {
        assert_eq!(times("after 2 minutes"), vec![(120.0, None)]);
        assert_eq!(times("1 minute 30 seconds in"), vec![(90.0, None)]);
        assert_eq!(times("1m30s"), vec![(90.0, None)]);
        assert_eq!(times("1 min and 5 s"), vec![(65.0, None)]);
        assert_eq!(times("1h 2m"), vec![(3720.0, None)]);
        assert_eq!(times("1.5 hours"), vec![(5400.0, None)]);
    }

    #[test]
    fn ranges() {
        assert_eq!(times("from 3s to 7s"), vec![(3.0, Some(7.0))]);
        assert_eq!(times("3 to 7 seconds"), vec![(3.0, Some(7.0))]);
        assert_eq!(times("3-7s"), vec![(3.0, Some(7.0))]);
        assert_eq!(times("0:05 - 0:09"), vec![(5.0, Some(9.0))]);
        assert_eq!(times("0:05–0:09"), vec![(5.0, Some(9.0))]);
        assert_eq!(times("between 1:00 and 1:30"), vec![(60.0, Some(90.0))]);
        assert_eq!(
            times("from 2 minutes until 150 seconds"),
            vec![(120.0, Some(150.0))]
        );
        // A backwards range is two times.
        assert_eq!(times("7s to 3s"), vec![(7.0, None), (3.0, None)]);
    }

    #[test]
    fn not_times() {
        for s in [
            "3 rabbits",
            "the 2nd bird",
            "a 16:9 frame",
            "1.5",
            "12:30pm",
            "3 to 7 birds",
            "version 1.2.3",
            "abc12s",
            "",
            "1:60",
            "1:02:03:04",
        ] {
            assert_eq!(times(s), vec![], "{s}");
        }
    }

    #[test]
    fn several_in_order_with_spans() {
        let text = "At 0:01 a bird; at 2.5 s a rabbit; 4-5 seconds: nothing.";
        let t = parse_times(text);
        assert_eq!(t.len(), 3);
        assert_eq!(&text[t[0].span.clone()], "0:01");
        assert_eq!(&text[t[1].span.clone()], "2.5 s");
        assert_eq!(&text[t[2].span.clone()], "4-5 seconds");
        assert_eq!(t[2].end, Some(5.0));
    }

    #[test]
    fn multibyte_text_is_safe() {
        assert_eq!(
            times("À 3 s — l'oiseau… 4 s"),
            vec![(3.0, None), (4.0, None)]
        );
        assert_eq!(times("3 s — 4 s"), vec![(3.0, Some(4.0))]);
        assert_eq!(times("日本 5秒"), vec![]);
    }

    #[test]
    fn segments_from_model_times() {
        let s = model_segments(
            "The video opens on a meadow. At 1 second a bird flies.\n<3.5 seconds> A rabbit wakes up.",
            0.0,
            5.0,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].start, s[0].end), (1.0, 3.5));
        assert_eq!(
            s[0].text,
            "The video opens on a meadow. At 1 second a bird flies."
        );
        assert_eq!((s[1].start, s[1].end), (3.5, 5.0));
        assert!(s.iter().all(|x| x.time_source == TimeSource::Model));
    }

    #[test]
    fn out_of_range_times_are_dropped() {
        // 99 s is past the clip; 10:00 too. Nothing left: the grid stays.
        assert_eq!(
            model_segments("At 99 seconds it ends. 10:00 credits.", 0.0, 5.0),
            None
        );
        let s = model_segments("At 99 s it ends. At 4 s a bird.", 0.0, 5.0).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].start, s[0].end), (4.0, 5.0));
        // Chunk ranges: times before the chunk are dropped too.
        assert_eq!(model_segments("At 0:02 a bird.", 30.0, 60.0), None);
        // Rounded times a hair past the end are clamped, not dropped.
        let s = model_segments("At 5.3 seconds it ends.", 0.0, 5.0).unwrap();
        assert_eq!((s[0].start, s[0].end), (5.0, 5.0));
    }

    #[test]
    fn segments_stay_in_order_and_never_overlap() {
        let s = model_segments(
            "4-5 s: the end. 0-3 s: a start. 2-4.5 s: a middle.",
            0.0,
            6.0,
        )
        .unwrap();
        let got: Vec<(f64, f64)> = s.iter().map(|x| (x.start, x.end)).collect();
        assert_eq!(got, vec![(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]);
        for w in s.windows(2) {
            assert!(w[0].end <= w[1].start);
        }
    }

    #[test]
    fn no_times_keeps_the_grid() {
        assert_eq!(model_segments("A rabbit sits in 3 places.", 0.0, 5.0), None);
        assert_eq!(model_segments("", 0.0, 5.0), None);
    }
}
