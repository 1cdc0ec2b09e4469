//! The served model: loaded once by [`load`], owned by its worker thread, and shared with the
//! pipelines the worker builds per batch through [`SharedModel`].

use std::sync::{Arc, Mutex};

use vidlm_models::qwen3_vl::{is_qwen3_vl, Qwen3VlEngine};
use vidlm_models::smolvlm::SmolVlmEngine;
use vidlm_models::{
    Clip, Generation, GenerationParams, LoadOptions, ModelError, PromptLogits, VideoFrame,
    VisionLanguageModel, VisualTokens,
};

/// A loaded model: the concrete engine, because image questions use each family's own image
/// prompt (as `vidlm ask --image` does), which the pipeline's trait does not cover.
pub enum ServedModel {
    /// SmolVLM2.
    Smol(Box<SmolVlmEngine>),
    /// Qwen3-VL.
    Qwen(Box<Qwen3VlEngine>),
}

/// Loads the model `spec` (a directory or hub id) with `opts`, the family as its config.json says.
/// The one place the server loads models.
///
/// # Errors
/// The model crate's error (missing files, an invalid checkpoint).
pub fn load(spec: &str, opts: &LoadOptions) -> Result<ServedModel, ModelError> {
    if is_qwen3_vl(&vidlm_models::hub::resolve(spec)?) {
        Ok(ServedModel::Qwen(Box::new(Qwen3VlEngine::load(
            spec, opts,
        )?)))
    } else {
        Ok(ServedModel::Smol(Box::new(SmolVlmEngine::load(
            spec, opts,
        )?)))
    }
}

impl ServedModel {
    /// The engine as the pipeline's trait object.
    pub fn as_vlm(&mut self) -> &mut dyn VisionLanguageModel {
        match self {
            ServedModel::Smol(m) => m.as_mut(),
            ServedModel::Qwen(m) => m.as_mut(),
        }
    }

    fn vlm_ref(&self) -> &dyn VisionLanguageModel {
        match self {
            ServedModel::Smol(m) => m.as_ref(),
            ServedModel::Qwen(m) => m.as_ref(),
        }
    }

    /// Answers `question` about `images` with the family's image prompt (SmolVLM2: several
    /// images, split into tiles; Qwen3-VL: one image).
    ///
    /// # Errors
    /// [`ModelError::Input`] for no image, or more than one for Qwen3-VL; others when the model
    /// fails.
    pub fn ask_images(
        &mut self,
        images: &[VideoFrame],
        question: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        match self {
            ServedModel::Smol(m) => Ok(m.ask_images(images, question, params, on_text)?.generation),
            ServedModel::Qwen(m) => match images {
                [one] => m.ask_image(one, question, params, on_text),
                _ => Err(ModelError::Input(format!(
                    "{}: a Qwen3-VL model takes one image per question (got {})",
                    m.name(),
                    images.len()
                ))),
            },
        }
    }
}

/// A [`ServedModel`] behind a mutex, handed to each batch's pipeline as its model: the worker
/// keeps the model between batches while every pipeline gets its own configuration.
#[derive(Clone)]
pub struct SharedModel {
    inner: Arc<Mutex<ServedModel>>,
    name: String,
    max_frames: usize,
    frames_per_group: usize,
}

impl SharedModel {
    /// Shares `model`.
    pub fn new(model: ServedModel) -> Self {
        let v = model.vlm_ref();
        Self {
            name: v.name().to_string(),
            max_frames: v.max_frames(),
            frames_per_group: v.frames_per_group(),
            inner: Arc::new(Mutex::new(model)),
        }
    }

    /// Runs `f` with the model locked. A model call that panicked left the model usable (the
    /// pipeline catches and reports such panics), so a poisoned lock is taken as it is.
    pub fn with<R>(&self, f: impl FnOnce(&mut ServedModel) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

impl VisionLanguageModel for SharedModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_frames(&self) -> usize {
        self.max_frames
    }

    fn encode_frames(&mut self, frames: &[VideoFrame]) -> Result<Vec<VisualTokens>, ModelError> {
        self.with(|m| m.as_vlm().encode_frames(frames))
    }

    fn frames_per_group(&self) -> usize {
        self.frames_per_group
    }

    fn encode_clip_frames(
        &mut self,
        frames: &[VideoFrame],
        clip_frames: usize,
    ) -> Result<Vec<VisualTokens>, ModelError> {
        self.with(|m| m.as_vlm().encode_clip_frames(frames, clip_frames))
    }

    fn generate(
        &mut self,
        clip: &Clip,
        prompt: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        self.with(|m| m.as_vlm().generate(clip, prompt, params, on_text))
    }

    fn prompt_logits(&mut self, clip: &Clip, prompt: &str) -> Result<PromptLogits, ModelError> {
        self.with(|m| m.as_vlm().prompt_logits(clip, prompt))
    }
}
