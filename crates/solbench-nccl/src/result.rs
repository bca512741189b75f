//! Layer 2: each NCCL call once, checked. A non-`ncclSuccess` code becomes an [`NcclError`]
//! that names the call, the code, NCCL's description of the code (`ncclGetErrorString`) and,
//! when the library has it, the text of the last error (`ncclGetLastError`), which is where
//! NCCL says *what* went wrong ("peer 3 closed the connection", "invalid rank").
//!
//! `ncclInProgress` is reported as an error too ([`NcclError::is_in_progress`]): only
//! non-blocking communicators return it, and only the caller knows whether that is expected.
//! The safe layer turns it into "wait until NCCL has finished" for non-blocking
//! communicators.
//!
//! Functions that take communicators, device pointers or streams are `unsafe`: NCCL trusts
//! them, and a wrong one corrupts memory. The rest are safe.

use crate::sys::{self, ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclResult_t, Library, Stream};
use std::ffi::{c_int, c_void, CStr};
use std::fmt;

/// A failed NCCL call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NcclError {
    /// The C function that failed (or, for errors this crate detects before calling NCCL,
    /// the one it refused to call).
    pub call: &'static str,
    /// The code it returned.
    pub code: ncclResult_t,
    /// `ncclGetErrorString(code)`, e.g. "invalid argument (run with NCCL_DEBUG=WARN for
    /// details)".
    pub description: String,
    /// `ncclGetLastError`, when the library has it and it says something.
    pub last_error: Option<String>,
    /// What this crate adds: why it refused a call, or what it did after the failure (such
    /// as aborting the communicator).
    pub detail: Option<String>,
}

impl NcclError {
    /// True for `ncclInProgress`: a non-blocking communicator accepted the call and is still
    /// working on it.
    pub fn is_in_progress(&self) -> bool {
        self.code == sys::ncclInProgress
    }

    /// The code's name in `nccl.h` (`"ncclSystemError"`), or `"ncclResult_t(N)"` when the
    /// header this crate follows does not know it.
    pub fn code_name(&self) -> String {
        code_name(self.code)
    }

    /// An error this crate raises itself, before or instead of calling NCCL (an argument NCCL
    /// would reject, a symbol the library lacks).
    pub fn refused(call: &'static str, code: ncclResult_t, detail: impl Into<String>) -> Self {
        NcclError {
            call,
            code,
            description: String::new(),
            last_error: None,
            detail: Some(detail.into()),
        }
    }

    /// The same error with `detail` appended to what it already says.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        self.detail = Some(match self.detail.take() {
            Some(d) => format!("{d}; {detail}"),
            None => detail,
        });
        self
    }
}

