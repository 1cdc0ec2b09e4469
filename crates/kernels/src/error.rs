//! The crate's typed error.

/// Everything that can go wrong in vidlm-kernels.
///
/// The GPU variants (`DriverMissing`, `NvrtcMissing`, `NoDevice`, `Cuda`, `Compile`) are the ones a
/// caller answers by falling back to the CPU twins; `InvalidInput` means the arguments themselves are
/// wrong and the CPU path would refuse them too.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A size, stride, buffer length or parameter is unusable; the message names it.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The CUDA driver library (libcuda.so) could not be loaded: no NVIDIA driver on this machine.
    #[error("CUDA driver library (libcuda) not found")]
    DriverMissing,
    /// NVRTC (libnvrtc.so.13) could not be loaded; the message lists where we looked.
    #[error("NVRTC not found: {0}")]
    NvrtcMissing(String),
    /// The driver is present but reports no usable device.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// A CUDA driver call failed; `what` names the operation.
    #[error("CUDA error during {what}: {source}")]
    Cuda {
        /// The operation that failed (e.g. "launch pp_hpass").
        what: String,
        /// The driver's error.
        #[source]
        source: cudarc::driver::DriverError,
    },
    /// NVRTC rejected a kernel source (or warned, when warnings are errors); `log` is its log.
    #[error("NVRTC compile of {name} for {arch} failed: {log}")]
    Compile {
        /// The kernel family ("preprocess", "pool", "scene").
        name: String,
        /// The target architecture, e.g. "sm_90".
        arch: String,
        /// NVRTC's program log (or the NVRTC status when the log is empty).
        log: String,
    },
}

impl KernelError {
    /// True for the errors that mean "no usable GPU path here" (fall back to the CPU twin), as
    /// opposed to bad arguments.
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, KernelError::InvalidInput(_))
    }
}

/// Wraps a cudarc driver result with the name of the operation (no `unwrap` on CUDA results).
pub(crate) trait CudaCtx<T> {
    fn ctx(self, what: &str) -> Result<T, KernelError>;
}

impl<T> CudaCtx<T> for Result<T, cudarc::driver::DriverError> {
    fn ctx(self, what: &str) -> Result<T, KernelError> {
        self.map_err(|source| KernelError::Cuda {
            what: what.to_string(),
            source,
        })
    }
}

pub(crate) fn invalid(msg: impl Into<String>) -> KernelError {
    KernelError::InvalidInput(msg.into())
}
