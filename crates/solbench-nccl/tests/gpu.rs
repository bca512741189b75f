//! On a machine with an NVIDIA GPU: one-rank communicators run real collectives that are
//! checked, and a rank whose peer never joins gives up at its deadline instead of hanging.
//!
//! Skipped, with the reason printed, when libnccl.so.2, the CUDA runtime (libcudart.so.13,
//! from the toolchain venv: `eval "$(scripts/install-cuda-toolchain.sh)"`) or a GPU is
//! missing; SOLBENCH_REQUIRE_GPU=1 turns a skip into a failure. The CUDA runtime is
//! dlopened here only to allocate memory and streams: the crate itself needs no GPU runtime.

use solbench_nccl::{wait, Comm, DataType, Flavor, Group, Nccl, ReduceOp, UniqueId, WaitError};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::time::{Duration, Instant};

type CudaError = c_int;
const CUDA_SUCCESS: CudaError = 0;
const CUDA_ERROR_NOT_READY: CudaError = 600;
const H2D: c_int = 1;
const D2H: c_int = 2;

/// The few CUDA runtime calls the tests need.
struct Cudart {
    _lib: libloading::Library,
    get_device_count: unsafe extern "C" fn(*mut c_int) -> CudaError,
    set_device: unsafe extern "C" fn(c_int) -> CudaError,
    malloc: unsafe extern "C" fn(*mut *mut c_void, usize) -> CudaError,
    free: unsafe extern "C" fn(*mut c_void) -> CudaError,
    memcpy: unsafe extern "C" fn(*mut c_void, *const c_void, usize, c_int) -> CudaError,
    stream_create: unsafe extern "C" fn(*mut *mut c_void) -> CudaError,
    stream_destroy: unsafe extern "C" fn(*mut c_void) -> CudaError,
    stream_query: unsafe extern "C" fn(*mut c_void) -> CudaError,
    error_string: unsafe extern "C" fn(CudaError) -> *const c_char,
}

impl Cudart {
    fn load() -> Result<Cudart, String> {
        // SAFETY: loading the CUDA runtime runs no GPU work.
        let lib = unsafe { libloading::Library::new("libcudart.so.13") }
            .map_err(|e| format!("the CUDA runtime is not loadable ({e})"))?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the types follow cuda_runtime_api.h.
                *unsafe { lib.get($name.as_bytes()) }
                    .map_err(|e| format!("libcudart lacks {}: {e}", $name))?
            };
        }
        let c = Cudart {
            get_device_count: sym!("cudaGetDeviceCount"),
            set_device: sym!("cudaSetDevice"),
            malloc: sym!("cudaMalloc"),
            free: sym!("cudaFree"),
            memcpy: sym!("cudaMemcpy"),
            stream_create: sym!("cudaStreamCreate"),
            stream_destroy: sym!("cudaStreamDestroy"),
            stream_query: sym!("cudaStreamQuery"),
            error_string: sym!("cudaGetErrorString"),
            _lib: lib,
        };
        let mut n = 0;
        // SAFETY: valid out-pointer.
        let e = unsafe { (c.get_device_count)(&mut n) };
        if e != CUDA_SUCCESS || n < 1 {
            return Err(format!("no usable GPU ({})", c.text(e)));
        }
        Ok(c)
    }

    fn text(&self, e: CudaError) -> String {
        // SAFETY: returns a static string for any code.
        let p = unsafe { (self.error_string)(e) };
        if p.is_null() {
            return format!("cudaError {e}");
        }
        // SAFETY: NUL-terminated static string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    fn check(&self, what: &str, e: CudaError) {
        assert_eq!(e, CUDA_SUCCESS, "{what}: {}", self.text(e));
    }
}

fn setup(test: &str) -> Option<(Nccl, Cudart)> {
    let got = Nccl::load(Flavor::Nccl).and_then(|n| Cudart::load().map(|c| (n, c)));
    match got {
        Ok(v) => Some(v),
        Err(reason) => {
            if std::env::var("SOLBENCH_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("a GPU with NCCL is required here (SOLBENCH_REQUIRE_GPU=1): {reason}");
            }
            eprintln!("{test}: skipped: {reason}");
            None
        }
    }
}

/// A device buffer of `n` f32, freed on drop.
struct DevBuf<'a> {
    cuda: &'a Cudart,
    ptr: *mut c_void,
    n: usize,
}

impl<'a> DevBuf<'a> {
    fn new(cuda: &'a Cudart, n: usize) -> DevBuf<'a> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        cuda.check("cudaMalloc", unsafe { (cuda.malloc)(&mut ptr, n * 4) });
        DevBuf { cuda, ptr, n }
    }
    fn upload(&self, host: &[f32]) {
        assert_eq!(host.len(), self.n);
        // SAFETY: both sides hold n f32.
        let e = unsafe { (self.cuda.memcpy)(self.ptr, host.as_ptr().cast(), self.n * 4, H2D) };
        self.cuda.check("cudaMemcpy H2D", e);
    }
    fn download(&self) -> Vec<f32> {
        let mut host = vec![0f32; self.n];
        // SAFETY: both sides hold n f32.
        let e = unsafe { (self.cuda.memcpy)(host.as_mut_ptr().cast(), self.ptr, self.n * 4, D2H) };
        self.cuda.check("cudaMemcpy D2H", e);
        host
    }
}

