//! The contract between the models and the pipeline.

use candle_core::Tensor;

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file of the model directory is missing or unreadable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The checkpoint does not fit the architecture (unknown model_type, wrong tensor shape...).
    #[error("invalid model: {0}")]
    Invalid(String),
    /// An input the model cannot take (no frames, a prompt over the context...).
    #[error("invalid input: {0}")]
    Input(String),
    /// A tensor operation failed (shown as its first line, see [`error_line`]).
    #[error("{}", error_line(.0))]
    Candle(candle_core::Error),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A GGUF file holds a tensor in a GGML block type vidlm cannot decode (llama.cpp's `IQ*`,
    /// `TQ*`, `MXFP4`, ...; [`crate::gguf::SUPPORTED_TYPES`] lists the ones it can).
    #[error(
        "{path}: tensor `{tensor}` is stored as GGML type {ggml_type}, which vidlm cannot decode (it reads {})",
        crate::gguf::SUPPORTED_TYPES.join(", ")
    )]
    UnsupportedGgmlType {
        /// The GGUF file.
        path: std::path::PathBuf,
        /// The first tensor of that type in the file's tensor index.
        tensor: String,
        /// llama.cpp's name of the type with its id, e.g. `IQ4_NL (20)`.
        ggml_type: String,
    },
}

// Not `#[from]`: that would make the candle error the source too, and error chains would print
// its full (multi-line) message after the one line.
impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        Self::Candle(e)
    }
}

impl ModelError {
    /// A checkpoint that does not fit the architecture, from the tensor error that showed it.
    pub fn invalid(e: &dyn std::fmt::Display) -> Self {
        Self::Invalid(error_line(e))
    }
}

/// The first line of an error's message: the one place where candle's messages (which carry a
/// backtrace when `RUST_BACKTRACE` is set) become the one-line errors every vidlm layer shows.
///
/// ```
/// let e = candle_core::Error::Msg("shape mismatch\nstack backtrace: ...".into());
/// assert_eq!(vidlm_models::error_line(&e), "shape mismatch");
/// ```
pub fn error_line(e: &dyn std::fmt::Display) -> String {
    let full = e.to_string();
    full.lines().next().unwrap_or_default().to_string()
}

/// One RGB24 frame handed to a model, with the time it shows (seconds from the start of the video).
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// Packed RGB24, `width * height * 3` bytes, rows top to bottom.
    pub rgb: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Presentation time in seconds.
    pub pts: f64,
}

/// One frame after a model's pixel step (resize, rescale, normalize): what its vision encoder
/// takes, made apart from the encoder (on the pipeline's preprocess threads) by a [`PixelStep`].
#[derive(Debug, Clone)]
pub struct FramePixels {
    /// Presentation time of the frame, seconds.
    pub pts: f64,
    /// The values.
    pub data: PixelData,
}

/// The values of [`FramePixels`], in the form the family's encoder continues from.
#[derive(Debug, Clone, PartialEq)]
pub enum PixelData {
    /// Rescaled and normalized planes, `[channels, height, width]` row-major (SmolVLM2).
    Planes {
        /// `channels * height * width` values.
        values: Vec<f32>,
        /// `[channels, height, width]`.
        shape: [usize; 3],
    },
    /// Resized packed RGB24, rescaled and normalized later with the patching (Qwen3-VL, whose
    /// patches span frame pairs).
    Rgb {
        /// `width * height * 3` bytes.
        rgb: Vec<u8>,
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
    },
}

/// A model's pixel step on its own: shareable across threads, so frames are resized and
/// normalized outside the lock that serializes the encoder. What
/// [`VisionLanguageModel::pixel_step`] hands out; [`VisionLanguageModel::encode_frame_pixels`] takes
/// its output.
pub trait PixelStep: Send + Sync {
    /// `frame`'s pixels, for a clip of `clip_frames` frames (models whose resize depends on the
    /// frame count, as Qwen3-VL's pixel budget does, size it for the whole clip).
    ///
    /// # Errors
    /// [`ModelError::Input`] for a malformed frame (size and buffer disagree).
    fn pixels(&self, frame: &VideoFrame, clip_frames: usize) -> Result<FramePixels, ModelError>;
}

