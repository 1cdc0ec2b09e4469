//! Synthetic probes with answers true by construction: clips drawn with the ffmpeg CLI (lavfi
//! `color` + `drawbox`, H.264), and their suite in vidlm's JSONL layout.
//!
//! Tasks: `counting` (0-6 squares, all shown at once or appearing one by one), `position` (where
//! the red square is), `order` (which colour appears first), `binding` (which colour the hollow
//! square is, beside a filled one), `motion` (the direction a square moves), `grounding` (when a
//! white square is shown), `absent` (is a square of a colour present: yes and no balanced) and
//! `text` (a number drawn as seven-segment digits). Sizes, durations, backgrounds, positions
//! and distractors vary with the seed; the same seed writes the same files.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::conditions::SplitMix;
use crate::{EvalError, Result};

/// The colours shapes are drawn in: name and RGB.
pub const PALETTE: &[(&str, [u8; 3])] = &[
    ("red", [255, 0, 0]),
    ("green", [0, 255, 0]),
    ("blue", [0, 0, 255]),
    ("yellow", [255, 255, 0]),
    ("magenta", [255, 0, 255]),
    ("cyan", [0, 255, 255]),
];

/// White: the grounding square and the digits.
pub const WHITE: [u8; 3] = [255, 255, 255];

/// The tasks, in the order written.
pub const TASKS: &[&str] = &[
    "counting",
    "position",
    "order",
    "binding",
    "motion",
    "grounding",
    "absent",
    "text",
];

/// Frames per second of every clip.
pub const FPS: u32 = 10;

/// Seven-segment digits: the segments a..g each digit lights.
pub const SEGMENTS: [&str; 10] = [
    "abcdef", "bc", "abdeg", "abcdg", "bcfg", "acdfg", "acdefg", "abc", "abcdefg", "abcdfg",
];

/// One box: position, size, colour, when it is shown (`[t0, t1)` seconds), and the outline
/// thickness for a hollow box.
#[derive(Debug, Clone)]
struct Shape {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    rgb: [u8; 3],
    t0: f64,
    t1: f64,
    outline: Option<u32>,
}

#[derive(Debug, Clone)]
struct Scene {
    w: u32,
    h: u32,
    duration: f64,
    bg: [u8; 3],
    shapes: Vec<Shape>,
}

impl Scene {
    fn filter(&self) -> String {
        let hex = |c: [u8; 3]| format!("0x{:02x}{:02x}{:02x}", c[0], c[1], c[2]);
        let mut f = format!(
            "color=c={}:s={}x{}:r={FPS}:d={}",
            hex(self.bg),
            self.w,
            self.h,
            self.duration
        );
        for s in &self.shapes {
            let t = s.outline.map_or("fill".to_string(), |t| t.to_string());
            let _ = write!(
                f,
                ",drawbox=x={}:y={}:w={}:h={}:color={}:t={t}:enable='gte(t,{})*lt(t,{})'",
                s.x,
                s.y,
                s.w,
                s.h,
                hex(s.rgb),
                s.t0,
                s.t1
            );
        }
        f
    }
}

