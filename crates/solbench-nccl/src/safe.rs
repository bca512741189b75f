//! Layer 3: the loaded library, unique ids, RAII communicators, groups and bounded waits.
//!
//! Buffers stay raw device pointers (`*const c_void` / `*mut c_void`) and streams stay
//! [`Stream`] (`cudaStream_t` / `hipStream_t`), so this crate needs no GPU runtime; the
//! collective calls are `unsafe` for that reason.
//!
//! # Never hang
//! A benchmark rank must not wait forever for a peer that died, never joined, or hangs
//! inside a collective. The pieces for that:
//! - [`Comm::init_rank`] with `blocking = false` (`ncclCommInitRankConfig`, `blocking = 0`)
//!   returns at once, and [`Comm::wait_ready`] bounds the join by a deadline;
//! - [`wait`] / [`wait_all`] poll the caller's stream query *and* `ncclCommGetAsyncError`
//!   until the work is done, NCCL reports an error, or the deadline passes; in the last two
//!   cases they abort the communicators (`ncclCommAbort`, which also stops the kernels NCCL
//!   left spinning on the GPU) and say which happened;
//! - on non-blocking communicators every call that NCCL answers with `ncclInProgress` is
//!   settled within [`Comm::call_timeout`], since NCCL forbids the next call before that.

use crate::result::{self, NcclError};
use crate::sys::{self, Flavor, Stream};
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Versions
// ---------------------------------------------------------------------------------------

/// Decodes an NCCL version code into `(major, minor, patch)`.
///
/// `nccl.h`'s `NCCL_VERSION(X,Y,Z)` has two encodings: up to 2.8, `X*1000 + Y*100 + Z`
/// (2.8.4 = 2804); from 2.9 on, `X*10000 + Y*100 + Z` (2.9.0 = 20900, 2.32.3 = 23203), so a
/// two-digit minor fits. Every new-style code is at least 20900 and every old-style code is
/// below 10000, so the magnitude tells them apart. RCCL reports its NCCL-compatible version
/// the same way (RCCL 2.22.3 = 22203). Negative codes (never returned) decode to 0.0.0.
pub fn decode_version(code: i32) -> (u32, u32, u32) {
    let c = u32::try_from(code).unwrap_or(0);
    if c >= 10_000 {
        (c / 10_000, (c / 100) % 100, c % 100)
    } else {
        (c / 1000, (c / 100) % 10, c % 100)
    }
}

/// `NCCL_VERSION(major, minor, patch)`: the code a library of that version reports, with
/// the header's switch of encoding after 2.8.
pub fn encode_version(major: u32, minor: u32, patch: u32) -> i32 {
    let code = if major <= 2 && minor <= 8 {
        major * 1000 + minor * 100 + patch
    } else {
        major * 10_000 + minor * 100 + patch
    };
    i32::try_from(code).unwrap_or(i32::MAX)
}

// ---------------------------------------------------------------------------------------
// Data types and reductions
// ---------------------------------------------------------------------------------------

/// The element types of `ncclDataType_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Int8,
    Uint8,
    Int32,
    Uint32,
    Int64,
    Uint64,
    Float16,
    Float32,
    Float64,
    /// NCCL ≥ 2.10.
    Bfloat16,
    /// FP8 E4M3 (NCCL ≥ 2.24; reductions need sm_90 or newer). RCCL uses the same code for
    /// its FP8 type, whose exact format follows the GPU (MI300's FP8 is the FNUZ variant).
    Float8E4M3,
    /// FP8 E5M2 (as [`DataType::Float8E4M3`]).
    Float8E5M2,
}

impl DataType {
    /// Every type, in `nccl.h` order.
    pub const ALL: [DataType; 12] = [
        DataType::Int8,
        DataType::Uint8,
        DataType::Int32,
        DataType::Uint32,
        DataType::Int64,
        DataType::Uint64,
        DataType::Float16,
        DataType::Float32,
        DataType::Float64,
        DataType::Bfloat16,
        DataType::Float8E4M3,
        DataType::Float8E5M2,
    ];

    /// The `ncclDataType_t` value.
    pub fn to_sys(self) -> sys::ncclDataType_t {
        match self {
            DataType::Int8 => sys::ncclInt8,
            DataType::Uint8 => sys::ncclUint8,
            DataType::Int32 => sys::ncclInt32,
            DataType::Uint32 => sys::ncclUint32,
            DataType::Int64 => sys::ncclInt64,
            DataType::Uint64 => sys::ncclUint64,
            DataType::Float16 => sys::ncclFloat16,
            DataType::Float32 => sys::ncclFloat32,
            DataType::Float64 => sys::ncclFloat64,
            DataType::Bfloat16 => sys::ncclBfloat16,
            DataType::Float8E4M3 => sys::ncclFloat8e4m3,
            DataType::Float8E5M2 => sys::ncclFloat8e5m2,
        }
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DataType::Int8 | DataType::Uint8 | DataType::Float8E4M3 | DataType::Float8E5M2 => 1,
            DataType::Float16 | DataType::Bfloat16 => 2,
            DataType::Int32 | DataType::Uint32 | DataType::Float32 => 4,
            DataType::Int64 | DataType::Uint64 | DataType::Float64 => 8,
        }
    }

    /// The name nccl-tests prints in its `type` column (and takes with `-d`).
    pub fn nccl_tests_name(self) -> &'static str {
        match self {
            DataType::Int8 => "int8",
            DataType::Uint8 => "uint8",
            DataType::Int32 => "int32",
            DataType::Uint32 => "uint32",
            DataType::Int64 => "int64",
            DataType::Uint64 => "uint64",
            DataType::Float16 => "half",
            DataType::Float32 => "float",
            DataType::Float64 => "double",
            DataType::Bfloat16 => "bfloat16",
            DataType::Float8E4M3 => "f8e4m3",
            DataType::Float8E5M2 => "f8e5m2",
        }
    }
}

/// The built-in reductions of `ncclRedOp_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
    /// NCCL ≥ 2.10.
    Avg,
}

