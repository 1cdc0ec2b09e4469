//! CPU twins against hand-computed expectations, odd sizes, and poisoned outputs.

mod common;

use half::{bf16, f16};
use vidlm_kernels::pool::{frame_similarity, pool_mean, select_frames, token_cosine, TokenShape};
use vidlm_kernels::preprocess::{
    to_rgb24, ColorMatrix, ColorRange, ColorSpec, CpuPreprocessor, Filter, Frame, Normalize,
    OutElem, PixelFormat,
};
use vidlm_kernels::scene::{luma_signature, scene_score, SceneParams};
use vidlm_kernels::KernelError;

fn yuv_pixel(y: u8, u: u8, v: u8, spec: ColorSpec) -> [u8; 3] {
    // A 2x2 YUV420P frame of one colour, converted by the twin.
    let (yp, up, vp) = ([y; 4], [u], [v]);
    let f = Frame::yuv420p(&yp, 2, &up, 1, &vp, 1, 2, 2).unwrap();
    let mut out = [0u8; 12];
    to_rgb24(&f, spec, &mut out).unwrap();
    assert!(out.chunks(3).all(|p| p == &out[..3]));
    [out[0], out[1], out[2]]
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(&b).all(|(x, y)| x.abs_diff(*y) <= 1)
}

#[test]
fn known_colours_bt709_and_bt601() {
    let l709 = ColorSpec::BT709_LIMITED;
    let f709 = ColorSpec {
        matrix: ColorMatrix::Bt709,
        range: ColorRange::Full,
    };
    let l601 = ColorSpec::BT601_LIMITED;
    // Black, white and mid grey are exact.
    assert_eq!(yuv_pixel(16, 128, 128, l709), [0, 0, 0]);
    assert_eq!(yuv_pixel(235, 128, 128, l709), [255, 255, 255]);
    assert_eq!(yuv_pixel(126, 128, 128, l709), [128, 128, 128]); // 16 + 219 * 128/255 = 125.9
    assert_eq!(yuv_pixel(0, 128, 128, f709), [0, 0, 0]);
    assert_eq!(yuv_pixel(255, 128, 128, f709), [255, 255, 255]);
    // BT.709 limited primaries (Y, Cb, Cr from the standard's equations, rounded).
    assert!(
        close(yuv_pixel(63, 102, 240, l709), [255, 0, 0]),
        "{:?}",
        yuv_pixel(63, 102, 240, l709)
    );
    assert!(
        close(yuv_pixel(173, 42, 26, l709), [0, 255, 0]),
        "{:?}",
        yuv_pixel(173, 42, 26, l709)
    );
    assert!(
        close(yuv_pixel(32, 240, 118, l709), [0, 0, 255]),
        "{:?}",
        yuv_pixel(32, 240, 118, l709)
    );
    // BT.601 limited primaries.
    assert!(
        close(yuv_pixel(81, 90, 240, l601), [255, 0, 0]),
        "{:?}",
        yuv_pixel(81, 90, 240, l601)
    );
    assert!(
        close(yuv_pixel(145, 54, 34, l601), [0, 255, 0]),
        "{:?}",
        yuv_pixel(145, 54, 34, l601)
    );
    assert!(
        close(yuv_pixel(41, 240, 110, l601), [0, 0, 255]),
        "{:?}",
        yuv_pixel(41, 240, 110, l601)
    );
    // Full-range BT.709 red: Y = 0.2126*255, Cb = 128 - 0.1146*255, Cr = 128 + 0.5*255 (clamped).
    assert!(
        close(yuv_pixel(54, 99, 255, f709), [255, 0, 0]),
        "{:?}",
        yuv_pixel(54, 99, 255, f709)
    );
    // The two matrices really differ on saturated colours.
    assert_ne!(yuv_pixel(63, 102, 240, l709), yuv_pixel(63, 102, 240, l601));
}

/// Builds NV12 and YUV420P frames with the same random content (odd sizes round chroma up).
fn yuv_frames(w: usize, h: usize, seed: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let y = common::lcg_bytes(w * h, seed);
    let u = common::lcg_bytes(cw * ch, seed + 1);
    let v = common::lcg_bytes(cw * ch, seed + 2);
    let uv: Vec<u8> = u.iter().zip(&v).flat_map(|(&a, &b)| [a, b]).collect();
    (y, u, v, uv)
}

