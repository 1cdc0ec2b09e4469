//! Qwen3-VL behind [`VisionLanguageModel`]: weights + tokenizer + processor, frames in, answers out.
//!
//! Frames are encoded in temporal patches of two (the vision tower's conv3d takes frame pairs; an
//! odd last frame is repeated, as transformers pads). Each pair becomes one [`VisualTokens`] group:
//! `start`/`end` are its two frames' times, `grid_h x grid_w` its merged token grid, and its
//! `embeddings` hold, side by side, the merged tokens and each DeepStack layer's features:
//! `[tokens, hidden * (1 + deepstack layers)]`. Keeping them in one tensor lets a pooling stage
//! that averages rows treat both alike (DeepStack is added linearly at the same positions).
//! The prompt renders each group as transformers renders a frame pair: `<T seconds>` (the mean of
//! `start` and `end`, one decimal) then `<|vision_start|>`, one `<|video_pad|>` per token,
//! `<|vision_end|>`; positions follow `get_rope_index` with one grid per group.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;

use super::processor::{rope_index, Expansion, PixelInput, Processor, VisualKind};
use super::{Qwen3Vl, VisualInput};
use crate::generation::decode_loop;
use crate::{
    AskOutput, Checkpoint, Clip, FramePixels, Generation, GenerationParams, LoadOptions,
    ModelError, PixelStep, PromptLogits, VideoFrame, VisionLanguageModel, VisualTokens,
};

/// A loaded Qwen3-VL ready to answer.
pub struct Qwen3VlEngine {
    name: String,
    dir: PathBuf,
    /// The weights.
    pub model: Qwen3Vl,
    /// The processor.
    pub processor: Processor,
    stop_ids: Vec<u32>,
    max_frames: usize,
}

/// What [`Qwen3VlEngine`]'s prompt for a clip is made of: prompt ids, their M-RoPE positions
/// (temporal, height, width) and the visual rows that replace the video tokens.
struct ClipInput {
    ids: Vec<u32>,
    positions: [Vec<i64>; 3],
    visual: VisualInput,
}

impl std::fmt::Debug for Qwen3VlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qwen3VlEngine")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish()
    }
}

impl Qwen3VlEngine {
    /// Loads a model from a local directory or hub id (see [`crate::hub::resolve`]).
    ///
    /// # Errors
    /// [`ModelError::File`] / [`ModelError::Invalid`] for missing files, another model_type,
    /// missing or misshapen tensors, an unreachable hub.
    pub fn load(spec: &str, opts: &LoadOptions) -> Result<Self, ModelError> {
        Self::from_checkpoint(spec, &Checkpoint::open(spec)?, opts)
    }

    /// [`Self::load`] from an opened [`Checkpoint`], named `name` (what [`crate::load_model`]
    /// calls for model_type `qwen3_vl`).
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
        let model = Qwen3Vl::from_checkpoint(ckpt, opts.dtype, &opts.device)?;
        let processor = Processor::from_checkpoint(ckpt)?;
        let mut stop_ids =
            crate::generation::eos_ids(model.config.text_config.eos_token_id.as_ref());
        stop_ids.extend(ckpt.generation_eos_ids()?);
        if let Some(id) = processor.tokenizer.token_to_id("<|im_end|>") {
            stop_ids.push(id);
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let max_frames = opts
            .max_frames
            .or(processor.video.max_frames)
            .unwrap_or(768)
            .max(1);
        Ok(Self {
            name: name.to_string(),
            dir,
            model,
            processor,
            stop_ids,
            max_frames,
        })
    }

