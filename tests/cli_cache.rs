//! The visual-token cache through `vidlm ask`: a second question on a clip skips decoding and the
//! vision encoder and answers byte for byte as the first; a changed file, sampling, pooling or
//! model misses; `--no-cache` neither reads nor writes; a damaged entry is a miss with a
//! warning; the size bound evicts the least recently used entry.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{ffmpeg, fixture_model, root};

struct Run {
    out: Output,
    metrics: serde_json::Value,
    stderr: String,
}

impl Run {
    fn answer(&self) -> &[u8] {
        &self.out.stdout
    }
    fn cache(&self) -> Option<&str> {
        self.metrics["metrics"]["timings"]["cache"].as_str()
    }
    fn encode_seconds(&self) -> f64 {
        self.metrics["metrics"]["timings"]["encode"]
            .as_f64()
            .unwrap()
    }
    /// The pipeline's `run finished` counters, e.g. `frames_encoded: 0`.
    fn counter(&self, name: &str) -> u64 {
        let at = self
            .stderr
            .find(&format!("{name}: "))
            .unwrap_or_else(|| panic!("no {name} in the log:\n{}", self.stderr));
        let rest = &self.stderr[at + name.len() + 2..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap()
    }
}

fn ask(cache: &Path, model: &str, clip: &Path, extra: &[&str]) -> Run {
    let sample = if extra.contains(&"--sample") {
        &[][..]
    } else {
        &["--sample", "frames:3"][..]
    };
    let out = Command::new(env!("CARGO_BIN_EXE_vidlm"))
        .current_dir(root())
        .env_remove("VIDLM_NO_CACHE")
        .env_remove("RUST_LOG")
        .args(["ask", "--model", model])
        .arg(clip)
        .args(["What is shown?", "--max-new-tokens", "8"])
        .args(sample)
        .args(["--metrics", "--log", "warn,vidlm_pipeline=info"])
        .arg("--cache-dir")
        .arg(cache)
        .args(extra)
        .output()
        .expect("run vidlm");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "vidlm ask failed:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("{\"metrics\""))
        .unwrap_or_else(|| panic!("no metrics line:\n{stderr}"));
    let metrics = serde_json::from_str(line).unwrap();
    Run {
        out,
        metrics,
        stderr,
    }
}

/// The cache's entry files.
fn entries(cache: &Path) -> Vec<PathBuf> {
    let dir = cache.join(format!("visual-tokens-v{}", vidlm_pipeline::FORMAT_VERSION));
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "vtc"));
    v
}

