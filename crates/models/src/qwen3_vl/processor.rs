//! Qwen3-VL's processor, as transformers 5.24 does it (`Qwen3VLProcessor`, `Qwen3VLVideoProcessor`,
//! `Qwen2VLImageProcessor`): smart-resize to multiples of patch x merge within a pixel budget,
//! bicubic (antialiased) resize, rescale + normalize, temporal patches of 2 frames (the last frame
//! repeated for an odd count; an image is its own pair), the `<N.N seconds>` text before each frame
//! pair (the pair's mean time), `<|vision_start|><|video_pad|>…<|vision_end|>` per pair, the chat
//! template from the checkpoint, and the 3-D M-RoPE position ids (`get_rope_index`).

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;
use vidlm_kernels::preprocess::{
    resize_rgb24_plan, Filter, NormOrder, Normalize, PassOrder, ResizePlan,
};

use crate::ModelError;

/// One image or video processor section (`preprocessor_config.json`,
/// `video_preprocessor_config.json`, or the `image_processor` / `video_processor` entries of
/// `processor_config.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct PixelConfig {
    /// Spatial patch side.
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    /// Frames per temporal patch.
    #[serde(default = "d_two")]
    pub temporal_patch_size: usize,
    /// Patches merged per side.
    #[serde(default = "d_two")]
    pub merge_size: usize,
    /// `shortest_edge` = min pixels, `longest_edge` = max pixels.
    #[serde(default)]
    pub size: Option<SizeConfig>,
    /// 4.x spelling of the min pixel budget.
    #[serde(default)]
    pub min_pixels: Option<usize>,
    /// 4.x spelling of the max pixel budget.
    #[serde(default)]
    pub max_pixels: Option<usize>,
    /// Per-channel mean.
    #[serde(default = "d_half")]
    pub image_mean: [f32; 3],
    /// Per-channel std.
    #[serde(default = "d_half")]
    pub image_std: [f32; 3],
    /// The u8 values' multiplier before normalizing (1/255).
    #[serde(default = "d_rescale")]
    pub rescale_factor: f64,
    /// Frames per second the video processor samples (its default sampling).
    #[serde(default)]
    pub fps: Option<f64>,
    /// Fewest frames sampled.
    #[serde(default)]
    pub min_frames: Option<usize>,
    /// Most frames sampled.
    #[serde(default)]
    pub max_frames: Option<usize>,
}

/// Pixel budget.
#[derive(Debug, Clone, Deserialize)]
pub struct SizeConfig {
    /// Min pixels.
    pub shortest_edge: usize,
    /// Max pixels.
    pub longest_edge: usize,
}

fn d_patch() -> usize {
    16
}
fn d_two() -> usize {
    2
}
fn d_half() -> [f32; 3] {
    [0.5; 3]
}
fn d_rescale() -> f64 {
    1.0 / 255.0
}

impl PixelConfig {
    /// The rescale and normalization, in the rounding of transformers' torchvision processors
    /// (which fold the 1/255 into the mean and std).
    pub fn normalize(&self) -> Normalize {
        Normalize {
            rescale: self.rescale_factor,
            mean: self.image_mean,
            std: self.image_std,
            order: NormOrder::Fused,
        }
    }

    /// (min pixels, max pixels).
    pub fn budget(&self, default: (usize, usize)) -> (usize, usize) {
        let (mut lo, mut hi) = self
            .size
            .as_ref()
            .map(|s| (s.shortest_edge, s.longest_edge))
            .unwrap_or(default);
        if let Some(v) = self.min_pixels {
            lo = v;
        }
        if let Some(v) = self.max_pixels {
            hi = v;
        }
        (lo, hi)
    }
}

