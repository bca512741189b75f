//! What the host CPU is: model, SIMD features, cores, and its cache levels as a
//! whole-machine measurement sees them (per-core caches × cores, shared caches once).

use solbench_core::env::HostEnvironment;
use solbench_core::size::format_size;
use solbench_core::MemoryLevel;
use std::collections::BTreeMap;
use std::fs;

#[derive(Clone, Debug, PartialEq)]
pub struct CacheInfo {
    pub level: u32,
    /// `Data`, `Unified` (instruction caches are dropped).
    pub kind: String,
    pub size_bytes: u64,
    /// CPUs sharing one instance of this cache.
    pub shared_cpus: Vec<usize>,
}

/// Parses a CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(v) = part.trim().parse() {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// Parses a sysfs cache size (`48K`, `2048K`, `260M`).
pub fn parse_cache_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, mult) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 1024),
        'M' => (&t[..t.len() - 1], 1 << 20),
        'G' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// Caches of `cpu` from sysfs.
pub fn caches_of(cpu: usize) -> Vec<CacheInfo> {
    let mut out = Vec::new();
    for idx in 0..16 {
        let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cache/index{idx}");
        let read = |f: &str| fs::read_to_string(format!("{dir}/{f}")).ok();
        let Some(level) = read("level").and_then(|s| s.trim().parse().ok()) else {
            break;
        };
        let kind = read("type").unwrap_or_default().trim().to_string();
        if kind == "Instruction" {
            continue;
        }
        let Some(size_bytes) = read("size").and_then(|s| parse_cache_size(&s)) else {
            continue;
        };
        let shared_cpus = read("shared_cpu_list")
            .map(|s| parse_cpu_list(&s))
            .unwrap_or_else(|| vec![cpu]);
        out.push(CacheInfo {
            level,
            kind,
            size_bytes,
            shared_cpus,
        });
    }
    out
}

/// Cache levels summed over the CPUs a measurement uses: a per-core cache counts once
/// per core, a shared cache once per distinct instance.
pub fn memory_levels(cpus: &[usize], dram_bytes: Option<u64>) -> Vec<MemoryLevel> {
    let mut per_level: BTreeMap<u32, (u64, Vec<Vec<usize>>, u64)> = BTreeMap::new();
    for &cpu in cpus {
        for c in caches_of(cpu) {
            let entry = per_level
                .entry(c.level)
                .or_insert((0, Vec::new(), c.size_bytes));
            if !entry.1.contains(&c.shared_cpus) {
                entry.0 += c.size_bytes;
                entry.1.push(c.shared_cpus.clone());
            }
        }
    }
    let mut levels: Vec<MemoryLevel> = per_level
        .into_iter()
        .map(|(level, (total, instances, each))| MemoryLevel {
            name: if level == 1 {
                "L1d".into()
            } else {
                format!("L{level}")
            },
            bytes: total,
            detail: format!("{} x {}", format_size(each), instances.len()),
        })
        .collect();
    levels.push(MemoryLevel {
        name: "DRAM".into(),
        bytes: dram_bytes.unwrap_or(u64::MAX),
        detail: dram_bytes
            .map(format_size)
            .unwrap_or_else(|| "size unknown".into()),
    });
    levels
}

/// The widest SIMD the memory kernels can use on this CPU.
pub fn simd_label() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return "avx2";
        }
        "sse2"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "baseline"
    }
}

/// CPUs this process may run on (its affinity mask), in order.
pub fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    (0..std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1))
        .collect()
}

/// Pins the calling thread to one CPU (best effort: a failure leaves it unpinned).
pub fn pin_current_thread(cpu: usize) -> bool {
    #[cfg(target_os = "linux")]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        false
    }
}

/// A short description for `solbench list`.
pub fn describe(env: &HostEnvironment, cpus: usize) -> String {
    format!("{} ({} CPUs used, {})", env.cpu, cpus, simd_label())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysfs_formats() {
        assert_eq!(parse_cpu_list("0-3,8,10-11"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("5\n"), vec![5]);
        assert_eq!(parse_cache_size("48K\n"), Some(48 << 10));
        assert_eq!(parse_cache_size("260M"), Some(260 << 20));
        assert_eq!(parse_cache_size("1024"), Some(1024));
        assert_eq!(parse_cache_size("x"), None);
    }

    #[test]
    fn levels_end_with_dram_and_grow() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        let levels = memory_levels(&cpus, Some(1 << 34));
        assert_eq!(levels.last().unwrap().name, "DRAM");
        for w in levels.windows(2) {
            assert!(w[0].bytes <= w[1].bytes, "{levels:?}");
        }
    }
}
