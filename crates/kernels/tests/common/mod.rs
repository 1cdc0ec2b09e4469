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

/// Owned planes of a random frame in `format`, with padded strides as decoders give them.
pub struct OwnedFrame {
    pub format: vidlm_kernels::preprocess::PixelFormat,
    pub w: u32,
    pub h: u32,
    pub planes: [Vec<u8>; 3],
    pub strides: [usize; 3],
}

impl OwnedFrame {
    /// A `w x h` frame of LCG bytes (`seed`, `seed + 1`, `seed + 2` for the planes).
    pub fn random(
        format: vidlm_kernels::preprocess::PixelFormat,
        w: u32,
        h: u32,
        seed: u32,
    ) -> Self {
        use vidlm_kernels::preprocess::PixelFormat;
        let (wu, hu) = (w as usize, h as usize);
        let (cw, ch) = (wu.div_ceil(2), hu.div_ceil(2));
        // (bytes per row incl. padding, rows) per plane.
        let rows: [(usize, usize); 3] = match format {
            PixelFormat::Rgb24 => [(wu * 3, hu), (0, 0), (0, 0)],
            PixelFormat::Nv12 => [(wu + 8, hu), (cw * 2 + 8, ch), (0, 0)],
            PixelFormat::Yuv420p => [(wu + 4, hu), (cw + 4, ch), (cw + 4, ch)],
        };
        OwnedFrame {
            format,
            w,
            h,
            planes: [0, 1, 2].map(|i| lcg_bytes(rows[i].0 * rows[i].1, seed + i as u32)),
            strides: rows.map(|r| r.0),
        }
    }

    /// The frame as the kernels take it (validated).
    pub fn frame(&self) -> vidlm_kernels::preprocess::Frame<'_> {
        let f = vidlm_kernels::preprocess::Frame {
            format: self.format,
            width: self.w,
            height: self.h,
            planes: [&self.planes[0], &self.planes[1], &self.planes[2]],
            strides: self.strides,
        };
        f.validate().unwrap();
        f
    }
}
