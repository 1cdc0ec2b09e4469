//! The queue: one JetStream work-queue stream of job records, one pull consumer all workers share,
//! and one key-value bucket of result records keyed by job id.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use vidlm_pipeline::batch::ManifestItem;

use crate::{FleetError, Result};

/// The durable pull consumer every worker of a stream shares (a work-queue stream delivers each
/// message to one of them).
pub const CONSUMER: &str = "workers";

/// How long JetStream remembers a message id to drop a resubmitted job (its duplicate window).
/// Past it, [`Queue::submit`] still skips the jobs whose result is stored.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Where the queue is and how to log in.
///
/// `Debug` shows the URL without a password and never the creds, so options can be logged.
#[derive(Clone)]
pub struct QueueOptions {
    /// The server, e.g. `nats://127.0.0.1:4222` (a comma-separated list for a cluster), with
    /// `user:password@` or `token@` before the host when the server wants one.
    pub url: String,
    /// The stream name; the jobs go to subject `<stream>.jobs`, results to bucket
    /// `<stream>-results`.
    pub stream: String,
    /// A NATS creds file (user JWT and nkey seed), when the server wants one.
    pub creds: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for TLS; setting it also requires TLS.
    pub tls_ca: Option<PathBuf>,
    /// Result records larger than this many bytes (as JSON) are stored in the object store
    /// `<stream>-outputs`, the results bucket keeping a pointer to them (a NATS message is at
    /// most 1 MiB unless the server says otherwise).
    pub inline_max: usize,
}

/// The default [`QueueOptions::inline_max`]: 256 KiB.
pub const INLINE_MAX: usize = 256 * 1024;

impl QueueOptions {
    /// Options for `url` and `stream`, without auth or TLS.
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: stream.into(),
            creds: None,
            tls_ca: None,
            inline_max: INLINE_MAX,
        }
    }

    /// The URLs without their `user:password@` or `token@` part, and that part (the first
    /// one given): the client takes the login as an option, not from the URL.
    fn split_login(&self) -> (String, Option<String>) {
        let mut login = None;
        let urls = self
            .url
            .split(',')
            .map(|u| {
                let start = u.find("://").map_or(0, |s| s + 3);
                match u[start..].rfind('@') {
                    Some(at) => {
                        login.get_or_insert_with(|| u[start..start + at].to_string());
                        format!("{}{}", &u[..start], &u[start + at + 1..])
                    }
                    None => u.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        (urls, login)
    }

    /// The URL with any `user:password@` replaced by `***@`, for messages and logs.
    ///
    /// ```
    /// let o = vidlm_fleet::QueueOptions::new("nats://me:secret@host:4222", "vidlm");
    /// assert_eq!(o.redacted_url(), "nats://***@host:4222");
    /// ```
    pub fn redacted_url(&self) -> String {
        self.url
            .split(',')
            .map(|u| match (u.find("://"), u.rfind('@')) {
                (Some(s), Some(at)) if at > s => format!("{}***{}", &u[..s + 3], &u[at..]),
                (None, Some(at)) => format!("***{}", &u[at..]),
                _ => u.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl std::fmt::Debug for QueueOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueOptions")
            .field("url", &self.redacted_url())
            .field("stream", &self.stream)
            .field("creds", &self.creds.as_ref().map(|_| "<set>"))
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

/// How the shared consumer redelivers. The first to create the consumer (a submit or a worker)
/// sets these; later ones use the consumer as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// How long a job may go without an ack or an in-progress ack before it is redelivered
    /// (workers send in-progress acks every quarter of it while a job runs).
    pub ack_wait: Duration,
    /// How many workers may take a job and stop without finishing it (killed, crashed, stalled)
    /// before it is given up: the next delivery writes a dead-letter error record instead.
    pub max_tries: u32,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_tries: 3,
        }
    }
}

/// What [`Queue::submit`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubmitReport {
    /// Jobs added to the queue.
    pub new: usize,
    /// Jobs JetStream already had queued (same id and settings, within its duplicate window).
    pub queued: usize,
    /// Jobs skipped because a result for the same id and settings is stored.
    pub done: usize,
}

/// The counts `vidlm status` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStatus {
    /// Jobs no worker has taken yet.
    pub pending: u64,
    /// Jobs taken and not acked yet (running, or held by a worker that died, until the ack wait).
    pub in_progress: u64,
    /// Result records with status `ok`.
    pub done: u64,
    /// Result records with status `error` (bad inputs, dead letters).
    pub failed: u64,
}

/// A connection to one stream's queue and results.
///
/// ```no_run
/// # async fn demo() -> vidlm_fleet::Result<()> {
/// use vidlm_fleet::{ConsumerSettings, Queue, QueueOptions};
/// let queue = Queue::connect(&QueueOptions::new("nats://127.0.0.1:4222", "vidlm")).await?;
/// queue.ensure(ConsumerSettings::default()).await?;
/// let items = vidlm_pipeline::batch::read_manifest("jobs.jsonl".as_ref()).unwrap();
/// let report = queue.submit(&items).await?;
/// println!("{} new", report.new);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Queue {
    pub(crate) js: jetstream::Context,
    pub(crate) stream: String,
    url: String,
    inline_max: usize,
}

