//! `eval synth`'s answers checked from the pixels: every clip is decoded with the ffmpeg CLI (not
//! vidlm's decoder) and its answer is found again from the colours, positions, counts, times and
//! digits in the frames; the same seed writes the same bytes.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vidlm_eval::synth::{write_suite, PALETTE, SEGMENTS, TASKS, WHITE};

struct Frame {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
}

impl Frame {
    fn px(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.w + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

fn decode(path: &Path) -> Vec<Frame> {
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["stream=width,height", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    let dims = String::from_utf8(probe.stdout).unwrap();
    let mut it = dims.trim().split(',').map(|v| v.parse::<usize>().unwrap());
    let (w, h) = (it.next().unwrap(), it.next().unwrap());
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
        .chunks_exact(w * h * 3)
        .map(|c| Frame {
            w,
            h,
            rgb: c.to_vec(),
        })
        .collect()
}

/// A connected region of one colour: its pixel count and bounding box.
#[derive(Debug, Clone, Copy)]
struct Blob {
    area: usize,
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

impl Blob {
    fn cx(&self) -> f64 {
        (self.x0 + self.x1) as f64 / 2.0
    }
    fn cy(&self) -> f64 {
        (self.y0 + self.y1) as f64 / 2.0
    }
    fn fill(&self) -> f64 {
        self.area as f64 / ((self.x1 - self.x0 + 1) * (self.y1 - self.y0 + 1)) as f64
    }
}

fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter()
        .zip(b)
        .all(|(&x, y)| (i32::from(x) - i32::from(y)).abs() < 70)
}

/// The 4-connected regions of pixels near `rgb`, of at least 30 pixels (edges blurred by chroma
/// subsampling do not count).
fn blobs(f: &Frame, rgb: [u8; 3]) -> Vec<Blob> {
    let mut seen = vec![false; f.w * f.h];
    let mut out = Vec::new();
    for start in 0..f.w * f.h {
        if seen[start] || !near(f.px(start % f.w, start / f.w), rgb) {
            continue;
        }
        let mut stack = vec![start];
        seen[start] = true;
        let mut b = Blob {
            area: 0,
            x0: usize::MAX,
            y0: usize::MAX,
            x1: 0,
            y1: 0,
        };
        while let Some(i) = stack.pop() {
            let (x, y) = (i % f.w, i / f.w);
            b.area += 1;
            b.x0 = b.x0.min(x);
            b.y0 = b.y0.min(y);
            b.x1 = b.x1.max(x);
            b.y1 = b.y1.max(y);
            let mut push = |nx: usize, ny: usize| {
                let j = ny * f.w + nx;
                if !seen[j] && near(f.px(nx, ny), rgb) {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                push(x - 1, y);
            }
            if x + 1 < f.w {
                push(x + 1, y);
            }
            if y > 0 {
                push(x, y - 1);
            }
            if y + 1 < f.h {
                push(x, y + 1);
            }
        }
        if b.area >= 30 {
            out.push(b);
        }
    }
    out
}

fn rgb_of(name: &str) -> [u8; 3] {
    PALETTE.iter().find(|(n, _)| *n == name).unwrap().1
}

/// The word before " square" in a question ("How many cyan squares ...").
fn colour_in(question: &str) -> [u8; 3] {
    let words: Vec<&str> = question.split_whitespace().collect();
    let i = words.iter().position(|w| w.starts_with("square")).unwrap();
    rgb_of(words[i - 1])
}

fn option(row: &Value) -> String {
    let letter = row["answer"].as_str().unwrap().as_bytes()[0];
    row["options"][(letter - b'A') as usize]
        .as_str()
        .unwrap()
        .to_string()
}

fn read_digits(f: &Frame) -> String {
    let mut ds = blobs(f, WHITE);
    ds.sort_by_key(|b| b.x0);
    ds.iter()
        .map(|b| {
            let h = b.y1 - b.y0 + 1;
            let u = h as f64 / 5.0;
            let x0 = b.x1 as f64 + 1.0 - 3.0 * u;
            let lit = |px: f64, py: f64| {
                near(
                    f.px((x0 + px * u) as usize, (b.y0 as f64 + py * u) as usize),
                    WHITE,
                )
            };
            let segs: String = [
                ('a', 1.5, 0.5),
                ('b', 2.5, 1.5),
                ('c', 2.5, 3.5),
                ('d', 1.5, 4.5),
                ('e', 0.5, 3.5),
                ('f', 0.5, 1.5),
                ('g', 1.5, 2.5),
            ]
            .iter()
            .filter(|(_, x, y)| lit(*x, *y))
            .map(|(s, _, _)| *s)
            .collect();
            let d = SEGMENTS.iter().position(|s| *s == segs).unwrap_or_else(|| {
                panic!("segments {segs} are no digit");
            });
            (b'0' + d as u8) as char
        })
        .collect()
}

fn check(dir: &Path, row: &Value) {
    let frames = decode(&dir.join(row["video"].as_str().unwrap()));
    let id = row["id"].as_str().unwrap();
    let q = row["question"].as_str().unwrap();
    let last = frames.last().unwrap();
    let (w, h) = (last.w as f64, last.h as f64);
    let found: String = match row["task"].as_str().unwrap() {
        "counting" => blobs(last, colour_in(q)).len().to_string(),
        "position" => {
            let b = blobs(last, rgb_of("red"));
            assert_eq!(b.len(), 1, "{id}");
            let (dx, dy) = (b[0].cx() - w / 2.0, b[0].cy() - h / 2.0);
            let r = if dx.abs() > dy.abs() {
                if dx < 0.0 {
                    "left"
                } else {
                    "right"
                }
            } else if dy < 0.0 {
                "top"
            } else {
                "bottom"
            };
            r.to_string()
        }
        "motion" => {
            let c = colour_in(q);
            let a = blobs(&frames[0], c)[0];
            let b = blobs(last, c)[0];
            let (dx, dy) = (b.cx() - a.cx(), b.cy() - a.cy());
            let r = if dx.abs() > dy.abs() {
                if dx < 0.0 {
                    "left"
                } else {
                    "right"
                }
            } else if dy < 0.0 {
                "up"
            } else {
                "down"
            };
            r.to_string()
        }
        "order" => {
            let opts: Vec<&str> = row["options"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_str().unwrap())
                .collect();
            let first_seen = |name: &str| {
                frames
                    .iter()
                    .position(|f| !blobs(f, rgb_of(name)).is_empty())
                    .unwrap()
            };
            let times: Vec<usize> = opts.iter().map(|o| first_seen(o)).collect();
            let min = *times.iter().min().unwrap();
            assert_eq!(
                times.iter().filter(|&&t| t == min).count(),
                1,
                "{id}: a tie"
            );
            opts[times.iter().position(|&t| t == min).unwrap()].to_string()
        }
        "binding" => {
            let hollow: Vec<&str> = PALETTE
                .iter()
                .filter(|(_, rgb)| blobs(last, *rgb).iter().any(|b| b.fill() < 0.8))
                .map(|(n, _)| *n)
                .collect();
            assert_eq!(hollow.len(), 1, "{id}: {hollow:?}");
            hollow[0].to_string()
        }
        "absent" => {
            let c = colour_in(q);
            let any = frames.iter().any(|f| !blobs(f, c).is_empty());
            (if any { "yes" } else { "no" }).to_string()
        }
        "grounding" => {
            let shown: Vec<usize> = frames
                .iter()
                .enumerate()
                .filter(|(_, f)| !blobs(f, WHITE).is_empty())
                .map(|(i, _)| i)
                .collect();
            // Frame i is shown at i / 10 s; the square covers [start, end).
            let fps = f64::from(vidlm_eval::synth::FPS);
            let (s, e) = (
                *shown.first().unwrap() as f64 / fps,
                (*shown.last().unwrap() + 1) as f64 / fps,
            );
            assert_eq!(
                shown.len(),
                shown.last().unwrap() - shown.first().unwrap() + 1
            );
            let (ts, te) = (row["start"].as_f64().unwrap(), row["end"].as_f64().unwrap());
            assert!(
                (s - ts).abs() <= 0.1 + 1e-9 && (e - te).abs() <= 0.1 + 1e-9,
                "{id}: {s}-{e} vs {ts}-{te}"
            );
            return;
        }
        "text" => read_digits(last),
        other => panic!("unknown task {other}"),
    };
    let want = if row.get("options").is_some() {
        option(row)
    } else {
        row["answer"].as_str().unwrap().to_string()
    };
    assert_eq!(
        found, want,
        "{id}: the pixels say {found}, the suite {want}"
    );
}

#[test]
fn every_clip_shows_its_answer_and_seeds_repeat() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let per_task = 4;
    let n = write_suite(a.path(), 11, per_task).unwrap();
    assert_eq!(n, per_task * TASKS.len());
    write_suite(b.path(), 11, per_task).unwrap();
    let text = std::fs::read_to_string(a.path().join("suite.jsonl")).unwrap();
    assert_eq!(
        text,
        std::fs::read_to_string(b.path().join("suite.jsonl")).unwrap()
    );
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut yes_no = (0, 0);
    for row in &rows {
        let name = row["video"].as_str().unwrap();
        assert_eq!(
            std::fs::read(a.path().join(name)).unwrap(),
            std::fs::read(b.path().join(name)).unwrap(),
            "{name} differs between two runs of one seed"
        );
        check(a.path(), row);
        if row["task"] == "absent" {
            if option(row) == "yes" {
                yes_no.0 += 1;
            } else {
                yes_no.1 += 1;
            }
        }
    }
    assert_eq!(
        yes_no,
        (per_task / 2, per_task / 2),
        "absent: yes and no balanced"
    );
    // The suite reads as vidlm's layout, with the truths the rows say.
    let (layout, items) =
        vidlm_eval::suite::read_suite(&a.path().join("suite.jsonl"), None).unwrap();
    assert_eq!(layout, vidlm_eval::suite::Layout::Vidlm);
    assert_eq!(items.len(), n);
    // Another seed writes other questions.
    let c = tempfile::tempdir().unwrap();
    write_suite(c.path(), 12, per_task).unwrap();
    assert_ne!(
        text,
        std::fs::read_to_string(c.path().join("suite.jsonl")).unwrap()
    );
}
