//! SmolVLM behind [`VisionLanguageModel`]: weights + tokenizer + processor, frames in, answers out.
//!
//! A clip is a list of [`VisualTokens`] groups. Each group is rendered in the video prompt exactly as
//! transformers renders one frame -- `Frame from MM:SS:` then `<fake_token_around_image><global-img>`,
//! one `<image>` per token of the group, `<fake_token_around_image>` -- so an unpooled group (one
//! frame, `image_seq_len` tokens) gives the same ids as transformers. A pooled group (several
//! frames merged into fewer tokens, `start < end`) is rendered the same way, stamped with its
//! `start` time and carrying as many `<image>` tokens as it has rows; the intro's frame count is the
//! number of groups and the video duration is the clip's [`Clip::duration`] (transformers writes
//! `int(duration)` of the video), the last group's `end` only when the duration is unknown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Tensor};

use super::processor::{ProcessedInput, SmolVlmProcessor};
use super::SmolVlm;
use crate::generation::decode_loop;
use crate::{
    AskOutput, Checkpoint, Clip, FramePixels, Generation, GenerationParams, LoadOptions,
    ModelError, PixelData, PixelStep, PromptLogits, VideoFrame, VisionLanguageModel, VisualTokens,
};

/// A loaded SmolVLM ready to answer: weights, tokenizer and processor.
pub struct SmolVlmEngine {
    name: String,
    dir: PathBuf,
    /// The weights.
    pub model: SmolVlm,
    /// The processor (prompt text, token ids, pixel values).
    pub processor: Arc<SmolVlmProcessor>,
    stop_ids: Vec<u32>,
    max_frames: usize,
    vision_batch: usize,
    /// Our CUDA preprocessing when the model runs on a CUDA device (`cuda` builds).
    #[cfg(feature = "cuda")]
    gpu_pixels: super::gpu::GpuVideoPixels,
}

impl std::fmt::Debug for SmolVlmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmolVlmEngine")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish()
    }
}

impl SmolVlmEngine {
    /// Loads a model from a local directory or hub id (see [`crate::hub::resolve`]).
    ///
    /// # Errors
    /// [`ModelError::File`] / [`ModelError::Invalid`] for missing files, unknown model_type,
    /// missing or misshapen tensors (naming file and tensor), unreachable hub.
    pub fn load(spec: &str, opts: &LoadOptions) -> Result<Self, ModelError> {
        Self::from_checkpoint(spec, &Checkpoint::open(spec)?, opts)
    }

    /// [`Self::load`] from an opened [`Checkpoint`], named `name` (what [`crate::load_model`]
    /// calls for model_type `smolvlm`).
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn from_checkpoint(
        name: &str,
        ckpt: &Checkpoint,
        opts: &LoadOptions,
    ) -> Result<Self, ModelError> {
        opts.apply_threads();
        let dir = ckpt.dir().to_path_buf();
        let model = SmolVlm::from_checkpoint(ckpt, opts.dtype, &opts.device)?;
        let processor = SmolVlmProcessor::from_checkpoint(ckpt)?;
        let extra_stop = ckpt.generation_eos_ids()?;
        let max_frames = opts
            .max_frames
            .unwrap_or_else(|| video_max_frames(ckpt).unwrap_or(64));
        Self::assemble(name, dir, model, processor, extra_stop, max_frames, opts)
    }

    /// Loads llama.cpp's GGUF files of a SmolVLM2 (see [`super::gguf`]), named `name`, computing
    /// in f32: the text model dequantized at load with [`LoadOptions::gguf_dequantize`], else on
    /// candle's quantized matmuls.
    ///
    /// # Errors
    /// As [`super::gguf::load`].
    pub fn from_gguf(
        name: &str,
        files: &crate::gguf::GgufFiles,
        opts: &LoadOptions,
    ) -> Result<Self, ModelError> {
        opts.apply_threads();
        if opts.dtype != DType::F32 {
            // The GGUF decoder dequantizes to f32 (or runs quantized); one dtype for both towers.
            tracing::warn!(dtype = ?opts.dtype, "GGUF models compute in f32; the dtype is ignored");
        }
        let (model, processor) =
            super::gguf::load(files, DType::F32, &opts.device, opts.gguf_dequantize)?;
        let dir = files
            .text
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        // The hub's SmolVLM2 video processor samples at most 64 frames.
        let max_frames = opts.max_frames.unwrap_or(64);
        Self::assemble(name, dir, model, processor, Vec::new(), max_frames, opts)
    }

