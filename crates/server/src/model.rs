//! The served model: loaded once by [`load`], owned by its worker thread, and shared with the
//! pipelines the worker builds per batch through [`SharedModel`].

use std::sync::{Arc, Mutex};

use vidlm_models::{
    AskOutput, Clip, FramePixels, Generation, GenerationParams, LoadOptions, ModelError, PixelStep,
    PromptLogits, VideoFrame, VisionLanguageModel, VisualTokens,
};

/// A loaded model, of whatever family its config.json names.
pub type ServedModel = Box<dyn VisionLanguageModel>;

/// Loads the model `spec` (a directory or hub id) with `opts` through the model registry
/// ([`vidlm_models::load_model`]). The one place the server loads models.
///
/// # Errors
/// The model crate's error (missing files, an invalid checkpoint, an unknown model_type).
pub fn load(spec: &str, opts: &LoadOptions) -> Result<ServedModel, ModelError> {
    vidlm_models::load_model(spec, opts)
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
        let v = model.as_ref();
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

    fn device(&self) -> candle_core::Device {
        self.with(|m| m.device())
    }

    fn max_frames(&self) -> usize {
        self.max_frames
    }

    fn family(&self) -> &'static str {
        self.with(|m| m.family())
    }

    fn accepts_text_only(&self) -> bool {
        self.with(|m| m.accepts_text_only())
    }

    fn max_images(&self) -> usize {
        self.with(|m| m.max_images())
    }

    fn generate_images(
        &mut self,
        images: &[VideoFrame],
        prompt: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<AskOutput, ModelError> {
        self.with(|m| m.generate_images(images, prompt, params, on_text))
    }

    fn pixel_step(&self) -> Option<Arc<dyn PixelStep>> {
        // The step needs no lock: the pipeline's preprocess threads run it beside the encoder.
        self.with(|m| m.pixel_step())
    }

    fn encode_frame_pixels(
        &mut self,
        frames: &[FramePixels],
        clip_frames: usize,
    ) -> Result<Vec<VisualTokens>, ModelError> {
        self.with(|m| m.encode_frame_pixels(frames, clip_frames))
    }

    fn encode_frames(&mut self, frames: &[VideoFrame]) -> Result<Vec<VisualTokens>, ModelError> {
        self.with(|m| m.encode_frames(frames))
    }

    fn frames_per_group(&self) -> usize {
        self.frames_per_group
    }

    fn encode_clip_frames(
        &mut self,
        frames: &[VideoFrame],
        clip_frames: usize,
    ) -> Result<Vec<VisualTokens>, ModelError> {
        self.with(|m| m.encode_clip_frames(frames, clip_frames))
    }

    fn generate(
        &mut self,
        clip: &Clip,
        prompt: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        self.with(|m| m.generate(clip, prompt, params, on_text))
    }

    fn prompt_logits(&mut self, clip: &Clip, prompt: &str) -> Result<PromptLogits, ModelError> {
        self.with(|m| m.prompt_logits(clip, prompt))
    }
}
