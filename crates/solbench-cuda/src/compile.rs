//! The run-time kernel compiler of the CUDA backend.
//!
//! Every kernel is compiled by NVRTC, at run time, to a CUBIN (SASS) for the exact
//! architecture of the device in hand. SASS rather than PTX because a PTX file from a newer
//! NVRTC needs a driver that knows its PTX ISA version; a CUBIN only needs the driver to
//! know the GPU. The kernel sources are embedded by build.rs (`KERNEL_SOURCES`), so an
//! installed binary needs no source tree; the project's headers (`*.cuh`, `*.h`) are handed
//! to NVRTC as in-memory headers, and the CUDA headers (cuda_bf16.h, ...) come from a
//! toolkit found on disk ([`find_cuda_headers`]) or from the copy bundled inside NVRTC 13.3+.
//!
//! NVRTC is dlopened by cudarc. cudarc *panics* when the library is missing, so
//! [`nvrtc_status`] checks for it first and every NVRTC call in this module sits behind
//! that check (a [`Compiler`] can only be built after it succeeded).
//!
//! Compiled kernels are kept in a disk cache keyed by everything that goes into the
//! compilation (see [`Compiler::compile_source`]); the cache is an optimisation only, so
//! every failure to read or write it falls back to compiling.

use std::ffi::{c_char, c_int, CString};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cudarc::nvrtc::sys;
use sha2::{Digest, Sha256};

include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));

// =========================================================================================
// Embedded sources

/// Names of the embedded kernel translation units (`*.cu`), sorted.
pub fn kernel_files() -> impl Iterator<Item = &'static str> {
    KERNEL_SOURCES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| name.ends_with(".cu"))
}

/// The embedded text of one kernel file or header, by file name (e.g. `"memory.cu"`).
pub fn source(name: &str) -> Option<&'static str> {
    KERNEL_SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// The embedded headers, (include name, text): every kernel may include any of them.
fn embedded_headers() -> Vec<(&'static str, &'static str)> {
    KERNEL_SOURCES
        .iter()
        .filter(|(name, _)| name.ends_with(".cuh") || name.ends_with(".h"))
        .copied()
        .collect()
}

// =========================================================================================
// NVRTC probe

/// What the loaded NVRTC library reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvrtcInfo {
    /// (major, minor), e.g. (13, 5).
    pub version: (i32, i32),
    /// The `sm_XX` numbers it can compile for (e.g. 75, 80, ..., 121), ascending.
    pub supported_archs: Vec<i32>,
}

/// The oldest NVRTC with every entry point used here (nvrtcGetCUBIN came in 11.1,
/// nvrtcGetSupportedArchs in 11.2). cudarc panics on a missing symbol, so an older
/// library must be refused before any of them is called.
const MIN_NVRTC: (i32, i32) = (11, 2);

/// Why NVRTC is unusable when cudarc cannot dlopen it, and the fixes.
const NVRTC_MISSING: &str = "NVRTC (libnvrtc.so.13) could not be loaded: install the CUDA 13 \
    toolkit, or `pip install nvidia-cuda-nvrtc` and put its nvidia/cu13/lib directory on \
    LD_LIBRARY_PATH before starting the program, or run \
    `eval \"$(scripts/install-cuda-toolchain.sh)\"`.";

/// Loads NVRTC (if it is not loaded yet) and asks for its version and architectures.
///
/// Err is one sentence saying why NVRTC cannot be used and how to fix it.
pub fn nvrtc_status() -> Result<NvrtcInfo, String> {
    // SAFETY: is_culib_present only tries to dlopen the candidate library names.
    if !unsafe { sys::is_culib_present() } {
        return Err(NVRTC_MISSING.to_string());
    }
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: the library is present (checked above); both pointers are valid for writes.
    nvrtc_ok(
        unsafe { sys::nvrtcVersion(&mut major, &mut minor) },
        "nvrtcVersion",
    )?;
    if (major, minor) < MIN_NVRTC {
        return Err(format!(
            "the NVRTC library found is version {major}.{minor}, too old to compile kernels \
             (needs {}.{} or newer; CUDA 13 recommended): put a newer libnvrtc first on \
             LD_LIBRARY_PATH.",
            MIN_NVRTC.0, MIN_NVRTC.1
        ));
    }
    let mut count: c_int = 0;
    // SAFETY: library present and new enough to have this symbol; valid pointer.
    nvrtc_ok(
        unsafe { sys::nvrtcGetNumSupportedArchs(&mut count) },
        "nvrtcGetNumSupportedArchs",
    )?;
    let mut archs: Vec<c_int> = vec![0; usize::try_from(count).unwrap_or(0)];
    if !archs.is_empty() {
        // SAFETY: the buffer holds exactly the `count` entries NVRTC writes.
        nvrtc_ok(
            unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) },
            "nvrtcGetSupportedArchs",
        )?;
    }
    archs.sort_unstable();
    Ok(NvrtcInfo {
        version: (major, minor),
        supported_archs: archs,
    })
}

/// Turns an NVRTC status into Result, naming the call that failed.
fn nvrtc_ok(status: sys::nvrtcResult, call: &str) -> Result<(), String> {
    match status {
        sys::nvrtcResult::NVRTC_SUCCESS => Ok(()),
        other => Err(format!("{call} failed: {other:?}")),
    }
}

// =========================================================================================
// Architectures

/// The `--gpu-architecture` value for a device of compute capability `major.minor`.
///
/// From compute capability 9.0 on, the arch-specific variant (`sm_90a`, `sm_100a`,
/// `sm_103a`, `sm_110a`, `sm_120a`, ...) is chosen: it unlocks the instructions only that
/// exact architecture has (wgmma, tcgen05, ...), and its only cost, a CUBIN that runs on
/// that architecture alone, does not matter because we compile for the device in hand.
pub fn arch_for(major: i32, minor: i32) -> String {
    let suffix = if major >= 9 { "a" } else { "" };
    format!("sm_{major}{minor}{suffix}")
}

