//! CPU preprocess benchmark (issue 4): 64 frames of 1280x720 RGB24 -> 512x512 planar f32
//! (Lanczos-3, SigLIP normalization), in the same run:
//! - vidlm-kernels' CPU twin (`CpuPreprocessor`: Pillow-exact fixed-point resize + table
//!   normalize, rayon over rows);
//! - FFmpeg's swscale (SWS_LANCZOS, RGB24 -> RGB24) followed by a separate normalize loop;
//! - fast_image_resize (Lanczos3 convolution, SIMD, one thread) followed by the same normalize;
//! - a plain Rust loop (separable f32 Lanczos, one thread, weights precomputed per axis).
//!
//! Prints the median per-frame time of each and its ratio to the twin. Also prints how far
//! swscale and fast_image_resize land from the Pillow-exact result (max abs difference in u8).
//! Run: `cargo bench -p vidlm-kernels --bench cpu_preprocess`.

use std::time::Instant;

use fast_image_resize as fir;
use ffmpeg_next as ffmpeg;
use vidlm_kernels::preprocess::{
    resize_rgb24, ColorSpec, CpuPreprocessor, Filter, Frame, Normalize,
};

const W: u32 = 1280;
const H: u32 = 720;
const DW: u32 = 512;
const DH: u32 = 512;
const FRAMES: usize = 64;
const ROUNDS: usize = 5;

fn frames() -> Vec<Vec<u8>> {
    // Smooth gradients plus noise, so the resize does real work (never constant, never zero).
    (0..FRAMES)
        .map(|f| {
            let mut x: u64 = f as u64 + 1;
            let mut v = Vec::with_capacity((W * H * 3) as usize);
            for y in 0..H {
                for col in 0..W {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let n = (x >> 60) as u32;
                    v.push(((col + f as u32 * 7) % 256) as u8 ^ n as u8);
                    v.push(((y * 2 + col / 3) % 256) as u8);
                    v.push((((col ^ y) + n) % 256) as u8);
                }
            }
            v
        })
        .collect()
}

/// Normalize packed RGB u8 into planar CHW f32 (the "separate normalize" step).
fn normalize(rgb: &[u8], stride: usize, norm: &Normalize, out: &mut [f32]) {
    let plane = (DW * DH) as usize;
    let scale: Vec<f32> = (0..3).map(|c| norm.rescale as f32 / norm.std[c]).collect();
    let shift: Vec<f32> = (0..3).map(|c| -norm.mean[c] / norm.std[c]).collect();
    for y in 0..DH as usize {
        let row = &rgb[y * stride..];
        for x in 0..DW as usize {
            for c in 0..3 {
                out[c * plane + y * DW as usize + x] = row[x * 3 + c] as f32 * scale[c] + shift[c];
            }
        }
    }
}

fn lanczos(x: f64) -> f64 {
    let s = |x: f64| {
        if x == 0.0 {
            1.0
        } else {
            (x * std::f64::consts::PI).sin() / (x * std::f64::consts::PI)
        }
    };
    if x.abs() < 3.0 {
        s(x) * s(x / 3.0)
    } else {
        0.0
    }
}

/// Per output sample: first input index and normalized f32 weights (antialiased Lanczos-3).
fn weights(inp: u32, out: u32) -> Vec<(usize, Vec<f32>)> {
    let scale = inp as f64 / out as f64;
    let fs = scale.max(1.0);
    let support = 3.0 * fs;
    (0..out)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(inp as i64) as usize;
            let w: Vec<f64> = (lo..hi)
                .map(|i| lanczos((i as f64 - center + 0.5) / fs))
                .collect();
            let sum: f64 = w.iter().sum();
            (lo, w.iter().map(|v| (v / sum) as f32).collect())
        })
        .collect()
}

/// The plain loop: horizontal f32 pass, vertical f32 pass, normalize. One thread.
fn plain(
    src: &[u8],
    hw: &[(usize, Vec<f32>)],
    vw: &[(usize, Vec<f32>)],
    tmp: &mut [f32],
    norm: &Normalize,
    out: &mut [f32],
) {
    for y in 0..H as usize {
        for (x, (lo, w)) in hw.iter().enumerate() {
            for c in 0..3 {
                let mut s = 0f32;
                for (j, k) in w.iter().enumerate() {
                    s += src[(y * W as usize + lo + j) * 3 + c] as f32 * k;
                }
                tmp[(y * DW as usize + x) * 3 + c] = s;
            }
        }
    }
    let plane = (DW * DH) as usize;
    for (y, (lo, w)) in vw.iter().enumerate() {
        for x in 0..DW as usize {
            for c in 0..3 {
                let mut s = 0f32;
                for (j, k) in w.iter().enumerate() {
                    s += tmp[((lo + j) * DW as usize + x) * 3 + c] * k;
                }
                let v = s.round().clamp(0.0, 255.0);
                out[c * plane + y * DW as usize + x] =
                    (v * norm.rescale as f32 - norm.mean[c]) / norm.std[c];
            }
        }
    }
}