/// Writes `per_task` items of every task into `dir` (`<task>-<n>.mp4` and `suite.jsonl`); returns
/// the number of items.
///
/// # Errors
/// [`EvalError::Ffmpeg`] when the ffmpeg CLI is missing or fails; [`EvalError::Io`] when the
/// folder or the suite cannot be written.
pub fn write_suite(dir: &Path, seed: u64, per_task: usize) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
    let mut lines = String::new();
    let mut n = 0;
    for (ti, task) in TASKS.iter().enumerate() {
        for k in 0..per_task {
            let mut rng =
                SplitMix(seed ^ ((ti as u64) << 32 | k as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            let (scene, mut row) = make(task, k, &mut rng);
            let name = format!("{task}-{k}.mp4");
            render(&scene, &dir.join(&name))?;
            row["id"] = json!(format!("{task}-{k}"));
            row["video"] = json!(name);
            row["task"] = json!(task);
            lines.push_str(&row.to_string());
            lines.push('\n');
            n += 1;
        }
    }
    vidlm_media::write_atomic(&dir.join("suite.jsonl"), lines.as_bytes())
        .map_err(|e| EvalError::io(&dir.join("suite.jsonl"), e))?;
    Ok(n)
}

fn render(scene: &Scene, out: &Path) -> Result<()> {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(scene.filter())
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "12",
            "-pix_fmt",
            "yuv420p",
            "-threads",
            "1",
            "-g",
            "10",
            "-fflags",
            "+bitexact",
            "-flags",
            "+bitexact",
            "-map_metadata",
            "-1",
        ])
        .arg(out)
        .output()
        .map_err(|e| EvalError::Ffmpeg(format!("cannot run ffmpeg: {e}")))?;
    if !output.status.success() {
        return Err(EvalError::Ffmpeg(format!(
            "{}: {}",
            out.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

fn pick<'a, T>(rng: &mut SplitMix, xs: &'a [T]) -> &'a T {
    &xs[rng.below(xs.len())]
}

/// Distinct palette indices, `n` of them.
fn colours(rng: &mut SplitMix, n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..PALETTE.len()).collect();
    for i in (1..idx.len()).rev() {
        idx.swap(i, rng.below(i + 1));
    }
    idx.truncate(n);
    idx
}

/// A frame size, duration and dark background.
fn canvas(rng: &mut SplitMix) -> Scene {
    let (w, h) = *pick(rng, &[(192, 144), (240, 176), (256, 192), (320, 240)]);
    let grey = 24 + 8 * rng.below(7) as u8;
    Scene {
        w,
        h,
        duration: [2.0, 3.0, 4.0][rng.below(3)],
        bg: [grey, grey, grey.saturating_add(8 * rng.below(2) as u8)],
        shapes: Vec::new(),
    }
}

/// `n` distinct cells of a 4x3 grid over the frame, as (x, y, side) squares inside them (even
/// coordinates, so chroma subsampling keeps the colours).
fn cells(scene: &Scene, rng: &mut SplitMix, n: usize) -> Vec<(u32, u32, u32)> {
    let (cw, ch) = (scene.w / 4, scene.h / 3);
    let mut idx: Vec<usize> = (0..12).collect();
    for i in (1..12).rev() {
        idx.swap(i, rng.below(i + 1));
    }
    idx.iter()
        .take(n)
        .map(|&c| {
            let side = (cw.min(ch) * (40 + rng.below(21) as u32) / 100) & !1;
            let x = (c as u32 % 4) * cw + (cw - side) / 2;
            let y = (c as u32 / 4) * ch + (ch - side) / 2;
            (x & !1, y & !1, side)
        })
        .collect()
}

fn square(x: u32, y: u32, side: u32, rgb: [u8; 3], t0: f64, t1: f64) -> Shape {
    Shape {
        x,
        y,
        w: side,
        h: side,
        rgb,
        t0,
        t1,
        outline: None,
    }
}

fn choice(question: &str, options: &[&str], answer: usize) -> Value {
    json!({
        "question": question,
        "options": options,
        "answer": (b'A' + answer as u8) as char,
    })
}

fn make(task: &str, k: usize, rng: &mut SplitMix) -> (Scene, Value) {
    let mut s = canvas(rng);
    let d = s.duration;
    let row = match task {
        "counting" => {
            let n = rng.below(7);
            let target = colours(rng, 2);
            let one_by_one = rng.below(2) == 1;
            let distractors = rng.below(3);
            let spots = cells(&s, rng, n + distractors);
            for (i, &(x, y, side)) in spots.iter().enumerate() {
                let (rgb, t0) = if i < n {
                    let t0 = if one_by_one {
                        i as f64 * d / (n as f64 + 1.0)
                    } else {
                        0.0
                    };
                    (PALETTE[target[0]].1, t0)
                } else {
                    (PALETTE[target[1]].1, 0.0)
                };
                s.shapes.push(square(x, y, side, rgb, t0, d + 1.0));
            }
            json!({
                "question": format!(
                    "How many {} squares are in the video at the end? Answer with a number.",
                    PALETTE[target[0]].0
                ),
                "answer": n.to_string(),
            })
        }
        "position" | "motion" => {
            let dirs = if task == "position" {
                ["left", "right", "top", "bottom"]
            } else {
                ["left", "right", "up", "down"]
            };
            let where_ = (k + rng.below(4)) % 4;
            let side = (s.h / 5) & !1;
            let (cx, cy) = (s.w / 2 - side / 2, s.h / 2 - side / 2);
            let (ex, ey) = match where_ {
                0 => (side / 2, cy),
                1 => (s.w - side - side / 2, cy),
                2 => (cx, side / 4),
                _ => (cx, s.h - side - side / 4),
            };
            let (ex, ey) = (ex & !1, ey & !1);
            if task == "position" {
                s.shapes
                    .push(square(ex, ey, side, PALETTE[0].1, 0.0, d + 1.0));
                // A distractor of another colour, in the opposite place.
                let (ox, oy) = match where_ {
                    0 => (s.w - side - side / 2, cy),
                    1 => (side / 2, cy),
                    2 => (cx, s.h - side - side / 4),
                    _ => (cx, side / 4),
                };
                let other = PALETTE[1 + rng.below(PALETTE.len() - 1)].1;
                s.shapes
                    .push(square(ox & !1, oy & !1, side, other, 0.0, d + 1.0));
                choice("Where is the red square in the frame?", &dirs, where_)
            } else {
                // From the centre towards the edge, in steps of one per frame group.
                let colour = *pick(rng, PALETTE);
                let steps = 8;
                for i in 0..steps {
                    let f = i as f64 / (steps - 1) as f64;
                    let x = (cx as f64 + (ex as f64 - cx as f64) * f) as u32 & !1;
                    let y = (cy as f64 + (ey as f64 - cy as f64) * f) as u32 & !1;
                    let t0 = i as f64 * d / steps as f64;
                    let t1 = if i + 1 == steps {
                        d + 1.0
                    } else {
                        (i + 1) as f64 * d / steps as f64
                    };
                    s.shapes.push(square(x, y, side, colour.1, t0, t1));
                }
                choice(
                    &format!("In which direction does the {} square move?", colour.0),
                    &dirs,
                    where_,
                )
            }
        }
        "order" => {
            let cs = colours(rng, 3);
            let spots = cells(&s, rng, 3);
            for (i, (&c, &(x, y, side))) in cs.iter().zip(&spots).enumerate() {
                let t0 = (i as f64 + 0.5) * d / 4.0;
                s.shapes.push(square(
                    x,
                    y,
                    side,
                    PALETTE[c].1,
                    (t0 * 10.0).round() / 10.0,
                    d + 1.0,
                ));
            }
            // Options in palette order, so their order says nothing.
            let mut opts = cs.clone();
            opts.sort();
            let names: Vec<&str> = opts.iter().map(|&c| PALETTE[c].0).collect();
            let answer = opts.iter().position(|&c| c == cs[0]).unwrap_or(0);
            choice("Which colour of square appears first?", &names, answer)
        }
        "binding" => {
            let cs = colours(rng, 4);
            let spots = cells(&s, rng, 2);
            let (hx, hy, hs) = spots[0];
            let (fx, fy, fs) = spots[1];
            let hs = hs.max(20);
            s.shapes.push(Shape {
                outline: Some((hs / 6).max(3)),
                ..square(hx, hy, hs, PALETTE[cs[0]].1, 0.0, d + 1.0)
            });
            s.shapes
                .push(square(fx, fy, fs, PALETTE[cs[1]].1, 0.0, d + 1.0));
            let mut opts = cs.clone();
            opts.sort();
            let names: Vec<&str> = opts.iter().map(|&c| PALETTE[c].0).collect();
            let answer = opts.iter().position(|&c| c == cs[0]).unwrap_or(0);
            choice(
                "There is a hollow square and a filled square. Which colour is the hollow square?",
                &names,
                answer,
            )
        }
        "grounding" => {
            let d = *pick(rng, &[4.0, 5.0, 6.0]);
            s.duration = d;
            let len = 1.0 + rng.below(((d - 2.0) * 10.0) as usize) as f64 / 10.0;
            let start = ((rng.below(((d - len) * 10.0) as usize) as f64) / 10.0).max(0.0);
            let end = ((start + len) * 10.0).round() / 10.0;
            let (x, y, side) = cells(&s, rng, 1)[0];
            s.shapes.push(square(x, y, side, WHITE, start, end));
            // A distractor shown all along.
            let (x2, y2, side2) = cells(&s, rng, 2)[1];
            if (x2, y2) != (x, y) {
                s.shapes
                    .push(square(x2, y2, side2, pick(rng, PALETTE).1, 0.0, d + 1.0));
            }
            json!({
                "question": "When is the white square shown? Answer with its start and end time in seconds, as `start - end`.",
                "task": "grounding",
                "start": start,
                "end": end,
            })
        }
        "absent" => {
            let cs = colours(rng, 4);
            let present = k.is_multiple_of(2);
            let shown = if present { &cs[..3] } else { &cs[1..4] };
            let spots = cells(&s, rng, 3);
            for (&c, &(x, y, side)) in shown.iter().zip(&spots) {
                let t0 = (rng.below((d * 5.0) as usize) as f64) / 10.0;
                s.shapes.push(square(x, y, side, PALETTE[c].1, t0, d + 1.0));
            }
            choice(
                &format!(
                    "Is there a {} square anywhere in the video?",
                    PALETTE[cs[0]].0
                ),
                &["yes", "no"],
                if present { 0 } else { 1 },
            )
        }
        "text" => {
            let digits = 2 + rng.below(3);
            let text: String = (0..digits)
                .map(|_| (b'0' + rng.below(10) as u8) as char)
                .collect();
            let u = if s.h >= 192 { 6 } else { 4 };
            let total = digits as u32 * 4 * u - u;
            let ox = ((s.w - total) / 2) & !1;
            let oy = ((s.h - 5 * u) / 2) & !1;
            let t0 = (rng.below((d * 4.0) as usize) as f64) / 10.0;
            for (i, ch) in text.bytes().enumerate() {
                let x0 = ox + i as u32 * 4 * u;
                for seg in SEGMENTS[(ch - b'0') as usize].chars() {
                    let (x, y, w, h) = match seg {
                        'a' => (0, 0, 3 * u, u),
                        'b' => (2 * u, 0, u, 3 * u),
                        'c' => (2 * u, 2 * u, u, 3 * u),
                        'd' => (0, 4 * u, 3 * u, u),
                        'e' => (0, 2 * u, u, 3 * u),
                        'f' => (0, 0, u, 3 * u),
                        _ => (0, 2 * u, 3 * u, u),
                    };
                    s.shapes.push(Shape {
                        x: x0 + x,
                        y: oy + y,
                        w,
                        h,
                        rgb: WHITE,
                        t0,
                        t1: d + 1.0,
                        outline: None,
                    });
                }
            }
            json!({
                "question": "What number is shown on the screen? Answer with the number only.",
                "answer": text,
            })
        }
        other => unreachable!("unknown synthetic task {other}"),
    };
    (s, row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_seeded_and_filters_well_formed() {
        for task in TASKS {
            let (a, ra) = make(task, 1, &mut SplitMix(5));
            let (b, rb) = make(task, 1, &mut SplitMix(5));
            assert_eq!(a.filter(), b.filter());
            assert_eq!(ra, rb);
            assert!(a.filter().starts_with("color=c=0x"));
            for s in &a.shapes {
                assert!(
                    s.x + s.w <= a.w && s.y + s.h <= a.h,
                    "{task}: {s:?} outside"
                );
            }
        }
    }
}
