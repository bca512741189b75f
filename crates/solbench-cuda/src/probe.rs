//! Is CUDA usable here? Checked before any cudarc call that could panic: cudarc panics
//! (rather than returning an error) when a library it needs cannot be loaded, and its
//! CUDA 13 bindings call `_v2` symbols (`cuEventElapsedTime_v2`, ...) that only drivers
//! for CUDA 12.8 and newer export. Every failure here is one sentence that names the
//! library and what to install.

use cudarc::driver::sys;

/// The oldest driver the bindings work with: CUDA 12.8 (driver 570), the first to export
/// `cuEventElapsedTime_v2`, which the timing code calls.
pub const MIN_DRIVER_CUDA: i32 = 12080;

/// What the driver reported.
#[derive(Clone, Debug, PartialEq)]
pub struct DriverStatus {
    /// `cuDriverGetVersion`: 1000 × major + 10 × minor (13000 for CUDA 13.0).
    pub cuda_version: i32,
    pub device_count: i32,
}

/// `12080` → `12.8`.
pub fn version_text(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Probes the driver: library present, new enough, initialised, and how many GPUs it sees.
pub fn driver_status() -> Result<DriverStatus, String> {
    // SAFETY: only tries to dlopen the candidate names; never panics.
    if !unsafe { sys::is_culib_present() } {
        return Err("the NVIDIA driver library libcuda.so.1 was not found, so CUDA cannot run: install the NVIDIA driver (570 or newer), or run on a machine with an NVIDIA GPU".into());
    }
    // The library loads; a missing symbol would still panic inside cudarc, so the first
    // calls run under catch_unwind and a panic becomes the same kind of sentence.
    let probe = std::panic::catch_unwind(|| {
        let mut v = 0;
        // SAFETY: v is a valid out-pointer.
        let r = unsafe { sys::cuDriverGetVersion(&mut v) };
        (r, v)
    });
    let (r, version) = probe.map_err(|_| {
        "libcuda.so.1 loaded but lacks cuDriverGetVersion; the NVIDIA driver installation is broken, reinstall it".to_string()
    })?;
    if r != sys::CUresult::CUDA_SUCCESS {
        return Err(format!(
            "the NVIDIA driver did not report its version ({r:?}); reinstall the driver"
        ));
    }
    check_version(version)?;
    let init = std::panic::catch_unwind(|| {
        // SAFETY: plain driver calls with valid out-pointers.
        let r = unsafe { sys::cuInit(0) };
        if r != sys::CUresult::CUDA_SUCCESS {
            return (r, 0);
        }
        let mut n = 0;
        (unsafe { sys::cuDeviceGetCount(&mut n) }, n)
    });
    let (r, n) = init.map_err(|_| {
        "libcuda.so.1 lacks a symbol the CUDA 13 bindings need; update the NVIDIA driver"
            .to_string()
    })?;
    match r {
        sys::CUresult::CUDA_SUCCESS if n > 0 => Ok(DriverStatus {
            cuda_version: version,
            device_count: n,
        }),
        sys::CUresult::CUDA_SUCCESS | sys::CUresult::CUDA_ERROR_NO_DEVICE => Err(format!(
            "the NVIDIA driver (CUDA {}) sees no GPU; check nvidia-smi, and that CUDA_VISIBLE_DEVICES does not hide them",
            version_text(version)
        )),
        other => Err(format!(
            "the NVIDIA driver (CUDA {}) failed to initialise ({other:?}); check nvidia-smi and dmesg",
            version_text(version)
        )),
    }
}

/// The driver must support at least CUDA 12.8.
pub fn check_version(v: i32) -> Result<(), String> {
    if v < MIN_DRIVER_CUDA {
        return Err(format!(
            "the NVIDIA driver supports CUDA {}, but solbench's CUDA 13 bindings need CUDA {} or newer (driver 570+); update the NVIDIA driver",
            version_text(v),
            version_text(MIN_DRIVER_CUDA)
        ));
    }
    Ok(())
}

/// PCI address in sysfs form (`0000:17:00.0`, lowercase, 4-digit domain) from the driver's
/// or NVML's (`00000000:17:00.0`) spelling.
pub fn normalize_pci_bus_id(id: &str) -> Option<String> {
    let id = id.trim().trim_end_matches('\0');
    let (head, func) = id.rsplit_once('.')?;
    let mut parts = head.split(':').collect::<Vec<_>>();
    if parts.len() == 2 {
        parts.insert(0, "0");
    }
    if parts.len() != 3 {
        return None;
    }
    let n = |s: &str| u32::from_str_radix(s, 16).ok();
    Some(format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        n(parts[0])?,
        n(parts[1])?,
        n(parts[2])?,
        n(func)?
    ))
}

/// The PCI product id (`0x2330` for H100 SXM) from sysfs, which the spec database matches;
/// CUDA's PCI_DEVICE_ID attribute is the slot number on the bus, not this.
pub fn pci_product_id(bus_id: &str) -> Option<u32> {
    let dir = std::path::Path::new("/sys/bus/pci/devices").join(normalize_pci_bus_id(bus_id)?);
    let text = std::fs::read_to_string(dir.join("device")).ok()?;
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

/// The CPUs local to a PCI device (sysfs `local_cpulist`, e.g. `0-31,64-95`), so host
/// buffers for copies are allocated and touched on the GPU's NUMA node, as nvbandwidth does.
pub fn local_cpus(bus_id: &str) -> Option<Vec<usize>> {
    let dir = std::path::Path::new("/sys/bus/pci/devices").join(normalize_pci_bus_id(bus_id)?);
    parse_cpu_list(
        std::fs::read_to_string(dir.join("local_cpulist"))
            .ok()?
            .trim(),
    )
}

/// NUMA node of a PCI device (-1 when the platform has none).
pub fn numa_node(bus_id: &str) -> Option<i32> {
    let dir = std::path::Path::new("/sys/bus/pci/devices").join(normalize_pci_bus_id(bus_id)?);
    std::fs::read_to_string(dir.join("numa_node"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `0-3,8,10-11` → [0,1,2,3,8,10,11].
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_drivers_are_refused_with_the_version() {
        assert!(check_version(13000).is_ok());
        assert!(check_version(12080).is_ok());
        let e = check_version(12040).unwrap_err();
        assert!(
            e.contains("CUDA 12.4") && e.contains("12.8") && e.contains("update"),
            "{e}"
        );
    }

    #[test]
    fn pci_ids_normalise_to_sysfs_form() {
        assert_eq!(
            normalize_pci_bus_id("00000000:17:00.0").as_deref(),
            Some("0000:17:00.0")
        );
        assert_eq!(
            normalize_pci_bus_id("0000:B3:00.0").as_deref(),
            Some("0000:b3:00.0")
        );
        assert_eq!(
            normalize_pci_bus_id("17:00.0").as_deref(),
            Some("0000:17:00.0")
        );
        assert_eq!(normalize_pci_bus_id("garbage"), None);
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
    }

    #[test]
    fn without_a_driver_the_probe_explains_and_does_not_panic() {
        // On machines with a driver this checks the happy path instead.
        match driver_status() {
            Ok(s) => assert!(s.device_count > 0 && s.cuda_version >= MIN_DRIVER_CUDA),
            Err(e) => {
                assert!(!e.contains('\n'), "one sentence: {e}");
                assert!(e.contains("NVIDIA driver"), "{e}");
            }
        }
    }
}
