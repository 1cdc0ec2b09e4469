//! Writes inputs and CPU-twin outputs for the host emulation of the CUDA kernels
//! (crates/kernels/emu/run.sh compiles kernels/*.cu as C++ and compares). Ignored by default:
//! it only feeds that script. Output folder: `$VIDLM_EMU_DIR` (default /tmp/vidlm-emu).
mod common;
use half::{bf16, f16};
use vidlm_kernels::pool::{pool_mean, TokenShape};
use vidlm_kernels::preprocess::*;
use vidlm_kernels::scene::{luma_signature, SceneParams};

fn w32(p: &str, v: &[i32]) {
    std::fs::write(
        p,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
}
fn wf(p: &str, v: &[f32]) {
    std::fs::write(
        p,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
}

#[test]
#[ignore = "feeds crates/kernels/emu/run.sh"]
fn dump_for_emulation() {
    let dir = std::env::var("VIDLM_EMU_DIR").unwrap_or_else(|_| "/tmp/vidlm-emu".into());
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            1279u32,
            719u32,
            512u32,
            512u32,
            Filter::Lanczos3,
            PixelFormat::Nv12,
        ),
        (300, 200, 384, 160, Filter::Lanczos3, PixelFormat::Yuv420p),
        (37, 23, 16, 11, Filter::Bicubic, PixelFormat::Rgb24),
        (2, 2, 5, 3, Filter::Bilinear, PixelFormat::Nv12),
    ];
    for (i, (sw, sh, dw, dh, filter, fmt)) in cases.into_iter().enumerate() {
        let (w, h) = (sw as usize, sh as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let data = common::lcg_bytes(w * h * 3, 77 + i as u32);
        let (offs, strides, frame) = match fmt {
            PixelFormat::Rgb24 => (
                [0, 0, 0],
                [w * 3, 0, 0],
                Frame::rgb24(&data, sw, sh).unwrap(),
            ),
            PixelFormat::Nv12 => (
                [0, w * h, 0],
                [w, cw * 2, 0],
                Frame::nv12(
                    &data[..w * h],
                    w,
                    &data[w * h..w * h + cw * ch * 2],
                    cw * 2,
                    sw,
                    sh,
                )
                .unwrap(),
            ),
            PixelFormat::Yuv420p => (
                [0, w * h, w * h + cw * ch],
                [w, cw, cw],
                Frame::yuv420p(
                    &data[..w * h],
                    w,
                    &data[w * h..w * h + cw * ch],
                    cw,
                    &data[w * h + cw * ch..w * h + 2 * cw * ch],
                    cw,
                    sw,
                    sh,
                )
                .unwrap(),
            ),
        };
        let spec = if i % 2 == 0 {
            ColorSpec::BT709_LIMITED
        } else {
            ColorSpec {
                matrix: ColorMatrix::Bt601,
                range: ColorRange::Full,
            }
        };
        let mut pp = CpuPreprocessor::new(sw, sh, dw, dh, filter, &Normalize::CLIP).unwrap();
        let n = (3 * dw * dh) as usize;
        let mut f = vec![0f32; n];
        let mut a = vec![f16::ZERO; n];
        let mut b = vec![bf16::ZERO; n];
        pp.run(&frame, spec, &mut f).unwrap();
        pp.run(&frame, spec, &mut a).unwrap();
        pp.run(&frame, spec, &mut b).unwrap();
        let p = pp.plan();
        let cc = spec.coeffs();
        let fmt_i = match fmt {
            PixelFormat::Rgb24 => 0,
            PixelFormat::Nv12 => 1,
            PixelFormat::Yuv420p => 2,
        };
        let d = format!("{dir}/c{i}_");
        std::fs::write(format!("{d}src"), &data).unwrap();
        w32(
            &format!("{d}meta"),
            &[
                sw as i32,
                sh as i32,
                dw as i32,
                dh as i32,
                fmt_i,
                offs[1] as i32,
                offs[2] as i32,
                strides[0] as i32,
                strides[1] as i32,
                strides[2] as i32,
                cc.y_off,
                cc.cy,
                cc.crv,
                cc.cgu,
                cc.cgv,
                cc.cbu,
                p.vertical_first as i32,
                p.tmp_w as i32,
                p.tmp_rows as i32,
                p.row0 as i32,
                p.horiz.ksize as i32,
                p.vert.ksize as i32,
            ],
        );
        w32(&format!("{d}hb"), &p.horiz.bounds);
        w32(&format!("{d}hw"), &p.horiz.weights);
        w32(&format!("{d}vb"), &p.vert.bounds);
        w32(&format!("{d}vw"), &p.vert.weights);
        wf(&format!("{d}lut"), &Normalize::CLIP.table().unwrap());
        wf(&format!("{d}f32"), &f);
        std::fs::write(
            format!("{d}f16"),
            a.iter()
                .flat_map(|x| x.to_bits().to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        std::fs::write(
            format!("{d}bf16"),
            b.iter()
                .flat_map(|x| x.to_bits().to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
    }
    // pool_mean + scene
    let s = TokenShape {
        t: 5,
        h: 7,
        w: 9,
        d: 33,
    };
    let x: Vec<f32> = common::lcg_bytes(s.len(), 3)
        .iter()
        .map(|&v| v as f32 / 37.0 - 3.0)
        .collect();
    let mut o = vec![0f32; s.pooled(2, 2).len()];
    pool_mean(&x, s, 2, 2, &mut o).unwrap();
    wf(&format!("{dir}/pool_in"), &x);
    wf(&format!("{dir}/pool_out"), &o);
    let (w, h) = (641u32, 359u32);
    let y = common::lcg_bytes((w * h) as usize, 9);
    let c = vec![128u8; 400 * 200];
    let sig = luma_signature(
        &Frame::yuv420p(&y, w as usize, &c, 321, &c, 321, w, h).unwrap(),
        SceneParams::default(),
    )
    .unwrap();
    std::fs::write(format!("{dir}/scene_in"), &y).unwrap();
    std::fs::write(format!("{dir}/scene_grid"), &sig.grid).unwrap();
    w32(
        &format!("{dir}/scene_hist"),
        &sig.hist.iter().map(|&v| v as i32).collect::<Vec<_>>(),
    );
}