impl ReduceOp {
    /// Every built-in reduction, in `nccl.h` order.
    pub const ALL: [ReduceOp; 5] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Avg,
    ];

    /// The `ncclRedOp_t` value.
    pub fn to_sys(self) -> sys::ncclRedOp_t {
        match self {
            ReduceOp::Sum => sys::ncclSum,
            ReduceOp::Prod => sys::ncclProd,
            ReduceOp::Max => sys::ncclMax,
            ReduceOp::Min => sys::ncclMin,
            ReduceOp::Avg => sys::ncclAvg,
        }
    }

    /// The name nccl-tests prints in its `redop` column.
    pub fn nccl_tests_name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Avg => "avg",
        }
    }
}

// ---------------------------------------------------------------------------------------
// The library
// ---------------------------------------------------------------------------------------

struct Inner {
    lib: sys::Library,
    version_code: i32,
}

/// A loaded NCCL or RCCL, shared (`Arc`) by everything made from it. Cloning is cheap.
#[derive(Clone)]
pub struct Nccl {
    inner: Arc<Inner>,
}

impl fmt::Debug for Nccl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nccl")
            .field("flavor", &self.flavor())
            .field("library", &self.library_name())
            .field("version", &self.version_string())
            .finish()
    }
}

impl Nccl {
    /// Loads the library of `flavor` (its environment variable, `SOLBENCH_NCCL_LIBRARY` or
    /// `SOLBENCH_RCCL_LIBRARY`, names the file and replaces the search), resolves every
    /// symbol and reads the version. The error is one sentence naming the library and the fix.
    pub fn load(flavor: Flavor) -> Result<Nccl, String> {
        let lib = sys::Library::open(flavor).map_err(|e| e.to_string())?;
        Nccl::from_library(lib)
    }

    /// As [`Nccl::load`], from an explicit path, with no search.
    pub fn load_path(flavor: Flavor, path: impl AsRef<Path>) -> Result<Nccl, String> {
        let lib = sys::Library::open_path(flavor, path.as_ref()).map_err(|e| e.to_string())?;
        Nccl::from_library(lib)
    }

    fn from_library(lib: sys::Library) -> Result<Nccl, String> {
        let version_code = result::get_version(&lib).map_err(|e| {
            format!(
                "{} loaded, but {e}: reinstall {}.",
                lib.name(),
                lib.flavor().product()
            )
        })?;
        Ok(Nccl {
            inner: Arc::new(Inner { lib, version_code }),
        })
    }

    /// The raw function table, for calls this layer does not wrap.
    pub fn sys(&self) -> &sys::Library {
        &self.inner.lib
    }

    /// NCCL or RCCL.
    pub fn flavor(&self) -> Flavor {
        self.inner.lib.flavor()
    }

    /// The name or path that was opened (`libnccl.so.2`, or the override).
    pub fn library_name(&self) -> &str {
        self.inner.lib.name()
    }

    /// The file the dynamic loader mapped, when it can tell.
    pub fn library_path(&self) -> Option<PathBuf> {
        self.inner.lib.path()
    }

    /// `(major, minor, patch)` from `ncclGetVersion`, decoded by [`decode_version`].
    pub fn version(&self) -> (u32, u32, u32) {
        decode_version(self.inner.version_code)
    }

    /// The raw `ncclGetVersion` code (23203 for 2.32.3).
    pub fn version_code(&self) -> i32 {
        self.inner.version_code
    }

    /// `"2.32.3"`.
    pub fn version_string(&self) -> String {
        let (a, b, c) = self.version();
        format!("{a}.{b}.{c}")
    }

    /// True when `alltoall` is one native call; otherwise [`Comm::alltoall`] builds it from
    /// grouped send/recv, as nccl-tests does with NCCL < 2.28.
    pub fn has_native_alltoall(&self) -> bool {
        self.inner.lib.alltoall().is_some()
    }

    /// True when communicators can be created non-blocking and polled
    /// (`ncclCommInitRankConfig` and `ncclCommGetAsyncError`, NCCL ≥ 2.14).
    pub fn supports_nonblocking(&self) -> bool {
        let l = &self.inner.lib;
        l.ncclCommInitRankConfig.is_some() && l.ncclCommGetAsyncError.is_some()
    }

    /// `ncclGetErrorString(code)`.
    pub fn error_string(&self, code: sys::ncclResult_t) -> String {
        result::error_string(&self.inner.lib, code)
    }

    /// `ncclGetLastError(NULL)`: the last error NCCL recorded in this process, if the library
    /// has the call and recorded one.
    pub fn last_error(&self) -> Option<String> {
        // SAFETY: a null communicator asks for the global message.
        unsafe { result::last_error(&self.inner.lib, std::ptr::null_mut()) }
    }
}

// ---------------------------------------------------------------------------------------
// Unique id
// ---------------------------------------------------------------------------------------

/// The 128-byte id every rank of one communicator must share. One rank makes it
/// ([`UniqueId::new`]), the rendezvous ships [`UniqueId::to_bytes`], the others rebuild it
/// with [`UniqueId::from_bytes`].
#[derive(Clone, Copy)]
pub struct UniqueId(sys::ncclUniqueId);

impl UniqueId {
    /// Its size on the wire.
    pub const BYTES: usize = sys::NCCL_UNIQUE_ID_BYTES;

    /// `ncclGetUniqueId`. Needs no GPU. NCCL starts its bootstrap listener here, on the
    /// interface NCCL picks (`NCCL_SOCKET_IFNAME` steers it); the address is inside the id.
    pub fn new(nccl: &Nccl) -> Result<UniqueId, NcclError> {
        result::get_unique_id(nccl.sys()).map(UniqueId)
    }

    /// The bytes to send to the other ranks.
    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut out = [0u8; Self::BYTES];
        for (o, c) in out.iter_mut().zip(self.0.internal.iter()) {
            // c_char is i8 or u8 by platform; either way one byte, copied bit for bit.
            *o = c.to_ne_bytes()[0];
        }
        out
    }

    /// Rebuilds an id from [`UniqueId::to_bytes`].
    pub fn from_bytes(bytes: [u8; Self::BYTES]) -> UniqueId {
        let mut id = sys::ncclUniqueId {
            internal: [0; Self::BYTES],
        };
        for (c, b) in id.internal.iter_mut().zip(bytes.iter()) {
            *c = c_char::from_ne_bytes([*b]);
        }
        UniqueId(id)
    }

    /// As [`UniqueId::from_bytes`], from a slice that must hold exactly 128 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<UniqueId, String> {
        let arr: [u8; Self::BYTES] = bytes.try_into().map_err(|_| {
            format!(
                "an NCCL unique id is {} bytes, but {} arrived",
                Self::BYTES,
                bytes.len()
            )
        })?;
        Ok(UniqueId::from_bytes(arr))
    }

    /// The C struct.
    pub fn as_sys(&self) -> sys::ncclUniqueId {
        self.0
    }
}

