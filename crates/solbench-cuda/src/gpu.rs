//! Our small checked layer over cudarc's driver bindings: device and pinned host buffers
//! as RAII types over raw pointers (benchmarks need exact control of flags, placement and
//! copy calls that cudarc's `CudaSlice` hides), kernel modules compiled by NVRTC, and the
//! event timer that keeps launch overhead out of every number.
//!
//! Layering as in cudarc: `cudarc::driver::sys` (raw FFI) → `CUresult::result()` (checked)
//! → the types here. Every error becomes a sentence naming the call that failed.

use crate::compile::Compiler;
use cudarc::driver::sys::{self, CUdeviceptr};
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaModule, CudaStream, DriverError};
use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

/// `what failed: CUDA_ERROR_...` as one sentence.
pub fn cuda_err(what: &str) -> impl Fn(DriverError) -> String + '_ {
    move |e| format!("{what} failed: {e}")
}

/// A preparation step that should have worked and did not (recorded as ERROR, not SKIPPED).
pub fn failed(e: String) -> solbench_core::backend::PrepareError {
    solbench_core::backend::PrepareError::Failed(e)
}

/// Lets `func` use `bytes` of dynamic shared memory: above 48 KiB a kernel must opt in, and
/// setting it below is harmless, so workloads always set exactly what their launch uses.
pub fn allow_shared_memory(func: &CudaFunction, bytes: u32) -> Result<(), String> {
    // SAFETY: a valid function handle and attribute.
    check("raising the kernel's shared-memory limit", unsafe {
        sys::cuFuncSetAttribute(
            func.cu_function(),
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
    })
}

/// Runs a raw driver call and names it on failure.
pub fn check(what: &str, r: sys::CUresult) -> Result<(), String> {
    r.result().map_err(cuda_err(what))
}

/// Device memory from `cuMemAlloc` (256-byte aligned), freed on drop in its context.
pub struct DeviceBuffer {
    ptr: CUdeviceptr,
    bytes: usize,
    ctx: Arc<CudaContext>,
}

impl DeviceBuffer {
    pub fn new(ctx: &Arc<CudaContext>, bytes: usize) -> Result<DeviceBuffer, String> {
        ctx.bind_to_thread()
            .map_err(cuda_err("binding the CUDA context"))?;
        let mut ptr: CUdeviceptr = 0;
        // SAFETY: ptr is a valid out-pointer; the context is current.
        check(
            &format!(
                "allocating {} of device memory",
                solbench_core::size::format_size(bytes as u64)
            ),
            unsafe { sys::cuMemAlloc_v2(&mut ptr, bytes.max(1)) },
        )?;
        Ok(DeviceBuffer {
            ptr,
            bytes,
            ctx: ctx.clone(),
        })
    }

    pub fn ptr(&self) -> CUdeviceptr {
        self.ptr
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Copies `out.len()` bytes from `offset` to host memory (synchronous). Runs on the
    /// legacy stream, which does not wait for non-blocking streams: callers synchronize the
    /// stream that wrote the buffer first (the batch timer does, on its end event).
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), String> {
        if offset + out.len() > self.bytes {
            return Err("read past the end of a device buffer (a bug)".into());
        }
        self.ctx
            .bind_to_thread()
            .map_err(cuda_err("binding the CUDA context"))?;
        // SAFETY: bounds checked above; out is valid for out.len() bytes.
        check("copying results back to the host", unsafe {
            sys::cuMemcpyDtoH_v2(
                out.as_mut_ptr() as *mut c_void,
                self.ptr + offset as u64,
                out.len(),
            )
        })
    }

    /// Copies host bytes to `offset` (synchronous).
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), String> {
        if offset + data.len() > self.bytes {
            return Err("write past the end of a device buffer (a bug)".into());
        }
        self.ctx
            .bind_to_thread()
            .map_err(cuda_err("binding the CUDA context"))?;
        // SAFETY: bounds checked above.
        check("copying data to the device", unsafe {
            sys::cuMemcpyHtoD_v2(
                self.ptr + offset as u64,
                data.as_ptr() as *const c_void,
                data.len(),
            )
        })?;
        // From pageable memory the call may return once the data is staged, before the DMA
        // lands, and our non-blocking streams do not order after the legacy stream.
        self.ctx
            .synchronize()
            .map_err(cuda_err("waiting for the copy to the device"))
    }

    /// Sets every byte to 0xFF (NaN in every float type, the largest value of unsigned
    /// integers), so an output a kernel never writes cannot pass a check by holding stale or
    /// zeroed memory. Waits for the memset: it runs on the legacy stream, which our
    /// non-blocking streams do not wait for, so it could otherwise land after the kernel.
    pub fn poison(&self) -> Result<(), String> {
        self.ctx
            .bind_to_thread()
            .map_err(cuda_err("binding the CUDA context"))?;
        // SAFETY: self.bytes live bytes in the bound context.
        check("poisoning an output buffer", unsafe {
            sys::cuMemsetD8_v2(self.ptr, 0xFF, self.bytes)
        })?;
        self.ctx
            .synchronize()
            .map_err(cuda_err("waiting for the poison memset"))
    }

    /// Reads the whole buffer in chunks of at most `chunk` bytes, handing each chunk and its
    /// byte offset to `f` (so multi-GiB buffers are verified in bounded host memory).
    pub fn for_each_chunk(
        &self,
        chunk: usize,
        mut f: impl FnMut(usize, &[u8]),
    ) -> Result<(), String> {
        let mut host = vec![0u8; chunk.min(self.bytes).max(1)];
        let mut off = 0;
        while off < self.bytes {
            let len = chunk.min(self.bytes - off);
            self.read(off, &mut host[..len])?;
            f(off, &host[..len]);
            off += len;
        }
        Ok(())
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // Errors on free cannot be reported from drop; a failed free leaks only device memory.
        let _ = self.ctx.bind_to_thread();
        // SAFETY: ptr came from cuMemAlloc in this context and is freed once.
        let _ = unsafe { sys::cuMemFree_v2(self.ptr) };
    }
}