/// The architecture number of an `sm_XX[a|f]` name (`"sm_90a"` -> 90), or None when the
/// name is not a real (`sm_`) architecture: a virtual `compute_XX` one gives PTX, no CUBIN.
pub fn arch_number(arch: &str) -> Option<i32> {
    let digits = arch
        .strip_prefix("sm_")?
        .trim_end_matches(|c: char| c.is_ascii_alphabetic());
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Ok when `info`'s NVRTC can compile a CUBIN for `arch`; else one sentence saying why.
pub fn check_arch(info: &NvrtcInfo, arch: &str) -> Result<(), String> {
    let (major, minor) = info.version;
    let number = arch_number(arch).ok_or_else(|| {
        format!(
            "'{arch}' is not a GPU architecture NVRTC can build a CUBIN for \
             (expected sm_XX, e.g. sm_90a)."
        )
    })?;
    if info.supported_archs.contains(&number) {
        return Ok(());
    }
    let oldest = info.supported_archs.first().copied().unwrap_or(i32::MAX);
    if number < oldest {
        Err(format!(
            "NVRTC {major}.{minor} cannot compile for {arch}: its oldest architecture is \
             sm_{oldest}, so this GPU needs an older CUDA toolkit's NVRTC."
        ))
    } else {
        Err(format!(
            "NVRTC {major}.{minor} cannot compile for {arch}; install a newer nvidia-cuda-nvrtc."
        ))
    }
}

// =========================================================================================
// Where the CUDA headers come from

/// Where NVRTC finds the CUDA headers (cuda_bf16.h, cuda_fp8.h, ...). Our own kernels'
/// headers are always passed in memory and need none of this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    /// A toolkit include directory holding cuda_bf16.h; `how` says how it was found.
    IncludeDir { dir: PathBuf, how: String },
    /// NVRTC 13.3+'s own copy, extracted into `dir` on first use (`--use-bundled-headers`).
    Bundled { dir: PathBuf },
    /// None found: kernels that include CUDA headers fail to compile (with a hint).
    None,
}

impl HeaderSource {
    /// The NVRTC options that make these headers visible.
    pub fn options(&self) -> Vec<String> {
        match self {
            HeaderSource::IncludeDir { dir, .. } => {
                let mut options = vec![format!("--include-path={}", dir.display())];
                // CUDA 13 moved CCCL (libcu++, CUB, Thrust) under include/cccl, which nvcc
                // adds by itself and NVRTC does not; the bundled headers get both as well.
                let cccl = dir.join("cccl");
                if cccl.is_dir() {
                    options.push(format!("--include-path={}", cccl.display()));
                }
                options
            }
            HeaderSource::Bundled { dir } => {
                vec![format!("--use-bundled-headers={}", dir.display())]
            }
            HeaderSource::None => Vec::new(),
        }
    }

    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            HeaderSource::IncludeDir { dir, how } => format!("{} ({how})", dir.display()),
            HeaderSource::Bundled { dir } => {
                format!("NVRTC's bundled headers, extracted to {}", dir.display())
            }
            HeaderSource::None => "none found".to_string(),
        }
    }
}

/// The first NVRTC version with `--use-bundled-headers`.
pub const BUNDLED_HEADERS_SINCE: (i32, i32) = (13, 3);

/// A directory counts as a CUDA include directory only if it holds this header: it is the
/// one our kernels need first, and an unrelated `include/` never has it.
const HEADER_MARKER: &str = "cuda_bf16.h";

/// Where toolkits install their headers when no environment variable says otherwise.
const STANDARD_INCLUDE_DIRS: &[&str] = &[
    "/usr/local/cuda/include",
    "/opt/cuda/include",
    "/usr/include",
];

/// Finds the CUDA headers for NVRTC, looking (in this order) at $SOLBENCH_CUDA_INCLUDE,
/// $CUDA_HOME/include, $CUDA_PATH/include, $CUDA_ROOT/include, `../include` next to every
/// $LD_LIBRARY_PATH directory that holds libnvrtc (the PyPI wheel layout nvidia/cu13/lib
/// and a toolkit's lib64 alike), then /usr/local/cuda/include, /opt/cuda/include and
/// /usr/include. A directory counts only if it holds cuda_bf16.h. Without one, the answer
/// is NVRTC's bundled headers when `nvrtc_version` is 13.3 or newer, else
/// [`HeaderSource::None`].
///
/// `env` looks up environment variables (`|k| std::env::var(k).ok()` in production); the
/// only other input is the file system.
pub fn find_cuda_headers(
    env: &dyn Fn(&str) -> Option<String>,
    nvrtc_version: (i32, i32),
) -> HeaderSource {
    let standard: Vec<&Path> = STANDARD_INCLUDE_DIRS.iter().map(Path::new).collect();
    find_cuda_headers_in(env, nvrtc_version, &standard)
}

/// [`find_cuda_headers`] with the standard directories as a parameter, for tests.
fn find_cuda_headers_in(
    env: &dyn Fn(&str) -> Option<String>,
    nvrtc_version: (i32, i32),
    standard: &[&Path],
) -> HeaderSource {
    let found = header_candidates(env, standard)
        .into_iter()
        .find(|(dir, _)| is_cuda_include_dir(dir));
    match found {
        Some((dir, how)) => HeaderSource::IncludeDir { dir, how },
        None if nvrtc_version >= BUNDLED_HEADERS_SINCE => HeaderSource::Bundled {
            dir: bundled_headers_dir(env, nvrtc_version),
        },
        None => HeaderSource::None,
    }
}

/// A non-empty environment variable (an empty one is treated as unset, as shells do).
fn env_var(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

/// Candidate include directories with how each was found, in search order.
fn header_candidates(
    env: &dyn Fn(&str) -> Option<String>,
    standard: &[&Path],
) -> Vec<(PathBuf, String)> {
    let mut candidates = Vec::new();
    if let Some(dir) = env_var(env, "SOLBENCH_CUDA_INCLUDE") {
        candidates.push((PathBuf::from(dir), "$SOLBENCH_CUDA_INCLUDE".to_string()));
    }
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(root) = env_var(env, var) {
            candidates.push((
                PathBuf::from(root).join("include"),
                format!("${var}/include"),
            ));
        }
    }
    // The library directory NVRTC is loaded from sits next to its toolkit's include/.
    if let Some(paths) = env_var(env, "LD_LIBRARY_PATH") {
        for lib in paths.split(':').filter(|p| !p.is_empty()).map(Path::new) {
            let Some(root) = lib.parent() else { continue };
            if holds_nvrtc(lib) {
                let how = format!("next to libnvrtc in {}", lib.display());
                candidates.push((root.join("include"), how));
            }
        }
    }
    for dir in standard {
        candidates.push((dir.to_path_buf(), "standard location".to_string()));
    }
    candidates
}

/// True when `dir` holds a libnvrtc shared library (libnvrtc.so, libnvrtc.so.13, ...).
fn holds_nvrtc(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("libnvrtc.so"))
}

/// True for a directory with the CUDA headers whose path can be passed as an option.
fn is_cuda_include_dir(dir: &Path) -> bool {
    dir.to_str().is_some() && dir.join(HEADER_MARKER).is_file()
}

// =========================================================================================
// Cache locations

