//! [`DecodeMode::Parallel`]: the window split at clean keyframes into chunks, each decoded by a
//! single-threaded decoder of its own on a worker thread, the frames handed on in order.
//!
//! One decoder's frame threads share a chain of reference frames: each waits for rows of the
//! picture before it, so two of them on two cores do not decode twice as fast. Chunks that start
//! at clean keyframes share nothing, so every worker decodes at full speed. Each chunk's frames
//! are fixed before any decoding (the frame picked for each target, from the packet scan), and
//! a chunk is decoded exactly as `auto` decodes it (seek, then forward), so the frames are the
//! serial modes' frames.

use std::collections::VecDeque;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use super::{SampledFrame, Sampler, Targets};
use crate::decode::Source;
use crate::error::MediaError;
use crate::input::Input;
use crate::options::{DecodeMode, SamplingStrategy};
use crate::timeline::Domain;

/// Most bytes of decoded frames held ahead of the consumer, over all chunks in flight.
const MAX_AHEAD_BYTES: usize = 256 << 20;

/// Chunks per worker over the window, so that a worker that drew a short chunk takes another
/// and all finish together.
const CHUNKS_PER_WORKER: i64 = 6;

/// Shortest chunk `auto` makes, in seconds: shorter ones would mostly pay for their seek.
const MIN_AUTO_CHUNK_SECS: f64 = 4.0;

/// Most workers: more decoders gain little past this and each holds its own reference frames.
const MAX_WORKERS: usize = 8;

/// Frames of one part of the window, all shown in `[from, to)`.
#[derive(Debug)]
struct Chunk {
    from: i64,
    to: Option<i64>,
    /// Targets (relative ticks), one per frame wanted, as [`Targets::List`] takes them.
    ticks: Vec<i64>,
}

/// What a worker sends back for one chunk.
enum Msg {
    /// A frame and its relative time.
    Frame(i64, SampledFrame),
    /// Decoding failed; the chunk ends here.
    Failed(MediaError),
    /// The chunk is complete.
    Done(Report),
}

/// Work of one chunk, and where the input ended early.
#[derive(Default)]
struct Report {
    decoded: u64,
    seeks: u64,
    read_error: Option<String>,
}

struct Job {
    chunk: Chunk,
    tx: Sender<Msg>,
}

/// What the workers' samplers share with the sampler that split the window.
struct Base {
    input: Input,
    stream: usize,
    opts: crate::options::SampleOptions,
    timeline: crate::timeline::Timeline,
    origin: i64,
    window_end: Option<i64>,
    kf_interval: Option<i64>,
}

/// The chunks of one window and the workers decoding them.
pub(super) struct Parallel {
    /// Chunks not handed to a worker yet, in order.
    queued: VecDeque<Chunk>,
    jobs: Option<Sender<Job>>,
    /// Results of the chunks handed out, in order; the first is the one being returned.
    in_flight: VecDeque<Receiver<Msg>>,
    /// Most chunks handed out at once (bounds the frames held ahead of the consumer).
    lookahead: usize,
    /// The worker threads (detached on drop).
    workers: Vec<JoinHandle<()>>,
    /// Frames decoded by the workers, for [`Sampler::stats`].
    pub decoded: u64,
    /// Chunks of the window.
    pub chunks: u64,
    /// Whether the last chunk was returned (or decoding stopped).
    finished: bool,
    /// For the error of a worker that stopped: the input, stream and codec.
    name: String,
    stream: usize,
    codec: String,
}

/// One step of [`Parallel::next`].
pub(super) enum Next {
    Frame(i64, SampledFrame),
    Failed(MediaError),
    /// A chunk ended; its seeks and read error (a truncated input) for the sampler.
    Chunk {
        seeks: u64,
        read_error: Option<String>,
    },
    End,
}

