//! The SIMT emulation harness: runs the unchanged CUDA kernels of `kernels/` on the CPU with
//! CUDA's execution semantics, so every CI run executes them against the host oracle, not
//! only compiles them. Test infrastructure only: nothing it runs is a measurement.
//!
//! The kernels are compiled as C++17 by the host compiler against an emulation header
//! (`cpp/simt.h`, see build.rs). Each thread of a block is a real OS thread, so
//! `__syncthreads()` is a real barrier; warp intrinsics are rendezvous of the lanes in their
//! mask; blocks run one after another. Buffers are guarded: out-of-bounds writes are found
//! in poisoned margins after every launch, and cache-hinted accesses (`__ldcg`, `__stcg`, ...)
//! are bounds-checked as they happen. A deadlock (a barrier not every thread reaches) is
//! detected exactly and reported with the kernel, the block and who waited where; a watchdog
//! bounds every other wait. Built with `SOLBENCH_SIMT_TSAN=1`, the kernels run under
//! ThreadSanitizer and every race it reports fails the launch.
//!
//! ```no_run
//! use solbench_simt::{args, Buffer, Simt};
//! let out = Buffer::zeroed::<f64>(1000, "a").unwrap();
//! let n = 1000u64;
//! Simt::new()
//!     .launch("sb_fill_f64", 4, 256, 0, &args![&out, n, 7u64])
//!     .unwrap();
//! let values: Vec<f64> = out.read();
//! assert_eq!(values.len(), 1000);
//! ```
//!
//! See docs/simt-harness.md for what a passing run proves and what it does not.

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr, CString};
use std::fmt;
use std::ptr::NonNull;
use std::time::Duration;

mod ffi {
    use super::*;

    #[repr(C)]
    pub struct SbSimtArg {
        pub kind: c_uint,
        pub bits: c_ulonglong,
    }

    #[repr(C)]
    pub struct SbSimtOptions {
        pub serial: c_uint,
        pub reverse: c_uint,
        pub timeout_ms: c_uint,
        pub sms: c_uint,
    }

    extern "C" {
        pub fn sb_simt_alloc(bytes: usize, label: *const c_char) -> *mut c_void;
        pub fn sb_simt_free(user: *mut c_void);
        pub fn sb_simt_kernel_count() -> c_uint;
        pub fn sb_simt_kernel_name(i: c_uint) -> *const c_char;
        pub fn sb_simt_kernel_file(i: c_uint) -> *const c_char;
        pub fn sb_simt_kernel_params(i: c_uint, kinds: *mut c_uint, cap: c_uint) -> c_uint;
        pub fn sb_simt_tsan() -> c_int;
        #[allow(clippy::too_many_arguments)]
        pub fn sb_simt_launch(
            kernel: *const c_char,
            grid: *const c_uint,
            block: *const c_uint,
            shared_bytes: c_uint,
            args: *const SbSimtArg,
            nargs: c_uint,
            options: *const SbSimtOptions,
            msg: *mut c_char,
            msg_cap: usize,
        ) -> c_int;
    }
}

// ============================================================================ errors

/// What went wrong with a launch (or an allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The kernel ran to the end but misbehaved: an out-of-bounds access, a bad address, a
    /// misaligned `ldmatrix`/`cp.async`, or (under TSan) a data race.
    Kernel,
    /// The launch was aborted: a deadlock (a barrier or warp collective that cannot
    /// complete), a mismatched warp collective, or a block that made no progress before the
    /// watchdog fired.
    Aborted,
    /// The request itself is wrong: unknown kernel, argument count or kinds that do not
    /// match the kernel's parameters, or a grid/block/shared-memory size CUDA rejects.
    BadLaunch,
    /// An earlier launch left threads running that could not be stopped; the harness
    /// refuses every launch in this process from then on.
    Wedged,
    /// A buffer could not be allocated or written.
    Buffer,
}

/// A launch or buffer error; the message names the kernel and says what happened where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimtError {
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for SimtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SimtError {}

fn buffer_error(message: String) -> SimtError {
    SimtError {
        kind: ErrorKind::Buffer,
        message,
    }
}

// ============================================================================ buffers

mod sealed {
    pub trait Sealed {}
}

/// Plain-old-data element types a [`Buffer`] can be filled with and read back as: every bit
/// pattern is a valid value and there is no padding.
pub trait Pod: sealed::Sealed + Copy + Default + 'static {}
macro_rules! pod {
    ($($t:ty),*) => { $(impl sealed::Sealed for $t {} impl Pod for $t {})* };
}
pod!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