#[test]
fn nv12_and_yuv420p_agree_and_match_the_rgb_path() {
    for (w, h) in [(1279usize, 719usize), (2, 2), (3, 5)] {
        let (y, u, v, uv) = yuv_frames(w, h, 40);
        let cw = w.div_ceil(2);
        let nv12 = Frame::nv12(&y, w, &uv, cw * 2, w as u32, h as u32).unwrap();
        let i420 = Frame::yuv420p(&y, w, &u, cw, &v, cw, w as u32, h as u32).unwrap();
        let spec = ColorSpec::BT709_LIMITED;
        let mut rgb = vec![0u8; w * h * 3];
        to_rgb24(&nv12, spec, &mut rgb).unwrap();
        let (dw, dh) = (17u32, 9u32);
        let mut pp = CpuPreprocessor::new(
            w as u32,
            h as u32,
            dw,
            dh,
            Filter::Lanczos3,
            &Normalize::SIGLIP,
        )
        .unwrap();
        let n = (3 * dw * dh) as usize;
        let (mut a, mut b, mut c) = (vec![f32::NAN; n], vec![f32::NAN; n], vec![f32::NAN; n]);
        pp.run(&nv12, spec, &mut a).unwrap();
        pp.run(&i420, spec, &mut b).unwrap();
        pp.run(
            &Frame::rgb24(&rgb, w as u32, h as u32).unwrap(),
            spec,
            &mut c,
        )
        .unwrap();
        assert!(
            a.iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)),
            "{w}x{h}: not fully written"
        );
        assert_eq!(a, b, "{w}x{h}");
        assert_eq!(a, c, "{w}x{h}");
        // Random content: the output is not constant.
        assert!(a.iter().any(|&v| v != a[0]));
    }
}

#[test]
fn constant_image_gives_the_exact_normalized_constant() {
    for filter in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos3] {
        for (sw, sh, dw, dh) in [
            (1279u32, 719u32, 512u32, 512u32),
            (2, 2, 5, 3),
            (7, 3, 1, 1),
        ] {
            let px = [200u8, 10, 77];
            let src: Vec<u8> = (0..sw * sh).flat_map(|_| px).collect();
            let mut out = vec![f32::NAN; (3 * dw * dh) as usize];
            vidlm_kernels::preprocess_rgb24(
                &src,
                sw,
                sh,
                dw,
                dh,
                filter,
                &Normalize::CLIP,
                &mut out,
            )
            .unwrap();
            let plane = (dw * dh) as usize;
            for c in 0..3 {
                let x = (px[c] as f64 / 255.0) as f32;
                let want = (x - Normalize::CLIP.mean[c]) / Normalize::CLIP.std[c];
                assert!(
                    out[c * plane..(c + 1) * plane].iter().all(|&v| v == want),
                    "{filter:?} {sw}x{sh} c{c}"
                );
            }
        }
    }
}