/// Page-locked host memory from `cuMemHostAlloc`. `PORTABLE` (usable from every context),
/// never write-combined: write-combined memory is fast for the GPU to read but uncached
/// for the CPU, so it would flatter H2D and make verification crawl.
pub struct PinnedBuffer {
    ptr: *mut u8,
    bytes: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: the buffer is plain host memory owned by this value.
unsafe impl Send for PinnedBuffer {}

impl PinnedBuffer {
    pub fn new(ctx: &Arc<CudaContext>, bytes: usize, mapped: bool) -> Result<PinnedBuffer, String> {
        ctx.bind_to_thread()
            .map_err(cuda_err("binding the CUDA context"))?;
        let mut p: *mut c_void = std::ptr::null_mut();
        let mut flags = sys::CU_MEMHOSTALLOC_PORTABLE;
        if mapped {
            flags |= sys::CU_MEMHOSTALLOC_DEVICEMAP;
        }
        // SAFETY: p is a valid out-pointer.
        check(
            &format!(
                "allocating {} of pinned host memory",
                solbench_core::size::format_size(bytes as u64)
            ),
            unsafe { sys::cuMemHostAlloc(&mut p, bytes.max(1), flags) },
        )?;
        Ok(PinnedBuffer {
            ptr: p as *mut u8,
            bytes,
            ctx: ctx.clone(),
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for bytes bytes for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.bytes) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.bytes) }
    }

    pub fn host_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The device address of a mapped (`DEVICEMAP`) buffer.
    pub fn device_ptr(&self) -> Result<CUdeviceptr, String> {
        let mut d: CUdeviceptr = 0;
        // SAFETY: ptr is a live mapped allocation.
        check("mapping pinned memory into the device", unsafe {
            sys::cuMemHostGetDevicePointer_v2(&mut d, self.ptr as *mut c_void, 0)
        })?;
        Ok(d)
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: ptr came from cuMemHostAlloc and is freed once.
        let _ = unsafe { sys::cuMemFreeHost(self.ptr as *mut c_void) };
    }
}

