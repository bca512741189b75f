//! Layer 1: the C ABI of `nccl.h`, and the loaded library as a table of function pointers.
//!
//! Types and values are those of NCCL 2.32.3's `nccl.h` (the header shipped in the PyPI wheel
//! `nvidia-nccl-cu13==2.32.3`, `NCCL_VERSION_CODE` 23203). RCCL exports the same names with
//! `hipStream_t` in place of `cudaStream_t`; both are opaque pointers here, so this crate
//! depends on no GPU runtime.
//!
//! C enums are `#[repr(transparent)]` wrappers over `c_int` with the header's values as
//! constants, never Rust enums: a library may return a value this file does not know (a newer
//! `ncclResult_t`, a dynamic `ncclRedOp_t` from `ncclRedOpCreatePreMulSum`), and an unknown
//! value in a Rust enum is undefined behaviour.
//!
//! [`Library`] resolves every symbol when the library is opened. A missing required symbol
//! is a [`LoadError`] naming every missing one; optional symbols (newer API) are `Option`s,
//! and the layers above say which call needs which version when one is absent.
#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, OsString};
use std::fmt;
use std::mem::ManuallyDrop;
use std::path::PathBuf;

/// `NCCL_VERSION_CODE` of the header these declarations were written from (NCCL 2.32.3).
pub const NCCL_HEADER_VERSION_CODE: c_int = 23203;

// ---------------------------------------------------------------------------------------
// Handles and streams
// ---------------------------------------------------------------------------------------

/// The opaque `struct ncclComm` (never dereferenced).
#[repr(C)]
pub struct ncclComm {
    _opaque: [u8; 0],
}

/// `ncclComm_t`: a communicator handle. `NCCL_COMM_NULL` is the null pointer.
pub type ncclComm_t = *mut ncclComm;

/// `cudaStream_t` (NCCL) or `hipStream_t` (RCCL). Both are pointers to an opaque struct, and
/// the null pointer is the legacy default stream in both runtimes.
pub type Stream = *mut c_void;

/// `NCCL_UNIQUE_ID_BYTES`.
pub const NCCL_UNIQUE_ID_BYTES: usize = 128;

/// `ncclUniqueId`: 128 opaque bytes made by `ncclGetUniqueId` on one rank and shipped to
/// every other rank (over our TCP rendezvous). Passed **by value** to `ncclCommInitRank*`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ncclUniqueId {
    pub internal: [c_char; NCCL_UNIQUE_ID_BYTES],
}

// ---------------------------------------------------------------------------------------
// ncclResult_t
// ---------------------------------------------------------------------------------------

/// `ncclResult_t`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ncclResult_t(pub c_int);

pub const ncclSuccess: ncclResult_t = ncclResult_t(0);
pub const ncclUnhandledCudaError: ncclResult_t = ncclResult_t(1);
pub const ncclSystemError: ncclResult_t = ncclResult_t(2);
pub const ncclInternalError: ncclResult_t = ncclResult_t(3);
pub const ncclInvalidArgument: ncclResult_t = ncclResult_t(4);
pub const ncclInvalidUsage: ncclResult_t = ncclResult_t(5);
pub const ncclRemoteError: ncclResult_t = ncclResult_t(6);
/// Only non-blocking communicators return it: the call was accepted and is still running;
/// poll `ncclCommGetAsyncError` until it reports `ncclSuccess` before the next call.
pub const ncclInProgress: ncclResult_t = ncclResult_t(7);
/// New in the 2.3x headers; older libraries never return it.
pub const ncclTimeout: ncclResult_t = ncclResult_t(8);
pub const ncclNumResults: ncclResult_t = ncclResult_t(9);

