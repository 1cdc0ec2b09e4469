//! Where the model runs: `auto`, `cpu`, `cuda` or `cuda:N` (`[model] device` in a preset,
//! `--device` on the command line).
//!
//! A CUDA device is only reachable in a build with the `cuda` feature (candle on CUDA, see
//! `scripts/build-cuda.sh`). Whenever CUDA is asked for (or `auto` finds none), the model runs on
//! the CPU instead and one log line says why; the run itself never fails for want of a GPU.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::PipelineError;

/// The device a preset or flag asks for.
///
/// ```
/// use vidlm_pipeline::DeviceChoice;
/// assert_eq!("cuda:1".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(1));
/// assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
/// assert_eq!(DeviceChoice::Auto.to_string(), "auto");
/// assert!("gpu".parse::<DeviceChoice>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when this build has CUDA and a device answers; the CPU otherwise (quietly in
    /// a build without CUDA).
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || PipelineError::Config(format!("device `{s}`: expected auto, cpu, cuda or cuda:N"));
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            t => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// True when this build can run the model on CUDA (the `cuda` feature).
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

impl DeviceChoice {
    /// The candle device to load the model on. Falls back to the CPU, with one warning naming the
    /// reason, when CUDA is asked for but this build has no CUDA or the device does not answer
    /// (for `auto`: only in a CUDA build, where a GPU is expected).
    ///
    /// ```
    /// use vidlm_pipeline::DeviceChoice;
    /// assert!(DeviceChoice::Cpu.device().is_cpu());
    /// ```
    pub fn device(self) -> Device {
        match self {
            Self::Cpu => Device::Cpu,
            Self::Auto if !CUDA_BUILD => Device::Cpu,
            Self::Auto => cuda_or_cpu(0, "auto"),
            Self::Cuda(n) => cuda_or_cpu(n, &self.to_string()),
        }
    }
}

/// CUDA device `n`, or the CPU with one warning.
fn cuda_or_cpu(n: usize, asked: &str) -> Device {
    if !CUDA_BUILD {
        warn_once(format!(
            "device {asked}: this vidlm was built without CUDA (scripts/build-cuda.sh builds one); \
             running the model on the CPU"
        ));
        return Device::Cpu;
    }
    // candle returns an error without a driver or device; a panic in an odd setup counts too.
    match std::panic::catch_unwind(|| Device::new_cuda(n)) {
        Ok(Ok(d)) => {
            tracing::info!("running the model on CUDA device {n}");
            d
        }
        Ok(Err(e)) => {
            let e = e.to_string();
            warn_once(format!(
                "device {asked}: no usable CUDA device {n} ({}); running the model on the CPU",
                e.lines().next().unwrap_or_default()
            ));
            Device::Cpu
        }
        Err(_) => {
            warn_once(format!(
                "device {asked}: opening CUDA device {n} panicked; running the model on the CPU"
            ));
            Device::Cpu
        }
    }
}

/// Logs a fallback once per process (a second model instance, `--separate-encoder`, would
/// repeat it).
fn warn_once(msg: String) {
    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if !said.contains(&msg) {
        tracing::warn!("{msg}");
        said.push(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_form() {
        for (s, d) in [
            ("auto", DeviceChoice::Auto),
            ("cpu", DeviceChoice::Cpu),
            ("cuda:0", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap(), d);
            assert_eq!(d.to_string(), s);
        }
        for bad in ["", "gpu", "cuda:", "cuda:x", "cuda:-1"] {
            let e = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(e.contains("expected auto, cpu, cuda or cuda:N"), "{e}");
        }
    }

    #[test]
    fn without_a_gpu_every_choice_gives_the_cpu() {
        // In the default build there is no CUDA; in a CUDA build without a device the fallback
        // gives the CPU too. (On a GPU machine with the CUDA build this test is not meaningful.)
        if CUDA_BUILD {
            return;
        }
        for d in [DeviceChoice::Auto, DeviceChoice::Cpu, DeviceChoice::Cuda(0)] {
            assert!(d.device().is_cpu(), "{d}");
        }
    }
}