    /// The directory the files were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Ids that end generation.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Prefills `ids` (positions from the mm token types and grids) and generates.
    ///
    /// # Errors
    /// [`ModelError::Input`] when placeholders and visual tokens disagree or the context
    /// overflows; others on failed ops.
    pub fn generate_ids(
        &mut self,
        ids: &[u32],
        pos: &[Vec<i64>; 3],
        visual: Option<&VisualInput>,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        let t0 = Instant::now();
        let first = self.model.prefill(ids, pos, visual, false)?;
        let prefill_seconds = t0.elapsed().as_secs_f64();
        let model = &mut self.model;
        let mut step = |t: u32| model.step(t);
        let d = decode_loop(
            first,
            ids,
            params,
            &self.stop_ids,
            &self.processor.tokenizer,
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

    /// Answers `question` about one image (image mode).
    ///
    /// # Errors
    /// [`ModelError::Input`] for a malformed image; others as [`Qwen3VlEngine::generate_ids`].
    pub fn ask_image(
        &mut self,
        image: &VideoFrame,
        question: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        let device = self.model.text.device();
        let px = self.processor.image_pixels(image, &device)?;
        let m = self.model.config.vision_config.spatial_merge_size;
        let tokens = px.grid.iter().product::<usize>() / (m * m);
        let chat = self.processor.chat_prompt(VisualKind::Image, question)?;
        let prompt = self.processor.expand(&chat, &Expansion::Image { tokens })?;
        let (pos, _) = rope_index(&prompt.mm_token_type_ids, &[px.grid], &[], m)?;
        let visual = self.model.encode(&[(px.pixels, px.grid)])?;
        self.generate_ids(&prompt.ids, &pos, Some(&visual), params, on_text)
    }

    /// The prompt ids, their M-RoPE positions and the visual input for `prompt` about `clip`:
    /// each group is rendered as transformers renders a temporal patch, `<T seconds>` with T the
    /// mean of the patch's first and last frame times (`Qwen3VLProcessor._calculate_timestamps`).
    fn clip_input(&self, clip: &Clip, prompt: &str) -> Result<ClipInput, ModelError> {
        if clip.groups.is_empty() {
            return Err(ModelError::Input("no frames in the clip".into()));
        }
        let hidden = self.model.config.text_config.hidden_size;
        let layers = self
            .model
            .config
            .vision_config
            .deepstack_visual_indexes
            .len();
        let m = self.model.config.vision_config.spatial_merge_size;
        let mut pairs = Vec::with_capacity(clip.groups.len());
        let mut grids = Vec::with_capacity(clip.groups.len());
        for (i, g) in clip.groups.iter().enumerate() {
            let (n, d) = g.embeddings.dims2()?;
            if d != hidden * (1 + layers) || n != g.grid_h * g.grid_w {
                return Err(ModelError::Input(format!(
                    "group {i}: embeddings {:?} do not fit a {}x{} grid of {} columns",
                    g.embeddings.dims(),
                    g.grid_h,
                    g.grid_w,
                    hidden * (1 + layers)
                )));
            }
            pairs.push(((g.start + g.end) / 2.0, n));
            grids.push([1, g.grid_h * m, g.grid_w * m]);
        }
        let rows: Vec<&Tensor> = clip.groups.iter().map(|g| &g.embeddings).collect();
        let all = Tensor::cat(&rows, 0)?;
        let visual = VisualInput {
            embeds: all.narrow(1, 0, hidden)?,
            deepstack: (0..layers)
                .map(|l| all.narrow(1, hidden * (l + 1), hidden))
                .collect::<candle_core::Result<Vec<_>>>()?,
        };
        let chat = self.processor.chat_prompt(VisualKind::Video, prompt)?;
        let p = self.processor.expand(&chat, &Expansion::Video { pairs })?;
        let (pos, _) = rope_index(&p.mm_token_type_ids, &[], &grids, m)?;
        Ok(ClipInput {
            ids: p.ids,
            positions: pos,
            visual,
        })
    }

    /// Encodes already processed video pixels into one group per temporal patch.
    fn groups(&self, px: PixelInput, pts: &[f64]) -> Result<Vec<VisualTokens>, ModelError> {
        let out = self.model.vision.forward(&px.pixels, px.grid)?;
        let m = self.model.config.vision_config.spatial_merge_size;
        let tp = self.model.config.vision_config.temporal_patch_size;
        let (gh, gw) = (px.grid[1] / m, px.grid[2] / m);
        let per = gh * gw;
        let mut cols = vec![out.embeds];
        cols.extend(out.deepstack);
        let all = Tensor::cat(&cols, 1)?;
        (0..px.grid[0])
            .map(|t| {
                let first = pts[(t * tp).min(pts.len() - 1)];
                let last = pts[(t * tp + tp - 1).min(pts.len() - 1)];
                Ok(VisualTokens {
                    embeddings: all.narrow(0, t * per, per)?,
                    grid_h: gh,
                    grid_w: gw,
                    start: first,
                    end: last,
                })
            })
            .collect()
    }
}

impl VisionLanguageModel for Qwen3VlEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn device(&self) -> candle_core::Device {
        self.model.text.device()
    }

    fn family(&self) -> &'static str {
        "Qwen3-VL"
    }

