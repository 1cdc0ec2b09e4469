//! The SmolVLM2 processor: prompt text, chat template, token ids and pixel values, exactly as
//! transformers 5.24's `SmolVLMProcessor`, `SmolVLMImageProcessor` and `SmolVLMVideoProcessor` make
//! them (their default, torchvision-backed classes).
//!
//! What transformers does, and so what this does:
//!
//! * **Video** (`SmolVLMVideoProcessor`): each frame is resized (antialiased Lanczos-3 on uint8,
//!   which equals Pillow's `LANCZOS` to within one level) so its longest edge is
//!   `video_sampling.video_size.longest_edge` (aspect kept, the short side rounded up to even), the
//!   result rounded to uint8, then resized again to the square `max_image_size`; rescaled by 1/255
//!   and normalized (mean = std = 0.5 for SmolVLM2). A frame already at that square size is not
//!   resampled. The text: the conversation goes through transformers' own video chat template
//!   (`DEFAULT_CHAT_TEMPLATE`, which has a `<video>` branch; the checkpoint's template has none),
//!   then `<video>` becomes "You are provided the following series of {N as words} frames from a
//!   {H:MM:SS} [H:MM:SS] video.\n", one "\nFrame from MM:SS:" + image tokens per frame, and "\n\n".
//! * **Image** (`SmolVLMImageProcessor`): the longest edge is resized to `size.longest_edge`, then
//!   both sides up to multiples of `max_image_size`; with `do_image_splitting` the image is cut
//!   into `rows x cols` square crops (row-major) followed by the whole image resized to the square,
//!   and `<image>` becomes `<fake_token_around_image><row_r_col_c><image>*n ...` per crop plus the
//!   global image's tokens.
//! * **Tokens**: the `tokenizers` crate on the checkpoint's `tokenizer.json`; special tokens are not
//!   added when the prompt already starts with the BOS token (as `apply_chat_template` does).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use tokenizers::Tokenizer;
use vidlm_kernels::preprocess::{resize_rgb24, Filter, NormOrder, Normalize};

use crate::chat_template::ChatTemplate;
use crate::{Checkpoint, FramePixels, PixelData, PixelStep};
use crate::{ModelError, VideoFrame};

/// transformers' chat template for SmolVLM conversations that hold a video
/// (`processing_smolvlm.DEFAULT_CHAT_TEMPLATE`); used instead of the checkpoint's template for video
/// prompts, as `SmolVLMProcessor.apply_chat_template` does.
pub const VIDEO_CHAT_TEMPLATE: &str = "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

/// The largest side transformers lets an image grow to (`MAX_IMAGE_SIZE`).
const MAX_IMAGE_SIZE: usize = 4096;

/// The placeholder the video chat template writes for a video.
const VIDEO_TOKEN: &str = "<video>";

/// A prompt ready for the model.
#[derive(Debug, Clone)]
pub struct ProcessedInput {
    /// The chat template's output, before `<image>` / `<video>` placeholders were expanded.
    pub prompt: String,
    /// The text that was tokenized (placeholders expanded into image tokens and frame captions).
    pub text: String,
    /// Token ids of `text`.
    pub input_ids: Vec<u32>,
    /// `true` where `input_ids` holds the image token (the positions the connector's output fills,
    /// `image_seq_len` per image, images in the order of `pixel_values`).
    pub image_token_mask: Vec<bool>,
    /// Pixel values, `[n_images, 3, height, width]` row-major (empty for a text-only prompt).
    pub pixel_values: Vec<f32>,
    /// Shape of `pixel_values`: `[n_images, 3, height, width]` (`n_images` = 0 for text only).
    pub pixel_shape: [usize; 4],
    /// For image prompts, the `(rows, cols)` crop grid of each input image (`(0, 0)` when it was
    /// not split); empty for video and text prompts.
    pub image_grids: Vec<(usize, usize)>,
}

impl ProcessedInput {
    /// Positions of the image tokens in `input_ids`.
    pub fn image_positions(&self) -> Vec<usize> {
        self.image_token_mask
            .iter()
            .enumerate()
            .filter(|(_, m)| **m)
            .map(|(i, _)| i)
            .collect()
    }

    /// Number of images (video frames, crops and global images) in `pixel_values`.
    pub fn num_images(&self) -> usize {
        self.pixel_shape[0]
    }

    /// The pixel values as a `[n_images, 3, height, width]` f32 tensor on `device`.
    ///
    /// # Errors
    /// [`ModelError::Input`] for a text-only prompt (no images); [`ModelError::Candle`] if the
    /// tensor cannot be made.
    pub fn pixel_values_tensor(&self, device: &Device) -> Result<Tensor, ModelError> {
        if self.pixel_shape[0] == 0 {
            return Err(ModelError::Input("the prompt has no images".into()));
        }
        Ok(Tensor::from_slice(
            &self.pixel_values,
            &self.pixel_shape[..],
            device,
        )?)
    }

    /// The token ids as a `[1, seq_len]` u32 tensor on `device`.
    ///
    /// # Errors
    /// [`ModelError::Candle`] if the tensor cannot be made.
    pub fn input_ids_tensor(&self, device: &Device) -> Result<Tensor, ModelError> {
        Ok(Tensor::from_slice(
            &self.input_ids,
            (1, self.input_ids.len()),
            device,
        )?)
    }
}

/// The image or video half of the processor settings (`processor_config.json`'s
/// `image_processor` / `video_processor`, or the older `preprocessor_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct PixelConfig {
    /// Resize at all.
    pub do_resize: bool,
    /// First resize: the longest edge goes to this (aspect kept)...
    pub longest_edge: Option<usize>,
    /// ...or to exactly this `(height, width)`.
    pub size_hw: Option<(usize, usize)>,
    /// The vision encoder's square input side (`max_image_size.longest_edge`).
    pub max_image_size: usize,
    /// Split large images into crops plus a global image (image processor only).
    pub do_image_splitting: bool,
    /// Resampling filter (`resample`: 1 LANCZOS, 2 BILINEAR, 3 BICUBIC).
    pub filter: Filter,
    /// Multiply by `rescale_factor`.
    pub do_rescale: bool,
    /// Usually 1/255.
    pub rescale_factor: f64,
    /// Subtract `image_mean` and divide by `image_std`.
    pub do_normalize: bool,
    /// Per-channel mean.
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation.
    pub image_std: [f32; 3],
}