impl Queue {
    /// Connects to the server of `opts` (reconnecting by itself after a connection is lost).
    ///
    /// # Errors
    /// [`FleetError::Config`] for an invalid stream name or an unreadable creds file,
    /// [`FleetError::Connect`] when the server cannot be reached or refuses the login.
    pub async fn connect(opts: &QueueOptions) -> Result<Self> {
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if opts.stream.is_empty() || !opts.stream.chars().all(valid) {
            return Err(FleetError::Config(format!(
                "stream `{}`: use letters, digits, `_` and `-`",
                opts.stream
            )));
        }
        let url = opts.redacted_url();
        let mut connect = async_nats::ConnectOptions::new()
            .name("vidlm")
            .connection_timeout(Duration::from_secs(5));
        let (urls, login) = opts.split_login();
        match login.as_deref().map(|l| l.split_once(':')) {
            Some(Some((user, pass))) => {
                connect = connect.user_and_password(user.into(), pass.into());
            }
            Some(None) => connect = connect.token(login.unwrap_or_default()),
            None => {}
        }
        if let Some(path) = &opts.creds {
            connect = connect
                .credentials_file(path)
                .await
                .map_err(|e| FleetError::Config(format!("--creds {}: {e}", path.display())))?;
        }
        if let Some(ca) = &opts.tls_ca {
            connect = connect.add_root_certificates(ca.clone()).require_tls(true);
        }
        let client = connect
            .connect(urls.as_str())
            .await
            .map_err(|e| FleetError::Connect {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            js: jetstream::new(client),
            stream: opts.stream.clone(),
            url,
            inline_max: opts.inline_max,
        })
    }

    /// The subject jobs are published on.
    pub fn subject(&self) -> String {
        format!("{}.jobs", self.stream)
    }

    /// The results bucket's name.
    pub fn bucket(&self) -> String {
        format!("{}-results", self.stream)
    }

    /// The object store's name (results too large for the bucket).
    pub fn outputs(&self) -> String {
        format!("{}-outputs", self.stream)
    }

