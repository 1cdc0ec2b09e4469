//! Suites: benchmark annotation files read into [`EvalItem`]s, each with the prompt the model is
//! given and the truth it is scored against.
//!
//! Layouts ([`Layout`]), detected from the file:
//! - vidlm's JSONL: `{id, video, question, options?, answer, task?, start?, end?}`;
//! - Video-MME rows (a JSON array or JSONL): `video_id, duration, domain, sub_category, videoID,
//!   question_id, task_type, question, options ["A. ..", ..], answer` (a letter); the video is
//!   `{videoID}.mp4`;
//! - MVBench's per-task JSON (an array of `{video, question, candidates, answer}`, the answer being
//!   the candidate's text); the task is the file's stem;
//! - NExT-QA's CSV (`video, frame_count, width, height, question, answer, qid, type, a0..a4`; the
//!   answer the option's index; without `a0` the open-ended layout); the video is `{video}.mp4`;
//! - Charades-STA's lines (`vid start end##sentence`); the video is `{vid}.mp4`.
//!
//! Relative video paths are resolved against `--video-dir` when given, else the manifest's folder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{EvalError, Result};

/// The annotation layouts [`read_suite`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// vidlm's JSONL.
    Vidlm,
    /// Video-MME's rows.
    VideoMme,
    /// MVBench's per-task JSON.
    MvBench,
    /// NExT-QA's CSV.
    NextQa,
    /// Charades-STA's `vid start end##sentence` lines.
    CharadesSta,
}

/// How a multiple-choice answer is read from generated text: the rule of the benchmark's
/// lmms-eval task, so figures compare with published ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChoiceRule {
    /// Video-MME's `extract_characters_regex`.
    VideoMme,
    /// MVBench's `mcq_acc` (also used for vidlm's and NExT-QA's choices).
    MvBench,
}

/// What an item is scored against.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Truth {
    /// Multiple choice: the options' texts (without letters) and the right one's index.
    Choice {
        /// Option texts.
        options: Vec<String>,
        /// Index of the right option.
        answer: usize,
        /// How the letter is read from generated text.
        rule: ChoiceRule,
    },
    /// An open answer, matched exactly after normalization.
    Open {
        /// The right answer.
        answer: String,
    },
    /// A count: the first number in the answer is compared.
    Count {
        /// The right count.
        answer: i64,
    },
    /// Temporal grounding: the predicted range is compared by IoU.
    Span {
        /// Start, seconds.
        start: f64,
        /// End, seconds.
        end: f64,
    },
}

/// One question about one video.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EvalItem {
    /// Unique id.
    pub id: String,
    /// The video: a path (resolved) or URL.
    pub video: String,
    /// The task (category) the report groups by.
    pub task: String,
    /// The question as written in the manifest.
    pub question: String,
    /// The full text given to the model.
    pub prompt: String,
    /// The truth.
    pub truth: Truth,
    /// A window of the video, seconds (vidlm's `start`/`end` for non-grounding items).
    pub window: Option<(f64, f64)>,
}

/// Option letters.
pub const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// lmms-eval's MVBench post-prompt.
const MVBENCH_POST: &str = "Answer with the option's letter from the given choices directly.";