impl PixelConfig {
    /// The rescale and normalization, in the rounding of transformers' torchvision processors
    /// (SmolVLM2's reference): the flags that are off become the identity.
    pub fn normalize(&self) -> Normalize {
        Normalize {
            rescale: if self.do_rescale {
                self.rescale_factor
            } else {
                1.0
            },
            mean: if self.do_normalize {
                self.image_mean
            } else {
                [0.0; 3]
            },
            std: if self.do_normalize {
                self.image_std
            } else {
                [1.0; 3]
            },
            order: NormOrder::Fused,
        }
    }

    /// The 3 x 256 table of [`PixelConfig::normalize`].
    ///
    /// # Errors
    /// [`ModelError::Invalid`] for a zero or non-finite std or rescale factor.
    pub fn normalize_table(&self) -> Result<Vec<f32>, ModelError> {
        self.normalize()
            .table()
            .map_err(|e| ModelError::Invalid(format!("processor normalization: {e}")))
    }

    /// Reads the settings from one processor config object. `video` selects the video processor's
    /// rules (`video_sampling.video_size` overrides `size`).
    ///
    /// # Errors
    /// [`ModelError::Invalid`] for an unsupported `resample` or a malformed size.
    pub fn from_json(v: &Value, video: bool) -> Result<Self, ModelError> {
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(true);
        let mut size = v.get("size").cloned();
        if video {
            if let Some(s) = v.pointer("/video_sampling/video_size") {
                size = Some(s.clone());
            }
        }
        let (longest_edge, size_hw) = match &size {
            None => (Some(4 * 364), None),
            Some(s) => {
                let get = |k: &str| s.get(k).and_then(Value::as_u64).map(|x| x as usize);
                if let Some(l) = get("longest_edge") {
                    (Some(l), None)
                } else if let (Some(h), Some(w)) = (get("height"), get("width")) {
                    (None, Some((h, w)))
                } else {
                    return Err(ModelError::Invalid(format!(
                        "processor size {s} has neither longest_edge nor height and width"
                    )));
                }
            }
        };
        let max_image_size = v
            .pointer("/max_image_size/longest_edge")
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .unwrap_or(364);
        let filter = match v.get("resample").and_then(Value::as_u64).unwrap_or(1) {
            1 => Filter::Lanczos3,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            other => {
                return Err(ModelError::Invalid(format!(
                    "processor resample {other} is not supported (1 LANCZOS, 2 BILINEAR, 3 BICUBIC)"
                )))
            }
        };
        let triple = |k: &str| -> Result<[f32; 3], ModelError> {
            match v.get(k) {
                None => Ok([0.5; 3]),
                Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(0.5) as f32; 3]),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x.as_f64().ok_or_else(|| {
                            ModelError::Invalid(format!("processor {k} is not numeric: {x}"))
                        })? as f32;
                    }
                    Ok(out)
                }
                Some(other) => Err(ModelError::Invalid(format!(
                    "processor {k} is malformed: {other}"
                ))),
            }
        };
        let cfg = Self {
            do_resize: flag("do_resize"),
            longest_edge,
            size_hw,
            max_image_size,
            do_image_splitting: !video && flag("do_image_splitting"),
            filter,
            do_rescale: flag("do_rescale"),
            rescale_factor: v
                .get("rescale_factor")
                .and_then(Value::as_f64)
                .unwrap_or(1.0 / 255.0),
            do_normalize: flag("do_normalize"),
            image_mean: triple("image_mean")?,
            image_std: triple("image_std")?,
        };
        if cfg.max_image_size == 0 || cfg.longest_edge == Some(0) {
            return Err(ModelError::Invalid(
                "processor sizes must be positive".into(),
            ));
        }
        if cfg.do_normalize && cfg.image_std.contains(&0.0) {
            return Err(ModelError::Invalid("processor image_std has a zero".into()));
        }
        Ok(cfg)
    }
}

/// What [`SmolVlmProcessor::from_parts`] builds the processor from.
#[derive(Debug)]
pub struct ProcessorParts {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// Where the tokenizer was read from (named in errors).
    pub source: std::path::PathBuf,
    /// `tokenizer_config.json`'s object: the special tokens' names (`image_token`,
    /// `end_of_utterance_token`, `bos_token`, `eos_token`, ...); missing ones take SmolVLM's.
    pub tokenizer_config: Value,
    /// Image-mode pixel settings.
    pub image_cfg: PixelConfig,
    /// Video-mode pixel settings.
    pub video_cfg: PixelConfig,
    /// Visual tokens per image.
    pub image_seq_len: usize,
    /// Stop ids beyond `<end_of_utterance>` and the eos token (`generation_config.json`'s).
    pub extra_eos: Vec<u32>,
    /// The chat template's source.
    pub chat_template: String,
    /// Idefics3 (SmolVLM v1) has no video processor: a clip's frames go in as images, one global
    /// view each, in the checkpoint's own chat template (see [`SmolVlmProcessor::frames_as_images`]).
    pub frames_as_images: bool,
}

/// SmolVLM2's processor (see the module docs).
#[derive(Debug)]
pub struct SmolVlmProcessor {
    tokenizer: Tokenizer,
    chat_template: ChatTemplate,
    video_template: ChatTemplate,
    template_vars: serde_json::Map<String, Value>,
    image_cfg: PixelConfig,
    video_cfg: PixelConfig,
    /// `image_cfg`'s and `video_cfg`'s normalization tables, made once.
    image_norm: Vec<f32>,
    video_norm: Vec<f32>,
    image_seq_len: usize,
    fake_image_token: String,
    image_token: String,
    global_image_token: String,
    image_token_id: u32,
    bos_token: Option<String>,
    stop_token_ids: Vec<u32>,
    frames_as_images: bool,
}

