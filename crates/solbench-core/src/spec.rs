//! The spec database: vendor spec sheets as TOML (one file per product, embedded in the
//! binary), matched to devices, giving the peaks that verdicts divide by.

use crate::backend::DeviceInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One published number with where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecValue {
    pub value: f64,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Expected efficiency of a healthy device for one metric: measured / peak at or above
/// `pass` is PASS, at or above `warn` is WARN, below is FAIL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub pass: f64,
    pub warn: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Expectation {
    /// Checks `0 < warn <= pass <= 1.5`; the error names `at`.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if !(self.pass > 0.0 && self.pass <= 1.5 && self.warn > 0.0 && self.warn <= self.pass) {
            return Err(format!(
                "{at}: expected efficiencies need 0 < warn <= pass <= 1.5 (fractions of peak), got pass = {}, warn = {}",
                self.pass, self.warn
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecMatch {
    #[serde(default)]
    pub pci_device_ids: Vec<String>,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub exclude_names: Vec<String>,
    #[serde(default)]
    pub memory_gib: Option<[f64; 2]>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySpec {
    pub capacity_gb: Option<SpecValue>,
    pub bandwidth_gb_s: Option<SpecValue>,
    pub l2_cache_mb: Option<SpecValue>,
    pub infinity_cache_mb: Option<SpecValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterconnectSpec {
    pub scale_up: Option<String>,
    pub scale_up_gb_s: Option<SpecValue>,
    pub scale_up_per_direction_gb_s: Option<SpecValue>,
    pub pcie_gen: Option<u32>,
    pub pcie_gb_s: Option<SpecValue>,
}

/// Compute peaks a spec may list (TFLOP/s, dense).
pub const COMPUTE_KEYS: [&str; 8] = [
    "fp8_tflops",
    "bf16_tflops",
    "fp16_tflops",
    "tf32_tflops",
    "fp32_tflops",
    "fp32_matrix_tflops",
    "fp64_tflops",
    "fp64_tensor_tflops",
];
/// Device facts a spec may list.
pub const DEVICE_KEYS: [&str; 5] = [
    "sm_count",
    "cu_count",
    "boost_clock_mhz",
    "tflops_clock_mhz",
    "tdp_w",
];

/// One product's spec sheet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub id: String,
    pub name: String,
    pub vendor: String,
    pub architecture: String,
    #[serde(default)]
    pub compute_capability: Option<String>,
    #[serde(default)]
    pub gfx_target: Option<String>,
    #[serde(rename = "match")]
    pub matching: SpecMatch,
    #[serde(default)]
    pub memory: MemorySpec,
    #[serde(default)]
    pub compute: BTreeMap<String, SpecValue>,
    #[serde(default)]
    pub interconnect: InterconnectSpec,
    #[serde(default)]
    pub device: BTreeMap<String, SpecValue>,
    #[serde(default)]
    pub expected: BTreeMap<String, Expectation>,
}

/// A peak the verdict divides by, in the headline's unit (GB/s or TFLOP/s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    pub value: f64,
    pub unit: String,
    /// What the peak is, in words (`HBM bandwidth`, `dense BF16 tensor peak`).
    pub what: String,
    pub source: String,
}

impl Spec {
    /// Parses and checks one spec file; errors name the file and the field.
    pub fn parse(file: &str, text: &str) -> Result<Spec, String> {
        let spec: Spec = toml::from_str(text)
            .map_err(|e| format!("spec file {file}: {}", e.to_string().trim_end()))?;
        let stem = file
            .rsplit('/')
            .next()
            .unwrap_or(file)
            .trim_end_matches(".toml");
        if spec.id != stem {
            return Err(format!(
                "spec file {file}: id = \"{}\" must equal the file name \"{stem}\"",
                spec.id
            ));
        }
        for key in spec.compute.keys() {
            if !COMPUTE_KEYS.contains(&key.as_str()) {
                return Err(format!(
                    "spec file {file}: [compute] {key} is not a known peak (known: {})",
                    COMPUTE_KEYS.join(", ")
                ));
            }
        }
        for key in spec.device.keys() {
            if !DEVICE_KEYS.contains(&key.as_str()) {
                return Err(format!(
                    "spec file {file}: [device] {key} is not a known field (known: {})",
                    DEVICE_KEYS.join(", ")
                ));
            }
        }
        for (key, e) in &spec.expected {
            crate::verdict::check_metric_name(key)
                .map_err(|why| format!("spec file {file}: [expected] \"{key}\": {why}"))?;
            e.validate(&format!("spec file {file}: [expected] \"{key}\""))?;
        }
        for id in &spec.matching.pci_device_ids {
            parse_hex(id).ok_or_else(|| format!("spec file {file}: [match] pci_device_ids entry \"{id}\" is not hex like \"0x2330\""))?;
        }
        if spec.matching.names.is_empty() && spec.matching.pci_device_ids.is_empty() {
            return Err(format!(
                "spec file {file}: [match] needs names or pci_device_ids"
            ));
        }
        Ok(spec)
    }

    /// Does `device` match this product?
    pub fn matches(&self, device: &DeviceInfo) -> bool {
        if let Some(id) = device.pci_device_id {
            if self
                .matching
                .pci_device_ids
                .iter()
                .filter_map(|s| parse_hex(s))
                .any(|x| x == id)
            {
                return true;
            }
        }
        let name = device.name.to_ascii_lowercase();
        let named = self
            .matching
            .names
            .iter()
            .any(|n| name.contains(&n.to_ascii_lowercase()));
        let excluded = self
            .matching
            .exclude_names
            .iter()
            .any(|n| name.contains(&n.to_ascii_lowercase()));
        let memory_ok = match (self.matching.memory_gib, device.memory_bytes) {
            (Some([lo, hi]), Some(bytes)) => {
                let gib = bytes as f64 / (1u64 << 30) as f64;
                gib >= lo && gib <= hi
            }
            // A range with no reported memory size cannot be confirmed: do not guess.
            (Some(_), None) => false,
            (None, _) => true,
        };
        named && !excluded && memory_ok
    }

    /// Dense compute peak in TFLOP/s for a spec key (`bf16`, `fp8`, `fp32`, ...).
    pub fn compute_peak(&self, key: &str) -> Option<Peak> {
        // AMD lists an FP32 matrix (MFMA) peak apart from the vector one; an FP32 GEMM
        // runs on the matrix units there, so that peak wins when a spec has it.
        let matrix = (key == "fp32")
            .then(|| self.compute.get("fp32_matrix_tflops"))
            .flatten();
        let v = matrix.or_else(|| self.compute.get(&format!("{key}_tflops")))?;
        Some(Peak {
            value: v.value,
            unit: "TFLOP/s".into(),
            what: format!("dense {} peak of {}", key.to_ascii_uppercase(), self.name),
            source: v.source.clone(),
        })
    }

    pub fn memory_peak(&self) -> Option<Peak> {
        let v = self.memory.bandwidth_gb_s.as_ref()?;
        Some(Peak {
            value: v.value,
            unit: "GB/s".into(),
            what: format!("memory bandwidth of {}", self.name),
            source: v.source.clone(),
        })
    }
}

fn parse_hex(s: &str) -> Option<u32> {
    let t = s.trim();
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"))?;
    u32::from_str_radix(t, 16).ok()
}

/// All known products.
#[derive(Clone, Debug, Default)]
pub struct SpecDb {
    pub specs: Vec<Spec>,
}

impl SpecDb {
    /// Parses `(file name, TOML text)` pairs, as embedded by the binary's build script.
    pub fn parse(files: &[(&str, &str)]) -> Result<SpecDb, String> {
        let mut specs = Vec::new();
        for (file, text) in files {
            specs.push(Spec::parse(file, text)?);
        }
        specs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(SpecDb { specs })
    }

    /// The product `device` is, if exactly one spec matches. Several matches are a bug in
    /// the database and are treated as no match rather than a guess.
    pub fn match_device(&self, device: &DeviceInfo) -> Result<Option<&Spec>, String> {
        let hits: Vec<&Spec> = self.specs.iter().filter(|s| s.matches(device)).collect();
        match hits.len() {
            0 => Ok(None),
            1 => Ok(Some(hits[0])),
            _ => Err(format!(
                "device '{}' matches several spec sheets ({}); not judging against any",
                device.name,
                hits.iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Looks a product up by id or by a case-insensitive substring of its name.
    pub fn find(&self, query: &str) -> Vec<&Spec> {
        let q = query.to_ascii_lowercase();
        if let Some(exact) = self.specs.iter().find(|s| s.id == q) {
            return vec![exact];
        }
        self.specs
            .iter()
            .filter(|s| s.id.contains(&q) || s.name.to_ascii_lowercase().contains(&q))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H100: &str = include_str!("../../../specs/nvidia-h100-sxm.toml");

    fn dev(name: &str, gib: f64, pci: Option<u32>) -> DeviceInfo {
        DeviceInfo {
            backend: "cuda".into(),
            name: name.into(),
            memory_bytes: Some((gib * (1u64 << 30) as f64) as u64),
            pci_device_id: pci,
            ..Default::default()
        }
    }

    #[test]
    fn parses_the_example_and_reads_dense_peaks() {
        let s = Spec::parse("specs/nvidia-h100-sxm.toml", H100).unwrap();
        assert_eq!(s.compute_peak("bf16").unwrap().value, 989.0);
        assert_eq!(s.compute_peak("fp8").unwrap().value, 1979.0);
        assert_eq!(s.memory_peak().unwrap().value, 3350.0);
        assert!(s.compute_peak("fp4").is_none());
    }

    #[test]
    fn matches_by_pci_id_or_name_and_memory() {
        let s = Spec::parse("nvidia-h100-sxm.toml", H100).unwrap();
        assert!(s.matches(&dev("NVIDIA H100 80GB HBM3", 79.1, None)));
        assert!(s.matches(&dev("some renamed board", 79.1, Some(0x2330))));
        assert!(!s.matches(&dev("NVIDIA H100 PCIe", 79.1, None)));
        assert!(!s.matches(&dev("NVIDIA H100 NVL", 93.5, None)));
        assert!(!s.matches(&dev("NVIDIA H100 80GB HBM3", 139.0, None)));
        let mut no_mem = dev("NVIDIA H100 80GB HBM3", 0.0, None);
        no_mem.memory_bytes = None;
        assert!(
            !s.matches(&no_mem),
            "a memory range that cannot be confirmed is not a match"
        );
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let typo = H100.replace("bandwidth_gb_s", "bandwith_gb_s");
        let err = Spec::parse("nvidia-h100-sxm.toml", &typo).unwrap_err();
        assert!(
            err.contains("nvidia-h100-sxm.toml") && err.contains("bandwith_gb_s"),
            "{err}"
        );
        let wrong_id = H100.replace("id = \"nvidia-h100-sxm\"", "id = \"h100\"");
        assert!(Spec::parse("nvidia-h100-sxm.toml", &wrong_id)
            .unwrap_err()
            .contains("must equal the file name"));
        let bad_key = H100.replace("fp16_tflops", "fp16_sparse_tflops");
        assert!(Spec::parse("nvidia-h100-sxm.toml", &bad_key)
            .unwrap_err()
            .contains("fp16_sparse_tflops"));
        let bad_exp = H100.replace("pass = 0.72, warn = 0.62", "pass = 0.5, warn = 0.62");
        assert!(Spec::parse("nvidia-h100-sxm.toml", &bad_exp)
            .unwrap_err()
            .contains("warn <= pass"));
    }

    #[test]
    fn host_cpus_match_nothing() {
        let db = SpecDb::parse(&[("nvidia-h100-sxm.toml", H100)]).unwrap();
        let cpu = DeviceInfo {
            backend: "host".into(),
            name: "Intel(R) Xeon(R) Processor".into(),
            ..Default::default()
        };
        assert!(db.match_device(&cpu).unwrap().is_none());
        assert_eq!(db.find("h100").len(), 1);
        assert_eq!(db.find("nvidia-h100-sxm").len(), 1);
    }
}
