//! NVML telemetry for the CUDA backend: clocks, power, temperature, clock-event
//! (throttle) reasons and PCIe link state, sampled on a background thread while a
//! measurement runs, and a few properties recorded once per device.
//!
//! NVML (`libnvidia-ml.so.1`) ships with the NVIDIA driver and is opened at run time by
//! `nvml-wrapper`, so this builds and runs on machines without it: [`Nvml::init`] then
//! returns a one-sentence reason and the backend simply records no telemetry.
//!
//! Devices are found by UUID, then by PCI bus id, and never by index: CUDA's ordering
//! (`CUDA_DEVICE_ORDER=FASTEST_FIRST` by default, renumbered by `CUDA_VISIBLE_DEVICES`)
//! and NVML's (PCI bus order, all GPUs) differ, so CUDA device 0 is often not NVML
//! device 0.
//!
//! The folding of samples into a [`TelemetrySummary`] ([`Summariser`]) and the
//! classification of clock-event reasons ([`classify_reasons`]) are pure, so they are
//! tested without a GPU.

use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::error::NvmlError;
use serde_json::json;
use solbench_core::backend::{TelemetrySession, TelemetrySummary};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::catch_unwind;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sampling interval to use unless there is a reason not to: short enough that a
/// measurement of a few hundred milliseconds gets several samples, long enough that the
/// sampler (a handful of NVML calls, each well under a millisecond) costs nothing
/// measurable on the host.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);

/// Shortest interval [`Nvml::start`] accepts; shorter ones (zero included) are raised to
/// it so that a mistaken zero cannot turn the sampler into a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------
// Clock-event reasons
// ---------------------------------------------------------------------------------------

/// NVML's clock-event reason bits, `nvmlClocksEventReason*` in `nvml.h` (called
/// `nvmlClocksThrottleReason*` before CUDA 12.2; the values did not change). Checked
/// against nvml-wrapper-sys 0.10's bindings, and against `nvml_wrapper`'s
/// `ThrottleReasons` in the tests below.
pub mod reason {
    pub const GPU_IDLE: u64 = 0x1;
    pub const APPLICATIONS_CLOCKS_SETTING: u64 = 0x2;
    pub const SW_POWER_CAP: u64 = 0x4;
    pub const HW_SLOWDOWN: u64 = 0x8;
    pub const SYNC_BOOST: u64 = 0x10;
    pub const SW_THERMAL_SLOWDOWN: u64 = 0x20;
    pub const HW_THERMAL_SLOWDOWN: u64 = 0x40;
    pub const HW_POWER_BRAKE_SLOWDOWN: u64 = 0x80;
    pub const DISPLAY_CLOCK_SETTING: u64 = 0x100;
}

/// Each known reason: bit, the name recorded in results, and whether it counts as a
/// slowdown (`true`: the measurement ran below the speed the device reaches when nothing
/// holds it back, and the result is marked throttled).
///
/// The rule: a reason counts when clocks were lowered *dynamically*, in reaction to
/// power, heat or another GPU, during the measurement. It does not count when it is
/// either no statement about running work or a fixed configuration whose effect is
/// already visible in the recorded clocks and the same on every run.
const REASONS: [(u64, &str, bool); 9] = [
    // Nothing was running when the sample was taken. Samples land between kernels, in
    // host-side gaps and in the samples taken just before and just after the
    // measurement, so this bit appears in almost every session and says nothing about
    // the speed of the work itself. (The summariser also leaves idle samples out of the
    // clock and power statistics; see `Summariser`.)
    (reason::GPU_IDLE, "gpu_idle", false),
    // Clocks are held at the applications clocks (or clocks locked) an administrator
    // chose, e.g. `nvidia-smi -ac`/`-lgc`. A fixed, deliberate cap, not a reaction to
    // load; its value is recorded once in the static properties and its effect shows in
    // the sampled clocks, which the verdict sees.
    (
        reason::APPLICATIONS_CLOCKS_SETTING,
        "applications_clocks_setting",
        false,
    ),
    // The power-management algorithm lowered clocks to stay under the power limit: the
    // device could not sustain its clocks at this load, so throughput is lower than at
    // boost clocks. Common on H100-class parts under GEMM; that is exactly what a
    // speed-of-light comparison must be told.
    (reason::SW_POWER_CAP, "sw_power_cap", true),
    // Hardware cut clocks by half or more (over-temperature, external power brake, or
    // power draw tripping fast-trigger protection). Always a large slowdown.
    (reason::HW_SLOWDOWN, "hw_slowdown", true),
    // Clocks held down to match the slowest GPU of a sync-boost group. This GPU ran
    // slower than it could alone, by an amount that depends on what the other GPUs were
    // doing, so the number is neither this device's capability nor reproducible.
    (reason::SYNC_BOOST, "sync_boost", true),
    // The driver lowered clocks because GPU or memory temperature passed its operating
    // maximum.
    (reason::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown", true),
    // Hardware thermal protection cut clocks by half or more.
    (reason::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown", true),
    // The system (e.g. the power supply) asserted the external power brake: clocks cut
    // by half or more.
    (
        reason::HW_POWER_BRAKE_SLOWDOWN,
        "hw_power_brake_slowdown",
        true,
    ),
    // Clocks limited by the display-clock setting: a configuration of display-attached
    // parts, constant across runs and visible in the sampled clocks, like the
    // applications clocks.
    (
        reason::DISPLAY_CLOCK_SETTING,
        "display_clock_setting",
        false,
    ),
];

/// All bits [`classify_reasons`] knows.
const KNOWN_REASONS: u64 = {
    let mut mask = 0;
    let mut i = 0;
    while i < REASONS.len() {
        mask |= REASONS[i].0;
        i += 1;
    }
    mask
};

/// Splits NVML clock-event reason bits into the names of reasons that lower performance
/// (slowdowns) and of those that do not (benign), each in bit order. Bits NVML may add
/// in later drivers are in neither list; see [`unknown_reason_bits`].
pub fn classify_reasons(bits: u64) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut slowdowns = Vec::new();
    let mut benign = Vec::new();
    for &(bit, name, counts) in &REASONS {
        if bits & bit != 0 {
            if counts {
                slowdowns.push(name);
            } else {
                benign.push(name);
            }
        }
    }
    (slowdowns, benign)
}

/// The bits of `bits` that [`classify_reasons`] does not know. They are recorded, not
/// counted as throttling: a reason added by a later driver could be either kind, and a
/// result marked throttled for a reason nobody can name is worse than a visible note.
pub fn unknown_reason_bits(bits: u64) -> u64 {
    bits & !KNOWN_REASONS
}

// ---------------------------------------------------------------------------------------
// Samples and their summary
// ---------------------------------------------------------------------------------------

/// One telemetry sample. A field is `None` when NVML could not read it (not supported on
/// this device, MIG instance, permissions, a transient error): such readings are skipped,
/// never treated as zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub sm_clock_mhz: Option<u32>,
    pub mem_clock_mhz: Option<u32>,
    /// Board power draw in milliwatts, as NVML reports it.
    pub power_mw: Option<u32>,
    pub temperature_c: Option<u32>,
    /// Clock-event reason bits (`nvmlClocksEventReason*`).
    pub reasons: Option<u64>,
    pub pcie_link_gen: Option<u32>,
    pub pcie_link_width: Option<u32>,
}

