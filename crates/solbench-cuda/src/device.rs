//! The CUDA backend: discovery of NVIDIA GPUs through the driver, and `CudaDevice`, which
//! prepares workloads on one of them.

use crate::compile::{self, Compiler, NvrtcInfo};
use crate::gpu::{cuda_err, format_uuid, Kernels};
use crate::launch;
use crate::probe::{self, DriverStatus};
use crate::telemetry::{self, Nvml};
use cudarc::driver::sys::{self, CUdevice_attribute as A};
use cudarc::driver::CudaContext;
use solbench_core::backend::{
    Availability, Backend, Device, DeviceInfo, MemoryLevel, PrepareError, TelemetrySession,
    Workload,
};
use solbench_core::size::format_size;
use solbench_core::Case;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Everything the backend needs once CUDA is known to work.
struct Ready {
    driver: DriverStatus,
    /// cuBLASLt, or why GEMMs cannot run (not fatal: the other families still run).
    cublaslt: Result<crate::cublaslt::CublasLtInfo, String>,
    nvrtc: NvrtcInfo,
    compiler: Arc<Compiler>,
    nvml: Option<Nvml>,
    nvml_error: Option<String>,
}

/// NVIDIA GPUs through the CUDA driver API (cudarc, loaded at run time).
#[derive(Default)]
pub struct CudaBackend {
    ready: OnceLock<Result<Arc<Ready>, String>>,
}

impl CudaBackend {
    pub fn new() -> CudaBackend {
        CudaBackend::default()
    }

    /// Probes once: driver, NVRTC, headers, NVML. Never panics.
    fn ready(&self) -> Result<Arc<Ready>, String> {
        self.ready
            .get_or_init(|| {
                let driver = probe::driver_status()?;
                let compiler = Compiler::new()?;
                let nvrtc = compiler.nvrtc().clone();
                let (nvml, nvml_error) = match Nvml::init() {
                    Ok(n) => (Some(n), None),
                    Err(e) => (None, Some(e)),
                };
                Ok(Arc::new(Ready {
                    driver,
                    cublaslt: crate::cublaslt::probe(),
                    nvrtc,
                    compiler: Arc::new(compiler),
                    nvml,
                    nvml_error,
                }))
            })
            .clone()
    }
}

fn attr(dev: sys::CUdevice, a: A) -> Option<i32> {
    let mut v = 0;
    // SAFETY: valid out-pointer; dev came from cuDeviceGet.
    let r = unsafe { sys::cuDeviceGetAttribute(&mut v, a, dev) };
    (r == sys::CUresult::CUDA_SUCCESS).then_some(v)
}

