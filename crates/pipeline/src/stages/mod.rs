//! The stages of the worker graph, one file each, in pipeline order; [`crate::graph`] wires them.

mod decode;
mod encode;
pub(crate) mod llm;
mod pool;
mod preprocess;

pub(crate) use encode::Encoded;
pub(crate) use pool::ChunkMsg;
pub(crate) use preprocess::{Prepped, PreppedFrame};