impl PixelConfig {
    /// The frame indices transformers' Qwen3-VL video processor samples from a video of
    /// `total_frames` at `video_fps` when it samples itself: `int(total / video_fps * fps)`
    /// frames (fps from the config, default 2) clamped to `[min_frames, max_frames]` (defaults 4
    /// and 768) and to `total_frames`, spread with `np.linspace(0, total - 1, n).round()`.
    ///
    /// ```
    /// use vidlm_models::qwen3_vl::processor::PixelConfig;
    /// let c: PixelConfig = serde_json::from_str(r#"{"fps": 2, "min_frames": 4, "max_frames": 768}"#).unwrap();
    /// assert_eq!(c.sample_frame_indices(132, 25.0), vec![0, 15, 29, 44, 58, 73, 87, 102, 116, 131]);
    /// ```
    pub fn sample_frame_indices(&self, total_frames: usize, video_fps: f64) -> Vec<usize> {
        if total_frames == 0 {
            return Vec::new();
        }
        let fps = self.fps.unwrap_or(2.0);
        let n = (total_frames as f64 / video_fps * fps) as usize;
        let n = n
            .max(self.min_frames.unwrap_or(4))
            .min(self.max_frames.unwrap_or(768))
            .min(total_frames);
        if n <= 1 {
            return vec![0; n];
        }
        let stop = (total_frames - 1) as f64;
        let step = stop / (n - 1) as f64;
        (0..n)
            .map(|i| {
                let v = if i == n - 1 { stop } else { i as f64 * step };
                round_half_even(v) as usize
            })
            .collect()
    }
}

/// The rounding of Python's `round()` (half to even) on an f64.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// The video processor's smart resize: (height, width) multiples of `factor`, near the input's
/// aspect ratio, with `num_frames * h * w` (frames rounded to the temporal factor) inside
/// `[min_pixels, max_pixels]`. `temporal_factor` 1 gives the image processor's rule.
///
/// # Errors
/// [`ModelError::Input`] for an aspect ratio over 200 or fewer frames than `temporal_factor`.
///
/// ```
/// use vidlm_models::qwen3_vl::processor::smart_resize;
/// assert_eq!(smart_resize(1, 720, 1280, 1, 32, 65536, 16777216).unwrap(), (704, 1280));
/// ```
pub fn smart_resize(
    num_frames: usize,
    height: usize,
    width: usize,
    temporal_factor: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize), ModelError> {
    if num_frames < temporal_factor {
        return Err(ModelError::Input(format!(
            "{num_frames} frames, fewer than the temporal patch of {temporal_factor}"
        )));
    }
    let (mut h, mut w) = (height as f64, width as f64);
    let f = factor as f64;
    // The video rule scales tiny inputs up first; the image rule (temporal factor 1) does not.
    if temporal_factor > 1 && (height < factor || width < factor) {
        let s = (f / h).max(f / w);
        h = (h * s).trunc();
        w = (w * s).trunc();
    }
    if h.max(w) / h.min(w) > 200.0 {
        return Err(ModelError::Input(format!(
            "aspect ratio {:.1} of {width}x{height} is over 200",
            h.max(w) / h.min(w)
        )));
    }
    let mut hb = round_half_even(h / f) * f;
    let mut wb = round_half_even(w / f) * f;
    let t = num_frames as f64;
    let tb = round_half_even(t / temporal_factor as f64) * temporal_factor as f64;
    if tb * hb * wb > max_pixels as f64 {
        let beta = ((t * h * w) / max_pixels as f64).sqrt();
        hb = f.max((h / beta / f).floor() * f);
        wb = f.max((w / beta / f).floor() * f);
    } else if tb * hb * wb < min_pixels as f64 {
        let beta = (min_pixels as f64 / (t * h * w)).sqrt();
        hb = (h * beta / f).ceil() * f;
        wb = (w * beta / f).ceil() * f;
    }
    Ok((hb as usize, wb as usize))
}

/// Resizes packed RGB24 as transformers' Qwen processors do (torchvision's antialiased bicubic on
/// u8): the kernels crate's Pillow-exact resampler with the horizontal pass always first.
///
/// # Errors
/// [`ModelError::Input`] for a zero or oversized dimension or a bad buffer length.
pub fn resize_bicubic(
    rgb: &[u8],
    w: usize,
    h: usize,
    nw: usize,
    nh: usize,
) -> Result<Vec<u8>, ModelError> {
    if (w, h) == (nw, nh) {
        return Ok(rgb.to_vec());
    }
    let dim = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let mut out = vec![0u8; nw * nh * 3];
    ResizePlan::with_order(
        dim(w),
        dim(h),
        dim(nw),
        dim(nh),
        Filter::Bicubic,
        PassOrder::HorizontalFirst,
    )
    .and_then(|plan| resize_rgb24_plan(&plan, rgb, &mut out))
    .map_err(|e| ModelError::Input(format!("resize {w}x{h} -> {nw}x{nh}: {e}")))?;
    Ok(out)
}