impl Sample {
    /// True when no reading at all succeeded; such a sample is not counted.
    fn is_empty(&self) -> bool {
        *self == Sample::default()
    }

    /// True when the reasons say nothing was running on the GPU. Unknown reasons count as
    /// busy: without them there is no telling.
    fn is_idle(&self) -> bool {
        self.reasons
            .is_some_and(|bits| bits & reason::GPU_IDLE != 0)
    }
}

/// Minimum, maximum and sum of one integer reading.
#[derive(Clone, Copy, Debug, Default)]
struct Stat {
    count: u32,
    min: u32,
    max: u32,
    sum: u64,
}

impl Stat {
    fn add(&mut self, value: Option<u32>) {
        let Some(v) = value else { return };
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count = self.count.saturating_add(1);
        self.sum = self.sum.saturating_add(u64::from(v));
    }

    fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / f64::from(self.count))
    }

    fn range(&self) -> Option<(u32, u32)> {
        (self.count > 0).then_some((self.min, self.max))
    }
}

/// The statistics of one set of samples.
#[derive(Clone, Copy, Debug, Default)]
struct Readings {
    samples: u32,
    sm_clock: Stat,
    mem_clock: Stat,
    power: Stat,
    temperature: Stat,
    pcie_gen: Stat,
    pcie_width: Stat,
}

impl Readings {
    fn add(&mut self, s: &Sample) {
        self.samples = self.samples.saturating_add(1);
        self.sm_clock.add(s.sm_clock_mhz);
        self.mem_clock.add(s.mem_clock_mhz);
        self.power.add(s.power_mw);
        self.temperature.add(s.temperature_c);
        self.pcie_gen.add(s.pcie_link_gen);
        self.pcie_width.add(s.pcie_link_width);
    }

    /// Writes this set's statistics into `out` (readings never read are left out).
    fn write(&self, out: &mut BTreeMap<String, serde_json::Value>) {
        for (key, stat) in [
            ("sm_clock_mhz", &self.sm_clock),
            ("mem_clock_mhz", &self.mem_clock),
        ] {
            if let (Some((min, max)), Some(mean)) = (stat.range(), stat.mean()) {
                out.insert(
                    key.into(),
                    json!({ "min": min, "max": max, "mean": round1(mean) }),
                );
            }
        }
        if let (Some((_, max)), Some(mean)) = (self.power.range(), self.power.mean()) {
            out.insert(
                "power_w".into(),
                json!({ "mean": round1(mean / 1000.0), "max": round1(f64::from(max) / 1000.0) }),
            );
        }
        if let Some((_, max)) = self.temperature.range() {
            out.insert("temperature_c".into(), json!({ "max": max }));
        }
        // The lowest link state seen: a link that trained below its maximum (a card in
        // a narrower slot, a riser forcing an older generation) shows here.
        let mut link = serde_json::Map::new();
        if let Some((min, _)) = self.pcie_gen.range() {
            link.insert("gen".into(), json!(min));
        }
        if let Some((min, _)) = self.pcie_width.range() {
            link.insert("width".into(), json!(min));
        }
        if !link.is_empty() {
            out.insert("pcie_link".into(), serde_json::Value::Object(link));
        }
    }
}