fn median_ms(mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut t: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3 / FRAMES as f64
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[ROUNDS / 2]
}

fn main() {
    let norm = Normalize::SIGLIP;
    let src = frames();
    let mut out = vec![0f32; (3 * DW * DH) as usize];

    let mut twin = CpuPreprocessor::new(W, H, DW, DH, Filter::Lanczos3, &norm).expect("twin");
    let t_twin = median_ms(|| {
        for f in &src {
            twin.run(
                &Frame::rgb24(f, W, H).expect("frame"),
                ColorSpec::BT709_LIMITED,
                &mut out,
            )
            .expect("run");
        }
    });

    ffmpeg::init().expect("ffmpeg init");
    use ffmpeg::format::Pixel;
    use ffmpeg::software::scaling::{Context, Flags};
    let mut sws =
        Context::get(Pixel::RGB24, W, H, Pixel::RGB24, DW, DH, Flags::LANCZOS).expect("swscale");
    let mut inp = ffmpeg::frame::Video::new(Pixel::RGB24, W, H);
    let mut dst = ffmpeg::frame::Video::empty();
    let load = |inp: &mut ffmpeg::frame::Video, f: &[u8]| {
        let stride = inp.stride(0);
        let d = inp.data_mut(0);
        for y in 0..H as usize {
            d[y * stride..y * stride + W as usize * 3]
                .copy_from_slice(&f[y * W as usize * 3..(y + 1) * W as usize * 3]);
        }
    };
    let t_sws = median_ms(|| {
        for f in &src {
            load(&mut inp, f);
            sws.run(&inp, &mut dst).expect("scale");
            normalize(dst.data(0), dst.stride(0), &norm, &mut out);
        }
    });

    let mut resizer = fir::Resizer::new();
    let opts = fir::ResizeOptions::new()
        .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3));
    let mut fdst = fir::images::Image::new(DW, DH, fir::PixelType::U8x3);
    let t_fir = median_ms(|| {
        for f in &src {
            let img = fir::images::ImageRef::new(W, H, f, fir::PixelType::U8x3).expect("image");
            resizer.resize(&img, &mut fdst, &opts).expect("resize");
            normalize(fdst.buffer(), DW as usize * 3, &norm, &mut out);
        }
    });

    let hw = weights(W, DW);
    let vw = weights(H, DH);
    let mut tmp = vec![0f32; (H * DW * 3) as usize];
    let t_plain = median_ms(|| {
        for f in &src {
            plain(f, &hw, &vw, &mut tmp, &norm, &mut out);
        }
    });

    // Distance of swscale and fast_image_resize from the Pillow-exact resize, on frame 0.
    let mut exact = vec![0u8; (DW * DH * 3) as usize];
    resize_rgb24(&src[0], W, H, DW, DH, Filter::Lanczos3, &mut exact).expect("resize");
    load(&mut inp, &src[0]);
    sws.run(&inp, &mut dst).expect("scale");
    let sws_diff = (0..DH as usize)
        .flat_map(|y| (0..DW as usize * 3).map(move |x| (y, x)))
        .map(|(y, x)| dst.data(0)[y * dst.stride(0) + x].abs_diff(exact[y * DW as usize * 3 + x]))
        .max()
        .unwrap_or(0);
    let img = fir::images::ImageRef::new(W, H, &src[0], fir::PixelType::U8x3).expect("image");
    resizer.resize(&img, &mut fdst, &opts).expect("resize");
    let fir_diff = fdst
        .buffer()
        .iter()
        .zip(&exact)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);

    println!("CPU preprocess, {FRAMES} frames {W}x{H} RGB24 -> {DW}x{DH} f32 CHW, Lanczos-3, median of {ROUNDS} rounds, {} rayon threads", rayon_threads());
    println!("| path | ms/frame | ratio to twin | max |diff| vs Pillow (u8) |");
    println!("|---|---:|---:|---:|");
    println!("| vidlm-kernels CPU twin (resize + normalize fused) | {t_twin:.2} | 1.00 | 0 |");
    println!(
        "| swscale LANCZOS + separate normalize | {t_sws:.2} | {:.2} | {sws_diff} |",
        t_sws / t_twin
    );
    println!(
        "| fast_image_resize Lanczos3 + separate normalize | {t_fir:.2} | {:.2} | {fir_diff} |",
        t_fir / t_twin
    );
    println!(
        "| plain Rust loop (f32, one thread) | {t_plain:.2} | {:.2} | - |",
        t_plain / t_twin
    );
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