/// "Device" memory for the harness: a heap allocation with 4 KiB poisoned margins before and
/// after (checked after every launch), 4 KiB-aligned like `cuMemAlloc`'s 256 B or better.
/// Fresh buffers hold 0xFF bytes (NaN as f32/f64), as the CUDA backend poisons outputs.
///
/// Contents move in and out by copy ([`Buffer::write`], [`Buffer::read`]): no reference
/// into the memory ever outlives a call, so a kernel writing it through a raw pointer during
/// [`Simt::launch`] cannot alias a Rust reference.
pub struct Buffer {
    ptr: NonNull<u8>,
    bytes: usize,
    label: String,
}

// SAFETY: the buffer exclusively owns its allocation; the runtime serialises launches and
// allocation changes. It is not Sync: `write` through `&self` needs one thread at a time.
unsafe impl Send for Buffer {}

impl Buffer {
    /// A buffer of `bytes` bytes holding 0xFF; `label` names it in out-of-bounds reports.
    pub fn new(bytes: usize, label: &str) -> Result<Buffer, SimtError> {
        let c_label = CString::new(label)
            .map_err(|_| buffer_error(format!("buffer label {label:?} contains a NUL byte")))?;
        // SAFETY: a valid C string; the runtime copies the label.
        let p = unsafe { ffi::sb_simt_alloc(bytes, c_label.as_ptr()) };
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| {
            buffer_error(format!("allocating {bytes} bytes for '{label}' failed"))
        })?;
        Ok(Buffer {
            ptr,
            bytes,
            label: label.to_string(),
        })
    }

    /// A buffer holding `data`.
    pub fn from_slice<T: Pod>(label: &str, data: &[T]) -> Result<Buffer, SimtError> {
        let b = Buffer::new(std::mem::size_of_val(data), label)?;
        b.write(data)?;
        Ok(b)
    }

    /// A buffer of `len` elements of T, all zero bits.
    pub fn zeroed<T: Pod>(len: usize, label: &str) -> Result<Buffer, SimtError> {
        Buffer::from_slice(label, &vec![T::default(); len])
    }

    /// Size in bytes.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// The label given at creation.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The address the kernel sees.
    pub fn device_ptr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Copies `data` to the start of the buffer.
    pub fn write<T: Pod>(&self, data: &[T]) -> Result<(), SimtError> {
        let n = std::mem::size_of_val(data);
        if n > self.bytes {
            return Err(buffer_error(format!(
                "writing {n} bytes into '{}', which holds {}",
                self.label, self.bytes
            )));
        }
        // SAFETY: n <= self.bytes live bytes; T is Pod; no launch runs on this thread now.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().cast::<u8>(), self.ptr.as_ptr(), n) };
        Ok(())
    }

    /// The whole buffer as elements of T (a trailing partial element is dropped).
    pub fn read<T: Pod>(&self) -> Vec<T> {
        let len = self.bytes / std::mem::size_of::<T>();
        let mut out = vec![T::default(); len];
        // SAFETY: len * size_of::<T>() <= self.bytes; any bit pattern is a valid T (Pod).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr(),
                out.as_mut_ptr().cast::<u8>(),
                len * std::mem::size_of::<T>(),
            )
        };
        out
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the pointer came from sb_simt_alloc and is freed once.
        unsafe { ffi::sb_simt_free(self.ptr.as_ptr().cast::<c_void>()) };
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer('{}', {} bytes)", self.label, self.bytes)
    }
}

// ============================================================================ arguments

/// A kernel argument, by value as `cuLaunchKernel` takes them. The runtime checks each one's
/// kind against the kernel's parameter list (pointers, 32/64-bit integers, f32, f64).
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    /// A pointer to the start of a buffer.
    Buffer(&'a Buffer),
    /// A pointer `offset` bytes into a buffer (a sub-buffer).
    BufferAt(&'a Buffer, usize),
    /// A null pointer.
    Null,
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
}

impl Arg<'_> {
    /// The runtime's parameter kind and the 64 bits that carry the value.
    fn encode(&self) -> ffi::SbSimtArg {
        let (kind, bits) = match *self {
            Arg::Buffer(b) => (ParamKind::Pointer, b.device_ptr()),
            Arg::BufferAt(b, off) => (ParamKind::Pointer, b.device_ptr().wrapping_add(off as u64)),
            Arg::Null => (ParamKind::Pointer, 0),
            Arg::U32(v) => (ParamKind::Int32, v as u64),
            Arg::I32(v) => (ParamKind::Int32, v as u32 as u64),
            Arg::U64(v) => (ParamKind::Int64, v),
            Arg::I64(v) => (ParamKind::Int64, v as u64),
            Arg::F32(v) => (ParamKind::F32, v.to_bits() as u64),
            Arg::F64(v) => (ParamKind::F64, v.to_bits()),
        };
        ffi::SbSimtArg {
            kind: kind as c_uint,
            bits,
        }
    }
}