/// Kernels of one kernels/*.cu file, compiled for this device (or taken from the cache)
/// and loaded into its context.
pub struct Kernels {
    module: Arc<CudaModule>,
    /// Where the module came from, for the record.
    pub origin: String,
}

impl Kernels {
    pub fn load(
        ctx: &Arc<CudaContext>,
        compiler: &Compiler,
        file: &str,
        arch: &str,
    ) -> Result<Kernels, String> {
        let compiled = compiler.compile(file, arch, &[])?;
        let origin = format!(
            "{file} for {arch}, {} (key {})",
            if compiled.from_cache {
                "from the kernel cache"
            } else {
                "compiled by NVRTC"
            },
            &compiled.key[..12.min(compiled.key.len())]
        );
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(compiled.cubin))
            .map_err(|e| {
                format!(
                    "loading {file} (CUBIN for {arch}) into the driver failed: {e}; a driver older than the NVRTC that compiled it rejects the image, so update the driver or use an NVRTC of the driver's CUDA version"
                )
            })?;
        Ok(Kernels { module, origin })
    }

    pub fn function(&self, name: &str) -> Result<CudaFunction, String> {
        self.module
            .load_function(name)
            .map_err(|e| format!("kernel {name} is missing from its module: {e}"))
    }
}

/// How long the GPU waits for the host to release a batch before giving up.
const RELEASE_TIMEOUT_NS: u64 = 5_000_000_000;
/// Work items queued behind one hold: well under the driver's launch queue depth (about a
/// thousand entries), beyond which enqueueing would block with the stream still held.
pub const MAX_QUEUED: u32 = 256;

/// Times batches of back-to-back work with CUDA events, nvbandwidth's way: a one-thread
/// kernel holds the stream on a host-mapped flag while the whole batch is enqueued, then
/// the host releases it, so the events bracket GPU work only, never launch overhead.
pub struct BatchTimer {
    ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    /// A second stream for two-direction transfers.
    pub stream2: Arc<CudaStream>,
    start: CudaEvent,
    end: CudaEvent,
    side: CudaEvent,
    flag: PinnedBuffer,
    flag_dev: CUdeviceptr,
    timed_out: DeviceBuffer,
    wait: CudaFunction,
}

impl BatchTimer {
    pub fn new(ctx: &Arc<CudaContext>, util: &Kernels) -> Result<BatchTimer, String> {
        let stream = ctx.new_stream().map_err(cuda_err("creating a stream"))?;
        let stream2 = ctx.new_stream().map_err(cuda_err("creating a stream"))?;
        let ev = || {
            ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(cuda_err("creating a timing event"))
        };
        let flag = PinnedBuffer::new(ctx, 4, true)?;
        let flag_dev = flag.device_ptr()?;
        Ok(BatchTimer {
            ctx: ctx.clone(),
            stream,
            stream2,
            start: ev()?,
            end: ev()?,
            side: ev()?,
            flag,
            flag_dev,
            timed_out: DeviceBuffer::new(ctx, 4)?,
            wait: util.function("sb_wait_flag")?,
        })
    }

