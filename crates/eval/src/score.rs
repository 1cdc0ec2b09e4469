//! Scoring one answer: option letters read as lmms-eval reads them, exact match after
//! normalization, numbers for counts, and temporal IoU for grounding.

use crate::suite::{ChoiceRule, Truth, LETTERS};

/// How one answer scored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Score {
    /// What was read from the answer (a letter, a normalized text, a number, a range), for the
    /// record.
    pub pred: String,
    /// Right or wrong (for spans: IoU >= 0.5).
    pub correct: bool,
    /// For spans: the IoU of the predicted range with the truth (0 when none was found).
    pub iou: Option<f64>,
}

/// Scores `answer` (generated text) against `truth`.
///
/// ```
/// use vidlm_eval::{score::score, suite::{ChoiceRule, Truth}};
/// let t = Truth::Choice { options: vec!["red".into(), "blue".into()], answer: 1, rule: ChoiceRule::MvBench };
/// assert!(score(&t, "(B) blue").correct);
/// ```
pub fn score(truth: &Truth, answer: &str) -> Score {
    match truth {
        Truth::Choice {
            options,
            answer: right,
            rule,
        } => {
            let right = (LETTERS[*right] as char).to_string();
            let pred = match rule {
                ChoiceRule::VideoMme => video_mme_letter(answer),
                ChoiceRule::MvBench => mvbench_process(answer, options.len()),
            };
            Score {
                correct: pred == right,
                pred,
                iou: None,
            }
        }
        Truth::Open { answer: right } => {
            let pred = normalize(answer);
            Score {
                correct: pred == normalize(right),
                pred,
                iou: None,
            }
        }
        Truth::Count { answer: right } => {
            let n = first_number(answer);
            Score {
                pred: n.map(|n| n.to_string()).unwrap_or_default(),
                correct: n == Some(*right),
                iou: None,
            }
        }
        Truth::Span { start, end } => {
            let span = predicted_span(answer);
            let iou = span.map_or(0.0, |(s, e)| temporal_iou((s, e), (*start, *end)));
            Score {
                pred: span.map(|(s, e)| format!("{s}-{e}")).unwrap_or_default(),
                correct: iou >= 0.5,
                iou: Some(iou),
            }
        }
    }
}

/// Video-MME's letter extraction (lmms-eval `extract_characters_regex`): strip the answer
/// prefixes, give up on long answers without a capital A-D, else the first capital A-D.
/// The prefix list keeps lmms-eval's two concatenated entries as they are (so two prefixes
/// are never removed), for figures that compare.
///
/// ```
/// assert_eq!(vidlm_eval::score::video_mme_letter("The best answer is B."), "B");
/// assert_eq!(vidlm_eval::score::video_mme_letter("none"), "");
/// ```
pub fn video_mme_letter(s: &str) -> String {
    let mut s = s.trim().to_string();
    for prefix in [
        "The best answer is",
        "The correct answer is",
        "The answer is",
        "The answer",
        "The best option isThe correct option is",
        "Best answer:Best option:",
    ] {
        s = s.replace(prefix, "");
    }
    let first = s.chars().find(|c| ('A'..='D').contains(c));
    if s.split_whitespace().count() > 10 && first.is_none() {
        return String::new();
    }
    first.map(String::from).unwrap_or_default()
}

/// MVBench's answer processing (lmms-eval `mcq_acc`'s `process`): `X. text` gives `X`; else the
/// text is cleaned of punctuation and the first stand-alone letter is taken (case-insensitive, so
/// an article `a` reads as A, as there); else the cleaned text itself. Letters run A-E, or
/// further when there are more options.
///
/// ```
/// assert_eq!(vidlm_eval::score::mvbench_process("(C) Piling something up", 3), "C");
/// assert_eq!(vidlm_eval::score::mvbench_process("b. down", 2), "B");
/// ```
pub fn mvbench_process(answer: &str, options: usize) -> String {
    let last = (b'A' + options.clamp(5, 26) as u8 - 1) as char;
    let is_letter = |c: char| ('A'..=last).contains(&c.to_ascii_uppercase());
    let t = answer.trim();
    let mut cs = t.chars();
    if let (Some(c), Some('.')) = (cs.next(), cs.next()) {
        if is_letter(c) && !cs.as_str().trim_start().is_empty() && c.is_ascii() {
            return c.to_ascii_uppercase().to_string();
        }
    }
    let cleaned = process_punctuation(&t.replace(['\n', '\t'], " "));
    let cleaned = cleaned
        .trim()
        .trim_matches('\'')
        .trim_matches('"')
        .trim_matches(')')
        .trim_matches('(')
        .trim()
        .to_lowercase();
    let chars: Vec<char> = cleaned.chars().collect();
    let word = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric() || *c == '_');
    for i in 0..chars.len() {
        let c = chars[i];
        if c.is_ascii()
            && is_letter(c)
            && !word(i.checked_sub(1).map(|j| &chars[j]))
            && !word(chars.get(i + 1))
        {
            return c.to_ascii_uppercase().to_string();
        }
    }
    cleaned
}