/// Splits the sampler's window into chunks and starts the workers, when `mode` asks for it and
/// the window allows it: frames known from a packet scan with presentation times, and (for
/// `auto`) at least two chunks of [`MIN_AUTO_CHUNK_SECS`] and two workers (two cores, or
/// `workers` set).
pub(super) fn start(s: &Sampler, input: &Input) -> Option<Parallel> {
    let forced = match s.opts.mode {
        DecodeMode::Parallel => true,
        DecodeMode::Auto => false,
        DecodeMode::Sequential | DecodeMode::Seek => return None,
    };
    let tl = s.timeline.as_ref()?;
    if !input.is_local_file() || tl.domain != Domain::Pts || s.scene.is_some() || !s.src.seekable {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = s.opts.workers.unwrap_or(cores.min(MAX_WORKERS));
    if workers < 2 && !forced {
        return None;
    }
    let workers = workers.max(2);
    let picks = picks(s, tl)?;
    let (first, last) = (tl.times[*picks.first()?], tl.times[*picks.last()?]);
    let min_span = if forced {
        0
    } else {
        let span = (last - first) / (workers as i64 * CHUNKS_PER_WORKER);
        span.max((MIN_AUTO_CHUNK_SECS / s.seconds(1).max(f64::MIN_POSITIVE)) as i64)
    };
    let lookahead = 2 * workers;
    let (w, h) = s.opts.size.unwrap_or_else(|| {
        let st = &s.src.info.streams[s.src.stream_index];
        (
            st.width.unwrap_or(1920).max(1),
            st.height.unwrap_or(1080).max(1),
        )
    });
    let frame_bytes = (w as usize * h as usize * 3).max(1);
    let cap = (MAX_AHEAD_BYTES / (frame_bytes * lookahead)).max(1);
    // Clean keyframes with presentation times, in time order (a clean key is shown after every
    // packet before it, so their times ascend).
    let mut bounds = tl
        .keys
        .iter()
        .filter(|k| k.clean && k.pts.is_some() && k.time > first && k.time <= last)
        .map(|k| k.time)
        .peekable();
    let mut chunks = Vec::new();
    let mut cur = Chunk {
        from: s.from,
        to: None,
        ticks: Vec::new(),
    };
    for &i in &picks {
        let ft = tl.times[i];
        while let Some(kt) = bounds.next_if(|&kt| kt <= ft) {
            if !cur.ticks.is_empty() && (kt - cur.from >= min_span || cur.ticks.len() >= cap) {
                cur.to = Some(kt);
                let from = kt;
                chunks.push(std::mem::replace(
                    &mut cur,
                    Chunk {
                        from,
                        to: None,
                        ticks: Vec::new(),
                    },
                ));
            }
        }
        // Not before the chunk: its worker would seek to the keyframe before that.
        let tick = tl.target_of(i);
        cur.ticks.push(tick.max(cur.from));
    }
    cur.to = s.to;
    chunks.push(cur);
    if chunks.len() < 2 {
        return None;
    }
    let workers = workers.min(chunks.len());
    tracing::debug!(
        "{}: {} frames in {} chunks on {workers} decoders",
        s.src.name,
        picks.len(),
        chunks.len()
    );
    let base = std::sync::Arc::new(Base {
        input: input.clone(),
        stream: s.src.stream_index,
        opts: crate::options::SampleOptions {
            mode: DecodeMode::Auto,
            max_frames: None,
            ..s.opts.clone()
        },
        timeline: tl.clone(),
        origin: s.origin(),
        window_end: s.window_end,
        kf_interval: s.kf_interval,
    });
    let (jobs, rx) = unbounded::<Job>();
    let mut handles = Vec::with_capacity(workers);
    for n in 0..workers {
        let (base, rx) = (base.clone(), rx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("vidlm-decode-{n}"))
            .spawn(move || work(&base, &rx));
        match spawned {
            Ok(h) => handles.push(h),
            // One decoder then: the ones started see the job queue close and return.
            Err(e) => {
                tracing::warn!(
                    "{}: cannot start a decode thread ({e}); decoding on one",
                    s.src.name
                );
                return None;
            }
        }
    }
    let mut p = Parallel {
        chunks: chunks.len() as u64,
        queued: chunks.into(),
        jobs: Some(jobs),
        in_flight: VecDeque::new(),
        lookahead,
        workers: handles,
        decoded: 0,
        finished: false,
        name: s.src.name.clone(),
        stream: s.src.stream_index,
        codec: s.src.info.streams[s.src.stream_index]
            .codec_name
            .clone()
            .unwrap_or_default(),
    };
    p.hand_out();
    Some(p)
}

impl Parallel {
    /// Hands queued chunks to the workers up to the lookahead.
    fn hand_out(&mut self) {
        while self.in_flight.len() < self.lookahead {
            let (Some(chunk), Some(jobs)) = (self.queued.pop_front(), self.jobs.as_ref()) else {
                return;
            };
            // Room for every message of the chunk: a worker never waits on a chunk's consumer.
            let (tx, rx) = bounded(chunk.ticks.len() + 2);
            if jobs.send(Job { chunk, tx }).is_err() {
                return;
            }
            self.in_flight.push_back(rx);
        }
    }

    /// The next frame in order, or the end of a chunk, of all chunks, or a failure.
    pub(super) fn next(&mut self) -> Next {
        if self.finished {
            return Next::End;
        }
        let Some(rx) = self.in_flight.front() else {
            self.finished = true;
            return Next::End;
        };
        match rx.recv() {
            Ok(Msg::Frame(t, f)) => Next::Frame(t, f),
            Ok(Msg::Failed(e)) => {
                self.finished = true;
                Next::Failed(e)
            }
            Ok(Msg::Done(r)) => {
                self.in_flight.pop_front();
                self.decoded += r.decoded;
                if r.read_error.is_some() {
                    // The input ends here (truncated): no later chunk has frames to give.
                    self.finished = true;
                } else {
                    self.hand_out();
                }
                Next::Chunk {
                    seeks: r.seeks,
                    read_error: r.read_error,
                }
            }
            Err(_) => {
                self.finished = true;
                Next::Failed(MediaError::Decoder {
                    input: self.name.clone(),
                    stream: self.stream,
                    codec: self.codec.clone(),
                    reason: "a decode worker stopped without finishing its part of the video"
                        .into(),
                })
            }
        }
    }
}

impl Drop for Parallel {
    fn drop(&mut self) {
        // Workers see the channels close at their next frame or job and return; they are not
        // joined, so that dropping a sampler (Ctrl-C, a cancelled request) never waits for a
        // worker to reach its next frame.
        self.jobs = None;
        self.in_flight.clear();
        self.queued.clear();
        self.workers.clear();
    }
}

/// The frames (timeline indices) the sampler returns: for `fps:N` and `frames:N` the frame each
/// target picks, as the serial modes pick it (the first shown at or after it, past the one
/// picked before); for `all` every frame of the window (up to the budget). `None` for the
/// strategies that need every frame decoded in order (`scene:T`) or few frames (`keyframes`).
fn picks(s: &Sampler, tl: &crate::timeline::Timeline) -> Option<Vec<usize>> {
    let Some(targets) = &s.targets else {
        if s.opts.strategy != SamplingStrategy::All {
            return None;
        }
        let mut all: Vec<usize> = tl.window(s.from, s.to).collect();
        all.truncate(s.max_frames.unwrap_or(usize::MAX));
        return Some(all);
    };
    let mut targets = targets.clone();
    let mut picks: Vec<usize> = Vec::new();
    while let Some(t) = targets.peek() {
        if s.window_end.is_some_and(|e| t >= e) {
            break;
        }
        let i = tl.times.partition_point(|&x| x < t);
        let Some(&ft) = tl.times.get(i) else { break };
        if s.to.is_some_and(|to| ft >= to) {
            break;
        }
        if picks.last().is_none_or(|&p| p < i) {
            picks.push(i);
        }
        targets.skip_through(ft);
    }
    Some(picks)
}

/// A worker: opens its own decoder and decodes the chunks it draws, in order.
fn work(base: &Base, jobs: &Receiver<Job>) {
    let mut child: Option<Sampler> = None;
    for job in jobs {
        let mut s = match child.take() {
            Some(s) => s,
            None => match open_child(base) {
                Ok(s) => s,
                Err(e) => {
                    let _ = job.tx.send(Msg::Failed(e));
                    return;
                }
            },
        };
        let start = (s.src.frames_out, s.stats.seeks);
        s.targets = Some(Targets::List {
            ticks: job.chunk.ticks,
            i: 0,
        });
        s.from = job.chunk.from;
        s.to = job.chunk.to;
        s.window_end = job.chunk.to.or(base.window_end);
        s.last_emitted = None;
        loop {
            match s.next_target() {
                Ok(Some(f)) => {
                    let t = s.last_emitted.expect("a frame was returned");
                    if job.tx.send(Msg::Frame(t, f)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = job.tx.send(Msg::Failed(e));
                    return;
                }
            }
        }
        let report = Report {
            decoded: s.src.frames_out - start.0,
            seeks: s.stats.seeks - start.1,
            read_error: s.src.read_error.clone(),
        };
        if job.tx.send(Msg::Done(report)).is_err() {
            return;
        }
        child = Some(s);
    }
}

/// A sampler on its own single-threaded decoder, sharing the splitting sampler's timeline and
/// origin; its targets and window are set per chunk.
fn open_child(base: &Base) -> Result<Sampler, MediaError> {
    let mut src = Source::open(&base.input, Some(base.stream), false, 1)?;
    src.frame_ticks = base.timeline.frame_ticks;
    src.skip_ok = true;
    let tb = (src.facts.tb_num, src.facts.tb_den);
    let conv = crate::convert::RgbConverter::new(base.opts.size, src.facts.rotation_cw, src.sar);
    Ok(Sampler {
        src,
        opts: base.opts.clone(),
        conv,
        scene: None,
        targets: None,
        timeline: Some(base.timeline.clone()),
        origin: Some(base.origin),
        tb,
        from: 0,
        to: None,
        window_end: base.window_end,
        max_frames: None,
        last_emitted: None,
        position: None,
        kf_interval: base.kf_interval,
        seen_in_window: 0,
        started: true,
        done: false,
        warnings: Vec::new(),
        stats: Default::default(),
        par: None,
    })
}
