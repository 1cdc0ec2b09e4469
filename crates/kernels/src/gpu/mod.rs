//! The CUDA side: NVRTC loading and compilation (once per process), device/context handling, and
//! one module per kernel family ([`preprocess`], [`pool`], [`scene`]).
//!
//! Everything here returns [`KernelError`] instead of panicking when the driver or NVRTC is
//! missing (cudarc's dynamic loader panics; we check for the libraries first). Callers fall back
//! to the CPU twins and say so once with [`fallback_notice`].
//!
//! Finding NVRTC: cudarc `dlopen`s `libnvrtc.so.13` (and older names) by name. If that fails we
//! load it by path from `$VIDLM_NVRTC_DIR`, or from the repository's `.cuda/nvidia/cu13/lib`
//! (where `scripts/setup.sh` installs NVIDIA's PyPI wheel), with `RTLD_GLOBAL`; glibc then
//! resolves cudarc's later `dlopen("libnvrtc.so.13")` to the already-loaded library by its
//! SONAME. So tests and binaries work without `LD_LIBRARY_PATH`.
//!
//! With the `cuda` feature (candle on CUDA) cudarc is linked instead of loaded: the program does
//! not start without libcuda and libnvrtc, so both count as present and nothing is searched.
//! [`candle`] then hands batches to candle without a copy.

#[cfg(feature = "cuda")]
pub mod candle;
pub mod pool;
pub mod preprocess;
pub mod scene;

use std::collections::HashMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::{result as nvrtc_result, Ptx};

use crate::error::{CudaCtx, KernelError};

/// One kernel family's CUDA C source (from the repository's `kernels/` folder).
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// Family name ("preprocess", "pool", "scene").
    pub name: &'static str,
    /// The CUDA C source text.
    pub source: &'static str,
    /// The `extern "C"` kernels it must define.
    pub functions: &'static [&'static str],
}

/// `kernels/preprocess.cu`.
pub const PREPROCESS: KernelSource = KernelSource {
    name: "preprocess",
    source: include_str!("../../../../kernels/preprocess.cu"),
    functions: &["pp_pass1", "pp_pass2_f32", "pp_pass2_f16", "pp_pass2_bf16"],
};
/// `kernels/pool.cu`.
pub const POOL: KernelSource = KernelSource {
    name: "pool",
    source: include_str!("../../../../kernels/pool.cu"),
    functions: &["pool_mean", "token_cosine"],
};
/// `kernels/scene.cu`.
pub const SCENE: KernelSource = KernelSource {
    name: "scene",
    source: include_str!("../../../../kernels/scene.cu"),
    functions: &["scene_grid"],
};
/// Every kernel family.
pub const ALL_SOURCES: [KernelSource; 3] = [PREPROCESS, POOL, SCENE];

/// Directories searched for `libnvrtc.so.13` when loading it by name fails.
pub fn nvrtc_search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("VIDLM_NVRTC_DIR") {
        dirs.push(PathBuf::from(d));
    }
    // The repository's .cuda (scripts/setup.sh), found from this crate's source location.
    dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cuda/nvidia/cu13/lib"));
    // Beside the running program (a gathered folder such as .gpu/).
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            dirs.push(d.join("nvrtc"));
        }
    }
    dirs
}

/// Makes NVRTC loadable (see the module doc); done once per process.
///
/// # Errors
/// `NvrtcMissing` naming the places searched.
pub fn load_nvrtc() -> Result<(), KernelError> {
    #[cfg(feature = "dynamic-loading")]
    return load_nvrtc_dynamic();
    // Linked at start (candle's `dynamic-linking`): if the program runs, NVRTC is there.
    #[cfg(not(feature = "dynamic-loading"))]
    Ok(())
}

#[cfg(feature = "dynamic-loading")]
fn load_nvrtc_dynamic() -> Result<(), KernelError> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            // SAFETY: only tries to dlopen the library and drops it; no symbol is called.
            if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                return Ok(());
            }
            let dirs = nvrtc_search_dirs();
            for d in &dirs {
                let lib = d.join("libnvrtc.so.13");
                if !lib.exists() {
                    continue;
                }
                // The builtins library first, so NVRTC's own dlopen of it finds it loaded.
                let mut ok = true;
                for name in ["libnvrtc-builtins.so.13.0", "libnvrtc.so.13"] {
                    let p = d.join(name);
                    if !p.exists() {
                        continue;
                    }
                    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
                    // SAFETY: loading NVIDIA's NVRTC runs no initializers with preconditions.
                    match unsafe { Library::open(Some(&p), RTLD_NOW | RTLD_GLOBAL) } {
                        // Kept loaded for the life of the process (cudarc resolves into it).
                        Ok(l) => std::mem::forget(l),
                        Err(_) => ok = false,
                    }
                }
                // SAFETY: as above.
                if ok && unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                    return Ok(());
                }
            }
            Err(format!(
                "libnvrtc.so.13 is not on the library path nor in {} (run scripts/setup.sh, or set \
                 VIDLM_NVRTC_DIR)",
                dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
            ))
        })
        .clone()
        .map_err(KernelError::NvrtcMissing)
}

