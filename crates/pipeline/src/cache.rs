//! The visual-token cache: the encoder's output for a whole job, kept so a second question on the
//! same clip skips decoding and the vision encoder.
//!
//! An entry is keyed by the file's content (SHA-256 of every byte, so a file rewritten in place
//! with the same size and time is still a new file), the sampling (strategy, range, frame budget,
//! size), the model (checkpoint, config files, weights files, dtype, device, frame budget), the
//! pooling (and, for frame-pair encoders, the chunking, which sizes their encoder calls) and
//! [`FORMAT_VERSION`]. Only local files are cached: stdin, URLs and live streams bypass it.
//!
//! [`VisualCache::disk`] keeps entries as files (written atomically, checked by length and
//! checksum on read, least recently used evicted past a byte budget) for the command line;
//! [`VisualCache::memory`] keeps them in memory (same budget rule) for the server.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};
use vidlm_models::VisualTokens;

use crate::source::SourceInfo;
use crate::{PipelineError, Result};

/// Bumped whenever the entry layout or what the key covers changes: old entries then miss.
pub const FORMAT_VERSION: u32 = 1;

/// The default byte budget of a cache (2 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

const MAGIC: &[u8; 8] = b"VIDLMVT\0";
const HEADER: usize = 8 + 4 + 8 + 32;
const EXT: &str = "vtc";

/// One job's encoder output: what the decode stage learned on opening the input and every token
/// group with its scene score, in order.
#[derive(Debug, Clone)]
pub(crate) struct CachedClip {
    pub info: SourceInfo,
    pub groups: Vec<(VisualTokens, Option<f32>)>,
}

impl CachedClip {
    fn bytes(&self) -> u64 {
        self.groups
            .iter()
            .map(|(t, _)| t.embeddings.elem_count() as u64 * 4 + 64)
            .sum::<u64>()
            + 64
    }
}

/// A cache key: the text of every key part (kept in the entry and compared on read, so a digest
/// collision cannot hand out another clip's tokens) and its digest (the entry's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheKey {
    pub text: String,
    pub digest: String,
}

impl CacheKey {
    pub(crate) fn new(text: String) -> Self {
        let digest = hex(&Sha256::digest(text.as_bytes()));
        Self { text, digest }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file's content, read in 1 MiB pieces.
///
/// # Errors
/// [`PipelineError::Io`] when the file cannot be read.
pub fn content_hash(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| PipelineError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| PipelineError::io(path, e))?;
        if n == 0 {
            break;
        }
        len += n as u64;
        h.update(&buf[..n]);
    }
    Ok(format!("{}:{len}", hex(&h.finalize())))
}

/// The model part of a key: the checkpoint directory's config files by content, its other files
/// (weights) by name, size and modification time (hashing gigabytes of weights on every run would
/// cost more than the cache saves), and what the loaded model reports.
pub(crate) fn model_identity(
    cfg: &crate::ModelConfig,
    name: &str,
    max_frames: usize,
    frames_per_group: usize,
    device: &Device,
) -> String {
    let mut parts = vec![
        format!("id={}", cfg.id),
        format!("name={name}"),
        format!("dtype={}", cfg.dtype),
        format!("device={device:?}"),
        format!("max_frames={max_frames}"),
        format!("frames_per_group={frames_per_group}"),
        format!("mmproj={:?}", cfg.mmproj),
    ];
    let dir = Path::new(&cfg.id);
    let dir = if dir.is_file() {
        dir.parent().map(Path::to_path_buf)
    } else if dir.is_dir() {
        Some(dir.to_path_buf())
    } else {
        vidlm_models::Checkpoint::open(&cfg.id)
            .ok()
            .map(|c| c.dir().to_path_buf())
    };
    let mut files: Vec<PathBuf> = dir
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path())
        .chain(cfg.mmproj.clone())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for p in files {
        let small = p.extension().is_some_and(|e| e == "json" || e == "jinja");
        let part = if small {
            std::fs::read(&p).map(|b| hex(&Sha256::digest(&b)))
        } else {
            std::fs::metadata(&p).map(|m| {
                let t = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("{}@{t}", m.len())
            })
        };
        let canon = std::fs::canonicalize(&p).unwrap_or(p);
        parts.push(format!(
            "{}={}",
            canon.display(),
            part.unwrap_or_else(|e| e.to_string())
        ));
    }
    parts.join("\n")
}

