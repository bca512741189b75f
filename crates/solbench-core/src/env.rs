//! The environment a run was measured in: host, CPU, OS, solbench version and git
//! revision, timestamps. Read from /proc and /etc on Linux; every field degrades to
//! "unknown" rather than failing a run.

use serde::{Deserialize, Serialize};
use std::fs;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostEnvironment {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub cpu: String,
    pub logical_cpus: usize,
    pub memory_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SolbenchVersion {
    pub version: String,
    /// Git commit the binary was built from (12 hex digits, `-dirty` when
    /// the tree had changes), or `unknown` outside a git checkout.
    pub git: String,
}

fn read_trim(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Value of `key` in a `key: value` / `key=value` style file.
fn field(text: &str, key: &str, sep: char) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(sep)?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

impl HostEnvironment {
    pub fn detect() -> HostEnvironment {
        let hostname = read_trim("/proc/sys/kernel/hostname")
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".into());
        let os = fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| field(&t, "PRETTY_NAME", '='))
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        let kernel = read_trim("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into());
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = field(&cpuinfo, "model name", ':')
            .or_else(|| field(&cpuinfo, "Model", ':'))
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let memory_bytes = fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
            let v = field(&t, "MemTotal", ':')?;
            v.trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
                .map(|kb| kb * 1024)
        });
        HostEnvironment {
            hostname,
            os,
            kernel,
            cpu,
            logical_cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_bytes,
        }
    }
}

/// Memory the kernel says could be given to a new allocation without swapping.
pub fn available_memory_bytes() -> Option<u64> {
    let t = fs::read_to_string("/proc/meminfo").ok()?;
    let v = field(&t, "MemAvailable", ':')?;
    v.trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&fmt).unwrap_or_else(|_| "unknown".into())
}

/// Now, compact, for file names (`20261123T160102Z`).
pub fn now_compact() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    now.format(&fmt).unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_something_for_every_field() {
        let env = HostEnvironment::detect();
        assert!(!env.hostname.is_empty());
        assert!(!env.cpu.is_empty());
        assert!(env.logical_cpus >= 1);
        assert!(now_rfc3339().ends_with('Z'));
        assert_eq!(now_compact().len(), 16);
    }

    #[test]
    fn parses_key_value_files() {
        assert_eq!(
            field(
                "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12\"",
                "PRETTY_NAME",
                '='
            ),
            Some("Debian GNU/Linux 12".into())
        );
        assert_eq!(
            field("model name\t: Intel Xeon\nflags : x", "model name", ':'),
            Some("Intel Xeon".into())
        );
        assert_eq!(field("a=b", "c", '='), None);
    }
}
