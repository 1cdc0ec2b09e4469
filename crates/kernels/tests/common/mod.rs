//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::path::PathBuf;

/// The LCG of tools/kernel_refs.py: x = x * 1103515245 + 12345 (mod 2^31), byte = (x >> 16) & 255.
pub fn lcg_bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed as u64;
    (0..n)
        .map(|_| {
            x = (x * 1103515245 + 12345) & 0x7FFF_FFFF;
            ((x >> 16) & 255) as u8
        })
        .collect()
}

/// The fixtures folder; `VIDLM_KERNELS_FIXTURES` overrides it for binaries run elsewhere
/// (scripts/gpu-check.sh on a GPU machine, where the source path differs).
pub fn fixtures() -> PathBuf {
    match std::env::var_os("VIDLM_KERNELS_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("fixtures"),
    }
}

/// Prints why a test skipped, straight to stderr so `cargo test` shows it even when the test's
/// own output is captured.
pub fn skip(reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}