/// Reads a suite; see the module doc for the layouts. `video_dir` resolves relative video names.
///
/// # Errors
/// [`EvalError::Io`] when unreadable, [`EvalError::Manifest`] naming the line and the problem (an
/// unknown layout, a missing field, an answer that is not one of the options, a duplicate id).
pub fn read_suite(path: &Path, video_dir: Option<&Path>) -> Result<(Layout, Vec<EvalItem>)> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = video_dir
        .map(Path::to_path_buf)
        .or_else(|| path.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    parse_suite(&text, &stem, &base).map_err(|reason| EvalError::Manifest {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses suite text (see [`read_suite`]); `stem` names MVBench's task, `base` resolves videos.
///
/// # Errors
/// As [`read_suite`], as `line N: reason`.
pub fn parse_suite(
    text: &str,
    stem: &str,
    base: &Path,
) -> std::result::Result<(Layout, Vec<EvalItem>), String> {
    let trimmed = text.trim_start();
    let rows: Vec<(usize, Value)> = if trimmed.starts_with('[') {
        let v: Vec<Value> = serde_json::from_str(trimmed).map_err(|e| format!("JSON: {e}"))?;
        v.into_iter().enumerate().map(|(i, r)| (i + 1, r)).collect()
    } else if trimmed.starts_with('{') {
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            rows.push((i + 1, v));
        }
        rows
    } else if trimmed.lines().next().is_some_and(|l| l.contains("##")) {
        let items = parse_charades(text, base)?;
        return dedup(Layout::CharadesSta, items);
    } else {
        let items = parse_nextqa(text, base)?;
        return dedup(Layout::NextQa, items);
    };
    let first = rows.first().map(|(_, v)| v).ok_or("no items")?;
    let layout = if first.get("videoID").is_some() && first.get("options").is_some() {
        Layout::VideoMme
    } else if first.get("candidates").is_some() {
        Layout::MvBench
    } else {
        Layout::Vidlm
    };
    let mut items = Vec::with_capacity(rows.len());
    for (n, (line, row)) in rows.iter().enumerate() {
        let item = match layout {
            Layout::VideoMme => video_mme(row, base),
            Layout::MvBench => mvbench(row, n, stem, base),
            _ => vidlm_row(row, base),
        }
        .map_err(|e| format!("line {line}: {e}"))?;
        items.push(item);
    }
    dedup(layout, items)
}

fn dedup(
    layout: Layout,
    items: Vec<EvalItem>,
) -> std::result::Result<(Layout, Vec<EvalItem>), String> {
    let mut seen = HashSet::new();
    for it in &items {
        if !seen.insert(it.id.as_str()) {
            return Err(format!("duplicate id `{}`", it.id));
        }
    }
    if items.is_empty() {
        return Err("no items".into());
    }
    Ok((layout, items))
}

fn resolve(base: &Path, name: &str) -> String {
    let p = PathBuf::from(name);
    if p.is_absolute() || name.contains("://") {
        name.to_string()
    } else {
        base.join(p).to_string_lossy().into_owned()
    }
}

fn field<'a>(row: &'a Value, name: &str) -> std::result::Result<&'a Value, String> {
    row.get(name)
        .filter(|v| !v.is_null())
        .ok_or_else(|| format!("missing `{name}`"))
}

fn text_field(row: &Value, name: &str) -> std::result::Result<String, String> {
    match field(row, name)? {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("`{name}` is not text: {other}")),
    }
}

fn number_field(row: &Value, name: &str) -> std::result::Result<Option<f64>, String> {
    match row.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => vidlm_media::parse_time(s)
            .map(Some)
            .map_err(|e| format!("`{name}`: {e}")),
        Some(other) => Err(format!("`{name}` is not a time: {other}")),
    }
}

fn strings(row: &Value, name: &str) -> std::result::Result<Vec<String>, String> {
    let arr = field(row, name)?
        .as_array()
        .ok_or_else(|| format!("`{name}` is not a list"))?;
    arr.iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(format!("`{name}` holds a non-text option: {other}")),
        })
        .collect()
}

/// The generic multiple-choice prompt (MVBench's, which lmms-eval also uses for its own choices).
fn choice_prompt(question: &str, options: &[String]) -> String {
    let mut p = format!("Question:{question}\nOption:\n");
    for (i, o) in options.iter().enumerate() {
        p.push_str(&format!("({}) {o}\n", LETTERS[i] as char));
    }
    p.push_str(MVBENCH_POST);
    p
}

fn letter_index(answer: &str, n: usize) -> Option<usize> {
    let a = answer.trim().trim_start_matches('(');
    let c = a.chars().next()?.to_ascii_uppercase();
    let rest = &a[c.len_utf8()..];
    let alone = rest.is_empty() || rest.starts_with([')', '.', ':', ' ']);
    let i = (c as u8).checked_sub(b'A')? as usize;
    (c.is_ascii_uppercase() && alone && i < n).then_some(i)
}