impl PartialEq for UniqueId {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl Eq for UniqueId {}

impl fmt::Debug for UniqueId {
    /// Prints a short prefix only: the id holds the root's address and a secret-ish magic.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        write!(f, "UniqueId(")?;
        for x in &b[..8] {
            write!(f, "{x:02x}")?;
        }
        write!(f, "…)")
    }
}

// ---------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------

/// How a bounded wait ended badly. `Display` is one sentence saying which rank, what
/// happened, and what was done about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// The deadline passed first; the communicators were aborted.
    TimedOut {
        /// What was awaited ("the collective", "communicator initialisation", …).
        what: &'static str,
        /// The ranks (in their communicators) this process waited on.
        ranks: Vec<usize>,
        nranks: usize,
        waited: Duration,
        /// Errors from `ncclCommAbort`, if any.
        abort_errors: Vec<NcclError>,
    },
    /// NCCL reported an asynchronous error on one communicator; all were aborted.
    Async {
        what: &'static str,
        rank: usize,
        nranks: usize,
        /// Boxed to keep `WaitError` small on the success path.
        error: Box<NcclError>,
        abort_errors: Vec<NcclError>,
    },
    /// The caller's completion query failed; the communicators were aborted, since their
    /// state is unknown.
    Query {
        what: &'static str,
        message: String,
        abort_errors: Vec<NcclError>,
    },
    /// An NCCL call failed outright (not asynchronously).
    Call(NcclError),
}

fn abort_note(errors: &[NcclError]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        format!(" (the abort itself reported: {})", list.join("; "))
    }
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::TimedOut {
                what,
                ranks,
                nranks,
                waited,
                abort_errors,
            } => {
                let who = match ranks.as_slice() {
                    [r] => format!("rank {r} of {nranks}"),
                    rs => {
                        let list: Vec<String> = rs.iter().map(|r| r.to_string()).collect();
                        format!("ranks {} of {nranks}", list.join(","))
                    }
                };
                write!(
                    f,
                    "{who}: {what} did not finish within {:.1} s, so another rank has probably \
                     died, not joined, or hung; the communicator was aborted{}",
                    waited.as_secs_f64(),
                    abort_note(abort_errors)
                )
            }
            WaitError::Async {
                what,
                rank,
                nranks,
                error,
                abort_errors,
            } => write!(
                f,
                "rank {rank} of {nranks}: NCCL reported an error during {what}: {error}; the \
                 communicator was aborted{}",
                abort_note(abort_errors)
            ),
            WaitError::Query {
                what,
                message,
                abort_errors,
            } => write!(
                f,
                "checking whether {what} finished failed: {message}; the communicator was \
                 aborted{}",
                abort_note(abort_errors)
            ),
            WaitError::Call(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for WaitError {}

impl From<NcclError> for WaitError {
    fn from(e: NcclError) -> Self {
        WaitError::Call(e)
    }
}

/// How [`poll_until`] ended when it did not succeed.
#[derive(Debug, PartialEq, Eq)]
enum PollEnd<E> {
    Failed(E),
    TimedOut(Duration),
}

/// Calls `step` until it returns `Ok(true)` (done), `Err` (failed) or `deadline` passes
/// (checked after each step, so one step always runs). Between steps it first yields the CPU
/// (a collective is often done within microseconds), then sleeps with a growing interval
/// capped at 1 ms, so a long wait costs no core and adds at most ~1 ms of latency.
fn poll_until<E>(
    deadline: Instant,
    mut step: impl FnMut() -> Result<bool, E>,
) -> Result<(), PollEnd<E>> {
    let start = Instant::now();
    let mut polls: u32 = 0;
    let mut nap = Duration::from_micros(20);
    loop {
        if step().map_err(PollEnd::Failed)? {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(PollEnd::TimedOut(now.duration_since(start)));
        }
        polls = polls.saturating_add(1);
        if polls < 200 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(nap.min(deadline.saturating_duration_since(now)));
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }
}

/// What stopped a wait, before the communicators are aborted.
enum Stop {
    Async { index: usize, error: NcclError },
    Query(String),
}

/// Waits until every communicator in `comms` is idle (`ncclCommGetAsyncError` reports
/// `ncclSuccess`) and `is_done` says the caller's work finished (typically a query of the
/// stream(s) the collectives were enqueued on: `cudaStreamQuery == cudaSuccess`).
///
/// `is_done` is only asked once NCCL reports no operation still being enqueued, because an
/// empty stream says nothing while a non-blocking communicator has not launched yet.
///
/// On an asynchronous NCCL error, an `is_done` error, or the deadline, **every**
/// communicator in `comms` is aborted (`ncclCommAbort` also stops kernels spinning on a dead
/// peer, so the stream drains) and the error says which of the three happened. Aborted
/// communicators refuse further calls. Libraries without `ncclCommGetAsyncError` (NCCL < 2.4)
/// are bounded by the deadline alone.
pub fn wait_all(
    comms: &[&Comm],
    deadline: Instant,
    is_done: impl FnMut() -> Result<bool, String>,
) -> Result<(), WaitError> {
    wait_for("the collective", comms, deadline, is_done)
}

/// [`wait_all`] for one communicator.
pub fn wait(
    comm: &Comm,
    deadline: Instant,
    is_done: impl FnMut() -> Result<bool, String>,
) -> Result<(), WaitError> {
    wait_for("the collective", &[comm], deadline, is_done)
}

fn wait_for(
    what: &'static str,
    comms: &[&Comm],
    deadline: Instant,
    mut is_done: impl FnMut() -> Result<bool, String>,
) -> Result<(), WaitError> {
    for c in comms {
        c.live("ncclCommGetAsyncError")?;
    }
    let outcome = poll_until(deadline, || {
        let mut pending = false;
        for (index, c) in comms.iter().enumerate() {
            match c.state_for_wait() {
                Ok(CommState::Ready) => {}
                Ok(CommState::InProgress) => pending = true,
                Ok(CommState::Failed(error)) | Err(error) => {
                    return Err(Stop::Async { index, error })
                }
            }
        }
        if pending {
            return Ok(false);
        }
        is_done().map_err(Stop::Query)
    });
    let stop = match outcome {
        Ok(()) => return Ok(()),
        Err(end) => end,
    };
    let abort_errors: Vec<NcclError> = comms.iter().filter_map(|c| c.abort_now().err()).collect();
    let nranks = comms.first().map(|c| c.nranks).unwrap_or(0);
    Err(match stop {
        PollEnd::TimedOut(waited) => WaitError::TimedOut {
            what,
            ranks: comms.iter().map(|c| c.rank).collect(),
            nranks,
            waited,
            abort_errors,
        },
        PollEnd::Failed(Stop::Async { index, error }) => {
            let (rank, nranks) = comms
                .get(index)
                .map(|c| (c.rank, c.nranks))
                .unwrap_or((0, nranks));
            WaitError::Async {
                what,
                rank,
                nranks,
                error: Box::new(error),
                abort_errors,
            }
        }
        PollEnd::Failed(Stop::Query(message)) => WaitError::Query {
            what,
            message,
            abort_errors,
        },
    })
}

// ---------------------------------------------------------------------------------------
// Communicators
// ---------------------------------------------------------------------------------------

/// What `ncclCommGetAsyncError` says about a communicator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommState {
    /// `ncclSuccess`: initialised, and no non-blocking call still being set up.
    Ready,
    /// `ncclInProgress`: a non-blocking init or call is still being set up.
    InProgress,
    /// Any other code: the communicator is broken (a peer failed, the network broke) and must
    /// be aborted.
    Failed(NcclError),
}