/// Processed pixels of one image or video: patch rows in the vision tower's layout.
#[derive(Debug, Clone)]
pub struct PixelInput {
    /// `[t * h * w, C * temporal_patch * patch * patch]` f32.
    pub pixels: Tensor,
    /// Patch grid (t, h, w).
    pub grid: [usize; 3],
    /// For a video: each temporal patch's time (mean of its frames), seconds.
    pub pair_times: Vec<f64>,
}

/// The processor of one checkpoint: tokenizer, chat template, pixel settings and token ids.
pub struct Processor {
    /// The tokenizer (tokenizer.json).
    pub tokenizer: tokenizers::Tokenizer,
    /// The checkpoint's chat template.
    pub chat_template: crate::chat_template::ChatTemplate,
    /// Image settings.
    pub image: PixelConfig,
    /// Video settings.
    pub video: PixelConfig,
    /// `<|image_pad|>`.
    pub image_token_id: u32,
    /// `<|video_pad|>`.
    pub video_token_id: u32,
}

/// A prompt ready for the model.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The prompt text with every placeholder expanded.
    pub text: String,
    /// Token ids.
    pub ids: Vec<u32>,
    /// 0 text, 1 image token, 2 video token.
    pub mm_token_type_ids: Vec<u8>,
}

fn pixel_config(v: serde_json::Value, path: &Path) -> Result<PixelConfig, ModelError> {
    serde_json::from_value(v).map_err(|e| ModelError::File {
        path: path.to_path_buf(),
        reason: format!("bad processor settings: {e}"),
    })
}

