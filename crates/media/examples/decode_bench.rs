//! Decode + sample + RGB 384x384 timing against the ffmpeg CLI, in the same run.
//!
//! `cargo run --release -p vidlm-media --example decode_bench -- [--reps N] [--only S,S] FILE...`
//! (benches/decode.sh runs it). For each file it times `fps:1`, `frames:64`, `keyframes` and
//! `all` through [`vidlm_media::Sampler`], and the ffmpeg CLI's
//! `ffmpeg -i F -vf fps=1,scale=384:384 -f rawvideo -pix_fmt rgb24 -y /dev/null` and the same
//! without `fps=1`, and prints medians and ratios (ours / ffmpeg; below 1 is faster). Files that
//! differ only in their extension (the film as MP4 and as its Matroska remux) must give the same
//! frames: the example compares the timestamps and indices of every strategy and says so.

use std::process::Command;
use std::time::Instant;

use vidlm_media::{DecodeMode, Input, SampleOptions, Sampler};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_ffmpeg(file: &str, vf: &str, reps: usize) -> f64 {
    let runs = (0..reps)
        .map(|_| {
            let t = Instant::now();
            let st = Command::new("ffmpeg")
                .args([
                    "-nostdin",
                    "-v",
                    "error",
                    "-i",
                    file,
                    "-an",
                    "-vf",
                    vf,
                    "-f",
                    "rawvideo",
                    "-pix_fmt",
                    "rgb24",
                    "-y",
                    "/dev/null",
                ])
                .status()
                .expect("run ffmpeg");
            assert!(st.success(), "ffmpeg failed on {file}");
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(runs)
}

/// Frames' (timestamp, index) of one run, to compare two files' results.
type FrameList = Vec<(f64, Option<u64>)>;

/// One run of the sampler: seconds, frames decoded, seeks, the frames returned.
fn run_ours(
    file: &str,
    strategy: &str,
    (mode, workers): (DecodeMode, Option<usize>),
) -> (f64, u64, u64, FrameList) {
    let t = Instant::now();
    let opts = SampleOptions {
        size: Some((384, 384)),
        mode,
        workers,
        ..SampleOptions::new(strategy.parse().expect("strategy"))
    };
    let mut s = Sampler::open(&Input::parse(file), opts).expect("open");
    let mut list = Vec::new();
    for f in s.by_ref() {
        let f = f.expect("frame");
        std::hint::black_box(f.rgb.len());
        list.push((f.pts, f.index));
    }
    let st = s.stats();
    (t.elapsed().as_secs_f64(), st.decoded, st.seeks, list)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut reps = 3;
    if let Some(i) = args.iter().position(|a| a == "--reps") {
        reps = args[i + 1].parse().expect("--reps N");
        args.drain(i..i + 2);
    }
    // `--mode auto,sequential`: the sampler's decode modes (auto by default), each timed, the
    // runs alternating so that the machine's drift hits them alike.
    let mut modes = vec![(DecodeMode::Auto, None)];
    if let Some(i) = args.iter().position(|a| a == "--mode") {
        modes = args[i + 1]
            .split(',')
            .map(|m| match m {
                // `auto` on one decoder: what `auto` did before chunks (the baseline for them).
                "serial" => (DecodeMode::Auto, Some(1)),
                m => (
                    m.parse()
                        .expect("--mode auto|serial|sequential|seek|parallel[,...]"),
                    None,
                ),
            })
            .collect();
        args.drain(i..i + 2);
    }
    // `--only fps:1,keyframes`: a subset of the strategies (and only their baselines).
    let mut only: Option<Vec<String>> = None;
    if let Some(i) = args.iter().position(|a| a == "--only") {
        only = Some(args[i + 1].split(',').map(str::to_string).collect());
        args.drain(i..i + 2);
    }
    let wanted = |s: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == s));
    let mut results: Vec<(String, Vec<(String, FrameList)>)> = Vec::new();
    for file in &args {
        let info = vidlm_media::probe(&Input::parse(file)).expect("probe");
        let v = &info.streams[info.video_stream.expect("video")];
        println!(
            "\n{file}: {:.1} s, {}x{}, {:.3} fps, keyframe every {:.2} s (median), {reps} runs each",
            info.duration.unwrap_or(0.0),
            v.width.unwrap_or(0),
            v.height.unwrap_or(0),
            v.fps.unwrap_or(0.0),
            v.keyframe_interval.unwrap_or(f64::NAN)
        );
        let ff_fps = if only.as_ref().is_none_or(|o| o.iter().any(|s| s != "all")) {
            time_ffmpeg(file, "fps=1,scale=384:384", reps)
        } else {
            f64::NAN
        };
        let ff_all = if wanted("all") {
            time_ffmpeg(file, "scale=384:384", reps)
        } else {
            f64::NAN
        };
        println!("  ffmpeg CLI -vf fps=1,scale=384:384   {ff_fps:8.3} s");
        println!("  ffmpeg CLI -vf scale=384:384         {ff_all:8.3} s");
        // Extra strategies (`--only fps:0.25,frames:16`) are timed against `fps=1` as well.
        let mut plan: Vec<(String, f64, &str)> = vec![
            ("fps:1".into(), ff_fps, "fps=1"),
            ("frames:64".into(), ff_fps, "fps=1"),
            ("keyframes".into(), ff_fps, "fps=1"),
            ("all".into(), ff_all, "all"),
        ];
        for s in only.iter().flatten() {
            if !plan.iter().any(|(p, _, _)| p == s) {
                plan.push((s.clone(), ff_fps, "fps=1"));
            }
        }
        for (strategy, baseline, bname) in &plan {
            let (strategy, baseline, bname) = (strategy.as_str(), *baseline, *bname);
            if !wanted(strategy) {
                continue;
            }
            let mut runs: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
            let mut last = vec![(0, 0, Vec::new()); modes.len()];
            for _ in 0..reps {
                for (m, &mode) in modes.iter().enumerate() {
                    let (t, decoded, seeks, list) = run_ours(file, strategy, mode);
                    runs[m].push(t);
                    last[m] = (decoded, seeks, list);
                }
            }
            let first = median(runs[0].clone());
            for (m, &mode) in modes.iter().enumerate() {
                let (decoded, seeks, list) = &last[m];
                let t = median(runs[m].clone());
                let n = list.len();
                let name = match mode {
                    (DecodeMode::Auto, Some(1)) => "serial".to_string(),
                    (m, _) => format!("{m:?}").to_lowercase(),
                };
                let tag = if modes.len() > 1 {
                    format!(" [{name}]")
                } else {
                    String::new()
                };
                println!(
                    "  vidlm {strategy:<10} {t:8.3} s  {n:5} frames ({decoded} decoded, {seeks} seeks)  ratio vs ffmpeg {bname}: {:.3} ({:.1}x {}){tag}",
                    t / baseline,
                    if t < baseline { baseline / t } else { t / baseline },
                    if t < baseline { "faster" } else { "slower" }
                );
                if m > 0 {
                    let same = list.len() == last[0].2.len()
                        && list.iter().zip(&last[0].2).all(|(x, y)| x == y);
                    println!(
                        "    {name} / first mode: {:.3}; {}",
                        t / first,
                        if same {
                            "same frames"
                        } else {
                            "DIFFERENT frames"
                        }
                    );
                }
            }
            let list = last.swap_remove(0).2;
            match results.last_mut() {
                Some((f, v)) if f == file => v.push((strategy.to_string(), list)),
                _ => results.push((file.clone(), vec![(strategy.to_string(), list)])),
            }
        }
    }
    // The same video in two containers: the same frames.
    let stem = |f: &str| std::path::Path::new(f).with_extension("");
    for (i, (a, ra)) in results.iter().enumerate() {
        for (b, rb) in &results[i + 1..] {
            if stem(a) != stem(b) {
                continue;
            }
            for ((s, la), (_, lb)) in ra.iter().zip(rb) {
                println!(
                    "  {s:<10} {a} vs {b}: {}",
                    // Matroska stores milliseconds: the same frame's time may differ by 0.5 ms.
                    if la.len() == lb.len()
                        && la
                            .iter()
                            .zip(lb)
                            .all(|(x, y)| x.1 == y.1 && (x.0 - y.0).abs() <= 5e-4)
                    {
                        format!("same {} frames (indices; times within 0.5 ms)", la.len())
                    } else {
                        format!("DIFFERENT frames ({} vs {})", la.len(), lb.len())
                    }
                );
            }
        }
    }
}