impl<'a> From<&'a Buffer> for Arg<'a> {
    fn from(b: &'a Buffer) -> Arg<'a> {
        Arg::Buffer(b)
    }
}
macro_rules! arg_from {
    ($($t:ty => $v:ident),*) => { $(impl From<$t> for Arg<'_> { fn from(x: $t) -> Self { Arg::$v(x) } })* };
}
arg_from!(u32 => U32, i32 => I32, u64 => U64, i64 => I64, f32 => F32, f64 => F64);

/// `args![&buf, n, 0.5f64]`: an array of [`Arg`]s from buffers and values.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => { [$($crate::Arg::from($a)),*] };
}

// ============================================================================ kernels

/// The kind of a kernel parameter, as the registry records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ParamKind {
    Pointer = 1,
    Int32 = 2,
    Int64 = 3,
    F32 = 4,
    F64 = 5,
    /// A type the harness cannot pass (a struct by value): such a kernel cannot be launched.
    Other = 6,
}

impl ParamKind {
    fn from_raw(k: c_uint) -> ParamKind {
        match k {
            1 => ParamKind::Pointer,
            2 => ParamKind::Int32,
            3 => ParamKind::Int64,
            4 => ParamKind::F32,
            5 => ParamKind::F64,
            _ => ParamKind::Other,
        }
    }
}

/// A kernel compiled into the harness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    pub name: String,
    /// Its source, e.g. `kernels/memory.cu`.
    pub file: String,
    pub params: Vec<ParamKind>,
}

/// Every kernel in the harness: each `SB_KERNEL` of `kernels/*.cu` and of this crate's
/// `tests/kernels/*.cu`, in file order.
pub fn kernels() -> Vec<KernelInfo> {
    // SAFETY: the registry is immutable static data; strings are NUL-terminated literals.
    unsafe {
        (0..ffi::sb_simt_kernel_count())
            .map(|i| {
                let text = |p: *const c_char| {
                    if p.is_null() {
                        String::new()
                    } else {
                        CStr::from_ptr(p).to_string_lossy().into_owned()
                    }
                };
                let mut kinds = [0 as c_uint; 64];
                let n = ffi::sb_simt_kernel_params(i, kinds.as_mut_ptr(), kinds.len() as c_uint);
                KernelInfo {
                    name: text(ffi::sb_simt_kernel_name(i)),
                    file: text(ffi::sb_simt_kernel_file(i)),
                    params: kinds[..(n as usize).min(kinds.len())]
                        .iter()
                        .map(|&k| ParamKind::from_raw(k))
                        .collect(),
                }
            })
            .collect()
    }
}

/// True when the kernels were built with ThreadSanitizer (`SOLBENCH_SIMT_TSAN=1`).
pub fn tsan_enabled() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { ffi::sb_simt_tsan() != 0 }
}

// ============================================================================ launching

/// A grid or block size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim3 {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl From<u32> for Dim3 {
    fn from(x: u32) -> Dim3 {
        Dim3 { x, y: 1, z: 1 }
    }
}
impl From<(u32, u32)> for Dim3 {
    fn from((x, y): (u32, u32)) -> Dim3 {
        Dim3 { x, y, z: 1 }
    }
}
impl From<(u32, u32, u32)> for Dim3 {
    fn from((x, y, z): (u32, u32, u32)) -> Dim3 {
        Dim3 { x, y, z }
    }
}

/// How the threads of a block are scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Every thread of the block runnable at once; the OS interleaves them on the cores.
    Parallel,
    /// One thread at a time, switching only when it waits or exits, in thread order after
    /// each release: deterministic, so a read of shared memory another thread has not yet
    /// written (a missing barrier) returns poison every time.
    Serial,
    /// As `Serial`, picking the most recently released thread first (the reverse order).
    SerialReverse,
}

