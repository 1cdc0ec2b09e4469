//! The summary of a run: accuracy with Wilson 95% intervals per condition and task, the chance
//! level, each control's delta to `video` with McNemar's paired test, the grounding figures, and
//! the items the language prior answers (right under `blind`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::conditions::{run_key, Condition};
use crate::score::{score, Grounding, Score};
use crate::stats::{wilson, Paired};
use crate::suite::{EvalItem, Truth};

/// Accuracy of a set of scored items.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accuracy {
    /// Items scored (records with an answer).
    pub n: usize,
    /// Items right.
    pub correct: usize,
    /// `correct / n` (0 when n is 0).
    pub accuracy: f64,
    /// Wilson 95% interval, low end.
    pub ci_low: f64,
    /// Wilson 95% interval, high end.
    pub ci_high: f64,
    /// The accuracy of guessing uniformly among the options (multiple-choice items; other items
    /// count 0).
    pub chance: f64,
    /// Items whose record is an error (not in `n`).
    pub failed: usize,
    /// Items without a record yet (an interrupted run).
    pub missing: usize,
    /// Grounding figures of the span items among them.
    pub grounding: Option<Grounding>,
}

/// One condition's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConditionReport {
    /// The condition.
    pub condition: Condition,
    /// Over all items.
    pub overall: Accuracy,
    /// Per task, by name.
    pub tasks: BTreeMap<String, Accuracy>,
}

/// A control against `video` over the items scored under both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    /// The control.
    pub condition: Condition,
    /// Its accuracy minus video's, over the paired items.
    pub delta: f64,
    /// The paired counts (first: video, second: the control).
    pub paired: Paired,
    /// McNemar's exact p-value.
    pub p_value: f64,
}

/// One item's outcome per condition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemResult {
    /// The item id.
    pub id: String,
    /// Its task.
    pub task: String,
    /// Per condition: the score, or None when it failed or has no record.
    pub scores: BTreeMap<Condition, Option<Score>>,
    /// Right under `blind`: the question is answerable without the video.
    pub prior_answerable: bool,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What was run (suite, model, mode, sampling...), as the caller describes it.
    pub run: Value,
    /// Per condition, in the order given.
    pub conditions: Vec<ConditionReport>,
    /// Each control against `video` (when `video` was run).
    pub deltas: Vec<Delta>,
    /// How many items the blind control answers right.
    pub prior_answerable: usize,
    /// Per item.
    pub items: Vec<ItemResult>,
}

fn chance_of(t: &Truth) -> f64 {
    match t {
        Truth::Choice { options, .. } => 1.0 / options.len() as f64,
        _ => 0.0,
    }
}

/// An item, its score under one condition (None: no answer) and whether its record is an error.
type Row<'a> = (&'a EvalItem, Option<&'a Score>, bool);