    /// Creates the work-queue stream (file storage, so a restarted server keeps it), the results
    /// bucket and the shared consumer where missing.
    ///
    /// # Errors
    /// [`FleetError::JetStream`] when the server refuses (JetStream not enabled, a stream of
    /// that name with other subjects).
    pub async fn ensure(&self, settings: ConsumerSettings) -> Result<()> {
        let stream = self
            .js
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![self.subject()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(|e| self.err(format!("creating stream {}", self.stream), e))?;
        // The bucket's stream, laid out as NATS key-value buckets are (`KV_<bucket>`, subjects
        // `$KV.<bucket>.>`, one message per key). Made directly: the client's bucket creation
        // first reads account fields Debian's nats-server 2.9 does not send.
        self.js
            .get_or_create_stream(stream::Config {
                name: format!("KV_{}", self.bucket()),
                subjects: vec![format!("$KV.{}.>", self.bucket())],
                max_messages_per_subject: 1,
                storage: stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| self.err(format!("creating bucket {}", self.bucket()), e))?;
        if self.js.get_object_store(self.outputs()).await.is_err() {
            self.js
                .create_object_store(object_store::Config {
                    bucket: self.outputs(),
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| self.err(format!("creating object store {}", self.outputs()), e))?;
        }
        stream
            .get_or_create_consumer(
                CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: settings.ack_wait,
                    // One delivery past the tries, to write the dead-letter record.
                    max_deliver: i64::from(settings.max_tries) + 1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.err(format!("creating consumer {CONSUMER}"), e))?;
        Ok(())
    }

    /// Publishes one message per item (its JSONL job record) with a message id made of the job
    /// id and a hash of its settings, so JetStream drops a job it already has queued; jobs whose
    /// result for the same settings is stored are skipped too.
    ///
    /// # Errors
    /// [`FleetError::JetStream`] when a publish is not acknowledged (nothing is rolled back: a
    /// retry adds only what is missing).
    pub async fn submit(&self, items: &[ManifestItem]) -> Result<SubmitReport> {
        let stored = self.stored().await?;
        let mut report = SubmitReport::default();
        let mut acks = Vec::new();
        for item in items {
            let record = item.record();
            let hash = job_hash(&record);
            let key = result_key(&item.id);
            if stored.contains(&key) && self.stored_hash(&key).await?.as_deref() == Some(&hash) {
                report.done += 1;
                continue;
            }
            let publish = jetstream::message::PublishMessage::build()
                .payload(record.to_string().into_bytes().into())
                .message_id(format!("{key}:{hash}"));
            let ack = self
                .js
                .send_publish(self.subject(), publish)
                .await
                .map_err(|e| self.err(format!("publishing job {}", item.id), e))?;
            acks.push((item.id.clone(), ack));
            // Bound the acks in flight (the client refuses too many).
            if acks.len() >= 256 {
                self.count_acks(&mut acks, &mut report).await?;
            }
        }
        self.count_acks(&mut acks, &mut report).await?;
        Ok(report)
    }

    async fn count_acks(
        &self,
        acks: &mut Vec<(String, jetstream::context::PublishAckFuture)>,
        report: &mut SubmitReport,
    ) -> Result<()> {
        for (id, ack) in acks.drain(..) {
            let ack = ack
                .await
                .map_err(|e| self.err(format!("publishing job {id}"), e))?;
            if ack.duplicate {
                report.queued += 1;
            } else {
                report.new += 1;
            }
        }
        Ok(())
    }

    /// The keys of the results bucket.
    async fn stored(&self) -> Result<HashSet<String>> {
        let kv = self.results_bucket().await?;
        let mut keys = kv
            .keys()
            .await
            .map_err(|e| self.err("listing results", e))?;
        let mut out = HashSet::new();
        while let Some(k) = keys.next().await {
            out.insert(k.map_err(|e| self.err("listing results", e))?);
        }
        Ok(out)
    }

    /// The settings hash stored with the result under `key`.
    pub(crate) async fn stored_hash(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .stored_entry(key)
            .await?
            .and_then(|v| v["job_hash"].as_str().map(str::to_string)))
    }

    async fn stored_entry(&self, key: &str) -> Result<Option<Value>> {
        let kv = self.results_bucket().await?;
        let bytes = kv
            .get(key)
            .await
            .map_err(|e| self.err(format!("reading result {key}"), e))?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Stores `record` (a batch result record) for the job whose settings hash is `hash`.
    pub(crate) async fn store(&self, record: &Value, hash: &str) -> Result<()> {
        let id = record["id"].as_str().unwrap_or_default();
        let key = result_key(id);
        let mut entry = json!({"job_hash": hash, "record": record});
        let text = record.to_string();
        if text.len() > self.inline_max {
            // Put replaces an object of the same name, so a job done twice leaves one.
            self.object_store()
                .await?
                .put(key.as_str(), &mut text.as_bytes())
                .await
                .map_err(|e| self.err(format!("storing the result of {id}"), e))?;
            tracing::info!("{id}: result in the object store ({} bytes)", text.len());
            entry = json!({"job_hash": hash, "object": key});
        }
        self.results_bucket()
            .await?
            .put(&key, entry.to_string().into_bytes().into())
            .await
            .map_err(|e| self.err(format!("storing the result of {id}"), e))?;
        Ok(())
    }

    /// Every stored result record, one per job id (the latest), sorted by id.
    ///
    /// # Errors
    /// [`FleetError::Missing`] when nothing was submitted to this stream,
    /// [`FleetError::JetStream`] when reading fails.
    pub async fn results(&self) -> Result<Vec<Value>> {
        let keys = self.stored().await?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            // A key deleted since the listing has no entry: skip it.
            if let Some(entry) = self.stored_entry(&key).await? {
                out.push(self.record_of(entry).await?);
            }
        }
        out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        Ok(out)
    }

    /// Pending, in-progress, done and failed counts.
    ///
    /// # Errors
    /// [`FleetError::Missing`] when nothing was submitted to this stream,
    /// [`FleetError::JetStream`] when reading fails.
    pub async fn status(&self) -> Result<QueueStatus> {
        let mut status = QueueStatus::default();
        let mut consumer = self.consumer().await?;
        let info = consumer
            .info()
            .await
            .map_err(|e| self.err("reading the consumer", e))?;
        status.pending = info.num_pending;
        status.in_progress = info.num_ack_pending as u64;
        for record in self.results().await? {
            match record["status"].as_str() {
                Some("ok") => status.done += 1,
                _ => status.failed += 1,
            }
        }
        Ok(status)
    }

    pub(crate) async fn consumer(&self) -> Result<consumer::PullConsumer> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| self.missing(format!("stream `{}`", self.stream), e))?;
        stream.get_consumer(CONSUMER).await.map_err(|e| {
            self.missing(
                format!("consumer `{CONSUMER}` on stream `{}`", self.stream),
                e,
            )
        })
    }