impl SmolVlmProcessor {
    /// Loads the processor of a SmolVLM / SmolVLM2 checkpoint directory: `tokenizer.json`,
    /// `tokenizer_config.json`, `processor_config.json` (transformers 5: image and video processor
    /// settings inside it; transformers 4: `preprocessor_config.json` and optionally
    /// `video_preprocessor_config.json` next to it), the chat template (`chat_template.jinja`,
    /// `chat_template.json`, or the configs' `chat_template` key), and `generation_config.json`'s
    /// eos ids when present.
    ///
    /// # Errors
    /// [`ModelError::File`] naming a missing or unreadable file; [`ModelError::Invalid`] when a
    /// setting is unusable or a special token is not in the vocabulary.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, ModelError> {
        Self::from_checkpoint(&Checkpoint::new(dir.as_ref()))
    }

    /// [`Self::from_dir`] from a [`Checkpoint`] (its JSON files read once for the whole load).
    ///
    /// # Errors
    /// As [`Self::from_dir`].
    pub fn from_checkpoint(ckpt: &Checkpoint) -> Result<Self, ModelError> {
        let dir = ckpt.dir();
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(missing(tok_path));
        }
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| ModelError::File {
            path: tok_path.clone(),
            reason: e.to_string(),
        })?;
        let tok_cfg = ckpt.json("tokenizer_config.json")?.unwrap_or(json!({}));
        let proc_cfg = ckpt.json("processor_config.json")?.unwrap_or(json!({}));

        // transformers 5 keeps both sub-processors in processor_config.json; 4.x checkpoints (the
        // hub's SmolVLM2) have preprocessor_config.json, whose `video_sampling` the video
        // processor also reads when there is no video_preprocessor_config.json.
        let pre_path = dir.join("preprocessor_config.json");
        let image_json = match proc_cfg.get("image_processor") {
            Some(v) => v.clone(),
            None => ckpt.json("preprocessor_config.json")?.ok_or_else(|| {
                missing_with(&pre_path, "no image processor settings (neither processor_config.json's image_processor nor this file)")
            })?,
        };
        let video_json = match proc_cfg.get("video_processor") {
            Some(v) => v.clone(),
            None => match ckpt.json("video_preprocessor_config.json")? {
                Some(v) => v,
                None => image_json.clone(),
            },
        };
        let image_cfg = PixelConfig::from_json(&image_json, false)?;
        let video_cfg = PixelConfig::from_json(&video_json, true)?;

        let image_seq_len = match proc_cfg.get("image_seq_len").and_then(Value::as_u64) {
            Some(n) => n as usize,
            None => image_seq_len_from_config(ckpt)?.unwrap_or(169),
        };
        let mut extra_eos = Vec::new();
        if let Some(gen) = ckpt.json("generation_config.json")? {
            match gen.get("eos_token_id") {
                Some(Value::Number(n)) => extra_eos.extend(n.as_u64().map(|id| id as u32)),
                Some(Value::Array(a)) => {
                    extra_eos.extend(a.iter().filter_map(Value::as_u64).map(|id| id as u32))
                }
                _ => {}
            }
        }
        let chat_template = ckpt.chat_template()?.ok_or_else(|| {
            missing_with(
                &dir.join("chat_template.jinja"),
                "no chat template in the model directory",
            )
        })?;
        Self::from_parts(ProcessorParts {
            tokenizer,
            source: tok_path,
            tokenizer_config: tok_cfg,
            image_cfg,
            video_cfg,
            image_seq_len,
            extra_eos,
            frames_as_images: ckpt.model_type()?.as_deref() == Some("idefics3"),
            chat_template,
        })
    }

    /// The processor from its parts, however the model was stored (a checkpoint directory, or a
    /// GGUF file's metadata).
    ///
    /// # Errors
    /// [`ModelError::Invalid`] when a special token is not in the vocabulary or the chat template
    /// does not parse.
    pub fn from_parts(parts: ProcessorParts) -> Result<Self, ModelError> {
        let ProcessorParts {
            tokenizer,
            source: tok_path,
            tokenizer_config: tok_cfg,
            image_cfg,
            video_cfg,
            image_seq_len,
            extra_eos,
            chat_template: source,
            frames_as_images,
        } = parts;
        let named = |k: &str, default: &str| -> String {
            tok_cfg
                .get(k)
                .or_else(|| tok_cfg.pointer(&format!("/extra_special_tokens/{k}")))
                .and_then(token_content)
                .unwrap_or_else(|| default.to_string())
        };
        let fake_image_token = named("fake_image_token", "<fake_token_around_image>");
        let image_token = named("image_token", "<image>");
        let global_image_token = named("global_image_token", "<global-img>");
        let end_of_utterance = named("end_of_utterance_token", "<end_of_utterance>");
        let token_id = |t: &str| -> Result<u32, ModelError> {
            tokenizer.token_to_id(t).ok_or_else(|| {
                ModelError::Invalid(format!(
                    "{}: special token {t} is not in the vocabulary",
                    tok_path.display()
                ))
            })
        };
        let image_token_id = token_id(&image_token)?;
        token_id(&fake_image_token)?;
        token_id(&global_image_token)?;

        let mut stop_token_ids = Vec::new();
        let mut push = |id: u32| {
            if !stop_token_ids.contains(&id) {
                stop_token_ids.push(id);
            }
        };
        if let Some(id) = tokenizer.token_to_id(&end_of_utterance) {
            push(id);
        }
        if let Some(eos) = tok_cfg.get("eos_token").and_then(token_content) {
            if let Some(id) = tokenizer.token_to_id(&eos) {
                push(id);
            }
        }
        extra_eos.into_iter().for_each(&mut push);

        let mut template_vars = serde_json::Map::new();
        for k in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            if let Some(t) = tok_cfg.get(k).and_then(token_content) {
                template_vars.insert(k.into(), Value::String(t));
            }
        }
        if let Some(list) = tok_cfg
            .get("additional_special_tokens")
            .and_then(Value::as_array)
        {
            let list: Vec<Value> = list
                .iter()
                .filter_map(token_content)
                .map(Value::String)
                .collect();
            template_vars.insert("additional_special_tokens".into(), Value::Array(list));
        }
        let bos_token = template_vars
            .get("bos_token")
            .and_then(Value::as_str)
            .map(str::to_owned);

        Ok(Self {
            tokenizer,
            chat_template: ChatTemplate::new(&source)?,
            video_template: ChatTemplate::new(VIDEO_CHAT_TEMPLATE)?,
            template_vars,
            image_norm: image_cfg.normalize_table()?,
            video_norm: video_cfg.normalize_table()?,
            image_cfg,
            video_cfg,
            image_seq_len,
            fake_image_token,
            image_token,
            global_image_token,
            image_token_id,
            bos_token,
            stop_token_ids,
            frames_as_images,
        })
    }

    /// A video prompt: `frames` (in order, with their timestamps) and `question`, as one user turn
    /// followed by the assistant's generation prompt. The video's duration is unknown here, so, as
    /// transformers does then, the prompt gives `int(last timestamp)` as the duration; see
    /// [`Self::video_prompt_with_duration`].
    ///
    /// # Errors
    /// [`ModelError::Input`] for no frames, a malformed frame (size / buffer mismatch), a negative
    /// or non-finite timestamp, or a question holding an image placeholder; others from the
    /// tokenizer and template.
    pub fn video_prompt(
        &self,
        frames: &[VideoFrame],
        question: &str,
    ) -> Result<ProcessedInput, ModelError> {
        self.video_prompt_with_duration(frames, question, None)
    }

    /// [`Self::video_prompt`] with the video's duration in seconds (written as `H:MM:SS`, truncated
    /// to whole seconds), as transformers does when the video metadata has a duration.
    ///
    /// # Errors
    /// As [`Self::video_prompt`], and [`ModelError::Input`] for a negative or non-finite duration.
    pub fn video_prompt_with_duration(
        &self,
        frames: &[VideoFrame],
        question: &str,
        duration: Option<f64>,
    ) -> Result<ProcessedInput, ModelError> {
        let timestamps: Vec<f64> = frames.iter().map(|f| f.pts).collect();
        let mut out = self.video_prompt_for_timestamps(&timestamps, question, duration)?;
        let (pixel_values, pixel_shape) = self.video_pixels(frames)?;
        out.pixel_values = pixel_values;
        out.pixel_shape = pixel_shape;
        Ok(out)
    }

    /// The text half of a video prompt, for frames (or pooled frame groups) whose visual tokens
    /// are computed elsewhere: one `<fake><global-img><image>*image_seq_len<fake>` block per
    /// timestamp, in order. `pixel_values` is empty and `pixel_shape[0]` is 0; the image token
    /// count is `timestamps.len() * image_seq_len`.
    ///
    /// # Errors
    /// [`ModelError::Input`] for no timestamps, a negative or non-finite timestamp or duration, or
    /// a question holding a placeholder; others from the tokenizer and template.
    pub fn video_prompt_for_timestamps(
        &self,
        timestamps: &[f64],
        question: &str,
        duration: Option<f64>,
    ) -> Result<ProcessedInput, ModelError> {
        let groups: Vec<(f64, usize)> = timestamps
            .iter()
            .map(|&t| (t, self.image_seq_len))
            .collect();
        self.video_prompt_for_groups(&groups, question, duration)
    }

    /// [`Self::video_prompt_for_timestamps`] for frame groups of any token count (pooled frames
    /// carry fewer tokens than `image_seq_len`): each `(time, tokens)` becomes `Frame from MM:SS:`
    /// and `<fake_token_around_image><global-img>`, `tokens` image tokens, `<fake_token_around_image>`.
    /// `duration` is the video's length for the intro line, truncated to whole seconds as
    /// transformers does; `None` writes the last group's time instead (transformers' fallback when
    /// the video metadata has no duration).
    ///
    /// # Errors
    /// As [`Self::video_prompt_for_timestamps`].
    pub fn video_prompt_for_groups(
        &self,
        groups: &[(f64, usize)],
        question: &str,
        duration: Option<f64>,
    ) -> Result<ProcessedInput, ModelError> {
        if groups.is_empty() {
            return Err(ModelError::Input(
                "a video prompt needs at least one frame".into(),
            ));
        }
        self.check_question(question)?;
        for (i, (t, _)) in groups.iter().enumerate() {
            if !t.is_finite() || *t < 0.0 {
                return Err(ModelError::Input(format!(
                    "frame {i}: timestamp {t} is not a time"
                )));
            }
        }
        if let Some(d) = duration {
            if !d.is_finite() || d < 0.0 {
                return Err(ModelError::Input(format!(
                    "video duration {d} is not a time"
                )));
            }
        }
        if self.frames_as_images {
            return self.frames_prompt_for_groups(groups, question);
        }
        let messages = json!([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]);
        let prompt = self
            .video_template
            .render(&messages, true, &self.template_vars)?;
        let expansion = self.video_expansion(groups, duration);
        let pieces: Vec<&str> = prompt.split(VIDEO_TOKEN).collect();
        if pieces.len() != 2 {
            return Err(ModelError::Input(format!(
                "the video chat template produced {} {VIDEO_TOKEN} placeholders, expected 1",
                pieces.len() - 1
            )));
        }
        let text = format!("{}{}{}", pieces[0], expansion, pieces[1]);
        let side = self.video_cfg.max_image_size;
        let tokens = groups.iter().map(|(_, n)| n).sum();
        self.finish(
            prompt,
            text,
            Vec::new(),
            [0, 3, side, side],
            Vec::new(),
            tokens,
        )
    }

    /// True for a processor without a video half (Idefics3, SmolVLM v1): a clip's frames are
    /// prompted as images, each one global `max_image_size` view (transformers' image processor
    /// with `do_image_splitting=False`), in one user turn of the checkpoint's chat template; frame
    /// times are not written (the model was not trained with them).
    pub fn frames_as_images(&self) -> bool {
        self.frames_as_images
    }

    /// One user turn of `n` images and `question` in the checkpoint's chat template, checked to
    /// hold exactly `n` image placeholders.
    fn images_turn(&self, n: usize, question: &str) -> Result<String, ModelError> {
        let mut content: Vec<Value> = (0..n).map(|_| json!({"type": "image"})).collect();
        content.push(json!({"type": "text", "text": question}));
        let messages = json!([{"role": "user", "content": content}]);
        let prompt = self
            .chat_template
            .render(&messages, true, &self.template_vars)?;
        let found = prompt.matches(self.image_token.as_str()).count();
        if found != n {
            return Err(ModelError::Input(format!(
                "the chat template produced {found} {} placeholders for {n} images",
                self.image_token
            )));
        }
        Ok(prompt)
    }

    /// [`Self::video_prompt_for_groups`] for a processor whose frames go in as images.
    fn frames_prompt_for_groups(
        &self,
        groups: &[(f64, usize)],
        question: &str,
    ) -> Result<ProcessedInput, ModelError> {
        let prompt = self.images_turn(groups.len(), question)?;
        let pieces: Vec<&str> = prompt.split(self.image_token.as_str()).collect();
        let mut text = String::from(pieces[0]);
        for ((_, tokens), rest) in groups.iter().zip(&pieces[1..]) {
            text.push_str(&self.global_image_string(*tokens));
            text.push_str(rest);
        }
        let side = self.video_cfg.max_image_size;
        let tokens = groups.iter().map(|(_, n)| n).sum();
        self.finish(
            prompt,
            text,
            Vec::new(),
            [0, 3, side, side],
            Vec::new(),
            tokens,
        )
    }

    /// The pixel values of video frames as the video processor makes them:
    /// `[frames.len(), 3, max_image_size, max_image_size]` f32, row-major (see the module docs).
    ///
    /// # Errors
    /// [`ModelError::Input`] for no frames or a malformed frame (size / buffer mismatch).
    pub fn video_pixels(
        &self,
        frames: &[VideoFrame],
    ) -> Result<(Vec<f32>, [usize; 4]), ModelError> {
        if frames.is_empty() {
            return Err(ModelError::Input(
                "a video prompt needs at least one frame".into(),
            ));
        }
        for (i, f) in frames.iter().enumerate() {
            check_frame(f, i)?;
        }
        let side = self.video_cfg.max_image_size;
        let mut pixel_values = Vec::with_capacity(frames.len() * 3 * side * side);
        for f in frames {
            let rgb = self.video_frame_pixels(f)?;
            normalize_into(&rgb, &self.video_norm, &mut pixel_values);
        }
        Ok((pixel_values, [frames.len(), 3, side, side]))
    }

    /// One video frame's pixel values as [`Self::video_pixels`] makes them, `[3, S, S]`.
    ///
    /// # Errors
    /// [`ModelError::Input`] for a malformed frame.
    pub fn video_frame_values(&self, frame: &VideoFrame) -> Result<FramePixels, ModelError> {
        check_frame(frame, 0)?;
        let side = self.video_cfg.max_image_size;
        let mut values = Vec::with_capacity(3 * side * side);
        let rgb = self.video_frame_pixels(frame)?;
        normalize_into(&rgb, &self.video_norm, &mut values);
        Ok(FramePixels {
            pts: frame.pts,
            data: PixelData::Planes {
                values,
                shape: [3, side, side],
            },
        })
    }

    /// An image prompt: `images` (their `timestamp` is ignored) then `question`, as one user turn
    /// with the checkpoint's chat template. Each image is split into crops plus a global image when
    /// the processor config says so.
    ///
    /// # Errors
    /// [`ModelError::Input`] for no images, a malformed image, or a question holding an image
    /// placeholder; others from the tokenizer and template.
    pub fn image_prompt(
        &self,
        images: &[VideoFrame],
        question: &str,
    ) -> Result<ProcessedInput, ModelError> {
        if images.is_empty() {
            return Err(ModelError::Input(
                "an image prompt needs at least one image".into(),
            ));
        }
        self.check_question(question)?;
        let prompt = self.images_turn(images.len(), question)?;
        let pieces: Vec<&str> = prompt.split(self.image_token.as_str()).collect();
        let side = self.image_cfg.max_image_size;
        let mut pixel_values = Vec::new();
        let mut grids = Vec::with_capacity(images.len());
        let mut text = String::from(pieces[0]);
        let mut n_images = 0;
        for (i, (img, rest)) in images.iter().zip(&pieces[1..]).enumerate() {
            check_frame(img, i)?;
            let (tiles, rows, cols) = self.image_tiles(img)?;
            for t in &tiles {
                normalize_into(t, &self.image_norm, &mut pixel_values);
            }
            n_images += tiles.len();
            grids.push((rows, cols));
            text.push_str(&self.image_expansion(rows, cols));
            text.push_str(rest);
        }
        self.finish(
            prompt,
            text,
            pixel_values,
            [n_images, 3, side, side],
            grids,
            n_images * self.image_seq_len,
        )
    }

    /// A text-only prompt with the checkpoint's chat template.
    ///
    /// # Errors
    /// [`ModelError::Input`] for a question holding an image placeholder; others from the
    /// tokenizer and template.
    pub fn text_prompt(&self, question: &str) -> Result<ProcessedInput, ModelError> {
        self.check_question(question)?;
        let messages = json!([{"role": "user", "content": [{"type": "text", "text": question}]}]);
        let prompt = self
            .chat_template
            .render(&messages, true, &self.template_vars)?;
        let side = self.image_cfg.max_image_size;
        self.finish(
            prompt.clone(),
            prompt,
            Vec::new(),
            [0, 3, side, side],
            Vec::new(),
            0,
        )
    }

    /// Renders `messages` (JSON, transformers' conversation format) with the checkpoint's chat
    /// template, or with the video template when a message holds a `{"type": "video"}` part (as
    /// transformers does); placeholders are not expanded.
    ///
    /// # Errors
    /// [`ModelError::Input`] when rendering fails.
    pub fn apply_chat_template(
        &self,
        messages: &Value,
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let has_video = messages.as_array().is_some_and(|ms| {
            ms.iter().any(|m| {
                m.get("content")
                    .and_then(Value::as_array)
                    .is_some_and(|parts| {
                        parts
                            .iter()
                            .any(|p| p.get("type").and_then(Value::as_str) == Some("video"))
                    })
            })
        });
        let t = if has_video {
            &self.video_template
        } else {
            &self.chat_template
        };
        t.render(messages, add_generation_prompt, &self.template_vars)
    }

    /// Decodes token ids to text (`skip_special`: drop special tokens, as transformers'
    /// `skip_special_tokens=True`).
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] if an id is out of the vocabulary.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, ModelError> {
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Tokenizes `text` exactly as the processor does for its prompts (no special tokens added
    /// when `text` already starts with the BOS token).
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] when the tokenizer fails.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let add_special = !self
            .bos_token
            .as_deref()
            .is_some_and(|b| !b.is_empty() && text.starts_with(b));
        let enc = self
            .tokenizer
            .encode(text, add_special)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids that end generation: `<end_of_utterance>`, the tokenizer's eos and
    /// `generation_config.json`'s `eos_token_id`s.
    pub fn stop_token_ids(&self) -> &[u32] {
        &self.stop_token_ids
    }

    /// The `<image>` token's id (the positions the vision features fill).
    pub fn image_token_id(&self) -> u32 {
        self.image_token_id
    }

    /// Image tokens per image (`image_seq_len`).
    pub fn image_seq_len(&self) -> usize {
        self.image_seq_len
    }

    /// Image-processor settings.
    pub fn image_config(&self) -> &PixelConfig {
        &self.image_cfg
    }

    /// Video-processor settings.
    pub fn video_config(&self) -> &PixelConfig {
        &self.video_cfg
    }

    /// The underlying tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn check_question(&self, question: &str) -> Result<(), ModelError> {
        for t in [self.image_token.as_str(), VIDEO_TOKEN] {
            if question.contains(t) {
                return Err(ModelError::Input(format!(
                    "the question may not contain the placeholder {t}"
                )));
            }
        }
        Ok(())
    }

    fn finish(
        &self,
        prompt: String,
        text: String,
        pixel_values: Vec<f32>,
        pixel_shape: [usize; 4],
        image_grids: Vec<(usize, usize)>,
        image_tokens: usize,
    ) -> Result<ProcessedInput, ModelError> {
        let input_ids = self.encode(&text)?;
        let image_token_mask: Vec<bool> = input_ids
            .iter()
            .map(|&id| id == self.image_token_id)
            .collect();
        let n_tokens = image_token_mask.iter().filter(|m| **m).count();
        if n_tokens != image_tokens {
            return Err(ModelError::Input(format!(
                "the prompt has {n_tokens} image tokens where its images take {image_tokens} (an image token in the text?)"
            )));
        }
        Ok(ProcessedInput {
            prompt,
            text,
            input_ids,
            image_token_mask,
            pixel_values,
            pixel_shape,
            image_grids,
        })
    }

    /// `<fake><global-img><image>*n<fake>` (one unsplit image or video frame).
    /// One global view of `tokens` image tokens between the fake tokens.
    fn global_image_string(&self, tokens: usize) -> String {
        let mut s = String::new();
        s.push_str(&self.fake_image_token);
        s.push_str(&self.global_image_token);
        s.push_str(&self.image_token.repeat(tokens));
        s.push_str(&self.fake_image_token);
        s
    }

    fn image_expansion(&self, rows: usize, cols: usize) -> String {
        if rows == 0 && cols == 0 {
            return self.global_image_string(self.image_seq_len);
        }
        let tokens = self.image_token.repeat(self.image_seq_len);
        let mut s = String::new();
        for r in 1..=rows {
            for c in 1..=cols {
                s.push_str(&self.fake_image_token);
                s.push_str(&format!("<row_{r}_col_{c}>"));
                s.push_str(&tokens);
            }
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.global_image_string(self.image_seq_len));
        s
    }

    /// transformers' `replace_video_token`: the intro line (`int(duration)`, else `int` of the last
    /// frame's time), then one timestamped image block per group.
    fn video_expansion(&self, groups: &[(f64, usize)], duration: Option<f64>) -> String {
        let last = groups.last().map_or(0.0, |(t, _)| *t);
        let seconds = duration.unwrap_or(last).trunc() as u64;
        let mut s = format!(
            "You are provided the following series of {} frames from a {} [H:MM:SS] video.\n",
            num2words(groups.len() as u64),
            timedelta(seconds)
        );
        for &(t, tokens) in groups {
            // Python: int(t // 60), int(t % 60).
            let minutes = (t / 60.0).floor() as u64;
            let secs = (t % 60.0).trunc() as u64;
            s.push_str(&format!("\nFrame from {minutes:02}:{secs:02}:"));
            s.push_str(&self.fake_image_token);
            s.push_str(&self.global_image_token);
            s.push_str(&self.image_token.repeat(tokens));
            s.push_str(&self.fake_image_token);
        }
        s.push_str("\n\n");
        s
    }

    /// One video frame resized as `SmolVLMVideoProcessor.resize` does: to the aspect-kept size,
    /// then to the square `max_image_size` (each resize skipped when the size already matches).
    fn video_frame_pixels<'a>(&self, f: &'a VideoFrame) -> Result<RgbBuf<'a>, ModelError> {
        let cfg = &self.video_cfg;
        if self.frames_as_images {
            // The image processor's path, unsplit (`video_cfg` never splits): one square view.
            let (mut tiles, _, _) = self.image_tiles_with(f, cfg)?;
            return tiles
                .pop()
                .ok_or_else(|| ModelError::Input("the image processor made no view".into()));
        }
        let mut img = RgbBuf {
            w: f.width as usize,
            h: f.height as usize,
            data: Cow::Borrowed(&f.rgb[..]),
        };
        if !cfg.do_resize {
            return Ok(img);
        }
        let (h, w) = match (cfg.longest_edge, cfg.size_hw) {
            (Some(l), _) => rescale_to_max_len(img.h, img.w, l.min(MAX_IMAGE_SIZE)),
            (None, Some(hw)) => hw,
            (None, None) => (img.h, img.w),
        };
        img = img.resize(w, h, cfg.filter)?;
        img.resize(cfg.max_image_size, cfg.max_image_size, cfg.filter)
    }

    /// One image as `SmolVLMImageProcessor` prepares it: the tiles (crops row-major, then the global
    /// image; or the one squared image) and the crop grid.
    fn image_tiles<'a>(
        &self,
        f: &'a VideoFrame,
    ) -> Result<(Vec<RgbBuf<'a>>, usize, usize), ModelError> {
        self.image_tiles_with(f, &self.image_cfg)
    }

    /// [`Self::image_tiles`] with the settings `cfg`.
    fn image_tiles_with<'a>(
        &self,
        f: &'a VideoFrame,
        cfg: &PixelConfig,
    ) -> Result<(Vec<RgbBuf<'a>>, usize, usize), ModelError> {
        let m = cfg.max_image_size;
        let mut img = RgbBuf {
            w: f.width as usize,
            h: f.height as usize,
            data: Cow::Borrowed(&f.rgb[..]),
        };
        if cfg.do_resize {
            let (h, w) = match (cfg.longest_edge, cfg.size_hw) {
                (Some(l), _) => {
                    let (h, w) = rescale_to_max_len(img.h, img.w, l);
                    scale_below_upper_bound(h, w, MAX_IMAGE_SIZE)
                }
                (None, Some(hw)) => hw,
                (None, None) => (img.h, img.w),
            };
            img = img.resize(w, h, cfg.filter)?;
        }
        if !cfg.do_image_splitting {
            return Ok((vec![img.resize(m, m, cfg.filter)?], 0, 0));
        }
        let (h, w) = resize_for_vision_encoder(img.h, img.w, m);
        if h == 0 || w == 0 {
            return Err(ModelError::Input(format!(
                "image {}x{} is too thin to split",
                f.width, f.height
            )));
        }
        img = img.resize(w, h, cfg.filter)?;
        if img.h <= m && img.w <= m {
            return Ok((vec![img], 0, 0));
        }
        let (rows, cols) = (img.h.div_ceil(m), img.w.div_ceil(m));
        let mut tiles = Vec::with_capacity(rows * cols + 1);
        for r in 0..rows {
            for c in 0..cols {
                tiles.push(img.crop(c * m, r * m, m, m));
            }
        }
        tiles.push(img.resize(m, m, cfg.filter)?);
        Ok((tiles, rows, cols))
    }
}