/// Rounds to one decimal: clocks and power are not more precise than that (NVML's power
/// reading is good to a few per cent), and result files stay readable.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Folds [`Sample`]s, one at a time, into a [`TelemetrySummary`] (the sampler keeps no
/// list, so a long measurement costs no memory).
///
/// The summary's `readings`:
/// - `sm_clock_mhz`, `mem_clock_mhz`: `{min, max, mean}`; `power_w`: `{mean, max}`;
///   `temperature_c`: `{max}`; `pcie_link`: `{gen, width}`, the lowest seen.
///   These come from the *busy* samples (those whose reasons do not include
///   `gpu_idle`) when there is at least one: the samples taken just before and after the
///   measurement, or in a host-side gap, catch the GPU idling at low clocks and power
///   and a downtrained PCIe link, which says nothing about how the kernels ran. With no
///   busy sample, all samples are used.
/// - `busy_samples`: how many samples were busy.
/// - `benign_reasons`: reasons seen that do not count as throttling (see [`classify_reasons`]).
/// - `unknown_reason_bits`: reason bits this version does not know, as hex.
/// - `throttle_reasons_unavailable`: `true` when no sample could read the reasons, so
///   `throttled: false` is no evidence of anything.
///
/// `throttled` and `throttle_reasons` come from every sample, idle or not.
#[derive(Clone, Debug, Default)]
pub struct Summariser {
    samples: u32,
    all: Readings,
    busy: Readings,
    reason_samples: u32,
    slowdowns: BTreeSet<&'static str>,
    benign: BTreeSet<&'static str>,
    unknown_bits: u64,
}

impl Summariser {
    pub fn new() -> Summariser {
        Summariser::default()
    }

    /// Adds one sample. A sample with no reading at all is ignored.
    pub fn add(&mut self, sample: &Sample) {
        if sample.is_empty() {
            return;
        }
        self.samples = self.samples.saturating_add(1);
        self.all.add(sample);
        if !sample.is_idle() {
            self.busy.add(sample);
        }
        if let Some(bits) = sample.reasons {
            self.reason_samples = self.reason_samples.saturating_add(1);
            let (slowdowns, benign) = classify_reasons(bits);
            self.slowdowns.extend(slowdowns);
            self.benign.extend(benign);
            self.unknown_bits |= unknown_reason_bits(bits);
        }
    }

    /// The summary of every sample added.
    pub fn finish(&self) -> TelemetrySummary {
        let mut readings = BTreeMap::new();
        if self.samples > 0 {
            let source = if self.busy.samples > 0 {
                &self.busy
            } else {
                &self.all
            };
            source.write(&mut readings);
            readings.insert("busy_samples".into(), json!(self.busy.samples));
            if self.reason_samples == 0 {
                readings.insert("throttle_reasons_unavailable".into(), json!(true));
            }
        }
        if !self.benign.is_empty() {
            readings.insert("benign_reasons".into(), json!(self.benign));
        }
        if self.unknown_bits != 0 {
            readings.insert(
                "unknown_reason_bits".into(),
                json!(format!("{:#x}", self.unknown_bits)),
            );
        }
        TelemetrySummary {
            samples: self.samples,
            throttled: !self.slowdowns.is_empty(),
            // A BTreeSet iterates sorted and unique.
            throttle_reasons: self.slowdowns.iter().map(|s| s.to_string()).collect(),
            readings,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Device identifiers
// ---------------------------------------------------------------------------------------

/// Puts a GPU UUID into NVML's form, `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lower
/// case, from that form in any case, without the `GPU-` prefix, or as 32 bare hex
/// digits. MIG UUIDs (`MIG-...`) and anything else unrecognised are passed through
/// trimmed, for NVML to judge. `None` for an empty string.
fn normalise_uuid(raw: &str) -> Option<String> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    let body = match s.get(..4) {
        Some(prefix) if prefix.eq_ignore_ascii_case("MIG-") => return Some(s.to_string()),
        Some(prefix) if prefix.eq_ignore_ascii_case("GPU-") => &s[4..],
        _ => s,
    };
    let hex: String = body.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Some(s.to_string());
    }
    let hex = hex.to_ascii_lowercase();
    Some(format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// Puts a PCI bus id into NVML's own form, `DDDDDDDD:BB:DD.F` in upper-case hex (what
/// `nvmlDeviceGetPciInfo` reports), from CUDA's `0000:17:00.0`, the 8-digit-domain form,
/// either case, or `bus:device.function` (domain 0). `None` when it is not a PCI address.
fn normalise_pci_bus_id(raw: &str) -> Option<String> {
    fn hex(field: &str, max: u32) -> Option<u32> {
        if field.is_empty() || !field.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(field, 16).ok().filter(|&v| v <= max)
    }
    let s = raw.trim();
    let (rest, function) = match s.rsplit_once('.') {
        Some((rest, f)) => (rest, hex(f, 7)?),
        None => (s, 0),
    };
    let fields: Vec<&str> = rest.split(':').collect();
    let (domain, bus, device) = match fields.as_slice() {
        [d, b, dev] => (hex(d, u32::MAX)?, hex(b, 0xff)?, hex(dev, 0x1f)?),
        [b, dev] => (0, hex(b, 0xff)?, hex(dev, 0x1f)?),
        _ => return None,
    };
    Some(format!("{domain:08X}:{bus:02X}:{device:02X}.{function:X}"))
}

/// Finds the NVML device with this UUID, else the one at this PCI bus id. Never by
/// index (see the module documentation).
fn find_device<'n>(
    nvml: &'n nvml_wrapper::Nvml,
    uuid: Option<&str>,
    pci_bus_id: Option<&str>,
) -> Result<nvml_wrapper::Device<'n>, String> {
    let mut tried = Vec::new();
    if let Some(uuid) = uuid.and_then(normalise_uuid) {
        match nvml.device_by_uuid(uuid.as_str()) {
            Ok(device) => return Ok(device),
            Err(e) => tried.push(format!("UUID {uuid} ({e})")),
        }
    }
    if let Some(raw) = pci_bus_id.map(str::trim).filter(|s| !s.is_empty()) {
        // An id we cannot parse goes to NVML as given: it may know a form we do not.
        let id = normalise_pci_bus_id(raw).unwrap_or_else(|| raw.to_string());
        match nvml.device_by_pci_bus_id(id.as_str()) {
            Ok(device) => return Ok(device),
            Err(e) => tried.push(format!("PCI bus id {id} ({e})")),
        }
    }
    if tried.is_empty() {
        Err("no UUID or PCI bus id was given to find the device in NVML".into())
    } else {
        Err(format!("NVML has no device with {}", tried.join(" or ")))
    }
}

// ---------------------------------------------------------------------------------------
// NVML
// ---------------------------------------------------------------------------------------

/// A loaded and initialised NVML. Cheap to clone; NVML is shut down when the last clone
/// and the last running session are gone.
#[derive(Clone)]
pub struct Nvml {
    inner: Arc<nvml_wrapper::Nvml>,
}

impl std::fmt::Debug for Nvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nvml")
    }
}

