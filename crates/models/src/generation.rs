//! Token generation: logits processing and sampling (greedy, temperature, top-k, top-p, repetition
//! penalty, seeded), the KV-cached decoding loop with its stop rules, and a streaming detokenizer
//! that only ever yields whole UTF-8 characters.
//!
//! The order of the logits processors is transformers' (`generate` with `do_sample=True`):
//! repetition penalty over the prompt and the generated tokens, then temperature, top-k, top-p, and
//! a draw from the softmax. Temperature 0 means greedy (argmax after the repetition penalty).

use std::time::Instant;

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};

use crate::{FinishReason, GenerationParams, ModelError, StopFlag};

/// Picks the next token from logits, as [`GenerationParams`] say.
#[derive(Debug)]
pub struct Sampler {
    params: GenerationParams,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    /// A sampler seeded with `params.seed`.
    pub fn new(params: &GenerationParams) -> Self {
        Self {
            params: params.clone(),
            rng: rand::rngs::StdRng::seed_from_u64(params.seed),
        }
    }

    /// Applies the repetition penalty to `logits` for every token id in `history` (transformers'
    /// rule: a positive logit is divided by the penalty, a negative one multiplied).
    pub fn apply_repetition_penalty(logits: &mut [f32], history: &[u32], penalty: f32) {
        if penalty == 1.0 {
            return;
        }
        let mut seen = std::collections::HashSet::new();
        for &t in history {
            let i = t as usize;
            if i < logits.len() && seen.insert(i) {
                let l = logits[i];
                logits[i] = if l < 0.0 { l * penalty } else { l / penalty };
            }
        }
    }

    /// Chooses the next token from `logits` (`[vocab]`, any float dtype) given the ids so far
    /// (prompt and generated, for the repetition penalty).
    ///
    /// # Errors
    /// [`ModelError::Candle`] when the logits cannot be read; [`ModelError::Input`] when they are
    /// empty or all non-finite.
    pub fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, ModelError> {
        let mut l: Vec<f32> = logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        self.sample_slice(&mut l, history)
    }

    /// [`Sampler::sample`] on a plain slice (modified in place).
    ///
    /// # Errors
    /// [`ModelError::Input`] when the logits are empty or all non-finite.
    pub fn sample_slice(&mut self, l: &mut [f32], history: &[u32]) -> Result<u32, ModelError> {
        if l.is_empty() {
            return Err(ModelError::Input("empty logits".into()));
        }
        let p = &self.params;
        Self::apply_repetition_penalty(l, history, p.repetition_penalty);
        if p.temperature <= 0.0 {
            return argmax(l);
        }
        let t = p.temperature as f32;
        // Candidates sorted by logit, best first (ties by lower id, as a stable sort gives).
        let mut idx: Vec<usize> = (0..l.len()).filter(|&i| l[i].is_finite()).collect();
        if idx.is_empty() {
            return Err(ModelError::Input("all logits are non-finite".into()));
        }
        idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
        if p.top_k > 0 && p.top_k < idx.len() {
            idx.truncate(p.top_k);
        }
        let max = l[idx[0]] / t;
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| ((l[i] / t - max) as f64).exp())
            .collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            // Keep the smallest prefix whose mass reaches top_p (always at least one token).
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (n, q) in probs.iter().enumerate() {
                acc += q;
                if acc >= p.top_p {
                    keep = n + 1;
                    break;
                }
            }
            probs.truncate(keep);
            idx.truncate(keep);
            let s: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|x| *x /= s);
        }
        let r: f64 = self.rng.random::<f64>();
        let mut acc = 0.0;
        for (q, &i) in probs.iter().zip(&idx) {
            acc += q;
            if r < acc {
                return Ok(i as u32);
            }
        }
        Ok(*idx.last().expect("non-empty") as u32)
    }
}

/// Index of the largest value (the first one on ties, as `torch.argmax`).
///
/// # Errors
/// [`ModelError::Input`] when the slice is empty.
pub fn argmax(l: &[f32]) -> Result<u32, ModelError> {
    let mut best = None::<(usize, f32)>;
    for (i, &v) in l.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i as u32)
        .ok_or_else(|| ModelError::Input("empty logits".into()))
}

