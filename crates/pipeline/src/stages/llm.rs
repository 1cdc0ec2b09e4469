//! The language-model stage: chunk descriptions, summaries and answers.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use vidlm_models::{Clip, Generation, VisualTokens};

use crate::chunking::{format_clock, merge_similar, words};
use crate::error::panic_message;
use crate::graph::{lock, no_frames, with_input, Graph, Msg};
use crate::job::{AnswerOutput, Event, JobOutput, JobSpec, SummaryOutput, Task, TimeRange, Usage};
use crate::metrics::{JobTimings, Stage};
use crate::segment::Segment;
use crate::stages::ChunkMsg;
use crate::timestamps::model_segments;
use crate::{PipelineError, Result};

#[derive(Default)]
struct LlmJob {
    duration: Option<f64>,
    fps: Option<f64>,
    whole: bool,
    frames: usize,
    described: Vec<Segment>,
    kept: Vec<(TimeRange, Vec<VisualTokens>)>,
    /// The first group of each described chunk, for models that cannot take text-only prompts.
    reps: Vec<VisualTokens>,
    usage: Usage,
}

impl Graph<'_> {
    pub(crate) fn llm_worker(
        &self,
        jobs: &[JobSpec],
        rx: Receiver<Msg<ChunkMsg>>,
        events: Sender<Event>,
    ) {
        let rx = self.barrier(rx);
        let mut state: HashMap<usize, LlmJob> = HashMap::new();
        // Jobs with a final event: later messages for them (an upstream error after the model
        // already failed the job) are dropped, so every job ends exactly once.
        let mut ended: HashSet<usize> = HashSet::new();
        for msg in rx {
            if let Msg::Failed { job, .. } = &msg {
                if !ended.insert(*job) {
                    continue;
                }
            }
            match msg {
                Msg::Start { job, info, .. } => {
                    state.insert(
                        job,
                        LlmJob {
                            duration: info.duration,
                            fps: info.fps,
                            ..LlmJob::default()
                        },
                    );
                    let _ = events.send(Event::Started { job, info });
                }
                Msg::Item { job, item } => {
                    if self.cancel.is_cancelled() {
                        continue;
                    }
                    let Some(st) = state.get_mut(&job) else {
                        continue;
                    };
                    match self.on_chunk(job, &jobs[job], st, item) {
                        Ok(Some(segment)) => {
                            let _ = events.send(Event::Segment { job, segment });
                        }
                        Ok(None) => {}
                        // Cancelled mid-generation: no event, the run reports it as cancelled.
                        Err(PipelineError::Cancelled) => {
                            state.remove(&job);
                        }
                        Err(e) => {
                            state.remove(&job);
                            ended.insert(job);
                            let _ = events.send(Event::Failed {
                                job,
                                error: with_input(&jobs[job].input, e),
                            });
                        }
                    }
                }
                Msg::End { job } => {
                    let Some(st) = state.remove(&job) else {
                        continue;
                    };
                    if self.cancel.is_cancelled() {
                        continue;
                    }
                    ended.insert(job);
                    let ev = match self.finish(job, &jobs[job], st, &events) {
                        Ok(output) => Event::Finished { job, output },
                        Err(PipelineError::Cancelled) => continue,
                        Err(e) => Event::Failed {
                            job,
                            error: with_input(&jobs[job].input, e),
                        },
                    };
                    let _ = events.send(ev);
                }
                Msg::Failed { job, error } => {
                    state.remove(&job);
                    let _ = events.send(Event::Failed { job, error });
                }
                Msg::Cancelled { job } => {
                    state.remove(&job);
                }
            }
        }
    }

    /// One model call; the text trimmed (descriptions and summaries).
    fn generate(
        &self,
        st: &mut LlmJob,
        groups: &[VisualTokens],
        prompt: &str,
        job: usize,
    ) -> Result<String> {
        Ok(self
            .generate_raw(st, groups, prompt, job, &mut |_| {})?
            .text
            .trim()
            .to_string())
    }

    /// One model call over `groups` of the job's video (the model is told the video's duration and
    /// frame rate with them), counted in the job's usage and the run's metrics; `on_text` gets the
    /// text as it is decoded.
    fn generate_raw(
        &self,
        st: &mut LlmJob,
        groups: &[VisualTokens],
        prompt: &str,
        job: usize,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let params = vidlm_models::GenerationParams {
            stop: Some(self.cancel.stop_flag()),
            ..self.config.generation.params()
        };
        let clip = Clip::new(groups.to_vec()).with_video(st.duration, st.fps);
        let t0 = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            lock(self.llm).generate(&clip, prompt, &params, on_text)
        }));
        self.metrics.add_time(Stage::Llm, Some(job), t0.elapsed());
        let usage = &mut st.usage;
        let g = match result {
            Ok(r) => r?,
            Err(p) => {
                return Err(PipelineError::Panic {
                    stage: "llm",
                    message: panic_message(p.as_ref()),
                })
            }
        };
        usage.add(&g);
        self.metrics
            .add_tokens(g.prompt_tokens as u64, g.token_ids.len() as u64);
        if g.finish == vidlm_models::FinishReason::Cancelled {
            // A cut-off text is not a result: the job ends as cancelled.
            return Err(PipelineError::Cancelled);
        }
        Ok(g)
    }

    /// Handles one chunk: describes it (summaries, and the map step of long asks) or keeps it.
    fn on_chunk(
        &self,
        job: usize,
        spec: &JobSpec,
        st: &mut LlmJob,
        chunk: ChunkMsg,
    ) -> Result<Option<Segment>> {
        st.frames += chunk.groups.len();
        let range = TimeRange {
            start: chunk.start,
            end: chunk.end,
        };
        if chunk.whole {
            st.whole = true;
        }
        match &spec.task {
            Task::Ask { .. } if chunk.whole => {
                st.kept.push((range, chunk.groups));
                Ok(None)
            }
            task => {
                let prompts = &self.config.prompts;
                let template = if chunk.whole {
                    &prompts.describe_clip
                } else {
                    &prompts.describe_chunk
                };
                let prompt = fill(
                    template,
                    &[
                        ("start", format_clock(chunk.start)),
                        ("end", format_clock(chunk.end)),
                        (
                            "duration",
                            st.duration.map(format_clock).unwrap_or_default(),
                        ),
                    ],
                );
                let text = self.generate(st, &chunk.groups, &prompt, job)?;
                let segment = Segment::grid(chunk.start, chunk.end, text);
                st.described.push(segment.clone());
                if let Some(first) = chunk.groups.first() {
                    st.reps.push(first.clone());
                }
                if matches!(task, Task::Ask { .. }) {
                    st.kept.push((range, chunk.groups));
                }
                Ok(Some(segment))
            }
        }
    }

    fn finish(
        &self,
        job: usize,
        spec: &JobSpec,
        mut st: LlmJob,
        events: &Sender<Event>,
    ) -> Result<JobOutput> {
        match &spec.task {
            Task::Summarize => {
                if st.described.is_empty() {
                    return Err(no_frames(&spec.input));
                }
                let chunks = std::mem::take(&mut st.described);
                // Where a description says when things happen, its times replace the grid's
                // (checked against the chunk's range).
                let timed: Vec<Segment> = chunks
                    .iter()
                    .flat_map(|c| {
                        model_segments(&c.text, c.start, c.end).unwrap_or_else(|| vec![c.clone()])
                    })
                    .collect();
                let segments = merge_similar(timed, self.config.chunking.merge_threshold);
                let summary = if chunks.len() == 1 {
                    chunks[0].text.clone()
                } else {
                    self.reduce(&mut st, &segments, job)?
                };
                Ok(JobOutput::Summary(SummaryOutput {
                    duration: st.duration,
                    chunks,
                    segments,
                    summary,
                    frames: st.frames,
                    usage: st.usage,
                    timings: self.timings(job),
                }))
            }
            Task::Ask { question } => {
                if st.kept.is_empty() {
                    return Err(no_frames(&spec.input));
                }
                let selected: Vec<usize> = if st.whole {
                    (0..st.kept.len()).collect()
                } else {
                    select_chunks(question, &st.described, &st.kept, self.group_budget())
                };
                let mut evidence = Vec::new();
                let mut groups = Vec::new();
                for i in selected {
                    let (range, g) = &st.kept[i];
                    evidence.push(*range);
                    groups.extend(g.iter().cloned());
                }
                let groups = thin(groups, self.group_budget());
                let prompt = fill(&self.config.prompts.ask, &[("question", question.clone())]);
                let mut stream = |text: &str| {
                    let _ = events.send(Event::AnswerText {
                        job,
                        text: text.to_string(),
                    });
                };
                let g = self.generate_raw(&mut st, &groups, &prompt, job, &mut stream)?;
                Ok(JobOutput::Answer(AnswerOutput {
                    duration: st.duration,
                    answer: g.text,
                    token_ids: g.token_ids,
                    evidence,
                    frames: groups.iter().map(|g| g.start).collect(),
                    chunks: st.described,
                    usage: st.usage,
                    timings: self.timings(job),
                }))
            }
        }
    }

    /// A text-only prompt (the reduce step). A model that needs frames in every prompt gets one
    /// frame group per chunk (thinned to its budget) along with the text.
    /// A prompt about the job's descriptions (the reduce step): text only when the model takes
    /// text-only prompts, else with one frame per chunk (its representative), within the budget.
    fn generate_text(&self, st: &mut LlmJob, prompt: &str, job: usize) -> Result<String> {
        if st.reps.is_empty() || lock(self.llm).accepts_text_only() {
            return self.generate(st, &[], prompt, job);
        }
        let reps = thin(st.reps.clone(), self.group_budget());
        self.generate(st, &reps, prompt, job)
    }

    fn timings(&self, job: usize) -> JobTimings {
        JobTimings {
            stages: self.metrics.job_seconds(job),
            total: self.metrics.job_elapsed(job),
            cache: self.metrics.job_cache(job),
        }
    }

    /// The overall summary from timestamped segment texts, in rounds when they are too long for
    /// one prompt: consecutive segments are summarized in groups, then the group summaries.
    fn reduce(&self, st: &mut LlmJob, segments: &[Segment], job: usize) -> Result<String> {
        let max_chars = self.config.chunking.reduce_max_chars.max(1);
        let line = |s: &Segment| {
            format!(
                "[{} - {}] {}",
                format_clock(s.start),
                format_clock(s.end),
                s.text
            )
        };
        let duration = st
            .duration
            .or(segments.last().map(|s| s.end))
            .map(format_clock)
            .unwrap_or_default();
        let mut level: Vec<Segment> = segments.to_vec();
        loop {
            let total: usize = level.iter().map(|s| line(s).len() + 1).sum();
            let mut groups: Vec<Vec<Segment>> = Vec::new();
            if total > max_chars && level.len() > 1 {
                let mut cur: Vec<Segment> = Vec::new();
                let mut chars = 0;
                for s in level.iter() {
                    let n = line(s).len() + 1;
                    if !cur.is_empty() && chars + n > max_chars {
                        groups.push(std::mem::take(&mut cur));
                        chars = 0;
                    }
                    chars += n;
                    cur.push(s.clone());
                }
                groups.push(cur);
            }
            // One group left (or no progress possible): the final summary.
            if groups.len() <= 1 || groups.len() == level.len() {
                let text = level.iter().map(line).collect::<Vec<_>>().join("\n");
                let prompt = fill(
                    &self.config.prompts.summarize,
                    &[("segments", text), ("duration", duration.clone())],
                );
                return self.generate_text(st, &prompt, job);
            }
            let mut next = Vec::with_capacity(groups.len());
            for g in groups {
                let text = g.iter().map(line).collect::<Vec<_>>().join("\n");
                let prompt = fill(
                    &self.config.prompts.summarize,
                    &[("segments", text), ("duration", duration.clone())],
                );
                let summary = self.generate_text(st, &prompt, job)?;
                next.push(Segment::grid(g[0].start, g[g.len() - 1].end, summary));
            }
            level = next;
        }
    }
}