    /// The engine from loaded weights and processor: stop ids (the processor's, the config's eos
    /// and `extra_stop`) and frame budget.
    fn assemble(
        name: &str,
        dir: PathBuf,
        model: SmolVlm,
        processor: SmolVlmProcessor,
        extra_stop: Vec<u32>,
        max_frames: usize,
        opts: &LoadOptions,
    ) -> Result<Self, ModelError> {
        if processor.image_token_id() != model.config.image_token_id {
            return Err(ModelError::Invalid(format!(
                "{}: image_token_id {} differs from the tokenizer's <image> id {}",
                dir.join("config.json").display(),
                model.config.image_token_id,
                processor.image_token_id()
            )));
        }
        let mut stop_ids = processor.stop_token_ids().to_vec();
        for id in model
            .config
            .text_config
            .eos_ids()
            .into_iter()
            .chain(extra_stop)
        {
            if !stop_ids.contains(&id) {
                stop_ids.push(id);
            }
        }
        Ok(Self {
            name: name.to_string(),
            dir,
            model,
            processor: Arc::new(processor),
            stop_ids,
            max_frames: max_frames.max(1),
            vision_batch: opts.vision_batch.max(1),
            #[cfg(feature = "cuda")]
            gpu_pixels: Default::default(),
        })
    }

    /// The vision tower's input for video frames, `[n, 3, side, side]` on the vision device: from
    /// the processor's video path (exactly as transformers), or, in `cuda` builds with the model
    /// on a GPU, from our CUDA kernels without a host round trip (see `smolvlm/gpu.rs`).
    ///
    /// # Errors
    /// The processor's errors for malformed frames; [`ModelError::Candle`] on a failed copy.
    pub fn video_pixels(&mut self, frames: &[VideoFrame]) -> Result<Tensor, ModelError> {
        #[cfg(feature = "cuda")]
        if let Some(t) = self.gpu_pixels.pixels(
            frames,
            self.processor.video_config(),
            self.model.vision_device(),
            self.model.vision.dtype(),
        ) {
            return Ok(t);
        }
        // The processor's video path gives the pixels (its prompt is not needed here).
        let input = self.processor.video_prompt(frames, "")?;
        input.pixel_values_tensor(self.model.vision_device())
    }