/// How long a non-blocking communicator may take to finish one call NCCL answered with
/// `ncclInProgress` (lazy connection set-up on first use can take a while at scale).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// One rank's communicator. Dropping it aborts it (`ncclCommAbort`: never blocks on peers);
/// [`Comm::destroy`] and [`Comm::finalize`] end it gracefully instead.
///
/// `Send` but not `Sync`: NCCL lets a communicator move between threads but not be called
/// from two at once.
pub struct Comm {
    nccl: Nccl,
    /// Null once aborted or destroyed; a `Cell` so that a failed wait can abort through `&self`.
    handle: Cell<sys::ncclComm_t>,
    rank: usize,
    nranks: usize,
    blocking: bool,
    call_timeout: Duration,
}

// SAFETY: NCCL communicators may be used from any thread as long as calls are not concurrent;
// `Comm` is not `Sync`, so no two threads can reach one at the same time.
unsafe impl Send for Comm {}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Comm")
            .field("rank", &self.rank)
            .field("nranks", &self.nranks)
            .field("blocking", &self.blocking)
            .field("live", &!self.handle.get().is_null())
            .finish()
    }
}

impl Comm {
    /// Joins communicator `id` as `rank` of `nranks`.
    ///
    /// - `blocking = true`: `ncclCommInitRank`, which returns once all ranks have joined
    ///   (and never, if one does not).
    /// - `blocking = false`: `ncclCommInitRankConfig` with `config.blocking = 0` (NCCL ≥
    ///   2.14). It returns at once; call [`Comm::wait_ready`] with a deadline before using
    ///   the communicator. Every later call on it is non-blocking too, and settled within
    ///   [`Comm::call_timeout`] when NCCL answers `ncclInProgress`.
    ///
    /// The caller must have made this rank's GPU current (`cudaSetDevice` /
    /// `cuCtxSetCurrent`, `hipSetDevice`) on this thread: NCCL binds the communicator to it.
    pub fn init_rank(
        nccl: &Nccl,
        id: &UniqueId,
        rank: usize,
        nranks: usize,
        blocking: bool,
    ) -> Result<Comm, NcclError> {
        let call = if blocking {
            "ncclCommInitRank"
        } else {
            "ncclCommInitRankConfig"
        };
        if nranks == 0 || rank >= nranks {
            return Err(NcclError::refused(
                call,
                sys::ncclInvalidArgument,
                format!("rank {rank} is not in 0..{nranks}"),
            ));
        }
        let c_nranks = result::to_c_int(call, "nranks", nranks)?;
        let c_rank = result::to_c_int(call, "rank", rank)?;
        let lib = nccl.sys();
        // SAFETY: the id is a valid 128-byte value; the device is the caller's (documented).
        let (handle, r) = unsafe {
            if blocking {
                result::comm_init_rank(lib, c_nranks, id.as_sys(), c_rank)
            } else {
                let mut config = sys::ncclConfig_t::initializer();
                config.blocking = 0;
                result::comm_init_rank_config(lib, c_nranks, id.as_sys(), c_rank, &mut config)
            }
        };
        let comm = Comm {
            nccl: nccl.clone(),
            handle: Cell::new(handle),
            rank,
            nranks,
            blocking,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        };
        match r {
            Ok(()) => Ok(comm),
            Err(e) if e.is_in_progress() && !blocking && !handle.is_null() => Ok(comm),
            Err(e) => {
                // NCCL may hand back a half-made communicator even on failure; it must be
                // aborted, which dropping `comm` does.
                let had_handle = !handle.is_null();
                drop(comm);
                Err(if had_handle {
                    e.with_detail("the half-made communicator was aborted")
                } else {
                    e
                })
            }
        }
    }

    /// [`Comm::init_rank`] non-blocking, then [`Comm::wait_ready`]: joins within `deadline`
    /// or aborts and says why.
    pub fn init_rank_by(
        nccl: &Nccl,
        id: &UniqueId,
        rank: usize,
        nranks: usize,
        deadline: Instant,
    ) -> Result<Comm, WaitError> {
        if !nccl.supports_nonblocking() {
            return Err(WaitError::Call(result::missing(
                "ncclCommInitRankConfig",
                "NCCL 2.14 or newer, needed to bound initialisation by a deadline",
            )));
        }
        let comm = Comm::init_rank(nccl, id, rank, nranks, false)?;
        comm.wait_ready(deadline)?;
        Ok(comm)
    }