impl ncclResult_t {
    /// The enumerator's name in `nccl.h`, or `None` for a value this header does not know.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "ncclSuccess",
            1 => "ncclUnhandledCudaError",
            2 => "ncclSystemError",
            3 => "ncclInternalError",
            4 => "ncclInvalidArgument",
            5 => "ncclInvalidUsage",
            6 => "ncclRemoteError",
            7 => "ncclInProgress",
            8 => "ncclTimeout",
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------------------
// ncclDataType_t and ncclRedOp_t
// ---------------------------------------------------------------------------------------

/// `ncclDataType_t`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ncclDataType_t(pub c_int);

pub const ncclInt8: ncclDataType_t = ncclDataType_t(0);
pub const ncclChar: ncclDataType_t = ncclDataType_t(0);
pub const ncclUint8: ncclDataType_t = ncclDataType_t(1);
pub const ncclInt32: ncclDataType_t = ncclDataType_t(2);
pub const ncclInt: ncclDataType_t = ncclDataType_t(2);
pub const ncclUint32: ncclDataType_t = ncclDataType_t(3);
pub const ncclInt64: ncclDataType_t = ncclDataType_t(4);
pub const ncclUint64: ncclDataType_t = ncclDataType_t(5);
pub const ncclFloat16: ncclDataType_t = ncclDataType_t(6);
pub const ncclHalf: ncclDataType_t = ncclDataType_t(6);
pub const ncclFloat32: ncclDataType_t = ncclDataType_t(7);
pub const ncclFloat: ncclDataType_t = ncclDataType_t(7);
pub const ncclFloat64: ncclDataType_t = ncclDataType_t(8);
pub const ncclDouble: ncclDataType_t = ncclDataType_t(8);
/// NCCL ≥ 2.10 (earlier builds only with CUDA 11 and `__CUDA_BF16_TYPES_EXIST__`).
pub const ncclBfloat16: ncclDataType_t = ncclDataType_t(9);
/// NCCL ≥ 2.24, and only on sm_90 or newer.
pub const ncclFloat8e4m3: ncclDataType_t = ncclDataType_t(10);
/// NCCL ≥ 2.24, and only on sm_90 or newer.
pub const ncclFloat8e5m2: ncclDataType_t = ncclDataType_t(11);
pub const ncclNumTypes: ncclDataType_t = ncclDataType_t(12);

/// `ncclRedOp_t`. Values from `ncclNumOps` up are dynamic operators made by
/// `ncclRedOpCreatePreMulSum`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ncclRedOp_t(pub c_int);

pub const ncclSum: ncclRedOp_t = ncclRedOp_t(0);
pub const ncclProd: ncclRedOp_t = ncclRedOp_t(1);
pub const ncclMax: ncclRedOp_t = ncclRedOp_t(2);
pub const ncclMin: ncclRedOp_t = ncclRedOp_t(3);
/// NCCL ≥ 2.10.
pub const ncclAvg: ncclRedOp_t = ncclRedOp_t(4);
pub const ncclNumOps: ncclRedOp_t = ncclRedOp_t(5);
/// `ncclMaxRedOp`: `0x7fffffff >> (32 - 8*sizeof(ncclRedOp_dummy_t))` with a 4-byte enum.
pub const ncclMaxRedOp: ncclRedOp_t = ncclRedOp_t(0x7fff_ffff);

// ---------------------------------------------------------------------------------------
// ncclConfig_t
// ---------------------------------------------------------------------------------------

/// `NCCL_CONFIG_UNDEF_INT` (`INT_MIN`): "let NCCL choose" for every int field.
pub const NCCL_CONFIG_UNDEF_INT: c_int = c_int::MIN;
/// `NCCL_API_MAGIC`, which `NCCL_CONFIG_INITIALIZER` stores in `magic`.
pub const NCCL_API_MAGIC: c_uint = 0xcafe_beef;
/// The version this crate writes into `ncclConfig_t::version`: the header the layout below
/// was copied from. It must describe *our* layout, not the loaded library's (see
/// [`ncclConfig_t`]).
pub const NCCL_CONFIG_LAYOUT_VERSION: c_uint = NCCL_HEADER_VERSION_CODE as c_uint;

/// `ncclConfig_t` exactly as NCCL 2.32.3 declares it (`struct ncclConfig_v23100`: the layout
/// last grew in 2.31). 120 bytes on LP64.
///
/// # Why one layout works with every library version
/// NCCL's `parseCommConfig` (2.14 to 2.32 alike) reads `size` first, copies
/// `min(size, sizeof(its own ncclConfig_t))` bytes over a copy of its own
/// `NCCL_CONFIG_INITIALIZER`, rejects the config unless `magic == NCCL_API_MAGIC`, and then
/// resets to defaults every field added after the caller's `version`. The struct is
/// append-only. So:
/// - `size` must be `size_of::<ncclConfig_t>()` of **this** layout: an older library clamps it
///   to its own size and never sees the fields it lacks; a newer one keeps its defaults for
///   the fields we do not send.
/// - `version` must be the version of **this** layout ([`NCCL_CONFIG_LAYOUT_VERSION`]), never
///   the loaded library's: claiming a newer version than the bytes we send could make a newer
///   library trust fields it then reads from its own defaults. It is never lowered either:
///   NCCL uses it only to discard fields, and every field we set (`blocking`) exists from
///   2.14, the first release with `ncclCommInitRankConfig`.
/// - `magic` must be [`NCCL_API_MAGIC`], or the call fails with `ncclInvalidArgument`.
///
/// [`ncclConfig_t::initializer`] fills all three; change only the user fields.
/// RCCL copies NCCL's struct and checks for the versions it tracks (RCCL 2.2x), which are all
/// prefixes of this layout.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ncclConfig_t {
    /// Attributes users never touch.
    pub size: usize,
    pub magic: c_uint,
    pub version: c_uint,
    /// Attributes users may set (`NCCL_CONFIG_UNDEF_INT` / null = NCCL's default).
    pub blocking: c_int,
    pub cgaClusterSize: c_int,
    pub minCTAs: c_int,
    pub maxCTAs: c_int,
    pub netName: *const c_char,
    pub splitShare: c_int,
    pub trafficClass: c_int,
    pub commName: *const c_char,
    pub collnetEnable: c_int,
    pub CTAPolicy: c_int,
    pub shrinkShare: c_int,
    pub nvlsCTAs: c_int,
    pub nChannelsPerNetPeer: c_int,
    pub nvlinkCentricSched: c_int,
    pub graphUsageMode: c_int,
    pub numRmaCtx: c_int,
    pub maxP2pPeers: c_int,
    pub graphStreamOrdering: c_int,
    pub launchOrderImplicit: c_int,
    pub numRmaSig: c_int,
    pub rmaEagerInit: c_int,
    pub hostCftMode: c_int,
    pub nvlsHostMode: c_int,
}