impl Processor {
    /// Loads the processor files of a checkpoint directory: tokenizer.json, the chat template
    /// (`chat_template.jinja`, `chat_template.json`, or tokenizer_config.json's), and the image and
    /// video settings (`processor_config.json` sections, else `preprocessor_config.json` and
    /// `video_preprocessor_config.json`; the video falls back to the image settings).
    ///
    /// # Errors
    /// [`ModelError::File`] for a missing or malformed file, [`ModelError::Tokenizer`] when the
    /// tokenizer lacks `<|image_pad|>`/`<|video_pad|>`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        Self::from_checkpoint(&crate::Checkpoint::new(dir))
    }

    /// [`Self::load`] from a [`crate::Checkpoint`] (its JSON files read once for the whole load).
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn from_checkpoint(ckpt: &crate::Checkpoint) -> Result<Self, ModelError> {
        let dir = ckpt.dir();
        let tk_path = dir.join("tokenizer.json");
        let tokenizer =
            tokenizers::Tokenizer::from_file(&tk_path).map_err(|e| ModelError::File {
                path: tk_path.clone(),
                reason: e.to_string(),
            })?;
        let source = ckpt.chat_template()?.ok_or_else(|| ModelError::File {
            path: dir.join("chat_template.jinja"),
            reason:
                "no chat template (chat_template.jinja, chat_template.json, processor_config.json \
                     or tokenizer_config.json)"
                    .into(),
        })?;
        let chat_template = crate::chat_template::ChatTemplate::new(&source)?;
        let (mut image, mut video) = (None, None);
        let pc = dir.join("processor_config.json");
        if let Some(v) = ckpt.json("processor_config.json")? {
            if let Some(s) = v.get("image_processor") {
                image = Some(pixel_config(s.clone(), &pc)?);
            }
            if let Some(s) = v.get("video_processor") {
                video = Some(pixel_config(s.clone(), &pc)?);
            }
        }
        let pp = dir.join("preprocessor_config.json");
        if image.is_none() {
            if let Some(v) = ckpt.json("preprocessor_config.json")? {
                image = Some(pixel_config(v, &pp)?);
            }
        }
        let vp = dir.join("video_preprocessor_config.json");
        if video.is_none() {
            if let Some(v) = ckpt.json("video_preprocessor_config.json")? {
                video = Some(pixel_config(v, &vp)?);
            }
        }
        let image = image.ok_or_else(|| ModelError::File {
            path: pp.clone(),
            reason: "no image processor settings (nor processor_config.json)".into(),
        })?;
        let video = video.unwrap_or_else(|| image.clone());
        let id = |t: &str| {
            tokenizer.token_to_id(t).ok_or_else(|| {
                ModelError::Tokenizer(format!("{}: no {t} token", tk_path.display()))
            })
        };
        Ok(Self {
            image_token_id: id("<|image_pad|>")?,
            video_token_id: id("<|video_pad|>")?,
            tokenizer,
            chat_template,
            image,
            video,
        })
    }

    /// Renders the chat template for one user turn holding one image or video and `question`,
    /// with the generation prompt.
    ///
    /// # Errors
    /// [`ModelError::Input`] when the template does not render.
    pub fn chat_prompt(&self, kind: VisualKind, question: &str) -> Result<String, ModelError> {
        let part = match kind {
            VisualKind::Image => "image",
            VisualKind::Video => "video",
        };
        let messages = serde_json::json!([{
            "role": "user",
            "content": [{"type": part}, {"type": "text", "text": question}],
        }]);
        self.chat_template
            .render(&messages, true, &serde_json::Map::new())
    }

    /// Expands the placeholders of `chat` (from [`Processor::chat_prompt`]) for the given image
    /// token count or video pairs (time, tokens per pair), and tokenizes it.
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] when tokenization fails; [`ModelError::Input`] when the template
    /// output holds no placeholder.
    pub fn expand(&self, chat: &str, visual: &Expansion) -> Result<Prompt, ModelError> {
        let text = match visual {
            Expansion::Image { tokens } => {
                replace_once(chat, "<|image_pad|>", &"<|image_pad|>".repeat(*tokens))?
            }
            Expansion::Video { pairs } => {
                let mut s = String::new();
                for &(t, n) in pairs {
                    s.push_str(&format_seconds(t));
                    s.push_str("<|vision_start|>");
                    s.push_str(&"<|video_pad|>".repeat(n));
                    s.push_str("<|vision_end|>");
                }
                replace_once(chat, "<|video_pad|>", &s)?
            }
            Expansion::None => chat.to_string(),
        };
        let enc = self
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let ids = enc.get_ids().to_vec();
        let mm_token_type_ids = ids
            .iter()
            .map(|&t| {
                if t == self.image_token_id {
                    1
                } else if t == self.video_token_id {
                    2
                } else {
                    0
                }
            })
            .collect();
        Ok(Prompt {
            text,
            ids,
            mm_token_type_ids,
        })
    }

    /// Preprocesses video frames (RGB24, all the same size, with their times): pads to a
    /// multiple of the temporal patch by repeating the last frame, smart-resizes, normalizes and
    /// patchifies.
    ///
    /// # Errors
    /// [`ModelError::Input`] for no frames, frames of different sizes or a bad buffer length.
    pub fn video_pixels(
        &self,
        frames: &[crate::VideoFrame],
        device: &Device,
    ) -> Result<PixelInput, ModelError> {
        self.video_pixels_in_clip(frames, frames.len(), device)
    }

    /// [`Processor::video_pixels`] for `frames` that are part of a video of `clip_frames` frames:
    /// the smart-resize sees `clip_frames` (the pixel budget covers the whole video), so a video
    /// processed in parts is resized as transformers resizes it whole.
    ///
    /// # Errors
    /// As [`Processor::video_pixels`].
    pub fn video_pixels_in_clip(
        &self,
        frames: &[crate::VideoFrame],
        clip_frames: usize,
        device: &Device,
    ) -> Result<PixelInput, ModelError> {
        let first = frames
            .first()
            .ok_or_else(|| ModelError::Input("no frames".into()))?;
        let (w, h) = (first.width as usize, first.height as usize);
        for (i, f) in frames.iter().enumerate() {
            if (f.width as usize, f.height as usize) != (w, h) || f.rgb.len() != w * h * 3 {
                return Err(ModelError::Input(format!(
                    "frame {i}: {}x{} with {} bytes; every frame must be RGB24 {w}x{h}",
                    f.width,
                    f.height,
                    f.rgb.len()
                )));
            }
        }
        let step = self.video_pixel_step();
        let resized = frames
            .iter()
            .map(|f| crate::PixelStep::pixels(&step, f, clip_frames))
            .collect::<Result<Vec<_>, _>>()?;
        self.video_patches(&resized, device)
    }

    /// The video half of the processor as a [`crate::PixelStep`]: each frame smart-resized for
    /// its clip (bicubic), on whatever thread runs it; [`Self::video_patches`] continues.
    pub fn video_pixel_step(&self) -> VideoPixelStep {
        VideoPixelStep {
            video: self.video.clone(),
        }
    }

    /// Frames from [`VideoPixelStep`] (all of one size) as the vision tower's input: padded to
    /// whole temporal patches (the last frame repeated, as transformers pads), rescaled,
    /// normalized and patchified.
    ///
    /// # Errors
    /// [`ModelError::Input`] for no frames, or frames of other forms or sizes.
    pub fn video_patches(
        &self,
        frames: &[crate::FramePixels],
        device: &Device,
    ) -> Result<PixelInput, ModelError> {
        let c = &self.video;
        let tp = c.temporal_patch_size;
        let mut list: Vec<(&[u8], f64)> = Vec::with_capacity(frames.len() + tp);
        let mut size = None;
        for (i, f) in frames.iter().enumerate() {
            let crate::PixelData::Rgb { rgb, width, height } = &f.data else {
                return Err(ModelError::Input(format!(
                    "frame {i}: not resized RGB from the Qwen3-VL pixel step"
                )));
            };
            if *size.get_or_insert((*width, *height)) != (*width, *height)
                || rgb.len() != width * height * 3
            {
                return Err(ModelError::Input(format!(
                    "frame {i}: {width}x{height}, unlike the clip's other frames"
                )));
            }
            list.push((rgb, f.pts));
        }
        let (nw, nh) = size.ok_or_else(|| ModelError::Input("no frames".into()))?;
        while !list.len().is_multiple_of(tp) {
            let last = *list.last().expect("non-empty");
            list.push(last);
        }
        let pair_times = list
            .chunks(tp)
            .map(|ch| (ch[0].1 + ch[tp - 1].1) / 2.0)
            .collect();
        let imgs: Vec<&[u8]> = list.iter().map(|(v, _)| *v).collect();
        let (pixels, grid) = patchify(&imgs, nh, nw, c, device)?;
        Ok(PixelInput {
            pixels,
            grid,
            pair_times,
        })
    }

    /// Preprocesses one image (RGB24): smart-resize, normalize, and patchify with the image
    /// repeated over the temporal patch.
    ///
    /// # Errors
    /// [`ModelError::Input`] for a bad buffer.
    pub fn image_pixels(
        &self,
        frame: &crate::VideoFrame,
        device: &Device,
    ) -> Result<PixelInput, ModelError> {
        let (w, h) = (frame.width as usize, frame.height as usize);
        if w == 0 || h == 0 || frame.rgb.len() != w * h * 3 {
            return Err(ModelError::Input(format!(
                "image {w}x{h} with {} bytes is not RGB24",
                frame.rgb.len()
            )));
        }
        let c = &self.image;
        let (lo, hi) = c.budget((56 * 56, 28 * 28 * 1280));
        let (nh, nw) = smart_resize(1, h, w, 1, c.patch_size * c.merge_size, lo, hi)?;
        let img = resize_bicubic(&frame.rgb, w, h, nw, nh)?;
        let imgs: Vec<&[u8]> = vec![img.as_slice(); c.temporal_patch_size];
        let (pixels, grid) = patchify(&imgs, nh, nw, c, device)?;
        Ok(PixelInput {
            pixels,
            grid,
            pair_times: vec![frame.pts],
        })
    }
}

