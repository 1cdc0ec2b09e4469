//! vidlm-eval: measures whether answers are right, on the same pipeline users run.
//!
//! - [`suite`]: benchmark annotation files (vidlm's JSONL, Video-MME, MVBench, NExT-QA,
//!   Charades-STA) read into items with their prompts and truths;
//! - [`score`]: one answer against its truth (lmms-eval's letter extraction, exact match,
//!   counts, temporal IoU);
//! - [`stats`]: Wilson intervals and McNemar's paired test;
//! - [`conditions`]: the language-prior controls (`video`, `blind`, `single-frame`, `shuffled`)
//!   served from one decode per video;
//! - [`run`]: a suite through the pipeline (`generate`) or by option likelihoods;
//! - [`report`]: accuracy with intervals per task and condition, deltas with McNemar tests;
//! - [`reuse`]: visual tokens shared across conditions (no second encode of the same pixels);
//! - [`chart`]: the report as a bar chart (`report.png`);
//! - [`synth`]: synthetic clips whose answers are true by construction.
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

pub mod chart;
pub mod conditions;
mod error;
pub mod report;
pub mod reuse;
pub mod run;
pub mod score;
pub mod stats;
pub mod suite;
pub mod synth;

pub use conditions::Condition;
pub use error::{EvalError, Result};