fn accuracy(rows: &[Row<'_>]) -> Accuracy {
    let scored: Vec<(&EvalItem, &Score)> = rows
        .iter()
        .filter_map(|(i, s, _)| s.map(|s| (*i, s)))
        .collect();
    let n = scored.len();
    let correct = scored.iter().filter(|(_, s)| s.correct).count();
    let (ci_low, ci_high) = wilson(correct, n);
    let ious: Vec<f64> = scored.iter().filter_map(|(_, s)| s.iou).collect();
    Accuracy {
        n,
        correct,
        accuracy: if n == 0 {
            0.0
        } else {
            correct as f64 / n as f64
        },
        ci_low,
        ci_high,
        chance: if n == 0 {
            0.0
        } else {
            scored.iter().map(|(i, _)| chance_of(&i.truth)).sum::<f64>() / n as f64
        },
        failed: rows
            .iter()
            .filter(|(_, s, failed)| s.is_none() && *failed)
            .count(),
        missing: rows
            .iter()
            .filter(|(_, s, failed)| s.is_none() && !*failed)
            .count(),
        grounding: Grounding::of(&ious),
    }
}

/// Builds the report of `items` under `conditions` from their records (by [`run_key`]).
pub fn build(
    run: Value,
    items: &[EvalItem],
    conditions: &[Condition],
    records: &HashMap<String, Value>,
) -> Report {
    let mut results = Vec::with_capacity(items.len());
    for it in items {
        let mut scores = BTreeMap::new();
        for &c in conditions {
            let rec = records.get(&run_key(&it.id, c));
            let s = rec
                .filter(|r| r["status"] == "ok")
                .map(|r| score(&it.truth, r["answer"].as_str().unwrap_or("")));
            scores.insert(c, s);
        }
        let prior_answerable = scores
            .get(&Condition::Blind)
            .and_then(|s| s.as_ref())
            .is_some_and(|s| s.correct);
        results.push(ItemResult {
            id: it.id.clone(),
            task: it.task.clone(),
            scores,
            prior_answerable,
        });
    }
    let failed = |it: &EvalItem, c: Condition| {
        records
            .get(&run_key(&it.id, c))
            .is_some_and(|r| r["status"] == "error")
    };
    let mut reports = Vec::new();
    for &c in conditions {
        let rows: Vec<Row<'_>> = items
            .iter()
            .zip(&results)
            .map(|(it, r)| (it, r.scores[&c].as_ref(), failed(it, c)))
            .collect();
        let mut tasks: BTreeMap<String, Vec<Row<'_>>> = BTreeMap::new();
        for row in &rows {
            tasks.entry(row.0.task.clone()).or_default().push(*row);
        }
        reports.push(ConditionReport {
            condition: c,
            overall: accuracy(&rows),
            tasks: tasks
                .iter()
                .map(|(t, r)| (t.clone(), accuracy(r)))
                .collect(),
        });
    }
    let mut deltas = Vec::new();
    if conditions.contains(&Condition::Video) {
        for &c in conditions.iter().filter(|&&c| c != Condition::Video) {
            let pairs: Vec<(bool, bool)> = results
                .iter()
                .filter_map(|r| match (&r.scores[&Condition::Video], &r.scores[&c]) {
                    (Some(a), Some(b)) => Some((a.correct, b.correct)),
                    _ => None,
                })
                .collect();
            let paired = Paired::of(pairs.iter().copied());
            let n = pairs.len().max(1) as f64;
            deltas.push(Delta {
                condition: c,
                delta: (paired.only_second as f64 - paired.only_first as f64) / n,
                p_value: paired.p_value(),
                paired,
            });
        }
    }
    Report {
        run,
        conditions: reports,
        deltas,
        prior_answerable: results.iter().filter(|r| r.prior_answerable).count(),
        items: results,
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

impl Report {
    /// The report as Markdown: one table of accuracy per task and condition (with intervals and
    /// chance), the deltas with their p-values, grounding figures and the prior count.
    pub fn markdown(&self) -> String {
        let mut md = String::from("# vidlm eval report\n\n");
        for key in ["suite", "layout", "model", "mode", "sample", "items"] {
            if let Some(v) = self.run.get(key) {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                let _ = writeln!(md, "- {key}: {v}");
            }
        }
        md.push_str("\nAccuracy in %, with Wilson 95% intervals; chance is uniform guessing among the options.\n\n");
        md.push_str("| task | condition | n | accuracy | 95% CI | chance | failed |\n");
        md.push_str("| --- | --- | ---: | ---: | --- | ---: | ---: |\n");
        let mut tasks: Vec<&String> = self
            .conditions
            .first()
            .map(|c| c.tasks.keys().collect())
            .unwrap_or_default();
        tasks.sort();
        let row = |md: &mut String, task: &str, c: Condition, a: &Accuracy| {
            let _ = writeln!(
                md,
                "| {task} | {c} | {} | {} | {}-{} | {} | {} |",
                a.n,
                pct(a.accuracy),
                pct(a.ci_low),
                pct(a.ci_high),
                pct(a.chance),
                a.failed
            );
        };
        for t in tasks {
            for c in &self.conditions {
                row(&mut md, t, c.condition, &c.tasks[t]);
            }
        }
        for c in &self.conditions {
            row(&mut md, "**overall**", c.condition, &c.overall);
        }
        if !self.deltas.is_empty() {
            md.push_str("\n## Controls against `video`\n\n");
            md.push_str("| condition | delta (points) | right only with video | right only with control | McNemar p |\n");
            md.push_str("| --- | ---: | ---: | ---: | ---: |\n");
            for d in &self.deltas {
                let _ = writeln!(
                    md,
                    "| {} | {:+.1} | {} | {} | {:.3} |",
                    d.condition,
                    100.0 * d.delta,
                    d.paired.only_first,
                    d.paired.only_second,
                    d.p_value
                );
            }
        }
        let grounding: Vec<_> = self
            .conditions
            .iter()
            .filter_map(|c| c.overall.grounding.map(|g| (c.condition, g)))
            .collect();
        if !grounding.is_empty() {
            md.push_str("\n## Temporal grounding\n\n| condition | n | mIoU | R@1 0.3 | R@1 0.5 | R@1 0.7 |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
            for (c, g) in grounding {
                let _ = writeln!(
                    md,
                    "| {c} | {} | {:.3} | {} | {} | {} |",
                    g.n,
                    g.miou,
                    pct(g.r1_03),
                    pct(g.r1_05),
                    pct(g.r1_07)
                );
            }
        }
        if self
            .conditions
            .iter()
            .any(|c| c.condition == Condition::Blind)
        {
            let _ = writeln!(
                md,
                "\n{} of {} items are answered right without the video (`blind`): prior-answerable \
                 (flagged in report.json).",
                self.prior_answerable,
                self.items.len()
            );
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn report_counts_pairs_failures_and_prior() {
        let text = (0..4)
            .map(|i| {
                format!(
                    "{{\"id\":\"q{i}\",\"video\":\"v.mp4\",\"question\":\"q\",\"options\":[\"a\",\"b\"],\"answer\":\"A\",\"task\":\"t{}\"}}\n",
                    i % 2
                )
            })
            .collect::<String>();
        let (_, items) = crate::suite::parse_suite(&text, "s", std::path::Path::new(".")).unwrap();
        let mut records = HashMap::new();
        // video: A, A, B, error; blind: A, B, B, B.
        for (i, (v, b)) in [("A", "A"), ("A", "B"), ("B", "B"), ("", "B")]
            .iter()
            .enumerate()
        {
            let vid = run_key(&format!("q{i}"), Condition::Video);
            let rec = if v.is_empty() {
                json!({"id": vid, "status": "error", "error": "boom"})
            } else {
                json!({"id": vid, "status": "ok", "answer": v})
            };
            records.insert(vid, rec);
            let bl = run_key(&format!("q{i}"), Condition::Blind);
            records.insert(bl.clone(), json!({"id": bl, "status": "ok", "answer": b}));
        }
        let r = build(
            json!({}),
            &items,
            &[Condition::Video, Condition::Blind],
            &records,
        );
        let v = &r.conditions[0].overall;
        assert_eq!((v.n, v.correct, v.failed, v.missing), (3, 2, 1, 0));
        assert!((v.chance - 0.5).abs() < 1e-12);
        let b = &r.conditions[1].overall;
        assert_eq!((b.n, b.correct), (4, 1));
        assert_eq!(r.conditions[0].tasks["t0"].n, 2);
        // Paired over q0..q2: both right q0, video only q1, neither q2.
        let d = &r.deltas[0];
        assert_eq!(
            (
                d.paired.both,
                d.paired.only_first,
                d.paired.only_second,
                d.paired.neither
            ),
            (1, 1, 0, 1)
        );
        assert!((d.delta + 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(d.p_value, 1.0);
        assert_eq!(r.prior_answerable, 1);
        assert!(r.items[0].prior_answerable);
        let md = r.markdown();
        assert!(md.contains("| **overall** | video | 3 | 66.7 |"), "{md}");
        assert!(md.contains("1 of 4 items are answered right without the video"));
    }
}