/// Replaces `{name}` placeholders.
pub(crate) fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in values {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Keeps at most `max` groups, spread uniformly (their own times kept).
pub(crate) fn thin<T>(groups: Vec<T>, max: usize) -> Vec<T> {
    let n = groups.len();
    if n <= max || max == 0 {
        return groups;
    }
    let keep: HashSet<usize> = (0..max).map(|k| ((2 * k + 1) * n) / (2 * max)).collect();
    groups
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, g)| g)
        .collect()
}

/// Ranks chunks by how many of the question's words their descriptions contain (rarer words
/// weigh more; words in every description weigh nothing) and takes the best ones while their frames fit the budget; returns chunk indices
/// in time order. With no word in common, the first chunk wins (ties keep time order).
pub(crate) fn select_chunks(
    question: &str,
    described: &[Segment],
    kept: &[(TimeRange, Vec<VisualTokens>)],
    max_frames: usize,
) -> Vec<usize> {
    const STOP: &[&str] = &[
        "the", "a", "an", "is", "are", "was", "were", "what", "who", "when", "where", "which",
        "how", "why", "does", "do", "did", "in", "on", "of", "to", "and", "or", "this", "that",
        "video", "there", "it", "its", "with", "for", "at", "by", "from", "be",
    ];
    let docs: Vec<HashSet<String>> = described
        .iter()
        .map(|s| words(&s.text).into_iter().collect())
        .collect();
    let query: HashSet<String> = words(question)
        .into_iter()
        .filter(|w| !STOP.contains(&w.as_str()))
        .collect();
    let n = docs.len() as f64;
    let mut scored: Vec<(f64, usize)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let score = query
                .iter()
                .filter(|w| d.contains(*w))
                .map(|w| {
                    // A word every description has tells the chunks apart not at all.
                    let df = docs.iter().filter(|o| o.contains(w)).count() as f64;
                    (n / df).ln()
                })
                .sum::<f64>();
            (score, i)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut chosen = Vec::new();
    let mut frames = 0;
    for (score, i) in scored {
        let len = kept.get(i).map_or(0, |k| k.1.len());
        if chosen.is_empty() || (score > 0.0 && frames + len <= max_frames) {
            chosen.push(i);
            frames += len;
        }
    }
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thin_keeps_a_uniform_subset_in_order() {
        assert_eq!(thin((0..10).collect::<Vec<_>>(), 4), vec![1, 3, 6, 8]);
        assert_eq!(thin((0..3).collect::<Vec<_>>(), 4), vec![0, 1, 2]);
        assert_eq!(thin((0..5).collect::<Vec<_>>(), 1), vec![2]);
    }

    #[test]
    fn fill_replaces_placeholders() {
        assert_eq!(
            fill(
                "from {start} to {end}: {start}",
                &[("start", "0:01".into()), ("end", "0:02".into())]
            ),
            "from 0:01 to 0:02: 0:01"
        );
    }

    #[test]
    fn selects_chunks_that_mention_the_question() {
        let seg = |t: &str| Segment::grid(0.0, 1.0, t);
        let described = vec![
            seg("a dog sleeps"),
            seg("a red car drives"),
            seg("the dog runs to a car"),
        ];
        let kept: Vec<(TimeRange, Vec<VisualTokens>)> = (0..3)
            .map(|i| {
                (
                    TimeRange {
                        start: i as f64,
                        end: i as f64 + 1.0,
                    },
                    Vec::new(),
                )
            })
            .collect();
        assert_eq!(
            select_chunks("Where is the red car?", &described, &kept, 8),
            vec![1, 2]
        );
        assert_eq!(select_chunks("zebra?", &described, &kept, 8), vec![0]);
    }
}