    fn set_flag(&self, v: u32) {
        // SAFETY: the flag is 4 live, aligned bytes of mapped pinned memory; volatile so the
        // store is not elided or reordered past the enqueue calls.
        unsafe { std::ptr::write_volatile(self.flag.host_ptr() as *mut u32, v) };
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    fn hold(&self) -> Result<(), String> {
        self.set_flag(0);
        self.ctx
            .bind_to_thread()
            .map_err(cuda_err("binding the CUDA context"))?;
        // SAFETY: 4 live bytes, on our stream.
        check("clearing the timeout flag", unsafe {
            sys::cuMemsetD8Async(self.timed_out.ptr(), 0, 4, self.stream.cu_stream())
        })?;
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        let timeout = RELEASE_TIMEOUT_NS;
        let out = self.timed_out.ptr();
        // SAFETY: arguments match sb_wait_flag(const volatile u32*, u64, u32*).
        unsafe {
            use cudarc::driver::PushKernelArg;
            self.stream
                .launch_builder(&self.wait)
                .arg(&self.flag_dev)
                .arg(&timeout)
                .arg(&out)
                .launch(cfg)
        }
        .map_err(cuda_err("launching the batch hold kernel"))?;
        Ok(())
    }

    fn release_and_measure(&self) -> Result<f64, String> {
        self.set_flag(1);
        self.end
            .synchronize()
            .map_err(cuda_err("waiting for the batch"))?;
        let mut t = [0u8; 4];
        self.timed_out.read(0, &mut t)?;
        if u32::from_le_bytes(t) != 0 {
            return Err("the GPU waited more than 5 s for the host to finish enqueueing a batch; the host is overloaded or the launch queue filled, so this batch was not timed".into());
        }
        let ms = self
            .start
            .elapsed_ms(&self.end)
            .map_err(cuda_err("reading the timing events"))?;
        Ok(ms as f64 / 1e3)
    }

    /// Times `iters` calls of `enqueue(stream)`, all queued back to back on one stream.
    pub fn time(
        &self,
        iters: u32,
        mut enqueue: impl FnMut(&CudaStream) -> Result<(), String>,
    ) -> Result<Duration, String> {
        let mut total = 0.0;
        let mut left = iters;
        while left > 0 {
            let batch = left.min(MAX_QUEUED);
            self.hold()?;
            self.start
                .record(&self.stream)
                .map_err(cuda_err("recording the start event"))?;
            for _ in 0..batch {
                if let Err(e) = enqueue(&self.stream) {
                    self.set_flag(1); // never leave the GPU spinning
                    let _ = self.stream.synchronize();
                    return Err(e);
                }
            }
            self.end
                .record(&self.stream)
                .map_err(cuda_err("recording the end event"))?;
            total += self.release_and_measure()?;
            left -= batch;
        }
        Ok(Duration::from_secs_f64(total))
    }

    /// Times `iters` rounds of two streams working at once (`first` on `stream`, `second` on
    /// `stream2`); both start at the start event and the end event waits for both.
    pub fn time_two(
        &self,
        iters: u32,
        mut first: impl FnMut(&CudaStream) -> Result<(), String>,
        mut second: impl FnMut(&CudaStream) -> Result<(), String>,
    ) -> Result<Duration, String> {
        let mut total = 0.0;
        let mut left = iters;
        while left > 0 {
            let batch = left.min(MAX_QUEUED / 2);
            self.hold()?;
            self.start
                .record(&self.stream)
                .map_err(cuda_err("recording the start event"))?;
            self.stream2
                .wait(&self.start)
                .map_err(cuda_err("ordering the second stream"))?;
            let mut r = Ok(());
            for _ in 0..batch {
                r = first(&self.stream).and_then(|_| second(&self.stream2));
                if r.is_err() {
                    break;
                }
            }
            if let Err(e) = r {
                self.set_flag(1);
                let _ = self.stream.synchronize();
                let _ = self.stream2.synchronize();
                return Err(e);
            }
            self.side
                .record(&self.stream2)
                .map_err(cuda_err("recording the second stream's end"))?;
            self.stream
                .wait(&self.side)
                .map_err(cuda_err("joining the streams"))?;
            self.end
                .record(&self.stream)
                .map_err(cuda_err("recording the end event"))?;
            total += self.release_and_measure()?;
            left -= batch;
        }
        Ok(Duration::from_secs_f64(total))
    }
}

/// UUID bytes in NVIDIA's `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` form (nvidia-smi, NVML).
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let h: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_matches_nvidia_smi_format() {
        let b: [u8; 16] = [
            0x5f, 0x0a, 0x9a, 0x3c, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa,
            0xbb, 0xcc,
        ];
        assert_eq!(format_uuid(&b), "GPU-5f0a9a3c-1122-3344-5566-778899aabbcc");
    }
}
