//! Hostile input: a seeded mutation test over the decode entry (`Sampler::open` and iteration).
//! A few thousand inputs made from the conformance clips by truncating, flipping bits,
//! overwriting, zeroing, duplicating and splicing, each sampled with a strategy, mode and size
//! in turn, under a time limit watched from another thread. Every input must end in frames or a
//! one-line `MediaError` naming the input: no panic, no hang, bounded memory.
//!
//! `VIDLM_MUTATIONS=N` changes the count, `VIDLM_MUTATION_SEED=S` the seed;
//! `VIDLM_MUTATION_ONLY=I` runs input I alone and keeps it as `hostile-I.bin` in the temp dir.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use vidlm_media::{DecodeMode, Input, SampleOptions, Sampler};

/// Time one input may take before it counts as a hang (debug build, a loaded 2-core machine).
const LIMIT: Duration = Duration::from_secs(30);

/// Small clips of many containers and codecs.
const SOURCES: &[&str] = &[
    "c-mp4.mp4",
    "c-mkv.mkv",
    "c-webm.webm",
    "c-ts.ts",
    "c-avi.avi",
    "c-flv.flv",
    "c-nut.nut",
    "c-ogv.ogv",
    "c-gif.gif",
    "c-ivf.ivf",
    "c-h264.h264",
    "c-m4v.m4v",
    "c-mpg.mpg",
    "v-hevc.mkv",
    "v-ffv1.mkv",
    "v-mjpeg.mkv",
    "f-frag.mp4",
    "b-mpeg4.avi",
    "x-nocues.mkv",
    "v-prores.mov",
];