/// Packed RGB24 with its size (borrowing the caller's frame until a resize makes a new one).
struct RgbBuf<'a> {
    w: usize,
    h: usize,
    data: Cow<'a, [u8]>,
}

impl RgbBuf<'_> {
    /// Resizes with the kernels crate's Pillow-exact resampler; same size is a no-op, as in
    /// torchvision.
    fn resize(self, w: usize, h: usize, filter: Filter) -> Result<Self, ModelError> {
        if (w, h) == (self.w, self.h) {
            return Ok(self);
        }
        let mut out = vec![0u8; w * h * 3];
        resize_rgb24(
            &self.data,
            self.w as u32,
            self.h as u32,
            w as u32,
            h as u32,
            filter,
            &mut out,
        )
        .map_err(|e| ModelError::Input(format!("resize {}x{} -> {w}x{h}: {e}", self.w, self.h)))?;
        Ok(Self {
            w,
            h,
            data: Cow::Owned(out),
        })
    }

    /// The `w x h` window at `(x, y)` (inside the image: the callers' sizes are multiples).
    fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> Self {
        let mut data = Vec::with_capacity(w * h * 3);
        for row in y..y + h {
            let start = (row * self.w + x) * 3;
            data.extend_from_slice(&self.data[start..start + w * 3]);
        }
        Self {
            w,
            h,
            data: Cow::Owned(data),
        }
    }
}

