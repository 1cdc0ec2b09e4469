//! Loading a model: [`LoadOptions`], the registry of families ([`FAMILIES`]) and [`load_model`],
//! the one loader the pipeline, the CLI and the servers call.
//!
//! # Adding a model family
//! 1. A folder `crates/models/src/<family>/` with a `Config` that deserializes the checkpoint's
//!    `config.json`, the weights, the processor and an engine implementing
//!    [`VisionLanguageModel`], built from a [`Checkpoint`] (`from_checkpoint(name, ckpt, opts)`).
//! 2. One line in [`FAMILIES`]: the `model_type` values it serves and that constructor.
//! 3. Tiny fixtures made by a script in `tools/` with transformers' reference outputs, and parity
//!    tests against them.
//!
//! Nothing in the pipeline or the CLI changes: they see `Box<dyn VisionLanguageModel>`.
//!
//! Idefics3 (SmolVLM v1) came in this way: one registry line, the `idefics3` model_type accepted
//! by the SmolVLM config (the same model), the processor's frames-as-images prompt (it has no
//! video half), `tools/make_idefics3_fixtures.py` and `tests/idefics3_parity.rs`; the pipeline,
//! CLI, server and eval crates did not change.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::gguf::GgufFiles;
use crate::{Checkpoint, ModelError, VisionLanguageModel};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Dtype of weights and activations (f32 on CPU; bf16/f16 for accelerators).
    pub dtype: DType,
    /// Where the model runs.
    pub device: Device,
    /// CPU threads for the matmuls (None: all cores, or `RAYON_NUM_THREADS`).
    pub threads: Option<usize>,
    /// Most frames per prompt (None: the checkpoint's video `max_frames`, else the family's
    /// default).
    pub max_frames: Option<usize>,
    /// Frames encoded per vision batch (1 by default: batching gained nothing on CPU here -- the
    /// 16-frame benchmark ran 5.3 s/frame with 1 and 9.1 s/frame with 8 on a loaded 2-core
    /// machine; larger batches suit a GPU).
    pub vision_batch: usize,
    /// The vision projector GGUF (`--mmproj`) of a GGUF text model; found next to it when unset.
    pub mmproj: Option<PathBuf>,
    /// GGUF text weights dequantized to f32 at load (true, what transformers does), or kept
    /// quantized (false, the default, what llama.cpp does): decode steps then run
    /// [`crate::qgemv`]'s kernels on the stored blocks with activations quantized to 8 bits, so
    /// logits move slightly (measured on the fixtures: crates/models/tests/smollm2_gguf.rs).
    pub gguf_dequantize: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            threads: None,
            max_frames: None,
            vision_batch: 1,
            mmproj: None,
            gguf_dequantize: false,
        }
    }
}

impl LoadOptions {
    /// Sizes the CPU thread pool as [`Self::threads`] asks (see
    /// [`crate::generation::set_threads`]); nothing when unset.
    pub fn apply_threads(&self) {
        if let Some(n) = self.threads {
            crate::generation::set_threads(n);
        }
    }
}

/// Builds a family's model from an opened checkpoint; the `&str` is the name the model reports
/// (the spec it was loaded from).
pub type LoadFn =
    fn(&str, &Checkpoint, &LoadOptions) -> Result<Box<dyn VisionLanguageModel>, ModelError>;

/// Builds a family's model from llama.cpp GGUF files (text model + mmproj), named `&str`.
pub type GgufLoadFn =
    fn(&str, &GgufFiles, &LoadOptions) -> Result<Box<dyn VisionLanguageModel>, ModelError>;

/// A model family: the `config.json` `model_type` values it serves and how to build it.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The family's name, for messages ("SmolVLM2").
    pub name: &'static str,
    /// The `model_type` values of its checkpoints.
    pub model_types: &'static [&'static str],
    /// The constructor.
    pub load: LoadFn,
    /// The mmproj `clip.projector_type` values of its GGUF files.
    pub projector_types: &'static [&'static str],
    /// The constructor from GGUF files, when the family has them.
    pub load_gguf: Option<GgufLoadFn>,
}