fn vidlm_row(row: &Value, base: &Path) -> std::result::Result<EvalItem, String> {
    let id = text_field(row, "id")?;
    let video = text_field(row, "video")?;
    let question = text_field(row, "question")?;
    let task = row
        .get("task")
        .and_then(Value::as_str)
        .unwrap_or("qa")
        .to_string();
    let start = number_field(row, "start")?;
    let end = number_field(row, "end")?;
    let options = match row.get("options") {
        None | Some(Value::Null) => None,
        Some(_) => Some(strings(row, "options")?),
    };
    let answer = row.get("answer").filter(|v| !v.is_null());
    let grounding = task.contains("grounding") || (answer.is_none() && start.is_some());
    let (truth, prompt, window) = if let Some(options) = options {
        if options.len() < 2 || options.len() > LETTERS.len() {
            return Err(format!("item `{id}`: 2 to 26 options"));
        }
        let a = text_field(row, "answer")?;
        let idx = letter_index(&a, options.len())
            .or_else(|| options.iter().position(|o| o.trim() == a.trim()))
            .ok_or_else(|| {
                format!("item `{id}`: answer `{a}` is neither an option letter nor an option")
            })?;
        let prompt = choice_prompt(&question, &options);
        let truth = Truth::Choice {
            options,
            answer: idx,
            rule: ChoiceRule::MvBench,
        };
        (truth, prompt, start.zip(end))
    } else if grounding {
        let (Some(s), Some(e)) = (start, end) else {
            return Err(format!("item `{id}`: grounding needs `start` and `end`"));
        };
        if e <= s {
            return Err(format!("item `{id}`: `end` must be after `start`"));
        }
        (Truth::Span { start: s, end: e }, question.clone(), None)
    } else {
        let a = text_field(row, "answer")?;
        let truth = match (task.contains("count"), a.trim().parse::<i64>()) {
            (true, Ok(n)) => Truth::Count { answer: n },
            (true, Err(_)) => return Err(format!("item `{id}`: a count answer must be a number")),
            _ => Truth::Open { answer: a },
        };
        (truth, question.clone(), start.zip(end))
    };
    Ok(EvalItem {
        id,
        video: resolve(base, &video),
        task,
        question,
        prompt,
        truth,
        window,
    })
}

fn video_mme(row: &Value, base: &Path) -> std::result::Result<EvalItem, String> {
    let id = text_field(row, "question_id")?;
    let vid = text_field(row, "videoID")?;
    let question = text_field(row, "question")?;
    let raw_options = strings(row, "options")?;
    let answer = text_field(row, "answer")?;
    let task = text_field(row, "task_type")?;
    // lmms-eval's videomme_doc_to_text with its yaml's default post_prompt.
    let prompt = format!(
        "Select the best answer to the following multiple-choice question based on the video and \
         the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\n\
         {question}\n{}\n\nAnswer the question with A, B, C, or D.",
        raw_options.join("\n")
    );
    let options: Vec<String> = raw_options
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let prefix = format!("{}.", LETTERS[i] as char);
            o.strip_prefix(&prefix).unwrap_or(o).trim().to_string()
        })
        .collect();
    let idx = letter_index(&answer, options.len())
        .ok_or_else(|| format!("item `{id}`: answer `{answer}` is not an option letter"))?;
    Ok(EvalItem {
        id,
        video: resolve(base, &format!("{vid}.mp4")),
        task,
        question,
        prompt,
        truth: Truth::Choice {
            options,
            answer: idx,
            rule: ChoiceRule::VideoMme,
        },
        window: None,
    })
}