/// lmms-eval's `processPunctuation` (VQA's): punctuation next to a space (or any text with a
/// digit,digit comma) is removed, else replaced by a space; then periods not before a digit go
/// (at most 32, as its `re.sub(..., re.UNICODE)` passes the flag as the count).
fn process_punctuation(text: &str) -> String {
    const PUNCT: &[&str] = &[
        ";", "/", "[", "]", "\"", "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
        ",", "?", "!",
    ];
    let b: Vec<char> = text.chars().collect();
    let digit_comma = b
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == ',' && w[2].is_ascii_digit());
    let mut out = text.to_string();
    for p in PUNCT {
        let near_space = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        out = out.replace(p, if near_space || digit_comma { "" } else { " " });
    }
    let chars: Vec<char> = out.chars().collect();
    let mut res = String::with_capacity(out.len());
    let mut removed = 0;
    for (i, &c) in chars.iter().enumerate() {
        let before_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c == '.' && !before_digit && removed < 32 {
            removed += 1;
            continue;
        }
        res.push(c);
    }
    res
}

/// Normalizes an open answer for exact match: lower case, punctuation to spaces, the articles
/// a/an/the dropped, whitespace collapsed.
///
/// ```
/// assert_eq!(vidlm_eval::score::normalize("  The Red, square! "), "red square");
/// ```
pub fn normalize(s: &str) -> String {
    let lower: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    lower
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first whole number in an answer, in digits or as a word (zero to twenty; `no`/`none`
/// count as 0).
///
/// ```
/// assert_eq!(vidlm_eval::score::first_number("There are three circles."), Some(3));
/// assert_eq!(vidlm_eval::score::first_number("12 dots, not 4"), Some(12));
/// assert_eq!(vidlm_eval::score::first_number("many"), None);
/// ```
pub fn first_number(s: &str) -> Option<i64> {
    for w in normalize(s).split_whitespace() {
        if let Ok(n) = w.parse::<i64>() {
            return Some(n);
        }
        if w == "no" || w == "none" {
            return Some(0);
        }
        // The same spelling as the SmolVLM2 processor writes numbers (Python's num2words).
        if let Some(n) = (0..=20).find(|&n| vidlm_models::smolvlm::processor::num2words(n) == w) {
            return Some(n as i64);
        }
    }
    None
}

/// The time range an answer names: its first range (`3 - 7`, `from 3s to 7s`, `0:03-0:07`), else
/// its first two times in order; None without two times.
///
/// ```
/// assert_eq!(vidlm_eval::score::predicted_span("It happens in 2.5 - 4 seconds."), Some((2.5, 4.0)));
/// assert_eq!(vidlm_eval::score::predicted_span("no idea"), None);
/// ```
pub fn predicted_span(answer: &str) -> Option<(f64, f64)> {
    let times = vidlm_pipeline::parse_times(answer);
    if let Some(m) = times.iter().find(|m| m.end.is_some()) {
        let e = m.end.unwrap_or(m.start);
        return Some((m.start.min(e), m.start.max(e)));
    }
    match times.as_slice() {
        [a, b, ..] => Some((a.start.min(b.start), a.start.max(b.start))),
        _ => None,
    }
}

/// Intersection over union of two time ranges `(start, end)`; 0 when they do not overlap or a
/// range is empty.
///
/// ```
/// assert_eq!(vidlm_eval::score::temporal_iou((0.0, 4.0), (2.0, 6.0)), 2.0 / 6.0);
/// ```
pub fn temporal_iou(a: (f64, f64), b: (f64, f64)) -> f64 {
    let inter = (a.1.min(b.1) - a.0.max(b.0)).max(0.0);
    let union = (a.1 - a.0).max(0.0) + (b.1 - b.0).max(0.0) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Grounding figures over a set of IoUs: the mean IoU and recall at 1 for IoU thresholds 0.3, 0.5
/// and 0.7 (the share of items whose IoU reaches each).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Grounding {
    /// Items.
    pub n: usize,
    /// Mean IoU.
    pub miou: f64,
    /// R@1, IoU >= 0.3.
    pub r1_03: f64,
    /// R@1, IoU >= 0.5.
    pub r1_05: f64,
    /// R@1, IoU >= 0.7.
    pub r1_07: f64,
}

impl Grounding {
    /// The figures of `ious`; None when empty.
    pub fn of(ious: &[f64]) -> Option<Self> {
        if ious.is_empty() {
            return None;
        }
        let n = ious.len() as f64;
        let at = |t: f64| ious.iter().filter(|&&x| x >= t).count() as f64 / n;
        Some(Self {
            n: ious.len(),
            miou: ious.iter().sum::<f64>() / n,
            r1_03: at(0.3),
            r1_05: at(0.5),
            r1_07: at(0.7),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_mme_extraction_as_lmms_eval() {
        for (text, want) in [
            ("C", "C"),
            ("The best answer is: D", "D"),
            ("(B) Candles.", "B"),
            // lmms-eval takes the first capital A-D, even inside a word.
            ("Apples are the most", "A"),
            (
                "the berries are the most numerous decoration on this tree overall here",
                "",
            ),
            ("none", ""),
        ] {
            assert_eq!(video_mme_letter(text), want, "{text:?}");
        }
    }

    #[test]
    fn mvbench_processing_as_lmms_eval() {
        for (text, want) in [
            ("C", "C"),
            ("c. Piling", "C"),
            ("(B) Scattering something down", "B"),
            ("The answer is (D).", "D"),
            // An article reads as A there too.
            ("It is a cat", "A"),
            ("Piling something up", "piling something up"),
            ("Option E!", "E"),
        ] {
            assert_eq!(mvbench_process(text, 4), want, "{text:?}");
        }
        // Beyond E only with more options.
        assert_eq!(mvbench_process("F", 4), "f");
        assert_eq!(mvbench_process("F", 6), "F");
    }

    #[test]
    fn open_count_and_span_scores() {
        let open = Truth::Open {
            answer: "A red square".into(),
        };
        assert!(score(&open, "red square.").correct);
        assert!(!score(&open, "blue square").correct);
        let count = Truth::Count { answer: 4 };
        assert!(score(&count, "I count four shapes").correct);
        assert!(!score(&count, "3").correct);
        assert_eq!(score(&count, "many").pred, "");
        let span = Truth::Span {
            start: 2.0,
            end: 4.0,
        };
        // [2.5, 4.5] vs [2, 4]: 1.5 / 2.5 = 0.6.
        let s = score(&span, "The event happens in 2.5 - 4.5 seconds.");
        assert!((s.iou.unwrap() - 0.6).abs() < 1e-12);
        assert!(s.correct);
        let s = score(&span, "never");
        assert_eq!((s.iou, s.correct), (Some(0.0), false));
    }

    #[test]
    fn iou_and_recall_hand_computed() {
        assert_eq!(temporal_iou((0.0, 1.0), (2.0, 3.0)), 0.0);
        assert_eq!(temporal_iou((1.0, 3.0), (1.0, 3.0)), 1.0);
        assert_eq!(temporal_iou((0.0, 10.0), (2.0, 4.0)), 0.2);
        assert_eq!(temporal_iou((3.0, 3.0), (3.0, 3.0)), 0.0);
        // IoUs 0.2, 0.4, 0.6, 0.8: mean 0.5; >=0.3: 3/4; >=0.5: 2/4; >=0.7: 1/4.
        let g = Grounding::of(&[0.2, 0.4, 0.6, 0.8]).unwrap();
        assert!((g.miou - 0.5).abs() < 1e-12);
        assert_eq!((g.r1_03, g.r1_05, g.r1_07), (0.75, 0.5, 0.25));
        assert_eq!(Grounding::of(&[]), None);
    }
}