impl fmt::Display for NcclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed with {}", self.call, self.code_name())?;
        if !self.description.is_empty() {
            write!(f, " ({})", self.description)?;
        }
        if let Some(last) = &self.last_error {
            write!(f, ": {last}")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NcclError {}

/// The name of a result code, for any value.
pub fn code_name(code: ncclResult_t) -> String {
    match code.name() {
        Some(n) => n.to_string(),
        None => format!("ncclResult_t({})", code.0),
    }
}

/// `ncclGetErrorString(code)`, or empty when NCCL returns null.
pub fn error_string(lib: &Library, code: ncclResult_t) -> String {
    // SAFETY: takes a plain integer; NCCL returns a static string for any value (or null).
    let p = unsafe { (lib.ncclGetErrorString)(code) };
    c_text(p).unwrap_or_default()
}

/// `ncclGetLastError(comm)`: the last error NCCL recorded (for `comm`, or globally when
/// `comm` is null). `None` when the library lacks the call (NCCL < 2.13) or has nothing to
/// say.
///
/// # Safety
/// `comm` must be null or a live communicator of `lib`.
pub unsafe fn last_error(lib: &Library, comm: ncclComm_t) -> Option<String> {
    let f = lib.ncclGetLastError?;
    c_text(f(comm)).filter(|s| !s.trim().is_empty())
}

/// Copies a C string NCCL owns; `None` for null.
fn c_text(p: *const std::ffi::c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: NCCL returns NUL-terminated strings that stay valid at least until the next
    // NCCL call on this thread; we copy at once.
    Some(
        unsafe { CStr::from_ptr(p) }
            .to_string_lossy()
            .trim()
            .to_string(),
    )
}

/// Turns a return code into a result, gathering the texts when it is not `ncclSuccess`.
///
/// # Safety
/// `comm` must be null or a live communicator of `lib`.
pub unsafe fn check(
    lib: &Library,
    call: &'static str,
    comm: ncclComm_t,
    code: ncclResult_t,
) -> Result<(), NcclError> {
    if code == sys::ncclSuccess {
        return Ok(());
    }
    let last_error = if code == sys::ncclInProgress {
        // Not a failure: there is no error text worth a call.
        None
    } else {
        last_error(lib, comm)
    };
    Err(NcclError {
        call,
        code,
        description: error_string(lib, code),
        last_error,
        detail: None,
    })
}

/// The error for an optional entry point this library lacks.
pub fn missing(call: &'static str, needs: &str) -> NcclError {
    NcclError::refused(
        call,
        sys::ncclInvalidUsage,
        format!("the loaded library does not export {call} ({needs})"),
    )
}

/// Converts a count or rank to C `int`, refusing values NCCL's `int` cannot hold.
pub fn to_c_int(call: &'static str, what: &str, v: usize) -> Result<c_int, NcclError> {
    c_int::try_from(v).map_err(|_| {
        NcclError::refused(
            call,
            sys::ncclInvalidArgument,
            format!("{what} {v} does not fit in a C int"),
        )
    })
}

// ---------------------------------------------------------------------------------------
// Library-wide calls
// ---------------------------------------------------------------------------------------

/// `ncclGetVersion`: the library's version code (see [`crate::safe::decode_version`]).
pub fn get_version(lib: &Library) -> Result<c_int, NcclError> {
    let mut v: c_int = 0;
    // SAFETY: valid out-pointer.
    unsafe {
        check(
            lib,
            "ncclGetVersion",
            std::ptr::null_mut(),
            (lib.ncclGetVersion)(&mut v),
        )?
    };
    Ok(v)
}

/// `ncclGetUniqueId`. Needs no GPU; it starts NCCL's bootstrap root listener (a thread and
/// a socket) that the ranks later connect to.
pub fn get_unique_id(lib: &Library) -> Result<sys::ncclUniqueId, NcclError> {
    let mut id = sys::ncclUniqueId {
        internal: [0; sys::NCCL_UNIQUE_ID_BYTES],
    };
    // SAFETY: valid out-pointer to a 128-byte struct.
    unsafe {
        check(
            lib,
            "ncclGetUniqueId",
            std::ptr::null_mut(),
            (lib.ncclGetUniqueId)(&mut id),
        )?
    };
    Ok(id)
}

/// `ncclGroupStart`.
pub fn group_start(lib: &Library) -> Result<(), NcclError> {
    // SAFETY: no arguments.
    unsafe {
        check(
            lib,
            "ncclGroupStart",
            std::ptr::null_mut(),
            (lib.ncclGroupStart)(),
        )
    }
}

/// `ncclGroupEnd`. Returns `ncclInProgress` (as an error) when the group holds operations of
/// non-blocking communicators that are still being enqueued.
pub fn group_end(lib: &Library) -> Result<(), NcclError> {
    // SAFETY: no arguments.
    unsafe {
        check(
            lib,
            "ncclGroupEnd",
            std::ptr::null_mut(),
            (lib.ncclGroupEnd)(),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Communicators
// ---------------------------------------------------------------------------------------

/// `ncclCommInitRank`. Blocks until all `nranks` ranks have joined.
///
/// On failure the returned handle (second element) may still be non-null and must be
/// aborted by the caller.
///
/// # Safety
/// The caller's current CUDA/HIP device is the one this rank uses (NCCL reads it).
pub unsafe fn comm_init_rank(
    lib: &Library,
    nranks: c_int,
    id: sys::ncclUniqueId,
    rank: c_int,
) -> (ncclComm_t, Result<(), NcclError>) {
    let mut comm: ncclComm_t = std::ptr::null_mut();
    let code = (lib.ncclCommInitRank)(&mut comm, nranks, id, rank);
    let r = check(lib, "ncclCommInitRank", std::ptr::null_mut(), code);
    (comm, r)
}

/// `ncclCommInitRankConfig` (NCCL ≥ 2.14). With `config.blocking == 0` it returns
/// `ncclInProgress` at once and the handle is valid: poll `ncclCommGetAsyncError` until it
/// leaves `ncclInProgress`.
///
/// On failure the handle may still be non-null and must be aborted by the caller.
///
/// # Safety
/// As [`comm_init_rank`]; `config` must come from [`sys::ncclConfig_t::initializer`].
pub unsafe fn comm_init_rank_config(
    lib: &Library,
    nranks: c_int,
    id: sys::ncclUniqueId,
    rank: c_int,
    config: &mut sys::ncclConfig_t,
) -> (ncclComm_t, Result<(), NcclError>) {
    let Some(f) = lib.ncclCommInitRankConfig else {
        return (
            std::ptr::null_mut(),
            Err(missing("ncclCommInitRankConfig", "NCCL 2.14 or newer")),
        );
    };
    let mut comm: ncclComm_t = std::ptr::null_mut();
    let code = f(&mut comm, nranks, id, rank, config);
    let r = check(lib, "ncclCommInitRankConfig", std::ptr::null_mut(), code);
    (comm, r)
}

/// `ncclCommInitAll`: one communicator per device in `devices`, all in this process.
/// Blocking. On failure no communicator is returned (NCCL frees what it made).
///
/// # Safety
/// `devices` must be valid device ordinals, each at most once.
pub unsafe fn comm_init_all(
    lib: &Library,
    devices: &[c_int],
) -> Result<Vec<ncclComm_t>, NcclError> {
    let n = to_c_int("ncclCommInitAll", "the device count", devices.len())?;
    let mut comms: Vec<ncclComm_t> = vec![std::ptr::null_mut(); devices.len()];
    let code = (lib.ncclCommInitAll)(comms.as_mut_ptr(), n, devices.as_ptr());
    check(lib, "ncclCommInitAll", std::ptr::null_mut(), code)?;
    Ok(comms)
}

/// `ncclCommFinalize` (NCCL ≥ 2.14): flushes outstanding work. For non-blocking
/// communicators it returns `ncclInProgress`.
///
/// # Safety
/// `comm` must be live.
pub unsafe fn comm_finalize(lib: &Library, comm: ncclComm_t) -> Result<(), NcclError> {
    let f = lib
        .ncclCommFinalize
        .ok_or_else(|| missing("ncclCommFinalize", "NCCL 2.14 or newer"))?;
    check(lib, "ncclCommFinalize", comm, f(comm))
}

/// `ncclCommDestroy`. The handle is invalid afterwards, whatever the result.
///
/// # Safety
/// `comm` must be live and not used again.
pub unsafe fn comm_destroy(lib: &Library, comm: ncclComm_t) -> Result<(), NcclError> {
    let code = (lib.ncclCommDestroy)(comm);
    // The communicator is gone, so ask only for the global last error.
    check(lib, "ncclCommDestroy", std::ptr::null_mut(), code)
}

/// `ncclCommAbort`: frees the communicator and stops its operations on the device. The
/// handle is invalid afterwards, whatever the result.
///
/// # Safety
/// `comm` must be live and not used again.
pub unsafe fn comm_abort(lib: &Library, comm: ncclComm_t) -> Result<(), NcclError> {
    let code = (lib.ncclCommAbort)(comm);
    check(lib, "ncclCommAbort", std::ptr::null_mut(), code)
}

/// `ncclCommGetAsyncError`: the communicator's state — `ncclSuccess` (idle or working
/// normally), `ncclInProgress` (a non-blocking operation is still being set up) or an error
/// (a peer failed, the network broke). The outer `Err` is the query itself failing.
///
/// # Safety
/// `comm` must be live.
pub unsafe fn comm_get_async_error(
    lib: &Library,
    comm: ncclComm_t,
) -> Result<ncclResult_t, NcclError> {
    let f = lib
        .ncclCommGetAsyncError
        .ok_or_else(|| missing("ncclCommGetAsyncError", "NCCL 2.4 or newer"))?;
    let mut state = sys::ncclSuccess;
    check(lib, "ncclCommGetAsyncError", comm, f(comm, &mut state))?;
    Ok(state)
}

/// `ncclCommCount`.
///
/// # Safety
/// `comm` must be live.
pub unsafe fn comm_count(lib: &Library, comm: ncclComm_t) -> Result<c_int, NcclError> {
    let mut n: c_int = 0;
    check(
        lib,
        "ncclCommCount",
        comm,
        (lib.ncclCommCount)(comm, &mut n),
    )?;
    Ok(n)
}

/// `ncclCommCuDevice` (the HIP device for RCCL).
///
/// # Safety
/// `comm` must be live.
pub unsafe fn comm_cu_device(lib: &Library, comm: ncclComm_t) -> Result<c_int, NcclError> {
    let mut d: c_int = 0;
    check(
        lib,
        "ncclCommCuDevice",
        comm,
        (lib.ncclCommCuDevice)(comm, &mut d),
    )?;
    Ok(d)
}

/// `ncclCommUserRank`.
///
/// # Safety
/// `comm` must be live.
pub unsafe fn comm_user_rank(lib: &Library, comm: ncclComm_t) -> Result<c_int, NcclError> {
    let mut r: c_int = 0;
    check(
        lib,
        "ncclCommUserRank",
        comm,
        (lib.ncclCommUserRank)(comm, &mut r),
    )?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// Collectives and point-to-point. All enqueue on `stream` and return before the work runs.
// Safety for all: `comm` live; the buffers are device memory of the communicator's device
// (or memory NCCL can reach) of the sizes `nccl.h` documents for the call; `stream` is a
// stream of that device or null.
// ---------------------------------------------------------------------------------------

/// `ncclAllReduce`: `count` elements in and out.
///
/// # Safety
/// See the section comment above.
#[allow(clippy::too_many_arguments)]
pub unsafe fn all_reduce(
    lib: &Library,
    send: *const c_void,
    recv: *mut c_void,
    count: usize,
    dtype: ncclDataType_t,
    op: ncclRedOp_t,
    comm: ncclComm_t,
    stream: Stream,
) -> Result<(), NcclError> {
    let code = (lib.ncclAllReduce)(send, recv, count, dtype, op, comm, stream);
    check(lib, "ncclAllReduce", comm, code)
}

/// `ncclBroadcast`: `count` elements from `root`'s `send` into every rank's `recv`.
///
/// # Safety
/// See the section comment above.
#[allow(clippy::too_many_arguments)]
pub unsafe fn broadcast(
    lib: &Library,
    send: *const c_void,
    recv: *mut c_void,
    count: usize,
    dtype: ncclDataType_t,
    root: c_int,
    comm: ncclComm_t,
    stream: Stream,
) -> Result<(), NcclError> {
    let code = (lib.ncclBroadcast)(send, recv, count, dtype, root, comm, stream);
    check(lib, "ncclBroadcast", comm, code)
}

/// `ncclReduce`: `count` elements reduced into `root`'s `recv` (may be null elsewhere).
///
/// # Safety
/// See the section comment above.
#[allow(clippy::too_many_arguments)]
pub unsafe fn reduce(
    lib: &Library,
    send: *const c_void,
    recv: *mut c_void,
    count: usize,
    dtype: ncclDataType_t,
    op: ncclRedOp_t,
    root: c_int,
    comm: ncclComm_t,
    stream: Stream,
) -> Result<(), NcclError> {
    let code = (lib.ncclReduce)(send, recv, count, dtype, op, root, comm, stream);
    check(lib, "ncclReduce", comm, code)
}

/// `ncclAllGather`: `send_count` elements from each rank; `recv` holds `nranks * send_count`.
///
/// # Safety
/// See the section comment above.
pub unsafe fn all_gather(
    lib: &Library,
    send: *const c_void,
    recv: *mut c_void,
    send_count: usize,
    dtype: ncclDataType_t,
    comm: ncclComm_t,
    stream: Stream,
) -> Result<(), NcclError> {
    let code = (lib.ncclAllGather)(send, recv, send_count, dtype, comm, stream);
    check(lib, "ncclAllGather", comm, code)
}

/// `ncclReduceScatter`: `send` holds `nranks * recv_count`; each rank gets `recv_count`.
///
/// # Safety
/// See the section comment above.
#[allow(clippy::too_many_arguments)]
pub unsafe fn reduce_scatter(
    lib: &Library,
    send: *const c_void,
    recv: *mut c_void,
    recv_count: usize,
    dtype: ncclDataType_t,
    op: ncclRedOp_t,
    comm: ncclComm_t,
    stream: Stream,
) -> Result<(), NcclError> {
    let code = (lib.ncclReduceScatter)(send, recv, recv_count, dtype, op, comm, stream);
    check(lib, "ncclReduceScatter", comm, code)
}

/// The native all-to-all (`ncclAlltoAll`, or RCCL's `ncclAllToAll`): `count` elements to and
/// from each peer; both buffers hold `nranks * count`. Errors when the library has neither
/// (NCCL < 2.28); the safe layer then builds it from send/recv.
///
/// # Safety
/// See the section comment above.
pub unsafe fn alltoall(
    lib: &Library,
    send: *const c_void,
    recv: *mut c_void,
    count: usize,
    dtype: ncclDataType_t,
    comm: ncclComm_t,
    stream: Stream,
) -> Result<(), NcclError> {
    let Some((name, f)) = lib.alltoall() else {
        return Err(missing(
            "ncclAlltoAll",
            "NCCL 2.28 or newer, or RCCL's ncclAllToAll",
        ));
    };
    check(lib, name, comm, f(send, recv, count, dtype, comm, stream))
}

/// `ncclSend`: `count` elements to `peer`, who must post the matching `ncclRecv`.
///
/// # Safety
/// See the section comment above.
pub unsafe fn send(
    lib: &Library,
    send: *const c_void,
    count: usize,
    dtype: ncclDataType_t,
    peer: c_int,
    comm: ncclComm_t,
    stream: Stream,
) -> Result<(), NcclError> {
    let code = (lib.ncclSend)(send, count, dtype, peer, comm, stream);
    check(lib, "ncclSend", comm, code)
}

/// `ncclRecv`: `count` elements from `peer`.
///
/// # Safety
/// See the section comment above.
pub unsafe fn recv(
    lib: &Library,
    recv: *mut c_void,
    count: usize,
    dtype: ncclDataType_t,
    peer: c_int,
    comm: ncclComm_t,
    stream: Stream,
) -> Result<(), NcclError> {
    let code = (lib.ncclRecv)(recv, count, dtype, peer, comm, stream);
    check(lib, "ncclRecv", comm, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_names_call_code_and_detail() {
        let e = NcclError {
            call: "ncclAllReduce",
            code: sys::ncclRemoteError,
            description: "remote process exited or there was a network error".into(),
            last_error: Some("peer 3 closed the connection".into()),
            detail: None,
        }
        .with_detail("the communicator was aborted");
        assert_eq!(
            e.to_string(),
            "ncclAllReduce failed with ncclRemoteError (remote process exited or there was a \
             network error): peer 3 closed the connection: the communicator was aborted"
        );
        assert!(!e.is_in_progress());
        let r = NcclError::refused(
            "ncclSend",
            sys::ncclInvalidArgument,
            "peer 9 is not below 4",
        );
        assert_eq!(
            r.to_string(),
            "ncclSend failed with ncclInvalidArgument: peer 9 is not below 4"
        );
        assert_eq!(code_name(sys::ncclResult_t(77)), "ncclResult_t(77)");
        assert!(to_c_int("ncclSend", "peer", usize::MAX).is_err());
        assert_eq!(to_c_int("ncclSend", "peer", 7).ok(), Some(7));
    }
}