/// The kernel cache directory: $SOLBENCH_CACHE_DIR, else $XDG_CACHE_HOME/solbench/kernels,
/// else $HOME/.cache/solbench/kernels; None when SOLBENCH_NO_CACHE is set (to anything but
/// "0") or no location is known.
pub fn cache_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if env_var(env, "SOLBENCH_NO_CACHE").is_some_and(|v| v != "0") {
        return None;
    }
    cache_base(env)
}

/// The cache location, whether or not caching is disabled.
fn cache_base(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = env_var(env, "SOLBENCH_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = env_var(env, "XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("solbench").join("kernels"));
    }
    env_var(env, "HOME").map(|home| PathBuf::from(home).join(".cache/solbench/kernels"))
}

/// Where NVRTC extracts its bundled headers: next to the kernel cache even when caching is
/// off (the headers are an input, not a cached result), one directory per NVRTC version.
fn bundled_headers_dir(env: &dyn Fn(&str) -> Option<String>, version: (i32, i32)) -> PathBuf {
    cache_base(env)
        .unwrap_or_else(|| std::env::temp_dir().join("solbench-kernels"))
        .join(format!("nvrtc-headers-{}.{}", version.0, version.1))
}

/// Makes sure NVRTC can extract its bundled headers where `headers` says: with an
/// unwritable directory, NVRTC fails *every* compilation (NVRTC_ERROR_BUILTIN_OPERATION_
/// FAILURE), even of kernels that include no CUDA header. So fall back to the temporary
/// directory, and failing that to no CUDA headers at all.
fn usable_bundled_dir(headers: HeaderSource) -> HeaderSource {
    let HeaderSource::Bundled { dir } = headers else {
        return headers;
    };
    let fallback = dir
        .file_name()
        .map(|name| std::env::temp_dir().join("solbench-kernels").join(name));
    std::iter::once(dir)
        .chain(fallback)
        .find(|d| d.to_str().is_some() && is_writable_dir(d))
        .map_or(HeaderSource::None, |dir| HeaderSource::Bundled { dir })
}

/// True when `dir` exists or can be created, and a file can be written in it.
fn is_writable_dir(dir: &Path) -> bool {
    if fs::create_dir_all(dir).is_err() {
        return false;
    }
    let probe = dir.join(format!(".solbench-write-probe.{}", std::process::id()));
    let writable = fs::write(&probe, b"").is_ok();
    let _ = fs::remove_file(&probe);
    writable
}

// =========================================================================================
// ptxas resource report

/// Per-function resources from ptxas' verbose report (`--ptxas-options=-v`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelResources {
    /// The function's name as ptxas prints it (kernels are `extern "C"`, so unmangled).
    pub kernel: String,
    /// True for a `__global__` entry point; false for a non-inlined device function, which
    /// ptxas reports separately (its spills count just the same).
    pub entry: bool,
    /// Registers per thread (entries only; 0 for device functions).
    pub registers: u32,
    /// Bytes per thread stored to / loaded from local memory for lack of registers.
    pub spill_stores: u64,
    pub spill_loads: u64,
    /// Bytes of per-thread stack: the cumulative stack size when ptxas reports one (the
    /// entry plus what it calls), else the function's own stack frame.
    pub stack_bytes: u64,
    /// Bytes of static shared memory per block.
    pub shared_bytes: u64,
}

/// Parses ptxas' verbose report out of an NVRTC log. Lines look like
///
/// ```text
/// ptxas info    : Compiling entry function 'sb_read_f64' for 'sm_80'
/// ptxas info    : Function properties for sb_read_f64
/// ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 32 registers, used 1 barriers, 256 bytes smem, 376 bytes cmem[0]
/// ```
///
/// Functions come out in the order of their first mention; unknown lines are ignored.
pub fn parse_ptxas_log(log: &str) -> Vec<KernelResources> {
    let mut found: Vec<KernelResources> = Vec::new();
    // The function the next "stack frame" line / "Used ... registers" line belongs to.
    let mut properties_of: Option<usize> = None;
    let mut entry: Option<usize> = None;
    for line in log.lines() {
        if let Some(name) = quoted_after(line, "Compiling entry function '") {
            let i = function_index(&mut found, name);
            found[i].entry = true;
            entry = Some(i);
        } else if let Some(rest) = text_after(line, "Function properties for ") {
            properties_of = Some(function_index(&mut found, rest.trim()));
        } else if line.contains("bytes stack frame") {
            if let Some(f) = properties_of.and_then(|i| found.get_mut(i)) {
                for part in line.split(',') {
                    if let Some(n) = count_before(part, "bytes stack frame") {
                        f.stack_bytes = f.stack_bytes.max(n);
                    } else if let Some(n) = count_before(part, "bytes spill stores") {
                        f.spill_stores = n;
                    } else if let Some(n) = count_before(part, "bytes spill loads") {
                        f.spill_loads = n;
                    }
                }
            }
        } else if line.contains(" registers") && line.contains("Used ") {
            if let Some(f) = entry.and_then(|i| found.get_mut(i)) {
                for part in line.split(',') {
                    if let Some(n) = count_before(part, "registers") {
                        f.registers = u32::try_from(n).unwrap_or(u32::MAX);
                    } else if let Some(n) = count_before(part, "bytes smem") {
                        f.shared_bytes = n;
                    } else if let Some(n) = count_before(part, "bytes cumulative stack size") {
                        f.stack_bytes = f.stack_bytes.max(n);
                    }
                }
            }
        }
    }
    found
}

/// The index of function `name` in `found`, appending it if new.
fn function_index(found: &mut Vec<KernelResources>, name: &str) -> usize {
    if let Some(i) = found.iter().position(|f| f.kernel == name) {
        return i;
    }
    found.push(KernelResources {
        kernel: name.to_string(),
        ..KernelResources::default()
    });
    found.len() - 1
}

/// The text after `marker` in `line`.
fn text_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| &line[at + marker.len()..])
}

/// The text between `marker` (which ends with a quote) and the next `'`.
fn quoted_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = text_after(line, marker)?;
    rest.find('\'').map(|end| &rest[..end])
}

/// The number right before `unit` in a comma-separated piece such as
/// "ptxas info    : Used 32 registers" or " 256 bytes smem".
fn count_before(part: &str, unit: &str) -> Option<u64> {
    let head = part.trim().strip_suffix(unit)?;
    head.split_whitespace().last()?.parse().ok()
}

// =========================================================================================
// Disk cache

/// Bumped whenever the cache entry layout or the meaning of its contents changes, so old
/// entries are simply never looked up again.
const CACHE_FORMAT: u32 = 1;