    /// `ncclCommInitAll`: one blocking communicator per device in `devices` (CUDA/HIP
    /// ordinals), for one process driving all its GPUs; element `i` is rank `i`. It cannot be
    /// bounded by a deadline (NCCL offers no non-blocking form), but every rank lives in this
    /// process, so it cannot wait on a peer that never comes.
    pub fn init_all(nccl: &Nccl, devices: &[i32]) -> Result<Vec<Comm>, NcclError> {
        if devices.is_empty() {
            return Err(NcclError::refused(
                "ncclCommInitAll",
                sys::ncclInvalidArgument,
                "no devices were given",
            ));
        }
        let devs: Vec<c_int> = devices.to_vec();
        // SAFETY: `devs` lives across the call; NCCL validates the ordinals.
        let handles = unsafe { result::comm_init_all(nccl.sys(), &devs)? };
        let nranks = handles.len();
        Ok(handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| Comm {
                nccl: nccl.clone(),
                handle: Cell::new(h),
                rank,
                nranks,
                blocking: true,
                call_timeout: DEFAULT_CALL_TIMEOUT,
            })
            .collect())
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn nranks(&self) -> usize {
        self.nranks
    }

    /// Whether calls block (see [`Comm::init_rank`]).
    pub fn is_blocking(&self) -> bool {
        self.blocking
    }

    /// False once aborted (by [`wait`] after a failure, or a failed settle).
    pub fn is_live(&self) -> bool {
        !self.handle.get().is_null()
    }

    /// The library this communicator belongs to.
    pub fn nccl(&self) -> &Nccl {
        &self.nccl
    }

    /// The raw handle (null once aborted), for calls this layer does not wrap. Do not destroy
    /// or abort it behind this `Comm`'s back.
    pub fn raw(&self) -> sys::ncclComm_t {
        self.handle.get()
    }

    /// How long one `ncclInProgress` call on a non-blocking communicator may take to settle.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Sets [`Comm::call_timeout`].
    pub fn set_call_timeout(&mut self, timeout: Duration) {
        self.call_timeout = timeout;
    }

    /// The handle, or the error for using an aborted communicator.
    fn live(&self, call: &'static str) -> Result<sys::ncclComm_t, NcclError> {
        let h = self.handle.get();
        if h.is_null() {
            Err(NcclError::refused(
                call,
                sys::ncclInvalidUsage,
                format!(
                    "rank {} of {}: the communicator was aborted after an earlier failure and \
                     cannot be used",
                    self.rank, self.nranks
                ),
            ))
        } else {
            Ok(h)
        }
    }

    /// `ncclCommCuDevice`: the CUDA (or HIP) device of this communicator.
    pub fn device(&self) -> Result<i32, NcclError> {
        let h = self.live("ncclCommCuDevice")?;
        // SAFETY: live handle.
        unsafe { result::comm_cu_device(self.nccl.sys(), h) }
    }

    /// `ncclCommUserRank` (equals [`Comm::rank`]; asks NCCL).
    pub fn user_rank(&self) -> Result<usize, NcclError> {
        let h = self.live("ncclCommUserRank")?;
        // SAFETY: live handle.
        let r = unsafe { result::comm_user_rank(self.nccl.sys(), h)? };
        Ok(usize::try_from(r).unwrap_or(0))
    }

