//! Vision-language models for vidlm, on candle: SmolVLM2 first, Qwen3-VL next.
//!
//! Every model family implements [`VisionLanguageModel`], the one interface the pipeline uses: the
//! vision half turns frames into [`VisualTokens`] (one group per frame or frame group, with its time
//! range), the pooling stage may merge groups, and the language half answers a prompt over them.

#![warn(missing_docs)]

pub mod chat_template;
mod checkpoint;
pub mod cpu_ops;
pub mod generation;
pub mod gguf;
pub mod hub;
mod interface;
pub mod llama_text;
pub mod load;
pub mod memory;
mod panel_gemm;
pub mod qgemv;
pub mod qwen3_vl;
pub mod smolvlm;
mod team;

pub use checkpoint::{Checkpoint, Tensors};
pub use interface::{
    error_line, AskOutput, Clip, FinishReason, FramePixels, Generation, GenerationParams,
    ModelError, PixelData, PixelStep, PromptLogits, StopFlag, VideoFrame, VisionLanguageModel,
    VisualTokens,
};
pub use load::{load_model, Family, LoadOptions, FAMILIES};
