//! vidlm-eval: measures whether answers are right, on the same pipeline users run.
//!
//! - [`suite`]: benchmark annotation files (vidlm's JSONL, Video-MME, MVBench, NExT-QA,
//!   Charades-STA) read into items with their prompts and truths;
//! - [`score`]: one answer against its truth (lmms-eval's letter extraction, exact match,
//!   counts, temporal IoU);
//! - [`stats`]: Wilson intervals and McNemar's paired test.
//!
//! ```
//! use vidlm_eval::{score::score, suite::parse_suite};
//! let (_, items) = parse_suite(
//!     r#"{"id": "1", "video": "a.mp4", "question": "How many?", "answer": "2", "task": "counting"}"#,
//!     "suite",
//!     std::path::Path::new("."),
//! ).unwrap();
//! assert!(score(&items[0].truth, "two").correct);
//! ```

#![warn(missing_docs)]

mod error;
pub mod score;
pub mod stats;
pub mod suite;

pub use error::{EvalError, Result};