// The header's layout on LP64 (checked against gcc's offsetof of NCCL 2.32.3's nccl.h; the
// per-field offsets are unit-tested). A wrong size would make NCCL copy garbage.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<ncclConfig_t>() == 120);

impl ncclConfig_t {
    /// `NCCL_CONFIG_INITIALIZER` of NCCL 2.32.3: `size`, `magic` and `version` set as
    /// described on the type, every user field undefined.
    pub const fn initializer() -> ncclConfig_t {
        const U: c_int = NCCL_CONFIG_UNDEF_INT;
        ncclConfig_t {
            size: std::mem::size_of::<ncclConfig_t>(),
            magic: NCCL_API_MAGIC,
            version: NCCL_CONFIG_LAYOUT_VERSION,
            blocking: U,
            cgaClusterSize: U,
            minCTAs: U,
            maxCTAs: U,
            netName: std::ptr::null(),
            splitShare: U,
            trafficClass: U,
            commName: std::ptr::null(),
            collnetEnable: U,
            CTAPolicy: U,
            shrinkShare: U,
            nvlsCTAs: U,
            nChannelsPerNetPeer: U,
            nvlinkCentricSched: U,
            graphUsageMode: U,
            numRmaCtx: U,
            maxP2pPeers: U,
            graphStreamOrdering: U,
            launchOrderImplicit: U,
            numRmaSig: U,
            rmaEagerInit: U,
            hostCftMode: U,
            nvlsHostMode: U,
        }
    }
}

impl Default for ncclConfig_t {
    fn default() -> Self {
        Self::initializer()
    }
}

// ---------------------------------------------------------------------------------------
// Which library
// ---------------------------------------------------------------------------------------

/// Which implementation of the NCCL API to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// NVIDIA NCCL: `libnccl.so.2` (the only name the runtime packages and the PyPI wheel
    /// ship), then `libnccl.so` (the -dev symlink).
    Nccl,
    /// AMD RCCL: `librccl.so.1`, `librccl.so`, then the same under `$ROCM_PATH/lib` and
    /// `/opt/rocm/lib`, since ROCm is not always registered with the dynamic loader.
    Rccl,
}

