//! CI check: every kernel compiles with NVRTC, through the same code the GPU path uses, for
//! sm_80 and sm_90 (PTX and SASS), with no error and no warning. Needs no GPU, only NVRTC
//! (scripts/setup.sh installs it into .cuda/). Without NVRTC it skips, except under CI (env CI
//! set), where it fails.

mod common;

use vidlm_kernels::gpu::{compile, load_nvrtc, nvrtc_version, ALL_SOURCES};

#[test]
fn every_kernel_compiles_for_sm80_and_sm90_without_warnings() {
    if let Err(e) = load_nvrtc() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but NVRTC is unavailable: {e}");
        }
        common::skip(&format!("NVRTC unavailable ({e})"));
        return;
    }
    let (major, minor) = nvrtc_version().unwrap();
    eprintln!("NVRTC {major}.{minor}");
    let mut n = 0;
    for arch in ["compute_80", "compute_90", "sm_80", "sm_90"] {
        for src in ALL_SOURCES {
            match compile(&src, arch, true) {
                Ok(c) => assert!(c.log.is_empty() || !c.log.contains("warning"), "{}", c.log),
                Err(e) => panic!("{e}"),
            }
            n += 1;
        }
    }
    assert_eq!(n, 12);
}

#[test]
fn a_broken_kernel_is_reported_with_its_log() {
    if load_nvrtc().is_err() {
        common::skip("NVRTC unavailable");
        return;
    }
    let bad = vidlm_kernels::gpu::KernelSource {
        name: "broken",
        source: "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }",
        functions: &["k"],
    };
    let err = compile(&bad, "compute_90", true).unwrap_err().to_string();
    assert!(err.contains("undefined_name"), "{err}");
    let warn = vidlm_kernels::gpu::KernelSource {
        name: "warns",
        source: "extern \"C\" __global__ void k(float* x) { int unused = 3; x[0] = 1.0f; }",
        functions: &["k"],
    };
    // NVRTC warns about the unused variable; with warnings as errors that fails.
    match compile(&warn, "compute_90", true) {
        Err(e) => assert!(e.to_string().contains("warning"), "{e}"),
        Ok(c) => eprintln!("note: NVRTC gave no warning here (log {:?})", c.log),
    }
}