/// The vision encoder's output for one frame (or a group of frames merged by pooling).
#[derive(Debug, Clone)]
pub struct VisualTokens {
    /// `[grid_h * grid_w, hidden]` embeddings in the language model's space, row-major over the grid.
    pub embeddings: Tensor,
    /// Token grid height.
    pub grid_h: usize,
    /// Token grid width.
    pub grid_w: usize,
    /// Time of the first frame in the group, seconds.
    pub start: f64,
    /// Time of the last frame in the group, seconds.
    pub end: f64,
}

/// A clip as a model receives it: its visual token groups (each with the times of its first and
/// last frame) and what is known about the video they were sampled from -- what the reference
/// processors write into their prompts besides each frame's time (SmolVLM2's intro line states the
/// video's duration).
///
/// ```
/// use vidlm_models::Clip;
/// let clip = Clip::default().with_video(Some(4.0), Some(25.0));
/// assert!(clip.groups.is_empty());
/// assert_eq!(clip.duration, Some(4.0));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Clip {
    /// The visual token groups, in time order (empty for a text-only prompt).
    pub groups: Vec<VisualTokens>,
    /// Duration of the source video in seconds: the video stream's duration, as transformers'
    /// video decoder reports it (`VideoMetadata.duration`); `None` when unknown (live inputs).
    /// A chunk of a longer video carries the whole video's duration.
    pub duration: Option<f64>,
    /// Frame rate of the source video (`VideoMetadata.fps`), when known.
    pub fps: Option<f64>,
}

impl Clip {
    /// A clip of `groups` from a video whose duration and frame rate are unknown.
    pub fn new(groups: Vec<VisualTokens>) -> Self {
        Self {
            groups,
            ..Self::default()
        }
    }

    /// The same clip, from a video of `duration` seconds at `fps` frames per second.
    pub fn with_video(mut self, duration: Option<f64>, fps: Option<f64>) -> Self {
        self.duration = duration;
        self.fps = fps;
        self
    }

    /// The time of every frame the groups were encoded from, in order, as far as the groups tell
    /// (a group's first and last frame; one time when they are the same frame).
    pub fn frame_times(&self) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.groups.len() * 2);
        for g in &self.groups {
            out.push(g.start);
            if g.end != g.start {
                out.push(g.end);
            }
        }
        out
    }

    /// The time transformers' processors take as the video's length: the duration when known,
    /// else the last frame's time (SmolVLM2's fallback); `None` for a clip without frames.
    pub fn duration_or_last_frame(&self) -> Option<f64> {
        self.duration
            .or_else(|| self.groups.iter().map(|g| g.end).reduce(f64::max))
    }
}

/// A prompt's token ids and the logits one forward pass over it gives at every position: what the
/// model's parity with a reference implementation is checked on.
#[derive(Debug, Clone)]
pub struct PromptLogits {
    /// The prompt's token ids, as [`VisionLanguageModel::generate`] would feed them.
    pub ids: Vec<u32>,
    /// `[ids.len(), vocab]` f32 logits.
    pub logits: Tensor,
}

/// How to generate text.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    /// Nucleus sampling threshold (1.0 disables it).
    pub top_p: f64,
    /// Keep only the k most likely tokens (0 disables it).
    pub top_k: usize,
    /// Penalty for tokens already present (1.0 disables it).
    pub repetition_penalty: f32,
    /// Seed of the sampler.
    pub seed: u64,
    /// When set (from any thread), generation ends at the next token boundary (no further model
    /// step) with [`FinishReason::Cancelled`]: how Ctrl-C stops a long answer without waiting.
    pub stop: Option<StopFlag>,
}