fn mvbench(
    row: &Value,
    n: usize,
    stem: &str,
    base: &Path,
) -> std::result::Result<EvalItem, String> {
    let video = text_field(row, "video")?;
    let question = text_field(row, "question")?;
    let options = strings(row, "candidates")?;
    let answer = text_field(row, "answer")?;
    let idx = options
        .iter()
        .position(|c| *c == answer)
        .ok_or_else(|| format!("answer `{answer}` is not one of the candidates"))?;
    let window = number_field(row, "start")?.zip(number_field(row, "end")?);
    Ok(EvalItem {
        id: format!("{stem}-{n}"),
        video: resolve(base, &video),
        task: stem.to_string(),
        prompt: choice_prompt(&question, &options),
        question,
        truth: Truth::Choice {
            options,
            answer: idx,
            rule: ChoiceRule::MvBench,
        },
        window,
    })
}

fn parse_nextqa(text: &str, base: &Path) -> std::result::Result<Vec<EvalItem>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("CSV header: {e}"))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    for need in ["video", "question", "answer", "qid"] {
        if col(need).is_none() {
            return Err(format!(
                "CSV header: no `{need}` column (expected NExT-QA's video, question, answer, qid, type, a0..a4)"
            ));
        }
    }
    let choices: Vec<usize> = (0..5).filter_map(|i| col(&format!("a{i}"))).collect();
    let mut items = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| format!("line {line}: {e}"))?;
        let get = |name: &str| col(name).and_then(|p| rec.get(p)).unwrap_or("").to_string();
        let video = get("video");
        let question = get("question");
        let answer = get("answer");
        let task = Some(get("type"))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "qa".into());
        let id = format!("{video}_{}", get("qid"));
        let (truth, prompt) = if choices.is_empty() {
            (Truth::Open { answer }, question.clone())
        } else {
            let options: Vec<String> = choices
                .iter()
                .map(|&p| rec.get(p).unwrap_or("").to_string())
                .collect();
            let idx = answer
                .parse::<usize>()
                .ok()
                .filter(|&a| a < options.len())
                .ok_or_else(|| format!("line {line}: answer `{answer}` is not an option index"))?;
            let prompt = choice_prompt(&question, &options);
            let truth = Truth::Choice {
                options,
                answer: idx,
                rule: ChoiceRule::MvBench,
            };
            (truth, prompt)
        };
        items.push(EvalItem {
            id,
            video: resolve(base, &format!("{video}.mp4")),
            task,
            question,
            prompt,
            truth,
            window: None,
        });
    }
    Ok(items)
}

/// The grounding prompt for Charades-STA sentences (asks for the range in seconds, the form
/// [`crate::score::predicted_span`] reads).
pub fn grounding_prompt(sentence: &str) -> String {
    format!(
        "Find the moment in the video described by this sentence: \"{sentence}\". \
         Answer with its start and end time in seconds, as `start - end`."
    )
}