/// Every family vidlm runs, by `model_type`.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "SmolVLM2",
        model_types: &["smolvlm"],
        load: |name, ckpt, opts| {
            Ok(Box::new(crate::smolvlm::SmolVlmEngine::from_checkpoint(
                name, ckpt, opts,
            )?))
        },
        projector_types: &[crate::smolvlm::gguf::PROJECTOR],
        load_gguf: Some(|name, files, opts| {
            Ok(Box::new(crate::smolvlm::SmolVlmEngine::from_gguf(
                name, files, opts,
            )?))
        }),
    },
    // SmolVLM v1 (HuggingFaceTB/SmolVLM-*-Instruct): SmolVLM2's model with an image-only processor.
    Family {
        name: "Idefics3",
        model_types: &["idefics3"],
        load: |name, ckpt, opts| {
            Ok(Box::new(crate::smolvlm::SmolVlmEngine::from_checkpoint(
                name, ckpt, opts,
            )?))
        },
        projector_types: &[],
        load_gguf: None,
    },
    Family {
        name: "Qwen3-VL",
        model_types: &["qwen3_vl"],
        load: |name, ckpt, opts| {
            Ok(Box::new(crate::qwen3_vl::Qwen3VlEngine::from_checkpoint(
                name, ckpt, opts,
            )?))
        },
        projector_types: &[],
        load_gguf: None,
    },
];

/// The family serving `model_type`, if any.
pub fn family(model_type: &str) -> Option<&'static Family> {
    FAMILIES
        .iter()
        .find(|f| f.model_types.contains(&model_type))
}

/// Loads the model `spec` names (a local directory or a hub id) as a [`VisionLanguageModel`], the
/// family picked by its `config.json`'s `model_type` ([`FAMILIES`]). llama.cpp's GGUF files load
/// too: `spec` a `.gguf` text model with [`LoadOptions::mmproj`] (or the one `mmproj*.gguf` next
/// to it), or a directory holding both ([`GgufFiles::find`]); the family is picked by the
/// mmproj's projector type.
///
/// # Errors
/// [`ModelError::File`] for a missing directory/file, a GGUF model without its mmproj, a truncated
/// GGUF or an unreachable hub (one line with the download command), [`ModelError::Invalid`] for an
/// unknown model_type or projector type (naming the ones served) or a missing/misshapen tensor.
///
/// ```no_run
/// let opts = vidlm_models::LoadOptions::default();
/// let model = vidlm_models::load_model("HuggingFaceTB/SmolVLM2-256M-Video-Instruct", &opts)?;
/// println!("{} takes up to {} frames", model.name(), model.max_frames());
/// # Ok::<(), vidlm_models::ModelError>(())
/// ```
pub fn load_model(
    spec: &str,
    opts: &LoadOptions,
) -> Result<Box<dyn VisionLanguageModel>, ModelError> {
    // A hub id of GGUF files (`owner/name[:QUANT]`, as llama.cpp's `-hf`) becomes its cached
    // text file; local paths and safetensors hub ids go on as they are.
    let hub_gguf = crate::hub::resolve_gguf(spec)?;
    let path = hub_gguf.as_deref().unwrap_or(Path::new(spec));
    if let Some(files) = GgufFiles::find(path, opts.mmproj.as_deref())? {
        return load_gguf(spec, &files, opts);
    }
    let ckpt = Checkpoint::open(spec)?;
    let model_type = ckpt.model_type()?;
    let fam = model_type.as_deref().and_then(family).ok_or_else(|| {
        let served: Vec<String> = FAMILIES
            .iter()
            .flat_map(|f| {
                f.model_types
                    .iter()
                    .map(|t| format!("\"{t}\" ({})", f.name))
            })
            .collect();
        ModelError::Invalid(format!(
            "{}: model_type {} is not supported (supported: {})",
            ckpt.path("config.json").display(),
            model_type
                .map(|s| format!("\"{s}\""))
                .unwrap_or_else(|| "(missing)".into()),
            served.join(", ")
        ))
    })?;
    (fam.load)(spec, &ckpt, opts)
}