/// The cache key: hex SHA-256 over everything that determines the CUBIN. Each field is
/// length-prefixed so that no two different inputs hash the same byte stream.
fn cache_key(
    name: &str,
    source: &str,
    headers: &[(&str, &str)],
    options: &[String],
    nvrtc_version: (i32, i32),
    arch: &str,
) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(format!("solbench-kernel-cache-v{CACHE_FORMAT}").as_bytes());
    field(name.as_bytes());
    field(source.as_bytes());
    field(&(headers.len() as u64).to_le_bytes());
    for (header, text) in headers {
        field(header.as_bytes());
        field(text.as_bytes());
    }
    field(&(options.len() as u64).to_le_bytes());
    for option in options {
        field(option.as_bytes());
    }
    field(format!("nvrtc {}.{}", nvrtc_version.0, nvrtc_version.1).as_bytes());
    field(arch.as_bytes());
    hex(&hash.finalize())
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cached compilation: the CUBIN and the NVRTC log it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CacheEntry {
    cubin: Vec<u8>,
    log: String,
}

/// The entry stored under `key` in `dir`, or None when it is missing, unreadable, from
/// another cache format, or does not match its recorded length and checksum (a torn or
/// corrupted write): all of these just mean "compile again".
fn load_entry(dir: &Path, key: &str) -> Option<CacheEntry> {
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join(format!("{key}.json"))).ok()?).ok()?;
    let format_ok = meta.get("format")?.as_u64()? == u64::from(CACHE_FORMAT);
    let key_ok = meta.get("key")?.as_str()? == key;
    if !format_ok || !key_ok {
        return None;
    }
    let cubin = fs::read(dir.join(format!("{key}.cubin"))).ok()?;
    let len_ok = meta.get("cubin_bytes")?.as_u64()? == cubin.len() as u64;
    let sum_ok = meta.get("cubin_sha256")?.as_str()? == hex(&Sha256::digest(&cubin));
    if !len_ok || !sum_ok {
        return None;
    }
    let log = meta.get("log")?.as_str()?.to_string();
    Some(CacheEntry { cubin, log })
}

/// Stores an entry as `<key>.cubin` plus `<key>.json` (log, options and the CUBIN's
/// length and checksum, which [`load_entry`] verifies). Both files are written atomically,
/// the JSON last: an entry exists only once both are in place, and a CUBIN replaced under
/// an older JSON fails its checksum instead of being trusted.
fn store_entry(
    dir: &Path,
    key: &str,
    entry: &CacheEntry,
    options: &[String],
) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let meta = serde_json::json!({
        "format": CACHE_FORMAT,
        "key": key,
        "cubin_bytes": entry.cubin.len(),
        "cubin_sha256": hex(&Sha256::digest(&entry.cubin)),
        "options": options,
        "log": entry.log,
    });
    let meta = serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?;
    write_atomic(&dir.join(format!("{key}.cubin")), &entry.cubin)?;
    write_atomic(&dir.join(format!("{key}.json")), &meta)
}

/// Writes `bytes` to a unique temporary file next to `path` and renames it into place,
/// so concurrent readers and writers (several processes compiling the same kernel) only
/// ever see complete files.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}.{unique}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        // Best effort: a leftover temporary file is harmless but untidy.
        let _ = fs::remove_file(&tmp);
    }
    written
}

// =========================================================================================
// NVRTC compilation

/// The result of compiling one kernel file for one architecture.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The CUBIN (an ELF image), ready for cuModuleLoadData.
    pub cubin: Vec<u8>,
    /// NVRTC's log: warnings and ptxas' resource report (from the original compilation
    /// when the result came from the cache).
    pub log: String,
    /// Per-function resources parsed from `log`.
    pub resources: Vec<KernelResources>,
    /// True when the CUBIN came from the disk cache.
    pub from_cache: bool,
    /// The cache key (hex SHA-256), also when caching is off.
    pub key: String,
    /// The NVRTC options used.
    pub options: Vec<String>,
}

/// Frees an NVRTC program on every path out of [`nvrtc_compile`].
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful nvrtcCreateProgram and is freed once.
        // A failure to free cannot be acted on, so its status is ignored.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.0) };
    }
}

/// A CString for NVRTC, or an error naming `what` (interior NUL bytes cannot be passed).
fn c_string(text: &str, what: &str) -> Result<CString, String> {
    CString::new(text).map_err(|e| {
        format!(
            "{what} contains a NUL byte at offset {} and cannot be passed to NVRTC",
            e.nul_position()
        )
    })
}

/// Compiles `source` (named `name` in messages) with our headers in memory and returns
/// the CUBIN and the log. Must only run after [`nvrtc_status`] succeeded.
fn nvrtc_compile(
    name: &str,
    source: &str,
    headers: &[(&str, &str)],
    options: &[String],
) -> Result<CacheEntry, String> {
    // Convert everything first, so bad input is an error before NVRTC is touched.
    let c_source = c_string(source, &format!("kernel source {name}"))?;
    let c_name = c_string(name, "the kernel file name")?;
    let mut header_names = Vec::with_capacity(headers.len());
    let mut header_texts = Vec::with_capacity(headers.len());
    for (header, text) in headers {
        header_names.push(c_string(header, "a header name")?);
        header_texts.push(c_string(text, &format!("header {header}"))?);
    }
    let c_options = options
        .iter()
        .map(|o| c_string(o, &format!("option {o:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let name_ptrs: Vec<*const c_char> = header_names.iter().map(|s| s.as_ptr()).collect();
    let text_ptrs: Vec<*const c_char> = header_texts.iter().map(|s| s.as_ptr()).collect();
    let option_ptrs: Vec<*const c_char> = c_options.iter().map(|s| s.as_ptr()).collect();
    let header_count = c_int::try_from(headers.len()).map_err(|_| "too many headers")?;
    let option_count = c_int::try_from(options.len()).map_err(|_| "too many options")?;

    let mut handle: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: all pointers point into CStrings / Vecs that outlive the call; the header
    // arrays both have `header_count` entries.
    nvrtc_ok(
        unsafe {
            sys::nvrtcCreateProgram(
                &mut handle,
                c_source.as_ptr(),
                c_name.as_ptr(),
                header_count,
                text_ptrs.as_ptr(),
                name_ptrs.as_ptr(),
            )
        },
        "nvrtcCreateProgram",
    )?;
    let program = Program(handle);

    // SAFETY: valid program; `option_count` option pointers that outlive the call.
    let status = unsafe { sys::nvrtcCompileProgram(program.0, option_count, option_ptrs.as_ptr()) };
    let log = program_log(&program).unwrap_or_else(|e| format!("(no log: {e})"));
    if status != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(format!(
            "NVRTC could not compile {name} ({status:?}) with options [{}]:\n{log}",
            options.join(" ")
        ));
    }
    let cubin = program_cubin(&program)?;
    if cubin.is_empty() {
        return Err(format!(
            "NVRTC compiled {name} but produced no CUBIN (options [{}]); a virtual \
             compute_XX architecture gives PTX only.",
            options.join(" ")
        ));
    }
    Ok(CacheEntry { cubin, log })
}

/// The program's compile log, without the trailing NUL.
fn program_log(program: &Program) -> Result<String, String> {
    let mut size = 0usize;
    // SAFETY: valid program; valid pointer.
    nvrtc_ok(
        unsafe { sys::nvrtcGetProgramLogSize(program.0, &mut size) },
        "nvrtcGetProgramLogSize",
    )?;
    let mut buf = vec![0u8; size.max(1)];
    // SAFETY: the buffer holds the `size` bytes (NUL included) NVRTC writes.
    nvrtc_ok(
        unsafe { sys::nvrtcGetProgramLog(program.0, buf.as_mut_ptr().cast::<c_char>()) },
        "nvrtcGetProgramLog",
    )?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).trim_end().to_string())
}