/// A launcher with its settings. Launches are synchronous and serialised process-wide
/// (static `__shared__` variables are process globals; see docs/simt-harness.md).
#[derive(Clone, Debug)]
pub struct Simt {
    schedule: Schedule,
    timeout: Duration,
    sms: u32,
}

impl Default for Simt {
    fn default() -> Simt {
        Simt {
            schedule: Schedule::Parallel,
            timeout: Duration::from_secs(10),
            sms: 1,
        }
    }
}

impl Simt {
    /// Parallel schedule, a 10 s watchdog, one emulated SM.
    pub fn new() -> Simt {
        Simt::default()
    }

    pub fn with_schedule(mut self, schedule: Schedule) -> Simt {
        self.schedule = schedule;
        self
    }

    /// How long a block may go without any thread waiting, being released or exiting
    /// before it is declared stuck (deadlocks among waiting threads are found at once).
    pub fn with_timeout(mut self, timeout: Duration) -> Simt {
        self.timeout = timeout;
        self
    }

    /// SM count `sb::smid()` reports blocks on (block `b` runs on SM `b % sms`).
    pub fn with_sms(mut self, sms: u32) -> Simt {
        self.sms = sms.max(1);
        self
    }

    /// Runs `kernel` over `grid` blocks of `block` threads with `shared_bytes` of dynamic
    /// shared memory, like `cuLaunchKernel`, and returns when every block has finished.
    /// Err names the kernel and says what went wrong where (see [`ErrorKind`]).
    pub fn launch(
        &self,
        kernel: &str,
        grid: impl Into<Dim3>,
        block: impl Into<Dim3>,
        shared_bytes: u32,
        args: &[Arg<'_>],
    ) -> Result<(), SimtError> {
        let (grid, block) = (grid.into(), block.into());
        let name = CString::new(kernel).map_err(|_| SimtError {
            kind: ErrorKind::BadLaunch,
            message: format!("kernel name {kernel:?} contains a NUL byte"),
        })?;
        let encoded: Vec<ffi::SbSimtArg> = args.iter().map(Arg::encode).collect();
        let options = ffi::SbSimtOptions {
            serial: u32::from(self.schedule != Schedule::Parallel),
            reverse: u32::from(self.schedule == Schedule::SerialReverse),
            timeout_ms: u32::try_from(self.timeout.as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
            sms: self.sms,
        };
        let g = [grid.x, grid.y, grid.z];
        let b = [block.x, block.y, block.z];
        let mut msg = vec![0u8; 16 << 10];
        // SAFETY: every pointer is valid for the call; the runtime writes at most msg.len()
        // bytes (NUL-terminated) into msg; buffers named by args outlive the call.
        let rc = unsafe {
            ffi::sb_simt_launch(
                name.as_ptr(),
                g.as_ptr(),
                b.as_ptr(),
                shared_bytes,
                encoded.as_ptr(),
                encoded.len() as c_uint,
                &options,
                msg.as_mut_ptr().cast::<c_char>(),
                msg.len(),
            )
        };
        let message = CStr::from_bytes_until_nul(&msg)
            .map(|m| m.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = match rc {
            0 => return Ok(()),
            1 => ErrorKind::Kernel,
            2 => ErrorKind::Aborted,
            3 => ErrorKind::BadLaunch,
            _ => ErrorKind::Wedged,
        };
        Err(SimtError { kind, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_round_trip_and_start_poisoned() {
        let b = Buffer::new(24, "b").unwrap();
        assert_eq!(b.read::<u8>(), vec![0xFF; 24]);
        b.write(&[1.5f64, 2.5]).unwrap();
        assert_eq!(&b.read::<f64>()[..2], &[1.5, 2.5]);
        assert_eq!(b.device_ptr() % 4096, 0);
        let err = b.write(&[0u64; 4]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Buffer);
        assert!(err.message.contains("holds 24"), "{err}");
    }

    #[test]
    fn arguments_encode_their_kind_and_bits() {
        let a = Arg::from(-1i32).encode();
        assert_eq!((a.kind, a.bits), (ParamKind::Int32 as u32, 0xFFFF_FFFF));
        let f = Arg::from(1.0f32).encode();
        assert_eq!((f.kind, f.bits), (ParamKind::F32 as u32, 0x3F80_0000));
        let b = Buffer::new(64, "x").unwrap();
        let p = Arg::BufferAt(&b, 16).encode();
        assert_eq!(p.bits, b.device_ptr() + 16);
    }
}
