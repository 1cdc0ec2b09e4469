//! Helpers shared by the CLI tests: where the repo and its fixtures are, the built binary, and
//! clips made with the ffmpeg CLI.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (the root package's manifest dir).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tiny model checkpoint under crates/models/tests/fixtures, as a `--model` argument.
pub fn fixture_model(name: &str) -> String {
    root()
        .join("crates/models/tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// The `vidlm` binary, run from the repository root.
pub fn vidlm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vidlm"));
    // Tests stay off the user's visual-token cache (tests/cli_cache.rs turns it on in a temp dir).
    c.current_dir(root()).env("VIDLM_NO_CACHE", "1");
    c
}

/// Makes a clip with the ffmpeg CLI, or returns None (printing why) where ffmpeg is missing.
pub fn ffmpeg(dir: &Path, name: &str, args: &[&str]) -> Option<PathBuf> {
    let out = dir.join(name);
    match Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .arg(&out)
        .status()
    {
        Ok(s) if s.success() => Some(out),
        Ok(s) => panic!("ffmpeg failed ({s}) making {name}"),
        Err(e) => {
            eprintln!("skipping: the ffmpeg CLI is not available ({e})");
            None
        }
    }
}

/// A synthetic clip from samples/gen/ (samples/make-synthetic.sh makes them once; idempotent).
pub fn synthetic(name: &str) -> PathBuf {
    static MAKE: std::sync::Once = std::sync::Once::new();
    MAKE.call_once(|| {
        let st = Command::new("bash")
            .arg(root().join("samples/make-synthetic.sh"))
            .status()
            .unwrap();
        assert!(st.success(), "samples/make-synthetic.sh failed");
    });
    root().join("samples/gen").join(name)
}

/// Writes `items` as a JSONL manifest.
pub fn write_manifest(path: &Path, items: &[serde_json::Value]) {
    let text: String = items.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// The records of a JSONL output (failing on an invalid line).
pub fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("invalid line {l:?}: {e}")))
        .collect()
}