impl Flavor {
    /// The file name users know the library by (used in messages).
    pub fn soname(self) -> &'static str {
        match self {
            Flavor::Nccl => "libnccl.so.2",
            Flavor::Rccl => "librccl.so.1",
        }
    }

    /// The product name.
    pub fn product(self) -> &'static str {
        match self {
            Flavor::Nccl => "NCCL",
            Flavor::Rccl => "RCCL",
        }
    }

    /// The environment variable that names the library file and replaces the search.
    pub fn env_var(self) -> &'static str {
        match self {
            Flavor::Nccl => "SOLBENCH_NCCL_LIBRARY",
            Flavor::Rccl => "SOLBENCH_RCCL_LIBRARY",
        }
    }

    /// What to do when the library is missing or unusable (the second half of a sentence).
    pub fn install_hint(self) -> &'static str {
        match self {
            Flavor::Nccl => {
                "`pip install nvidia-nccl-cu13` and add its nvidia/nccl/lib directory to \
                 LD_LIBRARY_PATH, or install NCCL (libnccl2), or set SOLBENCH_NCCL_LIBRARY to \
                 the library file"
            }
            Flavor::Rccl => {
                "install ROCm's RCCL (the rccl package) and add its lib directory (usually \
                 /opt/rocm/lib) to LD_LIBRARY_PATH, or set SOLBENCH_RCCL_LIBRARY to the \
                 library file"
            }
        }
    }

    /// The names handed to `dlopen`, in order. Bare names are searched by the dynamic loader
    /// itself (LD_LIBRARY_PATH, the ld.so cache, the default directories), so nothing here
    /// walks LD_LIBRARY_PATH. `rocm_path` is `$ROCM_PATH`, passed in so this stays pure.
    pub fn candidates(self, rocm_path: Option<OsString>) -> Vec<OsString> {
        match self {
            Flavor::Nccl => vec!["libnccl.so.2".into(), "libnccl.so".into()],
            Flavor::Rccl => {
                let mut v: Vec<OsString> = vec!["librccl.so.1".into(), "librccl.so".into()];
                let mut roots: Vec<PathBuf> = Vec::new();
                if let Some(r) = rocm_path.filter(|r| !r.is_empty()) {
                    roots.push(PathBuf::from(r));
                }
                roots.push(PathBuf::from("/opt/rocm"));
                roots.dedup();
                for root in roots {
                    v.push(root.join("lib").join("librccl.so.1").into_os_string());
                }
                v
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Load errors
// ---------------------------------------------------------------------------------------

/// Why a library could not be used. `Display` is one sentence naming the library and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// No candidate exists: `tried` lists each name.
    NotFound { flavor: Flavor, tried: Vec<String> },
    /// A candidate exists but `dlopen` failed (a missing dependency, a wrong architecture).
    Unloadable {
        flavor: Flavor,
        name: String,
        reason: String,
    },
    /// The environment variable names a file that could not be loaded. No search follows:
    /// silently loading a different library than the one asked for would mislead.
    Override {
        flavor: Flavor,
        var: &'static str,
        path: String,
        reason: String,
    },
    /// An explicit path (see `Library::open_path`) could not be loaded.
    Path {
        flavor: Flavor,
        path: String,
        reason: String,
    },
    /// The library loaded but lacks required entry points.
    MissingSymbols {
        flavor: Flavor,
        name: String,
        missing: Vec<&'static str>,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound { flavor, tried } => write!(
                f,
                "{} was not found (tried {}): {}.",
                flavor.soname(),
                tried.join(", "),
                flavor.install_hint()
            ),
            LoadError::Unloadable {
                flavor,
                name,
                reason,
            } => write!(
                f,
                "{name} was found but could not be loaded ({reason}): {}.",
                flavor.install_hint()
            ),
            LoadError::Override {
                flavor,
                var,
                path,
                reason,
            } => write!(
                f,
                "{var}={path} could not be loaded ({reason}): point it at {} or unset it to \
                 search LD_LIBRARY_PATH.",
                flavor.soname()
            ),
            LoadError::Path {
                flavor,
                path,
                reason,
            } => write!(
                f,
                "{path} could not be loaded as {} ({reason}): give the path of {}.",
                flavor.product(),
                flavor.soname()
            ),
            LoadError::MissingSymbols {
                flavor,
                name,
                missing,
            } => write!(
                f,
                "{name} lacks {} that solbench calls, so it is not {} 2.7 or newer: {}.",
                missing.join(", "),
                flavor.product(),
                flavor.install_hint()
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// True when `dlopen`'s message says `name` itself does not exist (as opposed to a
/// dependency of it missing, which names the dependency, or a corrupt file).
pub fn is_not_found(name: &str, dlerror: &str) -> bool {
    dlerror.contains(&format!("{name}: cannot open shared object file"))
}

// ---------------------------------------------------------------------------------------
// Function-pointer table
// ---------------------------------------------------------------------------------------

/// Resolves one symbol as a `T` (a function pointer type), or `None` when absent.
///
/// # Safety
/// `T` must be the symbol's real type.
unsafe fn symbol<T: Copy>(lib: &libloading::Library, name: &str) -> Option<T> {
    lib.get::<T>(name.as_bytes()).ok().map(|s| *s)
}

/// Declares [`Library`], its loader and the symbol lists from one table, so the struct, the
/// lists of names and the resolution can never disagree.
macro_rules! nccl_library {
    (
        required { $( $(#[$rdoc:meta])* $rname:ident : fn( $($rarg:ty),* ) -> $rret:ty; )* }
        optional { $( $(#[$odoc:meta])* $oname:ident : fn( $($oarg:ty),* ) -> $oret:ty; )* }
    ) => {
        /// Every NCCL entry point solbench calls, resolved when the library was opened.
        ///
        /// The fields are the raw C functions: calling one is `unsafe` and needs the
        /// arguments `nccl.h` documents. The library stays mapped for the rest of the process
        /// (see [`Library`]'s `Drop` note), so the pointers never dangle.
        pub struct Library {
            /// Kept, never closed: `ncclGetUniqueId` and communicators start helper threads
            /// (bootstrap root, proxy) that can outlive every handle we hold, and unmapping
            /// their code under them would crash the process.
            _lib: ManuallyDrop<libloading::Library>,
            flavor: Flavor,
            name: String,
            $( $(#[$rdoc])* pub $rname: unsafe extern "C" fn($($rarg),*) -> $rret, )*
            $( $(#[$odoc])* pub $oname: Option<unsafe extern "C" fn($($oarg),*) -> $oret>, )*
        }

        /// The symbols a library must export to be used at all (NCCL ≥ 2.7, every RCCL).
        pub const REQUIRED_SYMBOLS: &[&str] = &[ $( stringify!($rname) ),* ];
        /// The symbols that newer libraries add; each is an `Option` in [`Library`].
        pub const OPTIONAL_SYMBOLS: &[&str] = &[ $( stringify!($oname) ),* ];

        impl Library {
            /// Resolves the table from an opened library; `Err` lists every missing
            /// required name.
            fn resolve(
                lib: libloading::Library,
                flavor: Flavor,
                name: String,
            ) -> Result<Library, LoadError> {
                let mut missing: Vec<&'static str> = Vec::new();
                $(
                    // SAFETY: the type is the one nccl.h declares for this name.
                    let $rname = unsafe {
                        symbol::<unsafe extern "C" fn($($rarg),*) -> $rret>(&lib, stringify!($rname))
                    };
                    if $rname.is_none() {
                        missing.push(stringify!($rname));
                    }
                )*
                $(
                    // SAFETY: as above.
                    let $oname = unsafe {
                        symbol::<unsafe extern "C" fn($($oarg),*) -> $oret>(&lib, stringify!($oname))
                    };
                )*
                $(
                    let Some($rname) = $rname else {
                        return Err(LoadError::MissingSymbols { flavor, name, missing });
                    };
                )*
                Ok(Library {
                    _lib: ManuallyDrop::new(lib),
                    flavor,
                    name,
                    $( $rname, )*
                    $( $oname, )*
                })
            }

            /// Each optional symbol and whether this library exports it.
            pub fn optional_symbols(&self) -> Vec<(&'static str, bool)> {
                vec![ $( (stringify!($oname), self.$oname.is_some()) ),* ]
            }
        }
    };
}

nccl_library! {
    required {
        /// `ncclResult_t ncclGetVersion(int* version)`.
        ncclGetVersion: fn(*mut c_int) -> ncclResult_t;
        /// `ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId)`.
        ncclGetUniqueId: fn(*mut ncclUniqueId) -> ncclResult_t;
        /// `ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank)`.
        ncclCommInitRank: fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int) -> ncclResult_t;
        /// `ncclResult_t ncclCommInitAll(ncclComm_t* comm, int ndev, const int* devlist)`.
        ncclCommInitAll: fn(*mut ncclComm_t, c_int, *const c_int) -> ncclResult_t;
        /// `ncclResult_t ncclCommDestroy(ncclComm_t comm)`.
        ncclCommDestroy: fn(ncclComm_t) -> ncclResult_t;
        /// `ncclResult_t ncclCommAbort(ncclComm_t comm)`.
        ncclCommAbort: fn(ncclComm_t) -> ncclResult_t;
        /// `ncclResult_t ncclCommCount(const ncclComm_t comm, int* count)`.
        ncclCommCount: fn(ncclComm_t, *mut c_int) -> ncclResult_t;
        /// `ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device)`.
        ncclCommCuDevice: fn(ncclComm_t, *mut c_int) -> ncclResult_t;
        /// `ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank)`.
        ncclCommUserRank: fn(ncclComm_t, *mut c_int) -> ncclResult_t;
        /// `const char* ncclGetErrorString(ncclResult_t result)`.
        ncclGetErrorString: fn(ncclResult_t) -> *const c_char;
        /// `ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
        /// ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream)`.
        ncclAllReduce: fn(*const c_void, *mut c_void, usize, ncclDataType_t, ncclRedOp_t, ncclComm_t, Stream) -> ncclResult_t;
        /// `ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
        /// ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream)`.
        ncclBroadcast: fn(*const c_void, *mut c_void, usize, ncclDataType_t, c_int, ncclComm_t, Stream) -> ncclResult_t;
        /// `ncclResult_t ncclReduce(const void* sendbuff, void* recvbuff, size_t count,
        /// ncclDataType_t datatype, ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream)`.
        ncclReduce: fn(*const c_void, *mut c_void, usize, ncclDataType_t, ncclRedOp_t, c_int, ncclComm_t, Stream) -> ncclResult_t;
        /// `ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
        /// ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream)`.
        ncclAllGather: fn(*const c_void, *mut c_void, usize, ncclDataType_t, ncclComm_t, Stream) -> ncclResult_t;
        /// `ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
        /// ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream)`.
        ncclReduceScatter: fn(*const c_void, *mut c_void, usize, ncclDataType_t, ncclRedOp_t, ncclComm_t, Stream) -> ncclResult_t;
        /// `ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype,
        /// int peer, ncclComm_t comm, cudaStream_t stream)` (NCCL ≥ 2.7).
        ncclSend: fn(*const c_void, usize, ncclDataType_t, c_int, ncclComm_t, Stream) -> ncclResult_t;
        /// `ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype,
        /// int peer, ncclComm_t comm, cudaStream_t stream)` (NCCL ≥ 2.7).
        ncclRecv: fn(*mut c_void, usize, ncclDataType_t, c_int, ncclComm_t, Stream) -> ncclResult_t;
        /// `ncclResult_t ncclGroupStart()`.
        ncclGroupStart: fn() -> ncclResult_t;
        /// `ncclResult_t ncclGroupEnd()`.
        ncclGroupEnd: fn() -> ncclResult_t;
    }
    optional {
        /// `ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId
        /// commId, int rank, ncclConfig_t* config)` (NCCL ≥ 2.14): needed for non-blocking init.
        ncclCommInitRankConfig: fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int, *mut ncclConfig_t) -> ncclResult_t;
        /// `ncclResult_t ncclCommFinalize(ncclComm_t comm)` (NCCL ≥ 2.14).
        ncclCommFinalize: fn(ncclComm_t) -> ncclResult_t;
        /// `ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError)`
        /// (NCCL ≥ 2.4; every RCCL).
        ncclCommGetAsyncError: fn(ncclComm_t, *mut ncclResult_t) -> ncclResult_t;
        /// `const char* ncclGetLastError(ncclComm_t comm)` (NCCL ≥ 2.13). `comm` may be null.
        ncclGetLastError: fn(ncclComm_t) -> *const c_char;
        /// `ncclResult_t ncclAlltoAll(const void* sendbuff, void* recvbuff, size_t count,
        /// ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream)`: NVIDIA's spelling,
        /// NCCL ≥ 2.28.
        ncclAlltoAll: fn(*const c_void, *mut c_void, usize, ncclDataType_t, ncclComm_t, Stream) -> ncclResult_t;
        /// `ncclAllToAll`: RCCL's spelling of the same call, same signature.
        ncclAllToAll: fn(*const c_void, *mut c_void, usize, ncclDataType_t, ncclComm_t, Stream) -> ncclResult_t;
    }
}

/// The all-to-all entry point: `ncclAlltoAll` (NCCL ≥ 2.28) or `ncclAllToAll` (RCCL).
pub type AlltoallFn = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    ncclDataType_t,
    ncclComm_t,
    Stream,
) -> ncclResult_t;

impl Library {
    /// Searches for the library of `flavor`: the file in its environment variable when that
    /// is set (no search then), else [`Flavor::candidates`] in order.
    pub fn open(flavor: Flavor) -> Result<Library, LoadError> {
        let var = flavor.env_var();
        if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            return match open_one(&path) {
                Ok(lib) => Library::resolve(lib, flavor, path.to_string_lossy().into_owned()),
                Err(reason) => Err(LoadError::Override {
                    flavor,
                    var,
                    path: path.to_string_lossy().into_owned(),
                    reason,
                }),
            };
        }
        let mut tried = Vec::new();
        let mut first_failure: Option<(String, String)> = None;
        for cand in flavor.candidates(std::env::var_os("ROCM_PATH")) {
            let shown = cand.to_string_lossy().into_owned();
            match open_one(&cand) {
                Ok(lib) => return Library::resolve(lib, flavor, shown),
                Err(reason) => {
                    if !is_not_found(&shown, &reason) && first_failure.is_none() {
                        first_failure = Some((shown.clone(), reason));
                    }
                    tried.push(shown);
                }
            }
        }
        // A file that exists but fails to load says more than "not found" does.
        match first_failure {
            Some((name, reason)) => Err(LoadError::Unloadable {
                flavor,
                name,
                reason,
            }),
            None => Err(LoadError::NotFound { flavor, tried }),
        }
    }

    /// Opens the library at `path` (a file name or a path) as `flavor`, with no search.
    pub fn open_path(flavor: Flavor, path: &std::path::Path) -> Result<Library, LoadError> {
        let shown = path.to_string_lossy().into_owned();
        match open_one(path.as_os_str()) {
            Ok(lib) => Library::resolve(lib, flavor, shown),
            Err(reason) => Err(LoadError::Path {
                flavor,
                path: shown,
                reason,
            }),
        }
    }

    /// Which implementation this is.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The name or path that was handed to `dlopen`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file the dynamic loader actually mapped (from `dladdr`), when it can say.
    pub fn path(&self) -> Option<PathBuf> {
        let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
        let addr = self.ncclGetVersion as *const c_void;
        // SAFETY: `addr` is inside the mapped library; `info` is a valid out-pointer.
        let ok = unsafe { libc::dladdr(addr, info.as_mut_ptr()) };
        if ok == 0 {
            return None;
        }
        // SAFETY: dladdr returned non-zero, so it filled `info`.
        let info = unsafe { info.assume_init() };
        if info.dli_fname.is_null() {
            return None;
        }
        // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
        let name = unsafe { CStr::from_ptr(info.dli_fname) };
        Some(PathBuf::from(name.to_string_lossy().into_owned()))
    }

    /// The all-to-all entry point under whichever spelling this library exports, with the
    /// name, or `None` (NCCL < 2.28).
    pub fn alltoall(&self) -> Option<(&'static str, AlltoallFn)> {
        self.ncclAlltoAll
            .map(|f| ("ncclAlltoAll", f))
            .or_else(|| self.ncclAllToAll.map(|f| ("ncclAllToAll", f)))
    }
}

/// `dlopen`s one name, returning the loader's message on failure.
fn open_one(name: &std::ffi::OsStr) -> Result<libloading::Library, String> {
    // SAFETY: loading NCCL/RCCL runs their static initialisers, which only set up internal
    // state; no GPU work happens before the first API call.
    unsafe { libloading::Library::new(name) }.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn config_layout_matches_nccl_2_32_3() {
        // Offsets printed by gcc for NCCL 2.32.3's nccl.h (x86-64 / aarch64 LP64).
        let expected: &[(&str, usize)] = &[
            ("size", 0),
            ("magic", 8),
            ("version", 12),
            ("blocking", 16),
            ("cgaClusterSize", 20),
            ("minCTAs", 24),
            ("maxCTAs", 28),
            ("netName", 32),
            ("splitShare", 40),
            ("trafficClass", 44),
            ("commName", 48),
            ("collnetEnable", 56),
            ("CTAPolicy", 60),
            ("shrinkShare", 64),
            ("nvlsCTAs", 68),
            ("nChannelsPerNetPeer", 72),
            ("nvlinkCentricSched", 76),
            ("graphUsageMode", 80),
            ("numRmaCtx", 84),
            ("maxP2pPeers", 88),
            ("graphStreamOrdering", 92),
            ("launchOrderImplicit", 96),
            ("numRmaSig", 100),
            ("rmaEagerInit", 104),
            ("hostCftMode", 108),
            ("nvlsHostMode", 112),
        ];
        let actual: &[(&str, usize)] = &[
            ("size", offset_of!(ncclConfig_t, size)),
            ("magic", offset_of!(ncclConfig_t, magic)),
            ("version", offset_of!(ncclConfig_t, version)),
            ("blocking", offset_of!(ncclConfig_t, blocking)),
            ("cgaClusterSize", offset_of!(ncclConfig_t, cgaClusterSize)),
            ("minCTAs", offset_of!(ncclConfig_t, minCTAs)),
            ("maxCTAs", offset_of!(ncclConfig_t, maxCTAs)),
            ("netName", offset_of!(ncclConfig_t, netName)),
            ("splitShare", offset_of!(ncclConfig_t, splitShare)),
            ("trafficClass", offset_of!(ncclConfig_t, trafficClass)),
            ("commName", offset_of!(ncclConfig_t, commName)),
            ("collnetEnable", offset_of!(ncclConfig_t, collnetEnable)),
            ("CTAPolicy", offset_of!(ncclConfig_t, CTAPolicy)),
            ("shrinkShare", offset_of!(ncclConfig_t, shrinkShare)),
            ("nvlsCTAs", offset_of!(ncclConfig_t, nvlsCTAs)),
            (
                "nChannelsPerNetPeer",
                offset_of!(ncclConfig_t, nChannelsPerNetPeer),
            ),
            (
                "nvlinkCentricSched",
                offset_of!(ncclConfig_t, nvlinkCentricSched),
            ),
            ("graphUsageMode", offset_of!(ncclConfig_t, graphUsageMode)),
            ("numRmaCtx", offset_of!(ncclConfig_t, numRmaCtx)),
            ("maxP2pPeers", offset_of!(ncclConfig_t, maxP2pPeers)),
            (
                "graphStreamOrdering",
                offset_of!(ncclConfig_t, graphStreamOrdering),
            ),
            (
                "launchOrderImplicit",
                offset_of!(ncclConfig_t, launchOrderImplicit),
            ),
            ("numRmaSig", offset_of!(ncclConfig_t, numRmaSig)),
            ("rmaEagerInit", offset_of!(ncclConfig_t, rmaEagerInit)),
            ("hostCftMode", offset_of!(ncclConfig_t, hostCftMode)),
            ("nvlsHostMode", offset_of!(ncclConfig_t, nvlsHostMode)),
        ];
        assert_eq!(actual, expected);
        assert_eq!(std::mem::size_of::<ncclConfig_t>(), 120);
        assert_eq!(std::mem::align_of::<ncclConfig_t>(), 8);
    }

    #[test]
    fn config_initializer_matches_the_header() {
        let c = ncclConfig_t::initializer();
        assert_eq!(c.size, 120);
        assert_eq!(c.magic, 0xcafebeef);
        assert_eq!(c.version, 23203);
        for (name, v) in [
            ("blocking", c.blocking),
            ("cgaClusterSize", c.cgaClusterSize),
            ("minCTAs", c.minCTAs),
            ("maxCTAs", c.maxCTAs),
            ("splitShare", c.splitShare),
            ("trafficClass", c.trafficClass),
            ("collnetEnable", c.collnetEnable),
            ("CTAPolicy", c.CTAPolicy),
            ("shrinkShare", c.shrinkShare),
            ("nvlsCTAs", c.nvlsCTAs),
            ("nChannelsPerNetPeer", c.nChannelsPerNetPeer),
            ("nvlinkCentricSched", c.nvlinkCentricSched),
            ("graphUsageMode", c.graphUsageMode),
            ("numRmaCtx", c.numRmaCtx),
            ("maxP2pPeers", c.maxP2pPeers),
            ("graphStreamOrdering", c.graphStreamOrdering),
            ("launchOrderImplicit", c.launchOrderImplicit),
            ("numRmaSig", c.numRmaSig),
            ("rmaEagerInit", c.rmaEagerInit),
            ("hostCftMode", c.hostCftMode),
            ("nvlsHostMode", c.nvlsHostMode),
        ] {
            assert_eq!(v, i32::MIN, "{name} must start as NCCL_CONFIG_UNDEF_INT");
        }
        assert!(c.netName.is_null() && c.commName.is_null());
    }

    #[test]
    fn enum_values_match_nccl_h() {
        // ncclDataType_t
        let dtypes = [
            (ncclInt8, 0),
            (ncclChar, 0),
            (ncclUint8, 1),
            (ncclInt32, 2),
            (ncclInt, 2),
            (ncclUint32, 3),
            (ncclInt64, 4),
            (ncclUint64, 5),
            (ncclFloat16, 6),
            (ncclHalf, 6),
            (ncclFloat32, 7),
            (ncclFloat, 7),
            (ncclFloat64, 8),
            (ncclDouble, 8),
            (ncclBfloat16, 9),
            (ncclFloat8e4m3, 10),
            (ncclFloat8e5m2, 11),
            (ncclNumTypes, 12),
        ];
        for (t, v) in dtypes {
            assert_eq!(t.0, v);
        }
        // ncclRedOp_t
        for (op, v) in [
            (ncclSum, 0),
            (ncclProd, 1),
            (ncclMax, 2),
            (ncclMin, 3),
            (ncclAvg, 4),
            (ncclNumOps, 5),
            (ncclMaxRedOp, 0x7fffffff),
        ] {
            assert_eq!(op.0, v);
        }
        // ncclResult_t
        for (r, v, name) in [
            (ncclSuccess, 0, "ncclSuccess"),
            (ncclUnhandledCudaError, 1, "ncclUnhandledCudaError"),
            (ncclSystemError, 2, "ncclSystemError"),
            (ncclInternalError, 3, "ncclInternalError"),
            (ncclInvalidArgument, 4, "ncclInvalidArgument"),
            (ncclInvalidUsage, 5, "ncclInvalidUsage"),
            (ncclRemoteError, 6, "ncclRemoteError"),
            (ncclInProgress, 7, "ncclInProgress"),
            (ncclTimeout, 8, "ncclTimeout"),
        ] {
            assert_eq!(r.0, v);
            assert_eq!(r.name(), Some(name));
        }
        assert_eq!(ncclNumResults.0, 9);
        assert_eq!(ncclResult_t(42).name(), None);
        assert_eq!(std::mem::size_of::<ncclUniqueId>(), 128);
        assert_eq!(std::mem::size_of::<ncclResult_t>(), 4);
    }

    #[test]
    fn candidate_names() {
        let n: Vec<String> = Flavor::Nccl
            .candidates(None)
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(n, ["libnccl.so.2", "libnccl.so"]);
        let r: Vec<String> = Flavor::Rccl
            .candidates(Some("/opt/rocm-6.4.1".into()))
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            r,
            [
                "librccl.so.1",
                "librccl.so",
                "/opt/rocm-6.4.1/lib/librccl.so.1",
                "/opt/rocm/lib/librccl.so.1"
            ]
        );
        // ROCM_PATH=/opt/rocm must not list the same file twice.
        assert_eq!(Flavor::Rccl.candidates(Some("/opt/rocm".into())).len(), 3);
        assert_eq!(Flavor::Rccl.candidates(Some("".into())).len(), 3);
    }

    #[test]
    fn not_found_is_told_apart_from_a_broken_library() {
        let missing = "libnccl.so.2: cannot open shared object file: No such file or directory";
        assert!(is_not_found("libnccl.so.2", missing));
        let dep =
            "libnccl.so.2: libfoo.so.1: cannot open shared object file: No such file or directory";
        assert!(!is_not_found("libnccl.so.2", dep));
        let elf = "/x/libnccl.so.2: invalid ELF header";
        assert!(!is_not_found("/x/libnccl.so.2", elf));
    }

    #[test]
    fn load_errors_are_one_sentence_naming_library_and_fix() {
        let e = LoadError::NotFound {
            flavor: Flavor::Nccl,
            tried: vec!["libnccl.so.2".into(), "libnccl.so".into()],
        }
        .to_string();
        assert!(e.starts_with("libnccl.so.2 was not found (tried libnccl.so.2, libnccl.so): "));
        assert!(e.contains("pip install nvidia-nccl-cu13"), "{e}");
        assert!(e.contains("LD_LIBRARY_PATH"), "{e}");
        let e = LoadError::MissingSymbols {
            flavor: Flavor::Rccl,
            name: "librccl.so.1".into(),
            missing: vec!["ncclSend", "ncclRecv"],
        }
        .to_string();
        assert!(e.contains("lacks ncclSend, ncclRecv"), "{e}");
        assert!(e.contains("RCCL"), "{e}");
        for e in [
            LoadError::Override {
                flavor: Flavor::Nccl,
                var: "SOLBENCH_NCCL_LIBRARY",
                path: "/nope".into(),
                reason: "r".into(),
            },
            LoadError::Unloadable {
                flavor: Flavor::Nccl,
                name: "libnccl.so.2".into(),
                reason: "r".into(),
            },
        ] {
            let s = e.to_string();
            assert!(s.ends_with('.') && !s.contains('\n'), "{s}");
        }
    }

    #[test]
    fn symbol_lists_cover_what_the_layers_call() {
        for s in [
            "ncclGetVersion",
            "ncclGetUniqueId",
            "ncclCommInitRank",
            "ncclCommInitAll",
            "ncclCommAbort",
            "ncclCommDestroy",
            "ncclAllReduce",
            "ncclAllGather",
            "ncclReduceScatter",
            "ncclBroadcast",
            "ncclReduce",
            "ncclSend",
            "ncclRecv",
            "ncclGroupStart",
            "ncclGroupEnd",
            "ncclGetErrorString",
        ] {
            assert!(REQUIRED_SYMBOLS.contains(&s), "{s}");
        }
        for s in [
            "ncclCommInitRankConfig",
            "ncclCommFinalize",
            "ncclCommGetAsyncError",
            "ncclGetLastError",
            "ncclAlltoAll",
            "ncclAllToAll",
        ] {
            assert!(OPTIONAL_SYMBOLS.contains(&s), "{s}");
        }
    }
}
