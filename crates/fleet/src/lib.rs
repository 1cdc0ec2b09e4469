//! vidlm-fleet: `vidlm batch` past one machine, on a NATS JetStream work queue.
//!
//! ```text
//! vidlm submit --> stream <name> (work queue, file storage) --> consumer "workers" --> vidlm worker ×N
//!                  subject <name>.jobs, one job record a message            (pull, ack, in-progress ack)
//!                                                                                   |
//! vidlm results <-- bucket <name>-results (key: job id, value: the batch result record) <--+
//! ```
//!
//! Jobs are the manifest records of `vidlm batch`; results are its output records (those over
//! [`QueueOptions::inline_max`] in the object store `<name>-outputs`, the bucket pointing to
//! them). A job is acked
//! only after its result is stored, so a worker that dies leaves its job to be redelivered after
//! the ack wait, and a job done twice writes the same key: the results hold one record per job.
//! JetStream does the scheduling (NATS is one small binary, `nats-server -js`); this crate only
//! sets it up and speaks to it.
//!
//! ```no_run
//! # async fn demo(pipeline: std::sync::Arc<vidlm_pipeline::Pipeline>) -> vidlm_fleet::Result<()> {
//! use vidlm_fleet::{run_worker, ConsumerSettings, Queue, QueueOptions, Stop, WorkerOptions};
//! let queue = Queue::connect(&QueueOptions::new("nats://127.0.0.1:4222", "vidlm")).await?;
//! queue.ensure(ConsumerSettings::default()).await?;
//! let opts = WorkerOptions { drain: true, ..Default::default() };
//! let summary = run_worker(&queue, pipeline, &opts, &Stop::new()).await?;
//! println!("{} ok, {} failed", summary.ok, summary.failed);
//! for record in queue.results().await? {
//!     println!("{record}");
//! }
//! # Ok(()) }
//! ```

mod error;
mod queue;
mod worker;

pub use error::{FleetError, Result};
pub use queue::{
    job_hash, result_key, ConsumerSettings, Queue, QueueOptions, QueueStatus, SubmitReport,
    CONSUMER, DUPLICATE_WINDOW, INLINE_MAX,
};
pub use worker::{run_worker, Stop, WorkerOptions, WorkerSummary};