    /// `ncclCommCount` (equals [`Comm::nranks`]; asks NCCL).
    pub fn count(&self) -> Result<usize, NcclError> {
        let h = self.live("ncclCommCount")?;
        // SAFETY: live handle.
        let n = unsafe { result::comm_count(self.nccl.sys(), h)? };
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// `ncclCommGetAsyncError`, as a [`CommState`]. `Err` when the query itself fails, the
    /// library lacks it, or the communicator was aborted.
    pub fn async_error(&self) -> Result<CommState, NcclError> {
        let h = self.live("ncclCommGetAsyncError")?;
        let lib = self.nccl.sys();
        // SAFETY: live handle.
        let code = unsafe { result::comm_get_async_error(lib, h)? };
        Ok(if code == sys::ncclSuccess {
            CommState::Ready
        } else if code == sys::ncclInProgress {
            CommState::InProgress
        } else {
            // SAFETY: live handle.
            let last_error = unsafe { result::last_error(lib, h) };
            CommState::Failed(NcclError {
                call: "ncclCommGetAsyncError",
                code,
                description: result::error_string(lib, code),
                last_error,
                detail: None,
            })
        })
    }

    /// [`Comm::async_error`], reading a library without the query as always ready (the
    /// deadline then bounds the wait alone).
    fn state_for_wait(&self) -> Result<CommState, NcclError> {
        if self.nccl.sys().ncclCommGetAsyncError.is_none() && self.is_live() {
            return Ok(CommState::Ready);
        }
        self.async_error()
    }

    /// Waits until a non-blocking init (or call) has finished: `ncclCommGetAsyncError`
    /// leaves `ncclInProgress`. On an error or at `deadline` the communicator is aborted and
    /// the error says which. Returns at once for a ready communicator.
    pub fn wait_ready(&self, deadline: Instant) -> Result<(), WaitError> {
        wait_for("communicator initialisation", &[self], deadline, || {
            Ok(true)
        })
    }

    /// Aborts through `&self`, leaving the `Comm` inert. Errors are NCCL's; the handle is gone
    /// either way.
    fn abort_now(&self) -> Result<(), NcclError> {
        let h = self.handle.replace(std::ptr::null_mut());
        if h.is_null() {
            return Ok(());
        }
        // SAFETY: `h` was live and is never used again.
        match unsafe { result::comm_abort(self.nccl.sys(), h) } {
            // Non-blocking communicators may answer "in progress": the abort proceeds inside
            // NCCL and the handle is ours no longer, so there is nothing left to wait for.
            Err(e) if e.is_in_progress() => Ok(()),
            other => other,
        }
    }

    /// `ncclCommAbort`: frees the communicator without waiting for peers, stopping its
    /// operations on the device.
    pub fn abort(self) -> Result<(), NcclError> {
        self.abort_now()
    }

    /// `ncclCommDestroy`: frees the communicator after its outstanding work (blocking).
    pub fn destroy(self) -> Result<(), NcclError> {
        let h = self.handle.replace(std::ptr::null_mut());
        if h.is_null() {
            return Ok(());
        }
        // SAFETY: `h` was live and is never used again.
        unsafe { result::comm_destroy(self.nccl.sys(), h) }
    }

    /// `ncclCommFinalize` (NCCL ≥ 2.14; skipped on older libraries), then waits until NCCL
    /// has flushed, then `ncclCommDestroy`. A peer that never finalizes cannot hold this rank
    /// past `deadline`: the communicator is then aborted and the error says so.
    pub fn finalize(self, deadline: Instant) -> Result<(), WaitError> {
        let h = self.live("ncclCommFinalize")?;
        let lib = self.nccl.sys();
        if lib.ncclCommFinalize.is_some() {
            // SAFETY: live handle.
            match unsafe { result::comm_finalize(lib, h) } {
                Ok(()) => {}
                Err(e) if e.is_in_progress() => {}
                Err(e) => {
                    let abort = self.abort_now().err();
                    let e = e.with_detail(match abort {
                        None => "the communicator was aborted".to_string(),
                        Some(a) => format!("aborting it failed too: {a}"),
                    });
                    return Err(WaitError::Call(e));
                }
            }
            wait_for("ncclCommFinalize", &[&self], deadline, || Ok(true))?;
        }
        self.destroy().map_err(WaitError::Call)
    }

    /// Settles a call a non-blocking communicator answered with `ncclInProgress`: polls
    /// `ncclCommGetAsyncError` until NCCL has finished (or fails, or `call_timeout` passes,
    /// in which case the communicator is aborted). Other results pass through.
    fn settle(&self, r: Result<(), NcclError>) -> Result<(), NcclError> {
        match r {
            Err(e) if e.is_in_progress() && !self.blocking => {
                let deadline = Instant::now() + self.call_timeout;
                wait_for(e.call, &[self], deadline, || Ok(true)).map_err(|w| match w {
                    WaitError::Call(inner) => inner,
                    WaitError::Async { error, .. } => NcclError {
                        call: e.call,
                        ..*error
                    }
                    .with_detail(
                        "NCCL reported this while the call was being enqueued; the \
                         communicator was aborted",
                    ),
                    other => NcclError::refused(e.call, sys::ncclTimeout, other.to_string()),
                })
            }
            other => other,
        }
    }

    fn check_peer(&self, call: &'static str, what: &str, peer: usize) -> Result<c_int, NcclError> {
        if peer >= self.nranks {
            return Err(NcclError::refused(
                call,
                sys::ncclInvalidArgument,
                format!("{what} {peer} is not in 0..{}", self.nranks),
            ));
        }
        result::to_c_int(call, what, peer)
    }

    // --- collectives ------------------------------------------------------------------
    //
    // Safety for all: `send`/`recv` are device buffers of this communicator's device (or
    // memory NCCL can reach) with the element counts `nccl.h` documents for the call;
    // `stream` is a stream of that device, or null for the legacy default stream. The calls
    // only enqueue; use `wait` (or an event) to know when the work ran.

    /// `ncclAllReduce`: `count` elements in `send` reduced into `recv` on every rank.
    /// In place when `send == recv`.
    ///
    /// # Safety
    /// See the note above the collectives.
    pub unsafe fn all_reduce(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        stream: Stream,
    ) -> Result<(), NcclError> {
        let h = self.live("ncclAllReduce")?;
        let lib = self.nccl.sys();
        self.settle(result::all_reduce(
            lib,
            send,
            recv,
            count,
            dtype.to_sys(),
            op.to_sys(),
            h,
            stream,
        ))
    }

    /// `ncclAllGather`: `send_count` elements from every rank; `recv` holds
    /// `nranks * send_count`. In place when `send == recv + rank * send_count`.
    ///
    /// # Safety
    /// See the note above the collectives.
    pub unsafe fn all_gather(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        send_count: usize,
        dtype: DataType,
        stream: Stream,
    ) -> Result<(), NcclError> {
        let h = self.live("ncclAllGather")?;
        self.settle(result::all_gather(
            self.nccl.sys(),
            send,
            recv,
            send_count,
            dtype.to_sys(),
            h,
            stream,
        ))
    }

    /// `ncclReduceScatter`: `send` holds `nranks * recv_count`; rank `i` receives block `i`
    /// of the reduction. In place when `recv == send + rank * recv_count`.
    ///
    /// # Safety
    /// See the note above the collectives.
    pub unsafe fn reduce_scatter(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        recv_count: usize,
        dtype: DataType,
        op: ReduceOp,
        stream: Stream,
    ) -> Result<(), NcclError> {
        let h = self.live("ncclReduceScatter")?;
        self.settle(result::reduce_scatter(
            self.nccl.sys(),
            send,
            recv,
            recv_count,
            dtype.to_sys(),
            op.to_sys(),
            h,
            stream,
        ))
    }

    /// `ncclBroadcast`: `count` elements from `root`'s `send` into every rank's `recv`.
    /// In place when `send == recv`.
    ///
    /// # Safety
    /// See the note above the collectives.
    pub unsafe fn broadcast(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dtype: DataType,
        root: usize,
        stream: Stream,
    ) -> Result<(), NcclError> {
        let h = self.live("ncclBroadcast")?;
        let root = self.check_peer("ncclBroadcast", "root", root)?;
        self.settle(result::broadcast(
            self.nccl.sys(),
            send,
            recv,
            count,
            dtype.to_sys(),
            root,
            h,
            stream,
        ))
    }

    /// `ncclReduce`: `count` elements reduced into `root`'s `recv` (`recv` may be null on
    /// other ranks). In place when `send == recv`.
    ///
    /// # Safety
    /// See the note above the collectives.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn reduce(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
        stream: Stream,
    ) -> Result<(), NcclError> {
        let h = self.live("ncclReduce")?;
        let root = self.check_peer("ncclReduce", "root", root)?;
        self.settle(result::reduce(
            self.nccl.sys(),
            send,
            recv,
            count,
            dtype.to_sys(),
            op.to_sys(),
            root,
            h,
            stream,
        ))
    }