#[test]
fn half_outputs_are_the_rounded_f32_output() {
    let (w, h) = (64u32, 48u32);
    let src = common::lcg_bytes((w * h * 3) as usize, 5);
    let frame = Frame::rgb24(&src, w, h).unwrap();
    let mut pp = CpuPreprocessor::new(w, h, 20, 30, Filter::Bicubic, &Normalize::SIGLIP).unwrap();
    let n = 3 * 20 * 30;
    let mut f = vec![f32::nan(); n];
    let mut a = vec![f16::nan(); n];
    let mut b = vec![bf16::nan(); n];
    pp.run(&frame, ColorSpec::BT709_LIMITED, &mut f).unwrap();
    pp.run(&frame, ColorSpec::BT709_LIMITED, &mut a).unwrap();
    pp.run(&frame, ColorSpec::BT709_LIMITED, &mut b).unwrap();
    for i in 0..n {
        assert_eq!(a[i], f16::from_f32(f[i]));
        assert_eq!(b[i], bf16::from_f32(f[i]));
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let src = vec![0u8; 10];
    let mut out = vec![0f32; 12];
    let e = vidlm_kernels::preprocess_rgb24(
        &src,
        2,
        2,
        2,
        2,
        Filter::Bilinear,
        &Normalize::SIGLIP,
        &mut out,
    );
    assert!(matches!(e, Err(KernelError::InvalidInput(_))), "{e:?}");
    let src = vec![0u8; 12];
    let e = vidlm_kernels::preprocess_rgb24(
        &src,
        2,
        2,
        0,
        2,
        Filter::Bilinear,
        &Normalize::SIGLIP,
        &mut out,
    );
    assert!(matches!(e, Err(KernelError::InvalidInput(_))));
    let bad = Normalize {
        std: [0.0, 1.0, 1.0],
        ..Normalize::SIGLIP
    };
    let e = vidlm_kernels::preprocess_rgb24(&src, 2, 2, 2, 2, Filter::Bilinear, &bad, &mut out);
    assert!(e.unwrap_err().to_string().contains("std"));
    let mut short = vec![0f32; 11];
    assert!(vidlm_kernels::preprocess_rgb24(
        &src,
        2,
        2,
        2,
        2,
        Filter::Bilinear,
        &Normalize::SIGLIP,
        &mut short
    )
    .is_err());
    assert!(Frame::nv12(&[0; 4], 2, &[0; 1], 2, 2, 2).is_err());
    assert_eq!(
        PixelFormat::Nv12,
        Frame::nv12(&[0; 4], 2, &[0; 2], 2, 2, 2).unwrap().format
    );
}

#[test]
fn pooling_by_hand() {
    // T=3, H=2, W=3, D=2: value = t*100 + h*10 + w + c/2.
    let s = TokenShape {
        t: 3,
        h: 2,
        w: 3,
        d: 2,
    };
    let x: Vec<f32> = (0..s.len())
        .map(|i| {
            let c = i % 2;
            let w = (i / 2) % 3;
            let h = (i / 6) % 2;
            let t = i / 12;
            (t * 100 + h * 10 + w) as f32 + c as f32 * 0.5
        })
        .collect();
    // Temporal 2 + spatial 2: windows t {0,1},{2}; h {0,1}; w {0,1},{2}.
    let o = s.pooled(2, 2);
    assert_eq!(
        o,
        TokenShape {
            t: 2,
            h: 1,
            w: 2,
            d: 2
        }
    );
    let mut out = vec![f32::NAN; o.len()];
    pool_mean(&x, s, 2, 2, &mut out).unwrap();
    // t {0,1}, h {0,1}, w {0,1}: mean t = 50, h = 5, w = 0.5.
    assert_eq!(out[0], 55.5);
    assert_eq!(out[1], 56.0);
    // t {0,1}, w {2}: 50 + 5 + 2.
    assert_eq!(out[2], 57.0);
    // t {2}, w {0,1}: 200 + 5 + 0.5.
    assert_eq!(out[4], 205.5);
    assert_eq!(out[7], 207.5); // t {2}, w {2}, c = 1: 200 + 5 + 2 + 0.5
                               // Temporal only.
    let mut out = vec![f32::NAN; s.pooled(3, 1).len()];
    pool_mean(&x, s, 3, 1, &mut out).unwrap();
    assert_eq!(out[0], 100.0);
    assert!(pool_mean(&x, s, 0, 1, &mut out).is_err());
}

#[test]
fn cosine_by_hand_and_frame_selection() {
    // 4 frames of 2 tokens with D = 40 (more than one warp lane round).
    let s = TokenShape {
        t: 4,
        h: 1,
        w: 2,
        d: 40,
    };
    let base: Vec<f32> = (0..80).map(|i| ((i * 37 % 17) as f32) - 8.0).collect();
    let mut x = Vec::new();
    x.extend_from_slice(&base); // frame 0
    x.extend(base.iter().map(|v| v * 3.0)); // frame 1: same direction
    x.extend(base.iter().map(|v| -v)); // frame 2: opposite
    let mut f3 = base.clone(); // frame 3: token 0 orthogonal-ish (zero), token 1 same
    f3[..40].fill(0.0);
    x.extend(f3);
    let mut out = vec![f32::NAN; 3 * 2];
    token_cosine(&x, s, &[(1, 0), (2, 0), (3, 0)], &mut out).unwrap();
    assert!(
        (out[0] - 1.0).abs() < 1e-6 && (out[1] - 1.0).abs() < 1e-6,
        "{out:?}"
    );
    assert!((out[2] + 1.0).abs() < 1e-6 && (out[3] + 1.0).abs() < 1e-6);
    assert_eq!(out[4], 0.0); // zero token: eps floor, no NaN
    assert!((out[5] - 1.0).abs() < 1e-6);
    assert!((frame_similarity(&x, s, 3, 0).unwrap() - 0.5).abs() < 1e-6);
    let kept = select_frames(4, 0.9, |a, b| frame_similarity(&x, s, a, b)).unwrap();
    assert_eq!(kept, vec![0, 2, 3]);
    assert!(token_cosine(&x, s, &[(4, 0)], &mut out[..2]).is_err());
}

#[test]
fn scene_scores_by_hand() {
    let p = SceneParams::default();
    let (w, h) = (1279u32, 719u32);
    let black = vec![16u8; (w * h) as usize];
    let white = vec![235u8; (w * h) as usize];
    let chroma = vec![128u8; 640 * 360];
    let frame =
        |y: &'static [u8]| Frame::yuv420p(y, w as usize, &chroma, 640, &chroma, 640, w, h).unwrap();
    let black: &'static [u8] = black.leak();
    let white: &'static [u8] = white.leak();
    let a = luma_signature(&frame(black), p).unwrap();
    let b = luma_signature(&frame(white), p).unwrap();
    assert!(a.grid.iter().all(|&v| v == 16));
    assert_eq!(a.hist[16 >> 3], 64 * 36);
    let s = scene_score(&a, &b).unwrap();
    assert_eq!(s.hist_dist, 1.0);
    assert!((s.luma_diff - 219.0 / 255.0).abs() < 1e-6);
    assert_eq!(scene_score(&a, &a).unwrap().combined(), 0.0);
    // Half the frame changes: grid difference is half of black->white.
    let mut half = black.to_vec();
    for row in half.chunks_mut(w as usize).take(h as usize / 2) {
        row.fill(235);
    }
    let c = luma_signature(&frame(half.leak()), p).unwrap();
    let s = scene_score(&a, &c).unwrap();
    assert!((s.luma_diff - 0.5 * 219.0 / 255.0).abs() < 0.02, "{s:?}");
    assert!((s.hist_dist - 0.5).abs() < 0.02, "{s:?}");
    // RGB24 input uses BT.601 luma weights.
    let rgb = vec![255u8, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0];
    let r = luma_signature(
        &Frame::rgb24(&rgb, 2, 2).unwrap(),
        SceneParams {
            grid_w: 1,
            grid_h: 1,
            bins: 256,
        },
    )
    .unwrap();
    assert_eq!(r.grid, vec![((77 * 255 + 128) >> 8) as u8]);
}