/// A shared flag that asks a running generation to stop. Cloning shares it; two flags are equal
/// when they are the same flag.
///
/// ```
/// let flag = vidlm_models::StopFlag::default();
/// let params = vidlm_models::GenerationParams { stop: Some(flag.clone()), ..Default::default() };
/// flag.set();
/// assert!(params.stop.as_ref().is_some_and(|f| f.is_set()));
/// ```
#[derive(Debug, Clone, Default)]
pub struct StopFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl StopFlag {
    /// A flag sharing `flag` (e.g. a caller's own cancellation flag).
    pub fn from_shared(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        Self(flag)
    }

    /// Asks the generation to stop; idempotent.
    pub fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl PartialEq for StopFlag {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            seed: 299792458,
            stop: None,
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-turn or end-of-sequence token.
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// [`GenerationParams::stop`] was set.
    Cancelled,
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Decoded text, special tokens skipped.
    pub text: String,
    /// Generated token ids (the stop token excluded).
    pub token_ids: Vec<u32>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Why it stopped.
    pub finish: FinishReason,
    /// Seconds spent on the prompt (prefill).
    pub prefill_seconds: f64,
    /// Seconds spent generating after the prompt.
    pub decode_seconds: f64,
}

/// An answer about still images, with the seconds its image steps took.
#[derive(Debug, Clone)]
pub struct AskOutput {
    /// The generation.
    pub generation: Generation,
    /// Prompt token ids (with the image placeholders).
    pub prompt_ids: Vec<u32>,
    /// Seconds preprocessing the images (resize, normalize); 0 when the model does not time it
    /// apart from generation.
    pub preprocess_seconds: f64,
    /// Seconds in the vision tower and connector; 0 when not timed apart from generation.
    pub vision_seconds: f64,
}

/// A vision-language model as the pipeline drives it.
pub trait VisionLanguageModel: Send {
    /// The model's name (hub id or directory).
    fn name(&self) -> &str;

    /// The architecture family, as [`crate::Family::name`] names it ("SmolVLM2", "Qwen3-VL");
    /// "unknown" for models outside the registry (the default).
    fn family(&self) -> &'static str {
        "unknown"
    }

    /// The most frames (or frame groups) one prompt should carry.
    fn max_frames(&self) -> usize;

    /// The device the visual tokens live on: where tokens read back from a cache are put so the
    /// language model takes them as its encoder's own. CPU unless the model says otherwise.
    fn device(&self) -> candle_core::Device {
        candle_core::Device::Cpu
    }

    /// Encodes frames into visual tokens, one [`VisualTokens`] per frame, in order. Frames may come
    /// from different videos: batching them is the caller's choice.
    ///
    /// # Errors
    /// [`ModelError::Input`] for an empty or malformed frame, [`ModelError::Candle`] on a failed op.
    fn encode_frames(&mut self, frames: &[VideoFrame]) -> Result<Vec<VisualTokens>, ModelError>;

    /// Frames one [`VisualTokens`] group covers: 1 for encoders that see frames one at a time,
    /// 2 for Qwen3-VL's temporal patches (frame pairs). [`Self::encode_frames`] returns
    /// `frames.len().div_ceil(frames_per_group())` groups; a caller that encodes a video in
    /// several calls should give each call a multiple of this many frames of one video.
    fn frames_per_group(&self) -> usize {
        1
    }

    /// [`Self::encode_frames`] for frames that are part of a clip of `clip_frames` frames (from
    /// one video) that will be given to the model together. A model whose resize depends on the
    /// frame count (Qwen3-VL's pixel budget covers the whole video) sizes every call as for the
    /// whole clip, so encoding a clip in batches gives the tokens of encoding it at once. The
    /// default ignores `clip_frames`.
    ///
    /// # Errors
    /// As [`Self::encode_frames`].
    fn encode_clip_frames(
        &mut self,
        frames: &[VideoFrame],
        clip_frames: usize,
    ) -> Result<Vec<VisualTokens>, ModelError> {
        let _ = clip_frames;
        self.encode_frames(frames)
    }