    /// All-to-all: `count` elements to and from each peer; both buffers hold
    /// `nranks * count`, block `j` of `send` going to rank `j` and block `i` of `recv` coming
    /// from rank `i`. One native call where the library has it (`ncclAlltoAll`, NCCL ≥ 2.28;
    /// `ncclAllToAll`, RCCL); otherwise one group of `nranks` sends and receives, which is
    /// what NCCL itself did before 2.28 and what nccl-tests falls back to. The fallback
    /// cannot run in place (`send == recv`): it would overwrite blocks before sending them.
    ///
    /// # Safety
    /// See the note above the collectives.
    pub unsafe fn alltoall(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dtype: DataType,
        stream: Stream,
    ) -> Result<(), NcclError> {
        let h = self.live("ncclAlltoAll")?;
        let lib = self.nccl.sys();
        if lib.alltoall().is_some() {
            return self.settle(result::alltoall(
                lib,
                send,
                recv,
                count,
                dtype.to_sys(),
                h,
                stream,
            ));
        }
        const CALL: &str = "ncclAlltoAll (grouped ncclSend/ncclRecv)";
        if send == recv.cast_const() && self.nranks > 1 {
            return Err(NcclError::refused(
                CALL,
                sys::ncclInvalidArgument,
                "in-place all-to-all needs NCCL 2.28 or newer (ncclAlltoAll); this library \
                 only has send/recv",
            ));
        }
        let block = count.checked_mul(dtype.size_bytes()).ok_or_else(|| {
            NcclError::refused(
                CALL,
                sys::ncclInvalidArgument,
                "count * element size overflows",
            )
        })?;
        if block.checked_mul(self.nranks).is_none() {
            return Err(NcclError::refused(
                CALL,
                sys::ncclInvalidArgument,
                "nranks * count * element size overflows",
            ));
        }
        let t = dtype.to_sys();
        result::group_start(lib)?;
        let mut first_err: Option<NcclError> = None;
        for peer in 0..self.nranks {
            let Ok(p) = result::to_c_int(CALL, "peer", peer) else {
                break;
            };
            // Device addresses: plain arithmetic, never dereferenced here.
            let s = send
                .cast::<u8>()
                .wrapping_add(peer * block)
                .cast::<c_void>();
            let r = recv
                .cast::<u8>()
                .wrapping_add(peer * block)
                .cast::<c_void>();
            if let Err(e) = result::send(lib, s, count, t, p, h, stream) {
                first_err = Some(e);
                break;
            }
            if let Err(e) = result::recv(lib, r, count, t, p, h, stream) {
                first_err = Some(e);
                break;
            }
        }
        // The group must be closed even after a failed send/recv, or this thread stays in
        // group mode and every later NCCL call is silently deferred.
        let end = self.settle(result::group_end(lib));
        match first_err {
            Some(e) => Err(e),
            None => end,
        }
    }

    /// `ncclSend`: `count` elements to `peer`, who must post the matching [`Comm::recv`].
    /// Both sides of an exchange must be in one [`Group`] to progress together.
    ///
    /// # Safety
    /// See the note above the collectives.
    pub unsafe fn send(
        &self,
        send: *const c_void,
        count: usize,
        dtype: DataType,
        peer: usize,
        stream: Stream,
    ) -> Result<(), NcclError> {
        let h = self.live("ncclSend")?;
        let peer = self.check_peer("ncclSend", "peer", peer)?;
        self.settle(result::send(
            self.nccl.sys(),
            send,
            count,
            dtype.to_sys(),
            peer,
            h,
            stream,
        ))
    }

    /// `ncclRecv`: `count` elements from `peer`.
    ///
    /// # Safety
    /// See the note above the collectives.
    pub unsafe fn recv(
        &self,
        recv: *mut c_void,
        count: usize,
        dtype: DataType,
        peer: usize,
        stream: Stream,
    ) -> Result<(), NcclError> {
        let h = self.live("ncclRecv")?;
        let peer = self.check_peer("ncclRecv", "peer", peer)?;
        self.settle(result::recv(
            self.nccl.sys(),
            recv,
            count,
            dtype.to_sys(),
            peer,
            h,
            stream,
        ))
    }
}

impl Drop for Comm {
    /// Aborts a communicator nobody destroyed: unlike `ncclCommDestroy`, abort never waits
    /// for peers, so dropping a `Comm` on an error path cannot hang. Its error has nowhere to
    /// go and is ignored.
    fn drop(&mut self) {
        let _ = self.abort_now();
    }
}

// ---------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------

/// An open `ncclGroupStart` … `ncclGroupEnd` section: calls made while it lives are fused and
/// launched by [`Group::end`]. Needed to drive several GPUs from one thread, to aggregate
/// operations, and for send/recv pairs to progress together.
///
/// NCCL's group state is per thread, so a `Group` cannot leave its thread (`!Send`). Groups
/// nest. Dropping a group without `end` still calls `ncclGroupEnd` (ignoring its result)
/// rather than leave the thread in group mode, where every later call would be deferred.
pub struct Group {
    nccl: Nccl,
    open: bool,
    _not_send: PhantomData<*const ()>,
}

impl Group {
    /// `ncclGroupStart`.
    pub fn start(nccl: &Nccl) -> Result<Group, NcclError> {
        result::group_start(nccl.sys())?;
        Ok(Group {
            nccl: nccl.clone(),
            open: true,
            _not_send: PhantomData,
        })
    }