/// Appends `img` as planar CHW f32, rescaled and normalized by the config's [`Normalize`] table.
fn normalize_into(img: &RgbBuf, table: &[f32], out: &mut Vec<f32>) {
    let plane = img.w * img.h;
    for (c, lut) in table.chunks_exact(256).enumerate() {
        let src = img.data.iter().skip(c).step_by(3).take(plane);
        out.extend(src.map(|&v| lut[v as usize]));
    }
}

fn check_frame(f: &VideoFrame, i: usize) -> Result<(), ModelError> {
    let need = f.width as usize * f.height as usize * 3;
    if f.width == 0 || f.height == 0 || f.rgb.len() != need {
        return Err(ModelError::Input(format!(
            "image {i}: {}x{} RGB24 needs {need} bytes, got {}",
            f.width,
            f.height,
            f.rgb.len()
        )));
    }
    Ok(())
}

/// `(height, width)` with the longest edge set to `max_len` and the other side scaled, truncated
/// and rounded up to even (transformers' `_resize_output_size_rescale_to_max_len`).
fn rescale_to_max_len(height: usize, width: usize, max_len: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let (mut h, mut w) = (height, width);
    if w >= h {
        w = max_len;
        h = (w as f64 / aspect) as usize;
        if h % 2 != 0 {
            h += 1;
        }
    } else {
        h = max_len;
        w = (h as f64 * aspect) as usize;
        if w % 2 != 0 {
            w += 1;
        }
    }
    (h.max(1), w.max(1))
}