/// [`load_model`] for GGUF files: the family whose projector type the mmproj names.
fn load_gguf(
    spec: &str,
    files: &GgufFiles,
    opts: &LoadOptions,
) -> Result<Box<dyn VisionLanguageModel>, ModelError> {
    let (ct, _) = crate::gguf::open(&files.mmproj)?;
    let proj = crate::gguf::meta_str(&ct, "clip.projector_type");
    let fam = FAMILIES
        .iter()
        .find(|f| f.load_gguf.is_some() && proj.is_some_and(|p| f.projector_types.contains(&p)));
    match (fam, fam.and_then(|f| f.load_gguf)) {
        (Some(_), Some(load)) => load(spec, files, opts),
        _ => {
            let served: Vec<String> = FAMILIES
                .iter()
                .flat_map(|f| {
                    f.projector_types
                        .iter()
                        .map(|t| format!("\"{t}\" ({})", f.name))
                })
                .collect();
            Err(ModelError::Invalid(format!(
                "{}: projector type {} is not supported (supported: {}){}",
                files.mmproj.display(),
                proj.map(|s| format!("\"{s}\""))
                    .unwrap_or_else(|| "(missing)".into()),
                served.join(", "),
                match crate::gguf::meta_str(&ct, "general.architecture") {
                    Some("clip") | None => String::new(),
                    Some(a) => format!("; its architecture is `{a}`, not an mmproj's `clip`"),
                }
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_type_has_one_family() {
        let mut all: Vec<&str> = FAMILIES
            .iter()
            .flat_map(|f| f.model_types)
            .copied()
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a model_type served twice");
        assert_eq!(family("smolvlm").map(|f| f.name), Some("SmolVLM2"));
        assert_eq!(family("qwen3_vl").map(|f| f.name), Some("Qwen3-VL"));
        assert!(family("llava").is_none());
    }

    #[test]
    fn every_fixture_loads_through_the_registry_as_its_family() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut seen = std::collections::BTreeSet::new();
        for e in std::fs::read_dir(&fixtures).unwrap() {
            let dir = e.unwrap().path();
            let ckpt = Checkpoint::new(&dir);
            if !dir.join("config.json").is_file() || ckpt.weight_files().is_err() {
                continue;
            }
            let model_type = ckpt.model_type().unwrap().unwrap();
            let model = load_model(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
            assert_eq!(model.family(), family(&model_type).unwrap().name, "{dir:?}");
            assert_eq!(model.name(), dir.to_str().unwrap());
            seen.insert(model.family());
            pixel_step_gives_the_encoders_tokens(model);
        }
        assert_eq!(
            seen.len(),
            FAMILIES.len(),
            "a family without a fixture: {seen:?}"
        );
    }

    /// Frames through the model's pixel step (as the pipeline's preprocess threads run it) and
    /// `encode_frame_pixels` give exactly the tokens of `encode_clip_frames`.
    fn pixel_step_gives_the_encoders_tokens(mut model: Box<dyn VisionLanguageModel>) {
        let frames: Vec<crate::VideoFrame> = (0..4u8)
            .map(|k| crate::VideoFrame {
                rgb: (0..80 * 60 * 3)
                    .map(|i| ((i * (k as usize + 3)) % 251) as u8)
                    .collect(),
                width: 80,
                height: 60,
                pts: k as f64 * 0.5,
            })
            .collect();
        let clip = 8;
        let want = model.encode_clip_frames(&frames, clip).unwrap();
        let step = model.pixel_step().expect("CPU models have a pixel step");
        let pixels: Vec<_> = frames
            .iter()
            .map(|f| step.pixels(f, clip).unwrap())
            .collect();
        let got = model.encode_frame_pixels(&pixels, clip).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                (g.start, g.end, g.grid_h, g.grid_w),
                (w.start, w.end, w.grid_h, w.grid_w)
            );
            let d = (&g.embeddings - &w.embeddings)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0, "{}", model.name());
        }
        // Pixels of another form are refused with a clear error, not encoded.
        let wrong = crate::FramePixels {
            pts: 0.0,
            data: crate::PixelData::Rgb {
                rgb: vec![0; 3],
                width: 1,
                height: 1,
            },
        };
        let other = match &pixels[0].data {
            crate::PixelData::Rgb { .. } => crate::FramePixels {
                pts: 0.0,
                data: crate::PixelData::Planes {
                    values: vec![0.0; 3],
                    shape: [3, 1, 1],
                },
            },
            crate::PixelData::Planes { .. } => wrong,
        };
        let err = model.encode_frame_pixels(&[other], clip).unwrap_err();
        assert!(matches!(err, ModelError::Input(_)), "{err}");
    }

    #[test]
    fn unknown_model_type_names_the_supported_ones() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("config.json"), r#"{"model_type": "llava"}"#).unwrap();
        let err = load_model(tmp.path().to_str().unwrap(), &LoadOptions::default())
            .err()
            .expect("llava is not served")
            .to_string();
        assert!(
            err.contains("\"llava\"")
                && err.contains("\"smolvlm\"")
                && err.contains("\"qwen3_vl\""),
            "{err}"
        );
    }
}