    /// `ncclGroupEnd`, returning its error.
    ///
    /// With non-blocking communicators NCCL may answer `ncclInProgress`: the operations are
    /// still being enqueued, and NCCL forbids the next call on those communicators until they
    /// settle. Pass them in `comms` and `end` settles each (within its
    /// [`Comm::call_timeout`], aborting it on failure). Blocking communicators need not be
    /// passed; `&[]` is fine when there are none. `ncclInProgress` with no communicator to
    /// settle is an error, so a missing one is noticed.
    pub fn end(mut self, comms: &[&Comm]) -> Result<(), NcclError> {
        self.open = false;
        match result::group_end(self.nccl.sys()) {
            Err(e) if e.is_in_progress() => {
                let nonblocking: Vec<&&Comm> = comms.iter().filter(|c| !c.blocking).collect();
                if nonblocking.is_empty() {
                    return Err(e.with_detail(
                        "the group holds operations of non-blocking communicators; pass them to \
                         Group::end so it can wait for them",
                    ));
                }
                for c in nonblocking {
                    c.settle(Err(e.clone()))?;
                }
                Ok(())
            }
            other => other,
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.open {
            self.open = false;
            let _ = result::group_end(self.nccl.sys());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_codes_decode_both_encodings() {
        assert_eq!(decode_version(23203), (2, 32, 3));
        assert_eq!(decode_version(22203), (2, 22, 3));
        assert_eq!(decode_version(21803), (2, 18, 3));
        assert_eq!(decode_version(20900), (2, 9, 0));
        assert_eq!(decode_version(2804), (2, 8, 4));
        assert_eq!(decode_version(2708), (2, 7, 8));
        assert_eq!(decode_version(-1), (0, 0, 0));
        for (a, b, c) in [
            (2, 8, 4),
            (2, 9, 0),
            (2, 14, 3),
            (2, 28, 0),
            (2, 32, 3),
            (3, 0, 1),
        ] {
            assert_eq!(decode_version(encode_version(a, b, c)), (a, b, c));
        }
        assert_eq!(encode_version(2, 8, 4), 2804);
        assert_eq!(encode_version(2, 32, 3), 23203);
        assert!(encode_version(2, 9, 0) > encode_version(2, 8, 9));
    }

    #[test]
    fn dtype_codes_and_sizes_match_nccl_h() {
        let codes: Vec<i32> = DataType::ALL.iter().map(|d| d.to_sys().0).collect();
        assert_eq!(codes, (0..12).collect::<Vec<i32>>());
        assert_eq!(DataType::Bfloat16.to_sys().0, 9);
        assert_eq!(DataType::Float8E4M3.to_sys().0, 10);
        assert_eq!(DataType::Float8E5M2.to_sys().0, 11);
        let sizes: Vec<usize> = DataType::ALL.iter().map(|d| d.size_bytes()).collect();
        assert_eq!(sizes, [1, 1, 4, 4, 8, 8, 2, 4, 8, 2, 1, 1]);
        assert_eq!(DataType::Float32.nccl_tests_name(), "float");
        assert_eq!(DataType::Float16.nccl_tests_name(), "half");
    }

    #[test]
    fn redop_codes_match_nccl_h() {
        let codes: Vec<i32> = ReduceOp::ALL.iter().map(|o| o.to_sys().0).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4]);
        assert_eq!(ReduceOp::Avg.nccl_tests_name(), "avg");
    }

    #[test]
    fn unique_id_bytes_round_trip() {
        let mut bytes = [0u8; 128];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i * 37 % 256) as u8;
        }
        let id = UniqueId::from_bytes(bytes);
        assert_eq!(id.to_bytes(), bytes);
        assert_eq!(
            UniqueId::from_slice(&bytes).map(|i| i.to_bytes()),
            Ok(bytes)
        );
        let short = UniqueId::from_slice(&bytes[..100]).map(|_| ());
        assert_eq!(
            short,
            Err("an NCCL unique id is 128 bytes, but 100 arrived".to_string())
        );
        assert!(format!("{id:?}").starts_with("UniqueId(00254a"));
    }

    #[test]
    fn poll_until_succeeds_fails_and_times_out() {
        // Done on the 5th poll.
        let mut n = 0;
        let r: Result<(), PollEnd<String>> =
            poll_until(Instant::now() + Duration::from_secs(10), || {
                n += 1;
                Ok(n >= 5)
            });
        assert_eq!(r, Ok(()));
        assert_eq!(n, 5);

        // A failure stops at once.
        let r = poll_until(Instant::now() + Duration::from_secs(10), || {
            Err::<bool, _>("stream query failed".to_string())
        });
        assert_eq!(r, Err(PollEnd::Failed("stream query failed".to_string())));

        // Never done: ends at the deadline, after at least one step, promptly.
        let start = Instant::now();
        let mut steps = 0;
        let r: Result<(), PollEnd<String>> = poll_until(start + Duration::from_millis(30), || {
            steps += 1;
            Ok(false)
        });
        let took = start.elapsed();
        match r {
            Err(PollEnd::TimedOut(waited)) => assert!(waited >= Duration::from_millis(30)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(steps >= 1);
        assert!(took < Duration::from_secs(2), "took {took:?}");

        // A deadline already past still runs one step (a finished collective is not an error).
        let r: Result<(), PollEnd<String>> =
            poll_until(Instant::now() - Duration::from_secs(1), || Ok(true));
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn wait_errors_say_which_rank_and_what_happened() {
        let t = WaitError::TimedOut {
            what: "the collective",
            ranks: vec![3],
            nranks: 8,
            waited: Duration::from_millis(30_000),
            abort_errors: vec![],
        }
        .to_string();
        assert_eq!(
            t,
            "rank 3 of 8: the collective did not finish within 30.0 s, so another rank has \
             probably died, not joined, or hung; the communicator was aborted"
        );
        let multi = WaitError::TimedOut {
            what: "the collective",
            ranks: vec![0, 1],
            nranks: 2,
            waited: Duration::from_secs(1),
            abort_errors: vec![],
        }
        .to_string();
        assert!(multi.starts_with("ranks 0,1 of 2: "), "{multi}");
        let a = WaitError::Async {
            what: "the collective",
            rank: 1,
            nranks: 4,
            error: Box::new(NcclError {
                call: "ncclCommGetAsyncError",
                code: sys::ncclRemoteError,
                description: "remote process exited or there was a network error".into(),
                last_error: None,
                detail: None,
            }),
            abort_errors: vec![],
        }
        .to_string();
        assert!(a.starts_with("rank 1 of 4: NCCL reported an error during the collective"));
        assert!(a.contains("ncclRemoteError") && a.ends_with("the communicator was aborted"));
        let q = WaitError::Query {
            what: "the collective",
            message: "cudaStreamQuery: an illegal memory access was encountered".into(),
            abort_errors: vec![],
        }
        .to_string();
        assert!(
            q.contains("illegal memory access") && q.contains("aborted"),
            "{q}"
        );
    }
}