    fn max_images(&self) -> usize {
        1
    }

    fn generate_images(
        &mut self,
        images: &[VideoFrame],
        prompt: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<AskOutput, ModelError> {
        let [image] = images else {
            return Err(ModelError::Input(format!(
                "{} is a Qwen3-VL model, which takes one image per question (got {})",
                self.name,
                images.len()
            )));
        };
        let generation = self.ask_image(image, prompt, params, on_text)?;
        Ok(AskOutput {
            generation,
            prompt_ids: Vec::new(),
            preprocess_seconds: 0.0,
            vision_seconds: 0.0,
        })
    }

    fn max_frames(&self) -> usize {
        self.max_frames
    }

    /// One group per temporal patch (two frames): see the module docs. The frames are processed as
    /// one video (one smart-resize for all, so they must share a size).
    fn encode_frames(&mut self, frames: &[VideoFrame]) -> Result<Vec<VisualTokens>, ModelError> {
        self.encode_clip_frames(frames, frames.len())
    }

    fn frames_per_group(&self) -> usize {
        self.model.config.vision_config.temporal_patch_size.max(1)
    }

    /// The pixel budget is shared by `clip_frames` frames; temporal patches attend only within
    /// themselves, so a clip encoded in parts of whole pairs gives the tokens of encoding it at once.
    fn encode_clip_frames(
        &mut self,
        frames: &[VideoFrame],
        clip_frames: usize,
    ) -> Result<Vec<VisualTokens>, ModelError> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let device = self.model.text.device();
        let px = self
            .processor
            .video_pixels_in_clip(frames, clip_frames, &device)?;
        let pts: Vec<f64> = frames.iter().map(|f| f.pts).collect();
        self.groups(px, &pts)
    }

    fn pixel_step(&self) -> Option<std::sync::Arc<dyn PixelStep>> {
        Some(std::sync::Arc::new(self.processor.video_pixel_step()))
    }

    fn encode_frame_pixels(
        &mut self,
        frames: &[FramePixels],
        _clip_frames: usize,
    ) -> Result<Vec<VisualTokens>, ModelError> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let device = self.model.text.device();
        let px = self.processor.video_patches(frames, &device)?;
        let pts: Vec<f64> = frames.iter().map(|f| f.pts).collect();
        self.groups(px, &pts)
    }

    fn generate(
        &mut self,
        clip: &Clip,
        prompt: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        let ClipInput {
            ids,
            positions: pos,
            visual,
        } = self.clip_input(clip, prompt)?;
        self.generate_ids(&ids, &pos, Some(&visual), params, on_text)
    }

    fn prompt_logits(&mut self, clip: &Clip, prompt: &str) -> Result<PromptLogits, ModelError> {
        let ClipInput {
            ids,
            positions: pos,
            visual,
        } = self.clip_input(clip, prompt)?;
        let logits = self.model.prefill(&ids, &pos, Some(&visual), true)?;
        Ok(PromptLogits { ids, logits })
    }

    fn continuation_logits(
        &mut self,
        clip: &Clip,
        prompt: &str,
        continuation: &[u32],
    ) -> Result<PromptLogits, ModelError> {
        let ClipInput {
            mut ids,
            positions: mut pos,
            visual,
        } = self.clip_input(clip, prompt)?;
        // Text after the prompt takes the next M-RoPE position in all three sections, as
        // generation's steps do.
        let next = pos.iter().flatten().max().map_or(0, |m| m + 1);
        for p in pos.iter_mut() {
            p.extend((0..continuation.len() as i64).map(|k| next + k));
        }
        ids.extend_from_slice(continuation);
        let logits = self.model.prefill(&ids, &pos, Some(&visual), true)?;
        Ok(PromptLogits { ids, logits })
    }
}