/// Identity and properties of GPU `ordinal`, read without creating a context.
fn describe(ordinal: usize, ready: &Ready) -> Result<DeviceInfo, String> {
    let mut dev: sys::CUdevice = 0;
    // SAFETY: valid out-pointer; the driver is initialised (probe).
    crate::gpu::check(&format!("opening GPU {ordinal}"), unsafe {
        sys::cuDeviceGet(&mut dev, ordinal as i32)
    })?;
    let mut name = [0i8; 256];
    // SAFETY: the buffer holds 256 chars.
    crate::gpu::check("reading the GPU name", unsafe {
        sys::cuDeviceGetName(name.as_mut_ptr(), 256, dev)
    })?;
    let name = cstr(&name);
    let mut uuid = sys::CUuuid { bytes: [0; 16] };
    // SAFETY: valid out-pointer.
    let uuid = (unsafe { sys::cuDeviceGetUuid_v2(&mut uuid, dev) } == sys::CUresult::CUDA_SUCCESS)
        .then(|| format_uuid(&uuid.bytes.map(|b| b as u8)));
    let mut bus = [0i8; 64];
    // SAFETY: the buffer holds 64 chars.
    let pci_bus_id = (unsafe { sys::cuDeviceGetPCIBusId(bus.as_mut_ptr(), 64, dev) }
        == sys::CUresult::CUDA_SUCCESS)
        .then(|| cstr(&bus))
        .and_then(|b| probe::normalize_pci_bus_id(&b));
    let mut total = 0usize;
    // SAFETY: valid out-pointer.
    crate::gpu::check("reading the GPU memory size", unsafe {
        sys::cuDeviceTotalMem_v2(&mut total, dev)
    })?;
    let major = attr(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).unwrap_or(0);
    let minor = attr(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).unwrap_or(0);
    let sms = attr(dev, A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).unwrap_or(0);
    let clock = attr(dev, A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE).unwrap_or(0);
    let mem_clock = attr(dev, A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE).unwrap_or(0);
    let bus_width = attr(dev, A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH).unwrap_or(0);
    let l2 = attr(dev, A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE).unwrap_or(0);
    let arch = compile::arch_for(major, minor);

    let mut p = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        p.insert(k.to_string(), v);
    };
    put("compute_capability", format!("{major}.{minor}"));
    put("sm_count", sms.to_string());
    put("sm_clock_max_mhz", (clock / 1000).to_string());
    put("memory_clock_mhz", (mem_clock / 1000).to_string());
    put("memory_bus_width_bits", bus_width.to_string());
    put("l2_cache_bytes", l2.to_string());
    if mem_clock > 0 && bus_width > 0 {
        put(
            "memory_bandwidth_theoretical_gb_s",
            format!(
                "{:.0}",
                launch::theoretical_memory_gb_s(mem_clock, bus_width)
            ),
        );
    }
    if sms > 0 && clock > 0 {
        put(
            "shared_memory_bandwidth_theoretical_gb_s",
            format!("{:.0}", launch::theoretical_smem_gb_s(sms, clock)),
        );
    }
    for (k, a) in [
        (
            "shared_memory_per_sm_bytes",
            A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
        ),
        (
            "shared_memory_per_block_optin_bytes",
            A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
        ),
        (
            "max_threads_per_sm",
            A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR,
        ),
        ("copy_engines", A::CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT),
        ("multi_gpu_board", A::CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD),
        (
            "persisting_l2_max_bytes",
            A::CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE,
        ),
    ] {
        if let Some(v) = attr(dev, a) {
            put(k, v.to_string());
        }
    }
    put(
        "nvrtc",
        format!("{}.{}", ready.nvrtc.version.0, ready.nvrtc.version.1),
    );
    if let Some(b) = &pci_bus_id {
        if let Some(n) = probe::numa_node(b) {
            put("numa_node", n.to_string());
        }
    }
    if let Some(nvml) = &ready.nvml {
        for (k, v) in nvml.static_properties(uuid.as_deref(), pci_bus_id.as_deref()) {
            put(&format!("nvml.{k}"), v);
        }
    } else if let Some(e) = &ready.nvml_error {
        put("telemetry", e.clone());
    }

    // HBM parts have 1024-bit stacks; everything narrower is GDDR.
    let main_name = if bus_width >= 1024 { "HBM" } else { "GDDR" };
    let mut levels = Vec::new();
    if l2 > 0 {
        levels.push(MemoryLevel {
            name: "L2".into(),
            bytes: l2 as u64,
            detail: format!("{} shared by {sms} SMs", format_size(l2 as u64)),
        });
    }
    levels.push(MemoryLevel {
        name: main_name.into(),
        bytes: total as u64,
        detail: format!("{bus_width}-bit bus"),
    });
    Ok(DeviceInfo {
        backend: "cuda".into(),
        index: ordinal,
        name,
        pci_device_id: pci_bus_id.as_deref().and_then(probe::pci_product_id),
        uuid,
        pci_bus_id,
        memory_bytes: Some(total as u64),
        compute_units: Some(sms as u32),
        arch: Some(arch),
        driver: Some(format!(
            "CUDA {}",
            probe::version_text(ready.driver.cuda_version)
        )),
        memory_levels: levels,
        properties: p,
    })
}

fn cstr(buf: &[i8]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn availability(&self) -> Availability {
        match self.ready() {
            Ok(r) => Availability::Available {
                detail: format!(
                    "driver CUDA {}, NVRTC {}.{}, {} GPU{}, {}{}",
                    probe::version_text(r.driver.cuda_version),
                    r.nvrtc.version.0,
                    r.nvrtc.version.1,
                    r.driver.device_count,
                    if r.driver.device_count == 1 { "" } else { "s" },
                    r.compiler.headers().describe(),
                    if r.nvml.is_some() {
                        ", NVML telemetry on"
                    } else {
                        ", no NVML telemetry"
                    }
                ),
            },
            Err(reason) => Availability::Unavailable { reason },
        }
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>, String> {
        let r = self.ready()?;
        (0..r.driver.device_count as usize)
            .map(|i| describe(i, &r))
            .collect()
    }

    fn open(&self, index: usize) -> Result<Box<dyn Device>, String> {
        let r = self.ready()?;
        let info = describe(index, &r)?;
        let ctx = std::panic::catch_unwind(|| CudaContext::new(index))
            .map_err(|_| format!("creating a CUDA context on GPU {index} panicked inside cudarc"))?
            .map_err(cuda_err("creating a CUDA context"))?;
        // One stream per workload plus raw pointers: cudarc's cross-stream event tracking
        // would only add event records to every launch.
        // SAFETY: we never share cudarc slices across streams.
        unsafe { ctx.disable_event_tracking() };
        Ok(Box::new(CudaDevice {
            ctx,
            info,
            ready: r,
            kernels: Mutex::new(BTreeMap::new()),
        }))
    }
}

/// One GPU, with its context and the kernel modules loaded so far.
pub struct CudaDevice {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) info: DeviceInfo,
    ready: Arc<Ready>,
    kernels: Mutex<BTreeMap<String, Arc<Kernels>>>,
}

