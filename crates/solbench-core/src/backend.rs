//! The seams between the runner and the backends (host, CUDA, HIP).
//!
//! `Backend` → `Device` → `Workload`, as in BabelStream: one abstract stream, one
//! implementation per programming model, the same driver and verification for all.
//! Backends know [`Case`] and return device-measured times and checks; they never
//! format output or judge results.

use crate::case::Case;
use crate::work::Work;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Whether a backend can run on this machine, and why (shown by `solbench list`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Availability {
    Available {
        detail: String,
    },
    /// One sentence naming what is missing and how to fix it.
    Unavailable {
        reason: String,
    },
}

/// A cache or memory level visible to a workload, with the capacity the whole-device
/// workload can use (per-core caches multiplied by the cores that run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryLevel {
    /// `L1d`, `L2`, `L3`, `HBM`, `DRAM`, ...
    pub name: String,
    /// Capacity available to one whole-device measurement, in bytes.
    pub bytes: u64,
    /// For the report: how the capacity is made up (`48 KiB x 2 cores`).
    pub detail: String,
}

/// Identity and properties of one device, recorded in every result file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub backend: String,
    pub index: usize,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    /// PCI device id (vendor-specific), used to match the spec sheet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_device_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// SMs, CUs or CPU cores used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_units: Option<u32>,
    /// `sm_90a`, `gfx942`, `x86_64+avx512f`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Cache levels then main memory, smallest first.
    #[serde(default)]
    pub memory_levels: Vec<MemoryLevel>,
    /// Everything else worth recording (clocks, bus width, theoretical bandwidth, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

impl DeviceInfo {
    /// The smallest level whose capacity holds `working_set`, else the last (main memory).
    pub fn level_for(&self, working_set: u64) -> Option<&MemoryLevel> {
        self.memory_levels
            .iter()
            .find(|l| working_set <= l.bytes)
            .or_else(|| self.memory_levels.last())
    }

    /// The main-memory level (last in the list).
    pub fn main_memory(&self) -> Option<&MemoryLevel> {
        self.memory_levels.last()
    }
}

/// Why a case cannot be prepared.
#[derive(Clone, Debug, PartialEq)]
pub enum PrepareError {
    /// The device cannot run this case (FP8 on a GPU without FP8, too large for free
    /// memory, a family this backend does not implement): recorded as skipped.
    Unsupported(String),
    /// Something went wrong preparing a case that should have run: recorded as failed.
    Failed(String),
}

impl std::fmt::Display for PrepareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrepareError::Unsupported(s) | PrepareError::Failed(s) => f.write_str(s),
        }
    }
}

/// A failure while running or checking a prepared workload.
#[derive(Clone, Debug, PartialEq)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

/// Outcome of checking a workload's output against the oracle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub passed: bool,
    /// Elements compared (all, or a documented sample).
    pub compared: u64,
    pub mismatches: u64,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
    /// The tolerance applied, in words (`|err| <= 1e-12 + 1e-9*|ref|`).
    pub tolerance: String,
    /// What was compared against what (`every element vs host triad in f64`).
    pub method: String,
    /// First mismatch or other detail, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Notes a workload records about how it ran (algorithm chosen, memory level, compute
/// path, split count...). Free-form, but keys are stable per backend.
pub type Notes = BTreeMap<String, serde_json::Value>;

/// A prepared case: buffers allocated and initialised, algorithm chosen.
pub trait Workload {
    /// Work per iteration (bytes, FLOPs), as the case was actually sized.
    fn work(&self) -> Work;
    /// Runs `iters` iterations back to back and returns the device-measured time of the
    /// whole batch (events on GPUs; the monotonic clock around synchronous CPU work).
    fn run(&mut self, iters: u32) -> Result<Duration, RunError>;
    /// Checks the current output against the host oracle.
    fn verify(&mut self) -> Result<Check, RunError>;
    /// How this workload ran, for the record.
    fn notes(&self) -> Notes {
        Notes::new()
    }
}

/// Telemetry summary of one measurement window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySummary {
    pub samples: u32,
    /// True when any sample showed a throttle reason that lowers performance.
    pub throttled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttle_reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub readings: BTreeMap<String, serde_json::Value>,
}

/// A background sampler running while a measurement is taken.
pub trait TelemetrySession {
    fn finish(self: Box<Self>) -> TelemetrySummary;
}

/// One device of a backend.
pub trait Device {
    fn info(&self) -> &DeviceInfo;
    /// How `Workload::run` times (recorded in results).
    fn timing_method(&self) -> &'static str;
    fn prepare(&self, case: &Case) -> Result<Box<dyn Workload + '_>, PrepareError>;
    /// Starts background telemetry for one measurement, where the backend has any.
    fn start_telemetry(&self) -> Option<Box<dyn TelemetrySession>> {
        None
    }
}

/// A programming model (host, CUDA, HIP).
pub trait Backend {
    fn name(&self) -> &'static str;
    /// Cheap check that never panics: libraries present, driver new enough, devices seen.
    fn availability(&self) -> Availability;
    fn devices(&self) -> Result<Vec<DeviceInfo>, String>;
    fn open(&self, index: usize) -> Result<Box<dyn Device>, String>;
}