impl Drop for DevBuf<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated by cudaMalloc.
        let _ = unsafe { (self.cuda.free)(self.ptr) };
    }
}

#[test]
fn one_rank_collectives_run_and_check() {
    let Some((nccl, cuda)) = setup("one_rank_collectives_run_and_check") else {
        return;
    };
    // SAFETY: device 0 exists (checked in load).
    cuda.check("cudaSetDevice", unsafe { (cuda.set_device)(0) });
    let id = UniqueId::new(&nccl).expect("unique id");
    let deadline = || Instant::now() + Duration::from_secs(120);
    // Non-blocking init, bounded: the path multi-rank runs use.
    let comm = Comm::init_rank_by(&nccl, &id, 0, 1, deadline()).expect("init");
    assert_eq!(comm.count().ok(), Some(1));
    assert_eq!(comm.user_rank().ok(), Some(0));
    assert_eq!(comm.device().ok(), Some(0));

    let mut stream = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    cuda.check("cudaStreamCreate", unsafe {
        (cuda.stream_create)(&mut stream)
    });
    let query = || {
        // SAFETY: live stream.
        match unsafe { (cuda.stream_query)(stream) } {
            CUDA_SUCCESS => Ok(true),
            CUDA_ERROR_NOT_READY => Ok(false),
            e => Err(format!("cudaStreamQuery: {}", cuda.text(e))),
        }
    };

    let n = 1 << 20;
    let host: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let a = DevBuf::new(&cuda, n);
    let b = DevBuf::new(&cuda, n);
    a.upload(&host);

    // SAFETY: a and b hold n f32 on device 0; stream is device 0's.
    unsafe {
        comm.all_reduce(a.ptr, b.ptr, n, DataType::Float32, ReduceOp::Sum, stream)
            .expect("all_reduce");
    }
    wait(&comm, deadline(), query).expect("wait all_reduce");
    assert_eq!(b.download(), host, "all_reduce over one rank is a copy");

    b.upload(&vec![0.0; n]);
    // SAFETY: as above; one rank, so each buffer holds nranks * n.
    unsafe { comm.alltoall(a.ptr, b.ptr, n, DataType::Float32, stream) }.expect("alltoall");
    wait(&comm, deadline(), query).expect("wait alltoall");
    assert_eq!(b.download(), host, "alltoall over one rank is a copy");

    b.upload(&vec![0.0; n]);
    let g = Group::start(&nccl).expect("group start");
    // SAFETY: as above; send to and receive from ourselves inside one group.
    unsafe {
        comm.send(a.ptr, n, DataType::Float32, 0, stream)
            .expect("send");
        comm.recv(b.ptr, n, DataType::Float32, 0, stream)
            .expect("recv");
    }
    g.end(&[&comm]).expect("group end");
    wait(&comm, deadline(), query).expect("wait send/recv");
    assert_eq!(b.download(), host, "send/recv to self is a copy");

    comm.finalize(deadline()).expect("finalize");
    // SAFETY: the stream is idle.
    let _ = unsafe { (cuda.stream_destroy)(stream) };
}

#[test]
fn a_peer_that_never_joins_is_given_up_on_at_the_deadline() {
    let Some((nccl, cuda)) = setup("a_peer_that_never_joins_is_given_up_on_at_the_deadline") else {
        return;
    };
    // SAFETY: device 0 exists.
    cuda.check("cudaSetDevice", unsafe { (cuda.set_device)(0) });
    let id = UniqueId::new(&nccl).expect("unique id");
    let start = Instant::now();
    // Rank 0 of 2; rank 1 never comes.
    let r = Comm::init_rank_by(&nccl, &id, 0, 2, start + Duration::from_secs(3));
    let took = start.elapsed();
    match r {
        Err(e @ WaitError::TimedOut { .. }) => {
            eprintln!("after {took:?}: {e}");
            let s = e.to_string();
            assert!(s.starts_with("rank 0 of 2: communicator initialisation did not finish"));
        }
        Err(other) => panic!("expected a timeout, got: {other}"),
        Ok(_) => panic!("a 2-rank communicator came up with one rank"),
    }
    assert!(took < Duration::from_secs(30), "giving up took {took:?}");
}

#[test]
fn dropping_a_blocking_communicator_aborts_it() {
    let Some((nccl, cuda)) = setup("dropping_a_blocking_communicator_aborts_it") else {
        return;
    };
    // SAFETY: device 0 exists.
    cuda.check("cudaSetDevice", unsafe { (cuda.set_device)(0) });
    let id = UniqueId::new(&nccl).expect("unique id");
    let comm = Comm::init_rank(&nccl, &id, 0, 1, true).expect("blocking init");
    assert!(comm.is_live() && comm.is_blocking());
    drop(comm);
    let all = Comm::init_all(&nccl, &[0]).expect("init_all");
    assert_eq!(all.len(), 1);
    for c in all {
        c.destroy().expect("destroy");
    }
}