/// splitmix64: a small seeded generator (the test must not depend on a crate's stream).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The `i`-th hostile input: (bytes, what was done).
fn mutate(clips: &[Vec<u8>], seed: u64, i: usize) -> (Vec<u8>, String) {
    let mut r = Rng(seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let a = r.below(clips.len());
    let mut d = clips[a].clone();
    let len = d.len();
    let kind = i % 8;
    let what = match kind {
        0 => {
            let n = r.below(len);
            d.truncate(n);
            format!("truncated to {n}")
        }
        1 | 6 | 7 => {
            let flips = 1 + r.below(32);
            // Anywhere, in the header (first 1 KiB), or in the index (last 4 KiB).
            let (lo, span) = match kind {
                1 => (0, len),
                6 => (0, len.min(1024)),
                _ => (len.saturating_sub(4096), len.min(4096)),
            };
            for _ in 0..flips {
                let at = lo + r.below(span);
                d[at] ^= 1 << r.below(8);
            }
            format!("{flips} bits flipped in {lo}..{}", lo + span)
        }
        2 => {
            let at = r.below(len);
            let n = (1 + r.below(256)).min(len - at);
            for b in &mut d[at..at + n] {
                *b = r.next() as u8;
            }
            format!("{n} random bytes at {at}")
        }
        3 => {
            let b = &clips[r.below(clips.len())];
            let cut_a = r.below(len);
            let cut_b = r.below(b.len());
            d.truncate(cut_a);
            d.extend_from_slice(&b[cut_b..]);
            format!("first {cut_a} bytes spliced onto another clip from {cut_b}")
        }
        4 => {
            let at = r.below(len);
            let n = (1 + r.below(4096)).min(len - at);
            d[at..at + n].fill(0);
            format!("{n} bytes zeroed at {at}")
        }
        _ => {
            let at = r.below(len);
            let n = (1 + r.below(8192)).min(len - at);
            let chunk = d[at..at + n].to_vec();
            let to = r.below(d.len());
            d.splice(to..to, chunk);
            format!("{n} bytes from {at} copied in at {to}")
        }
    };
    (d, format!("{} {what}", SOURCES[a]))
}

fn options(i: usize) -> SampleOptions {
    let strategies = [
        "fps:1",
        "frames:5",
        "keyframes",
        "all",
        "scene:0.3",
        "fps:3",
    ];
    let modes = [
        DecodeMode::Auto,
        DecodeMode::Seek,
        DecodeMode::Sequential,
        DecodeMode::Parallel,
    ];
    let s = strategies[(i / 8) % strategies.len()];
    let mut o = SampleOptions::new(s.parse().unwrap());
    o.mode = modes[(i / 48) % modes.len()];
    // Mostly small output; sometimes the display size, as a damaged header says it.
    o.size = (!i.is_multiple_of(13)).then_some((32, 32));
    if s == "all" {
        o.max_frames = Some(30);
    }
    if s == "fps:3" {
        o.from = 1.0;
        o.to = Some(3.0);
    }
    o
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[test]
fn hostile_inputs_fail_cleanly() {
    let st = Command::new("bash")
        .arg(repo().join("samples/make-conformance.sh"))
        .status()
        .unwrap();
    assert!(st.success());
    let dir = repo().join("samples/gen/conformance");
    let clips: Vec<Vec<u8>> = SOURCES
        .iter()
        .filter_map(|n| std::fs::read(dir.join(n)).ok())
        .collect();
    assert!(clips.len() >= 15, "conformance clips missing");
    let count: usize = std::env::var("VIDLM_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2400);
    let seed: u64 = std::env::var("VIDLM_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0010);
    let only: Option<usize> = std::env::var("VIDLM_MUTATION_ONLY")
        .ok()
        .and_then(|v| v.parse().ok());
    if let Some(i) = only {
        let (bytes, what) = mutate(&clips, seed, i);
        let keep = std::env::temp_dir().join(format!("hostile-{i}.bin"));
        std::fs::write(&keep, bytes).unwrap();
        println!("input {i}: {what} -> {}", keep.display());
    }
    let (first, count) = match only {
        Some(i) => (i, i + 1),
        None => (0, count),
    };
    let tmp = tempfile::tempdir().unwrap();
    let threads = 2;
    let next = AtomicUsize::new(first);
    let done = AtomicUsize::new(first);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let running: Mutex<Vec<Option<(usize, Instant, String)>>> = Mutex::new(vec![None; threads]);
    let outcomes: Mutex<std::collections::BTreeMap<String, usize>> = Default::default();
    let slowest = Mutex::new(Duration::ZERO);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for w in 0..threads {
            let (next, done, failures, running, outcomes, slowest, clips, tmp) = (
                &next, &done, &failures, &running, &outcomes, &slowest, &clips, &tmp,
            );
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let (bytes, what) = mutate(clips, seed, i);
                let path: PathBuf = tmp.path().join(format!("hostile-{w}.bin"));
                std::fs::write(&path, &bytes).unwrap();
                let name = path.display().to_string();
                let start = Instant::now();
                running.lock().unwrap()[w] = Some((i, start, what.clone()));
                let opts = options(i);
                let strategy = opts.strategy;
                let result = catch_unwind(AssertUnwindSafe(
                    || -> Result<usize, vidlm_media::MediaError> {
                        let mut n = 0;
                        for f in Sampler::open(&Input::from(&path), opts)? {
                            let f = f?;
                            assert_eq!(f.rgb.len(), (f.width * f.height * 3) as usize);
                            n += 1;
                        }
                        Ok(n)
                    },
                ));
                let took = start.elapsed();
                running.lock().unwrap()[w] = None;
                {
                    let mut s = slowest.lock().unwrap();
                    *s = (*s).max(took);
                }
                let outcome = match result {
                    Err(_) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("input {i} ({what}, {strategy}): panicked"));
                        "panic".to_string()
                    }
                    Ok(Ok(_)) => "frames".to_string(),
                    Ok(Err(e)) => {
                        let msg = e.to_string();
                        if msg.contains('\n') || !msg.contains(&name) {
                            failures.lock().unwrap().push(format!(
                                "input {i} ({what}, {strategy}): unclear error `{msg}`"
                            ));
                        }
                        // The error's kind: its message without the input and the details.
                        let kind = msg
                            .replace(&name, "")
                            .split([':', '('])
                            .nth(1)
                            .unwrap_or("")
                            .trim()
                            .to_string();
                        format!("error: {kind}")
                    }
                };
                *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        // The watchdog: a run past the limit is a hang (reported; the test fails at once).
        loop {
            std::thread::sleep(Duration::from_millis(200));
            if done.load(Ordering::Relaxed) >= count {
                break;
            }
            let stuck = running
                .lock()
                .unwrap()
                .iter()
                .flatten()
                .find(|(_, start, _)| start.elapsed() > LIMIT)
                .cloned();
            if let Some((i, _, what)) = stuck {
                // Scoped threads cannot be abandoned: report and end the process.
                eprintln!(
                    "input {i} ({what}, {}): no result after {LIMIT:?} (hang)",
                    options(i).strategy
                );
                std::process::exit(101);
            }
        }
    });
    let took = t0.elapsed().as_secs_f64();
    let rss = peak_rss_mib();
    println!(
        "mutation: {count} inputs from {} clips (seed {seed:#x}), {took:.1} s on {threads} threads, limit {LIMIT:?} each, slowest {:.2} s, peak RSS {rss:.0} MiB",
        clips.len(),
        slowest.lock().unwrap().as_secs_f64()
    );
    for (k, n) in outcomes.lock().unwrap().iter() {
        println!("  {n:5} {k}");
    }
    assert!(rss < 2048.0, "peak RSS {rss:.0} MiB");
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
