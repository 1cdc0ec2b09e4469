//! The CPU preprocess against Pillow and transformers (fixtures made by tools/kernel_refs.py).

mod common;

use vidlm_kernels::preprocess::{preprocess_rgb24, resize_rgb24, Filter, Normalize};

fn filter(name: &str) -> Filter {
    match name {
        "bilinear" => Filter::Bilinear,
        "bicubic" => Filter::Bicubic,
        "lanczos3" => Filter::Lanczos3,
        other => panic!("unknown filter {other} in manifest"),
    }
}

struct Case {
    kind: String,
    dims: [u32; 4],
    filter: Filter,
    seed: u32,
    file: String,
    norm: Option<String>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(common::fixtures().join("manifest.txt")).expect("manifest");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Case {
                kind: f[0].to_string(),
                dims: [f[1], f[2], f[3], f[4]].map(|v| v.parse().unwrap()),
                filter: filter(f[5]),
                seed: f[6].parse().unwrap(),
                file: f[7].to_string(),
                norm: f.get(8).map(|s| s.to_string()),
            }
        })
        .collect()
}

#[test]
fn resize_matches_pillow_exactly() {
    let mut n = 0;
    for c in cases().iter().filter(|c| c.kind == "resize") {
        let [sw, sh, dw, dh] = c.dims;
        let src = common::lcg_bytes((sw * sh * 3) as usize, c.seed);
        let want = std::fs::read(common::fixtures().join(&c.file)).unwrap();
        let mut got = vec![0u8; (dw * dh * 3) as usize];
        resize_rgb24(&src, sw, sh, dw, dh, c.filter, &mut got).unwrap();
        let diffs = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        // Pillow's algorithm is reproduced exactly, so any difference is a bug (brief allows 1).
        assert!(max <= 1, "{}: max abs diff {max}", c.file);
        assert_eq!(diffs, 0, "{}: {diffs} bytes differ by 1", c.file);
        n += 1;
    }
    assert!(n >= 10, "only {n} resize cases in the manifest");
}

#[test]
fn large_resizes_match_pillow_on_stored_rows() {
    let mut n = 0;
    for c in cases().iter().filter(|c| c.kind == "rows") {
        let [sw, sh, dw, dh] = c.dims;
        let r0: usize = c.norm.as_deref().expect("first row").parse().unwrap();
        let src = common::lcg_bytes((sw * sh * 3) as usize, c.seed);
        let want = std::fs::read(common::fixtures().join(&c.file)).unwrap();
        let mut got = vec![0u8; (dw * dh * 3) as usize];
        resize_rgb24(&src, sw, sh, dw, dh, c.filter, &mut got).unwrap();
        let row = (dw * 3) as usize;
        let got = &got[r0 * row..r0 * row + want.len()];
        let diffs = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(diffs, 0, "{}: {diffs} bytes differ", c.file);
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn preprocess_matches_transformers_bit_for_bit() {
    let mut n = 0;
    for c in cases().iter().filter(|c| c.kind == "normalize") {
        let [sw, sh, dw, dh] = c.dims;
        let norm = match c.norm.as_deref() {
            Some("siglip") => Normalize::SIGLIP,
            Some("clip") => Normalize::CLIP,
            other => panic!("unknown norm {other:?}"),
        };
        let src = common::lcg_bytes((sw * sh * 3) as usize, c.seed);
        let bytes = std::fs::read(common::fixtures().join(&c.file)).unwrap();
        let want: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut got = vec![f32::NAN; (3 * dw * dh) as usize];
        preprocess_rgb24(&src, sw, sh, dw, dh, c.filter, &norm, &mut got).unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{} element {i}: {g} vs {w}",
                c.file
            );
        }
        n += 1;
    }
    assert_eq!(n, 2);
}