    /// The record of a bucket entry: in it, or in the object store it names.
    async fn record_of(&self, mut entry: Value) -> Result<Value> {
        let Some(name) = entry["object"].as_str() else {
            return Ok(entry["record"].take());
        };
        let what = || format!("reading result {name} from {}", self.outputs());
        let mut object = self
            .object_store()
            .await?
            .get(name)
            .await
            .map_err(|e| self.err(what(), e))?;
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| self.err(what(), e))?;
        serde_json::from_slice(&bytes).map_err(|e| self.err(what(), e))
    }

    async fn object_store(&self) -> Result<object_store::ObjectStore> {
        self.js
            .get_object_store(self.outputs())
            .await
            .map_err(|e| self.missing(format!("object store `{}`", self.outputs()), e))
    }

    async fn results_bucket(&self) -> Result<kv::Store> {
        self.js
            .get_key_value(self.bucket())
            .await
            .map_err(|e| self.missing(format!("bucket `{}`", self.bucket()), e))
    }

    /// [`FleetError::Missing`] for `what` (which `vidlm submit` would have made).
    fn missing(&self, what: String, e: impl std::fmt::Display) -> FleetError {
        FleetError::Missing(format!(
            "{}: no {what} ({e}); `vidlm submit` creates it",
            self.url
        ))
    }

    pub(crate) fn err(&self, what: impl Into<String>, e: impl std::fmt::Display) -> FleetError {
        FleetError::js(format!("{}: {}", self.url, what.into()), e)
    }
}

/// A hash of a job record (its id and settings: input, task, question, range), hex: part of the
/// message id, so a changed job is queued again and an unchanged one is not. FNV-1a, which is
/// stable across builds and platforms (std's hasher is not).
pub fn job_hash(record: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in record.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The results-bucket key of a job id: letters, digits, `-` and `_` as they are, every other
/// byte as `=XX` (NATS keys allow few characters, and `.` splits subjects).
///
/// ```
/// assert_eq!(vidlm_fleet::result_key("cam-1_a"), "cam-1_a");
/// assert_eq!(vidlm_fleet::result_key("a b.mp4"), "a=20b=2Emp4");
/// ```
pub fn result_key(id: &str) -> String {
    let mut key = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            key.push(char::from(b));
        } else {
            key.push_str(&format!("={b:02X}"));
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_injective_and_valid() {
        let ids = ["a", "a.b", "a=2Eb", "a b", "ü", "", "x/y"];
        let keys: HashSet<String> = ids.iter().map(|i| result_key(i)).collect();
        assert_eq!(keys.len(), ids.len());
        for k in &keys {
            assert!(k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)));
        }
    }

    #[test]
    fn hash_changes_with_settings_only() {
        let a = json!({"id": "a", "input": "x.mp4", "task": "summarize"});
        let b = json!({"id": "a", "input": "y.mp4", "task": "summarize"});
        assert_eq!(job_hash(&a), job_hash(&a.clone()));
        assert_ne!(job_hash(&a), job_hash(&b));
        assert_eq!(job_hash(&a).len(), 16);
    }

    #[test]
    fn redaction_hides_user_and_password() {
        let o = QueueOptions {
            creds: Some("/secret/user.creds".into()),
            ..QueueOptions::new("nats://u:p@a:4222,tls://b:4222", "s")
        };
        assert_eq!(o.redacted_url(), "nats://***@a:4222,tls://b:4222");
        let (urls, login) = o.split_login();
        assert_eq!(urls, "nats://a:4222,tls://b:4222");
        assert_eq!(login.as_deref(), Some("u:p"));
        let dbg = format!("{o:?}");
        assert!(!dbg.contains("u:p") && !dbg.contains("/secret"), "{dbg}");
    }
}