/// Shrinks `(height, width)` so neither side exceeds `max_len` (transformers'
/// `_resize_output_size_scale_below_upper_bound`).
fn scale_below_upper_bound(height: usize, width: usize, max_len: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let (mut h, mut w) = (height, width);
    if w >= h && w > max_len {
        w = max_len;
        h = (w as f64 / aspect) as usize;
    } else if h > w && h > max_len {
        h = max_len;
        w = (h as f64 * aspect) as usize;
    }
    (h.max(1), w.max(1))
}

/// Both sides up to multiples of `m`, the short side derived from the aspect ratio first
/// (transformers' `resize_for_vision_encoder`).
fn resize_for_vision_encoder(height: usize, width: usize, m: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    if width >= height {
        let w = width.div_ceil(m) * m;
        let h = ((w as f64 / aspect) as usize).div_ceil(m) * m;
        (h, w)
    } else {
        let h = height.div_ceil(m) * m;
        let w = ((h as f64 * aspect) as usize).div_ceil(m) * m;
        (h, w)
    }
}

/// Python's `str(datetime.timedelta(seconds=s))`: `H:MM:SS`, with `N day(s), ` before it from 24 h.
pub fn timedelta(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rem = seconds % 86_400;
    let hms = format!("{}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    match days {
        0 => hms,
        1 => format!("1 day, {hms}"),
        d => format!("{d} days, {hms}"),
    }
}