enum Store {
    Memory {
        entries: Mutex<Memory>,
    },
    Disk {
        dir: PathBuf,
        /// Serializes eviction scans of this process (other processes only ever add or remove
        /// whole files, which a scan tolerates).
        evict: Mutex<()>,
    },
}

#[derive(Default)]
struct Memory {
    map: HashMap<String, (Arc<CachedClip>, u64, u64)>,
    tick: u64,
    bytes: u64,
}

/// A visual-token cache handed to [`crate::PipelineBuilder::cache`]; cheap to clone (clones share
/// the entries).
#[derive(Clone)]
pub struct VisualCache {
    store: Arc<Store>,
    max_bytes: u64,
}

impl std::fmt::Debug for VisualCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &*self.store {
            Store::Memory { .. } => "memory".to_string(),
            Store::Disk { dir, .. } => dir.display().to_string(),
        };
        f.debug_struct("VisualCache")
            .field("store", &kind)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl VisualCache {
    /// An in-memory cache of at most `max_bytes` of tokens (least recently used dropped first).
    pub fn memory(max_bytes: u64) -> Self {
        Self {
            store: Arc::new(Store::Memory {
                entries: Mutex::new(Memory::default()),
            }),
            max_bytes,
        }
    }

    /// A cache of files under `dir` (created if missing), at most `max_bytes` in all.
    ///
    /// # Errors
    /// [`PipelineError::Io`] when the directory cannot be created.
    pub fn disk(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Self> {
        let dir = dir.into().join(format!("visual-tokens-v{FORMAT_VERSION}"));
        std::fs::create_dir_all(&dir).map_err(|e| PipelineError::io(&dir, e))?;
        Ok(Self {
            store: Arc::new(Store::Disk {
                dir,
                evict: Mutex::new(()),
            }),
            max_bytes,
        })
    }

    /// The user's cache directory for vidlm: `$VIDLM_CACHE_DIR`, else `$XDG_CACHE_HOME/vidlm`,
    /// else `~/.cache/vidlm`; `None` when none of them is set.
    pub fn default_dir() -> Option<PathBuf> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        var("VIDLM_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("vidlm")))
            .or_else(|| var("HOME").map(|d| d.join(".cache").join("vidlm")))
    }

    /// The directory entries are kept in (`None` for a memory cache).
    pub fn dir(&self) -> Option<&Path> {
        match &*self.store {
            Store::Disk { dir, .. } => Some(dir),
            Store::Memory { .. } => None,
        }
    }

    /// The entry for `key`, its tokens on `device`. A damaged entry is a miss (with a warning)
    /// and is removed.
    pub(crate) fn get(&self, key: &CacheKey, device: &Device) -> Option<Arc<CachedClip>> {
        match &*self.store {
            Store::Memory { entries } => {
                let mut m = entries.lock().unwrap_or_else(|p| p.into_inner());
                m.tick += 1;
                let tick = m.tick;
                let e = m.map.get_mut(&key.digest)?;
                e.2 = tick;
                Some(e.0.clone())
            }
            Store::Disk { dir, .. } => {
                let path = dir.join(format!("{}.{EXT}", key.digest));
                let bytes = std::fs::read(&path).ok()?;
                match decode_entry(&bytes, &key.text, device) {
                    Ok(clip) => {
                        // The modification time is the entry's last use: eviction goes by it
                        // (atime is often not kept).
                        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                            let _ = f.set_modified(SystemTime::now());
                        }
                        Some(Arc::new(clip))
                    }
                    Err(why) => {
                        tracing::warn!(entry = %path.display(), %why, "damaged visual-token cache entry ignored");
                        let _ = std::fs::remove_file(&path);
                        None
                    }
                }
            }
        }
    }

    /// Stores `clip` under `key`, then evicts the least recently used entries past the budget.
    /// Write failures are warnings: the cache never fails a job.
    pub(crate) fn put(&self, key: &CacheKey, clip: CachedClip) {
        let size = clip.bytes();
        if size > self.max_bytes {
            tracing::debug!(size, max = self.max_bytes, "clip too large for the cache");
            return;
        }
        match &*self.store {
            Store::Memory { entries } => {
                let mut m = entries.lock().unwrap_or_else(|p| p.into_inner());
                m.tick += 1;
                let tick = m.tick;
                if let Some(old) = m
                    .map
                    .insert(key.digest.clone(), (Arc::new(clip), size, tick))
                {
                    m.bytes -= old.1;
                }
                m.bytes += size;
                while m.bytes > self.max_bytes {
                    let Some(oldest) = m
                        .map
                        .iter()
                        .min_by_key(|(_, e)| e.2)
                        .map(|(k, _)| k.clone())
                    else {
                        break;
                    };
                    if let Some(e) = m.map.remove(&oldest) {
                        m.bytes -= e.1;
                        tracing::debug!(entry = %oldest, "visual-token cache entry evicted");
                    }
                }
            }
            Store::Disk { dir, evict } => {
                let bytes = match encode_entry(&key.text, &clip) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "visual tokens not cached");
                        return;
                    }
                };
                let path = dir.join(format!("{}.{EXT}", key.digest));
                if let Err(e) = vidlm_media::write_atomic(&path, &bytes) {
                    tracing::warn!(entry = %path.display(), error = %e, "visual tokens not cached");
                    return;
                }
                let _guard = evict.lock().unwrap_or_else(|p| p.into_inner());
                evict_disk(dir, self.max_bytes, &path);
            }
        }
    }
}