fn parse_charades(text: &str, base: &Path) -> std::result::Result<Vec<EvalItem>, String> {
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |why: &str| format!("line {line_no}: {why} (expected `vid start end##sentence`)");
        let (head, sentence) = line.split_once("##").ok_or_else(|| err("no `##`"))?;
        let mut parts = head.split_whitespace();
        let (Some(vid), Some(s), Some(e), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err("three fields before `##`"));
        };
        let (Ok(start), Ok(end)) = (s.parse::<f64>(), e.parse::<f64>()) else {
            return Err(err("start and end must be numbers"));
        };
        if !(end > start && start >= 0.0) {
            return Err(err("end must be after start"));
        }
        let sentence = sentence.trim().to_string();
        items.push(EvalItem {
            id: format!("{vid}-{line_no}"),
            video: resolve(base, &format!("{vid}.mp4")),
            task: "grounding".into(),
            prompt: grounding_prompt(&sentence),
            question: sentence,
            truth: Truth::Span { start, end },
            window: None,
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, stem: &str) -> (Layout, Vec<EvalItem>) {
        parse_suite(text, stem, Path::new("/videos")).unwrap()
    }

    #[test]
    fn vidlm_jsonl_choices_open_counts_and_spans() {
        let text = r#"{"id": "q1", "video": "a.mp4", "question": "Which colour?", "options": ["red", "blue"], "answer": "B", "task": "attribute"}
{"id": "q2", "video": "/abs/b.mp4", "question": "What is shown?", "answer": "a cat"}
{"id": "q3", "video": "c.mp4", "question": "How many?", "answer": "3", "task": "counting"}
{"id": "q4", "video": "d.mp4", "question": "When does it flash?", "task": "grounding", "start": 1.5, "end": "0:03"}
{"id": "q5", "video": "e.mp4", "question": "Which?", "options": ["up", "down"], "answer": "down"}
"#;
        let (layout, items) = parse(text, "x");
        assert_eq!(layout, Layout::Vidlm);
        assert_eq!(items[0].video, "/videos/a.mp4");
        assert_eq!(items[1].video, "/abs/b.mp4");
        assert!(matches!(items[0].truth, Truth::Choice { answer: 1, .. }));
        assert_eq!(
            items[0].prompt,
            "Question:Which colour?\nOption:\n(A) red\n(B) blue\n\
             Answer with the option's letter from the given choices directly."
        );
        assert_eq!(
            items[1].truth,
            Truth::Open {
                answer: "a cat".into()
            }
        );
        assert_eq!(items[2].truth, Truth::Count { answer: 3 });
        assert_eq!(
            items[3].truth,
            Truth::Span {
                start: 1.5,
                end: 3.0
            }
        );
        assert!(matches!(items[4].truth, Truth::Choice { answer: 1, .. }));
    }

    #[test]
    fn video_mme_rows_as_published() {
        // Two rows in the layout of lmms-lab/Video-MME's parquet, exported as JSONL.
        let text = r#"{"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History", "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1", "task_type": "Counting Problem", "question": "When demonstrating the Germany modern Christmas tree is initially decorated with apples, candles and berries, which kind of the decoration has the largest number?", "options": ["A. Apples.", "B. Candles.", "C. Berries.", "D. The three kinds are of the same number."], "answer": "C"}
{"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History", "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-2", "task_type": "Information Synopsis", "question": "What is the genre of this video?", "options": ["A. It is a news report that introduces the history behind Christmas decorations.", "B. It is a documentary on the evolution of Christmas holiday recipes.", "C. It is a travel vlog exploring Christmas markets around the world.", "D. It is a tutorial on DIY Christmas ornament crafting."], "answer": "A"}
"#;
        let (layout, items) = parse(text, "videomme");
        assert_eq!(layout, Layout::VideoMme);
        assert_eq!(items[0].id, "001-1");
        assert_eq!(items[0].video, "/videos/fFjv93ACGo8.mp4");
        assert_eq!(items[0].task, "Counting Problem");
        let Truth::Choice {
            options,
            answer,
            rule,
        } = &items[0].truth
        else {
            panic!()
        };
        assert_eq!((*answer, *rule), (2, ChoiceRule::VideoMme));
        assert_eq!(options[1], "Candles.");
        assert!(items[1].prompt.starts_with("Select the best answer"));
        assert!(items[1]
            .prompt
            .ends_with("D. It is a tutorial on DIY Christmas ornament crafting.\n\nAnswer the question with A, B, C, or D."));
        // The same rows as a JSON array.
        let arr = format!("[{}]", text.lines().collect::<Vec<_>>().join(","));
        assert_eq!(parse(&arr, "videomme").1, items);
    }

    #[test]
    fn mvbench_task_json_as_published() {
        let text = r#"[
    {"video": "166583.webm", "question": "What is the action performed by the person in the video?", "candidates": ["Not sure", "Scattering something down", "Piling something up"], "answer": "Piling something up"},
    {"video": "video_10000.mp4", "question": "What happened after the person took the food?", "candidates": ["Ate the medicine.", "Tidied up the blanket.", "Put down the cup/glass/bottle.", "Took the box."], "answer": "Ate the medicine.", "start": 11.4, "end": 18.9}
]"#;
        let (layout, items) = parse(text, "action_antonym");
        assert_eq!(layout, Layout::MvBench);
        assert_eq!(items[0].id, "action_antonym-0");
        assert_eq!(items[0].task, "action_antonym");
        assert!(matches!(items[0].truth, Truth::Choice { answer: 2, .. }));
        assert_eq!(items[1].window, Some((11.4, 18.9)));
        assert_eq!(
            items[0].prompt,
            "Question:What is the action performed by the person in the video?\nOption:\n\
             (A) Not sure\n(B) Scattering something down\n(C) Piling something up\n\
             Answer with the option's letter from the given choices directly."
        );
    }

    #[test]
    fn nextqa_csv_as_published() {
        let text = "video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n\
4010069381,369,640,480,how do the two man play the instrument,0,6,CH,roll the handle,tap their feet,strum the string,hit with sticks,pat with hand\n\
4882821564,1048,640,360,why did the boy clap his hands when he ran to the christmas tree,2,2,CW,adjust the tree,get away the dust,dancing,pressing a button to activate,presents\n";
        let (layout, items) = parse(text, "val");
        assert_eq!(layout, Layout::NextQa);
        assert_eq!(items[0].id, "4010069381_6");
        assert_eq!(items[0].video, "/videos/4010069381.mp4");
        assert_eq!(items[1].task, "CW");
        let Truth::Choice {
            options, answer, ..
        } = &items[1].truth
        else {
            panic!()
        };
        assert_eq!((options.len(), *answer), (5, 2));
        assert_eq!(options[2], "dancing");
        // The open-ended layout: no options.
        let open = "video,frame_count,width,height,question,answer,qid,type\n\
4010069381,369,640,480,what are the men doing,playing instruments,1,DO\n";
        let (_, items) = parse(open, "val");
        assert_eq!(
            items[0].truth,
            Truth::Open {
                answer: "playing instruments".into()
            }
        );
    }

    #[test]
    fn charades_sta_lines_as_published() {
        let text = "3MSZA 24.3 30.4##person turn a light on.\nAO8RW 0.0 6.9##a person is putting a book on a shelf.\n";
        let (layout, items) = parse(text, "charades_sta_test");
        assert_eq!(layout, Layout::CharadesSta);
        assert_eq!(items[0].id, "3MSZA-1");
        assert_eq!(items[0].video, "/videos/3MSZA.mp4");
        assert_eq!(
            items[0].truth,
            Truth::Span {
                start: 24.3,
                end: 30.4
            }
        );
        assert_eq!(items[1].question, "a person is putting a book on a shelf.");
    }

    #[test]
    fn errors_name_the_line() {
        for (text, want) in [
            ("{\"id\":\"a\",\"video\":\"x\"}\n", "line 1: missing `question`"),
            (
                "{\"id\":\"a\",\"video\":\"x\",\"question\":\"q\",\"options\":[\"a\",\"b\"],\"answer\":\"C\"}\n",
                "neither an option letter",
            ),
            (
                "{\"id\":\"a\",\"video\":\"x\",\"question\":\"q\",\"answer\":\"1\"}\n{\"id\":\"a\",\"video\":\"y\",\"question\":\"q\",\"answer\":\"1\"}\n",
                "duplicate id",
            ),
            ("AB 3 2##late start\n", "line 1: end must be after start"),
            ("AB 3##x\n", "three fields"),
            ("video,question\nx,y\n", "no `answer` column"),
            (
                "[{\"video\":\"v\",\"question\":\"q\",\"candidates\":[\"a\"],\"answer\":\"b\"}]",
                "line 1: answer `b` is not one of the candidates",
            ),
            (
                "{\"id\":\"a\",\"video\":\"x\",\"question\":\"q\",\"task\":\"counting\",\"answer\":\"many\"}\n",
                "must be a number",
            ),
        ] {
            let e = parse_suite(text, "t", Path::new(".")).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