impl Nvml {
    /// Loads `libnvidia-ml.so.1` and initialises NVML. On failure, one sentence naming
    /// what is missing, with NVML's own error; never panics.
    pub fn init() -> Result<Nvml, String> {
        // nvml-wrapper reports a missing library as an error; the catch_unwind only
        // guards against a panic in code we do not control, which must not take the
        // benchmark down for want of telemetry.
        match catch_unwind(nvml_wrapper::Nvml::init) {
            Ok(Ok(nvml)) => Ok(Nvml {
                inner: Arc::new(nvml),
            }),
            Ok(Err(e)) => Err(init_error(&e)),
            Err(_) => Err(
                "NVML (libnvidia-ml.so.1, part of the NVIDIA driver) panicked while \
                 initialising; telemetry is off"
                    .into(),
            ),
        }
    }

    /// Properties worth recording once per device, for `DeviceInfo::properties`. Keys:
    /// `driver_version`, `nvml_version`, `max_sm_clock_mhz`, `max_mem_clock_mhz`,
    /// `applications_graphics_clock_mhz`, `applications_mem_clock_mhz`, `power_limit_w`
    /// (enforced), `max_pcie_link_gen`, `max_pcie_link_width`, `persistence_mode`,
    /// `ecc_mode`. A query that fails, or a device that cannot be found, just leaves its
    /// keys out.
    pub fn static_properties(
        &self,
        uuid: Option<&str>,
        pci_bus_id: Option<&str>,
    ) -> BTreeMap<String, String> {
        let nvml = &*self.inner;
        let mut props = BTreeMap::new();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                props.insert(key.to_string(), v);
            }
        };
        put("driver_version", nvml.sys_driver_version().ok());
        put("nvml_version", nvml.sys_nvml_version().ok());
        let Ok(device) = find_device(nvml, uuid, pci_bus_id) else {
            return props;
        };
        let text = |r: Result<u32, NvmlError>| r.ok().map(|v| v.to_string());
        put("max_sm_clock_mhz", text(device.max_clock_info(Clock::SM)));
        put(
            "max_mem_clock_mhz",
            text(device.max_clock_info(Clock::Memory)),
        );
        // Recorded because the `applications_clocks_setting` reason is not counted as
        // throttling: the cap it refers to is here instead.
        put(
            "applications_graphics_clock_mhz",
            text(device.applications_clock(Clock::Graphics)),
        );
        put(
            "applications_mem_clock_mhz",
            text(device.applications_clock(Clock::Memory)),
        );
        put(
            "power_limit_w",
            device.enforced_power_limit().ok().map(milliwatts_text),
        );
        put("max_pcie_link_gen", text(device.max_pcie_link_gen()));
        put("max_pcie_link_width", text(device.max_pcie_link_width()));
        #[cfg(target_os = "linux")]
        put(
            "persistence_mode",
            device.is_in_persistent_mode().ok().map(on_off),
        );
        put(
            "ecc_mode",
            device.is_ecc_enabled().ok().map(|ecc| {
                if ecc.currently_enabled == ecc.pending_enabled {
                    on_off(ecc.currently_enabled)
                } else {
                    format!(
                        "{} ({} after the next reboot)",
                        on_off(ecc.currently_enabled),
                        on_off(ecc.pending_enabled)
                    )
                }
            }),
        );
        props
    }

    /// Starts sampling the device with this UUID (else PCI bus id) every `interval`
    /// ([`DEFAULT_INTERVAL`] unless there is a reason not to; at least 1 ms). One sample
    /// is taken before this returns and one when the session finishes, so even a
    /// measurement shorter than the interval gets two. `None` when the device cannot be
    /// found or the thread cannot start; [`Nvml::try_start`] says why.
    pub fn start(
        &self,
        uuid: Option<&str>,
        pci_bus_id: Option<&str>,
        interval: Duration,
    ) -> Option<Box<dyn TelemetrySession>> {
        self.try_start(uuid, pci_bus_id, interval).ok()
    }

    /// [`Nvml::start`], with the reason when no session could be started.
    pub fn try_start(
        &self,
        uuid: Option<&str>,
        pci_bus_id: Option<&str>,
        interval: Duration,
    ) -> Result<Box<dyn TelemetrySession>, String> {
        let interval = interval.max(MIN_INTERVAL);
        let nvml = Arc::clone(&self.inner);
        let uuid = uuid.map(str::to_string);
        let pci_bus_id = pci_bus_id.map(str::to_string);
        // The device handle borrows the NVML it came from, so it is looked up on the
        // sampling thread, which owns a clone of the Arc.
        spawn_sampler(interval, move |ready, stop| {
            match find_device(&nvml, uuid.as_deref(), pci_bus_id.as_deref()) {
                Ok(device) => {
                    sample_until_stopped(|| take_sample(&nvml, &device), interval, ready, stop)
                }
                Err(reason) => {
                    // If `try_start` is gone there is nobody to tell.
                    let _ = ready.send(Err(reason));
                    TelemetrySummary::default()
                }
            }
        })
    }
}