/// What a prompt's placeholder expands to.
#[derive(Debug, Clone)]
pub enum Expansion {
    /// No visual input.
    None,
    /// One image of this many merged tokens.
    Image {
        /// Merged tokens.
        tokens: usize,
    },
    /// One video: per temporal pair, its time (seconds) and merged tokens.
    Video {
        /// (time, tokens) per pair.
        pairs: Vec<(f64, usize)>,
    },
}

/// Image or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisualKind {
    /// A still image.
    Image,
    /// A video.
    Video,
}

/// `<N.N seconds>` as Python's `f"<{t:.1f} seconds>"` writes it (round half to even on the
/// exact binary value, which Rust's formatting also does).
///
/// ```
/// assert_eq!(vidlm_models::qwen3_vl::processor::format_seconds(0.72), "<0.7 seconds>");
/// ```
pub fn format_seconds(t: f64) -> String {
    format!("<{t:.1} seconds>")
}

fn replace_once(s: &str, pat: &str, with: &str) -> Result<String, ModelError> {
    match s.find(pat) {
        Some(i) => Ok(format!("{}{}{}", &s[..i], with, &s[i + pat.len()..])),
        None => Err(ModelError::Input(format!(
            "the chat template wrote no {pat}"
        ))),
    }
}

/// Normalizes frames (already at `h x w`) and lays them out as the vision tower's patch rows:
/// rows ordered (t, block row, block col, row in block, col in block), each row (channel,
/// frame in temporal patch, y, x).
fn patchify(
    frames: &[&[u8]],
    h: usize,
    w: usize,
    c: &PixelConfig,
    device: &Device,
) -> Result<(Tensor, [usize; 3]), ModelError> {
    let (p, m, tp) = (c.patch_size, c.merge_size, c.temporal_patch_size);
    let (gt, gh, gw) = (frames.len() / tp, h / p, w / p);
    let row = 3 * tp * p * p;
    let table = c
        .normalize()
        .table()
        .map_err(|e| ModelError::Invalid(format!("processor normalization: {e}")))?;
    let mut out = Vec::with_capacity(gt * gh * gw * row);
    for t in 0..gt {
        for bh in 0..gh / m {
            for bw in 0..gw / m {
                for ih in 0..m {
                    for iw in 0..m {
                        let (py, px) = ((bh * m + ih) * p, (bw * m + iw) * p);
                        for ch in 0..3 {
                            for f in frames.iter().skip(t * tp).take(tp) {
                                for y in 0..p {
                                    for x in 0..p {
                                        let v = f[((py + y) * w + px + x) * 3 + ch];
                                        out.push(table[ch * 256 + v as usize]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let n = gt * gh * gw;
    Ok((Tensor::from_vec(out, (n, row), device)?, [gt, gh, gw]))
}

/// transformers' `get_rope_index` for one sequence: text tokens count up on all three axes;
/// each run of image/video tokens takes the next grid (`[t, h, w]` in patches; a video's grids are
/// split per temporal patch, since the timestamps separate them) and gets t = start, h = start +
/// row, w = start + col over the merged grid; the text after it resumes at start + max(rows, cols).
/// Returns the positions `[3][seq]` and the delta for generated tokens (max + 1 - seq).
///
/// # Errors
/// [`ModelError::Input`] when the runs and grids do not match.
pub fn rope_index(
    mm_token_type_ids: &[u8],
    image_grids: &[[usize; 3]],
    video_grids: &[[usize; 3]],
    merge: usize,
) -> Result<([Vec<i64>; 3], i64), ModelError> {
    let mut images = image_grids.iter();
    let split: Vec<[usize; 3]> = video_grids
        .iter()
        .flat_map(|g| std::iter::repeat_n([1, g[1], g[2]], g[0]))
        .collect();
    let mut videos = split.iter();
    let n = mm_token_type_ids.len();
    let mut pos: [Vec<i64>; 3] = [
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    ];
    let mut cur: i64 = 0;
    let mut i = 0;
    while i < n {
        let kind = mm_token_type_ids[i];
        let mut j = i;
        while j < n && mm_token_type_ids[j] == kind {
            j += 1;
        }
        if kind == 0 {
            for k in 0..(j - i) as i64 {
                for axis in pos.iter_mut() {
                    axis.push(cur + k);
                }
            }
            cur += (j - i) as i64;
        } else {
            let g = match kind {
                1 => images.next(),
                _ => videos.next(),
            }
            .ok_or_else(|| ModelError::Input("more visual token runs than grids".into()))?;
            let (gt, gh, gw) = (g[0], g[1] / merge, g[2] / merge);
            if gt * gh * gw != j - i {
                return Err(ModelError::Input(format!(
                    "a run of {} visual tokens for grid {g:?} (expected {})",
                    j - i,
                    gt * gh * gw
                )));
            }
            for t in 0..gt {
                for r in 0..gh {
                    for c in 0..gw {
                        pos[0].push(cur + t as i64);
                        pos[1].push(cur + r as i64);
                        pos[2].push(cur + c as i64);
                    }
                }
            }
            cur += gh.max(gw) as i64;
        }
        i = j;
    }
    let max = pos
        .iter()
        .flat_map(|p| p.iter().copied())
        .max()
        .unwrap_or(-1);
    Ok((pos, max + 1 - n as i64))
}

/// Qwen3-VL's per-frame video step: the smart-resize for the clip's frame count, then bicubic
/// (what dominates the processor's time); the rest runs with the patching.
#[derive(Debug, Clone)]
pub struct VideoPixelStep {
    video: PixelConfig,
}

impl crate::PixelStep for VideoPixelStep {
    fn pixels(
        &self,
        frame: &crate::VideoFrame,
        clip_frames: usize,
    ) -> Result<crate::FramePixels, ModelError> {
        let (w, h) = (frame.width as usize, frame.height as usize);
        if w == 0 || h == 0 || frame.rgb.len() != w * h * 3 {
            return Err(ModelError::Input(format!(
                "frame at {:.3} s: {w}x{h} RGB24 needs {} bytes, got {}",
                frame.pts,
                w * h * 3,
                frame.rgb.len()
            )));
        }
        let c = &self.video;
        let tp = c.temporal_patch_size;
        let (lo, hi) = c.budget((128 * 32 * 32, 32 * 32 * 768));
        // The resize sees the frame count before padding, as transformers' does.
        let (nh, nw) = smart_resize(
            clip_frames.max(tp),
            h,
            w,
            tp,
            c.patch_size * c.merge_size,
            lo,
            hi,
        )?;
        Ok(crate::FramePixels {
            pts: frame.pts,
            data: crate::PixelData::Rgb {
                rgb: resize_bicubic(&frame.rgb, w, h, nw, nh)?,
                width: nw,
                height: nh,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_transformers_examples() {
        // Values computed with transformers' smart_resize (video and image variants).
        assert_eq!(
            smart_resize(8, 48, 64, 2, 16, 1024, 65536).unwrap(),
            (48, 64)
        );
        assert_eq!(
            smart_resize(1, 180, 320, 1, 16, 1024, 9216).unwrap(),
            (64, 128)
        );
        assert!(smart_resize(1, 10, 3000, 1, 16, 1024, 9216).is_err());
        assert!(smart_resize(1, 48, 64, 2, 16, 1024, 65536).is_err());
    }

    #[test]
    fn frame_sampling_matches_numpy() {
        let c: PixelConfig = serde_json::from_str(r#"{"fps": 2}"#).unwrap();
        // np.linspace(0, 1374, 110).round() for a 55 s clip at 25 fps.
        let got = c.sample_frame_indices(1375, 25.0);
        assert_eq!(got.len(), 110);
        assert_eq!(
            &got[..12],
            &[0, 13, 25, 38, 50, 63, 76, 88, 101, 113, 126, 139]
        );
        assert_eq!(*got.last().unwrap(), 1374);
        // Short clips get min_frames.
        assert_eq!(c.sample_frame_indices(30, 25.0), vec![0, 10, 19, 29]);
    }

    #[test]
    fn seconds_round_like_python() {
        assert_eq!(format_seconds(0.25), "<0.2 seconds>");
        assert_eq!(format_seconds(0.35), "<0.3 seconds>"); // 0.35 is below .35 in binary
        assert_eq!(format_seconds(3.6), "<3.6 seconds>");
    }

    #[test]
    fn rope_index_counts_merged_grid() {
        // 2 text, one video of 2 pairs of 1x2 merged tokens separated by 1 text token, 1 text.
        let types = [0, 0, 2, 2, 0, 2, 2, 0];
        let (pos, delta) = rope_index(&types, &[], &[[2, 2, 4]], 2).unwrap();
        assert_eq!(pos[0], vec![0, 1, 2, 2, 4, 5, 5, 7]);
        assert_eq!(pos[1], vec![0, 1, 2, 2, 4, 5, 5, 7]);
        assert_eq!(pos[2], vec![0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(delta, 0);
    }
}
