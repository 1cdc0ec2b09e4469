//! Process-wide allocator tuning for programs that run these models on the CPU.

/// Makes glibc's `malloc` keep large freed blocks for reuse instead of handing them back to the
/// OS at once. Returns whether it applied (glibc on Linux); elsewhere it does nothing.
///
/// Why: activations are tens of MB each (one Qwen3-VL-2B vision MLP output is 3136 x 4096 f32,
/// 51 MB). glibc serves every block above its mmap threshold (at most 32 MB) with fresh `mmap`
/// pages and unmaps it on free, so each op pays page faults and the kernel's zeroing of every page
/// again. Measured on 2 cores: Qwen3-VL-2B vision of 8 frames 15.7 s -> 13.4 s, peak RSS +2.6%.
/// With mmap off and a 1 GiB trim threshold, freed blocks stay in the heap and the next op of the
/// same shape reuses them.
///
/// This changes the whole process, so a program calls it once at start (the `vidlm` binary and
/// the benchmarks do); library code never calls it.
///
/// # Example
/// ```
/// let applied = vidlm_models::memory::keep_freed_memory_for_reuse();
/// assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn keep_freed_memory_for_reuse() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's parameters; it is safe to call at any time.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
        };
        if !ok {
            tracing::debug!("mallopt refused the large-block settings; keeping glibc's defaults");
        }
        ok
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