/// The program's CUBIN (empty when it was compiled for a virtual architecture).
fn program_cubin(program: &Program) -> Result<Vec<u8>, String> {
    let mut size = 0usize;
    // SAFETY: valid, successfully compiled program; valid pointer.
    nvrtc_ok(
        unsafe { sys::nvrtcGetCUBINSize(program.0, &mut size) },
        "nvrtcGetCUBINSize",
    )?;
    let mut cubin = vec![0u8; size];
    if size > 0 {
        // SAFETY: the buffer holds exactly the `size` bytes NVRTC writes.
        nvrtc_ok(
            unsafe { sys::nvrtcGetCUBIN(program.0, cubin.as_mut_ptr().cast::<c_char>()) },
            "nvrtcGetCUBIN",
        )?;
    }
    Ok(cubin)
}

/// True for a C identifier, the only thing a `-D` macro name may be.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Compiles the embedded kernels (or any source) with NVRTC, through the disk cache.
#[derive(Debug, Clone)]
pub struct Compiler {
    nvrtc: NvrtcInfo,
    headers: HeaderSource,
    cache: Option<PathBuf>,
}

impl Compiler {
    /// Probes NVRTC and finds the CUDA headers and the cache directory from the process
    /// environment. Err is one sentence when NVRTC cannot be loaded.
    pub fn new() -> Result<Compiler, String> {
        Self::from_env(&|name| std::env::var(name).ok())
    }