/// NVRTC's version (major, minor).
///
/// # Errors
/// `NvrtcMissing` when NVRTC cannot be loaded.
pub fn nvrtc_version() -> Result<(i32, i32), KernelError> {
    load_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loaded; the pointers are valid for the call.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(KernelError::NvrtcMissing(format!(
            "nvrtcVersion returned {r:?}"
        )));
    }
    Ok((major, minor))
}

/// A compiled kernel family.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// PTX text.
    pub ptx: String,
    /// NVRTC's program log (empty when clean).
    pub log: String,
}

/// Compiles `src` for `arch` with NVRTC through cudarc: "compute_90" gives PTX (what the GPU
/// path loads), "sm_90" SASS (checked to exist, `ptx` left empty). With
/// `warnings_are_errors`, a log that mentions a warning is a `Compile` error too.
///
/// # Errors
/// `NvrtcMissing`, or `Compile` with NVRTC's log.
pub fn compile(
    src: &KernelSource,
    arch: &str,
    warnings_are_errors: bool,
) -> Result<Compiled, KernelError> {
    load_nvrtc()?;
    let err = |log: String| KernelError::Compile {
        name: src.name.into(),
        arch: arch.into(),
        log,
    };
    let code = CString::new(src.source).map_err(|_| err("source contains a NUL byte".into()))?;
    let name = CString::new(format!("{}.cu", src.name)).map_err(|_| err("bad name".into()))?;
    let prog =
        nvrtc_result::create_program(&code, Some(&name)).map_err(|e| err(format!("{e:?}")))?;
    let opts = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
    ];
    // SAFETY: `prog` was just created and is destroyed below, exactly once.
    let compiled = unsafe { nvrtc_result::compile_program(prog, &opts) };
    let log = unsafe { nvrtc_result::get_program_log(prog) }
        .map(|l| {
            let bytes: Vec<u8> = l
                .into_iter()
                .map(|c| c as u8)
                .take_while(|&c| c != 0)
                .collect();
            String::from_utf8_lossy(&bytes).trim().to_string()
        })
        .unwrap_or_default();
    // "sm_XX" targets produce SASS (a cubin): check it exists; "compute_XX" produce PTX.
    let ptx = match compiled {
        Ok(()) if arch.starts_with("sm_") => {
            let mut size = 0usize;
            // SAFETY: `prog` compiled successfully; `size` is a valid out pointer.
            let r = unsafe { cudarc::nvrtc::sys::nvrtcGetCUBINSize(prog, &mut size) };
            if r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS && size > 0 {
                Ok(String::new())
            } else {
                Err(nvrtc_result::NvrtcError(r))
            }
        }
        Ok(()) => unsafe { nvrtc_result::get_ptx(prog) }.map(|p| {
            let bytes: Vec<u8> = p
                .into_iter()
                .map(|c| c as u8)
                .take_while(|&c| c != 0)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }),
        Err(e) => Err(e),
    };
    // SAFETY: created above, not destroyed before.
    let _ = unsafe { nvrtc_result::destroy_program(prog) };
    let ptx = ptx.map_err(|e| {
        err(if log.is_empty() {
            format!("{e:?}")
        } else {
            log.clone()
        })
    })?;
    if warnings_are_errors && log.to_lowercase().contains("warning") {
        return Err(err(log));
    }
    for f in src.functions.iter().filter(|_| !arch.starts_with("sm_")) {
        if !ptx.contains(&format!(".entry {f}(")) {
            return Err(err(format!("PTX lacks kernel {f}")));
        }
    }
    Ok(Compiled { ptx, log })
}

/// PTX per (family, arch), compiled once per process.
fn cached_ptx(src: &KernelSource, arch: &str) -> Result<String, KernelError> {
    type Cache = Mutex<HashMap<(String, String), String>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (src.name.to_string(), arch.to_string());
    if let Some(p) = cache.lock().map_err(|_| poisoned())?.get(&key) {
        return Ok(p.clone());
    }
    let c = compile(src, arch, false)?;
    if !c.log.is_empty() {
        tracing::debug!(family = src.name, arch, log = %c.log, "NVRTC log");
    }
    cache
        .lock()
        .map_err(|_| poisoned())?
        .insert(key, c.ptx.clone());
    Ok(c.ptx)
}