    /// The model's pixel step as a thread-safe object, when it has one that runs apart from the
    /// encoder (`None`, the default: [`Self::encode_clip_frames`] does everything; also `None`
    /// where the encoder preprocesses on the GPU itself).
    fn pixel_step(&self) -> Option<std::sync::Arc<dyn PixelStep>> {
        None
    }

    /// Encodes frames already through [`Self::pixel_step`], as [`Self::encode_clip_frames`]
    /// encodes the frames they came from (the same tokens): `frames.len().div_ceil(
    /// frames_per_group())` groups, for a clip of `clip_frames` frames.
    ///
    /// # Errors
    /// [`ModelError::Input`] for pixels of another shape than the step makes, or from a model
    /// without a pixel step (the default); [`ModelError::Candle`] on a failed op.
    fn encode_frame_pixels(
        &mut self,
        frames: &[FramePixels],
        clip_frames: usize,
    ) -> Result<Vec<VisualTokens>, ModelError> {
        let _ = (frames, clip_frames);
        Err(ModelError::Input(format!(
            "{}: this model has no separate pixel step",
            self.name()
        )))
    }

    /// Answers `prompt` about a clip (visual token groups with their times, and the video's
    /// duration and frame rate). `on_text` is called with each new piece of decoded text as it is
    /// generated.
    ///
    /// # Errors
    /// [`ModelError::Input`] when the prompt does not fit the context, others on failed ops.
    fn generate(
        &mut self,
        clip: &Clip,
        prompt: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError>;

    /// Whether [`Self::generate`] takes a clip without frames (a text-only prompt, as the summary
    /// of chunk descriptions is); callers give models that do not one frame per chunk instead.
    /// False by default: the SmolVLM2 and Qwen3-VL prompts are built around their frames.
    fn accepts_text_only(&self) -> bool {
        false
    }

    /// The most still images one question may carry ([`Self::generate_images`]); 0 for a model
    /// without an image mode (the default).
    fn max_images(&self) -> usize {
        0
    }

    /// Answers `prompt` about still images (each encoded at full resolution as the model's image
    /// processor does, not as video frames); `on_text` receives the text as it is generated.
    ///
    /// # Errors
    /// [`ModelError::Input`] for no images or more than [`Self::max_images`], a malformed image,
    /// or a prompt over the context; others on failed ops.
    fn generate_images(
        &mut self,
        images: &[VideoFrame],
        prompt: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<AskOutput, ModelError> {
        let _ = (images, prompt, params, on_text);
        Err(ModelError::Input(format!(
            "{}: this model takes no still images",
            self.name()
        )))
    }

    /// The token ids [`Self::generate`] would prefill for `prompt` about `clip`, and the logits at
    /// every position of one forward pass over them (no generation).
    ///
    /// # Errors
    /// As [`Self::generate`]; [`ModelError::Input`] from models that do not implement it (the
    /// default).
    fn prompt_logits(&mut self, clip: &Clip, prompt: &str) -> Result<PromptLogits, ModelError> {
        let _ = (clip, prompt);
        Err(ModelError::Input(format!(
            "{}: prompt logits are not available for this model",
            self.name()
        )))
    }

    /// [`Self::prompt_logits`] over the prompt followed by `continuation` (token ids the answer
    /// starts with), in one forward pass: the logits at position `ids.len() - continuation.len()
    /// - 1 + k` predict `continuation[k]`, which is how an answer's log-probability is scored.
    ///
    /// # Errors
    /// As [`Self::prompt_logits`].
    fn continuation_logits(
        &mut self,
        clip: &Clip,
        prompt: &str,
        continuation: &[u32],
    ) -> Result<PromptLogits, ModelError> {
        let _ = (clip, prompt, continuation);
        Err(ModelError::Input(format!(
            "{}: continuation logits are not available for this model",
            self.name()
        )))
    }
}