/// Tells `spawn_sampler` that the sampler is running and has taken its first sample, or
/// why it could not start.
type Ready = mpsc::SyncSender<Result<(), String>>;

/// Runs `body` on a new thread with a `Ready` sender and a stop receiver, and waits for
/// it to report ready, so that the first sample is taken before the measurement starts.
/// `interval` is only recorded in the summary (`interval_ms`); `body` does the sampling.
fn spawn_sampler<F>(interval: Duration, body: F) -> Result<Box<dyn TelemetrySession>, String>
where
    F: FnOnce(Ready, mpsc::Receiver<()>) -> TelemetrySummary + Send + 'static,
{
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let (stop_tx, stop_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("solbench-nvml".into())
        .spawn(move || body(ready_tx, stop_rx))
        .map_err(|e| format!("the telemetry thread could not be started: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Box::new(SamplerSession {
            stop: stop_tx,
            thread,
            interval,
        })),
        Ok(Err(reason)) => Err(reason),
        Err(_) => Err("the telemetry thread stopped before its first sample".into()),
    }
}

/// The sentence [`Nvml::init`] returns for NVML's error.
fn init_error(e: &NvmlError) -> String {
    let what = match e {
        NvmlError::LibloadingError(_)
        | NvmlError::FailedToLoadSymbol(_)
        | NvmlError::LibraryNotFound => "could not be loaded",
        _ => "could not be initialised",
    };
    format!("NVML (libnvidia-ml.so.1, part of the NVIDIA driver) {what}: {e}; telemetry is off")
}

fn on_off(enabled: bool) -> String {
    if enabled { "on" } else { "off" }.to_string()
}

/// Milliwatts as watts, without a fraction when there is none (`700`, `312.5`).
fn milliwatts_text(mw: u32) -> String {
    if mw.is_multiple_of(1000) {
        (mw / 1000).to_string()
    } else {
        format!("{}", f64::from(mw) / 1000.0)
    }
}

/// Reads the clock-event reason bits, unfiltered so that bits unknown to nvml-wrapper
/// are kept. Uses `nvmlDeviceGetCurrentClocksEventReasons` (the name since CUDA 12.2)
/// where the driver has it, else `nvmlDeviceGetCurrentClocksThrottleReasons`, the
/// deprecated name nvml-wrapper 0.13 calls, which a future driver may drop.
fn reason_bits(nvml: &nvml_wrapper::Nvml, device: &nvml_wrapper::Device<'_>) -> Option<u64> {
    if let Ok(get) = nvml.lib().nvmlDeviceGetCurrentClocksEventReasons.as_ref() {
        let mut bits: u64 = 0;
        // SAFETY: `get` was resolved from the loaded NVML, which `nvml` keeps loaded and
        // initialised for this call; `device.handle()` is a live handle from that same
        // NVML; and `bits` is a valid `unsigned long long` to write to, as the function
        // takes (`c_ulonglong` is `u64` on every platform Rust supports).
        let rc = unsafe { get(device.handle(), &mut bits) };
        if nvml_wrapper::error::nvml_try(rc).is_ok() {
            return Some(bits);
        }
    }
    device.current_throttle_reasons().ok().map(|r| r.bits())
}

fn take_sample(nvml: &nvml_wrapper::Nvml, device: &nvml_wrapper::Device<'_>) -> Sample {
    Sample {
        sm_clock_mhz: device.clock_info(Clock::SM).ok(),
        mem_clock_mhz: device.clock_info(Clock::Memory).ok(),
        power_mw: device.power_usage().ok(),
        temperature_c: device.temperature(TemperatureSensor::Gpu).ok(),
        reasons: reason_bits(nvml, device),
        pcie_link_gen: device.current_pcie_link_gen().ok(),
        pcie_link_width: device.current_pcie_link_width().ok(),
    }
}