fn poisoned() -> KernelError {
    KernelError::InvalidInput("internal lock poisoned by an earlier panic".into())
}

/// Says once per process that the GPU path is unavailable and the CPU twin runs instead.
pub fn fallback_notice(err: &KernelError) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| tracing::warn!("GPU kernels unavailable ({err}); using the CPU twins"));
}

/// Opens device `ordinal` for the GPU path, or says once (one log line) why the CPU twins will
/// run instead and returns `None`.
///
/// ```
/// // On a machine without a GPU this logs once and gives None; callers use the CPU twins.
/// let dev = vidlm_kernels::gpu::open_or_fallback(0);
/// # let _ = dev;
/// ```
pub fn open_or_fallback(ordinal: usize) -> Option<GpuDevice> {
    match GpuDevice::new(ordinal) {
        Ok(d) => Some(d),
        Err(e) => {
            fallback_notice(&e);
            None
        }
    }
}

/// True when the CUDA driver library can be loaded (no panic, unlike cudarc's loader).
///
/// With the `cuda` feature the driver is linked, so this is always true (the program would not
/// have started without it); whether a device exists is for [`GpuDevice::new`] to say.
pub fn driver_present() -> bool {
    #[cfg(feature = "dynamic-loading")]
    // SAFETY: only tries to dlopen the library.
    return unsafe { cudarc::driver::sys::is_culib_present() };
    #[cfg(not(feature = "dynamic-loading"))]
    true
}

/// A CUDA device with its (primary) context and the kernel modules loaded on it.
#[derive(Clone)]
pub struct GpuDevice {
    ctx: Arc<CudaContext>,
    arch: String,
    modules: Arc<Mutex<HashMap<&'static str, Arc<CudaModule>>>>,
}

impl std::fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuDevice")
            .field("arch", &self.arch)
            .finish()
    }
}

impl GpuDevice {
    /// Opens device `ordinal`, checking for the driver and NVRTC first.
    ///
    /// # Errors
    /// `DriverMissing`, `NvrtcMissing`, `NoDevice`, or `Cuda`.
    pub fn new(ordinal: usize) -> Result<Self, KernelError> {
        if !driver_present() {
            return Err(KernelError::DriverMissing);
        }
        load_nvrtc()?;
        // cudarc panics in a few driver-less corners; turn any panic into an error.
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| KernelError::NoDevice("CUDA context creation panicked".into()))?
            .map_err(|e| KernelError::NoDevice(format!("device {ordinal}: {e}")))?;
        let (major, minor) = ctx.compute_capability().ctx("query compute capability")?;
        Ok(GpuDevice {
            ctx,
            arch: format!("compute_{major}{minor}"),
            modules: Default::default(),
        })
    }

    /// Wraps a context made elsewhere (e.g. candle's, when it runs on CUDA with the same cudarc).
    ///
    /// # Errors
    /// `NvrtcMissing` or `Cuda`.
    pub fn from_context(ctx: Arc<CudaContext>) -> Result<Self, KernelError> {
        load_nvrtc()?;
        let (major, minor) = ctx.compute_capability().ctx("query compute capability")?;
        Ok(GpuDevice {
            ctx,
            arch: format!("compute_{major}{minor}"),
            modules: Default::default(),
        })
    }

    /// The cudarc context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The NVRTC target, e.g. "compute_90".
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The device's name.
    pub fn name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| "unknown".into())
    }

    /// A new stream (one per worker, so uploads, kernels and downloads of workers overlap).
    ///
    /// # Errors
    /// `Cuda`.
    pub fn new_stream(&self) -> Result<Arc<CudaStream>, KernelError> {
        self.ctx.new_stream().ctx("create stream")
    }

    /// The functions of a kernel family, compiling (once per process) and loading (once per
    /// device) as needed.
    pub(crate) fn functions(&self, src: &KernelSource) -> Result<Vec<CudaFunction>, KernelError> {
        let module = {
            let mut mods = self.modules.lock().map_err(|_| poisoned())?;
            match mods.get(src.name) {
                Some(m) => m.clone(),
                None => {
                    let ptx = cached_ptx(src, &self.arch)?;
                    let m = self
                        .ctx
                        .load_module(Ptx::from_src(ptx))
                        .ctx(&format!("load module {}", src.name))?;
                    mods.insert(src.name, m.clone());
                    m
                }
            }
        };
        src.functions
            .iter()
            .map(|f| module.load_function(f).ctx(&format!("load function {f}")))
            .collect()
    }
}

pub(crate) fn blocks(n: usize, per: u32) -> u32 {
    n.div_ceil(per as usize) as u32
}