impl CudaDevice {
    /// The compiled module of kernels/`file`, compiled (or taken from the cache) on first use.
    pub(crate) fn kernels(&self, file: &str) -> Result<Arc<Kernels>, String> {
        let mut map = self
            .kernels
            .lock()
            .map_err(|_| "kernel table poisoned".to_string())?;
        if let Some(k) = map.get(file) {
            return Ok(k.clone());
        }
        let arch = self.arch();
        compile::check_arch(&self.ready.nvrtc, &arch)?;
        let k = Arc::new(Kernels::load(&self.ctx, &self.ready.compiler, file, &arch)?);
        map.insert(file.to_string(), k.clone());
        Ok(k)
    }

    /// cuBLASLt's version, or why it cannot be used.
    pub(crate) fn cublaslt(&self) -> Result<&crate::cublaslt::CublasLtInfo, String> {
        self.ready.cublaslt.as_ref().map_err(|e| e.clone())
    }

    /// (major, minor) from the recorded properties.
    pub(crate) fn compute_capability(&self) -> (i32, i32) {
        self.info
            .properties
            .get("compute_capability")
            .and_then(|v| v.split_once('.'))
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .unwrap_or((0, 0))
    }

    pub(crate) fn arch(&self) -> String {
        self.info.arch.clone().unwrap_or_else(|| "sm_80".into())
    }

    pub(crate) fn sm_count(&self) -> u32 {
        self.info.compute_units.unwrap_or(1)
    }

    /// A context on another GPU (for peer copies).
    pub(crate) fn peer_context(&self, index: usize) -> Result<Arc<CudaContext>, String> {
        if index >= self.ready.driver.device_count as usize {
            return Err(format!(
                "GPU {index} does not exist (the driver sees {})",
                self.ready.driver.device_count
            ));
        }
        let ctx = std::panic::catch_unwind(|| CudaContext::new(index))
            .map_err(|_| format!("creating a CUDA context on GPU {index} panicked inside cudarc"))?
            .map_err(cuda_err("creating a CUDA context on the peer GPU"))?;
        // SAFETY: as in open().
        unsafe { ctx.disable_event_tracking() };
        Ok(ctx)
    }
}

impl Device for CudaDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn timing_method(&self) -> &'static str {
        "CUDA events around batches held back by a host flag until fully enqueued (launch overhead excluded)"
    }

    fn prepare(&self, case: &Case) -> Result<Box<dyn Workload + '_>, PrepareError> {
        match case {
            Case::Memory(m) => crate::memory::prepare(self, m),
            Case::Gemm(g) => Ok(Box::new(crate::gemm::prepare(self, g)?)),
            Case::Attention(a) if a.phase == solbench_core::case::AttentionPhase::Decode => {
                crate::attention::prepare(self, a)
            }
            Case::Attention(a) if a.phase == solbench_core::case::AttentionPhase::Prefill => {
                crate::attention_prefill::prepare(self, a)
            }
            Case::Collective(_) => Err(PrepareError::Unsupported(
                "collectives need every rank at once, so they run through `solbench collectives` (NCCL over all local GPUs, or one process per GPU under mpirun/srun/torchrun), not `solbench run`".into(),
            )),
            other => Err(PrepareError::Unsupported(format!(
                "the CUDA backend does not run {} cases yet",
                other.family()
            ))),
        }
    }

    fn start_telemetry(&self) -> Option<Box<dyn TelemetrySession>> {
        let nvml = self.ready.nvml.as_ref()?;
        nvml.start(
            self.info.uuid.as_deref(),
            self.info.pci_bus_id.as_deref(),
            telemetry::DEFAULT_INTERVAL,
        )
    }
}