    /// [`Compiler::new`] with environment lookups through `env`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Compiler, String> {
        let nvrtc = nvrtc_status()?;
        let headers = usable_bundled_dir(find_cuda_headers(env, nvrtc.version));
        Ok(Compiler {
            headers,
            cache: cache_dir(env),
            nvrtc,
        })
    }

    /// The same compiler with the kernel cache in `dir` (None: no caching).
    pub fn with_cache_dir(mut self, dir: Option<PathBuf>) -> Compiler {
        self.cache = dir;
        self
    }

    /// The NVRTC in use.
    pub fn nvrtc(&self) -> &NvrtcInfo {
        &self.nvrtc
    }

    /// Where the CUDA headers come from.
    pub fn headers(&self) -> &HeaderSource {
        &self.headers
    }

    /// The kernel cache directory, if caching is on.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_deref()
    }

    /// The NVRTC options for `arch` with `-D` `defines` (an empty value gives a bare
    /// `-DNAME`). Err for a define name that is not a C identifier.
    pub fn options(&self, arch: &str, defines: &[(&str, &str)]) -> Result<Vec<String>, String> {
        let mut options = vec![
            format!("--gpu-architecture={arch}"),
            "-std=c++17".to_string(),
            // ptxas' per-kernel report (registers, spills, stack, shared memory) in the log.
            "--ptxas-options=-v".to_string(),
            // Source line info for profilers; it does not change the generated code.
            "-lineinfo".to_string(),
        ];
        options.extend(self.headers.options());
        for (name, value) in defines {
            if !is_identifier(name) {
                return Err(format!(
                    "cannot define {name:?} for a kernel: not a C identifier"
                ));
            }
            options.push(if value.is_empty() {
                format!("-D{name}")
            } else {
                format!("-D{name}={value}")
            });
        }
        Ok(options)
    }

    /// Compiles the embedded kernel file `file` (e.g. `"memory.cu"`) for `arch` (an
    /// `sm_XX[a]` name, see [`arch_for`]) with the given `-D` defines.
    pub fn compile(
        &self,
        file: &str,
        arch: &str,
        defines: &[(&str, &str)],
    ) -> Result<Compiled, String> {
        let text = source(file).ok_or_else(|| {
            let known: Vec<&str> = kernel_files().collect();
            format!(
                "no kernel file {file:?} is embedded (known: {})",
                known.join(", ")
            )
        })?;
        self.compile_source(file, text, arch, defines)
    }

    /// Compiles arbitrary source text named `name` (the name NVRTC's messages use); the
    /// embedded headers can be included as usual. The result is looked up in and stored
    /// to the cache under a key over the name, the source, every embedded header, the
    /// options, the NVRTC version and the architecture. Err carries NVRTC's whole log.
    pub fn compile_source(
        &self,
        name: &str,
        text: &str,
        arch: &str,
        defines: &[(&str, &str)],
    ) -> Result<Compiled, String> {
        check_arch(&self.nvrtc, arch)?;
        let options = self.options(arch, defines)?;
        let headers = embedded_headers();
        let key = cache_key(name, text, &headers, &options, self.nvrtc.version, arch);
        let compiled = |entry: CacheEntry, from_cache: bool| Compiled {
            resources: parse_ptxas_log(&entry.log),
            cubin: entry.cubin,
            log: entry.log,
            from_cache,
            key: key.clone(),
            options: options.clone(),
        };
        if let Some(entry) = self.cache.as_deref().and_then(|dir| load_entry(dir, &key)) {
            return Ok(compiled(entry, true));
        }
        let entry =
            nvrtc_compile(name, text, &headers, &options).map_err(|e| self.with_header_hint(e))?;
        if let Some(dir) = &self.cache {
            // The cache only saves time: a read-only or full disk must not fail the run.
            let _ = store_entry(dir, &key, &entry, &options);
        }
        Ok(compiled(entry, false))
    }

    /// Adds how to get CUDA headers to a compile error caused by their absence.
    fn with_header_hint(&self, error: String) -> String {
        if self.headers != HeaderSource::None || !error.contains("could not open source file") {
            return error;
        }
        format!(
            "{error}\nNo CUDA headers were found: set SOLBENCH_CUDA_INCLUDE (or CUDA_HOME) to a \
             CUDA 13 toolkit's include directory (`pip install nvidia-cuda-runtime` provides \
             nvidia/cu13/include), or use NVRTC {}.{} or newer, which bundles them.",
            BUNDLED_HEADERS_SINCE.0, BUNDLED_HEADERS_SINCE.1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An environment lookup over fixed variables.
    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    /// Creates `dir` with a cuda_bf16.h in it.
    fn cuda_include(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("cuda_bf16.h"), "// test\n").unwrap();
    }

    fn nvrtc_13_5() -> NvrtcInfo {
        NvrtcInfo {
            version: (13, 5),
            supported_archs: vec![75, 80, 86, 87, 88, 89, 90, 100, 103, 107, 110, 120, 121],
        }
    }

    /// A compiler that never needs NVRTC as long as compilation fails before it.
    fn offline_compiler() -> Compiler {
        Compiler {
            nvrtc: nvrtc_13_5(),
            headers: HeaderSource::None,
            cache: None,
        }
    }

    #[test]
    fn embedded_sources() {
        let files: Vec<&str> = kernel_files().collect();
        assert!(
            files.contains(&"memory.cu") && files.contains(&"util.cu"),
            "{files:?}"
        );
        assert!(files.iter().all(|f| f.ends_with(".cu")));
        let mut sorted = files.clone();
        sorted.sort_unstable();
        assert_eq!(files, sorted);
        assert!(source("common.cuh").is_some_and(|t| t.contains("#pragma once")));
        assert!(source("nope.cu").is_none());
        assert!(embedded_headers().iter().any(|(n, _)| *n == "common.cuh"));
        assert!(embedded_headers().iter().all(|(n, _)| !n.ends_with(".cu")));
    }

    #[test]
    fn arch_names() {
        assert_eq!(arch_for(7, 5), "sm_75");
        assert_eq!(arch_for(8, 0), "sm_80");
        assert_eq!(arch_for(8, 6), "sm_86");
        assert_eq!(arch_for(8, 9), "sm_89");
        assert_eq!(arch_for(9, 0), "sm_90a");
        assert_eq!(arch_for(10, 0), "sm_100a");
        assert_eq!(arch_for(10, 3), "sm_103a");
        assert_eq!(arch_for(11, 0), "sm_110a");
        assert_eq!(arch_for(12, 0), "sm_120a");
        assert_eq!(arch_for(12, 1), "sm_121a");
        assert_eq!(arch_number("sm_90a"), Some(90));
        assert_eq!(arch_number("sm_100f"), Some(100));
        assert_eq!(arch_number("sm_80"), Some(80));
        assert_eq!(arch_number("compute_90"), None);
        assert_eq!(arch_number("sm_"), None);
        assert_eq!(arch_number("sm_9x0"), None);
    }

    #[test]
    fn arch_support() {
        let info = nvrtc_13_5();
        assert_eq!(check_arch(&info, "sm_90a"), Ok(()));
        assert_eq!(check_arch(&info, "sm_121a"), Ok(()));
        assert_eq!(
            check_arch(&info, "sm_130a").unwrap_err(),
            "NVRTC 13.5 cannot compile for sm_130a; install a newer nvidia-cuda-nvrtc."
        );
        let old = check_arch(&info, "sm_70").unwrap_err();
        assert!(old.contains("oldest architecture is sm_75"), "{old}");
        assert!(check_arch(&info, "compute_90").is_err());
    }

    #[test]
    fn headers_follow_the_search_order() {
        let tmp = tempfile::tempdir().unwrap();
        let explicit = tmp.path().join("explicit");
        let home = tmp.path().join("home");
        let path = tmp.path().join("path");
        cuda_include(&explicit);
        cuda_include(&home.join("include"));
        cuda_include(&path.join("include"));
        let (e, h, p) = (
            explicit.to_str().unwrap(),
            home.to_str().unwrap(),
            path.to_str().unwrap(),
        );
        let none: &[&Path] = &[];

        let env = env_of(&[
            ("SOLBENCH_CUDA_INCLUDE", e),
            ("CUDA_HOME", h),
            ("CUDA_PATH", p),
        ]);
        let found = find_cuda_headers_in(&env, (13, 5), none);
        assert_eq!(
            found,
            HeaderSource::IncludeDir {
                dir: explicit.clone(),
                how: "$SOLBENCH_CUDA_INCLUDE".into()
            }
        );

        let env = env_of(&[("CUDA_HOME", h), ("CUDA_PATH", p)]);
        let found = find_cuda_headers_in(&env, (13, 5), none);
        assert_eq!(
            found,
            HeaderSource::IncludeDir {
                dir: home.join("include"),
                how: "$CUDA_HOME/include".into()
            }
        );

        // An empty variable or a directory without cuda_bf16.h is skipped.
        let bare = tmp.path().join("bare");
        fs::create_dir_all(bare.join("include")).unwrap();
        let env = env_of(&[
            ("SOLBENCH_CUDA_INCLUDE", ""),
            ("CUDA_HOME", bare.to_str().unwrap()),
            ("CUDA_ROOT", p),
        ]);
        let found = find_cuda_headers_in(&env, (13, 5), none);
        assert_eq!(
            found,
            HeaderSource::IncludeDir {
                dir: path.join("include"),
                how: "$CUDA_ROOT/include".into()
            }
        );
    }

    #[test]
    fn headers_next_to_libnvrtc_then_standard_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        // The PyPI wheel layout: site-packages/nvidia/cu13/{lib,include}.
        let cu13 = tmp.path().join("site-packages/nvidia/cu13");
        fs::create_dir_all(cu13.join("lib")).unwrap();
        fs::write(cu13.join("lib/libnvrtc.so.13"), "").unwrap();
        cuda_include(&cu13.join("include"));
        // A library directory without libnvrtc does not count, even with an include/.
        let other = tmp.path().join("other");
        fs::create_dir_all(other.join("lib")).unwrap();
        cuda_include(&other.join("include"));
        let standard = tmp.path().join("usr-local-cuda-include");
        cuda_include(&standard);

        let ld = format!(
            "{}::{}/",
            other.join("lib").display(),
            cu13.join("lib").display()
        );
        let env = env_of(&[("LD_LIBRARY_PATH", &ld)]);
        let found = find_cuda_headers_in(&env, (13, 5), &[standard.as_path()]);
        assert!(
            matches!(&found, HeaderSource::IncludeDir { dir, how }
                if *dir == cu13.join("include") && how.starts_with("next to libnvrtc in")),
            "{found:?}"
        );

        let env = env_of(&[]);
        let missing = tmp.path().join("missing");
        let found = find_cuda_headers_in(&env, (12, 8), &[missing.as_path(), standard.as_path()]);
        assert_eq!(
            found,
            HeaderSource::IncludeDir {
                dir: standard,
                how: "standard location".into()
            }
        );
    }

    #[test]
    fn headers_fall_back_to_bundled_or_none() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let env = env_of(&[("SOLBENCH_CACHE_DIR", cache.to_str().unwrap())]);
        let found = find_cuda_headers_in(&env, (13, 3), &[]);
        assert_eq!(
            found,
            HeaderSource::Bundled {
                dir: cache.join("nvrtc-headers-13.3")
            }
        );
        assert_eq!(
            found.options(),
            vec![format!(
                "--use-bundled-headers={}",
                cache.join("nvrtc-headers-13.3").display()
            )]
        );
        assert_eq!(find_cuda_headers_in(&env, (13, 2), &[]), HeaderSource::None);
        assert!(HeaderSource::None.options().is_empty());
    }

    #[test]
    fn bundled_headers_need_a_writable_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let good = tmp.path().join("nvrtc-headers-13.5");
        let bundled = |dir: &Path| HeaderSource::Bundled {
            dir: dir.to_path_buf(),
        };
        assert_eq!(usable_bundled_dir(bundled(&good)), bundled(&good));
        assert!(good.is_dir());
        assert_eq!(
            fs::read_dir(&good).unwrap().count(),
            0,
            "probe file left behind"
        );
        // Below a regular file nothing can be created: fall back to the temp directory.
        let file = tmp.path().join("file");
        fs::write(&file, "").unwrap();
        let name = format!("nvrtc-headers-test-{}", std::process::id());
        let fallback = std::env::temp_dir().join("solbench-kernels").join(&name);
        assert_eq!(
            usable_bundled_dir(bundled(&file.join(&name))),
            bundled(&fallback)
        );
        let _ = fs::remove_dir(&fallback);
        let other = HeaderSource::None;
        assert_eq!(usable_bundled_dir(other.clone()), other);
    }

    #[test]
    fn include_dir_options_add_cccl() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("include");
        cuda_include(&dir);
        let source = HeaderSource::IncludeDir {
            dir: dir.clone(),
            how: String::new(),
        };
        assert_eq!(
            source.options(),
            vec![format!("--include-path={}", dir.display())]
        );
        fs::create_dir_all(dir.join("cccl")).unwrap();
        assert_eq!(source.options().len(), 2);
        assert_eq!(
            source.options()[1],
            format!("--include-path={}", dir.join("cccl").display())
        );
    }

    #[test]
    fn cache_dir_from_env() {
        assert_eq!(
            cache_dir(&env_of(&[("SOLBENCH_CACHE_DIR", "/c"), ("HOME", "/h")])),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            cache_dir(&env_of(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            Some(PathBuf::from("/x/solbench/kernels"))
        );
        assert_eq!(
            cache_dir(&env_of(&[("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/solbench/kernels"))
        );
        assert_eq!(cache_dir(&env_of(&[])), None);
        let off = env_of(&[("SOLBENCH_NO_CACHE", "1"), ("HOME", "/h")]);
        assert_eq!(cache_dir(&off), None);
        // The bundled headers still need a home when the kernel cache is off.
        assert_eq!(
            bundled_headers_dir(&off, (13, 5)),
            PathBuf::from("/h/.cache/solbench/kernels/nvrtc-headers-13.5")
        );
        let on = env_of(&[("SOLBENCH_NO_CACHE", "0"), ("HOME", "/h")]);
        assert!(cache_dir(&on).is_some());
    }

    // Captured from NVRTC 13.5 compiling kernels/memory.cu for sm_80 (two kernels kept).
    const MEMORY_LOG: &str = "\
ptxas info    : 12 bytes gmem, 24 bytes cmem[4]
ptxas info    : Compiling entry function 'sb_smem_bw' for 'sm_80'
ptxas info    : Function properties for sb_smem_bw
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 128 bytes smem, 368 bytes cmem[0]
ptxas info    : Compile time = 23.929 ms
ptxas info    : Compiling entry function 'sb_triad_f32' for 'sm_80'
ptxas info    : Function properties for sb_triad_f32
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 50 registers, used 0 barriers, 392 bytes cmem[0]
";

    // Captured from NVRTC 13.5 (sm_90a, --maxrregcount=32): a spilling kernel calling a
    // non-inlined device function that spills too.
    const SPILL_LOG: &str = "\
ptxas info    : Overriding maximum register limit 256 for 'plain' with  32 of maxrregcount option
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'plain' for 'sm_90a'
ptxas info    : Function properties for plain
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 10 registers, used 1 barriers, 400 bytes smem
ptxas info    : Compile time = 2.346 ms
ptxas info    : Compiling entry function 'spilly' for 'sm_90a'
ptxas info    : Function properties for spilly
ptxas         .     1280 bytes stack frame, 556 bytes spill stores, 624 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers, 1280 bytes cumulative stack size
ptxas info    : Compile time = 59.944 ms
ptxas info    : Function properties for _Z6helperPKfi
ptxas         .     0 bytes stack frame, 744 bytes spill stores, 828 bytes spill loads
";

    #[test]
    fn parses_ptxas_report() {
        let found = parse_ptxas_log(MEMORY_LOG);
        assert_eq!(
            found,
            vec![
                KernelResources {
                    kernel: "sb_smem_bw".into(),
                    entry: true,
                    registers: 32,
                    shared_bytes: 128,
                    ..KernelResources::default()
                },
                KernelResources {
                    kernel: "sb_triad_f32".into(),
                    entry: true,
                    registers: 50,
                    ..KernelResources::default()
                },
            ]
        );
    }

    #[test]
    fn parses_spills_and_device_functions() {
        let found = parse_ptxas_log(SPILL_LOG);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0].kernel, "plain");
        assert_eq!((found[0].registers, found[0].shared_bytes), (10, 400));
        assert_eq!(
            found[1],
            KernelResources {
                kernel: "spilly".into(),
                entry: true,
                registers: 32,
                spill_stores: 556,
                spill_loads: 624,
                stack_bytes: 1280,
                shared_bytes: 0,
            }
        );
        assert_eq!(
            found[2],
            KernelResources {
                kernel: "_Z6helperPKfi".into(),
                entry: false,
                spill_stores: 744,
                spill_loads: 828,
                ..KernelResources::default()
            }
        );
        assert!(parse_ptxas_log("").is_empty());
        assert!(parse_ptxas_log("t.cu(1): error: identifier \"x\" is undefined").is_empty());
    }

    #[test]
    fn cache_key_covers_every_input() {
        let opts = |o: &[&str]| o.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let headers = [("common.cuh", "#pragma once\n")];
        let base = cache_key("a.cu", "src", &headers, &opts(&["-x"]), (13, 5), "sm_90a");
        assert_eq!(base.len(), 64);
        assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            base,
            cache_key("a.cu", "src", &headers, &opts(&["-x"]), (13, 5), "sm_90a")
        );
        let variants = [
            cache_key("b.cu", "src", &headers, &opts(&["-x"]), (13, 5), "sm_90a"),
            cache_key("a.cu", "src2", &headers, &opts(&["-x"]), (13, 5), "sm_90a"),
            cache_key(
                "a.cu",
                "src",
                &[("common.cuh", "//\n")],
                &opts(&["-x"]),
                (13, 5),
                "sm_90a",
            ),
            cache_key(
                "a.cu",
                "src",
                &headers,
                &opts(&["-x", "-DY"]),
                (13, 5),
                "sm_90a",
            ),
            cache_key("a.cu", "src", &headers, &opts(&["-x"]), (13, 6), "sm_90a"),
            cache_key("a.cu", "src", &headers, &opts(&["-x"]), (13, 5), "sm_100a"),
            // Length prefixes: moving text between fields changes the key.
            cache_key("a.c", "usrc", &headers, &opts(&["-x"]), (13, 5), "sm_90a"),
            cache_key(
                "a.cu",
                "src",
                &headers,
                &opts(&["-x\n-y"]),
                (13, 5),
                "sm_90a",
            ),
            cache_key(
                "a.cu",
                "src",
                &headers,
                &opts(&["-x", "-y"]),
                (13, 5),
                "sm_90a",
            ),
            cache_key("a.cu", "src", &[], &opts(&["-x"]), (13, 5), "sm_90a"),
        ];
        for v in &variants {
            assert_ne!(*v, base);
        }
    }

    fn sample_entry() -> CacheEntry {
        CacheEntry {
            cubin: b"\x7fELF fake cubin".to_vec(),
            log: "ptxas info    : Used 10 registers".into(),
        }
    }

    #[test]
    fn cache_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/cache");
        let entry = sample_entry();
        assert_eq!(load_entry(&dir, "k1"), None);
        store_entry(&dir, "k1", &entry, &["-x".to_string()]).unwrap();
        assert_eq!(load_entry(&dir, "k1"), Some(entry.clone()));
        assert_eq!(load_entry(&dir, "k2"), None);
        // Overwriting an entry is fine, and no temporary files are left behind.
        store_entry(&dir, "k1", &entry, &[]).unwrap();
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn corrupt_cache_entries_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let entry = sample_entry();
        let cubin = dir.join("k.cubin");
        let json = dir.join("k.json");

        store_entry(dir, "k", &entry, &[]).unwrap();
        fs::write(&cubin, b"\x7fELF fake cubiN").unwrap(); // same length, other bytes
        assert_eq!(load_entry(dir, "k"), None);

        store_entry(dir, "k", &entry, &[]).unwrap();
        fs::write(&cubin, b"\x7fELF").unwrap(); // truncated
        assert_eq!(load_entry(dir, "k"), None);

        store_entry(dir, "k", &entry, &[]).unwrap();
        fs::remove_file(&cubin).unwrap();
        assert_eq!(load_entry(dir, "k"), None);

        store_entry(dir, "k", &entry, &[]).unwrap();
        fs::write(&json, b"{\"format\": 1, \"key\": ").unwrap();
        assert_eq!(load_entry(dir, "k"), None);

        store_entry(dir, "k", &entry, &[]).unwrap();
        let text = fs::read_to_string(&json).unwrap();
        fs::write(&json, text.replace("\"format\": 1", "\"format\": 999")).unwrap();
        assert_eq!(load_entry(dir, "k"), None);

        // A good entry written over a bad one is found again.
        store_entry(dir, "k", &entry, &[]).unwrap();
        assert_eq!(load_entry(dir, "k"), Some(entry));
    }

    #[test]
    fn unwritable_cache_is_an_io_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory below a regular file cannot be created, even by root.
        let file = tmp.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(store_entry(&file.join("cache"), "k", &sample_entry(), &[]).is_err());
        assert_eq!(load_entry(&file.join("cache"), "k"), None);
    }

    #[test]
    fn options_and_defines() {
        let compiler = offline_compiler();
        let options = compiler
            .options("sm_90a", &[("SB_MEM_UNROLL", "8"), ("SB_FLAG", "")])
            .unwrap();
        assert_eq!(
            options,
            [
                "--gpu-architecture=sm_90a",
                "-std=c++17",
                "--ptxas-options=-v",
                "-lineinfo",
                "-DSB_MEM_UNROLL=8",
                "-DSB_FLAG",
            ]
        );
        assert!(compiler.options("sm_90a", &[("BAD NAME", "1")]).is_err());
        assert!(compiler.options("sm_90a", &[("1X", "1")]).is_err());
        assert!(compiler.options("sm_90a", &[("", "1")]).is_err());
    }

    #[test]
    fn bad_input_is_an_error_before_nvrtc() {
        let compiler = offline_compiler();
        let err = compiler
            .compile_source("nul.cu", "int x;\0int y;", "sm_90a", &[])
            .unwrap_err();
        assert!(err.contains("NUL byte at offset 6"), "{err}");
        let err = compiler
            .compile_source("d.cu", "", "sm_90a", &[("X", "a\0b")])
            .unwrap_err();
        assert!(err.contains("NUL"), "{err}");
        let err = compiler.compile("missing.cu", "sm_90a", &[]).unwrap_err();
        assert!(err.contains("memory.cu"), "{err}");
        let err = compiler.compile("memory.cu", "sm_130a", &[]).unwrap_err();
        assert!(err.contains("install a newer nvidia-cuda-nvrtc"), "{err}");
    }

    #[test]
    fn header_hint_only_when_headers_are_missing() {
        let missing = "t.cu(1): catastrophic error: could not open source file \"cuda_bf16.h\"";
        let compiler = offline_compiler();
        assert!(compiler
            .with_header_hint(missing.to_string())
            .contains("SOLBENCH_CUDA_INCLUDE"));
        assert_eq!(compiler.with_header_hint("other".into()), "other");
        let with_headers = Compiler {
            headers: HeaderSource::Bundled { dir: "/x".into() },
            ..offline_compiler()
        };
        assert_eq!(with_headers.with_header_hint(missing.into()), missing);
    }
}