/// Removes the least recently used entries of `dir` until they fit `max_bytes`, never `keep`
/// (the entry just written).
fn evict_disk(dir: &Path, max_bytes: u64, keep: &Path) {
    let mut entries: Vec<(SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == EXT))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    entries.sort();
    for (_, len, path) in entries {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            tracing::debug!(entry = %path.display(), "visual-token cache entry evicted");
            total -= len;
        }
    }
}

fn dtype_code(d: DType) -> Option<u8> {
    Some(match d {
        DType::F32 => 0,
        DType::BF16 => 1,
        DType::F16 => 2,
        _ => return None,
    })
}

fn code_dtype(c: u8) -> Option<DType> {
    Some(match c {
        0 => DType::F32,
        1 => DType::BF16,
        2 => DType::F16,
        _ => return None,
    })
}

/// Header (magic, version, payload length, SHA-256 of the payload), then the payload: the key
/// text, the source info and the groups. Values are stored as f32, which holds bf16 and f16
/// exactly, and cast back to the encoder's dtype on read.
fn encode_entry(key: &str, clip: &CachedClip) -> Result<Vec<u8>> {
    let mut p = Vec::new();
    let put_str = |p: &mut Vec<u8>, s: &str| {
        p.extend((s.len() as u64).to_le_bytes());
        p.extend(s.as_bytes());
    };
    let put_opt = |p: &mut Vec<u8>, v: Option<f64>| {
        p.push(v.is_some() as u8);
        p.extend(v.unwrap_or(0.0).to_le_bytes());
    };
    put_str(&mut p, key);
    put_opt(&mut p, clip.info.duration);
    put_opt(&mut p, clip.info.fps);
    p.push(clip.info.live as u8);
    p.extend((clip.groups.len() as u64).to_le_bytes());
    for (t, scene) in &clip.groups {
        let e = &t.embeddings;
        let code = dtype_code(e.dtype()).ok_or_else(|| {
            PipelineError::Config(format!("cannot cache {:?} embeddings", e.dtype()))
        })?;
        let values: Vec<f32> = e
            .to_dtype(DType::F32)
            .and_then(|v| v.flatten_all())
            .and_then(|v| v.to_vec1())
            .map_err(|e| PipelineError::Config(format!("cannot cache embeddings: {e}")))?;
        p.push(code);
        let dims = e.dims();
        p.extend((dims.len() as u64).to_le_bytes());
        for d in dims {
            p.extend((*d as u64).to_le_bytes());
        }
        p.extend((t.grid_h as u64).to_le_bytes());
        p.extend((t.grid_w as u64).to_le_bytes());
        p.extend(t.start.to_le_bytes());
        p.extend(t.end.to_le_bytes());
        put_opt(&mut p, scene.map(f64::from));
        p.extend((values.len() as u64).to_le_bytes());
        for v in values {
            p.extend(v.to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(HEADER + p.len());
    out.extend(MAGIC);
    out.extend(FORMAT_VERSION.to_le_bytes());
    out.extend((p.len() as u64).to_le_bytes());
    out.extend(Sha256::digest(&p));
    out.extend(p);
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn usize(&mut self) -> std::result::Result<usize, String> {
        let v = self.u64()?;
        // No count may exceed the bytes left: a damaged length never allocates wildly.
        usize::try_from(v)
            .ok()
            .filter(|v| *v <= self.0.len().max(1) * 8)
            .ok_or_else(|| format!("bad length {v}"))
    }
    fn f64(&mut self) -> std::result::Result<f64, String> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn opt(&mut self) -> std::result::Result<Option<f64>, String> {
        let some = self.take(1)?[0] != 0;
        let v = self.f64()?;
        Ok(some.then_some(v))
    }
}

fn decode_entry(
    bytes: &[u8],
    key: &str,
    device: &Device,
) -> std::result::Result<CachedClip, String> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err("not a visual-token cache entry".into());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(format!("format version {version}"));
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(format!(
            "{} payload bytes, header says {len}",
            payload.len()
        ));
    }
    if Sha256::digest(payload).as_slice() != &bytes[20..52] {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader(payload);
    let n = r.usize()?;
    if r.take(n)? != key.as_bytes() {
        return Err("entry is for another key".into());
    }
    let info = SourceInfo {
        duration: r.opt()?,
        fps: r.opt()?,
        live: r.take(1)?[0] != 0,
    };
    let count = r.usize()?;
    let mut groups = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let dtype = code_dtype(r.take(1)?[0]).ok_or("bad dtype")?;
        let nd = r.usize()?;
        let dims: Vec<usize> = (0..nd)
            .map(|_| r.usize())
            .collect::<std::result::Result<_, _>>()?;
        let grid_h = r.usize()?;
        let grid_w = r.usize()?;
        let start = r.f64()?;
        let end = r.f64()?;
        let scene = r.opt()?.map(|v| v as f32);
        let nv = r.usize()?;
        if nv != dims.iter().product::<usize>() {
            return Err("value count does not match the shape".into());
        }
        let values: Vec<f32> = r
            .take(nv * 4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let embeddings = Tensor::from_vec(values, dims, &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .and_then(|t| t.to_device(device))
            .map_err(|e| e.to_string())?;
        groups.push((
            VisualTokens {
                embeddings,
                grid_h,
                grid_w,
                start,
                end,
            },
            scene,
        ));
    }
    if !r.0.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(CachedClip { info, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(n: usize, seed: f32) -> CachedClip {
        let groups = (0..n)
            .map(|i| {
                let v: Vec<f32> = (0..12).map(|j| seed + i as f32 * 0.5 + j as f32).collect();
                (
                    VisualTokens {
                        embeddings: Tensor::from_vec(v, (6, 2), &Device::Cpu).unwrap(),
                        grid_h: 2,
                        grid_w: 3,
                        start: i as f64,
                        end: i as f64 + 0.5,
                    },
                    (i % 2 == 0).then_some(0.25),
                )
            })
            .collect();
        CachedClip {
            info: SourceInfo {
                duration: Some(4.0),
                fps: None,
                live: false,
            },
            groups,
        }
    }

    fn values(c: &CachedClip) -> Vec<Vec<f32>> {
        c.groups
            .iter()
            .map(|(t, _)| t.embeddings.flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    }

    #[test]
    fn disk_entries_round_trip_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = VisualCache::disk(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        let key = CacheKey::new("k1".into());
        assert!(cache.get(&key, &Device::Cpu).is_none());
        cache.put(&key, clip(3, 1.0));
        let back = cache.get(&key, &Device::Cpu).expect("hit");
        assert_eq!(values(&back), values(&clip(3, 1.0)));
        assert_eq!(back.info, clip(3, 1.0).info);
        assert_eq!(back.groups[0].1, Some(0.25));
        assert_eq!(back.groups[1].1, None);
        assert_eq!((back.groups[2].0.start, back.groups[2].0.end), (2.0, 2.5));
        // Another key whose digest names the same file (simulated) is refused by the stored text.
        let path = cache.dir().unwrap().join(format!("{}.{EXT}", key.digest));
        let bytes = std::fs::read(&path).unwrap();
        assert!(decode_entry(&bytes, "k2", &Device::Cpu).is_err());
        // A flipped byte and a truncated file are both misses, and the entry is dropped.
        let mut bad = bytes.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        assert!(cache.get(&key, &Device::Cpu).is_none());
        assert!(!path.exists());
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(cache.get(&key, &Device::Cpu).is_none());
        std::fs::write(&path, b"").unwrap();
        assert!(cache.get(&key, &Device::Cpu).is_none());
    }

    #[test]
    fn bf16_embeddings_come_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let cache = VisualCache::disk(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        let mut c = clip(1, 0.3);
        c.groups[0].0.embeddings = c.groups[0].0.embeddings.to_dtype(DType::BF16).unwrap();
        let want: Vec<half_free::Bits> = half_free::bits(&c.groups[0].0.embeddings);
        let key = CacheKey::new("bf16".into());
        cache.put(&key, c);
        let back = cache.get(&key, &Device::Cpu).unwrap();
        assert_eq!(back.groups[0].0.embeddings.dtype(), DType::BF16);
        assert_eq!(half_free::bits(&back.groups[0].0.embeddings), want);
    }

    /// Compares tensors bit for bit through f32 (exact for bf16) without the `half` crate.
    mod half_free {
        pub type Bits = u32;
        pub fn bits(t: &candle_core::Tensor) -> Vec<Bits> {
            t.to_dtype(candle_core::DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(f32::to_bits)
                .collect()
        }
    }

    #[test]
    fn disk_cache_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let one = encode_entry("a", &clip(2, 0.0)).unwrap().len() as u64;
        // Room for two entries, not three.
        let cache = VisualCache::disk(dir.path(), one * 2 + one / 2).unwrap();
        let keys: Vec<CacheKey> = ["a", "b", "c"]
            .iter()
            .map(|k| CacheKey::new(k.to_string()))
            .collect();
        let aged = |k: &CacheKey, secs: u64| {
            let p = cache.dir().unwrap().join(format!("{}.{EXT}", k.digest));
            let f = std::fs::File::options().append(true).open(p).unwrap();
            f.set_modified(SystemTime::now() - std::time::Duration::from_secs(secs))
                .unwrap();
        };
        cache.put(&keys[0], clip(2, 0.0));
        aged(&keys[0], 100);
        cache.put(&keys[1], clip(2, 1.0));
        aged(&keys[1], 50);
        // Using "a" makes "b" the least recently used.
        assert!(cache.get(&keys[0], &Device::Cpu).is_some());
        cache.put(&keys[2], clip(2, 2.0));
        assert!(cache.get(&keys[1], &Device::Cpu).is_none(), "b evicted");
        assert!(cache.get(&keys[0], &Device::Cpu).is_some());
        assert!(cache.get(&keys[2], &Device::Cpu).is_some());
    }

    #[test]
    fn memory_cache_evicts_the_least_recently_used() {
        let size = clip(2, 0.0).bytes();
        let cache = VisualCache::memory(size * 2);
        let keys: Vec<CacheKey> = ["a", "b", "c"]
            .iter()
            .map(|k| CacheKey::new(k.to_string()))
            .collect();
        cache.put(&keys[0], clip(2, 0.0));
        cache.put(&keys[1], clip(2, 1.0));
        assert!(cache.get(&keys[0], &Device::Cpu).is_some());
        cache.put(&keys[2], clip(2, 2.0));
        assert!(cache.get(&keys[1], &Device::Cpu).is_none());
        assert!(cache.get(&keys[0], &Device::Cpu).is_some());
        let c = cache.get(&keys[2], &Device::Cpu).unwrap();
        assert_eq!(values(&c), values(&clip(2, 2.0)));
    }

    #[test]
    fn content_hash_sees_a_same_size_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clip.bin");
        std::fs::write(&p, b"abcdef").unwrap();
        let a = content_hash(&p).unwrap();
        std::fs::write(&p, b"abcdeg").unwrap();
        assert_ne!(a, content_hash(&p).unwrap());
        assert!(content_hash(&dir.path().join("missing")).is_err());
    }
}