    /// The directory the files were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Ids that end generation (`<end_of_utterance>` and the eos ids).
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        self.processor.tokenizer()
    }

    /// One [`VisualTokens`] group per frame of `pixels` (`[n, 3, S, S]`), stamped with `pts`.
    fn frame_tokens(&self, pixels: &Tensor, pts: &[f64]) -> Result<Vec<VisualTokens>, ModelError> {
        let feats = self.encode_pixels(pixels)?;
        let (_, n, _) = feats.dims3()?;
        let side = (n as f64).sqrt().round() as usize;
        pts.iter()
            .enumerate()
            .map(|(i, &t)| {
                Ok(VisualTokens {
                    embeddings: feats.get(i)?,
                    grid_h: side,
                    grid_w: n / side.max(1),
                    start: t,
                    end: t,
                })
            })
            .collect()
    }

    /// Runs pixel values `[n, 3, S, S]` through the vision tower and connector in batches:
    /// `[n, tokens, text_hidden]`.
    ///
    /// # Errors
    /// As [`super::VisionTower::forward`].
    pub fn encode_pixels(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        let n = pixels.dim(0)?;
        let mut outs = Vec::new();
        let mut i = 0;
        while i < n {
            let b = self.vision_batch.min(n - i);
            outs.push(self.model.vision.forward(&pixels.narrow(0, i, b)?)?);
            i += b;
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    /// Prefills `ids` with `features` (rows for the `<image>` tokens, in order) and generates.
    ///
    /// # Errors
    /// [`ModelError::Input`] when the prompt is longer than the context or the `<image>` count
    /// differs from the feature rows; others on failed ops.
    pub fn generate_ids(
        &mut self,
        ids: &[u32],
        features: Option<&Tensor>,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        let t0 = Instant::now();
        let first = self.prefill(ids, features, false)?;
        let prefill_seconds = t0.elapsed().as_secs_f64();
        let text = &mut self.model.text;
        let tokenizer = self.processor.tokenizer();
        let mut step = |t: u32| -> Result<Tensor, ModelError> {
            if text.position() >= text.max_positions() {
                return Err(ModelError::Input(
                    "generation reached the end of the context".into(),
                ));
            }
            Ok(text.forward_ids(&[t], false)?.squeeze(0)?)
        };
        let d = decode_loop(
            first,
            ids,
            params,
            &self.stop_ids,
            tokenizer,
            &mut step,
            on_text,
        )?;
        Ok(Generation {
            text: d.text,
            token_ids: d.token_ids,
            prompt_tokens: ids.len(),
            finish: d.finish,
            prefill_seconds,
            decode_seconds: d.seconds,
        })
    }

    /// One forward pass over `ids` with `features` in the `<image>` positions, from an empty cache:
    /// the last position's logits `[vocab]`, or every position's `[seq, vocab]` with `all_logits`.
    ///
    /// # Errors
    /// [`ModelError::Input`] when the prompt is longer than the context or the `<image>` count
    /// differs from the feature rows; others on failed ops.
    pub fn prefill(
        &mut self,
        ids: &[u32],
        features: Option<&Tensor>,
        all_logits: bool,
    ) -> Result<Tensor, ModelError> {
        let embeds = self.model.embed_with_images(ids, features)?;
        let text = &mut self.model.text;
        text.clear_cache();
        let room = text.max_positions();
        if ids.len() >= room {
            return Err(ModelError::Input(format!(
                "the prompt has {} tokens, the model's context is {room}",
                ids.len()
            )));
        }
        Ok(text.forward_embeds(&embeds, all_logits)?.squeeze(0)?)
    }

    /// Answers `question` about images (image mode: each image split into crops plus the global
    /// image, as transformers' SmolVLM image processor does).
    ///
    /// # Errors
    /// [`ModelError::Input`] for an empty image list or malformed image; others as
    /// [`SmolVlmEngine::generate_ids`].
    pub fn ask_images(
        &mut self,
        images: &[VideoFrame],
        question: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<AskOutput, ModelError> {
        if images.is_empty() {
            return Err(ModelError::Input("no images".into()));
        }
        let t0 = Instant::now();
        let input = self.processor.image_prompt(images, question)?;
        self.run_processed(input, t0.elapsed().as_secs_f64(), params, on_text)
    }

    /// Answers `question` about video frames (video mode: one image per frame, each stamped with
    /// its time; `duration` is the video's length for the intro line, the last frame's time when
    /// `None`).
    ///
    /// # Errors
    /// [`ModelError::Input`] for no frames or a malformed frame; others as
    /// [`SmolVlmEngine::generate_ids`].
    pub fn ask_video(
        &mut self,
        frames: &[VideoFrame],
        duration: Option<f64>,
        question: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<AskOutput, ModelError> {
        if frames.is_empty() {
            return Err(ModelError::Input("no frames".into()));
        }
        let t0 = Instant::now();
        let input = self
            .processor
            .video_prompt_with_duration(frames, question, duration)?;
        self.run_processed(input, t0.elapsed().as_secs_f64(), params, on_text)
    }

    /// Encodes a processed prompt's images and generates after it.
    fn run_processed(
        &mut self,
        input: ProcessedInput,
        preprocess_seconds: f64,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<AskOutput, ModelError> {
        let t1 = Instant::now();
        let feats = if input.num_images() > 0 {
            let pixels = input.pixel_values_tensor(self.model.vision_device())?;
            let feats = self.encode_pixels(&pixels)?;
            let (b, n, d) = feats.dims3()?;
            Some(feats.reshape((b * n, d))?)
        } else {
            None
        };
        let vision_seconds = t1.elapsed().as_secs_f64();
        let generation = self.generate_ids(&input.input_ids, feats.as_ref(), params, on_text)?;
        Ok(AskOutput {
            generation,
            prompt_ids: input.input_ids,
            preprocess_seconds,
            vision_seconds,
        })
    }

    /// The prompt ids for a clip of groups (see the module docs for how groups are rendered).
    ///
    /// # Errors
    /// [`ModelError::Input`] for an empty clip; [`ModelError::Tokenizer`] when encoding fails.
    pub fn clip_prompt_ids(&self, clip: &Clip, question: &str) -> Result<Vec<u32>, ModelError> {
        if clip.groups.is_empty() {
            return Err(ModelError::Input("no frames in the clip".into()));
        }
        let groups = clip
            .groups
            .iter()
            .map(|g| Ok((g.start.max(0.0), g.embeddings.dim(0)?)))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let duration = clip.duration_or_last_frame().map(|d| d.max(0.0));
        Ok(self
            .processor
            .video_prompt_for_groups(&groups, question, duration)?
            .input_ids)
    }

    /// The prompt ids and the visual features in their order, for `prompt` about `clip`.
    fn clip_input(&self, clip: &Clip, prompt: &str) -> Result<(Vec<u32>, Tensor), ModelError> {
        let ids = self.clip_prompt_ids(clip, prompt)?;
        let rows: Vec<&Tensor> = clip.groups.iter().map(|g| &g.embeddings).collect();
        Ok((ids, Tensor::cat(&rows, 0)?))
    }
}

/// The video processor's frame budget: `video_sampling.max_frames` of `processor_config.json`'s
/// `video_processor` (transformers 5) or of `preprocessor_config.json` (4.x).
fn video_max_frames(ckpt: &Checkpoint) -> Option<usize> {
    // An unreadable optional file only loses this default; the processor reports it.
    let read = |f: &str| ckpt.json(f).ok().flatten();
    let from = |v: &serde_json::Value| {
        v.pointer("/video_sampling/max_frames")
            .and_then(|x| x.as_u64())
            .map(|x| x as usize)
    };
    read("processor_config.json")
        .and_then(|v| v.get("video_processor").and_then(from))
        .or_else(|| {
            read("video_preprocessor_config.json")
                .as_ref()
                .and_then(from)
        })
        .or_else(|| read("preprocessor_config.json").as_ref().and_then(from))
}

impl VisionLanguageModel for SmolVlmEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn device(&self) -> candle_core::Device {
        self.model.vision_device().clone()
    }

    fn family(&self) -> &'static str {
        if self.processor.frames_as_images() {
            "Idefics3"
        } else {
            "SmolVLM2"
        }
    }

    fn max_images(&self) -> usize {
        // Each image becomes its tiles plus a global view; the context is the only limit.
        usize::MAX
    }

    fn generate_images(
        &mut self,
        images: &[VideoFrame],
        prompt: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<AskOutput, ModelError> {
        self.ask_images(images, prompt, params, on_text)
    }

    fn max_frames(&self) -> usize {
        self.max_frames
    }

    fn encode_frames(&mut self, frames: &[VideoFrame]) -> Result<Vec<VisualTokens>, ModelError> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let pixels = self.video_pixels(frames)?;
        let pts: Vec<f64> = frames.iter().map(|f| f.pts).collect();
        self.frame_tokens(&pixels, &pts)
    }

    fn pixel_step(&self) -> Option<Arc<dyn PixelStep>> {
        // On CUDA the encoder preprocesses on the device itself (our kernels).
        if !self.model.vision_device().is_cpu() {
            return None;
        }
        Some(self.processor.clone())
    }

    fn encode_frame_pixels(
        &mut self,
        frames: &[FramePixels],
        _clip_frames: usize,
    ) -> Result<Vec<VisualTokens>, ModelError> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let side = self.processor.video_config().max_image_size;
        let mut values = Vec::with_capacity(frames.len() * 3 * side * side);
        for (i, f) in frames.iter().enumerate() {
            match &f.data {
                PixelData::Planes { values: v, shape } if *shape == [3, side, side] => {
                    values.extend_from_slice(v)
                }
                other => {
                    return Err(ModelError::Input(format!(
                        "frame {i}: pixels {} are not this model's [3, {side}, {side}] planes",
                        pixel_kind(other)
                    )))
                }
            }
        }
        let pixels = Tensor::from_vec(
            values,
            (frames.len(), 3, side, side),
            self.model.vision_device(),
        )?;
        let pts: Vec<f64> = frames.iter().map(|f| f.pts).collect();
        self.frame_tokens(&pixels, &pts)
    }

    fn generate(
        &mut self,
        clip: &Clip,
        prompt: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        let (ids, feats) = self.clip_input(clip, prompt)?;
        self.generate_ids(&ids, Some(&feats), params, on_text)
    }

    fn prompt_logits(&mut self, clip: &Clip, prompt: &str) -> Result<PromptLogits, ModelError> {
        let (ids, feats) = self.clip_input(clip, prompt)?;
        let logits = self.prefill(&ids, Some(&feats), true)?;
        Ok(PromptLogits { ids, logits })
    }

    fn continuation_logits(
        &mut self,
        clip: &Clip,
        prompt: &str,
        continuation: &[u32],
    ) -> Result<PromptLogits, ModelError> {
        let (mut ids, feats) = self.clip_input(clip, prompt)?;
        ids.extend_from_slice(continuation);
        let logits = self.prefill(&ids, Some(&feats), true)?;
        Ok(PromptLogits { ids, logits })
    }
}

/// How pixels of another form are named in errors.
pub(crate) fn pixel_kind(d: &PixelData) -> String {
    match d {
        PixelData::Planes { shape, .. } => format!("planes {shape:?}"),
        PixelData::Rgb { width, height, .. } => format!("RGB {width}x{height}"),
    }
}