fn testsrc(dir: &Path, name: &str, source: &str) -> Option<PathBuf> {
    ffmpeg(
        dir,
        name,
        &[
            "-f",
            "lavfi",
            "-i",
            &format!("{source}=size=160x120:rate=10:duration=2"),
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

#[test]
fn second_ask_is_a_hit_and_changes_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let model = fixture_model("smolvlm-tiny-sf2");
    let Some(clip) = testsrc(tmp.path(), "clip.mp4", "testsrc2") else {
        return;
    };

    // (a) First run encodes and stores; the second reads the tokens back, decodes and encodes
    // nothing, and answers byte for byte the same.
    let first = ask(&cache, &model, &clip, &[]);
    assert_eq!(first.cache(), Some("miss"));
    assert_eq!(first.counter("frames_encoded"), 3);
    assert_eq!(entries(&cache).len(), 1);
    let second = ask(&cache, &model, &clip, &[]);
    assert_eq!(second.cache(), Some("hit"), "{}", second.stderr);
    assert_eq!(second.counter("frames_decoded"), 0);
    assert_eq!(second.counter("frames_encoded"), 0);
    assert_eq!(second.counter("cache_hits"), 1);
    assert_eq!(second.encode_seconds(), 0.0);
    assert!(second.stderr.contains("visual-token cache hit"));
    assert_eq!(second.answer(), first.answer());

    // (b) Another clip written at the same path, its modification time set back to the first
    // clip's: the content differs, so it misses and is encoded again.
    let mtime = std::fs::metadata(&clip).unwrap().modified().unwrap();
    let other = testsrc(tmp.path(), "other.mp4", "smptebars").unwrap();
    std::fs::rename(&other, &clip).unwrap();
    std::fs::File::options()
        .append(true)
        .open(&clip)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let changed = ask(&cache, &model, &clip, &[]);
    assert_eq!(changed.cache(), Some("miss"));
    assert_eq!(changed.counter("frames_encoded"), 3);
    assert_eq!(ask(&cache, &model, &clip, &[]).cache(), Some("hit"));

    // (c) Other sampling, pooling or model files: misses.
    let resampled = ask(&cache, &model, &clip, &["--sample", "frames:2"]);
    assert_eq!(resampled.cache(), Some("miss"));
    assert_eq!(resampled.counter("frames_encoded"), 2);
    let pooled = ask(&cache, &model, &clip, &["--pool", "mean:2"]);
    assert_eq!(pooled.cache(), Some("miss"));
    let copy = tmp.path().join("model");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(&model).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let copy = copy.to_string_lossy().into_owned();
    assert_eq!(ask(&cache, &copy, &clip, &[]).cache(), Some("miss"));
    assert_eq!(ask(&cache, &copy, &clip, &[]).cache(), Some("hit"));
    // The same checkpoint with its config rewritten (a byte more): another model.
    let cfg = Path::new(&copy).join("config.json");
    let mut text = std::fs::read(&cfg).unwrap();
    text.push(b'\n');
    std::fs::write(&cfg, text).unwrap();
    assert_eq!(ask(&cache, &copy, &clip, &[]).cache(), Some("miss"));
}

#[test]
fn no_cache_damage_and_eviction() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_model("smolvlm-tiny-sf2");
    let Some(a) = testsrc(tmp.path(), "a.mp4", "testsrc2") else {
        return;
    };
    let b = testsrc(tmp.path(), "b.mp4", "smptebars").unwrap();

    // (d) --no-cache neither writes ...
    let cache = tmp.path().join("cache");
    let off = ask(&cache, &model, &a, &["--no-cache"]);
    assert_eq!(off.cache(), None);
    assert!(entries(&cache).is_empty());
    let first = ask(&cache, &model, &a, &[]);
    assert_eq!(first.cache(), Some("miss"));
    // ... nor reads.
    let off = ask(&cache, &model, &a, &["--no-cache"]);
    assert_eq!(off.cache(), None);
    assert_eq!(off.counter("frames_encoded"), 3);
    assert_eq!(off.answer(), first.answer());

    // (e) A damaged entry: a warning, a miss, the right answer, and a sound entry again.
    let entry = entries(&cache).pop().unwrap();
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&entry, &bytes).unwrap();
    let damaged = ask(&cache, &model, &a, &[]);
    assert_eq!(damaged.cache(), Some("miss"));
    assert!(
        damaged.stderr.contains("damaged visual-token cache entry"),
        "{}",
        damaged.stderr
    );
    assert_eq!(damaged.answer(), first.answer());
    std::fs::write(&entry, &bytes[..mid]).unwrap();
    let truncated = ask(&cache, &model, &a, &[]);
    assert_eq!(truncated.cache(), Some("miss"));
    assert_eq!(truncated.answer(), first.answer());
    assert_eq!(ask(&cache, &model, &a, &[]).cache(), Some("hit"));

    // (f) Room for one entry and a half: storing b's evicts a's, the older.
    let size = std::fs::metadata(entries(&cache).pop().unwrap())
        .unwrap()
        .len();
    let bound = (size + size / 2).to_string();
    let with_bound = ["--cache-size", bound.as_str()];
    assert_eq!(ask(&cache, &model, &b, &with_bound).cache(), Some("miss"));
    assert_eq!(entries(&cache).len(), 1);
    assert_eq!(ask(&cache, &model, &b, &with_bound).cache(), Some("hit"));
    assert_eq!(ask(&cache, &model, &a, &with_bound).cache(), Some("miss"));
    assert_eq!(ask(&cache, &model, &b, &with_bound).cache(), Some("miss"));
}

/// The server's cache: in memory, through the library. The second run of a job reads the tokens
/// back (nothing decoded or encoded) and answers as the first.
#[test]
fn memory_cache_serves_the_second_run() {
    use vidlm_pipeline::{CacheStatus, JobOutcome, JobOutput, JobSpec, Pipeline, VisualCache};
    let tmp = tempfile::tempdir().unwrap();
    let Some(clip) = testsrc(tmp.path(), "clip.mp4", "testsrc2") else {
        return;
    };
    let mut cfg = vidlm_pipeline::PipelineConfig::default();
    cfg.model.id = fixture_model("smolvlm-tiny-sf2");
    cfg.model.device = vidlm_pipeline::DeviceChoice::Cpu;
    cfg.sampling.strategy = "frames:3".into();
    cfg.generation.max_new_tokens = 8;
    let pipeline = Pipeline::builder()
        .config(cfg)
        .cache(VisualCache::memory(1 << 30))
        .build()
        .unwrap();
    let job = JobSpec::ask("a", clip.to_string_lossy(), "What is shown?");
    let answer = |r: &vidlm_pipeline::RunReport| match &r.outcomes[0] {
        JobOutcome::Finished(JobOutput::Answer(a)) => (a.token_ids.clone(), a.timings.cache),
        other => panic!("{other:?}"),
    };
    let first = pipeline.run(std::slice::from_ref(&job), |_| {});
    assert_eq!(first.metrics.frames_encoded, 3);
    let second = pipeline.run(std::slice::from_ref(&job), |_| {});
    assert_eq!(second.metrics.frames_decoded, 0);
    assert_eq!(second.metrics.frames_encoded, 0);
    assert_eq!(second.metrics.cache_hits, 1);
    let (ids1, c1) = answer(&first);
    let (ids2, c2) = answer(&second);
    assert_eq!((c1, c2), (Some(CacheStatus::Miss), Some(CacheStatus::Hit)));
    assert_eq!(ids1, ids2);
}