/// English cardinal words as Python's `num2words(n)` writes them ("four", "twenty-one",
/// "one hundred and one", "one thousand, two hundred and thirty-four").
///
/// ```
/// use vidlm_models::smolvlm::processor::num2words;
/// assert_eq!(num2words(4), "four");
/// assert_eq!(num2words(64), "sixty-four");
/// assert_eq!(num2words(1001), "one thousand and one");
/// ```
pub fn num2words(n: u64) -> String {
    const SMALL: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = [
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    const SCALES: [(u64, &str); 6] = [
        (1_000_000_000_000_000_000, "quintillion"),
        (1_000_000_000_000_000, "quadrillion"),
        (1_000_000_000_000, "trillion"),
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ];
    if n < 20 {
        return SMALL[n as usize].to_string();
    }
    if n < 100 {
        let (t, u) = (n / 10, n % 10);
        return if u == 0 {
            TENS[t as usize].to_string()
        } else {
            format!("{}-{}", TENS[t as usize], SMALL[u as usize])
        };
    }
    if n < 1000 {
        let (h, r) = (n / 100, n % 100);
        let head = format!("{} hundred", SMALL[h as usize]);
        return if r == 0 {
            head
        } else {
            format!("{head} and {}", num2words(r))
        };
    }
    for (scale, name) in SCALES {
        if n >= scale {
            let (hi, r) = (n / scale, n % scale);
            let head = format!("{} {name}", num2words(hi));
            return match r {
                0 => head,
                r if r < 100 => format!("{head} and {}", num2words(r)),
                r => format!("{head}, {}", num2words(r)),
            };
        }
    }
    unreachable!("every n >= 1000 has a scale")
}

fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn missing(path: PathBuf) -> ModelError {
    ModelError::File {
        path,
        reason: "missing (needed by the SmolVLM processor)".into(),
    }
}

fn missing_with(path: &Path, reason: &str) -> ModelError {
    ModelError::File {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// `image_seq_len` from config.json when the processor config lacks it:
/// `(image_size / patch_size)^2 / scale_factor^2`.
fn image_seq_len_from_config(ckpt: &Checkpoint) -> Result<Option<usize>, ModelError> {
    let Some(cfg) = ckpt.json("config.json")? else {
        return Ok(None);
    };
    let get = |p: &str| cfg.pointer(p).and_then(Value::as_u64).map(|x| x as usize);
    Ok(
        match (
            get("/vision_config/image_size"),
            get("/vision_config/patch_size"),
            get("/scale_factor"),
        ) {
            (Some(i), Some(p), Some(s)) if p > 0 && s > 0 => Some((i / p) * (i / p) / (s * s)),
            _ => None,
        },
    )
}

/// The video pixel step (each frame resized to the encoder's square and normalized on its own),
/// run by the pipeline's preprocess threads.
impl PixelStep for SmolVlmProcessor {
    fn pixels(&self, frame: &VideoFrame, _clip_frames: usize) -> Result<FramePixels, ModelError> {
        self.video_frame_values(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_transformers() {
        // 1280x720 -> longest edge 64: 64 x int(64 / (16/9)) = 36 (even).
        assert_eq!(rescale_to_max_len(720, 1280, 64), (36, 64));
        // Odd short side rounds up to even: 640x479 -> 512 x int(383.2) = 383 -> 384.
        assert_eq!(rescale_to_max_len(479, 640, 512), (384, 512));
        assert_eq!(rescale_to_max_len(1280, 720, 64), (64, 36));
        assert_eq!(resize_for_vision_encoder(108, 192, 64), (128, 192));
        assert_eq!(resize_for_vision_encoder(192, 100, 64), (192, 128));
        assert_eq!(scale_below_upper_bound(5000, 9000, 4096), (2275, 4096));
    }

    #[test]
    fn timedelta_like_python() {
        assert_eq!(timedelta(5), "0:00:05");
        assert_eq!(timedelta(3725), "1:02:05");
        assert_eq!(timedelta(90_000), "1 day, 1:00:00");
        assert_eq!(timedelta(200_000), "2 days, 7:33:20");
    }

    #[test]
    fn num2words_scales() {
        assert_eq!(num2words(0), "zero");
        assert_eq!(num2words(40), "forty");
        assert_eq!(num2words(1100), "one thousand, one hundred");
        assert_eq!(num2words(101_000), "one hundred and one thousand");
        assert_eq!(num2words(1_000_050), "one million and fifty");
    }
}