/// The body of the sampling thread once the device is found: takes the first sample,
/// reports ready, then samples every `interval` until told to stop (one last sample) or
/// until the session is dropped without `finish` (no last sample: nobody will read it).
fn sample_until_stopped(
    mut take_sample: impl FnMut() -> Sample,
    interval: Duration,
    ready: Ready,
    stop: mpsc::Receiver<()>,
) -> TelemetrySummary {
    let interval = interval.max(MIN_INTERVAL);
    let mut summariser = Summariser::new();
    summariser.add(&take_sample());
    if ready.send(Ok(())).is_err() {
        return summariser.finish();
    }
    drop(ready);
    // Ticks are at fixed times from the start, so the time NVML takes to answer does not
    // stretch the interval; a tick missed (a slow query, the thread descheduled) is
    // skipped rather than caught up in a burst.
    let mut next = Instant::now() + interval;
    loop {
        match stop.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {
                summariser.add(&take_sample());
                next += interval;
                let now = Instant::now();
                if next <= now {
                    next = now + interval;
                }
            }
            Ok(()) => {
                summariser.add(&take_sample());
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    summariser.finish()
}

/// A running sampler. `finish` wakes the thread at once (it waits on the stop channel,
/// not in a sleep), so it returns within one sample's time, not after an interval.
struct SamplerSession {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<TelemetrySummary>,
    interval: Duration,
}

impl TelemetrySession for SamplerSession {
    fn finish(self: Box<Self>) -> TelemetrySummary {
        let SamplerSession {
            stop,
            thread,
            interval,
        } = *self;
        // Fails only if the thread has already ended, which `join` then reports.
        let _ = stop.send(());
        match thread.join() {
            Ok(mut summary) => {
                summary
                    .readings
                    .insert("interval_ms".into(), json!(interval.as_secs_f64() * 1e3));
                summary
            }
            Err(_) => {
                let mut summary = TelemetrySummary::default();
                summary.readings.insert(
                    "error".into(),
                    json!("the telemetry thread panicked; no telemetry for this measurement"),
                );
                summary
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(sm: u32, mem: u32, power_mw: u32, temp: u32, reasons: u64) -> Sample {
        Sample {
            sm_clock_mhz: Some(sm),
            mem_clock_mhz: Some(mem),
            power_mw: Some(power_mw),
            temperature_c: Some(temp),
            reasons: Some(reasons),
            pcie_link_gen: Some(5),
            pcie_link_width: Some(16),
        }
    }

    fn summarise(samples: &[Sample]) -> TelemetrySummary {
        let mut s = Summariser::new();
        for sample in samples {
            s.add(sample);
        }
        s.finish()
    }

    #[test]
    fn reason_bits_match_nvml_wrapper() {
        use nvml_wrapper::bitmasks::device::ThrottleReasons as R;
        assert_eq!(reason::GPU_IDLE, R::GPU_IDLE.bits());
        assert_eq!(
            reason::APPLICATIONS_CLOCKS_SETTING,
            R::APPLICATIONS_CLOCKS_SETTING.bits()
        );
        assert_eq!(reason::SW_POWER_CAP, R::SW_POWER_CAP.bits());
        assert_eq!(reason::HW_SLOWDOWN, R::HW_SLOWDOWN.bits());
        assert_eq!(reason::SYNC_BOOST, R::SYNC_BOOST.bits());
        assert_eq!(reason::SW_THERMAL_SLOWDOWN, R::SW_THERMAL_SLOWDOWN.bits());
        assert_eq!(reason::HW_THERMAL_SLOWDOWN, R::HW_THERMAL_SLOWDOWN.bits());
        assert_eq!(
            reason::HW_POWER_BRAKE_SLOWDOWN,
            R::HW_POWER_BRAKE_SLOWDOWN.bits()
        );
        assert_eq!(
            reason::DISPLAY_CLOCK_SETTING,
            R::DISPLAY_CLOCK_SETTING.bits()
        );
        assert_eq!(KNOWN_REASONS, 0x1ff);
    }

    #[test]
    fn classify_splits_slowdowns_from_benign() {
        assert_eq!(classify_reasons(0), (vec![], vec![]));
        assert_eq!(
            classify_reasons(0x1ff),
            (
                vec![
                    "sw_power_cap",
                    "hw_slowdown",
                    "sync_boost",
                    "sw_thermal_slowdown",
                    "hw_thermal_slowdown",
                    "hw_power_brake_slowdown"
                ],
                vec![
                    "gpu_idle",
                    "applications_clocks_setting",
                    "display_clock_setting"
                ]
            )
        );
        assert_eq!(
            classify_reasons(reason::GPU_IDLE | reason::SW_POWER_CAP),
            (vec!["sw_power_cap"], vec!["gpu_idle"])
        );
        // Unknown bits are in neither list, and reported separately.
        assert_eq!(classify_reasons(0x200 | (1 << 40)), (vec![], vec![]));
        assert_eq!(
            unknown_reason_bits(0x200 | 0x4 | (1 << 40)),
            0x200 | (1 << 40)
        );
        assert_eq!(unknown_reason_bits(0x1ff), 0);
    }

    #[test]
    fn empty_summary() {
        let summary = summarise(&[]);
        assert_eq!(summary, TelemetrySummary::default());
        // Samples where nothing could be read are not samples.
        assert_eq!(
            summarise(&[Sample::default(); 3]),
            TelemetrySummary::default()
        );
    }

    #[test]
    fn one_throttled_sample_among_many() {
        let mut samples = vec![busy(1980, 2619, 500_000, 60, 0); 20];
        samples[7].reasons = Some(reason::SW_POWER_CAP | reason::HW_THERMAL_SLOWDOWN);
        samples[9].reasons = Some(reason::SW_POWER_CAP);
        samples[12].reasons = Some(reason::APPLICATIONS_CLOCKS_SETTING);
        let summary = summarise(&samples);
        assert_eq!(summary.samples, 20);
        assert!(summary.throttled);
        assert_eq!(
            summary.throttle_reasons,
            vec!["hw_thermal_slowdown", "sw_power_cap"]
        );
        assert_eq!(
            summary.readings["benign_reasons"],
            json!(["applications_clocks_setting"])
        );
        assert!(!summary
            .readings
            .contains_key("throttle_reasons_unavailable"));

        let calm = summarise(&[busy(1980, 2619, 500_000, 60, reason::GPU_IDLE); 5]);
        assert!(!calm.throttled);
        assert!(calm.throttle_reasons.is_empty());
        assert_eq!(calm.readings["benign_reasons"], json!(["gpu_idle"]));
    }

    #[test]
    fn min_max_mean() {
        let summary = summarise(&[
            busy(1500, 2600, 400_000, 55, 0),
            busy(1980, 2619, 700_000, 71, 0),
            busy(1755, 2610, 612_345, 64, 0),
        ]);
        let r = &summary.readings;
        assert_eq!(
            r["sm_clock_mhz"],
            json!({"min": 1500, "max": 1980, "mean": 1745.0})
        );
        // (2600 + 2619 + 2610) / 3 = 2609.666.. -> 2609.7
        assert_eq!(
            r["mem_clock_mhz"],
            json!({"min": 2600, "max": 2619, "mean": 2609.7})
        );
        // (400 + 700 + 612.345) / 3 = 570.78 W -> 570.8; max 700 W.
        assert_eq!(r["power_w"], json!({"mean": 570.8, "max": 700.0}));
        assert_eq!(r["temperature_c"], json!({"max": 71}));
        assert_eq!(r["pcie_link"], json!({"gen": 5, "width": 16}));
        assert_eq!(r["busy_samples"], json!(3));
        assert!(!summary.throttled);
    }

    #[test]
    fn missing_readings_are_skipped() {
        let summary = summarise(&[
            Sample {
                sm_clock_mhz: Some(1000),
                pcie_link_width: Some(8),
                ..Sample::default()
            },
            Sample {
                sm_clock_mhz: Some(2000),
                temperature_c: Some(50),
                pcie_link_gen: Some(4),
                ..Sample::default()
            },
            Sample {
                temperature_c: Some(70),
                ..Sample::default()
            },
        ]);
        assert_eq!(summary.samples, 3);
        let r = &summary.readings;
        // Two SM clock readings, not three with a zero.
        assert_eq!(
            r["sm_clock_mhz"],
            json!({"min": 1000, "max": 2000, "mean": 1500.0})
        );
        assert_eq!(r["temperature_c"], json!({"max": 70}));
        assert_eq!(r["pcie_link"], json!({"gen": 4, "width": 8}));
        assert!(!r.contains_key("mem_clock_mhz"));
        assert!(!r.contains_key("power_w"));
        // Never read, so "not throttled" means nothing; the summary says so.
        assert!(!summary.throttled);
        assert_eq!(r["throttle_reasons_unavailable"], json!(true));
        assert!(!r.contains_key("benign_reasons"));
    }

    #[test]
    fn idle_samples_stay_out_of_clock_statistics() {
        let idle = |sm, gen| Sample {
            pcie_link_gen: Some(gen),
            ..busy(sm, 405, 70_000, 35, reason::GPU_IDLE)
        };
        let summary = summarise(&[
            idle(345, 1),
            busy(1980, 2619, 690_000, 60, reason::SW_POWER_CAP),
            busy(1900, 2619, 700_000, 62, reason::SW_POWER_CAP),
            idle(345, 1),
        ]);
        let r = &summary.readings;
        assert_eq!(summary.samples, 4);
        assert_eq!(r["busy_samples"], json!(2));
        assert_eq!(
            r["sm_clock_mhz"],
            json!({"min": 1900, "max": 1980, "mean": 1940.0})
        );
        assert_eq!(r["power_w"], json!({"mean": 695.0, "max": 700.0}));
        assert_eq!(r["pcie_link"], json!({"gen": 5, "width": 16}));
        assert_eq!(summary.throttle_reasons, vec!["sw_power_cap"]);
        assert_eq!(r["benign_reasons"], json!(["gpu_idle"]));

        // Only idle samples: their readings are all there is.
        let only_idle = summarise(&[idle(345, 1), idle(360, 1)]);
        assert_eq!(only_idle.readings["busy_samples"], json!(0));
        assert_eq!(
            only_idle.readings["sm_clock_mhz"],
            json!({"min": 345, "max": 360, "mean": 352.5})
        );
    }

    #[test]
    fn unknown_reason_bits_are_recorded_not_counted() {
        let summary = summarise(&[busy(1980, 2619, 500_000, 60, 0x400 | reason::GPU_IDLE)]);
        assert!(!summary.throttled);
        assert_eq!(summary.readings["unknown_reason_bits"], json!("0x400"));
    }

    #[test]
    fn uuids_are_normalised() {
        let nvml_form = "GPU-5f0e4c1a-9b2d-3e4f-8a7b-0123456789ab";
        for raw in [
            nvml_form,
            "  GPU-5F0E4C1A-9B2D-3E4F-8A7B-0123456789AB ",
            "gpu-5f0e4c1a-9b2d-3e4f-8a7b-0123456789ab",
            "5f0e4c1a-9b2d-3e4f-8a7b-0123456789ab",
            "5f0e4c1a9b2d3e4f8a7b0123456789ab",
        ] {
            assert_eq!(normalise_uuid(raw).as_deref(), Some(nvml_form), "{raw}");
        }
        let mig = "MIG-7a1b2c3d-0000-1111-2222-333344445555";
        assert_eq!(normalise_uuid(mig).as_deref(), Some(mig));
        assert_eq!(normalise_uuid("not-a-uuid").as_deref(), Some("not-a-uuid"));
        assert_eq!(normalise_uuid("   "), None);
    }

    #[test]
    fn pci_bus_ids_are_normalised() {
        for (raw, want) in [
            ("0000:17:00.0", "00000000:17:00.0"),
            ("00000000:17:00.0", "00000000:17:00.0"),
            ("0000:af:00.0", "00000000:AF:00.0"),
            ("0000:AF:00.0", "00000000:AF:00.0"),
            (" 0001:3b:1f.7 ", "00000001:3B:1F.7"),
            ("17:00.0", "00000000:17:00.0"),
            ("0000:17:00", "00000000:17:00.0"),
        ] {
            assert_eq!(normalise_pci_bus_id(raw).as_deref(), Some(want), "{raw}");
        }
        for bad in [
            "",
            "17",
            "0000:17:20.0",
            "0000:17:00.8",
            "0000:100:00.0",
            "zz:00.0",
            "+1:00.0",
        ] {
            assert_eq!(normalise_pci_bus_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn power_limits_read_as_watts() {
        assert_eq!(milliwatts_text(700_000), "700");
        assert_eq!(milliwatts_text(312_500), "312.5");
    }

    /// A session on a fake sampler that counts its calls.
    fn fake_session(
        interval: Duration,
        calls: Arc<std::sync::atomic::AtomicU32>,
    ) -> Box<dyn TelemetrySession> {
        use std::sync::atomic::Ordering;
        let session = spawn_sampler(interval, move |ready, stop| {
            let take = || {
                calls.fetch_add(1, Ordering::SeqCst);
                busy(1980, 2619, 500_000, 60, 0)
            };
            sample_until_stopped(take, interval, ready, stop)
        });
        match session {
            Ok(session) => session,
            Err(reason) => panic!("{reason}"),
        }
    }

    #[test]
    fn short_session_has_two_samples_and_finishes_at_once() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let calls = Arc::new(AtomicU32::new(0));
        // An hour-long interval: only the first and the last sample can happen.
        let session = fake_session(Duration::from_secs(3600), Arc::clone(&calls));
        // The first sample is taken before the session is handed out.
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let started = Instant::now();
        let summary = session.finish();
        assert!(started.elapsed() < Duration::from_secs(5), "finish waited");
        assert_eq!(summary.samples, 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(summary.readings["interval_ms"], json!(3_600_000.0));
        assert_eq!(
            summary.readings["sm_clock_mhz"],
            json!({"min": 1980, "max": 1980, "mean": 1980.0})
        );
    }

    #[test]
    fn session_samples_every_interval() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let calls = Arc::new(AtomicU32::new(0));
        let interval = Duration::from_millis(5);
        let started = Instant::now();
        let session = fake_session(interval, Arc::clone(&calls));
        std::thread::sleep(Duration::from_millis(100));
        let summary = session.finish();
        let ticks = (started.elapsed().as_nanos() / interval.as_nanos()) as u32;
        // One sample per tick at most, plus the first and the last; a loaded machine
        // may skip ticks, but not all of them in 100 ms.
        assert!(summary.samples >= 4, "{summary:?}");
        assert!(
            summary.samples <= ticks + 2,
            "{} > {ticks} + 2",
            summary.samples
        );
        assert_eq!(summary.samples, calls.load(Ordering::SeqCst));
    }

    #[test]
    fn dropped_session_stops_its_thread() {
        use std::sync::atomic::AtomicU32;
        let calls = Arc::new(AtomicU32::new(0));
        drop(fake_session(Duration::from_millis(1), Arc::clone(&calls)));
        // The thread sees the stop channel closed and ends, dropping its closure and the
        // clone of `calls` in it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&calls) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            Arc::strong_count(&calls),
            1,
            "the sampling thread is still running"
        );
    }

    #[test]
    fn failed_start_reports_why() {
        let result = spawn_sampler(DEFAULT_INTERVAL, |ready, _stop| {
            let _ = ready.send(Err("no such device".into()));
            TelemetrySummary::default()
        });
        assert_eq!(result.err().as_deref(), Some("no such device"));
        let result = spawn_sampler(DEFAULT_INTERVAL, |_ready, _stop| {
            TelemetrySummary::default()
        });
        assert_eq!(
            result.err().as_deref(),
            Some("the telemetry thread stopped before its first sample")
        );
    }

    #[test]
    fn panicking_sampler_gives_an_empty_summary() {
        let session = spawn_sampler(DEFAULT_INTERVAL, |ready, stop| {
            let _ = ready.send(Ok(()));
            let _ = stop.recv();
            panic!("sampler failed (expected by this test)");
        });
        let summary = match session {
            Ok(session) => session.finish(),
            Err(reason) => panic!("{reason}"),
        };
        assert_eq!(summary.samples, 0);
        assert!(summary.readings.contains_key("error"));
    }

    /// On a machine without the driver, `init` fails with a sentence naming the library
    /// and does not panic. On a machine with one, the whole path runs on NVML's first
    /// device, looked up by its UUID as the backend does.
    #[test]
    fn init_fails_cleanly_or_works() {
        match Nvml::init() {
            Err(reason) => {
                assert!(reason.contains("libnvidia-ml"), "{reason}");
                assert!(reason.ends_with("telemetry is off"), "{reason}");
            }
            Ok(nvml) => {
                let system = nvml.static_properties(None, None);
                assert!(system.contains_key("driver_version"), "{system:?}");
                let Some(uuid) = nvml
                    .inner
                    .device_by_index(0)
                    .ok()
                    .and_then(|d| d.uuid().ok())
                else {
                    return; // a driver but no GPU
                };
                let props = nvml.static_properties(Some(&uuid), None);
                assert!(props.contains_key("max_sm_clock_mhz"), "{props:?}");
                let session = match nvml.try_start(Some(&uuid), None, Duration::from_millis(5)) {
                    Ok(session) => session,
                    Err(reason) => panic!("{reason}"),
                };
                std::thread::sleep(Duration::from_millis(30));
                let summary = session.finish();
                assert!(summary.samples >= 2, "{summary:?}");
                assert!(nvml
                    .start(Some("GPU-no-such-device"), None, DEFAULT_INTERVAL)
                    .is_none());
            }
        }
    }
}