/// Turns generated ids into text increments that never split a UTF-8 character: it decodes the
/// whole generated sequence and yields the new suffix once the text no longer ends in a partial
/// character (U+FFFD from an incomplete byte sequence).
#[derive(Debug)]
pub struct TextStream<'a> {
    tokenizer: &'a tokenizers::Tokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl<'a> TextStream<'a> {
    /// A stream over `tokenizer` (special tokens are skipped, as the final answer does).
    pub fn new(tokenizer: &'a tokenizers::Tokenizer) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            emitted: 0,
        }
    }

    fn decode(&self) -> Result<String, ModelError> {
        self.tokenizer
            .decode(&self.ids, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Adds a token; returns the new text, if any is complete.
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] when decoding fails.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, ModelError> {
        self.ids.push(id);
        let text = self.decode()?;
        if text.ends_with('\u{FFFD}')
            || text.len() <= self.emitted
            || !text.is_char_boundary(self.emitted)
        {
            return Ok(None);
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(Some(piece))
    }

    /// The text not yielded yet (a trailing partial character included), at the end.
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] when decoding fails.
    pub fn finish(&mut self) -> Result<Option<String>, ModelError> {
        let text = self.decode()?;
        if text.len() > self.emitted && text.is_char_boundary(self.emitted) {
            let piece = text[self.emitted..].to_string();
            self.emitted = text.len();
            return Ok(Some(piece));
        }
        Ok(None)
    }
}

/// What the decoding loop produced.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Generated ids (stop token excluded).
    pub token_ids: Vec<u32>,
    /// Why it stopped.
    pub finish: FinishReason,
    /// Text decoded with special tokens skipped.
    pub text: String,
    /// Seconds spent in the loop (after the prompt).
    pub seconds: f64,
}

/// The KV-cached decoding loop. `first_logits` are the logits after the prompt (its last
/// position); `step` feeds one token to the model (appending to its KV cache) and returns the next
/// logits. Stops on any id in `stop_ids` (not included in the output) or after
/// `params.max_new_tokens` tokens; `on_text` receives the text as it becomes complete.
///
/// # Errors
/// Whatever `step` or the tokenizer return.
pub fn decode_loop(
    first_logits: Tensor,
    prompt_ids: &[u32],
    params: &GenerationParams,
    stop_ids: &[u32],
    tokenizer: &tokenizers::Tokenizer,
    step: &mut dyn FnMut(u32) -> Result<Tensor, ModelError>,
    on_text: &mut dyn FnMut(&str),
) -> Result<Decoded, ModelError> {
    let start = Instant::now();
    let mut sampler = Sampler::new(params);
    let mut history = prompt_ids.to_vec();
    let mut out = Vec::new();
    let mut stream = TextStream::new(tokenizer);
    let mut logits = first_logits;
    let mut finish = FinishReason::Length;
    let stopped = || params.stop.as_ref().is_some_and(StopFlag::is_set);
    while out.len() < params.max_new_tokens {
        // Checked before each model step, the unit of work a stop can cut.
        if stopped() {
            finish = FinishReason::Cancelled;
            break;
        }
        let next = sampler.sample(&logits, &history)?;
        if stop_ids.contains(&next) {
            finish = FinishReason::Stop;
            break;
        }
        out.push(next);
        history.push(next);
        if let Some(piece) = stream.push(next)? {
            on_text(&piece);
        }
        if out.len() == params.max_new_tokens {
            break;
        }
        if stopped() {
            finish = FinishReason::Cancelled;
            break;
        }
        logits = step(next)?;
    }
    if let Some(piece) = stream.finish()? {
        on_text(&piece);
    }
    let text = tokenizer
        .decode(&out, true)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    Ok(Decoded {
        token_ids: out,
        finish,
        text,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Sets how many CPU threads the matmuls use (candle reads `RAYON_NUM_THREADS`; rayon's global
/// pool is sized once per process). Call it before the first model op; later calls only log.
pub fn set_threads(n: usize) {
    if n == 0 {
        return;
    }
    // Before any other thread reads the environment: called at start-up by the CLI.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        tracing::debug!("thread pool already set up, --threads {n} only applies to candle: {e}");
    }
}

/// Token ids in a config's `eos_token_id`, which HF writes as one number or a list.
pub(crate) fn eos_ids(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f64, k: usize, p: f64) -> GenerationParams {
        GenerationParams {
            temperature: t,
            top_k: k,
            top_p: p,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_is_argmax_first_on_ties() {
        let mut s = Sampler::new(&params(0.0, 0, 1.0));
        assert_eq!(s.sample_slice(&mut [0.1, 3.0, 3.0, -1.0], &[]).unwrap(), 1);
    }

    #[test]
    fn repetition_penalty_follows_transformers() {
        let mut l = [2.0f32, -2.0, 1.0];
        Sampler::apply_repetition_penalty(&mut l, &[0, 1, 1], 2.0);
        assert_eq!(l, [1.0, -4.0, 1.0]);
        let mut s = Sampler::new(&GenerationParams {
            repetition_penalty: 3.0,
            ..Default::default()
        });
        // Token 0 would win, but it was seen: 3.0/3 < 2.0.
        assert_eq!(s.sample_slice(&mut [3.0, 2.0], &[0]).unwrap(), 1);
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let logits = [0.5f32, 1.5, 1.0, -3.0];
        for seed in 0..20 {
            let mut s = Sampler::new(&GenerationParams {
                seed,
                ..params(1.0, 1, 1.0)
            });
            assert_eq!(s.sample_slice(&mut logits.clone(), &[]).unwrap(), 1);
            let mut s = Sampler::new(&GenerationParams {
                seed,
                ..params(1.0, 0, 0.01)
            });
            assert_eq!(s.sample_slice(&mut logits.clone(), &[]).unwrap(), 1);
        }
    }

    #[test]
    fn sampling_is_seeded_and_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let draw = |seed| {
            let mut s = Sampler::new(&GenerationParams {
                seed,
                ..params(1.0, 0, 1.0)
            });
            (0..4000)
                .map(|_| s.sample_slice(&mut logits.clone(), &[]).unwrap())
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let ones = a.iter().filter(|&&x| x == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.03, "{ones}");
        // top_p 0.7 keeps only the 0.75 token.
        let mut s = Sampler::new(&params(1.0, 0, 0.7));
        assert!((0..200).all(|_| s.sample_slice(&mut logits.clone(), &[]).unwrap() == 1));
    }
}

#[cfg(test)]
mod stop_tests {
    use super::*;

    fn tokenizer() -> tokenizers::Tokenizer {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/smolvlm-tiny-sf2/tokenizer.json");
        tokenizers::Tokenizer::from_file(p).unwrap()
    }

    /// Logits that always pick token 300 (not a stop id).
    fn logits() -> Tensor {
        let mut v = vec![0f32; 1000];
        v[300] = 5.0;
        Tensor::new(v, &candle_core::Device::Cpu).unwrap()
    }

    #[test]
    fn a_stop_flag_ends_generation_at_the_next_token() {
        let tok = tokenizer();
        let flag = StopFlag::default();
        let params = GenerationParams {
            max_new_tokens: 50,
            stop: Some(flag.clone()),
            ..Default::default()
        };
        let mut steps = 0;
        let d = decode_loop(
            logits(),
            &[1, 2],
            &params,
            &[0],
            &tok,
            &mut |_| {
                steps += 1;
                if steps == 3 {
                    flag.set(); // as Ctrl-C would, while the third step runs
                }
                Ok(logits())
            },
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(d.finish, FinishReason::Cancelled);
        // Tokens 1..3 were made; the stop came during the step for token 4, which is dropped.
        assert_eq!(d.token_ids, vec![300; 3]);
        assert_eq!(steps, 3, "no model step after the stop");

        // A constant model, no stop ids that it picks.
        let run = |params: &GenerationParams| {
            decode_loop(
                logits(),
                &[1],
                params,
                &[0],
                &tok,
                &mut |_| Ok(logits()),
                &mut |_| {},
            )
            .unwrap()
        };
        // Already set: nothing is generated.
        let d = run(&params);
        assert_eq!(d.finish, FinishReason::Cancelled);
        assert!(d.token_ids.is_empty());

        // Without a flag the same loop runs to max_new_tokens.
        let d = run(&GenerationParams {
            max_new_tokens: 7,
            ..Default::default()
        });
        assert_eq!((d.finish, d.token_ids.len()), (FinishReason::Length, 7));
    }
}
